"""SUMO as the mobility backend (docs/sumo.md): the bundled grid, its BSMs, a fast run through Mosquitto."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest

from v2x import cli
from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.errors import ScenarioError
from v2x.core.signal.controller import SignalController
from v2x.run.report import Report
from v2x.testing import RunScenario
from v2x.vehicle.bsm import bsms_of

libsumo = pytest.importorskip("libsumo", reason="the sumo extra: pip install -e '.[sumo]'")
from v2x.sumo import importer  # noqa: E402  (needs libsumo)
from v2x.sumo.mobility import SumoTraffic  # noqa: E402
from v2x.sumo.netfile import TlsPhase, TrafficLight, read_traffic_lights  # noqa: E402
from v2x.sumo.signals import program_plan, sumo_state  # noqa: E402

GRID = scenario.bundled_dir() / "grid.toml"


def test_bsm_positions_are_sumos_after_the_wire_and_back() -> None:
    """Every vehicle's BSM, encoded and decoded, converted back with the network's projection and moved forward
    half a length along its heading, is within 0.5 m of SUMO's front bumper; its speed, brake and turn signals are
    SUMO's; leaving vehicles leave the report."""
    sc = scenario.load(GRID)
    traffic = SumoTraffic(sc)
    assert traffic.location.georeferenced
    try:
        checked, blinking, seen, worst = 0, 0, set(), 0.0
        for _ in range(600):  # 60 s: the first vehicles leave at about 50 s
            traffic.step(sc.step_s)
            for vid, bsm in bsms_of(traffic.states()):
                header = m.Header(f"veh-{vid}", m.SenderKind.VEHICLE, 1, 0, 0)
                wire = codec.decode(codec.encode(m.Frame(header, bsm))).body
                assert isinstance(wire, m.Bsm)
                x, y = libsumo.simulation.convertGeo(wire.position.lon_deg, wire.position.lat_deg, True)
                h = math.radians(wire.heading_deg)
                fx, fy = x + wire.length_m / 2 * math.sin(h), y + wire.length_m / 2 * math.cos(h)
                sx, sy = libsumo.vehicle.getPosition(traffic.sumo_id(vid))
                worst = max(worst, math.hypot(fx - sx, fy - sy))
                assert abs(wire.speed_mps - libsumo.vehicle.getSpeed(traffic.sumo_id(vid))) < 0.02
                signals = libsumo.vehicle.getSignals(traffic.sumo_id(vid))
                assert (m.ExteriorLight.LEFT_TURN_SIGNAL in wire.lights) == bool(signals & 2)
                assert (m.ExteriorLight.RIGHT_TURN_SIGNAL in wire.lights) == bool(signals & 1)
                assert wire.brake_applied == bool(signals & 8)
                blinking += bool(wire.lights & {m.ExteriorLight.LEFT_TURN_SIGNAL, m.ExteriorLight.RIGHT_TURN_SIGNAL})
                checked += 1
                seen.add(vid)
            assert traffic.n == len(set(traffic.ids.tolist())) == libsumo.vehicle.getIDCount()
        assert worst < 0.5, worst
        assert blinking > 100  # turning vehicles signal, and say so
        assert traffic.stats.spawned == len(seen) >= 15
        assert checked > 1000
        assert traffic.stats.finished > 0
        assert traffic.n == traffic.stats.spawned - traffic.stats.finished
    finally:
        traffic.close()


def test_every_vehicle_sumo_inserts_is_heard_by_the_cloud(v2x_run: RunScenario) -> None:
    """`v2x run grid --fast` on Mosquitto: each vehicle SUMO inserted was an OBU whose BSMs the cloud heard, none lost."""
    report: Report = v2x_run(str(GRID), duration=60.0)
    spawned = report["vehicles"]["spawned"]
    assert spawned >= 30
    assert report["cloud"]["vehicles_seen"] == spawned
    bsm = report.messages("bsm")
    assert bsm.sent == bsm.received > spawned * 50
    assert bsm.lost == 0
    traffic = report["traffic"]
    assert traffic["collisions"] == 0
    assert traffic["red_light_violations"] is None  # not counted on SUMO yet: said, not reported as 0
    assert 0 < traffic["mean_delay_s"] < 60  # SUMO's time loss of the vehicles that left, through 6 lights at most
    assert 0 < traffic["stops_per_vehicle"] < 6


