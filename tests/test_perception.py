"""Roadside sensors (roadside.perception), the cloud's fusion of BSM and RSM (cloud.fusion), and the report's score."""

from __future__ import annotations

import dataclasses
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.errors import ScenarioError
from v2x.core.sensors import Sensor
from v2x.net.broker import MosquittoBroker
from v2x.testing import RunScenario, run_watching

FOUR_WAY = scenario.resolve("four_way")


def _with_sensors(text: str) -> str:
    return FOUR_WAY.read_text() + "\n" + text


@pytest.mark.parametrize(
    ("table", "field", "expected"),
    [
        ('type = "sonar"', "sensors[0].type", 'expected one of "camera", "radar", "lidar"'),
        ('type = "radar"\nrange_m = -50.0', "sensors[0].range_m", "expected a number > 0"),
        ('type = "camera"\ndetection_p = -0.5', "sensors[0].detection_p", "expected a number >= 0"),
        ('type = "lidar"\ndetection_p = 1.5', "sensors[0].detection_p", "expected a number <= 1"),
        ('type = "lidar"\nposition_std_m = -1.0', "sensors[0].position_std_m", "expected a number >= 0"),
    ],
)
def test_a_bad_sensor_is_an_error_at_its_file_and_line(table: str, field: str, expected: str) -> None:
    text = _with_sensors(f'[[sensors]]\nrsu = "RSU-J1"\n{table}\n')
    line = text.splitlines().index(table.splitlines()[-1]) + 1
    with pytest.raises(ScenarioError) as err:
        scenario.parse(text, "s.toml")
    assert f"s.toml:{line}: {field}: " in str(err.value)
    assert expected in str(err.value)


def test_a_sensor_on_an_rsu_or_a_leg_that_is_not_there_is_an_error() -> None:
    text = _with_sensors('[[sensors]]\nrsu = "RSU-J9"\ntype = "radar"\n')
    with pytest.raises(ScenarioError, match=r'sensors\[0\]\.rsu: "RSU-J9" is not an RSU of this scenario'):
        scenario.parse(text, "s.toml")
    t_junction = scenario.resolve("t_junction").read_text()
    legs = {a.leg for a in scenario.load(scenario.resolve("t_junction")).intersections[0].approaches}
    missing = next(leg for leg in ("north", "east", "south", "west") if leg not in legs)
    rsu = scenario.load(scenario.resolve("t_junction")).rsu_of(0).id
    with pytest.raises(ScenarioError, match=rf"sensors\[0\]\.approaches\[0\]: .* has no {missing} approach"):
        scenario.parse(t_junction + f'\n[[sensors]]\nrsu = "{rsu}"\ntype = "lidar"\napproaches = ["{missing}"]\n', "t.toml")


def test_sensors_round_trip_take_their_types_defaults_and_are_tiled_with_their_rsu() -> None:
    sc = scenario.parse(_with_sensors('[[sensors]]\nrsu = "RSU-J1"\ntype = "camera"\nrange_m = 60.0\n'))
    assert scenario.parse(scenario.dumps(sc)) == sc
    model = sc.sensors[0].model()
    assert model.range_m == 60.0
    assert model.detection_p == dataclasses.replace(sc.sensors[0], range_m=None).model().detection_p
    tiled = scenario.tile(sc, 4)
    assert [s.rsu for s in tiled.sensors] == ["RSU-J1", "RSU-J1-1", "RSU-J1-2", "RSU-J1-3"]


def _offline(sensor: Sensor, seconds: float) -> Any:
    from v2x.run.offline import OfflineRun

    sc = dataclasses.replace(scenario.load(FOUR_WAY), sensors=(sensor,), events=())
    run = OfflineRun(sc)
    run.run(seconds)
    return run


