"""`fleet.penetration` (v2x/vehicle/equipment.py): who carries an OBU, drawn from the seed; the unequipped have no
OBU and drive on the signal heads. Draws and bad input without a broker; runs on the session's Mosquitto, whose
own log says which clients connected."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from v2x.core.errors import ScenarioError
from v2x.core.scenario import Fleet, bundled_dir, parse
from v2x.core.traffic import KIND_INDEX, FinishedVehicle, Stats
from v2x.net.broker import MosquittoBroker
from v2x.run.report import Report
from v2x.testing import RunScenario
from v2x.vehicle.equipment import Equipment, Penetration

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")
GRID = str(bundled_dir() / "grid.toml")
IDS = range(4000)


def _equipped(fleet: Fleet, seed: int = 1, kind: str = "car") -> set[int]:
    eq = Equipment(fleet, seed, lambda vid: True)
    return {vid for vid in IDS if eq.has_obu(vid, KIND_INDEX[kind])}


def test_who_is_equipped_comes_from_the_seed_and_the_share() -> None:
    for share in (0.3, 0.6):
        n = len(_equipped(Fleet(penetration=share)))
        assert abs(n / len(IDS) - share) < 4 * math.sqrt(share * (1 - share) / len(IDS))  # four binomial sigmas
    low, high = _equipped(Fleet(penetration=0.3)), _equipped(Fleet(penetration=0.6))
    assert low < high  # a higher share keeps everyone a lower one equipped: one draw per vehicle
    assert _equipped(Fleet(penetration=0.3)) == low
    assert _equipped(Fleet(penetration=0.3), seed=2) != low
    assert _equipped(Fleet(penetration=0.0)) == set()
    assert _equipped(Fleet(penetration=1.0)) == set(IDS)
    assert not Equipment(Fleet(penetration=0.0), 1, lambda vid: True).stalled_has_obu(1)  # a stalled car is a car
    assert Equipment(Fleet(penetration=0.0, penetration_by_class={"car": 1.0}), 1, lambda vid: True).stalled_has_obu(1)
    assert Equipment(Fleet(), 1, lambda vid: True).everyone  # the default: nothing drawn, nothing started


def test_a_class_can_be_forced_equipped_and_only_this_fleet_s_vehicles_are_counted() -> None:
    fleet = Fleet(penetration=0.0, penetration_by_class={"emergency": 1.0})
    assert _equipped(fleet, kind="emergency") == set(IDS)
    assert _equipped(fleet, kind="car") == set()
    assert not Equipment(fleet, 1, lambda vid: True).everyone
    eq = Equipment(fleet, 1, lambda vid: vid % 2 == 0)  # shard 0 of 2, by vehicle
    for vid in range(10):
        eq.has_obu(vid, KIND_INDEX["bus"])
    assert eq.unequipped == {vid: "bus" for vid in range(0, 10, 2)}


def test_each_group_s_figures_are_over_this_fleet_s_own_vehicles() -> None:
    eq = Equipment(Fleet(penetration=0.5), 1, lambda vid: vid % 2 == 0)  # shard 0 of 2: it simulates every vehicle
    stats = Stats()
    for vid in range(40):
        eq.has_obu(vid, KIND_INDEX["car"])
        stats.finished_log.append(FinishedVehicle(vid, 0, 0.0, float(vid), 0.0, vid % 3))
        stats.red_light_log.append((0.0, vid, 0, 10.0, False))
    stats.finished = len(stats.finished_log)
    mine = [f for f in stats.finished_log if f.vid % 2 == 0]
    pen = Penetration.of(eq, len(mine) - len(eq.unequipped), stats, red_light_counted=True)
    for group, own in ((pen.unequipped, [f for f in mine if f.vid in eq.unequipped]),
                       (pen.equipped, [f for f in mine if f.vid not in eq.unequipped])):
        assert group.vehicles == group.finished == group.red_light_violations == len(own) > 0
        assert group.mean_delay_s == pytest.approx(sum(f.delay_s for f in own) / len(own), abs=0.01)
        assert group.stops_per_vehicle == pytest.approx(sum(f.stops for f in own) / len(own), abs=0.001)
    merged = Penetration.merge([pen, pen])
    assert merged.unequipped.finished == 2 * len(eq.unequipped)
    assert merged.unequipped.mean_delay_s == pen.unequipped.mean_delay_s


@pytest.mark.parametrize(("setting", "field", "expected"), [
    ("penetration = 1.5", "fleet.penetration", "expected a number <= 1"),
    ("penetration = -0.1", "fleet.penetration", "expected a number >= 0"),
    ("penetration_by_class = { car = 0.2, emergency = 2.0 }", "fleet.penetration_by_class.emergency", "expected a share 0..1"),
    ("penetration_by_class = { tram = 1.0 }", "fleet.penetration_by_class.tram", "is not allowed"),
])
def test_a_share_out_of_range_is_an_error_at_its_file_and_line(setting: str, field: str, expected: str) -> None:
    text = (bundled_dir() / "four_way.toml").read_text().replace("[fleet]\n", f"[fleet]\n{setting}\n", 1)
    line = text.splitlines().index(setting) + 1
    with pytest.raises(ScenarioError) as e:
        parse(text, "mixed.toml")
    assert f"mixed.toml:{line}: {field}: " in str(e.value)
    assert expected in str(e.value)


def _clients(broker: MosquittoBroker, report: Report) -> list[str]:
    """The client ids of a run's connections, from the broker's own log."""
    prefix = f"{report['run_id']}-"
    return [w for line in broker.log_path.read_text().splitlines() if " as " in line
            for w in line.split() if w.startswith(prefix)]


def test_penetration_0_no_obu_connects_no_bsm_is_sent_and_the_drivers_obey_the_heads(
    v2x_run: RunScenario, mosquitto: MosquittoBroker,
) -> None:
    # seed 2: a car there sees a 3 s yellow 1 s late inside the dilemma zone, and brakes out of it (it entered
    # 0.12 s into the all-red when drivers did not count the yellow's time left: docs/mixed-traffic.md)
    r = v2x_run("four_way", "--set", "fleet.penetration=0", "--seed", "2", duration=600)
    clients = _clients(mosquitto, r)
    assert not [c for c in clients if "-veh-" in c or "-stalled-" in c]
    assert any(c.endswith("-fleet-heads-0-of-1") for c in clients)  # the heads' view: one connection, not an OBU
    assert "bsm" not in r["messages"]  # none sent, none received by the cloud or the RSU
    assert r["cloud"]["vehicles_seen"] == 0
    assert r["vehicles"]["finished"] > 0
    pen = r["penetration"]
    assert (pen["equipped"]["vehicles"], pen["unequipped"]["vehicles"]) == (0, r["vehicles"]["spawned"])
    assert pen["unequipped"]["mean_delay_s"] == r.traffic["mean_delay_s"]  # the run's KPIs are over every vehicle
    assert r.traffic["collisions"] == 0
    assert r.traffic["red_light_violations"] == 0


def test_at_penetration_0_a_stalled_car_has_no_obu_either_and_its_reported_hazard_is_still_announced(
    v2x_run: RunScenario, mosquitto: MosquittoBroker,
) -> None:
    r = v2x_run("hazard", "--set", "fleet.penetration=0", duration=90)  # the car stalls at 60 s
    assert not [c for c in _clients(mosquitto, r) if "-stalled-" in c or "-veh-" in c]
    assert "bsm" not in r["messages"]
    assert r["messages"]["rsi"]["sent"] > 0  # the cloud learns of it from a report, not from the car
    assert r.traffic["collisions"] == 0


def test_penetration_1_is_the_run_as_before(v2x_run: RunScenario, mosquitto: MosquittoBroker) -> None:
    before = v2x_run("four_way", duration=120)
    forced = v2x_run("four_way", "--set", "fleet.penetration=1", "--set", "fleet.penetration_by_class.emergency=1", duration=120)
    for r in (before, forced):
        clients = _clients(mosquitto, r)
        assert not [c for c in clients if "-fleet-heads-" in c]
        assert len([c for c in clients if "-veh-" in c]) == r["vehicles"]["spawned"]
    for key in ("vehicles", "traffic", "messages", "latency_ms", "spat_coverage", "apps"):
        assert before[key] == forced[key], key
    assert before["lockstep"]["deliveries"] == forced["lockstep"]["deliveries"]


def test_mixed_traffic_only_the_equipped_are_heard_and_a_forced_class_always_is(
    v2x_run: RunScenario, mosquitto: MosquittoBroker,
) -> None:
    r = v2x_run("emergency", "--set", "fleet.penetration=0.5", "--set", "fleet.penetration_by_class.emergency=1", duration=150)
    pen = r["penetration"]
    assert pen["equipped"]["vehicles"] + pen["unequipped"]["vehicles"] == r["vehicles"]["spawned"]
    assert pen["equipped"]["vehicles"] > 0
    assert pen["unequipped"]["vehicles"] > 0
    assert "emergency" not in pen["unequipped_by_class"]
    assert r["cloud"]["vehicles_seen"] == pen["equipped"]["vehicles"]  # BSMs came from the equipped alone
    assert len([c for c in _clients(mosquitto, r) if "-veh-" in c]) == pen["equipped"]["vehicles"]
    assert r["emergency"]["rsu_log"]  # the ambulance's OBU asked for priority
    assert r.traffic["collisions"] == 0


def test_penetration_0_in_real_time(v2x_run: RunScenario, mosquitto: MosquittoBroker) -> None:
    # seed 17: by 15 s, 3 cars have crossed and left and 4 stand at the east-west red (as seed 1 had by 30 s); the
    # north-south green ends at 30 s, so no driver meets a yellow either way
    r = v2x_run(SHORT, "--set", "fleet.penetration=0", "--seed", "17", duration=15, fast=False)
    print(f"spawned {r['vehicles']['spawned']}, finished {r['vehicles']['finished']}")
    assert not [c for c in _clients(mosquitto, r) if "-veh-" in c]
    assert "bsm" not in r["messages"]
    assert r["vehicles"]["finished"] > 0
    assert r["penetration"]["unequipped"]["vehicles"] == r["vehicles"]["spawned"]
    assert r.traffic["collisions"] == 0
    assert r.traffic["red_light_violations"] == 0  # judged from the crossings against the RSU's record of its heads


def test_on_sumo_the_unequipped_have_no_obu(v2x_run: RunScenario, mosquitto: MosquittoBroker) -> None:
    """SUMO's drivers see SUMO's lights, which the RSUs' controllers drive: only the OBUs are left out."""
    r = v2x_run(GRID, "--set", "fleet.penetration=0.5", duration=60)
    pen = r["penetration"]
    assert pen["equipped"]["vehicles"] + pen["unequipped"]["vehicles"] == r["vehicles"]["spawned"]
    assert pen["unequipped"]["vehicles"] > 0
    assert r["cloud"]["vehicles_seen"] == pen["equipped"]["vehicles"]
    assert len([c for c in _clients(mosquitto, r) if "-veh-" in c]) == pen["equipped"]["vehicles"]
    assert not [c for c in _clients(mosquitto, r) if "-fleet-heads-" in c]
    assert r.traffic["collisions"] == 0


@pytest.mark.integration
def test_the_heads_listener_has_a_login_on_a_secured_broker(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", SHORT, "--secure", "--fast", "--headless", "--duration", "20",
         "--set", "fleet.penetration=0.5", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["broker"]["kind"].startswith("mosquitto (secured")
    assert r["penetration"]["unequipped"]["vehicles"] > 0


def test_a_sweep_over_penetration_has_its_column_and_each_group_s(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "sweep", SHORT, "--set", "fleet.penetration=0,1", "--duration", "15",
         "--out", str(tmp_path), "--broker", mosquitto.url],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["fleet.penetration"]: r for r in csv.DictReader((tmp_path / "sweep.csv").open())}
    assert rows.keys() == {"0", "1"}
    assert float(rows["0"]["equipped_vehicles"]) == 0 < float(rows["0"]["unequipped_vehicles"])
    assert float(rows["1"]["unequipped_vehicles"]) == 0 < float(rows["1"]["equipped_vehicles"])
    assert rows["1"]["unequipped_mean_delay_s"] == ""  # no such vehicle: blank, not 0
