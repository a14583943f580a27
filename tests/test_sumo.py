"""SUMO as the mobility backend (docs/sumo.md): the bundled grid, its BSMs, a fast run through Mosquitto."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from v2x import cli
from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.errors import ScenarioError
from v2x.core.signal.controller import SignalController
from v2x.run.report import Report
from v2x.testing import RunScenario, run_watching
from v2x.vehicle.apps import Warning
from v2x.vehicle.bsm import bsms_of

libsumo = pytest.importorskip("libsumo", reason="the sumo extra: pip install -e '.[sumo]'")
from v2x.sumo import importer  # noqa: E402  (needs libsumo)
from v2x.sumo.mobility import HEARD_FRESH_S, SumoTraffic  # noqa: E402
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
    assert report.latency("vehicle->cloud", "bsm").count == bsm.sent > spawned * 50
    assert bsm.lost == 0
    assert report.latency("vehicle->rsu", "bsm").count > 0  # the RSUs of the grid's junctions hear them too
    # each vehicle follows the next junction on its route (SUMO's next light): its SPaT by both paths, its MAP
    cov = report["spat_coverage"]
    assert cov["vehicles_approaching"] >= 30
    assert cov["approaching_without_spat"] == cov["approaching_without_map"] == []
    by_path = report["messages"]["spat"]["received_by_vehicles_by_path"]
    assert by_path["rsu"] > 1000
    assert by_path["cloud"] > 1000
    traffic = report["traffic"]
    assert traffic["collisions"] == 0
    assert traffic["red_light_violations"] == 0  # SUMO's drivers obey SUMO's lights, which are the RSUs' controllers
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
    grid = scenario.load(GRID)
    assert grid.sumo is not None
    assert len(grid.sumo.junctions) == 6
    # one RSU junction per traffic light, placed by the network's projection: the bundled grid's, 200 m by 200 m apart
    assert sc.sumo == scenario.Sumo(str(net), (str(routes),), grid.sumo.junctions)
    assert [(j.id, j.x_m, j.y_m) for j in sc.sumo.junctions[:2]] == [("A0", -200.0, -100.0), ("A1", -200.0, 100.0)]
    # the origin is the network's centre in its own projection: the grid was projected around (31.495, 120.32)
    assert (sc.origin.lat_deg, sc.origin.lon_deg) == pytest.approx((31.495, 120.32), abs=1e-7)


@pytest.mark.integration  # netconvert and randomTrips.py
def test_import_osm_converts_a_signalised_crossing(tmp_path: Path) -> None:
    done = importer.import_osm(DATA / "tiny.osm", tmp_path / "tiny.toml", trips_s=5.0)
    assert len(done.network.traffic_lights) == 1
    assert done.network.location.georeferenced
    assert done.scenario.sumo is not None
    assert [Path(r).name for r in done.scenario.sumo.routes] == ["tiny.trips.rou.xml"]
    [junction] = done.scenario.sumo.junctions  # its RSU, at the crossing (the origin is the extent's centre)
    assert math.hypot(junction.x_m, junction.y_m) < 10
    # the map's signalised node is at (31.4950, 120.3200), in the middle of the arms
    assert (done.scenario.origin.lat_deg, done.scenario.origin.lon_deg) == pytest.approx((31.495, 120.32), abs=2e-5)


@pytest.mark.parametrize("case", ["missing net", "malformed net", "unknown edge", "rsus without lights",
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
    elif case == "rsus without lights":  # a road with no traffic light, and a scenario asking for an RSU on it
        (tmp_path / "road.net.xml").write_text(
            '<net>\n<location netOffset="0,0" convBoundary="0,0,100,0" projParameter="!"/>\n<edge id="a" from="j1" to="j2">\n'
            '<lane id="a_0" index="0" speed="13.89" length="100" shape="0,0 100,0"/>\n</edge>\n</net>\n')
        (tmp_path / "road.toml").write_text(
            'name = "road"\ndescription = "d"\nmobility = "sumo"\n[origin]\nlat_deg = 31.5\nlon_deg = 120.3\n'
            '[sumo]\nnet = "road.net.xml"\n[[sumo.junctions]]\nid = "j2"\nx_m = 100.0\ny_m = 0.0\n')
        argv = ["run", str(tmp_path / "road.toml"), "--fast", "--duration", "1", "--headless"]
        expect = "road.net.xml: the network has no traffic lights, and the scenario asks for RSUs at j2"
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
    assert sc.sumo is not None
    traffic = SumoTraffic(dataclasses.replace(sc, sumo=dataclasses.replace(sc.sumo, junctions=())))  # SUMO's programs run
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
    others = {t.id: SignalController(program_plan(t)) for t in read_traffic_lights(Path(sc.sumo.net if sc.sumo else "")) if t.id != tl.id}
    traffic.follow({tl.id: ours, **others})  # as a fast run hands it the RSUs' controllers
    try:
        differ, held = 0, 0
        for _ in range(1800):
            for ctl in (ours, own, *others.values()):
                ctl.step(traffic.t)
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


def test_without_the_rsus_at_hand_the_fleet_drives_the_lights_with_copies_of_their_controllers() -> None:
    """Real time (the RSUs in other processes): SUMO's lights follow controllers made from the scenario, stepped with
    SUMO's time, which is what the RSUs' fixed-time controllers show at the same sim time."""
    from v2x.sumo.site import sumo_sites

    sc = scenario.load(GRID)
    rsus = {site.id: SignalController(site.plan, 0.0) for site in sumo_sites(sc)}  # as each RSU builds its own
    traffic = SumoTraffic(sc)
    try:
        changes, before = 0, ""
        for _ in range(500):  # 50 s: the first phase change (42 s, 45 s)
            for ctl in rsus.values():
                ctl.step(traffic.t)
            traffic.step(sc.step_s)
            for tls, ctl in rsus.items():
                assert traffic.shown(tls) == sumo_state(ctl.states(), 16), (tls, traffic.t)
            changes += traffic.shown("B0") != before
            before = traffic.shown("B0")
        assert changes == 3  # the first green, its yellow, the next green
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


# -- RSUs on the network's traffic lights: MAP and SPaT true to SUMO -------------------------------------------------


@dataclasses.dataclass
class GridRun:
    """A fast run of the grid on Mosquitto, with what a subscriber heard and what SUMO showed at every step."""

    maps: dict[str, tuple[str, m.IntersectionGeometry]]  # junction -> (topic, its MAP), retained
    map_payloads: list[tuple[str, bytes]]
    spat: dict[tuple[int, str], dict[int, m.LightState]]  # (step, junction) -> SPaT state per signal group
    ends: dict[tuple[int, str], dict[int, m.TimeChange]]  # (step, junction) -> SPaT's timing per signal group
    shown: dict[tuple[int, str], str]  # (step, junction) -> what SUMO's light showed in that step
    collisions: int
    commanded: str  # the junction whose RSU runs another plan than SUMO's program
    stops: tuple[int, int]  # (stops, vehicles) of every vehicle inserted
    hlw: list[Warning]  # the hazard warnings the vehicles raised
    heading: dict[int, float]  # vehicle -> when SUMO first had it within HLW range of the hazard, ahead on its route
    passed: list[tuple[int, int, float]]  # (vehicle, lane, speed [m/s]) as each passed the hazard


#: a hazard on the grid's eastbound A0 -> B0 road (two lanes), in its right lane, 60 m before B0's stop line
HAZARD = scenario.SumoHazard("road_works", "A0B0", lane=0, distance_m=60.0, start_s=10.0)


@pytest.fixture(scope="module")
def grid_run(mosquitto: Any) -> GridRun:
    """90 s of the grid in fast mode. The RSU of B0 is commanded another plan (30 s greens, where SUMO's program has
    42 s) at the start, as a cloud plan would be: SUMO can show it only by following the RSU's controller, not its
    own program. A hazard (`HAZARD`) from 10 s."""
    return _grid_run(mosquitto, glosa=False)


@pytest.fixture(scope="module")
def glosa_run(mosquitto: Any) -> GridRun:
    """The same run, seed and plans, with GLOSA on."""
    return _grid_run(mosquitto, glosa=True)


def _grid_run(mosquitto: Any, glosa: bool, duration_s: float = 90.0) -> GridRun:
    import uuid

    from v2x.core.topics import kind_of
    from v2x.net.connection import Connection
    from v2x.run.fast import FAST_EPOCH_S, FastRun
    from v2x.vehicle.apps import HLW_RANGE_M

    sc = scenario.load(GRID)
    assert sc.sumo is not None
    sc = dataclasses.replace(sc, sumo=dataclasses.replace(sc.sumo, hazards=(HAZARD,)), fleet=dataclasses.replace(sc.fleet, glosa=glosa))
    conn = Connection(mosquitto.url, root=f"t/grid-rsus-{uuid.uuid4().hex[:8]}/v2x/v1")
    run = FastRun(sc, conn)
    b0 = next(r for r in run.rsus if r.iid == "B0")
    plan = b0.ctl.plan
    b0.ctl.command(dataclasses.replace(plan, plan_id=7, phases=(
        dataclasses.replace(plan.phases[0], green_s=30.0), dataclasses.replace(plan.phases[1], green_s=30.0))))
    sumo = run.fleet.sumo
    assert sumo is not None
    shown: dict[tuple[int, str], str] = {}
    move = run.fleet.move

    heading: dict[int, float] = {}
    passed: list[tuple[int, int, float]] = []
    at_m = libsumo.lane.getLength(f"{HAZARD.edge}_{HAZARD.lane}") - HAZARD.distance_m
    was: dict[int, float] = {}

    def move_and_look() -> None:  # what SUMO's lights show through the step that starts now; who meets the hazard
        k = round(run.fleet.traffic.t / sc.step_s)
        move()
        shown.update({(k, tls): sumo.shown(tls) for tls in sc.sites})
        for vid in (int(v) for v in sumo.ids):
            sid = sumo.sumo_id(vid)
            d = libsumo.vehicle.getDrivingDistance(sid, HAZARD.edge, at_m)
            if sumo.t >= HAZARD.start_s and 0 <= d <= HLW_RANGE_M:
                heading.setdefault(vid, sumo.t)
            if libsumo.vehicle.getRoadID(sid) == HAZARD.edge:
                pos = libsumo.vehicle.getLanePosition(sid)
                if was.get(vid, math.inf) < at_m <= pos:
                    passed.append((vid, libsumo.vehicle.getLaneIndex(sid), libsumo.vehicle.getSpeed(sid)))
                was[vid] = pos

    run.fleet.move = move_and_look  # type: ignore[method-assign]
    heard = run_watching(run, conn, duration_s, [("spat/rsu/#", 0), ("map/#", 1)])
    maps: dict[str, tuple[str, m.IntersectionGeometry]] = {}
    spat: dict[tuple[int, str], dict[int, m.LightState]] = {}
    ends: dict[tuple[int, str], dict[int, m.TimeChange]] = {}
    map_payloads = []
    for topic, payload in heard:
        if not payload:
            continue  # MAP cleared as the RSUs stop
        body = codec.decode(payload).body
        if kind_of(topic) == "map" and isinstance(body, m.MapData):
            map_payloads.append((topic, payload))
            for ig in body.intersections:
                maps[ig.name] = (topic, ig)
        elif isinstance(body, m.Spat):
            for st in body.intersections:
                k = round((st.timestamp_ms / 1000 - FAST_EPOCH_S) / sc.step_s)
                spat[(k, st.name)] = {ms.signal_group: ms.events[0].state for ms in st.states}
                ends[(k, st.name)] = {ms.signal_group: t for ms in st.states if (t := ms.events[0].timing) is not None}
    hlw = [w for w in run.fleet.apps.warnings if w.app == "hlw"]
    return GridRun(maps, map_payloads, spat, ends, shown, sumo.stats.collisions, "B0", sumo.stops(), hlw, heading, passed)


@pytest.mark.xdist_group("grid_run")  # one worker runs the module fixture once
def test_one_map_per_signalised_junction_with_the_networks_lanes(grid_run: GridRun) -> None:
    """MAP from the network: per traffic light, its controlled links' incoming and outgoing lanes (counted here by
    sumolib, not by our reader), each link index a signal group on the connection from its lane to its lane."""
    import sumolib

    net = sumolib.net.readNet(str(GRID_NET))
    lights = net.getTrafficLights()
    assert sorted(grid_run.maps) == sorted(tl.getID() for tl in lights)
    assert len(lights) == 6
    for tl in lights:
        links = tl.getConnections()  # (incoming lane, outgoing lane, link index)
        lanes = {lane.getID() for a, b, _ in links for lane in (a, b)}
        _, mp = grid_run.maps[tl.getID()]
        assert len(mp.lanes) == len(lanes) == 16
        by_id = {ln.lane_id: ln for ln in mp.lanes}
        assert {ln.name for ln in mp.lanes} == lanes
        movements = {(ln.name, by_id[c.lane_id].name, c.signal_group) for ln in mp.lanes for c in ln.connections}
        assert movements == {(a.getID(), b.getID(), k + 1) for a, b, k in links}
        for ln in mp.lanes:  # geometry: the lane's shape around the junction, an ingress lane from its stop line
            shape = net.getLane(ln.name).getShape()
            cx, cy = net.getNode(tl.getID()).getCoord()
            end = shape[-1] if ln.direction is m.LaneDirection.INGRESS else shape[0]
            assert math.dist(ln.nodes[0], (end[0] - cx, end[1] - cy)) < 0.02
            assert math.hypot(*ln.nodes[0]) < 20 < math.hypot(*ln.nodes[-1])  # starts at the junction, leads away


@pytest.mark.xdist_group("grid_run")  # one worker runs the module fixture once
def test_spat_shows_the_light_sumo_shows_at_every_step(grid_run: GridRun) -> None:
    """The SPaT each RSU broadcast, as heard on Mosquitto, against what SUMO's light showed in the same step, per
    signal group; B0 ran a commanded plan, not SUMO's program, so SUMO showed what the RSU's controller decided."""
    from v2x.sumo.signals import light_states

    assert grid_run.collisions == 0
    same = total = 0
    for (k, tls), sumo_shows in grid_run.shown.items():
        heard = grid_run.spat.get((k, tls))
        if heard is None:
            continue
        truth = light_states(sumo_shows)
        assert set(heard) == set(truth)
        total += len(truth)
        same += sum(heard[g] == truth[g] for g in truth)
    assert total >= 0.99 * 900 * 6 * 16  # a SPaT per step per junction, nearly all heard
    print(f"SPaT = SUMO's light in {same} of {total} (step, signal group) samples")
    assert same / total >= 0.999, (same, total)
    # B0's light followed the commanded plan from its first phase boundary (45 s): 30 s greens, where SUMO's program
    # (A0's, with the same offset) has 42 s: 27 s of a different light by 90 s
    b0 = [grid_run.shown[(k, "B0")] for k in range(900)]
    a0 = [grid_run.shown[(k, "A0")] for k in range(900)]
    differ_from_program = sum(x != y for x, y in zip(b0, a0, strict=True))
    assert differ_from_program > 200


@pytest.mark.xdist_group("grid_run")  # one worker runs the module fixture once
def test_the_visualiser_draws_every_lane_of_the_network_from_map(grid_run: GridRun) -> None:
    import os

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import pygame

    from v2x.core.geo import LocalFrame
    from v2x.watch.render import BACKGROUND, Renderer, View
    from v2x.watch.scene import Scene

    root = grid_run.map_payloads[0][0].split("/map/")[0]
    sc = scenario.load(GRID)
    scene = Scene(root=root, frame=LocalFrame(sc.origin.lat_deg, sc.origin.lon_deg))  # the grid's centre, in the view's
    for topic, payload in grid_run.map_payloads:
        assert scene.ingest(topic, payload, 0) is not None
    assert sum(len(iv.lanes) for iv in scene.intersections.values()) == 6 * 16
    pygame.display.init()
    pygame.font.init()
    w, h, scale = 1000, 600, 1.5  # [px/m]: the whole grid, 700 m x 500 m
    surf = pygame.Surface((w, h))
    r = Renderer(scene, View(w, h, 0.0, 0.0, scale))
    r._fitted = True
    r.draw(surf)
    bg = pygame.Color(*BACKGROUND)
    for iv in scene.intersections.values():
        for lane in iv.lanes:  # the middle of every lane is drawn on
            x, y = lane.points[len(lane.points) // 2 - 1 : len(lane.points) // 2 + 1].mean(axis=0)
            px, py = round(w / 2 + x * scale), round(h / 2 - y * scale)
            assert surf.get_at((px, py)) != bg, (iv.name, lane.name)


@pytest.mark.xdist_group("grid_run")  # one worker runs the module fixture once
def test_spats_end_times_are_when_sumos_light_changes(grid_run: GridRun) -> None:
    """On the junctions running SUMO's program (fixed-time), SPaT's likely end of each group's light is when SUMO's
    light for that group changed, within a step; its min and max bracket it."""
    from v2x.sumo.signals import light_states

    checked = 0
    for tls in ("A0", "C1"):
        shown = [light_states(grid_run.shown[(k, tls)]) for k in range(900)]
        for k in range(0, 900, 7):
            timing = grid_run.ends.get((k, tls))
            if timing is None:
                continue
            for g, tc in timing.items():
                change = next((j for j in range(k + 1, 900) if shown[j][g] != shown[k][g]), None)
                if change is None:
                    continue
                assert abs(tc.likely_end_s - (change - k) * 0.1) <= 0.11, (tls, k, g, tc)
                assert tc.min_end_s <= tc.likely_end_s <= tc.max_end_s
                checked += 1
    assert checked > 500


@pytest.mark.xdist_group("grid_run")  # one worker runs the module fixture once
def test_glosa_on_sumo_cuts_the_stops(grid_run: GridRun, glosa_run: GridRun) -> None:
    """GLOSA on SUMO, through TraCI: the advised speed from the SPaT each vehicle received; fewer stops per vehicle
    than with GLOSA off, on the same seed, plans and demand (stops of every vehicle inserted, present ones too)."""
    (off, n_off), (on, n_on) = grid_run.stops, glosa_run.stops
    assert n_on == n_off >= 40  # the same demand: SUMO inserts the same vehicles
    print(f"stops per vehicle: GLOSA off {off / n_off:.2f}, on {on / n_on:.2f}")
    assert on / n_on < 0.8 * off / n_off
    assert glosa_run.collisions == 0


@pytest.mark.xdist_group("grid_run")  # one worker runs the module fixture once
def test_a_hazard_on_a_sumo_edge_is_warned_to_the_vehicles_heading_for_it(grid_run: GridRun) -> None:
    """The cloud announces a hazard of [[sumo.hazards]] (RSI); each vehicle that SUMO's routes bring within HLW
    range of it is warned (HLW), at least 5 s before it gets there; warned, it passes in the other lane, slowly."""
    from v2x.core.traffic import HAZARD_SPEED_MPS

    warned = {w.vehicle: w for w in grid_run.hlw}
    assert len(grid_run.heading) >= 3
    assert set(grid_run.heading) <= set(warned)  # every vehicle heading for it, and no other
    assert set(warned) <= set(grid_run.heading)
    for vid, w in warned.items():
        assert w.t_s - grid_run.heading[vid] <= 0.5  # warned as it came within range (its OBU up), or as it began
        assert w.trigger.startswith("rsi cloud")
    leads = [w.lead_s for w in grid_run.hlw if w.lead_s is not None]
    assert len(leads) >= 2
    assert min(leads) >= 5.0, leads
    assert grid_run.passed
    for vid, lane, v in grid_run.passed:
        assert vid in warned
        assert lane != HAZARD.lane
        assert v <= HAZARD_SPEED_MPS + 0.1


def test_sumo_hazards_are_validated_with_file_line_and_field() -> None:
    text = (f'name = "s"\ndescription = "d"\nmobility = "sumo"\n[origin]\nlat_deg = 31.5\nlon_deg = 120.3\n'
            f'[sumo]\nnet = "{GRID_NET.name}"\n')
    hazards = ('[[sumo.hazards]]\nkind = "road_works"\nedge = "nowhere"\n'
               '[[sumo.hazards]]\nkind = "accident"\nedge = "A0B0"\nlane = 2\n'
               '[[sumo.hazards]]\nkind = "obstacle"\nedge = "A0B0"\ndistance_m = 500.0\n')
    assert _problems(text + hazards, GRID_NET.parent) == [
        's.toml:11: sumo.hazards[0].edge: "nowhere" is not an edge of grid.net.xml (expected a non-internal edge id)',
        "s.toml:15: sumo.hazards[1].lane: 2 is out of range (expected 0..1 for edge A0B0)",
        "s.toml:19: sumo.hazards[2].distance_m: 500 is beyond lane 0 of edge A0B0 (expected < its length, 179.2)",
    ]


# -- the cloud's plans on SUMO junctions -----------------------------------------------------------------------------


def test_an_adaptive_cloud_plan_changes_sumos_light(mosquitto: Any) -> None:
    """The grid in fast mode on Mosquitto with `control.policy = "adaptive"`: the cloud plans the SUMO junctions from
    the BSMs it heard and sends the plans over the broker; the RSUs accept them (checked against the limits made from
    SUMO's program) and SUMO's light follows them: at every step it shows what a controller shows that runs SUMO's
    program until each plan heard on the wire reached its RSU, and that plan from then on, not what SUMO's program
    shows; and the SPaT heard on the broker is SUMO's light."""
    import uuid

    from v2x.core.signal.plans import plan_from_message
    from v2x.core.topics import kind_of
    from v2x.net.connection import Connection
    from v2x.run.fast import FAST_EPOCH_S, FastRun
    from v2x.sumo.signals import light_states
    from v2x.sumo.site import sumo_sites

    sc = scenario.load(GRID)
    sc = dataclasses.replace(sc, control=dataclasses.replace(sc.control, policy="adaptive"))
    conn = Connection(mosquitto.url, root=f"t/grid-adaptive-{uuid.uuid4().hex[:8]}/v2x/v1")
    run = FastRun(sc, conn)
    # the policy first retimes a cycle (90 s) into the run; the test asks at 30 s, so that a plan is running by 45 s
    run.cloud._next_plan_s = 30.0
    sumo = run.fleet.sumo
    assert sumo is not None
    shown: dict[tuple[int, str], str] = {}
    move = run.fleet.move

    def move_and_look() -> None:  # what SUMO's lights show through the step that starts now
        k = round(run.fleet.traffic.t / sc.step_s)
        move()
        shown.update({(k, tls): sumo.shown(tls) for tls in sc.sites})

    run.fleet.move = move_and_look  # type: ignore[method-assign]
    steps = 750  # 75 s
    heard = run_watching(run, conn, steps * sc.step_s, [("spat/rsu/#", 0), ("plan/#", 1)])
    assert sumo.stats.collisions == 0
    plans: dict[str, list[m.SignalPlan]] = {}
    spat: dict[tuple[int, str], dict[int, m.LightState]] = {}
    for topic, payload in heard:
        frame = codec.decode(payload)
        if kind_of(topic) == "plan":
            assert isinstance(frame.body, m.SignalPlan)
            assert frame.header.sender_kind is m.SenderKind.CLOUD
            plans.setdefault(sc.sites[frame.body.intersection.id - 1], []).append(frame.body)
        elif isinstance(frame.body, m.Spat):
            for st in frame.body.intersections:
                k = round((st.timestamp_ms / 1000 - FAST_EPOCH_S) / sc.step_s)
                spat[(k, st.name)] = {ms.signal_group: ms.events[0].state for ms in st.states}
    assert plans, "the cloud sent no plan"
    rsus = {r.iid: r for r in run.rsus}
    differ = 0
    for site in sumo_sites(sc):
        rsu = rsus[site.id]
        assert not rsu.refused, rsu.refused
        sent = plans.get(site.id, [])
        assert {p.plan_id for p in sent} == set(rsu.plans)  # each plan heard on the wire reached the RSU, and no other
        # replay: SUMO's program until each plan reached the RSU, then that plan (as the wire carried it)
        ours, program = SignalController(site.plan, 0.0), SignalController(site.plan, 0.0)
        todo = sorted((rsu.plans[p.plan_id]["received_s"], p.plan_id, p) for p in sent)
        for k in range(steps):
            t = k * sc.step_s
            while todo and todo[0][0] <= t + 1e-9:
                ours.command(plan_from_message(todo.pop(0)[2], rsu._permissive, site.plan.passage_s))
            ours.step(t)
            program.step(t)
            assert shown[(k, site.id)] == sumo_state(ours.states(), len(site.light.links)), (site.id, t)
            differ += ours.states() != program.states()
    applied = [(r.iid, t, pid) for r in run.rsus for t, pid in r.ctl.plan_changes]
    assert applied, "no plan took effect"
    assert differ > 50, differ  # SUMO's light followed the cloud's plans where they differ from its program
    same = total = 0
    for (k, tls), sumo_shows in shown.items():
        if (got := spat.get((k, tls))) is not None:
            truth = light_states(sumo_shows)
            total += len(truth)
            same += sum(got[g] == truth[g] for g in truth)
    assert total >= 0.99 * steps * 6 * 16
    assert same / total >= 0.999, (same, total)
    print(f"plans applied {applied}; steps x junctions off SUMO's program: {differ}; SPaT = SUMO's light {same}/{total}")


def test_in_real_time_a_plan_that_reaches_the_rsu_reaches_sumos_light(mosquitto: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`v2x run grid` in real time, the RSUs and the cloud in processes of their own, the fleet (and SUMO) here: a
    plan sent to B0's RSU over the broker, as the cloud sends one (phase 2's green cut to 5 s), reaches SUMO's light
    through the RSU tier: SUMO's lights follow each RSU's own SPaT (v2x.vehicle.heads), so every junction's light is
    at every step what its RSU's heads showed (the RSU's own log of them), within a SPaT period and the broker's
    latency; and B0's differs from SUMO's program once the plan runs, which copies of the controllers could not do.
    The grid's programs are shifted alike to put their first phase boundary, where the plan takes effect, at 25 s
    rather than 45 s, so that a 35 s run shows what a 55 s one did."""
    import asyncio
    import threading
    import time
    import uuid

    from v2x.core.signal.plans import plan_message
    from v2x.core.traffic import light_of
    from v2x.net.connection import Connection
    from v2x.net.station import Clock, Station
    from v2x.run.realtime import Layout, run_realtime
    from v2x.sumo.signals import STATE_OF_CHAR
    from v2x.sumo.site import sumo_sites

    # the grid's six programs (all offset 0: phase 1's green and yellow end at 45 s) shifted alike, so that their first
    # phase boundary comes at 25 s: the plan takes effect there, and 10 s more show it, as 45 s and 55 s did unshifted
    boundary_s, run_s = 25.0, 35.0
    sc = scenario.load(GRID)
    assert sc.sumo is not None
    programs = Path(sc.sumo.net).read_text()
    assert programs.count('type="static" programID="0" offset="0"') == 6
    (tmp_path / "grid.net.xml").write_text(programs.replace(
        'type="static" programID="0" offset="0"', f'type="static" programID="0" offset="{(boundary_s - 45.0) % 90.0:g}"'))
    sc = dataclasses.replace(sc, sumo=dataclasses.replace(sc.sumo, net=str(tmp_path / "grid.net.xml")))
    conn = Connection(mosquitto.url, root=f"t/grid-heads-{uuid.uuid4().hex[:8]}/v2x/v1")
    b0 = next(s for s in sumo_sites(sc) if s.id == "B0")
    assert SignalController(b0.plan, 0.0).phase.phase_id == 1
    assert b0.plan.phases[0].duration_s == 45.0
    # its phase 1 starts where the program's does (boundary_s - 45 s), so no transition stretches the 5 s green
    plan = dataclasses.replace(b0.plan, plan_id=9, phases=(b0.plan.phases[0], dataclasses.replace(b0.plan.phases[1], green_s=5.0)))
    plan = dataclasses.replace(plan, offset_s=(boundary_s - 45.0) % plan.cycle_s)
    samples: list[tuple[float, dict[str, str], set[str]]] = []  # (step's sim time, what each light shows through the
    # step, the lights on the copy of their controller that step because their RSU's SPaT went over HEARD_FRESH_S old,
    # as `drive_lights` counts them in on_copy_steps; a light that never had a SPaT is not among them)
    drive = SumoTraffic.drive_lights

    traffic: list[SumoTraffic] = []

    def drive_and_look(self: SumoTraffic) -> None:
        drive(self)
        traffic[:1] = [self]
        on_copy = {tls for tls in sc.sites if (heard := self._showing.get(tls)) is not None and self.t - heard[0] > HEARD_FRESH_S}
        samples.append((self.t, {tls: self.shown(tls) for tls in sc.sites}, on_copy))

    monkeypatch.setattr(SumoTraffic, "drive_lights", drive_and_look)
    sent: list[float] = []
    heard: list[str] = []  # B0's SPaT topics the sender heard before it sent the plan

    def send_plan() -> None:  # as the cloud does, once B0's RSU broadcasts (so it has subscribed to its plans)
        async def go() -> None:
            tr = conn.transport(f"test-cloud-{uuid.uuid4().hex[:6]}")
            await tr.start()
            await tr.subscribe(f"{conn.root}/spat/rsu/#", qos=0)  # the RSUs' SPaT, any tile: B0's picked out below
            deadline = time.time() + 30.0
            while not heard and time.time() < deadline:
                await tr.wait(0.2)
                heard.extend(msg.topic for msg in tr.receive() if msg.topic.endswith("/B0"))
            station = Station("cloud", m.SenderKind.CLOUD, Clock(), tr)
            station.publish(conn.topics.plan("B0"), plan_message(plan, b0.index, "test", round(time.time() * 1000) + 120_000), qos=1)
            sent.append(time.time())
            await tr.drain(2.0)
            await tr.close()

        asyncio.run(go())

    sender = threading.Thread(target=send_plan, name="plan")
    sender.start()
    res = run_realtime(sc, conn, run_s, Layout(), lambda _: None)
    sender.join()
    assert heard, "B0's RSU was not heard broadcasting"
    assert sent, "the plan was not sent"
    assert not res.tiers_failed, res.tiers_failed
    rsu = next(r for r in res.rsus if r.intersection == "B0")
    assert [p["plan_id"] for p in rsu.plans] == [9]
    assert rsu.plans[0]["applied_s"] == boundary_s  # at the first phase boundary
    assert res.fleet is not None
    # what each RSU's heads showed, from its log of changes: [sim time, group, Light]
    logs = {r.intersection: r.lights for r in res.rsus}

    def rsu_light(tls: str, group: int, t: float) -> int | None:
        return next((int(light) for at, g, light in reversed(logs[tls]) if g == group and at <= t + 1e-6), None)

    program = SignalController(b0.plan, 0.0)
    exact = total = off_program = 0
    lags: list[float] = []
    for t, shown, on_copy in samples:
        if t < 1.0:
            continue  # the first SPaT may still be on its way
        program.step(t)
        for tls, state in shown.items():
            for k, c in enumerate(state):
                light = int(light_of(STATE_OF_CHAR[c]))
                total += 1
                if rsu_light(tls, k + 1, t) == light:
                    exact += 1
                    continue
                if tls in on_copy:
                    continue  # the copy's lights, not its RSU's SPaT's: bounded below (on_copy_steps)
                # SUMO shows what the RSU showed a little earlier: how much earlier
                lag = next((j * 0.05 for j in range(1, 21) if rsu_light(tls, k + 1, t - j * 0.05) == light), math.inf)
                lags.append(lag)
        off_program += shown["B0"] != sumo_state(program.states(), len(b0.light.links))
    print(f"SUMO = the RSU's heads in {exact} of {total} (step, group) samples; the others lag by {sorted(lags)[-5:]} s at most")
    assert total >= 0.95 * round((run_s - 1.0) / sc.step_s) * 6 * 16  # steps from 1 s on x junctions x groups
    assert max(lags, default=0.0) <= 0.5, sorted(lags)[-10:]
    assert exact / total >= 0.98
    # SPaT followed throughout, once it came: none dropped, and a copy stood in only where an RSU process stalled
    # for more than HEARD_FRESH_S (the machine loaded), for at most 1% of the junction-steps
    print(f"junction-steps on a copy for want of fresh SPaT: {traffic[0].on_copy_steps}")
    assert traffic[0].heard_dropped == 0
    assert traffic[0].on_copy_steps <= 0.01 * len(samples) * 6
    # the report judges red-light entries in real time from the fleet's stop-line crossings against the RSUs' logs
    from v2x.run.results import red_light_violations

    assert len(res.fleet.line_crossings) > 20 * run_s / 55.0  # more than 20 in 55 s, as the unshifted run had: 12.7 here
    violations = red_light_violations(res.fleet.line_crossings, res.rsus)
    print(f"red-light violations judged against the RSUs' heads: {violations} of {len(res.fleet.line_crossings)} crossings")
    assert violations is not None
    assert off_program >= 30  # from 30 s (its cut green's end), B0 showed the plan's yellow and red where SUMO's program shows green


def test_actuated_control_on_sumo_takes_detector_calls_from_the_bsms_heard(mosquitto: Any) -> None:
    """`control.policy = "actuated"` on the grid, fast mode on Mosquitto: each RSU's detector calls come from the BSMs
    it heard, matched to its junction's ingress lanes; a group is called only while a vehicle (by SUMO) is, or was in
    the BSM's age, near the stop line of a lane feeding it, and greens end on gap-out rather than by the program's
    clock; SUMO's light is the controller's, so SUMO's program no longer runs there."""
    import asyncio
    import uuid
    from collections import deque

    from v2x.core.signal.controller import DETECTOR_M
    from v2x.net.connection import Connection
    from v2x.run.fast import FastRun
    from v2x.sumo.site import sumo_sites

    sc = scenario.load(GRID)
    sc = dataclasses.replace(sc, control=dataclasses.replace(sc.control, policy="actuated"))
    run = FastRun(sc, Connection(mosquitto.url, root=f"t/grid-actuated-{uuid.uuid4().hex[:8]}/v2x/v1"))
    sumo = run.fleet.sumo
    assert sumo is not None
    feeds: dict[tuple[str, int], set[str]] = {}
    for s in sumo_sites(sc):
        for lk in s.light.links:
            feeds.setdefault((s.id, lk.index + 1), set()).add(lk.from_lane)
    # by SUMO, the ingress lanes with a vehicle near the stop line (its front within DETECTOR_M, or past the line
    # into the junction with its body still behind it), over the last steps: a BSM calls for CALL_FRESH_S
    near: deque[set[str]] = deque(maxlen=5)
    came_from: dict[str, str] = {}  # vehicle -> the last lane it was on outside junctions
    move = run.fleet.move

    def move_and_look() -> None:
        move()
        here = set()
        for v in libsumo.vehicle.getIDList():
            lane = libsumo.vehicle.getLaneID(v)
            if lane.startswith(":"):
                if v in came_from:
                    here.add(came_from[v])
                continue
            came_from[v] = lane
            if libsumo.lane.getLength(lane) - libsumo.vehicle.getLanePosition(v) < DETECTOR_M:
                here.add(lane)
        near.append(here)

    run.fleet.move = move_and_look  # type: ignore[method-assign]
    checked = wrong = 0
    for rsu in run.rsus:
        def calls_and_check(now: float, rsu: Any = rsu, calls: Any = rsu.calls) -> set[int]:
            nonlocal checked, wrong
            out: set[int] = calls(now)
            seen = set().union(*near)
            for g in out:
                checked += 1
                wrong += not feeds[(rsu.iid, g)] & seen
            return out

        rsu.calls = calls_and_check  # type: ignore[method-assign]
    asyncio.run(run.run(60.0))
    ended = [rsu.ctl.green_ended_by for rsu in run.rsus]
    print(f"detector calls checked {checked}, without a vehicle there {wrong}; the last greens ended by {ended}")
    assert all(rsu.ctl.plan.mode.name == "ACTUATED" for rsu in run.rsus)
    assert checked > 100
    assert wrong == 0
    assert "gap" in ended  # a green ended for want of calls, not by the program's clock
    assert sumo.stats.collisions == 0