def test_a_queue_of_cars_without_an_obu_counts_in_the_clouds_picture_from_rsm_alone() -> None:
    """No BSM at all: the cloud's queues come from the RSM's sensor detections (real bytes through the codec). Before
    the fusion the cloud ignored RSM, and saw no queue."""
    from cloud.service import QUEUE_SPEED_MPS, CloudService
    from roadside.perception import Perception
    from v2x.core.network import LinkKind
    from v2x.core.topics import Topics
    from v2x.core.truth import RoadUsers
    from v2x.net.station import Station, StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport

    lidar = Sensor(rsu="RSU-J1", type="lidar", detection_p=1.0, position_std_m=0.05, latency_ms=0.0)
    run = _offline(lidar, 200.0)
    t, net = run.traffic, run.net
    clock = StepClock(1_767_225_600.0)
    clock.t = t.t
    perception = Perception.of(net, 0, "RSU-J1", net.rsu_xy["RSU-J1"])
    assert perception is not None
    perception.sense(RoadUsers.of(t, equipped=np.zeros(t.n, dtype=bool)))
    parts = perception.participants(t.t)
    assert parts
    assert {p.source for p in parts} == {m.SourceType.LIDAR}
    assert all(p.vehicle_id == "" for p in parts)
    rsm = m.Rsm(net.frame.to_geo(*net.rsu_xy["RSU-J1"]), tuple(parts))
    cloud = CloudService(net, MemoryTransport(MemoryBroker(), "cloud"), Topics(), clock, events=None)
    cloud.handle("t", codec.decode(Station("RSU-J1", m.SenderKind.RSU, clock).encode(rsm)))
    truth: dict[str, int] = {}
    link = t.current_link()
    x, y, _ = t.bodies()
    rx, ry = net.rsu_xy["RSU-J1"]
    for i in np.flatnonzero(t.v < QUEUE_SPEED_MPS):
        lk = net.links[int(link[i])]
        if lk.kind is LinkKind.IN and math.hypot(x[i] - rx, y[i] - ry) <= lidar.model().range_m:
            key = f"{net.intersections[lk.intersection].spec.id}.{lk.leg}"
            truth[key] = truth.get(key, 0) + 1
    assert sum(truth.values()) >= 5  # there is a queue to find
    assert cloud.survey(clock.t) == dict(sorted(truth.items()))


