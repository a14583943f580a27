"""How much latency does the simulator add on top of the broker? Measured in one run.

    python -m bench.latency_overhead                 # about 4 minutes
    python -m bench.latency_overhead --duration 120 --vph 1600

Runs `v2x run four_way` in real time with impairment off, scaled up (longer approaches,
more demand) to about 200 vehicles at 10 Hz, on a private Mosquitto. While it runs, and
through the same broker, a raw gmqtt publisher sends BSM-sized messages at the fleet's BSM
rate to a raw gmqtt subscriber in other processes (bench.transport's pair). It prints the
report's vehicle->cloud BSM latency (p50, p99) beside the raw pair's, with the ratios: what
our transport, codec, fleet and cloud add to what the broker takes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import apply_scheduling
from bench.transport import SubResult, measure
from v2x.net.broker import MosquittoBroker
from v2x.net.options import add_scheduling_option

APPROACHES = 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.latency_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=240.0, help="sim seconds of the real-time run (default 240)")
    p.add_argument("--vph", type=float, default=1200.0, help="demand per approach (default 1200)")
    p.add_argument("--length", type=float, default=700.0, help="approach length [m] (default 700)")
    p.add_argument("--raw-s", type=float, default=60.0, help="seconds of raw traffic, at the end of the run (default 60)")
    add_scheduling_option(p, "every process of the benchmark (the run's, the raw pair's, the broker)")
    args = p.parse_args(argv)
    sched = apply_scheduling(args)

    sets = [f"intersections.0.approaches.{i}.length_m={args.length:g}" for i in range(APPROACHES)]
    sets += [f"demand.{i}.vph={args.vph:g}" for i in range(APPROACHES)]
    report_path = Path(tempfile.mkdtemp()) / "r.json"
    with MosquittoBroker() as broker:
        cmd = [
            sys.executable, "-m", "v2x", "run", "four_way", "--broker", broker.url, "--no-impairment", "--headless",
            "--duration", f"{args.duration:g}", "--report", str(report_path), *(x for s in sets for x in ("--set", s)), *sched,
        ]
        print("run:", " ".join(cmd[1:]), flush=True)
        t0 = time.monotonic()
        run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # the raw pair at the fleet's BSM rate once it is near full: its vehicles x 10 Hz, estimated from demand
        rate = min(APPROACHES * args.vph / 3600.0 * (2 * args.length / 13.9 + 30.0), 400.0) * 10.0
        raw: list[SubResult] = []
        start_raw = max(args.duration - args.raw_s - 5.0, 0.0) + 2.0
        time.sleep(start_raw)
        worker = threading.Thread(
            target=lambda: raw.append(measure("gmqtt", broker.port or 0, 0, int(rate * args.raw_s), rate, "overhead")), daemon=True
        )
        worker.start()
        _, err = run.communicate(timeout=args.duration + 300)
        worker.join(timeout=120)
        wall = time.monotonic() - t0
    if run.returncode != 0:
        print(f"the run failed (exit {run.returncode}):\n{err[-3000:]}", file=sys.stderr)
        return 1
    if not raw:
        print("the raw pair did not finish", file=sys.stderr)
        return 1
    r = json.loads(report_path.read_text())
    ours = r["latency_ms_by_type"]["bsm"]["vehicle->cloud"]
    lat_ms = raw[0].latencies_ns / 1e6
    raw50, raw99 = float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 99))
    bsm_rate = r["messages"]["bsm"]["sent"] / r["duration_s"]
    print(f"\nfour_way scaled up, {r['duration_s']:g} s real time ({wall:.0f} s wall), private Mosquitto, impairment off")
    print(f"vehicles: {r['vehicles']['spawned']} spawned, {r['vehicles']['in_network']} in the network at the end; "
          f"BSM {bsm_rate:.0f}/s on average; raw pair at {rate:.0f}/s for the last {args.raw_s:g} s "
          f"({raw[0].received} of {int(rate * args.raw_s)} delivered)")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'BSM vehicle->cloud (report)':28}{ours['p50']:>10.3f}{ours['p99']:>10.3f}")
    print(f"{'raw gmqtt pub->sub':28}{raw50:>10.3f}{raw99:>10.3f}")
    print(f"{'ratio':28}{ours['p50'] / raw50:>10.2f}{ours['p99'] / raw99:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
