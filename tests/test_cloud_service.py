"""RSU and cloud as separate OS processes on one broker: the SPaT relay and a lost RSU."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.scenario import bundled_dir
from v2x.net.broker import MosquittoBroker
from v2x.net.signing import CA, role_permissions
from v2x.net.transport import MqttTransport
from v2x.testing import messages

FOUR_WAY = str(bundled_dir() / "four_way.toml")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "v2x", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_event(proc: subprocess.Popen[str], name: str, timeout_s: float) -> tuple[dict[str, object], float]:
    """The next JSON event line called `name` on the process's stdout, and when it arrived."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event.get("event") == name:
            return event, time.monotonic()
    raise AssertionError(f"no {name!r} event within {timeout_s} s")


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "signed"])
async def test_cloud_relays_spat_and_reports_a_killed_rsu_lost(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path, signed: bool) -> None:
    """Signed, the RSU's Will is signed at connect time and the verifying cloud takes it although the broker
    publishes it long after it was made."""
    root = f"{topic_prefix}/v2x/v1"
    keepalive = 1
    sign: dict[str, list[str]] = {"cloud": [], "roadside": []}
    if signed:  # as `v2x run --sign` does: one root CA, an authority for each tier's process
        ca, now_ms = CA(), int(time.time() * 1000) - 60_000
        for tier, kind, ids in (("cloud", m.SenderKind.CLOUD, []), ("roadside", m.SenderKind.RSU, ["J1"])):
            ca.authority(tier, now_ms, role_permissions(kind, ids)).save(tmp_path / f"{tier}.json")
            sign[tier] = ["--signing-ca", str(tmp_path / f"{tier}.json")]
    cloud = _spawn("cloud", FOUR_WAY, "--broker", mosquitto.url, "--root", root, "--duration", "20", "--keepalive", "5", *sign["cloud"])
    rsu = _spawn("roadside", FOUR_WAY, "--broker", mosquitto.url, "--root", root, "--keepalive", str(keepalive), *sign["roadside"])
    try:
        async with MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
            await watch.subscribe(f"{root}/spat/cloud/#")
            relayed: list[m.Frame] = []

            async def collect() -> None:
                async for msg in messages(watch):
                    relayed.append(codec.decode(msg.payload))
                    if len(relayed) >= 10:
                        return

            await asyncio.wait_for(collect(), 15)
        online, _ = await asyncio.to_thread(_read_event, cloud, "rsu-online", 10)
        assert online["rsu"] == "RSU-J1"
        killed = time.monotonic()
        os.kill(rsu.pid, signal.SIGKILL)
        lost, seen = await asyncio.to_thread(_read_event, cloud, "rsu-lost", 10)
        assert lost["rsu"] == "RSU-J1"
        # the broker publishes the Will once 1.5 keepalives pass without a packet
        assert seen - killed < 1.5 * keepalive + 2.0
        cloud.send_signal(signal.SIGINT)
        out, _ = cloud.communicate(timeout=20)  # read its output while it stops: a full pipe would block its summary
        summary = next(e for e in map(json.loads, out.splitlines()) if e.get("event") == "summary")
        assert summary["bad_input"] == {}  # signed: every message verified, the Will too
    finally:
        for p in (rsu, cloud):
            p.kill()
            p.wait()
    assert all(f.header.sender_kind is m.SenderKind.CLOUD for f in relayed)
    assert all(isinstance(f.body, m.Spat) and f.body.intersections[0].name == "J1" for f in relayed)


