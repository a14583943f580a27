"""`python -m roadside SCENARIO --broker URL`: run the RSUs of a scenario (also `v2x roadside`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from roadside.service import serve
from v2x import scenario
from v2x.errors import BrokerError, ScenarioError
from v2x.topics import DEFAULT_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x roadside",
        description="Run the roadside units of a scenario against a broker: each RSU runs its intersection's "
        "signal controller and publishes MAP (retained), SPaT at 10 Hz and a retained status with a Last Will.",
    )
    parser.add_argument("scenario", help="scenario file")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--intersection", action="append", help="run only this intersection's RSU (repeatable)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    parser.add_argument("--epoch", type=float, default=None, help="UTC seconds of sim time 0, shared by every tier of a run (default: now)")
    parser.add_argument("--keepalive", type=int, default=5, help="MQTT keepalive [s]; the broker publishes the Will after 1.5x this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("gmqtt").setLevel(logging.WARNING)
    try:
        sc = scenario.load(args.scenario)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    ids = [x.id for x in sc.intersections]
    wanted = args.intersection or ids
    unknown = sorted(set(wanted) - set(ids))
    if unknown:
        print(f"{args.scenario}: no intersection {unknown} (expected one of {ids})", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(sc, args.broker, [ids.index(w) for w in wanted], args.duration, args.root, args.keepalive, args.epoch))
    except KeyboardInterrupt:
        return 130
    except BrokerError as e:
        print(f"v2x roadside: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
