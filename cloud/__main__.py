"""`python -m cloud SCENARIO --broker URL`: run the cloud-control service (also `v2x cloud`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from cloud.service import CloudService, serve
from v2x import scenario
from v2x.errors import BrokerError, ScenarioError
from v2x.network import Network
from v2x.topics import DEFAULT_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x cloud",
        description="Run the cloud-control service for a scenario's region against a broker. Events "
        "(an RSU lost or back) are printed as JSON lines; a summary is printed at the end.",
    )
    parser.add_argument("scenario", help="scenario file (the region and its intersections)")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    parser.add_argument("--epoch", type=float, default=None, help="UTC seconds of sim time 0, shared by every tier of a run (default: now)")
    parser.add_argument("--keepalive", type=int, default=5, help="MQTT keepalive [s]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("gmqtt").setLevel(logging.WARNING)
    try:
        net = Network(scenario.load(args.scenario))
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    started: list[CloudService] = []
    code = 0
    try:
        asyncio.run(serve(net, args.broker, args.duration, args.root, args.keepalive, args.epoch, started))
    except KeyboardInterrupt:
        code = 130  # still print the summary of what was seen
    except BrokerError as e:
        print(f"v2x cloud: {e}", file=sys.stderr)
        return 1
    if not started:
        return code
    svc = started[0]
    summary = {
        "event": "summary",
        "received": dict(svc.counters.received),
        "relayed_spat": svc.counters.relayed_spat,
        "vehicles_seen": len(svc.vehicles),
        "bad_input": dict(svc.counters.bad_input),
    }
    print(json.dumps(summary), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
