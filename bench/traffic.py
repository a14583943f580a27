"""Traffic-core benchmark: saturation flow, delay against Webster, and SUMO side by side.

    python -m bench.traffic                 # everything (about 5 minutes)
    python -m bench.traffic --only webster  # one part: saturation | webster | sumo | district

Every figure is measured here, in this run:
  - saturation flow: HCM queue-discharge headways (queued vehicles after the 4th) on an
    oversaturated through-only approach of passenger cars (bench/scenarios/saturation.toml);
  - delay: mean control delay on an isolated fixed-time approach with Poisson arrivals,
    beside Webster's formula evaluated with the saturation flow and capacity measured in
    the same run;
  - SUMO (optional: `pip install -e ".[sumo]"`, i.e. eclipse-sumo and libsumo): the same
    junction, the same arrivals and the same signal timing (our fixed-time controller's cycle, given to SUMO
    as its own static programs), Krauss defaults; saturation flow, mean delay and
    vehicle-steps per second of both;
  - per step: the step time 10x SUMO allows, beside the floor every step pays outside the core's own work
    (the controllers advance, the lights are read, one call; with each vehicle's light as the step's input, and
    leaner, with the lights per signal group only), timed with the core's work taken as zero;
  - district: the core alone on four_way tiled 1, 16, 32, 48 and 64 times (--copies), and SUMO on the same
    districts: vehicle-steps per second of both (median of 3 runs each).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from bench import counts
from v2x.core import scenario
from v2x.core.messages import LightState
from v2x.core.network import LinkKind
from v2x.core.signal.controller import Mode
from v2x.core.traffic import QUEUE_GAP_S, Light
from v2x.run.offline import OfflineRun

HERE = Path(__file__).resolve().parent
SATURATION = HERE / "scenarios" / "saturation.toml"
WARMUP_S = 600.0  # [s] discarded before measuring delay
CYCLE_S = 60.0  # [s] the Webster approach's cycle
GREEN_S = 27.0  # [s] its green (then 3 s yellow, 0 s all-red; the cross street has the rest)

WEBSTER_TEMPLATE = """
name = "webster"
description = "Isolated fixed-time approach with Poisson arrivals (Webster comparison)"
duration_s = {duration}
seed = {seed}
step_s = {step}

[origin]
lat_deg = 31.4912
lon_deg = 120.3119

[[intersections]]
id = "W"
  [intersections.signal]
  [[intersections.signal.phases]]
  movements = ["west.through", "east.through"]
  green_s = {green}
  yellow_s = 3.0
  all_red_s = 0.0
  min_green_s = 5.0
  [[intersections.signal.phases]]
  movements = ["south.through", "north.through"]
  green_s = {cross_green}
  yellow_s = 3.0
  all_red_s = 0.0
  min_green_s = 5.0
  [[intersections.approaches]]
  leg = "west"
  lanes = 1
  length_m = 400.0
  turns = ["through"]
  [[intersections.approaches]]
  leg = "east"
  lanes = 1
  turns = ["through"]
  [[intersections.approaches]]
  leg = "south"
  lanes = 1
  turns = ["through"]
  [[intersections.approaches]]
  leg = "north"
  lanes = 1
  turns = ["through"]

