"""A garbage flood in the middle of a real-time run: does the fleet keep its 10 Hz tick, and is every drop counted?

    python -m bench.flood                          # four_way, 40 s, 50,000 garbage SPaT at 20 s, 3 rounds
    python -m bench.flood --messages 100000 --rounds 1

Each round runs the scenario twice on the project's own Mosquitto, one after the other: once as it
is (the reference) and once with an outside client publishing `--messages` random 80-byte payloads
as fast as it can, `--at` seconds in, on the RSU SPaT topic every vehicle near the junction listens
to. Printed per run: the fleet's steps started a whole step late and the most a step was late (the
report's `fleet_tick`), the garbage the fleet parsed (its bad input: malformed, empty) and what its
connections dropped unparsed (`dropped.fleet.transport_in`), and the cloud's; then the medians over
the rounds and the flooded run's figures against the reference's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import apply_scheduling
from v2x.core.network import Network
from v2x.core.scenario import bundled_dir, load
from v2x.core.topics import Topics
from v2x.net.broker import MosquittoBroker
from v2x.net.options import add_scheduling_option
from v2x.net.transport import MqttTransport


async def _flood(url: str, topic: str, n: int) -> float:
    """Publish `n` garbage payloads on `topic`; the seconds it took."""
    t0 = time.monotonic()
    async with MqttTransport(url, f"bench-flood-{os.getpid()}", outbox=n + 10) as t:
        for k in range(n):
            t.publish(topic, os.urandom(80))
            if k % 1000 == 999:
                await asyncio.sleep(0)
        await t.drain(60.0)
    return time.monotonic() - t0


def _run(args: argparse.Namespace, flood: bool, tmp: Path) -> dict[str, Any]:
    scenario = str(bundled_dir() / f"{args.scenario}.toml")
    root = f"bench-flood-{os.getpid()}-{int(flood)}/v2x/v1"
    topic = Topics(root).spat("rsu", Network(load(scenario)).tiles[0], load(scenario).intersections[0].id)
    report = tmp / f"r{int(flood)}.json"
    broker = MosquittoBroker().start()
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "v2x", "run", scenario, "--headless", "--duration", f"{args.duration:g}", "--broker", broker.url,
             "--root", root, "--report", str(report), *args.sched],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        took = None
        if flood:
            time.sleep(args.at + 3.0)  # the run's tiers start 3 s before its sim time 0
            took = asyncio.run(_flood(broker.url, topic, args.messages))
        _, err = run.communicate(timeout=args.duration + 120)
        if run.returncode != 0:
            raise SystemExit(f"the run failed ({run.returncode}): {err[-2000:]}")
    finally:
        broker.stop()
    r = json.loads(report.read_text())
    tick = r["fleet_tick"]
    return {
        "late steps": sum(row[4] for row in tick),
        "max lag ms": max(row[1] for row in tick),
        "fleet parsed": sum(r["bad_input"]["fleet"].get(k, 0) for k in ("malformed", "empty")),
        "fleet dropped": r["dropped"]["fleet"].get("transport_in", 0),
        "cloud parsed": sum(r["bad_input"]["cloud"].get(k, 0) for k in ("malformed", "empty")),
        "cloud dropped": r["dropped"].get("cloud", {}).get("transport_in", 0),
        "flood s": took,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="four_way", help="a bundled scenario (default: four_way)")
    p.add_argument("--duration", type=float, default=40.0, help="sim seconds per run (default: 40)")
    p.add_argument("--at", type=float, default=20.0, help="sim second at which the flood starts (default: 20)")
    p.add_argument("--messages", type=int, default=50_000, help="garbage messages in the flood (default: 50,000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each a reference run and a flooded run (default: 3)")
    add_scheduling_option(p, "the runs' processes and their brokers")
    args = p.parse_args(argv)
    args.sched = apply_scheduling(args)  # each run gets the policy this process has, and its brokers
    if not args.at < args.duration:
        p.error("--at must be before the end of the run (--duration)")
    rows: dict[str, list[dict[str, Any]]] = {"reference": [], "flooded": []}
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as d:
        for k in range(args.rounds):
            for name, flood in (("reference", False), ("flooded", True)):
                print(f"round {k + 1}/{args.rounds}: {name} run ({args.duration:g} s real time)...", file=sys.stderr, flush=True)
                rows[name].append(_run(args, flood, Path(d)))
                print(f"  {name}: {rows[name][-1]}", flush=True)
    print(f"\n{args.scenario}, {args.duration:g} s real time, {args.messages:,} garbage SPaT at {args.at:g} s; medians of {args.rounds}")
    keys = ["late steps", "max lag ms", "fleet parsed", "fleet dropped", "cloud parsed", "cloud dropped"]
    med = {name: {key: statistics.median(r[key] for r in rs) for key in keys} for name, rs in rows.items()}
    print(f"  {'':14}" + "".join(f"{key:>15}" for key in keys))
    for name in rows:
        print(f"  {name:14}" + "".join(f"{med[name][key]:>15,.0f}" for key in keys))
    ref, fl = med["reference"], med["flooded"]
    print(f"  flooded - reference: {fl['late steps'] - ref['late steps']:+.0f} late steps, max lag {fl['max lag ms'] - ref['max lag ms']:+.0f} ms; "
          f"the fleet parsed {fl['fleet parsed'] / max(fl['fleet parsed'] + fl['fleet dropped'], 1):.1%} of the garbage it got")
    return 0


if __name__ == "__main__":
    sys.exit(main())
