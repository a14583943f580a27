"""Penetration and roadside sensors together (issue #26): the sweep's KPIs against penetration (hazard warning
coverage of the equipped, the cloud picture's completeness), RSM and fusion at penetration 0 and 0.5. On the
session's Mosquitto; short fast runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.test_perception import _run_in_process
from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.scenario import resolve
from v2x.core.sensors import Sensor
from v2x.net.broker import MosquittoBroker
from v2x.testing import RunScenario

RADAR = '\n[[sensors]]\nrsu = "RSU-J1"\ntype = "radar"\n'


def test_a_sweep_over_penetration_gives_hazard_coverage_of_the_equipped_and_the_cloud_picture(
    mosquitto: MosquittoBroker, tmp_path: Path,
) -> None:
    """hazard with a radar, the car stalling at 10 s: at 0 no vehicle can be warned (coverage blank, every vehicle
    that came to it unequipped) and the cloud holds no one by BSM but many fused; at 0.5 and 1 the equipped were
    warned; the fused picture always holds at least what the BSMs alone do."""
    path = tmp_path / "hazard_radar.toml"
    path.write_text(resolve("hazard").read_text().replace("start_s = 60.0", "start_s = 10.0") + RADAR)
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "sweep", str(path), "--set", "fleet.penetration=0,0.5,1", "--duration", "60",
         "--out", str(tmp_path / "out"), "--broker", mosquitto.url],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["fleet.penetration"]: r for r in csv.DictReader((tmp_path / "out" / "sweep.csv").open())}
    assert rows.keys() == {"0", "0.5", "1"}
    zero, half, one = rows["0"], rows["0.5"], rows["1"]
    assert zero["hazard_coverage"] == ""  # no equipped vehicle came to it: blank, not 0
    assert float(zero["hazard_reached_equipped"]) == 0 < float(zero["hazard_reached_unequipped"])
    assert float(one["hazard_reached_unequipped"]) == 0 < float(one["hazard_reached_equipped"])
    assert float(half["hazard_reached_equipped"]) > 0
    assert float(half["hazard_reached_unequipped"]) > 0
    for r in (half, one):
        assert 0.0 <= float(r["hazard_coverage"]) <= 1.0
        assert float(r["hazard_coverage"]) >= 0.95
        assert r["hazard_coverage_cloud"] == r["hazard_coverage"]  # RSI comes only from the cloud
    assert float(zero["picture_bsm_only"]) == 0.0 < float(zero["picture_fused"])
    for r in rows.values():
        for k in ("", "_in_coverage"):
            bsm, fused = float(r[f"picture_bsm_only{k}"]), float(r[f"picture_fused{k}"])
            assert 0.0 <= bsm <= fused <= 1.0
    assert float(zero["picture_bsm_only"]) < float(half["picture_bsm_only"]) < float(one["picture_bsm_only"])
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 0
    for report in (tmp_path / "out" / "runs").glob("*.json"):  # each group apart, both ways of being affected
        for h in json.loads(report.read_text())["events"]["hazard_warning_ms"]["per_hazard"]:
            assert h["affected_equipped"] + h["affected_unequipped"] == h["affected"]
            assert h["reached_equipped"] + h["reached_unequipped"] == h["reached"]
            assert h["affected_warned"] <= h["affected_equipped"]
            assert h["reached_equipped_warned"] <= h["reached_equipped"]


def test_at_penetration_0_a_radar_s_stalled_car_is_detected_once_on_its_own_lane(v2x_run: RunScenario, tmp_path: Path) -> None:
    """hazard with a radar, nobody equipped, the stalled car not reported: the cloud detects it from the radar alone,
    on its lane (the median, 0) and nowhere else. Before, one radar detection a metre out put the standing car on
    the next lane once in a while, and the cloud raised a second hazard there (lane 1, 33 to 57 s after the right one; seeds 1-3)."""
    path = tmp_path / "hazard_radar.toml"
    path.write_text(resolve("hazard").read_text().replace("start_s = 60.0", "start_s = 10.0") + RADAR)
    for seed in ("1", "2"):
        r = v2x_run(str(path), "--seed", seed, "--set", "fleet.penetration=0", "--set", "events.0.reported=false", duration=120)
        (event,) = scenario.load(path).events
        detected = r["events"]["detected_hazards"]
        print(f"seed {seed}:", [(d["approach"], d["lane"], d["to_line_m"], d["sim_s"]) for d in detected])
        assert [(d["intersection"], d["approach"], d["lane"]) for d in detected] == [(event.intersection, event.approach, event.lane)]
        (d,) = detected
        assert abs(d["to_line_m"] - event.distance_m) <= 15.0  # where the car stands
        assert d["sim_s"] <= event.start_s + 15.0  # standing 10 s (cloud.detect.STOPPED_S), seen within a few more


def _pen0_lidar() -> scenario.Scenario:
    lidar = Sensor(rsu="RSU-J1", type="lidar", range_m=100.0, detection_p=1.0, latency_ms=0.0, position_std_m=0.05,
                   speed_std_mps=0.0)
    sc = scenario.load(resolve("four_way"))
    return dataclasses.replace(sc, sensors=(lidar,), fleet=dataclasses.replace(sc.fleet, penetration=0.0))


def test_at_penetration_0_rsm_carries_every_vehicle_in_coverage_and_the_cloud_s_picture_is_rsm_alone(
    mosquitto: MosquittoBroker,
) -> None:
    """four_way, no OBU at all, a lidar on the approaches: each RSM on the wire carries exactly the vehicles in its
    range, all unequipped; the cloud holds no BSM, and its picture in coverage is the truth (detection p 1), down to
    the queue it counts on each approach."""
    from cloud.service import QUEUE_SPEED_MPS

    sc = _pen0_lidar()
    run, heard, seen = _run_in_process(mosquitto, sc, 60.0)
    perception = run.rsus[0].perception
    labels = perception.labels
    assert labels
    assert not any(equipped for _, equipped in labels.values())
    checked = 0
    for _, payload in heard:
        frame = codec.decode(payload)
        assert isinstance(frame.body, m.Rsm)
        k = round(frame.header.sim_time_ms / 1000 / sc.step_s)
        sensed = [p for p in frame.body.participants if p.source is m.SourceType.LIDAR]
        assert len(sensed) == len(frame.body.participants)  # no V2X echo: nothing was heard
        assert {labels[p.ptc_id][0] for p in sensed} == seen[k]
        checked += len(sensed)
    assert checked > 500
    assert run.cloud.vehicles == {}
    cov = run.picture.coverage
    assert cov.users > 100  # road users in coverage, summed over the samples (one a second)
    assert cov.bsm == 0
    # sampled before the step's RSM: a vehicle that entered coverage in this step is held from the next one
    assert cov.users > cov.fused >= 0.95 * cov.users

    # the queues the cloud counts from RSM alone against the true ones, at the last RSM's time
    truth = perception._truth
    assert truth is not None
    near = np.hypot(truth.x_m - run.rsus[0].xy[0], truth.y_m - run.rsus[0].xy[1]) <= 100.0
    true_q: dict[str, int] = {}
    for i in np.flatnonzero(near & (truth.speed_mps < QUEUE_SPEED_MPS)):
        hit = run.cloud.net.in_lane_at(float(truth.x_m[i]), float(truth.y_m[i]))
        if hit is not None:
            lk = run.cloud.net.links[hit[0]]
            key = f"{run.cloud.net.intersections[lk.intersection].spec.id}.{lk.leg}"
            true_q[key] = true_q.get(key, 0) + 1
    assert sum(true_q.values()) >= 3  # there is a queue to find
    assert run.cloud.survey(truth.t) == dict(sorted(true_q.items()))


def test_at_penetration_half_the_fusion_matches_the_equipped_and_the_unequipped_are_unmatched_not_ghosts(
    v2x_run: RunScenario, tmp_path: Path,
) -> None:
    """four_way with a radar and a camera, half the vehicles equipped: >= 95% of the equipped vehicles' detections
    matched to their own BSM; the unequipped's detections stay unmatched (road users without an OBU) rather than
    being taken for an equipped vehicle, and few equipped show twice (ghosts)."""
    path = tmp_path / "sensors.toml"
    path.write_text(resolve("four_way").read_text() + RADAR + '\n[[sensors]]\nrsu = "RSU-J1"\ntype = "camera"\n')
    r = v2x_run(str(path), "--set", "fleet.penetration=0.5", duration=90)
    f: dict[str, Any] = r["perception"]["fusion"]
    eq, uneq = f["equipped"], f["unequipped"]
    assert eq["detections"] > 1000
    assert uneq["detections"] > 1000
    assert eq["match_rate"] >= 0.95
    assert uneq["matched_to_a_bsm"] <= 0.05 * uneq["detections"]
    assert f["ghosts"] <= 0.05 * eq["detections"]
    assert f["matched"] == eq["matched_to_own_bsm"] + eq["wrong"] + uneq["matched_to_a_bsm"]
    pic = r["cloud_picture"]["in_sensor_coverage"]
    assert pic["bsm_only"] < 0.75
    assert pic["fused"] >= 0.95


def test_glosa_cuts_the_stops_of_all_vehicles_at_penetration_1_and_does_nothing_at_0(v2x_run: RunScenario) -> None:
    """four_way with GLOSA, 120 s, the same seed: at penetration 0 no OBU runs it (no advice, the stops as with it
    off); at 1 the stops per vehicle over all vehicles fall."""
    runs = {(p, g): v2x_run("four_way", "--set", f"fleet.penetration={p}", "--set", f"fleet.glosa={g}", duration=120)
            for p, g in (("0", "true"), ("0", "false"), ("1", "true"))}
    stops = {k: r.traffic["stops_per_vehicle"] for k, r in runs.items()}
    assert runs["0", "true"]["apps"].get("glosa", {}).get("warnings", 0) == 0
    assert stops["0", "true"] == stops["0", "false"]
    assert runs["1", "true"]["apps"]["glosa"]["warnings"] > 0
    assert stops["1", "true"] < 0.75 * stops["0", "true"]


def test_a_stalled_car_is_a_road_user_the_sensors_see_and_the_picture_holds(mosquitto: MosquittoBroker) -> None:
    """hazard at penetration 0, a lidar on the approaches, the car stalling at 10 s: the stalled car (an obstacle of
    the traffic core, not one of its vehicles) is in the sensors' truth as -1, unequipped (its own draw: no OBU, no
    BSM), each RSM carries it with the vehicles in range, and the cloud's picture holds it from RSM alone. Before,
    the truth had only the core's vehicles: no sensor saw a stalled car."""
    lidar = Sensor(rsu="RSU-J1", type="lidar", range_m=150.0, detection_p=1.0, latency_ms=0.0)
    sc = scenario.parse(resolve("hazard").read_text().replace("start_s = 60.0", "start_s = 10.0"), "hazard.toml")
    sc = dataclasses.replace(sc, sensors=(lidar,), fleet=dataclasses.replace(sc.fleet, penetration=0.0))
    run, heard, seen = _run_in_process(mosquitto, sc, 20.0)
    labels = run.rsus[0].perception.labels
    assert [lab for lab in labels.values() if lab[0] < 0] == [[-1, False]]
    carried = 0
    for _, payload in heard:
        frame = codec.decode(payload)
        assert isinstance(frame.body, m.Rsm)
        k = round(frame.header.sim_time_ms / 1000 / sc.step_s)
        ids = {labels[p.ptc_id][0] for p in frame.body.participants}
        assert ids == seen[k]
        assert (-1 in ids) == (frame.header.sim_time_ms > 10_000)  # placed by the step that starts at 10 s
        carried += -1 in ids
    assert carried >= 90  # 10 s of RSM at 10 Hz
    assert not [s for s in run.cloud.vehicles if s.startswith("stalled-")]
    assert run.picture.coverage.bsm == 0
    assert run.picture.coverage.fused > 0