[[demand]]
intersection = "W"
approach = "west"
vph = {vph}
mix = {{ car = 1.0 }}
"""


def webster_scenario(vph: float, duration: float, seed: int, step: float = 0.1) -> scenario.Scenario:
    text = WEBSTER_TEMPLATE.format(
        vph=vph, duration=duration, seed=seed, step=step, green=GREEN_S, cross_green=CYCLE_S - GREEN_S - 6.0
    )
    return scenario.parse(text, "webster")


def webster_delay(c_s: float, lam: float, q_vps: float, x: float) -> float:
    """Webster (1958): d = c(1-l)^2 / (2(1-lx)) + x^2 / (2q(1-x)) - 0.65 (c/q^2)^(1/3) x^(2+5l)  [s]."""
    return float(
        c_s * (1 - lam) ** 2 / (2 * (1 - lam * x))
        + x**2 / (2 * q_vps * (1 - x))
        - 0.65 * (c_s / q_vps**2) ** (1 / 3) * x ** (2 + 5 * lam)
    )


# ---------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class CoreResult:
    sat_flow_vphpl: float
    mean_delay_s: float  # control delay over the whole route
    line_delay_s: float  # delay up to the stop line
    served_vph: float  # stop-line crossings per hour after the warm-up
    veh_steps_per_s: float
    vehicles: float  # mean vehicles in the network per timed step
    collisions: int
    red_light_entries: int


def run_core(sc: scenario.Scenario, approach: str = "west") -> CoreResult:
    run = OfflineRun(sc)
    tr = run.traffic
    lanes = [lk.id for lk in run.net.links if lk.kind == LinkKind.IN and lk.leg == approach]

    def crossed() -> int:
        return sum(tr.stats.links[lid].served for lid in lanes if lid in tr.stats.links)

    steps = round(sc.duration_s / sc.step_s)
    warm = round(WARMUP_S / sc.step_s)
    veh_steps = 0
    crossed_at_warmup = 0
    t0 = time.perf_counter()
    for k in range(steps):
        if k == warm:
            crossed_at_warmup = crossed()
        veh_steps += tr.n
        run.step()
    wall = time.perf_counter() - t0
    entry = {r for key, rs in run.net.entry_routes.items() if key[1] == approach for r in rs}
    done = [f for f in tr.stats.finished_log if f.route in entry and f.t_enter >= WARMUP_S]
    return CoreResult(
        tr.saturation_flow_vphpl(lanes),
        statistics.fmean(f.delay_s for f in done) if done else math.nan,
        statistics.fmean(f.line_delay_s for f in done) if done else math.nan,
        (crossed() - crossed_at_warmup) * 3600.0 / (sc.duration_s - WARMUP_S),  # stop-line throughput
        veh_steps / wall,
        veh_steps / steps,
        tr.stats.collisions,
        tr.stats.red_light_entries,
    )


# ---------------------------------------------------------------------------
# SUMO
# ---------------------------------------------------------------------------


def sumo_available() -> bool:
    try:
        import libsumo  # noqa: F401
    except ImportError:
        return False
    return True


VEC = {"north": (0, 1), "east": (1, 0), "south": (0, -1), "west": (-1, 0)}
# the leg a vehicle leaves by, per turn and the leg it came from (driving on the right)
EXIT_LEG = {
    "through": {"north": "south", "south": "north", "east": "west", "west": "east"},
    "left": {"north": "east", "east": "south", "south": "west", "west": "north"},
    "right": {"north": "west", "west": "south", "south": "east", "east": "north"},
}
SUMO_TYPES = {"car": "passenger", "truck": "truck", "bus": "bus", "emergency": "emergency"}


def _write_sumo_net(sc: scenario.Scenario, folder: Path) -> Path:
    """A plain-XML network equivalent to a scenario of isolated junctions (every turn, every lane), built with
    netconvert. Ids: junction `J`, edges `J_leg_in` / `J_leg_out`; SUMO counts lanes from the right, we from the median."""
    nodes, edges, conns = ["<nodes>"], ["<edges>"], ["<connections>"]
    for inter in sc.intersections:
        j, cx, cy = inter.id, inter.x_m, inter.y_m
        nodes.append(f'<node id="{j}" x="{cx}" y="{cy}" type="traffic_light"/>')
        for a in inter.approaches:
            dx, dy = VEC[a.leg]
            far = a.length_m + 13.0  # our stop line sits 13 m from the centre
            nodes.append(f'<node id="{j}_{a.leg}" x="{cx + dx * far}" y="{cy + dy * far}" type="priority"/>')
            speed = a.speed_limit_kmh / 3.6
            edges.append(f'<edge id="{j}_{a.leg}_in" from="{j}_{a.leg}" to="{j}" numLanes="{a.lanes}" speed="{speed:.3f}"/>')
            edges.append(f'<edge id="{j}_{a.leg}_out" from="{j}" to="{j}_{a.leg}" numLanes="{a.n_exit_lanes}" speed="{speed:.3f}"/>')
        for a in inter.approaches:
            for k, turns in enumerate(a.turns_by_lane()):
                lane = a.lanes - 1 - k
                for turn in turns:
                    out = inter.approach(EXIT_LEG[turn][a.leg])
                    assert out is not None
                    to_lane = {"left": out.n_exit_lanes - 1, "right": 0}.get(turn, min(lane, out.n_exit_lanes - 1))
                    conns.append(f'<connection from="{j}_{a.leg}_in" to="{j}_{out.leg}_out" fromLane="{lane}" toLane="{to_lane}"/>')
    (folder / "n.nod.xml").write_text("\n".join([*nodes, "</nodes>"]))
    (folder / "n.edg.xml").write_text("\n".join([*edges, "</edges>"]))
    (folder / "n.con.xml").write_text("\n".join([*conns, "</connections>"]))
    net = folder / "n.net.xml"
    subprocess.run(
        [
            "netconvert", "--node-files", str(folder / "n.nod.xml"), "--edge-files", str(folder / "n.edg.xml"),
            "--connection-files", str(folder / "n.con.xml"), "--no-turnarounds", "true",
            "--output-file", str(net), "--no-warnings", "true",
        ],
        check=True,
        capture_output=True,
    )
    return net


def _write_sumo_demand(sc: scenario.Scenario, folder: Path) -> tuple[Path, dict[str, float]]:
    """The same Poisson process as ours (exponential gaps, the scenario's seed), turns and vehicle mix drawn by the
    scenario's shares (a draw only where there is a choice), as explicit vehicles."""
    rng = np.random.default_rng(sc.seed)

    def draw(shares: dict[str, float]) -> str:
        names = list(shares)
        return names[0] if len(names) == 1 else names[int(rng.choice(len(names), p=np.array([shares[n] for n in names])))]

    vehicles = []
    for d in sc.demand:
        inter = next(x for x in sc.intersections if x.id == d.intersection)
        a = inter.approach(d.approach)
        assert a is not None
        t = d.start_s + rng.exponential(3600.0 / d.vph)
        while t < min(d.end_s, sc.duration_s):
            vehicles.append((t, inter.id, d.approach, draw(d.turn_shares(a.turns)), draw({str(k): v for k, v in d.mix.items()})))
            t += rng.exponential(3600.0 / d.vph)
    vehicles.sort()
    # Krauss defaults, with speedDev 0 so free-flow time is the speed limit's, as in ours
    lines = ["<routes>", *(f'<vType id="{k}" vClass="{c}" speedDev="0"/>' for k, c in SUMO_TYPES.items())]
    planned = {}
    for i, (t, j, leg, turn, kind) in enumerate(vehicles):
        vid = f"v{i}"
        planned[vid] = t
        lines.append(
            f'<vehicle id="{vid}" type="{kind}" depart="{t:.2f}" departLane="best" departSpeed="max">'
            f'<route edges="{j}_{leg}_in {j}_{EXIT_LEG[turn][leg]}_out"/></vehicle>'
        )
    lines.append("</routes>")
    path = folder / "r.rou.xml"
    path.write_text("\n".join(lines))
    return path, planned


def _program_our_signals(traci: Any, network: Any, dt: float) -> None:
    """Give every SUMO traffic light our fixed-time controller's cycle as a static program: the state of each of its
    links sampled every step over one cycle, run-length encoded. SUMO then runs it itself (no call per step)."""
    from v2x.core.signal.plans import controllers

    letter = {LightState.PROTECTED_GREEN: "G", LightState.PERMISSIVE_GREEN: "g", LightState.YELLOW: "y"}
    for ig, ctl in zip(network.intersections, controllers(network), strict=True):
        j = ig.spec.id
        groups = []
        for conns in traci.trafficlight.getControlledLinks(j):
            _, leg, _ = conns[0][0].rsplit("_", 1)[0].rsplit("_", 2)  # lane J_leg_in_k
            dest = conns[0][1].rsplit("_", 1)[0].rsplit("_", 2)[1]
            turn = next(t for t, to in EXIT_LEG.items() if to[leg] == dest)
            groups.append(network.group_of(j, leg, turn).group_id)
        if ctl.plan.mode is not Mode.FIXED:
            raise ValueError(f"{j}: SUMO is given fixed-time programs only")
        states = []
        for k in range(round(ctl.plan.cycle_s / dt)):
            ctl.step(k * dt)
            states.append("".join(letter.get(ctl.state(g), "r") for g in groups))
        shown: list[str] = []  # each phase's state, and its duration in steps
        steps: list[int] = []
        for st in states:
            if shown and shown[-1] == st:
                steps[-1] += 1
            else:
                shown.append(st)
                steps.append(1)
        logic = traci.trafficlight.Logic("v2x", 0, 0, [traci.trafficlight.Phase(round(n * dt, 6), st) for n, st in zip(steps, shown, strict=True)])
        traci.trafficlight.setProgramLogic(j, logic)
        traci.trafficlight.setProgram(j, "v2x")


def run_sumo(sc: scenario.Scenario, measure: bool = True, approach: str = "west", from_s: float = 0.0) -> CoreResult:
    """Run SUMO (libsumo) on the equivalent network with our signal timing; vehicle-steps per second from `from_s`."""
    import libsumo as traci

    from v2x.core.network import Network

    j = sc.intersections[0].id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = _write_sumo_net(sc, folder)
        routes, planned = _write_sumo_demand(sc, folder)
        a = sc.intersections[0].approach(approach)
        lanes = a.lanes if a is not None else 0
        loops = "\n".join(
            f'<inductionLoop id="sl{k}" lane="{j}_{approach}_in_{k}" pos="-0.1" period="3600" file="NUL"/>' for k in range(lanes)
        )
        (folder / "d.add.xml").write_text(f"<additional>{loops}</additional>")
        tripinfo = folder / "trips.xml"
        traci.start(
            [
                "sumo", "-n", str(net), "-r", str(routes), "--step-length", str(sc.step_s),
                "--no-step-log", "true", "--no-warnings", "true", "--time-to-teleport", "-1",
                "--tripinfo-output", str(tripinfo), "--end", str(sc.duration_s),
                "--additional-files", str(folder / "d.add.xml"),
            ]
        )
        try:
            _program_our_signals(traci, Network(sc), sc.step_s)
            queued: set[str] = set()
            crossings: dict[int, list[tuple[float, str]]] = {k: [] for k in range(lanes)}
            seen_loop: dict[int, set[str]] = {k: set() for k in range(lanes)}
            steps = round(sc.duration_s / sc.step_s)
            first = round(from_s / sc.step_s)
            veh_steps = 0
            t0 = time.perf_counter()
            for k in range(steps):
                if k == first:
                    veh_steps, t0 = 0, time.perf_counter()
                traci.simulationStep()
                veh_steps += traci.vehicle.getIDCount()
                if not measure:
                    continue
                for q in range(lanes):
                    for vid in traci.lane.getLastStepVehicleIDs(f"{j}_{approach}_in_{q}"):
                        if traci.vehicle.getSpeed(vid) < 0.5:
                            queued.add(vid)
                    for vid, _length, entry, _exit, _type in traci.inductionloop.getVehicleData(f"sl{q}"):
                        if vid not in seen_loop[q] and entry >= 0:
                            seen_loop[q].add(vid)
                            crossings[q].append((entry, vid))
            wall = time.perf_counter() - t0
        finally:
            traci.close()
        headways = _queue_headways(crossings, queued)
        delays = []
        served = 0
        for trip in ET.parse(tripinfo).getroot().iter("tripinfo"):
            if planned[trip.get("id", "")] >= WARMUP_S:
                delays.append(float(trip.get("timeLoss", "nan")) + float(trip.get("departDelay", "0")))
                served += 1
    return CoreResult(
        3600.0 / statistics.fmean(headways) if headways else math.nan,
        statistics.fmean(delays) if delays else math.nan,
        math.nan,
        served * 3600.0 / (sc.duration_s - WARMUP_S),
        veh_steps / wall,
        veh_steps / (steps - first),
        0,
        0,
    )


def _queue_headways(crossings: dict[int, list[tuple[float, str]]], queued: set[str]) -> list[float]:
    """HCM: headways of queued vehicles after the 4th, per lane (the same rule as v2x.core.traffic)."""
    out = []
    for events in crossings.values():
        pos, last = 0, -math.inf
        for t, vid in sorted(events):
            if vid in queued and t - last < QUEUE_GAP_S:
                pos += 1
                if pos >= 5:
                    out.append(t - last)
            else:
                pos = 1 if vid in queued else 0
            last = t
    return out


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def part_saturation(duration: float) -> None:
    print("\n== Saturation flow (HCM queue discharge, veh/h/lane); HCM base 1,900")
    base = scenario.load(SATURATION)
    print(f"{'simulator':<26}{'dt [s]':>8}{'sat. flow':>12}")
    for dt in (0.1, 1.0):
        sc = dataclasses.replace(base, duration_s=duration, step_s=dt)
        r = run_core(sc)
        print(f"{'v2x core (IDM)':<26}{dt:>8.1f}{r.sat_flow_vphpl:>12.0f}")
    if sumo_available():
        for dt in (0.1, 1.0):
            sc = dataclasses.replace(base, duration_s=duration, step_s=dt)
            r = run_sumo(sc)
            print(f"{'SUMO (Krauss defaults)':<26}{dt:>8.1f}{r.sat_flow_vphpl:>12.0f}")


def part_webster(duration: float, seeds: int) -> None:
    print("\n== Mean delay on an isolated fixed-time approach vs Webster (1958)")
    print("   d = c(1-l)^2 / (2(1-lx)) + x^2 / (2q(1-x)) - 0.65 (c/q^2)^(1/3) x^(2+5l)")
    # capacity and saturation flow measured on the same approach, oversaturated
    over = run_core(webster_scenario(1400.0, duration, seed=1))
    cap_vph = over.served_vph
    lam = cap_vph / over.sat_flow_vphpl
    print(f"   measured: saturation flow s = {over.sat_flow_vphpl:.0f} veh/h, capacity = {cap_vph:.0f} veh/h, "
          f"effective green ratio l = capacity/s = {lam:.3f}, cycle c = {CYCLE_S:.0f} s")
    print("   core delay to the stop line (Webster's point-queue delay) and control delay (to the network")
    print("   edge, including speeding back up after the line), mean over seeds")
    print(f"{'x = v/c':>8}{'q [veh/h]':>11}{'Webster [s]':>13}{'to line [s]':>13}{'ratio':>8}{'±20%':>6}"
          f"{'control [s]':>13}{'ratio':>8}")
    for x in (0.3, 0.45, 0.6, 0.75, 0.85):
        q = x * cap_vph
        runs = [run_core(webster_scenario(q, duration, seed=k)) for k in range(1, seeds + 1)]
        line = statistics.fmean(r.line_delay_s for r in runs)
        control = statistics.fmean(r.mean_delay_s for r in runs)
        w = webster_delay(CYCLE_S, lam, q / 3600.0, x)
        ok = abs(line / w - 1) <= 0.2
        print(f"{x:>8.2f}{q:>11.0f}{w:>13.1f}{line:>13.1f}{line / w:>8.2f}{'yes' if ok else 'NO':>6}"
              f"{control:>13.1f}{control / w:>8.2f}")


def part_sumo(duration: float) -> None:
    print("\n== SUMO side by side: the Webster approach at x = 0.75, and the saturation approach")
    if not sumo_available():
        print("   SUMO is not installed: pip install -e '.[sumo]'  (eclipse-sumo and libsumo)")
        return
    over = run_core(webster_scenario(1400.0, duration, seed=1))
    q = 0.75 * over.served_vph
    cases = [
        ("webster x=0.75", webster_scenario(q, duration, seed=1)),
        ("saturation", dataclasses.replace(scenario.load(SATURATION), duration_s=duration)),
    ]
    print(f"{'scenario':<18}{'simulator':<12}{'sat. flow':>11}{'delay [s]':>11}{'veh-steps/s':>14}")
    for name, sc in cases:
        ours = run_core(sc)
        # speed is timed in runs without per-vehicle instrumentation: the median of three
        our_speed = statistics.median(run_core(sc).veh_steps_per_s for _ in range(3))
        theirs = run_sumo(sc)
        their_speed = statistics.median(run_sumo(sc, measure=False).veh_steps_per_s for _ in range(3))
        print(f"{name:<18}{'v2x core':<12}{ours.sat_flow_vphpl:>11.0f}{ours.mean_delay_s:>11.1f}{our_speed:>14,.0f}")
        print(f"{'':<18}{'SUMO':<12}{theirs.sat_flow_vphpl:>11.0f}{theirs.mean_delay_s:>11.1f}{their_speed:>14,.0f}")
        print(f"{'':<18}{'ratio':<12}{'':>11}{'':>11}{our_speed / their_speed:>13.2f}x")
        budget = ours.vehicles / (10.0 * their_speed)
        print(f"{'':<18}{'per step':<12}ours {ours.vehicles / our_speed * 1e6:.1f} us ({ours.vehicles:.1f} vehicles); "
              f"10x SUMO needs <= {budget * 1e6:.2f} us")
        for label, floor in zip(("floor", "floor, lean"), _step_floors_s(sc), strict=True):
            left = budget - floor
            what = "each vehicle's light" if label == "floor" else "lights per signal group only"
            print(f"{'':<18}{label:<12}{floor * 1e6:.2f} us outside the core's own work (controllers, {what}, one call): "
                  + (f"leaves {left * 1e6:.2f} us, {left / ours.vehicles * 1e9:.0f} ns per vehicle" if left > 0
                     else "10x is out of reach even if the core took no time"))


def _step_floors_s(sc: scenario.Scenario, steps: int = 20_000, repeat: int = 3) -> tuple[float, float]:
    """[s] per step of what every step of a run does besides the core's own work, that work taken as zero: the
    controllers advance, the lights are read, and one call hands them to the core (a Python function doing nothing;
    a call into compiled code costs more). Two floors: (each vehicle given the light it sees, the step's signal input
    as the messaging layer feeds it; the lights per signal group only, looked up by the core itself). Timed with the
    vehicles as they stand halfway through the run; the median of `repeat` timings each."""
    run = OfflineRun(sc)
    for _ in range(round(sc.duration_s / run.dt) // 2):
        run.step()
    group, _ = run.traffic.signal_view()
    ahead, g = group >= 0, np.maximum(group, 0)

    def core_step(dt: float, lights: np.ndarray) -> None:
        return None

    t = run.traffic.t
    floors = []
    for per_vehicle in (True, False):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(steps):
                lights = run.lights()
                core_step(run.dt, np.where(ahead, lights[g], Light.NONE) if per_vehicle else lights)
                t += run.dt
                for ctl in run.controllers:
                    ctl.step(t)
            times.append((time.perf_counter() - t0) / steps)
        floors.append(statistics.median(times))
    return floors[0], floors[1]


def _core_speed(sc: scenario.Scenario) -> tuple[float, float, float]:
    """(vehicles, step [ms], veh-steps/s) of the core over the second half of the run (the first fills the network)."""
    run = OfflineRun(sc)
    steps = round(sc.duration_s / run.dt)
    for _ in range(steps // 2):
        run.step()
    veh_steps, t0 = 0, time.perf_counter()
    for _ in range(steps - steps // 2):
        veh_steps += run.traffic.n
        run.step()
    wall = time.perf_counter() - t0
    return veh_steps / (steps - steps // 2), wall / (steps - steps // 2) * 1e3, veh_steps / wall


def part_district(copies_list: tuple[int, ...] = (1, 16, 32, 48, 64), duration: float = 300.0, repeat: int = 3) -> None:
    """The core's speed as the network grows: four_way tiled into districts (v2x.core.scenario.tile), fixed-time signals;
    vehicle-steps per second over the second half of the run, the median of `repeat` runs; beside it SUMO on the same
    district (the same junctions, arrivals, turns, vehicle mix and signal timing), timed the same way."""
    sumo = sumo_available()
    print(f"\n== the core alone on districts of four_way (fixed-time signals, no messaging), median of {repeat} runs"
          + (", and SUMO on the same" if sumo else ""))
    if not sumo:
        print("   (SUMO is not installed, so only the core is timed: pip install -e '.[sumo]')")
    print(f"{'copies':>8}{'vehicles':>10}{'step [ms]':>11}{'veh-steps/s':>14}" + (f"{'SUMO':>14}{'ratio':>8}" if sumo else ""))
    for copies in copies_list:
        sc = scenario.tile(dataclasses.replace(scenario.load(scenario.resolve("four_way")), duration_s=duration), copies)
        runs = sorted((_core_speed(sc) for _ in range(repeat)), key=lambda r: r[2])
        vehicles, step_ms, ours = runs[len(runs) // 2]
        row = f"{copies:>8}{vehicles:>10.0f}{step_ms:>11.2f}{ours:>14,.0f}"
        if sumo:
            half = round(duration / sc.step_s) // 2 * sc.step_s
            sumo_runs = sorted(run_sumo(sc, measure=False, from_s=half).veh_steps_per_s for _ in range(repeat))
            theirs = statistics.median(sumo_runs)
            row += f"{theirs:>14,.0f}{ours / theirs:>7.2f}x"
            spread = (runs[0][2], runs[-1][2], sumo_runs[0], sumo_runs[-1])
        print(row + (f"   (ours {spread[0]:,.0f}-{spread[1]:,.0f}, SUMO {spread[2]:,.0f}-{spread[3]:,.0f})" if sumo else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["saturation", "webster", "sumo", "district"], help="run one part")
    parser.add_argument("--duration", type=float, default=3600.0, help="simulated seconds per run (default 3600)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per Webster point (default 2)")
    parser.add_argument("--copies", type=counts, default=(1, 16, 32, 48, 64),
                        help="district sizes for part district, comma-separated (default 1,16,32,48,64)")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    if args.only in (None, "saturation"):
        part_saturation(args.duration)
    if args.only in (None, "webster"):
        part_webster(args.duration, args.seeds)
    if args.only in (None, "sumo"):
        part_sumo(args.duration)
    if args.only in (None, "district"):
        part_district(args.copies)
    return 0



if __name__ == "__main__":
    sys.exit(main())
