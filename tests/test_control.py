"""Cloud adaptive control and signal priority, end to end through Mosquitto (fast mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from v2x.testing import at_once

UNBALANCED = str(Path(__file__).parent.parent / "bench" / "scenarios" / "unbalanced.toml")


@pytest.mark.v2x_scenario(UNBALANCED, "--policy", "adaptive", duration=220, fast=True)
def test_adaptive_policy_gives_the_major_road_more_green_through_the_rsu(v2x_report: Any) -> None:
    sent = [e for e in v2x_report["cloud"]["events"] if e["event"] == "plan-sent"]
    assert len(sent) >= 2  # first retiming after one cycle (70 s), then whenever the split moves by 2 s or more
    applied = v2x_report["events"]["plan_apply_ms"]
    assert applied["issued"] == len(sent)
    assert applied["applied"] >= 1
    assert 0 < applied["p50"] <= 70_000  # at the next phase boundary, within a cycle
    # "adaptive: cycle 70 s, greens 44.5/15.5 s, ...": north-south (3x the demand) gets the longer green
    ns, ew = (float(g) for g in sent[-1]["reason"].split("greens ")[1].split(" s")[0].split("/"))
    assert ns > 2 * ew
    assert v2x_report["traffic"]["collisions"] == 0
    assert v2x_report["traffic"]["red_light_violations"] == 0
    assert v2x_report["events"]["detected_hazards"] == []  # queues at the signal are no hazard


def test_fixed_sends_no_plans_and_actuated_rsus_detect_vehicles_from_their_bsms(v2x_run: Any) -> None:
    fixed = v2x_run(UNBALANCED, "--policy", "fixed", duration=200)
    assert [e for e in fixed["cloud"]["events"] if e["event"] == "plan-sent"] == []
    assert fixed["events"]["plan_apply_ms"]["issued"] == 0
    # the RSU places detector calls from the BSMs it hears: its greens follow the 3:1 demand
    # (without calls every green gaps out at its min green and delay is worse than fixed time)
    actuated = v2x_run(UNBALANCED, "--policy", "actuated", duration=200)
    assert actuated["traffic"]["mean_delay_s"] < 0.8 * fixed["traffic"]["mean_delay_s"]
    assert actuated["traffic"]["red_light_violations"] == actuated["traffic"]["collisions"] == 0


def test_emergency_vehicle_crosses_faster_with_signal_priority(v2x_run: Any) -> None:
    # the ambulance enters at 125 s, due at the line as its green ends
    on, off = at_once(lambda: v2x_run("emergency", duration=180),
                      lambda: v2x_run("emergency", "--set", "control.priority=false", duration=180))
    # from its first request, 250 m out, to crossing the stop line
    (x_on,), (x_off,) = on["emergency"]["crossings"], off["emergency"]["crossings"]
    assert x_on["seconds"] < 25.0 < x_off["seconds"] - 10.0
    (ev_on,) = on["emergency"]["vehicles"]  # and it left the network without a stop
    assert ev_on["stops"] == 0
    granted = [e for e in on["emergency"]["rsu_log"] if e.get("state") == "granted"]
    assert any(e["action"] in ("green_extension", "early_green") for e in granted)
    assert {e["state"] for e in off["emergency"]["rsu_log"] if "state" in e} == {"rejected"}
    # the OBU heard the replies, and cancelled once across
    heard = [e for e in on["emergency"]["priority_events"] if e["event"] == "status"]
    assert heard
    assert all(e["state"] == "granted" for e in heard)
    assert next(e["event"] for e in on["emergency"]["priority_events"]) == "request"
    assert any(e["event"] == "cancellation" for e in on["emergency"]["priority_events"])
    # EVW: the cars ahead of the ambulance in its lane heard it and made way
    assert on["apps"]["evw"]["warnings"] >= 1
    assert all(e["trigger"] == "bsm veh-1" for e in on["app_events"]["listed"] if e["app"] == "evw")
    # nobody else ran a red or collided because of the early or extended green
    assert on["traffic"]["red_light_violations"] == on["traffic"]["collisions"] == 0


def test_spat_shows_a_priority_grant() -> None:
    from v2x.core import messages as m
    from v2x.core.network import Network
    from v2x.core.scenario import load, resolve
    from v2x.core.signal.plans import controllers
    from v2x.core.signal.spat import intersection_state

    net = Network(load(resolve("emergency")))
    ctl = controllers(net)[0]
    ctl.step(5.0)
    west = net.group_of("J1", "west", "through").group_id
    before = intersection_state(net, 0, ctl, 0)
    assert m.IntersectionStatus.SIGNAL_PRIORITY_ACTIVE not in before.status
    assert ctl.request_priority(west, arrival_s=20.0) == "early_green"
    after = intersection_state(net, 0, ctl, 0)
    assert m.IntersectionStatus.SIGNAL_PRIORITY_ACTIVE in after.status
    # the west green now comes after north-south's min green (10 s), yellow and all-red: 15 s, not 35 s
    (mv,) = [s for s in after.states if s.signal_group == west]
    assert mv.events[0].timing.likely_end_s == pytest.approx(10.0)  # 5 s from now + 3 + 2 s clearance = 15 s
