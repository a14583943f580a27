"""Misbehaviour detection: detection and false-positive rates per attack type, on four_way with no hazards.

    python -m bench.misbehaviour                     # 6 attacks + a run with none, 600 s each, fast mode
    python -m bench.misbehaviour --duration 300 --share 0.2
    python -m bench.misbehaviour --gnss standard     # every OBU with a standard receiver's GNSS error ([fleet.gnss])

Each run is four_way (no hazard events) with one `[[attacks]]` entry: a share of the vehicles
(10% by default, drawn from the seed) lie in their BSMs from t = 0 as the attack says
(v2x/attacks.py: the VeReMi types and a Sybil ghost). The cloud's detector (cloud/misbehaviour.py)
sees every BSM through Mosquitto; the report scores it against the fleet's truth: an attacker is
detected if the cloud flagged it, an honest vehicle is a false positive if the cloud flagged it
(senders heard at least 10 times). Targets: detection >= 95%, false positives <= 1%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from v2x.core import scenario

KINDS = ["constant_position", "constant_offset", "random_position", "random_offset", "eventual_stop", "sybil"]


def _run(kind: str | None, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    base = scenario.load(scenario.resolve("four_way"))
    attacks = () if kind is None else (scenario.Attack(kind, args.share),)  # type: ignore[arg-type]
    fleet = dataclasses.replace(base.fleet, gnss=scenario.Gnss(args.gnss, rtk_share=args.rtk_share))
    sc = dataclasses.replace(base, attacks=attacks, events=(), seed=args.seed, fleet=fleet)
    path = tmp / f"{kind or 'none'}.toml"
    path.write_text(scenario.dumps(sc))
    report = tmp / f"{kind or 'none'}.json"
    subprocess.run([sys.executable, "-m", "v2x", "run", str(path), "--fast", "--headless", "--duration", f"{args.duration:g}",
                    "--report", str(report)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, Any] = json.loads(report.read_text())["misbehaviour"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.misbehaviour", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="sim seconds per run (default 600)")
    p.add_argument("--share", type=float, default=0.1, help="share of vehicles attacking (default 0.1)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    p.add_argument("--gnss", choices=["off", "standard", "rtk"], default="off", help="the OBUs' GNSS receivers (default off)")
    p.add_argument("--rtk-share", type=float, default=0.0, help="share of OBUs with RTK receivers instead (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mb-"))
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip([None, *KINDS], pool.map(lambda k: _run(k, args, tmp), [None, *KINDS]), strict=True))
    gnss = "exact positions" if args.gnss == "off" else f"GNSS {args.gnss} receivers, {args.rtk_share:.0%} RTK"
    print(f"four_way, no hazards, {args.duration:g} s fast, seed {args.seed}, {args.share:.0%} of vehicles attacking, {gnss}")
    print(f"{'attack':18} {'attackers':>9} {'detected':>8} {'rate':>7}   {'honest':>6} {'false +':>7} {'FP rate':>8}")
    for kind, r in results.items():
        honest = r["honest"]
        a = r["by_attack"].get(kind or "", {"attackers": 0, "detected": 0, "rate": float("nan")})
        print(f"{kind or '(none)':18} {a['attackers']:9d} {a['detected']:8d} {a['rate']:7.1%}   "
              f"{honest['vehicles']:6d} {honest['false_positives']:7d} {honest['rate']:8.2%}")
        for sid, why in list(honest["listed"].items())[:3]:
            print(f"    false positive {sid}: {why}")
    print(f"reports: {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
