"""The RSU as a real process on a real broker: MAP, SPaT at 10 Hz, status and its Last Will."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.scenario import bundled_dir
from v2x.core.topics import Topics
from v2x.net.broker import MosquittoBroker
from v2x.net.transport import MqttTransport
from v2x.testing import messages


async def test_rsu_process_publishes_map_spat_status_and_its_will(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    root = f"{topic_prefix}/v2x/v1"
    topics = Topics(root)
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
        await watch.subscribe(f"{root}/#", qos=1)
        await asyncio.sleep(0.2)
        proc = subprocess.Popen(  # noqa: ASYNC220 - a real OS process, so SIGKILL leaves the Will to the broker
            [sys.executable, "-m", "v2x", "roadside", str(bundled_dir() / "four_way.toml"), "--broker", mosquitto.url,
             "--root", root, "--keepalive", "1"],
            stderr=subprocess.PIPE,
        )
        seen: Counter[str] = Counter()
        statuses: list[m.ServiceState] = []
        spat_states: list[m.IntersectionState] = []
        killed_at = None
        loop = asyncio.get_running_loop()
        try:
            async def watch_loop() -> None:
                nonlocal killed_at
                async for msg in messages(watch):
                    frame = codec.decode(msg.payload)
                    kind = m.message_type(frame.body).value
                    seen[kind] += 1
                    if isinstance(frame.body, m.Status):
                        statuses.append(frame.body.state)
                        if frame.body.state is m.ServiceState.OFFLINE and killed_at is not None:
                            return
                    if isinstance(frame.body, m.Spat):
                        spat_states.extend(frame.body.intersections)
                    if seen["spat"] >= 30 and killed_at is None:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed_at = loop.time()

            await asyncio.wait_for(watch_loop(), 20)
            will_delay = loop.time() - (killed_at or 0)
        finally:
            proc.kill()
            proc.wait()
    assert seen["map"] == 1
    assert statuses[0] is m.ServiceState.ONLINE
    assert statuses[-1] is m.ServiceState.OFFLINE  # published by the broker: the RSU was killed
    assert will_delay < 5.0
    assert {st.name for st in spat_states} == {"J1"}
    states = spat_states[-1].states
    assert {mv.signal_group for mv in states} == set(range(1, 13))
    greens = [mv for mv in states if mv.events[0].state in (m.LightState.PROTECTED_GREEN, m.LightState.PERMISSIVE_GREEN)]
    assert 0 < len(greens) <= 6
    assert topics.status("rsu", "RSU-J1").startswith(root)


async def test_rsm_lists_the_road_users_heard_within_radio_range() -> None:
    from roadside.service import RSM_WINDOW_S, RsuService
    from v2x.core.network import Network
    from v2x.core.scenario import load
    from v2x.core.topics import quadkey
    from v2x.net.station import Station, StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport

    sc = load(bundled_dir() / "four_way.toml")
    net = Network(sc)
    topics = Topics()
    clock = StepClock(1_767_225_600.0)
    broker = MemoryBroker()
    async with MemoryTransport(broker, "rsu") as rsu_t, MemoryTransport(broker, "veh") as veh_t, MemoryTransport(broker, "watch") as watch:
        rsu = RsuService(net, 0, rsu_t, topics, clock)
        await rsu.start()
        await watch.subscribe(topics.area("rsm", ""))
        cx, cy = net.intersections[0].center

        def bsm_from(sid: str, dx: float) -> None:
            p = net.frame.to_geo(cx + dx, cy)
            veh_t.publish(topics.bsm(quadkey(p.lat_deg, p.lon_deg), sid), Station(sid, m.SenderKind.VEHICLE, clock).encode(m.Bsm(position=p, speed_mps=10.0, heading_deg=90.0)))

        bsm_from("veh-near", 80.0)
        bsm_from("veh-edge", rsu.range_m - 5.0)
        bsm_from("veh-far", rsu.range_m + 40.0)  # heard on a subscribed tile perhaps, but out of range
        rsu.receive()
        rsu.tick(0.0)
        clock.t = RSM_WINDOW_S + 0.2  # nobody heard since: the RSM empties
        rsu.tick(clock.t)
        rsms = [codec.decode(msg.payload).body for msg in watch.receive()]
    assert all(isinstance(r, m.Rsm) for r in rsms)
    assert len(rsms) == 2
    first, later = rsms
    assert isinstance(first, m.Rsm)
    assert isinstance(later, m.Rsm)
    assert [p.vehicle_id for p in first.participants] == ["veh-edge", "veh-near"]
    assert all(p.source is m.SourceType.V2X and p.speed_mps == 10.0 for p in first.participants)
    assert later.participants == ()
    assert rsu.summary().sent == {"status": 1, "map": 1, "spat": 2, "rsm": 2}


async def test_the_spat_and_rsm_an_rsu_writes_at_once_are_what_the_object_way_encodes() -> None:
    """An RSU writes its SPaT and RSM in wire form at once (v2x.core.rsu_wire): over 60 s of an actuated junction
    with vehicles coming and going (heading about 360, elevation stated or not, some out of range), each payload is,
    byte for byte, `codec.encode` of the object way's `intersection_state` and `rsm(now)` under the same header."""
    import random

    from roadside.service import RsuService
    from v2x.core.network import Network
    from v2x.core.scenario import load
    from v2x.core.signal.spat import intersection_state
    from v2x.core.topics import quadkey
    from v2x.net.station import Station, StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport

    sc = load(bundled_dir() / "four_way.toml")
    sc = dataclasses.replace(sc, control=dataclasses.replace(sc.control, policy="actuated"))
    net = Network(sc)
    topics = Topics()
    clock = StepClock(1_767_225_600.0)
    broker = MemoryBroker()
    rng = random.Random(7)
    compared = {"spat": 0, "rsm": 0}
    async with MemoryTransport(broker, "rsu") as rsu_t, MemoryTransport(broker, "veh") as veh_t, MemoryTransport(broker, "watch") as watch:
        rsu = RsuService(net, 0, rsu_t, topics, clock)
        await rsu.start()
        assert rsu.ctl.actuated
        await watch.subscribe(topics.area("rsm", ""))
        await watch.subscribe(topics.area("spat", ""))
        stations = {f"veh-{i}": Station(f"veh-{i}", m.SenderKind.VEHICLE, clock) for i in range(12)}
        cx, cy = net.intersections[0].center
        for k in range(600):
            clock.t = k * 0.1
            for sid, st in stations.items():
                if rng.random() < 0.6:
                    p = net.frame.to_geo(cx + rng.uniform(-250.0, 250.0), cy + rng.uniform(-8.0, 8.0))
                    p = m.GeoPoint(p.lat_deg, p.lon_deg, rng.choice([None, 4.0, 12.35]))
                    bsm = m.Bsm(position=p, speed_mps=rng.uniform(0.0, 20.0), heading_deg=rng.choice([0.0, 359.99, rng.uniform(0, 360)]))
                    veh_t.publish(topics.bsm(quadkey(p.lat_deg, p.lon_deg), sid), st.encode(bsm))
            rsu.receive()
            rsu.tick(clock.t)
            for msg in watch.receive():
                frame = codec.decode(msg.payload)
                if isinstance(frame.body, m.Spat):
                    state = intersection_state(net, 0, rsu.ctl, frame.header.gen_time_us // 1000, revision=rsu._k - 1, name=rsu.iid)
                    want = codec.encode(m.Frame(frame.header, m.Spat((state,))))
                else:
                    want = codec.encode(m.Frame(frame.header, rsu.rsm(clock.t)))
                assert msg.payload == want, (k, m.type_name(frame.body))
                compared[m.type_name(frame.body)] += 1
    assert compared == {"spat": 600, "rsm": 600}


async def test_a_bsm_that_states_its_gnss_accuracy_calls_every_lane_it_may_be_on() -> None:
    """Actuated control: a car on the north approach's median lane (x = -1.75 m), 20 m before the line, that its
    GNSS puts 2.5 m east of it (off every approach lane) still calls its movements when its BSM says it is known
    only to 2 m; a car leaving on the exit lane beside it calls nothing."""
    from roadside.service import RsuService
    from v2x.core.network import Network
    from v2x.core.scenario import load
    from v2x.net.intake import values_of
    from v2x.net.station import StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport

    net = Network(load(bundled_dir() / "four_way.toml"))
    median = next(lid for lid in net.intersections[0].in_links.values() if net.links[lid].points[0][0] == -1.75)

    def calls(x: float, heading_deg: float, accuracy: m.PositionalAccuracy | None) -> set[int]:
        bsm = m.Bsm(position=net.frame.to_geo(x, 33.0), speed_mps=10.0, heading_deg=heading_deg, accuracy=accuracy)
        rsu.heard = {"veh-1": (values_of(bsm, net.frame), 0.0)}
        return rsu.calls(0.0)

    async with MemoryTransport(MemoryBroker(), "rsu") as t:
        rsu = RsuService(net, 0, t, Topics(), StepClock(1_767_225_600.0))
        groups = rsu._lane_groups[median]
        assert calls(-1.75, 180.0, None) == groups  # exact, on its lane
        assert calls(0.75, 180.0, None) == set()  # off every lane, as far as a position alone tells
        assert calls(0.75, 180.0, m.PositionalAccuracy(2.0, 2.0)) >= groups
        assert calls(1.75, 0.0, m.PositionalAccuracy(2.0, 2.0)) == set()  # northbound, leaving


async def test_an_rsu_sends_each_ticks_spat_and_rsm_in_one_socket_write(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    """`serve` gives each RSU a connection that coalesces its writes: a tick's SPaT and RSM reach the broker, in that
    order, from one system call (two before: the profile's largest roadside cost)."""
    from roadside.service import serve
    from v2x.core.scenario import load
    from v2x.net.connection import Connection

    root = f"{topic_prefix}/v2x/v1"
    conn = Connection(mosquitto.url, root=root, impair=False)
    started: list[Any] = []
    writes: list[bytes] = []
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
        await watch.subscribe(f"{root}/spat/#")
        await watch.subscribe(f"{root}/rsm/#")
        task = asyncio.create_task(serve(load(bundled_dir() / "four_way.toml"), conn, [0], 3.0, started))
        while not started or not started[0].transport.connected:  # noqa: ASYNC110 - serve() signals no event of its own
            await asyncio.sleep(0.05)
        socket = started[0].transport._client._connection._protocol._transport  # what gmqtt writes to
        write = socket.write
        socket.write = lambda data: (writes.append(bytes(data)), write(data))[1]
        await task
        got = [msg.topic.split("/")[len(root.split("/"))] for msg in watch.receive()]
    ticks = [w for w in writes if w.count(b"/spat/") == 1]
    assert len(ticks) >= 10  # about 3 s at 10 Hz, after connecting
    assert all(b"/rsm/" in w and w.index(b"/spat/") < w.index(b"/rsm/") for w in ticks)  # one write each: SPaT, then RSM
    assert got.count("spat") >= len(ticks)
    assert got.count("rsm") >= len(ticks)
