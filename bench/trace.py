"""Fingerprint of the traffic core's behaviour: a hash of its state after every step.

    python -m bench.trace before.json                 # on the commit you trust
    python -m bench.trace after.json --compare before.json

Each bundled scenario runs offline (perfect information, fixed-time or its own controllers)
for 600 s, and four_way tiled 16 times for 300 s; after every step the hash takes in every
vehicle's id, position, speed, acceleration, link index, route and stop count, and at the end
the run's statistics (collisions, red-light entries, finished vehicles, delay, stops, and per
lane the vehicles served, the longest queue and the discharge headways). A change meant only
to make the core faster must leave every fingerprint as it was; a change of behaviour changes
them. With --compare, exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

from v2x.core import scenario
from v2x.run.offline import OfflineRun

DISTRICT = ("four_way", 16, 300.0)  # scenario, copies, simulated seconds


def fingerprint(sc: scenario.Scenario) -> tuple[str, int, int]:
    """(hash, collisions, finished vehicles) of an offline run of `sc` for its duration."""
    run = OfflineRun(sc)
    h = hashlib.sha256()
    for _ in range(round(sc.duration_s / sc.step_s)):
        run.step()
        tr = run.traffic
        for arr in (tr.ids, tr.s, tr.v, tr.a, tr.link_idx, tr.route, tr.stops):
            h.update(arr.tobytes())
    st = run.traffic.stats
    h.update(repr((
        st.collisions, sorted(st.collision_pairs), st.red_light_entries, st.finished, st.delay_sum_s, st.stops_sum,
        sorted((k, v.served, v.max_queue, v.discharge_headways_s) for k, v in st.links.items()),
    )).encode())
    return h.hexdigest()[:16], st.collisions, st.finished


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="where to write the fingerprints (JSON: name -> hash)")
    ap.add_argument("--compare", type=Path, metavar="JSON", help="fingerprints from an earlier run to hold these against")
    args = ap.parse_args(argv)
    bundled = [scenario.load(p) for p in scenario.bundled()]
    runs = {sc.name: dataclasses.replace(sc, duration_s=600.0) for sc in bundled if sc.mobility == "native"}  # the core's
    name, copies, duration = DISTRICT
    runs[f"{name}_x{copies}"] = scenario.tile(
        dataclasses.replace(scenario.load(scenario.resolve(name)), duration_s=duration), copies
    )
    before: dict[str, str] = {}
    if args.compare:
        try:
            before = json.loads(args.compare.read_text())
        except (OSError, ValueError) as e:
            ap.error(f"--compare {args.compare}: cannot read it as fingerprints ({e})")
        if not isinstance(before, dict):
            ap.error(f"--compare {args.compare}: expected a JSON object of name -> hash, got {type(before).__name__}")
    out, differ = {}, []
    for key, sc in runs.items():
        digest, collisions, finished = fingerprint(sc)
        out[key] = digest
        verdict = ""
        if key in before:
            verdict = "  same" if before[key] == digest else f"  DIFFERS (was {before[key]})"
            differ += [key] if before[key] != digest else []
        print(f"{key:<16} {digest}  {sc.duration_s:.0f} s, {finished} finished, {collisions} collisions{verdict}", flush=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    if args.compare:
        missing = sorted(set(before) - set(out))
        print(f"{len(out) - len(differ)} of {len(out)} the same" + (f"; not run here: {', '.join(missing)}" if missing else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