async def test_a_plan_from_the_cloud_reaches_the_rsu_and_shows_in_its_spat(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    import dataclasses

    from cloud.service import CloudService
    from roadside.service import RsuService
    from v2x.core.network import Network
    from v2x.core.scenario import load
    from v2x.core.topics import Topics
    from v2x.net.lockstep import Hub
    from v2x.net.station import StepClock

    net = Network(load(FOUR_WAY))
    topics = Topics(f"{topic_prefix}/v2x/v1")
    clock = StepClock(1_767_225_600.0)
    hub = Hub(topics.root)
    rsu = RsuService(net, 0, hub.wrap(MqttTransport(mosquitto.url, f"{topic_prefix}-rsu")), topics, clock)
    cloud = CloudService(net, hub.wrap(MqttTransport(mosquitto.url, f"{topic_prefix}-cloud")), topics, clock, events=None)
    for svc in (cloud, rsu):
        await svc.transport.start()
    try:
        await cloud.start()
        await rsu.start()
        old = rsu.ctl.plan
        longer = tuple(dataclasses.replace(p, green_s=p.green_s + 5.0) for p in old.phases)
        cloud.send_plan(0, dataclasses.replace(old, plan_id=7, phases=longer), reason="test")
        await hub.settle()
        rsu.receive()
        assert rsu.counters.plans_applied == 1
        while rsu.ctl.plan.plan_id != 7 and clock.t < 2 * old.cycle_s:  # applied at a safe phase boundary
            clock.t += 0.1
            rsu.tick(clock.t)
        assert rsu.ctl.plan.plan_id == 7
        # the event latency: issued at 0, received at once (lockstep), applied at the phase boundary
        [log] = rsu.plan_log()
        assert log["plan_id"] == 7
        assert log["issued_s"] == log["received_s"] == 0.0
        assert log["applied_s"] == rsu.ctl.plan_changes[-1][0] > 0.0
        assert rsu.ctl.plan.cycle_s == old.cycle_s + 5.0 * len(old.phases)
        # left turns stay permissive: that is the junction's geometry, which the wire plan does not carry
        assert [p.permissive for p in rsu.ctl.plan.phases] == [p.permissive for p in old.phases]
        await hub.settle()
        frames = [codec.decode(msg.payload) for msg in cloud.transport.receive() if "/spat/" in msg.topic]
        latest = max(frames, key=lambda f: f.header.seq).body  # a round's deliveries come sorted by payload
        assert isinstance(latest, m.Spat)
        assert latest.intersections[0].plan_id == 7
    finally:
        for svc in (cloud, rsu):
            await svc.transport.close()


def test_the_cloud_counts_the_queue_on_each_approach_from_bsms() -> None:
    """Its picture (from BSMs alone) against the core's truth: vehicles standing on each approach lane."""
    import numpy as np

    from cloud.service import QUEUE_SPEED_MPS, CloudService
    from v2x.core.network import LinkKind
    from v2x.core.scenario import load
    from v2x.core.topics import Topics
    from v2x.net.station import Station, StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport
    from v2x.run.offline import OfflineRun
    from v2x.vehicle.bsm import build_bsms

    run = OfflineRun(load(FOUR_WAY))
    run.run(200.0)  # long enough for queues at red
    t, net = run.traffic, run.net
    clock = StepClock(1_767_225_600.0)
    clock.t = t.t
    cloud = CloudService(net, MemoryTransport(MemoryBroker(), "cloud"), Topics(), clock, events=None)
    for vid, bsm in build_bsms(t, net.frame):
        frame = codec.decode(Station(f"veh-{vid}", m.SenderKind.VEHICLE, clock).encode(bsm))
        cloud.handle("t", frame)
    truth: dict[str, int] = {}
    link = t.current_link()
    for i in np.flatnonzero(t.v < QUEUE_SPEED_MPS):
        lk = net.links[int(link[i])]
        if lk.kind is LinkKind.IN:
            key = f"{net.intersections[lk.intersection].spec.id}.{lk.leg}"
            truth[key] = truth.get(key, 0) + 1
    assert sum(truth.values()) >= 5  # there is a queue to find
    assert cloud.survey(clock.t) == dict(sorted(truth.items()))


def test_the_clouds_picture_holds_the_vehicles_heard_lately_not_every_vehicle_ever_heard() -> None:
    """Ten minutes of four_way's traffic (offline, no broker) as BSMs into the cloud service: its picture of the
    vehicles and its misbehaviour checks' tracks hold those heard in the last seconds; what it keeps of each departed
    vehicle is a count for the summary. Before, both kept every vehicle that ever passed."""
    import dataclasses

    from cloud.service import CloudService
    from v2x.core import scenario
    from v2x.core.topics import Topics
    from v2x.net.station import StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport
    from v2x.run.offline import OfflineRun
    from v2x.vehicle.bsm import build_bsms

    sc = dataclasses.replace(scenario.load(scenario.resolve("four_way")), events=())
    run = OfflineRun(sc)
    clock = StepClock(1_767_225_600.0)
    svc = CloudService(run.net, MemoryTransport(MemoryBroker(), "cloud"), Topics("t/v2x/v1"), clock, events=None)
    seq: dict[str, int] = {}
    held, present = [], []
    for _ in range(round(600 / sc.step_s)):
        run.step()
        clock.t = run.traffic.t
        for vid, bsm in build_bsms(run.traffic, run.net.frame):
            sid = f"veh-{vid}"
            seq[sid] = seq.get(sid, -1) + 1
            header = m.Header(sid, m.SenderKind.VEHICLE, seq[sid], clock.utc_us(), round(clock.t * 1000))
            svc.handle(f"t/v2x/v1/bsm/{sid}", m.Frame(header, bsm))
        svc.tick(clock.t)
        held.append(max(len(svc.vehicles), len(svc.misbehaviour.tracks)))
        present.append(run.traffic.n)
    assert svc.summary().vehicles_seen == len(seq) > 200
    assert len(svc.misbehaviour.summary().senders) == len(seq)
    # at most the vehicles present in the last 10 s (cloud.service.GONE_S) and a survey period, and those that entered meanwhile
    steps = round(11.0 / sc.step_s)
    arrived = max(len(seq) / 600 * 11.0 * 3, 10)  # three times the mean arrival rate over that time
    assert max(held) <= max(present) + arrived, (max(held), max(present), arrived)
    assert held[-1] <= max(present[-steps:]) + arrived
