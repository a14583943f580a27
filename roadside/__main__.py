"""`python -m roadside SCENARIO --broker URL`: run the RSUs of a scenario (also `v2x roadside`)."""

from __future__ import annotations

import argparse
import sys

from roadside.service import RsuService, serve
from v2x.net.options import add_common, connection, load, run_service, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x roadside",
        description="Run the roadside units of a scenario against a broker: each RSU runs its intersection's "
        "signal controller and publishes MAP (retained), SPaT and RSM at 10 Hz and a retained status with a Last Will. "
        "Prints one JSON summary line per RSU at the end.",
    )
    add_common(parser, "MQTT keepalive [s]; the broker publishes the Will after 1.5x this")
    parser.add_argument("--intersection", action="append", help="run only this intersection's RSU (repeatable)")
    args = parser.parse_args(argv)
    setup_logging()
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    ids = list(sc.sites)
    wanted = args.intersection or ids
    unknown = sorted(set(wanted) - set(ids))
    if unknown:
        print(f"{args.scenario}: no intersection {unknown} (expected one of {ids})", file=sys.stderr)
        return 2
    started: list[RsuService] = []
    indices = [ids.index(w) for w in wanted]
    return run_service(
        "v2x roadside",
        serve(sc, connection(args, "v2x roadside", ("rsu",)), indices, args.duration, started),
        started,
    )


if __name__ == "__main__":
    sys.exit(main())
