"""The V2X loop without a broker: MAP and SPaT through the codec, vehicles acting on what they decoded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.mapdata import build_map, lane_id
from v2x.core.network import LinkKind, Network
from v2x.core.signal.plans import controllers
from v2x.core.signal.spat import intersection_state
from v2x.core.traffic import Light, Traffic
from v2x.run.offline import OfflineRun
from v2x.vehicle.belief import SignalBelief

EPOCH_MS = 1_763_700_000_000  # UTC ms at sim time 0


def _load(name: str, seconds: float) -> scenario.Scenario:
    return dataclasses.replace(scenario.load(scenario.bundled_dir() / f"{name}.toml"), duration_s=seconds)


def _run_on_spat(sc: scenario.Scenario, spat_every: int) -> Traffic:
    """Traffic whose every belief comes from SPaT frames encoded, decoded and then extrapolated."""
    net = Network(sc)
    traffic = Traffic(net, sc)
    ctls = controllers(net)
    belief = SignalBelief(stale_s=sc.fleet.spat_stale_s + spat_every * sc.step_s)
    steps = round(sc.duration_s / sc.step_s)
    for k in range(steps):
        t = traffic.t
        if k % spat_every == 0:
            for i, ctl in enumerate(ctls):
                state = intersection_state(net, i, ctl, EPOCH_MS + round(t * 1000))
                frame = m.Frame(m.Header(f"rsu-{i}", m.SenderKind.RSU, k, (EPOCH_MS + round(t * 1000)) * 1000, round(t * 1000)), m.Spat((state,)))
                decoded = codec.decode(codec.encode(frame)).body
                assert isinstance(decoded, m.Spat)
                for st in decoded.intersections:
                    belief.receive(st, (st.timestamp_ms - EPOCH_MS) / 1000.0, "rsu")
        group, _ = traffic.signal_view()
        lights = np.full(traffic.n, Light.NONE, dtype=np.int64)
        for i in np.flatnonzero(group >= 0):
            g = net.groups[int(group[i])]
            lights[i] = belief.light(g.intersection + 1, g.group_id, t)
        truth = np.full(traffic.n, Light.NONE, dtype=np.int64)
        for i in np.flatnonzero(group >= 0):
            g = net.groups[int(group[i])]
            from v2x.core.traffic import light_of

            truth[i] = light_of(ctls[g.intersection].state(g.group_id))
        traffic.step(sc.step_s, lights, truth)
        for ctl in ctls:
            ctl.step(traffic.t)
    return traffic


@pytest.mark.parametrize("spat_every", [1, 10], ids=["SPaT every step", "SPaT every second"])
def test_vehicles_on_decoded_spat_drive_exactly_as_with_perfect_information(spat_every: int) -> None:
    sc = _load("four_way", 600.0)
    reference = OfflineRun(sc).run(600.0).stats
    on_spat = _run_on_spat(sc, spat_every).stats
    assert on_spat.spawned == reference.spawned
    assert on_spat.finished == reference.finished > 200
    assert on_spat.delay_sum_s == pytest.approx(reference.delay_sum_s)
    assert on_spat.red_light_entries == 0
    assert on_spat.collisions == 0


def test_stale_spat_makes_vehicles_stop() -> None:
    belief = SignalBelief(stale_s=1.0)
    sc = _load("four_way", 10.0)
    net = Network(sc)
    ctl = controllers(net)[0]
    belief.receive(intersection_state(net, 0, ctl, EPOCH_MS), 0.0, "rsu")
    assert belief.light(1, 2, 0.5) is Light.GREEN
    assert belief.light(1, 2, 1.5) is Light.UNKNOWN
    assert belief.light(2, 2, 0.5) is Light.UNKNOWN  # never heard of that intersection


def test_without_the_countdown_a_vehicle_keeps_the_state_it_heard() -> None:
    sc = _load("four_way", 10.0)
    net = Network(sc)
    state = intersection_state(net, 0, controllers(net)[0], EPOCH_MS)  # group 2: green for 30 s
    follows, reads = SignalBelief(stale_s=60.0), SignalBelief(stale_s=60.0, countdown=False)
    for b in (follows, reads):
        b.receive(state, 0.0, "rsu")
        assert b.light(1, 2, 29.0) is Light.GREEN
    assert follows.light(1, 2, 31.0) is Light.YELLOW  # the countdown says the green is over
    assert reads.light(1, 2, 31.0) is Light.GREEN  # the last state heard, until a newer SPaT
    driver = SignalBelief(stale_s=60.0, countdown=False, reaction_s=1.0)
    driver.receive(state, 0.0, "rsu", now_s=0.2)  # heard 0.2 s after it was sent
    assert driver.light(1, 2, 1.1) is Light.UNKNOWN  # not yet reacted to
    assert driver.light(1, 2, 1.2) is Light.GREEN


def test_a_step_behind_the_clock_that_heard_still_sees_what_it_had_reacted_to() -> None:
    """Real time: a SPaT is heard at 10 Hz on the wall clock, a few ms after the step (sim time) that asks next."""
    sc = _load("four_way", 10.0)
    net = Network(sc)
    state = intersection_state(net, 0, controllers(net)[0], EPOCH_MS)
    driver = SignalBelief(stale_s=1.0, countdown=False, reaction_s=1.0)
    for k in range(30):
        driver.receive(state, k / 10, "rsu", now_s=k / 10 + 0.003)
        assert driver.light(1, 2, k / 10) is (Light.GREEN if k >= 11 else Light.UNKNOWN), k


def test_a_driver_counts_the_yellow_from_when_they_saw_it_and_a_late_message_fools_them() -> None:
    """The time left on a yellow (kernels: the dilemma zone): with the countdown, the SPaT's own; as heard, the
    yellow's length counted from when the driver saw it begin, so a message 0.5 s late leaves them 0.5 s short."""
    sc = _load("four_way", 40.0)
    net = Network(sc)
    ctl = controllers(net)[0]
    while ctl.state(2) is not m.LightState.YELLOW:  # group 2: green, then its 3 s yellow
        ctl.step(ctl.t + 0.1)
    onset = ctl.t
    yellow = intersection_state(net, 0, ctl, EPOCH_MS)
    follows = SignalBelief(stale_s=5.0)
    follows.receive(yellow, onset, "rsu", now_s=onset + 0.5)
    assert follows.light(1, 2, onset + 1.0) is Light.YELLOW
    assert follows.yellow_left(1, 2, onset + 1.0) == pytest.approx(2.0, abs=0.11)
    for late in (0.0, 0.5):
        driver = SignalBelief(stale_s=5.0, countdown=False, reaction_s=1.0)
        driver.receive(yellow, onset, "rsu", now_s=onset + late)
        driver.receive(yellow, onset + 0.1, "rsu", now_s=onset + 0.1 + late)  # still yellow: the same yellow
        now = onset + late + 1.0  # reacted to
        assert driver.light(1, 2, now) is Light.YELLOW
        truly_left = 3.0 - (now - onset)
        assert driver.yellow_left(1, 2, now) == pytest.approx(truly_left + late, abs=0.11), late
    assert SignalBelief(stale_s=5.0, countdown=False).yellow_left(1, 2, onset) == float("inf")  # never heard one


