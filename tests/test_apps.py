"""Vehicle applications: each fires when it should (a test that fails if it never fires) and
stays quiet when it should not (a test that fails if it fires anyway)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from v2x.core import messages as m
from v2x.core.scenario import load, resolve
from v2x.run.offline import OfflineRun
from v2x.vehicle.apps import HLW_RANGE_M, Apps, route_points

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def _event_at(run: OfflineRun, iid: str, leg: str, lane: int, upstream_m: float) -> m.RoadTrafficEvent:
    _, _, x, y = run.net.lane_point(iid, leg, lane, upstream_m)
    return m.RoadTrafficEvent(
        event_id=1, kind=m.HazardKind.STALLED_VEHICLE, source=m.EventSource.DETECTION, status=m.EventStatus.ACTIVE,
        position=run.net.frame.to_geo(x, y), radius_m=10.0, lanes=(), priority=5, start_time_ms=0, end_time_ms=None,
        description="stalled vehicle",
    )


def test_hlw_warns_exactly_the_vehicles_heading_for_the_hazard_within_range() -> None:
    sc = load(resolve("hazard"))
    run = OfflineRun(sc)
    for _ in range(900):  # 90 s of traffic on every approach
        run.step()
    t = run.traffic
    assert t.n > 20
    event = _event_at(run, "J1", "north", 0, 120.0)
    apps = Apps(run.net)
    # every vehicle has heard of the hazard: only those whose path passes it, still before it, within range, are warned
    apps.step(t, {int(v): {"cloud/1": event} for v in t.ids}, {})
    target = route_points(run.net, 0, "north", 120.0)[t.route]
    should = {int(v) for v, s, tg in zip(t.ids, t.s, target, strict=True) if s < tg <= s + HLW_RANGE_M}
    warned = {w.vehicle for w in apps.warnings}
    assert should  # the test means something: some vehicles are heading for it
    assert warned == should
    assert len(should) < t.n  # ...and others (other approaches, or past it) are not
    assert all(w.app == "hlw" and w.trigger == "rsi cloud/1" for w in apps.warnings)
    apps.step(t, {int(v): {"cloud/1": event} for v in t.ids}, {})
    assert len(apps.warnings) == len(should)  # once per vehicle and hazard


def test_route_points_are_nan_off_the_approach() -> None:
    run = OfflineRun(load(resolve("four_way")))
    pts = route_points(run.net, 0, "north", 50.0)
    assert np.isfinite(pts).any()
    assert np.isnan(pts).any()
    for r in np.flatnonzero(np.isfinite(pts)):
        first = run.net.links[int(run.net.route_links[r, 0])]
        assert first.leg == "north"
        assert math.isclose(pts[r], run.net.link_length[run.net.route_links[r, 0]] - 50.0)


@pytest.mark.v2x_scenario("hazard", duration=200, fast=True)
def test_hazard_every_vehicle_that_reached_it_was_warned_first(v2x_report: Any) -> None:
    (h,) = v2x_report["events"]["hazard_warning_ms"]["per_hazard"]
    assert h["reached"] >= 10
    assert h["reached_unwarned"] == 0
    assert h["affected"] >= 1
    assert h["affected_warned"] == h["affected"]
    assert 0 < v2x_report["events"]["hazard_warning_ms"]["first"] <= v2x_report["events"]["hazard_warning_ms"]["last"] < 1000
    hlw = v2x_report["apps"]["hlw"]
    assert hlw["warnings"] == hlw["vehicles"] >= h["reached"]
    assert hlw["lead_time_s_p50"] >= 5.0
    assert v2x_report["apps"]["rlvw"]["warnings"] == 0  # timely SPaT, followed by its countdown: nobody runs a red
    assert v2x_report["traffic"]["red_light_violations"] == 0
    assert v2x_report["events"]["detected_hazards"] == []  # the stalled car's BSMs show it, but it is reported already


@pytest.mark.v2x_scenario(
    "four_way", "--set", "links.sidelink.latency_ms=1000", "--set", "links.cellular.latency_ms=1000",
    "--set", "fleet.spat_countdown=false", "--set", "fleet.spat_stale_s=2", duration=200, fast=True,
)
def test_rlvw_warns_the_vehicles_that_late_spat_sends_through_red(v2x_report: Any) -> None:
    violations = v2x_report["traffic"]["red_light_violations"]
    rlvw = v2x_report["apps"]["rlvw"]
    assert violations >= 1  # drivers reading 1 s-old SPaT without its countdown, reacting after 1 s
    assert rlvw["warnings"] >= violations
    assert 0 < rlvw["lead_time_s_min"] <= rlvw["lead_time_s_p50"]
    assert all(e["trigger"].startswith("spat J1") for e in v2x_report["app_events"]["listed"] if e["app"] == "rlvw")
    assert v2x_report["apps"]["hlw"]["warnings"] == 0  # no hazard in this scenario


def test_time_to_green_is_the_reds_likely_end_and_none_otherwise() -> None:
    from v2x.core.network import Network
    from v2x.core.signal.plans import controllers
    from v2x.core.signal.spat import intersection_state
    from v2x.vehicle.apps import time_to_green, time_to_red
    from v2x.vehicle.belief import SignalBelief

    net = Network(load(resolve("four_way")))
    ctl = controllers(net)[0]
    belief = SignalBelief(stale_s=1.0)
    belief.receive(intersection_state(net, 0, ctl, 0), 0.0, "rsu")
    states = {mv.signal_group: mv.events[0].state for mv in belief.latest[1].state.states}
    green = next(g for g, st in states.items() if st is m.LightState.PROTECTED_GREEN)
    red = next(g for g, st in states.items() if st is m.LightState.RED)
    assert time_to_green(belief, 1, green, 0.5) is None  # green already: no advice
    assert time_to_red(belief, 1, green, 0.5) is None  # not yet yellow: RLVW has nothing to say
    # the other phase's red lasts the first phase's green, yellow and all-red (30 + 3 + 2 s)
    assert time_to_green(belief, 1, red, 0.5) == pytest.approx(34.5)
    assert time_to_red(belief, 1, red, 0.5) == 0.0
    assert time_to_green(belief, 1, red, 2.0) is None  # stale SPaT: nothing to advise on


def test_glosa_advises_only_when_on_and_then_fewer_vehicles_stop(v2x_run: Any) -> None:
    # 120 s (1.5 cycles of 80 s): 24 advisories and 0.174 vs 0.304 stops per vehicle (measured at b81edaa)
    off = v2x_run("corridor", "--set", "fleet.glosa=false", duration=120)
    on = v2x_run("corridor", "--set", "fleet.glosa=true", duration=120)  # the same seed: the same arrivals
    assert "glosa" not in off["apps"]
    assert not [e for e in off["app_events"]["listed"] if e["app"] == "glosa"]
    g = on["apps"]["glosa"]
    assert g["warnings"] >= 20
    assert all(e["trigger"].startswith("spat J") for e in on["app_events"]["listed"] if e["app"] == "glosa")
    assert on.traffic["collisions"] == 0
    assert on.traffic["red_light_violations"] == 0
    assert on.traffic["stops_per_vehicle"] < 0.85 * off.traffic["stops_per_vehicle"]


def _two_in_a_lane(lead_v: float, lead_a: float, gap_m: float, follow_v: float = 13.9, kinds: tuple[str, str] = ("car", "car"),
                   follower_leg: str = "west") -> tuple[Any, Any]:
    """A leader 150 m before the west stop line and a follower `gap_m` behind it (bumper to bumper), the
    follower in the same lane (or on another approach), every BSM heard by everyone."""
    from v2x.core.network import Network
    from v2x.core.traffic import KIND_INDEX, VEHICLE_TYPES, Traffic, _Pending
    from v2x.net.station import Station, StepClock
    from v2x.vehicle.bsm import build_bsms
    from v2x.vehicle.sidelink import Neighbours

    net = Network(load(resolve("four_way")))
    tr = Traffic(net, seed=1)
    tr._pending.clear()
    tr._arrivals.clear()
    lead = net.entry_routes[(0, "west", "through")][0]
    follow = net.entry_routes[(0, follower_leg, "through")][0]
    tr._append([(_Pending(0.0, KIND_INDEX[kinds[0]], "through", (0, "west", "through"), 1), lead, VEHICLE_TYPES[kinds[0]], lead_v)])
    tr.s[0] = net.route_start[lead, 1] - 150.0
    tr.a[0] = lead_a
    tr._append(
        [(_Pending(0.0, KIND_INDEX[kinds[1]], "through", (0, follower_leg, "through"), 2), follow, VEHICLE_TYPES[kinds[1]], follow_v)]
    )
    tr.s[1] = net.route_start[follow, 1] - 150.0 - tr.length[0] - gap_m if follower_leg == "west" else 20.0
    tr._view = None
    heard = Neighbours(range_m=300.0)
    for vid, bsm in build_bsms(tr, net.frame):  # as the fleet's V2V radio gets them: bytes on the sender's topic
        sid = f"veh-{vid}"
        heard.add(f"v2x/v1/bsm/1/2/3/{sid}", Station(sid, m.SenderKind.VEHICLE, StepClock(0.0)).encode(bsm), 0.0)
    return tr, heard


def _apps_on(tr: Any, heard: Any) -> Apps:
    from v2x.vehicle.belief import SignalBelief

    apps = Apps(tr.net, neighbours=heard)
    apps.step(tr, {}, {int(v): SignalBelief(1.0) for v in tr.ids})
    return apps


def test_fcw_warns_a_follower_closing_fast_on_a_stopped_leader() -> None:
    apps = _apps_on(*_two_in_a_lane(lead_v=0.0, lead_a=0.0, gap_m=20.0))
    (w,) = [w for w in apps.warnings if w.app == "fcw"]
    assert w.vehicle == 2
    assert w.trigger == "bsm veh-1"
    assert w.lead_s == pytest.approx(20.0 / 13.9, abs=0.05)  # time to collision


@pytest.mark.parametrize(
    ("lead_v", "gap_m", "leg", "why"),
    [(12.5, 20.0, "west", "closing at 1.4 m/s is ordinary following"),
     (0.0, 60.0, "west", "60 m to stop from 50 km/h is comfortable braking"),
     (0.0, 20.0, "north", "the stopped car is on another approach")],
)
def test_fcw_stays_quiet(lead_v: float, gap_m: float, leg: str, why: str) -> None:
    apps = _apps_on(*_two_in_a_lane(lead_v=lead_v, lead_a=0.0, gap_m=gap_m, follower_leg=leg))
    assert [w for w in apps.warnings if w.app == "fcw"] == [], why


def test_fcw_needs_the_leaders_bsm() -> None:
    tr, heard = _two_in_a_lane(lead_v=0.0, lead_a=0.0, gap_m=20.0)
    heard.forget("veh-1")  # never heard over the sidelink
    assert _apps_on(tr, heard).warnings == []


def test_ebw_warns_the_vehicles_behind_a_hard_braking_one_only() -> None:
    apps = _apps_on(*_two_in_a_lane(lead_v=10.0, lead_a=-5.0, gap_m=60.0))
    (w,) = [w for w in apps.warnings if w.app == "ebw"]
    assert (w.vehicle, w.trigger) == (2, "bsm veh-1")
    assert w.lead_s == pytest.approx(60.0 / 13.9, abs=0.05)
    calm = _apps_on(*_two_in_a_lane(lead_v=10.0, lead_a=-2.0, gap_m=60.0))  # braking, not hard
    assert [w for w in calm.warnings if w.app == "ebw"] == []
    elsewhere = _apps_on(*_two_in_a_lane(lead_v=10.0, lead_a=-5.0, gap_m=60.0, follower_leg="north"))
    assert [w for w in elsewhere.warnings if w.app == "ebw"] == []


def test_evw_warns_the_car_ahead_of_an_emergency_vehicle_and_it_makes_way() -> None:
    tr, heard = _two_in_a_lane(lead_v=8.0, lead_a=0.0, gap_m=80.0, follow_v=16.0, kinds=("car", "emergency"))
    apps = _apps_on(tr, heard)
    (w,) = [w for w in apps.warnings if w.app == "evw"]
    assert (w.vehicle, w.trigger) == (1, "bsm veh-2")
    assert apps.making_way(tr).tolist() == [True, False]
    lane_before = tr.net.links[int(tr.current_link()[0])].lane
    tr.step(0.1, np.full(tr.n, 0), None, None, None, apps.making_way(tr))
    assert tr.net.links[int(tr.current_link()[0])].lane != lane_before  # moved over: the lane ahead of the ambulance is free
    # a car behind the ambulance, or one that did not hear it, is not warned
    tr, heard = _two_in_a_lane(lead_v=8.0, lead_a=0.0, gap_m=80.0, follow_v=16.0, kinds=("emergency", "car"))
    assert [w for w in _apps_on(tr, heard).warnings if w.app == "evw"] == []
    tr, heard = _two_in_a_lane(lead_v=8.0, lead_a=0.0, gap_m=80.0, follow_v=16.0, kinds=("car", "emergency"))
    heard.forget("veh-2")
    assert [w for w in _apps_on(tr, heard).warnings if w.app == "evw"] == []


def test_v2v_counts_bsms_it_cannot_use() -> None:
    from v2x.net.station import Station, StepClock
    from v2x.vehicle.sidelink import Neighbours

    heard = Neighbours(range_m=300.0)
    bsm = m.Bsm(position=m.GeoPoint(31.49, 120.31, 5.0), speed_mps=10.0, heading_deg=90.0)
    real = Station("veh-1", m.SenderKind.VEHICLE, StepClock(0.0)).encode(bsm)
    heard.add("v2x/v1/bsm/1/2/veh-9", real, 0.0)  # veh-1's BSM on veh-9's topic
    heard.add("v2x/v1/bsm/1/2/veh-2", b"\x0a\xff garbage", 0.0)
    heard.add("v2x/v1/bsm/1/2/veh-1", real, 0.0)
    assert heard.heard("veh-5", "veh-9", 10.0, 0.1) is None
    assert heard.heard("veh-5", "veh-2", 10.0, 0.1) is None
    got = heard.heard("veh-5", "veh-1", 10.0, 0.1)
    assert got is not None
    assert got.speed_mps == bsm.speed_mps  # decoded (positions round to the wire's 1e-7 deg)
    assert heard.heard("veh-5", "veh-1", 400.0, 0.1) is None  # out of range
    assert heard.heard("veh-5", "veh-1", 10.0, 1.5) is None  # too old
    assert heard.bad.counts["wrong_sender"] == 1
    assert sum(heard.bad.counts.values()) == 2