def test_an_emergency_vehicle_on_sumo_gets_signal_priority(mosquitto: Any, tmp_path: Path) -> None:
    """An ambulance (SUMO vClass emergency) crossing the grid west to east, fast mode on Mosquitto: its OBU asks each
    junction's RSU ahead for priority, naming SUMO's link it will take as MAP lanes; the RSU reads the movement from
    its MAP (the group is that link's index + 1), grants it and its controller serves it (an early green or a longer
    one), which SUMO's light shows; the request is cancelled once the ambulance has crossed."""
    import asyncio
    import uuid

    from v2x.net.connection import Connection
    from v2x.run.fast import FastRun
    from v2x.sumo.site import sumo_sites

    routes = tmp_path / "ambulance.rou.xml"
    routes.write_text('<routes>\n    <vType id="ambulance" vClass="emergency"/>\n'
                      '    <vehicle id="ambulance" type="ambulance" depart="20" departLane="best" departSpeed="max">\n'
                      '        <route edges="left0A0 A0B0 B0C0 C0right0"/>\n    </vehicle>\n</routes>\n')
    sc = scenario.load(GRID)
    assert sc.sumo is not None
    sc = dataclasses.replace(sc, sumo=dataclasses.replace(sc.sumo, routes=(*sc.sumo.routes, str(routes))))
    run = FastRun(sc, Connection(mosquitto.url, root=f"t/grid-ambulance-{uuid.uuid4().hex[:8]}/v2x/v1"))
    sumo = run.fleet.sumo
    assert sumo is not None
    took: set[tuple[str, int]] = set()  # (junction, group): the links the ambulance approached, by SUMO
    program = {s.id: SignalController(s.plan, 0.0) for s in sumo_sites(sc)}
    served = 0  # steps its group showed green in SUMO where SUMO's program shows red, while it approached
    move = run.fleet.move

    def move_and_look() -> None:
        nonlocal served
        t = sumo.t
        move()
        if "ambulance" in libsumo.vehicle.getIDList():
            nxt = libsumo.vehicle.getNextTLS("ambulance")
            if nxt:
                tls, index = nxt[0][0], nxt[0][1]
                took.add((tls, index + 1))
                program[tls].step(t)
                shows = sumo.shown(tls)[index]
                served += shows in "Gg" and program[tls].state(index + 1) is m.LightState.RED

    run.fleet.move = move_and_look  # type: ignore[method-assign]
    asyncio.run(run.run(75.0))
    granted = [(r.iid, p) for r in run.rsus for p in r.priority_log if p["type"] == "request"]
    print(f"requests {granted}; steps served against the program {served}")
    assert {iid for iid, _ in granted} == {"A0", "B0", "C0"}
    assert all(p["state"] == "granted" for _, p in granted)
    assert {(iid, p["group"]) for iid, p in granted} <= took  # the movement SUMO's ambulance took
    assert any(p["action"] in ("early_green", "extension") for _, p in granted)
    assert served > 0  # SUMO's light gave it green where its program would not have
    heard = {e["intersection"] for e in run.fleet.priority.events if e["event"] == "status" and e["state"] == "granted"}
    assert heard == {"A0", "B0", "C0"}  # the ambulance's OBU heard each RSU's reply
    cancels = [r.iid for r in run.rsus for p in r.priority_log if p["type"] == "cancel"]
    assert sorted(cancels) == ["A0", "B0", "C0"]
    assert not any(r.bad.counts for r in run.rsus), [dict(r.bad.counts) for r in run.rsus]
    assert sumo.stats.collisions == 0