def test_an_equipped_stalled_car_s_detections_are_matched_to_its_own_bsm(mosquitto: MosquittoBroker) -> None:
    """hazard at penetration 1 (the stalled car has an OBU, `stalled-1`), a lidar: the fusion matches its detections
    to its own BSM, and the report's score counts them so (before, the score named every vehicle's OBU veh-<id>)."""
    from v2x.run.perception import perception_report

    sc = scenario.parse(resolve("hazard").read_text().replace("start_s = 60.0", "start_s = 10.0"), "hazard.toml")
    sc = dataclasses.replace(sc, sensors=(Sensor(rsu="RSU-J1", type="lidar", range_m=150.0),))
    run, _, _ = _run_in_process(mosquitto, sc, 20.0)
    perception = run.rsus[0].perception
    (ptc,) = [p for p, lab in perception.labels.items() if lab[0] < 0]
    assert perception.labels[ptc] == [-1, True]
    assert run.cloud.fusion is not None
    assert set(run.cloud.fusion.counts.assoc[f"RSU-J1/{ptc}"]) == {"stalled-1"}
    score = perception_report([("RSU-J1", perception.summary())], run.cloud.fusion.summary())["fusion"]["equipped"]
    assert score["wrong"] == 0
    assert score["match_rate"] >= 0.95
