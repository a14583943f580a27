"""Hazards the cloud detects from BSMs: the rules alone, then end to end through Mosquitto."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.detect import STOPPED_S, Detector


def _feed(det: Detector, seconds: float, on_lanes: list[tuple[str, int, float, float]]) -> list[Any]:
    found = []
    for t in range(round(seconds) + 1):
        found += det.standing(float(t), on_lanes)
    return found


def test_a_vehicle_standing_alone_away_from_the_line_is_detected_after_n_seconds() -> None:
    det = Detector()
    assert _feed(det, STOPPED_S - 1, [("stalled", 7, 120.0, 0.0)]) == []
    (d,) = det.standing(STOPPED_S, [("stalled", 7, 120.0, 0.0)])
    assert (d.kind, d.lane, d.vehicles) == ("stalled_vehicle", 7, {"stalled"})
    assert det.standing(STOPPED_S + 1, [("stalled", 7, 120.0, 0.0)]) == []  # confirmed, not raised twice
    assert det.expired(STOPPED_S + 30.0) == []
    assert det.expired(STOPPED_S + 200.0) == [d]  # not confirmed for a minute: over


def test_queues_at_the_signal_and_moving_traffic_are_not_hazards() -> None:
    queue = [(f"q{k}", 7, 2.0 + 7.0 * k, 0.0) for k in range(12)]  # 12 standing from the line back to 79 m
    moving = [("m1", 8, 150.0, 12.0)]
    assert _feed(Detector(), 60, queue + moving) == []


def test_hard_braking_cluster_needs_three_vehicles_away_from_line_and_edge() -> None:
    det = Detector()
    assert det.hard_brake(0.0, "a", 0.0, 100.0, 7, 100.0) is None
    assert det.hard_brake(1.0, "b", 0.0, 110.0, 7, 90.0) is None
    d = det.hard_brake(2.0, "c", 0.0, 120.0, 7, 80.0)
    assert d is not None
    assert d.vehicles == {"a", "b", "c"}
    far = Detector()
    for k, name in enumerate("abc"):  # 30 s apart: no cluster
        assert far.hard_brake(30.0 * k, name, 0.0, 100.0, 7, 100.0) is None
    line = Detector()
    for k, name in enumerate("abc"):  # braking for a yellow, near the line
        assert line.hard_brake(float(k), name, 0.0, 10.0, 7, 20.0) is None
    edge = Detector()
    for k, name in enumerate("abc"):  # where arriving vehicles are put onto the road
        assert edge.hard_brake(float(k), name, 0.0, 240.0, 7, 240.0, from_edge_m=10.0) is None


@pytest.mark.v2x_scenario("hazard", "--set", "events.0.reported=false", duration=120, fast=True)
def test_the_cloud_detects_an_unreported_stalled_vehicle_and_warns_with_it(v2x_report: Any) -> None:
    (d,) = v2x_report["events"]["detected_hazards"]
    assert d["kind"] == "stalled_vehicle"
    assert (d["intersection"], d["approach"], d["lane"]) == ("J1", "north", 0)  # where hazard.toml put it
    assert abs(d["to_line_m"] - 120.0) <= 10.0
    assert 60.0 + STOPPED_S <= d["sim_s"] <= 60.0 + STOPPED_S + 3.0  # it stalls at 60 s; N = 10 s, surveyed each second
    raised = [e for e in v2x_report["cloud"]["events"] if e["event"] == "hazard-raised"]
    assert [(e["event_id"], e["source"]) for e in raised] == [(d["event_id"], "detection")]  # the reported one is not known
    hlw = [e for e in v2x_report["app_events"]["listed"] if e["app"] == "hlw"]
    assert hlw
    assert all(e["trigger"] == f"rsi cloud/{d['event_id']}" for e in hlw)
    assert all(e["t_s"] > d["sim_s"] for e in hlw)