def test_stop_line_crossings_on_sumo_are_logged_with_the_light_they_were_made_on() -> None:
    """Every vehicle that drives through an RSU junction is logged crossing its stop line once, on the link SUMO had
    it on (the next step finds it in the junction or on that link's outgoing lane), and a crossing is a red-light
    entry exactly when SUMO's light for that link showed red through the step."""
    sc = scenario.load(GRID)
    traffic = SumoTraffic(sc)
    traffic.crossings = []  # log them, as a real-time fleet does
    links = {(tl.id, lk.index + 1): lk for tl in read_traffic_lights(Path(sc.sumo.net if sc.sumo else "")) for lk in tl.links}
    try:
        through: set[tuple[str, str]] = set()  # (SUMO's vehicle, junction) seen inside a junction, by SUMO
        reds = 0
        for _ in range(900):
            shown = {tls: traffic.shown(tls) for tls in sc.sites}  # the light of the step to come (set as it starts)
            logged = len(traffic.line_crossings)
            traffic.step(sc.step_s)
            for _t, vid, tls, g in traffic.line_crossings[logged:]:
                sid = traffic.sumo_id(vid)
                assert sid is not None
                lane = libsumo.vehicle.getLaneID(sid)
                assert lane.startswith(f":{tls}_") or lane == links[(tls, g)].to_lane, (tls, g, lane)
                reds += shown[tls][g - 1] == "r"
            for sid in libsumo.vehicle.getIDList():
                lane = libsumo.vehicle.getLaneID(sid)
                if lane.startswith(":") and lane[1:3] in sc.sites:
                    through.add((sid, lane[1:3]))
        logged_pairs = [(traffic.sumo_id(vid) or f"gone {vid}", tls) for _t, vid, tls, _g in traffic.line_crossings]
        assert len(logged_pairs) == len(set(logged_pairs))  # once each
        assert {p for p in logged_pairs if not p[0].startswith("gone")} <= through
        assert len(through) >= 50
        assert len(set(logged_pairs)) >= len(through) - 2  # at most the ones inside a junction as the run ends
        assert traffic.stats.red_light_entries == reds
    finally:
        traffic.close()


