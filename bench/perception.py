"""What roadside sensors and the cloud's fusion cost: four_way in fast mode, sensors off and on, in the same run.

    python -m bench.perception                          # 3 pairs x 300 s of sim time
    python -m bench.perception --repeats 5 --duration 600

Each pair runs `v2x run four_way --fast` twice, as it is and with a radar and a camera on its RSU
(`SENSORS`), alternating so that a change in the machine's load falls on both; each run's wall time and
CPU time (user + sys of the run and its broker) are measured here. It prints the medians and the ratios on/off,
and the fusion's score from the last run with sensors. The acceptance (issue #26): sensors and fusion add at most
20% to the fast-mode wall time, i.e. a wall ratio of at most 1.20.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2x.core.scenario import resolve

SENSORS = """
[[sensors]]
rsu = "RSU-J1"
type = "radar"

[[sensors]]
rsu = "RSU-J1"
type = "camera"
"""


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(scenario: Path, duration: float, report: Path) -> tuple[float, float]:
    """(wall [s], CPU [s]) of one fast run."""
    cmd = [sys.executable, "-m", "v2x", "run", str(scenario), "--headless", "--fast", "--duration", f"{duration:g}",
           "--report", str(report)]
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0, _children_cpu_s() - cpu0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perception", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs, off and on (default 3)")
    p.add_argument("--duration", type=float, default=300.0, help="sim seconds per run (default 300)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-perception-"))
    off = resolve("four_way")
    on = tmp / "four_way_sensors.toml"
    on.write_text(off.read_text() + SENSORS)
    times: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for k in range(args.repeats):
        for name, path in (("off", off), ("on", on)) if k % 2 == 0 else (("on", on), ("off", off)):
            wall, cpu = run_once(path, args.duration, tmp / f"{name}-{k}.json")
            times[name].append((wall, cpu))
            print(f"pair {k + 1}/{args.repeats} sensors {name:3}: wall {wall:7.2f} s  cpu {cpu:7.2f} s", flush=True)
    med = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}
    print(f"\nfour_way, fast mode, {args.duration:g} s of sim time, median of {args.repeats}")
    print(f"{'':12}{'wall s':>10}{'cpu s':>10}")
    for name in ("off", "on"):
        print(f"{'sensors ' + name:12}{med[name][0]:>10.2f}{med[name][1]:>10.2f}")
    print(f"{'ratio on/off':12}{med['on'][0] / med['off'][0]:>10.3f}{med['on'][1] / med['off'][1]:>10.3f}   (acceptance: wall <= 1.20)")
    fusion = json.loads((tmp / f"on-{args.repeats - 1}.json").read_text())["perception"]["fusion"]
    print(f"\nfusion (last run with sensors): {fusion['detections']} detections, matched share {fusion['matched_share']}, "
          f"equipped match rate {fusion['equipped']['match_rate']}, ghosts {fusion['ghosts']}, misses {fusion['misses']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
