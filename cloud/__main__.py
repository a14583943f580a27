"""`python -m cloud SCENARIO --broker URL`: run the cloud-control service (also `v2x cloud`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from cloud.service import CloudService, serve
from v2x.errors import BrokerError
from v2x.network import Network
from v2x.tier_args import add_common, load, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x cloud",
        description="Run the cloud-control service for a scenario's region against a broker. Events "
        "(an RSU lost or back) are printed as JSON lines; a summary is printed at the end.",
    )
    add_common(parser)
    args = parser.parse_args(argv)
    setup_logging()
    sc = load(args.scenario, args.set, args.seed)
    if sc is None:
        return 2
    net = Network(sc)
    started: list[CloudService] = []
    code = 0
    try:
        asyncio.run(serve(net, args.broker, args.duration, args.root, args.keepalive, args.epoch, started, args.impair))
    except KeyboardInterrupt:
        code = 130  # still print the summary of what was seen
    except BrokerError as e:
        print(f"v2x cloud: {e}", file=sys.stderr)
        return 1
    for svc in started:
        print(json.dumps({"event": "summary", **svc.summary()}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