def test_a_sumo_rsus_detector_calls_cover_every_lane_a_gnss_position_may_be_on() -> None:
    """A position on the right lane of A0 -> B0, 10 m before B0's stop line, calls that lane's links only when known
    exactly, and the left lane's too when it is known only to within 2 m; none from 40 m out (beyond DETECTOR_M), at
    another junction, or heading the other way."""
    from v2x.sumo.site import approaches, sumo_sites, to_local

    sc = scenario.load(GRID)
    b0 = next(s for s in sumo_sites(sc) if s.id == "B0")
    appr = approaches(sc)
    a, b = to_local(sc)
    lanes = {ln.name: ln for ln in b0.geometry.lanes}

    def point(lane: str, back_m: float) -> tuple[float, float, float]:  # local x, y and heading of travel
        (x0, y0), (x1, y1) = lanes[lane].nodes[:2]  # from the stop line outwards
        cx, cy = b0.light.xy
        p, q = a * complex(cx + x0, cy + y0) + b, a * complex(cx + x1, cy + y1) + b
        z = p + (q - p) / abs(q - p) * back_m
        return z.real, z.imag, math.degrees(math.atan2((p - q).real, (p - q).imag))

    right = appr.groups[(b0.index, "A0B0_0")]
    left = appr.groups[(b0.index, "A0B0_1")]
    assert right
    assert left
    assert not right & left
    x, y, h = point("A0B0_0", 10.0)
    assert appr.calls(b0.index, x, y, h) == right
    assert appr.calls(b0.index, x, y, h, slack_m=2.0) == right | left
    assert appr.calls(b0.index, *point("A0B0_0", 40.0)) == set()
    assert appr.calls(b0.index - 1, x, y, h) == set()
    assert appr.calls(b0.index, x, y, h + 180.0) == set()
    assert appr.at(x, y, h) == (b0.index, "A0B0_0", pytest.approx(10.0, abs=0.05))
