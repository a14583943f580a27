"""Traffic-core benchmark: saturation flow, delay against Webster, and SUMO side by side.

    python -m bench.traffic                 # everything (about 5 minutes)
    python -m bench.traffic --only webster  # one part: saturation | webster | sumo | district

Every figure is measured here, in this run:
  - saturation flow: HCM queue-discharge headways (queued vehicles after the 4th) on an
    oversaturated through-only approach of passenger cars (bench/scenarios/saturation.toml);
  - delay: mean control delay on an isolated fixed-time approach with Poisson arrivals,
    beside Webster's formula evaluated with the saturation flow and capacity measured in
    the same run;
  - SUMO (optional: `pip install eclipse-sumo libsumo`): the same junction, the same
    arrivals and the same signal timing (our controller drives SUMO's signal each step),
    Krauss defaults; saturation flow, mean delay and vehicle-steps per second of both.
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

import numpy as np

from roadside.offline import OfflineRun
from v2x import scenario
from v2x.messages import LightState
from v2x.network import LinkKind
from v2x.traffic import QUEUE_GAP_S

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


def _write_sumo_net(sc: scenario.Scenario, folder: Path) -> Path:
    """A plain-XML network equivalent to a through-only scenario, built with netconvert."""
    inter = sc.intersections[0]
    nodes = ['<nodes>', '<node id="C" x="0" y="0" type="traffic_light"/>']
    edges = ['<edges>']
    conns = ['<connections>']
    vec = {"north": (0, 1), "east": (1, 0), "south": (0, -1), "west": (-1, 0)}
    opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
    for a in inter.approaches:
        dx, dy = vec[a.leg]
        far = a.length_m + 13.0  # our stop line sits 13 m from the centre
        nodes.append(f'<node id="{a.leg}" x="{dx * far}" y="{dy * far}" type="priority"/>')
    for a in inter.approaches:
        speed = a.speed_limit_kmh / 3.6
        edges.append(f'<edge id="{a.leg}_in" from="{a.leg}" to="C" numLanes="{a.lanes}" speed="{speed:.3f}"/>')
        edges.append(f'<edge id="{a.leg}_out" from="C" to="{a.leg}" numLanes="{a.n_exit_lanes}" speed="{speed:.3f}"/>')
    for a in inter.approaches:
        out = inter.approach(opposite[a.leg])
        assert out is not None
        for k in range(a.lanes):
            sumo_lane = a.lanes - 1 - k  # SUMO counts lanes from the right, we from the median
            to_lane = min(sumo_lane, out.n_exit_lanes - 1)
            conns.append(f'<connection from="{a.leg}_in" to="{opposite[a.leg]}_out" fromLane="{sumo_lane}" toLane="{to_lane}"/>')
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
    """The same Poisson process as ours (exponential gaps, the scenario's seed), as explicit vehicles."""
    rng = np.random.default_rng(sc.seed)
    opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
    vehicles = []
    for d in sc.demand:
        t = d.start_s + rng.exponential(3600.0 / d.vph)
        while t < min(d.end_s, sc.duration_s):
            vehicles.append((t, d.approach))
            t += rng.exponential(3600.0 / d.vph)
    vehicles.sort()
    lines = [
        "<routes>",
        # Krauss defaults, with speedDev 0 so free-flow time is the speed limit's, as in ours
        '<vType id="car" vClass="passenger" speedDev="0"/>',
    ]
    planned = {}
    for i, (t, leg) in enumerate(vehicles):
        vid = f"v{i}"
        planned[vid] = t
        lines.append(
            f'<vehicle id="{vid}" type="car" depart="{t:.2f}" departLane="best" departSpeed="max">'
            f'<route edges="{leg}_in {opposite[leg]}_out"/></vehicle>'
        )
    lines.append("</routes>")
    path = folder / "r.rou.xml"
    path.write_text("\n".join(lines))
    return path, planned


def run_sumo(sc: scenario.Scenario, measure: bool = True, approach: str = "west") -> CoreResult:
    """Run SUMO (libsumo) on the equivalent network, our controller driving its signal."""
    import libsumo as traci

    from roadside.plans import controllers
    from v2x.network import Network

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = _write_sumo_net(sc, folder)
        routes, planned = _write_sumo_demand(sc, folder)
        lanes = sc.intersections[0].approach(approach).lanes  # type: ignore[union-attr]
        loops = "\n".join(
            f'<inductionLoop id="sl{k}" lane="{approach}_in_{k}" pos="-0.1" period="3600" file="NUL"/>' for k in range(lanes)
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
            network = Network(sc)
            ctl = controllers(network)[0]
            links = traci.trafficlight.getControlledLinks("C")
            # SUMO signal index -> our signal group (by incoming edge: through only)
            group_of_index = []
            for conns in links:
                leg = conns[0][0].split("_")[0]
                group_of_index.append(network.group_of(sc.intersections[0].id, leg, "through").group_id)
            letter = {
                LightState.PROTECTED_GREEN: "G", LightState.PERMISSIVE_GREEN: "g", LightState.YELLOW: "y",
            }
            queued: set[str] = set()
            crossings: dict[int, list[tuple[float, str]]] = {k: [] for k in range(lanes)}
            seen_loop: dict[int, set[str]] = {k: set() for k in range(lanes)}
            steps = round(sc.duration_s / sc.step_s)
            veh_steps = 0
            t0 = time.perf_counter()
            for _ in range(steps):
                traci.trafficlight.setRedYellowGreenState(
                    "C", "".join(letter.get(ctl.state(g), "r") for g in group_of_index)
                )
                traci.simulationStep()
                ctl.step(traci.simulation.getTime())
                veh_steps += traci.vehicle.getIDCount()
                if not measure:
                    continue
                for k in range(lanes):
                    for vid in traci.lane.getLastStepVehicleIDs(f"{approach}_in_{k}"):
                        if traci.vehicle.getSpeed(vid) < 0.5:
                            queued.add(vid)
                    for vid, _length, entry, _exit, _type in traci.inductionloop.getVehicleData(f"sl{k}"):
                        if vid not in seen_loop[k] and entry >= 0:
                            seen_loop[k].add(vid)
                            crossings[k].append((entry, vid))
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
        0,
        0,
    )


def _queue_headways(crossings: dict[int, list[tuple[float, str]]], queued: set[str]) -> list[float]:
    """HCM: headways of queued vehicles after the 4th, per lane (the same rule as v2x.traffic)."""
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
        print("   SUMO is not installed: pip install eclipse-sumo libsumo")
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


def part_district(duration: float = 300.0) -> None:
    """The core's speed as the network grows: four_way tiled into districts (v2x.scenario.tile), lights from
    the controllers; vehicle-steps per second over the second half of the run (the first fills the network)."""
    print("\n== the core alone on districts of four_way (fixed-time signals, no messaging)")
    print(f"{'copies':>8}{'vehicles':>10}{'step [ms]':>11}{'veh-steps/s':>14}")
    for copies in (1, 16, 64):
        run = OfflineRun(scenario.tile(dataclasses.replace(scenario.load(scenario.resolve("four_way")), duration_s=duration), copies))
        steps = round(duration / run.dt)
        for _ in range(steps // 2):
            run.step()
        veh_steps, t0 = 0, time.perf_counter()
        for _ in range(steps - steps // 2):
            veh_steps += run.traffic.n
            run.step()
        wall = time.perf_counter() - t0
        print(f"{copies:>8}{veh_steps / (steps - steps // 2):>10.0f}{wall / (steps - steps // 2) * 1e3:>11.2f}{veh_steps / wall:>14,.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["saturation", "webster", "sumo", "district"], help="run one part")
    parser.add_argument("--duration", type=float, default=3600.0, help="simulated seconds per run (default 3600)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per Webster point (default 2)")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    if args.only in (None, "saturation"):
        part_saturation(args.duration)
    if args.only in (None, "webster"):
        part_webster(args.duration, args.seeds)
    if args.only in (None, "sumo"):
        part_sumo(args.duration)
    if args.only in (None, "district"):
        part_district()
    return 0


if __name__ == "__main__":
    sys.exit(main())