def test_the_fresher_path_wins() -> None:
    sc = _load("four_way", 10.0)
    net = Network(sc)
    ctl = controllers(net)[0]
    old = intersection_state(net, 0, ctl, EPOCH_MS)
    belief = SignalBelief(stale_s=1.0)
    belief.receive(old, 5.0, "cloud")
    belief.receive(old, 4.0, "rsu")  # older: ignored
    assert belief.latest[1].path == "cloud"


@pytest.mark.parametrize("name", ["four_way", "t_junction", "corridor"])
def test_map_carries_every_connection_with_its_signal_group(name: str) -> None:
    sc = _load(name, 10.0)
    net = Network(sc)
    maps = m.MapData(tuple(build_map(net, i) for i in range(len(net.intersections))))
    decoded = codec.decode(codec.encode(m.Frame(m.Header("rsu", m.SenderKind.RSU, 0, 0, 0), maps))).body
    assert isinstance(decoded, m.MapData)
    for lk in net.links:
        if lk.kind != LinkKind.CONN:
            continue
        geo = decoded.intersections[lk.intersection]
        lane = next(x for x in geo.lanes if x.lane_id == lane_id(net, lk.source))
        assert lane.direction is m.LaneDirection.INGRESS
        conn = next(c for c in lane.connections if c.lane_id == lane_id(net, lk.target))
        assert conn.signal_group == net.groups[lk.group].group_id
        # the ingress node list starts at the stop line, within a centimetre
        x0, y0 = lane.nodes[0]
        sx, sy = net.links[lk.source].points[-1] - np.array(net.intersections[lk.intersection].center)
        assert abs(x0 - sx) < 0.01
        assert abs(y0 - sy) < 0.01


