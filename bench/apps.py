"""What the vehicle applications do to traffic and safety, measured with the same seeds.

    python -m bench.apps                       # about 30 minutes on 2 cores
    python -m bench.apps --seeds 2 --duration 600

- GLOSA on the corridor: `v2x sweep corridor --set fleet.glosa=false,true` (fast mode, the
  same seeds on and off): stops per vehicle and mean delay, median across seeds, and the
  change with GLOSA.
- HLW on hazard.toml, per seed: vehicles that reached the stalled vehicle, how many of them
  were warned before, the lead time (p50, minimum) and collisions with it.
- Signal priority on emergency.toml, with and without (`control.priority=true,false`), per
  seed: the ambulance's time from its first request (250 m out) to crossing the stop line,
  its travel time through the network, its stops, and the RSU's actions.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def sweep(out: Path, scenario: str, axis: str, seeds: int, duration: float, jobs: int) -> list[dict[str, str]]:
    cmd = [sys.executable, "-m", "v2x", "sweep", scenario, "--set", axis, "--seeds", str(seeds),
           "--duration", f"{duration:g}", "--jobs", str(jobs), "--out", str(out)]
    print("run:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return list(csv.DictReader((out / "sweep.csv").open()))


def sweep_args(prog: str, doc: str, argv: list[str] | None) -> argparse.Namespace:
    """--seeds, --duration and --jobs, the options of a benchmark made of sweeps."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
    p.add_argument("--duration", type=float, default=900.0, help="sim seconds per run (default 900)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = sweep_args("python -m bench.apps", __doc__, argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-apps-"))

    rows = sweep(tmp / "glosa", "corridor", "fleet.glosa=false,true", args.seeds, args.duration, args.jobs)
    print(f"\nGLOSA on corridor, {args.seeds} seeds x {args.duration:g} s, fast mode (median across seeds)")
    print(f"{'':14}{'stops/veh':>11}{'delay s':>10}")
    med = {}
    for on in ("false", "true"):
        got = [r for r in rows if r["fleet.glosa"] == on]
        med[on] = (statistics.median(float(r["stops_per_vehicle"]) for r in got),
                   statistics.median(float(r["mean_delay_s"]) for r in got))
        print(f"{'GLOSA ' + ('on' if on == 'true' else 'off'):14}{med[on][0]:>11.3f}{med[on][1]:>10.2f}")
    print(f"{'change':14}{(med['true'][0] / med['false'][0] - 1) * 100:>10.1f}%{(med['true'][1] / med['false'][1] - 1) * 100:>9.1f}%")

    sweep(tmp / "hazard", "hazard", "fleet.glosa=false", args.seeds, args.duration, args.jobs)
    print(f"\nHLW on hazard.toml, {args.seeds} seeds x {args.duration:g} s, fast mode")
    print(f"{'seed':>5}{'reached':>9}{'unwarned':>10}{'lead p50 s':>12}{'lead min s':>12}{'warned first/last ms':>22}{'hit it':>8}")
    for f in sorted((tmp / "hazard" / "runs").glob("*.json")):
        r = json.loads(f.read_text())
        (h,) = r["events"]["hazard_warning_ms"]["per_hazard"]
        hlw = r["apps"]["hlw"]
        print(f"{r['seed']:>5}{h['reached']:>9}{h['reached_unwarned']:>10}{hlw['lead_time_s_p50']!s:>12}"
              f"{hlw['lead_time_s_min']!s:>12}{str(h['first_ms']) + ' / ' + str(h['last_ms']):>22}"
              f"{r['traffic']['collisions_with_obstacles']:>8}")
    sweep(tmp / "emergency", "emergency", "control.priority=true,false", args.seeds, 240.0, args.jobs)
    print(f"\nSignal priority on emergency.toml, {args.seeds} seeds x 240 s, fast mode")
    print(f"{'seed':>5}{'priority':>10}{'approach s':>12}{'travel s':>10}{'stops':>7}   RSU actions")
    for f in sorted((tmp / "emergency" / "runs").glob("*.json")):
        r = json.loads(f.read_text())
        e = r["emergency"]
        (x,), (ev,) = e["crossings"], e["vehicles"]
        actions = sorted({a["action"] for a in e["rsu_log"] if a.get("action") not in (None, "none")}) or ["none"]
        print(f"{r['seed']:>5}{'on' if e['priority_policy'] else 'off':>10}{x['seconds']:>12}{ev['travel_s']:>10}{ev['stops']:>7}   "
              + ", ".join(actions))
    print(f"\n(runs kept in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