def test_detections_follow_the_detection_probability() -> None:
    from roadside.perception import Perception
    from v2x.core.truth import RoadUsers
    from v2x.run.offline import OfflineRun

    p = 0.7
    camera = Sensor(rsu="RSU-J1", type="camera", detection_p=p)
    sc = dataclasses.replace(scenario.load(FOUR_WAY), sensors=(camera,), events=())
    run = OfflineRun(sc)
    perception = Perception.of(run.net, 0, "RSU-J1", run.net.rsu_xy["RSU-J1"])
    assert perception is not None
    for _ in range(1500):
        run.step()
        perception.sense(RoadUsers.of(run.traffic))
    st = perception.stats
    n = st.in_coverage
    assert n > 5000
    assert st.detected + st.missed == n
    assert abs(st.detected / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 0.02  # frames are not independent draws: slack


def _run_in_process(mosquitto: MosquittoBroker, sc: scenario.Scenario, seconds: float) -> tuple[Any, list[tuple[str, bytes]], dict[int, set[int]]]:
    """A fast run in this process on the fixture's Mosquitto; every RSM on the wire, and the truth the sensor saw at
    each step (step -> vehicles within the first sensor's range)."""
    from v2x.net.connection import Connection
    from v2x.run.fast import FastRun

    conn = Connection(mosquitto.url, root=f"t/perception-{uuid.uuid4().hex[:8]}/v2x/v1")
    run = FastRun(sc, conn)
    rsu = run.rsus[0]
    assert rsu.perception is not None
    sense = rsu.perception.sense
    reach = sc.sensors[0].model().range_m
    seen: dict[int, set[int]] = {}

    def sense_and_note(truth: Any) -> None:
        near = np.hypot(truth.x_m - rsu.xy[0], truth.y_m - rsu.xy[1]) <= reach
        seen[round(truth.t / sc.step_s)] = set(truth.ids[near].tolist())
        sense(truth)

    rsu.perception.sense = sense_and_note  # type: ignore[method-assign]
    heard = run_watching(run, conn, seconds, [("rsm/#", 0)])
    return run, heard, seen


def test_rsm_carries_every_vehicle_in_coverage_with_its_source_type(mosquitto: MosquittoBroker) -> None:
    """four_way, fast, a lidar that always detects and reports at once: each RSM on the wire carries, as lidar
    detections, exactly the vehicles within its range at that step; the RSU's V2X echo of BSMs keeps its source."""
    lidar = Sensor(rsu="RSU-J1", type="lidar", range_m=100.0, detection_p=1.0, latency_ms=0.0)
    sc = dataclasses.replace(scenario.load(FOUR_WAY), sensors=(lidar,))
    run, heard, seen = _run_in_process(mosquitto, sc, 40.0)
    labels = run.rsus[0].perception.labels
    checked = 0
    for _, payload in heard:
        frame = codec.decode(payload)
        assert isinstance(frame.body, m.Rsm)
        k = round(frame.header.sim_time_ms / 1000 / sc.step_s)
        sensed = [p for p in frame.body.participants if p.source is not m.SourceType.V2X]
        assert all(p.source is m.SourceType.LIDAR and p.vehicle_id == "" for p in sensed)
        assert {labels[p.ptc_id][0] for p in sensed} == seen[k]
        assert all(p.vehicle_id for p in frame.body.participants if p.source is m.SourceType.V2X)
        checked += len(sensed)
    assert len(heard) >= 390
    assert checked > 1000


SENSORS = """
[[sensors]]
rsu = "RSU-J1"
type = "radar"

[[sensors]]
rsu = "RSU-J1"
type = "camera"
"""


@pytest.mark.parametrize("gnss", ["off", "standard"])
def test_fusion_matches_equipped_vehicles_to_their_detections(v2x_run: RunScenario, tmp_path: Path, gnss: str) -> None:
    """four_way with a radar and a camera, every vehicle equipped: the cloud matches at least 95% of the detections of
    equipped vehicles to their own BSMs, with exact positions and with standard-receiver GNSS error."""
    path = tmp_path / "sensors.toml"
    path.write_text(_with_sensors(SENSORS))
    r = v2x_run(str(path), "--set", f"fleet.gnss.receiver={gnss}", duration=90)
    p = r["perception"]
    fusion = p["fusion"]
    assert fusion["detections"] > 5000
    assert fusion["equipped"]["detections"] == fusion["detections"]
    assert fusion["equipped"]["match_rate"] >= 0.95
    assert fusion["ghosts"] == fusion["equipped"]["unmatched"] <= 0.05 * fusion["detections"]
    assert fusion["misses"] == 0  # every vehicle is equipped: none is missing from the picture
    radar = p["sensors"]["RSU-J1"]
    assert 0.9 <= radar["detection_rate"] <= 1.0
    assert 0 < p["position_error_m"]["p50"] < p["position_error_m"]["p95"] < 5.0
    assert r.messages("rsm").sent > 0


def test_the_truth_feed_round_trips_and_bad_bytes_are_refused_with_why() -> None:
    from v2x.core import truth
    from v2x.run.offline import OfflineRun

    run = OfflineRun(dataclasses.replace(scenario.load(FOUR_WAY), events=()))
    run.run(60.0)
    users = truth.RoadUsers.of(run.traffic)
    back = truth.decode(truth.encode(users))
    assert back.t == users.t
    assert back.ids.tolist() == users.ids.tolist()
    assert np.allclose(back.x_m, users.x_m, atol=1e-3)
    assert back.equipped.all()
    good = truth.encode(users)
    for bad, why in ((good[:-1], "bytes for"), (b"XXXXX" + good[5:], "expected b'V2XT1'"), (good[:3], "shorter than")):
        with pytest.raises(ValueError, match=why):
            truth.decode(bad)
    nan = truth.RoadUsers(**{**vars(users), "speed_mps": np.full(len(users.ids), np.nan)})
    with pytest.raises(ValueError, match="speed_mps is not finite"):
        truth.decode(truth.encode(nan))


def test_real_time_the_rsu_process_gets_the_truth_from_the_fleet_process_through_the_broker(v2x_run: RunScenario, tmp_path: Path) -> None:
    """Real time, each tier its own process: the fleet publishes the truth in the sensors' coverage, the RSU turns it
    into RSM detections, the cloud fuses them."""
    path = tmp_path / "sensors.toml"
    path.write_text(_with_sensors(SENSORS))
    # seed 17: about as many detections by 18 s (926 in one run) as seed 1 gave by 25 s (966)
    r = v2x_run(str(path), "--seed", "17", duration=18, fast=False)
    fusion = r["perception"]["fusion"]
    print(f"detections {fusion['detections']}, equipped match rate {fusion['equipped']['match_rate']}")
    assert fusion["detections"] > 500
    assert fusion["equipped"]["match_rate"] >= 0.95
    assert r["bad_input"]["rsus"] == {}


@pytest.mark.integration
def test_real_time_on_a_broker_with_logins_and_acls_the_truth_still_reaches_the_rsu(tmp_path: Path) -> None:
    """`v2x run --secure`: the ACL lets the fleet's V2V radio write the truth and the RSU read its own. Without those
    lines the broker refuses both, and the sensors see nothing (truth_updates 0)."""
    import json
    import subprocess
    import sys

    path = tmp_path / "sensors.toml"
    path.write_text(_with_sensors(SENSORS))
    report = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "v2x", "run", str(path), "--secure", "--headless", "--duration", "15",
                          "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    p = json.loads(report.read_text())["perception"]
    assert p["sensors"]["RSU-J1"]["truth_updates"] > 50
    assert p["fusion"]["detections"] > 100


def test_fusion_learns_a_vehicles_gnss_offset_and_keeps_a_queue_apart() -> None:
    """Two cars whose BSMs are both 4 m ahead of where they are (a GNSS bias), 7 m apart in a queue: the nearest
    detection to the rear car's BSM is the front car's. A fusion that met them apart first has learnt each one's
    offset and matches both right; one that meets them only in the queue gives the rear car's BSM the front car's
    detection."""
    from cloud.fusion import Fusion
    from v2x.core.network import Network

    sc = dataclasses.replace(scenario.load(FOUR_WAY), sensors=(Sensor(rsu="RSU-J1", type="lidar"),))
    net = Network(sc)
    accuracy = m.PositionalAccuracy(3.0, 3.0)
    bias = 4.0  # [m] north, both cars

    def step(fusion: Fusion, t: float, rear_y: float, front_y: float) -> dict[str, str]:
        for sid, y in (("veh-1", rear_y), ("veh-2", front_y)):
            fusion.bsm(sid, t, 0.0, y + bias, 5.0, 0.0, accuracy)
        parts = tuple(
            m.Participant(type=m.ParticipantType.MOTOR, ptc_id=ptc, source=m.SourceType.LIDAR, vehicle_id="",
                          position=net.frame.to_geo(0.0, y), speed_mps=5.0, heading_deg=0.0, width_m=1.8, length_m=4.5)
            for ptc, y in ((40001, rear_y), (40002, front_y))
        )
        before = {k: dict(v) for k, v in fusion.counts.assoc.items()}
        fusion.rsm("RSU-J1", t, m.Rsm(net.frame.to_geo(0.0, 0.0), parts))
        return {k: next(w for w, n in v.items() if n > before.get(k, {}).get(w, 0)) for k, v in fusion.counts.assoc.items()}

    learnt = Fusion(net)
    for k in range(20):  # apart: 40 m between them
        assert step(learnt, k * 0.1, -100.0 + k * 0.5, -60.0 + k * 0.5) == {"RSU-J1/40001": "veh-1", "RSU-J1/40002": "veh-2"}
    assert step(learnt, 2.0, -50.0, -43.0) == {"RSU-J1/40001": "veh-1", "RSU-J1/40002": "veh-2"}
    naive = Fusion(net)
    assert step(naive, 2.0, -50.0, -43.0)["RSU-J1/40002"] == "veh-1"


@pytest.mark.parametrize("kind", ["radar", "camera"])
def test_fusion_places_a_standing_road_user_by_the_mean_of_its_detections_and_a_moving_one_by_the_latest(kind: str) -> None:
    """A radar's detections are a metre out on each axis (a camera's 0.8 m): a car standing in one lane is placed at the
    mean of its detections, within a few tenths of a metre after two seconds, not wherever the latest one put it (a
    3.5 m lane away now and then: the cloud raised a second hazard there). The detections' speeds are noisy too (a
    camera's 0.5 m/s: a standing car reads over 0.5 m/s in one detection of six), and do not break the mean. A moving
    one, or one that jumps, is where it was seen last."""
    from cloud.fusion import Fusion
    from v2x.core.network import Network

    sensor = Sensor(rsu="RSU-J1", type=kind)  # type: ignore[arg-type]
    sc = dataclasses.replace(scenario.load(FOUR_WAY), sensors=(sensor,))
    net = Network(sc)
    model = sensor.model()
    rng = np.random.default_rng(5)

    def seen(fusion: Fusion, t: float, x: float, y: float, speed: float) -> tuple[float, float]:
        part = m.Participant(type=m.ParticipantType.MOTOR, ptc_id=40001, source=m.SourceType.MICROWAVE_RADAR, vehicle_id="",
                             position=net.frame.to_geo(x, y), speed_mps=speed, heading_deg=180.0, width_m=1.8, length_m=4.5)
        fusion.rsm("RSU-J1", t, m.Rsm(net.frame.to_geo(0.0, 0.0), (part,)))
        ((_, fx, fy, _, _),) = fusion.unmatched(t)
        return fx, fy

    standing = Fusion(net)
    worst = 0.0
    for k in range(100):  # 10 s at 10 Hz, standing at (-1.75, 120), each detection out by the sensor's noise
        dx, dy = rng.normal(0.0, model.position_std_m, 2)
        x, y = seen(standing, k * 0.1, -1.75 + dx, 120.0 + dy, max(float(rng.normal(0.0, model.speed_std_mps)), 0.0))
        if k >= 20:
            worst = max(worst, math.hypot(x + 1.75, y - 120.0))
    print(f"{kind}: at worst {worst:.2f} m from where it stands, after 2 s")
    assert worst < 0.6, worst  # one radar detection: beyond 1.75 m across the lane 4% of the time
    assert seen(standing, 10.0, 10.0, 120.0, 0.05) == pytest.approx((10.0, 120.0))  # far from where it stood: as seen
    moving = Fusion(net)
    for k in range(20):
        x, y = seen(moving, k * 0.1, -1.75, 120.0 - k * 1.0 + (0.8 if k % 2 else -0.8), 10.0)
        assert (x, y) == pytest.approx((-1.75, 120.0 - k * 1.0 + (0.8 if k % 2 else -0.8)))


def test_a_car_without_an_obu_standing_in_a_lane_is_detected_as_a_hazard_from_rsm_alone() -> None:
    """The cloud's stalled-vehicle rule runs on the fused picture: a road user only the RSU's lidar sees, standing in
    a travel lane 100 m before the stop line, is raised as a hazard (RSI) as a stalled vehicle with an OBU would be.
    Before the fusion the cloud ignored RSM, and raised nothing."""
    from cloud.detect import STOPPED_S
    from cloud.service import CloudService
    from v2x.core.network import Network
    from v2x.core.topics import Topics
    from v2x.net.station import Station, StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport

    sc = dataclasses.replace(scenario.load(FOUR_WAY), sensors=(Sensor(rsu="RSU-J1", type="lidar"),), events=())
    net = Network(sc)
    _, _, x, y = net.lane_point("J1", "north", 0, 100.0)
    clock = StepClock(1_767_225_600.0)
    cloud = CloudService(net, MemoryTransport(MemoryBroker(), "cloud"), Topics(), clock, events=None)
    rsu = Station("RSU-J1", m.SenderKind.RSU, clock)
    car = m.Participant(type=m.ParticipantType.MOTOR, ptc_id=40001, source=m.SourceType.LIDAR, vehicle_id="",
                        position=net.frame.to_geo(x, y), speed_mps=0.0, heading_deg=180.0, width_m=1.8, length_m=4.5)
    for k in range(round(STOPPED_S) + 3):
        clock.t = float(k)
        cloud.handle("t", codec.decode(rsu.encode(m.Rsm(net.frame.to_geo(0.0, 0.0), (car,)))))
        cloud.tick(clock.t)
    assert [(d["kind"], d["approach"], d["vehicles"]) for d in cloud.detected_log] == [("stalled_vehicle", "north", ["RSU-J1/40001"])]