def test_bsms_place_vehicles_where_the_core_has_them() -> None:
    sc = _load("four_way", 60.0)
    run = OfflineRun(sc)
    run.run(60.0)
    from v2x.vehicle.bsm import build_bsms

    bsms = build_bsms(run.traffic, run.net.frame)
    assert len(bsms) == run.traffic.n > 5
    cx, cy, _ = run.traffic.bodies()
    for i, (vid, bsm) in enumerate(bsms):
        frame = m.Frame(m.Header(f"veh-{vid}", m.SenderKind.VEHICLE, 0, 0, 0), bsm)
        back = codec.decode(codec.encode(frame)).body
        assert isinstance(back, m.Bsm)
        x, y = run.net.frame.to_local(back.position.lat_deg, back.position.lon_deg)
        assert abs(x - cx[i]) < 0.02  # the wire keeps position to about a centimetre
        assert abs(y - cy[i]) < 0.02
        assert abs(back.speed_mps - run.traffic.v[i]) <= 0.01 + 1e-9


def test_every_vehicle_believes_the_spat_it_heard_by_either_path() -> None:
    """The vehicles hearing one SPaT share what they take from it (decoded once, timed once): each vehicle's belief,
    and the fleet's freshest, are what receiving that SPaT's decoded state gives, SPaT after SPaT on both paths; and
    a SPaT frame made after another is gone is never taken for it."""
    from v2x.core.topics import Topics
    from v2x.net.connection import Connection
    from v2x.net.station import Station, StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport, Message
    from v2x.vehicle.belief import Received
    from v2x.vehicle.fleet import Fleet, Radio

    sc = _load("four_way", 60.0)
    net, clock, topics, mem = Network(sc), StepClock(EPOCH_MS / 1000), Topics(), MemoryBroker()
    fleet = Fleet(sc, Connection("mqtt://127.0.0.1:1", impair=False), clock, transport_factory=lambda sid: MemoryTransport(mem, sid))
    radios = [Radio(vid, Station(f"veh-{vid}", m.SenderKind.VEHICLE, clock), fleet._belief(), ready=True) for vid in range(1, 6)]
    ctl, tile, iid = controllers(net)[0], net.site_tiles[0], net.intersections[0].spec.id
    senders = {"rsu": (Station(sc.rsu_of(0).id, m.SenderKind.RSU, clock), topics.spat("rsu", tile, iid)),
               "cloud": (Station("cloud", m.SenderKind.CLOUD, clock), topics.spat("cloud", tile, iid))}
    for k in range(40):
        clock.t = k * sc.step_s
        ctl.step(clock.t)
        for path, (station, topic) in senders.items():
            payload = station.encode(m.Spat((intersection_state(net, 0, ctl, clock.utc_us() // 1000, revision=k % 128),)), None, topic)
            body = codec.decode(payload).body
            assert isinstance(body, m.Spat)
            (st,) = body.intersections
            expected = Received(st, clock.sim_of_utc_ms(st.timestamp_ms), path)
            for radio in radios:
                fleet._handle(radio, Message(topic, bytes(bytearray(payload)), 0, False, 0))  # each its own bytes
                assert radio.belief.latest[1] == expected
            assert fleet.heard.latest[1] == expected
    assert fleet.counters.received == {"spat/rsu": 40 * len(radios), "spat/cloud": 40 * len(radios)}
    header = m.Header("cloud", m.SenderKind.CLOUD, 0, clock.utc_us(), 0)
    states = [intersection_state(net, 0, ctl, clock.utc_us() // 1000 + k, revision=k % 128) for k in range(100)]
    for state in states:  # frames made and dropped one after another: the next one's id is often the last one's
        fleet._act(radios[0], senders["cloud"][1], m.Frame(header, m.Spat((state,))))
        assert radios[0].belief.latest[1].state is state