# -- scenarios and imports ------------------------------------------------------------------------------------------

DATA = Path(__file__).parent / "data"
GRID_NET, GRID_ROUTES = GRID.parent / "grid" / "grid.net.xml", GRID.parent / "grid" / "grid.rou.xml"


def _problems(text: str, base: Path) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        scenario.parse(text, "s.toml", base)
    return info.value.problems


def test_sumo_scenario_fields_are_validated_with_file_line_and_field(tmp_path: Path) -> None:
    head = 'name = "s"\ndescription = "d"\n[origin]\nlat_deg = 31.5\nlon_deg = 120.3\n'
    assert _problems('mobility = "sumo"\n' + head, tmp_path) == [
        's.toml:1: mobility: is "sumo" but there is no [sumo] table (expected [sumo] with net = "FILE.net.xml")'
    ]
    assert _problems(head + '[sumo]\nnet = "nope.net.xml"\n', tmp_path) == [
        's.toml:6: sumo: is given but mobility is "native" (expected mobility = "sumo" with a [sumo] table)',
        "s.toml:1: intersections: has 0 entries (expected at least 1)",
    ][::-1]
    missing = _problems('mobility = "sumo"\n' + head + '[sumo]\nnet = "nope.net.xml"\nroutes = ["r.rou.xml"]\n', tmp_path)
    assert missing == [
        f's.toml:8: sumo.net: "nope.net.xml": no such file in {tmp_path} (expected a SUMO network (.net.xml))',
        f's.toml:9: sumo.routes[0]: "r.rou.xml": no such file in {tmp_path} (expected a SUMO route file (.rou.xml))',
    ]


def test_import_sumo_writes_a_scenario_that_names_its_files_relative_to_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "net").mkdir()
    net, routes = tmp_path / "net" / "g.net.xml", tmp_path / "net" / "g.rou.xml"
    shutil.copy(GRID_NET, net)
    shutil.copy(GRID_ROUTES, routes)
    out = tmp_path / "mine.toml"
    assert cli.main(["import-sumo", str(net), "--routes", str(routes), "-o", str(out)]) == 0
    assert "34 edges, 6 junctions, 6 with traffic lights" in capsys.readouterr().out
    assert 'net = "net/g.net.xml"\nroutes = ["net/g.rou.xml"]' in out.read_text()
    sc = scenario.load(out)
    assert sc.mobility == "sumo"
    assert sc.sumo == scenario.Sumo(str(net), (str(routes),))
    # the origin is the network's centre in its own projection: the grid was projected around (31.495, 120.32)
    assert (sc.origin.lat_deg, sc.origin.lon_deg) == pytest.approx((31.495, 120.32), abs=1e-7)


@pytest.mark.integration  # netconvert and randomTrips.py
def test_import_osm_converts_a_signalised_crossing(tmp_path: Path) -> None:
    done = importer.import_osm(DATA / "tiny.osm", tmp_path / "tiny.toml", trips_s=5.0)
    assert len(done.network.traffic_lights) == 1
    assert done.network.location.georeferenced
    assert done.scenario.sumo is not None
    assert [Path(r).name for r in done.scenario.sumo.routes] == ["tiny.trips.rou.xml"]
    # the map's signalised node is at (31.4950, 120.3200), in the middle of the arms
    assert (done.scenario.origin.lat_deg, done.scenario.origin.lon_deg) == pytest.approx((31.495, 120.32), abs=2e-5)


@pytest.mark.parametrize("case", ["missing net", "malformed net", "unknown edge",
                                  pytest.param("unreadable osm", marks=pytest.mark.integration)])  # netconvert
def test_bad_input_is_one_clear_line_naming_the_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.toml")
    if case == "missing net":
        argv, expect = ["import-sumo", str(tmp_path / "none.net.xml"), "-o", out], "none.net.xml: cannot read: No such file"
    elif case == "malformed net":
        (tmp_path / "b.net.xml").write_text('<net>\n<location netOffset="0,0" projParameter="!"/>\n<edge id="a">\n</net>\n')
        argv, expect = ["import-sumo", str(tmp_path / "b.net.xml"), "-o", out], "b.net.xml:4: not well-formed XML: mismatched tag"
    elif case == "unknown edge":
        (tmp_path / "r.rou.xml").write_text('<routes>\n  <route id="r" edges="A0B0 B0Z9"/>\n</routes>\n')
        argv = ["import-sumo", str(GRID_NET), "--routes", str(tmp_path / "r.rou.xml"), "-o", out]
        expect = 'r.rou.xml:2: <route> edges: edge "B0Z9" is not in grid.net.xml'
    else:
        (tmp_path / "m.osm").write_text("this is not XML <<<\n")
        argv, expect = ["import-osm", str(tmp_path / "m.osm"), "-o", out], "m.osm: netconvert cannot read it: Error"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expect in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.toml").exists()


# -- traffic lights: the RSU's controller is the truth, and drives SUMO's ----------------------------------------------


def test_plans_made_from_the_grids_programs_show_what_sumo_shows_every_step() -> None:
    sc = scenario.load(GRID)
    lights = read_traffic_lights(Path(sc.sumo.net if sc.sumo else ""))
    assert [tl.id for tl in lights] == ["A0", "A1", "B0", "B1", "C0", "C1"]
    controllers = {tl.id: SignalController(program_plan(tl)) for tl in lights}
    traffic = SumoTraffic(sc)
    try:
        samples = 0
        for _ in range(1900):  # 190 s: two cycles and more, every phase change twice
            for ctl in controllers.values():
                ctl.step(traffic.t)  # a step's light is the one at its start: SUMO switches as a step begins
            traffic.step(sc.step_s)
            for tls, ctl in controllers.items():
                assert sumo_state(ctl.states(), 16) == traffic.shown(tls), (tls, traffic.t)
                samples += 1
        assert samples == 1900 * 6
    finally:
        traffic.close()


def test_the_controller_drives_sumos_lights_and_sumos_drivers_obey_them() -> None:
    """A plan with other greens than SUMO's program (20 s east-west, 64 s north-south) shown in SUMO every step: SUMO
    shows it, and vehicles stand at lights that SUMO's own program would have given green."""
    sc = scenario.load(GRID)
    tl = read_traffic_lights(Path(sc.sumo.net if sc.sumo else ""))[2]  # B0
    own = SignalController(program_plan(tl))
    plan = program_plan(tl)
    ours = SignalController(dataclasses.replace(plan, phases=(
        dataclasses.replace(plan.phases[0], green_s=20.0), dataclasses.replace(plan.phases[1], green_s=64.0))))
    lanes = {lk.from_lane for lk in tl.links}
    traffic = SumoTraffic(sc)
    try:
        differ, held = 0, 0
        for _ in range(1800):
            ours.step(traffic.t)
            own.step(traffic.t)
            traffic.show(tl.id, sumo_state(ours.states(), len(tl.links)))
            traffic.step(sc.step_s)
            assert traffic.shown(tl.id) == sumo_state(ours.states(), len(tl.links))
            if ours.states() != own.states():
                differ += 1
                red_here = {lk.from_lane for lk in tl.links if ours.state(lk.index + 1) is m.LightState.RED
                            and own.state(lk.index + 1) is m.LightState.PROTECTED_GREEN}
                held += sum(libsumo.lane.getLastStepHaltingNumber(lane) for lane in red_here & lanes)
        assert differ > 300  # the plans really differ (22 s of each 90 s cycle, and more around the changes)
        assert held > 100  # vehicle-steps standing at our red where SUMO's program shows green
    finally:
        traffic.close()


def test_a_program_that_does_not_fit_is_refused_naming_the_light() -> None:
    blinking = TrafficLight("J7", (0.0, 0.0), "static", 0.0, (TlsPhase(30.0, "GGrr"), TlsPhase(3.0, "yyrr"),
                                                              TlsPhase(30.0, "rrGG"), TlsPhase(3.0, "rroo")), ())
    with pytest.raises(ScenarioError, match=r"traffic light J7: its program shows 'o'"):
        program_plan(blinking)
    shuffled = TrafficLight("J8", (0.0, 0.0), "static", 0.0, (TlsPhase(30.0, "GGrr"), TlsPhase(3.0, "yyrr"),
                                                             TlsPhase(30.0, "rrGG"), TlsPhase(3.0, "ryyr")), ())
    with pytest.raises(ScenarioError, match=r"traffic light J8: phase 3 shows ryyr"):
        program_plan(shuffled)
