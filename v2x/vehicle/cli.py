"""`v2x fleet SCENARIO --broker URL`: run a scenario's vehicles against a broker, in real time."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from v2x.core.errors import BrokerError, ScenarioError
from v2x.net.options import (
    add_common,
    add_obu_connections_option,
    connection,
    load,
    long_running,
    setup_logging,
    shard_arg,
)
from v2x.vehicle.fleet import Fleet
from v2x.vehicle.summary import FleetSummary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x fleet",
        description="Run a scenario's vehicles in real time against a broker: each vehicle connects as its own "
        "MQTT client, publishes BSMs and drives on the SPaT it receives. Prints a JSON summary at the end.",
    )
    add_common(parser, duration_help="sim seconds since the epoch to run (default: the scenario's duration)", keepalive_s=10)
    parser.add_argument(
        "--shard", type=shard_arg, default=(0, 1), metavar="I/N",
        help="be the OBUs of vehicles whose id %% N == I only (run N fleets, I = 0..N-1, with one --epoch). "
        "Every shard simulates all the traffic from the same seed; other shards' vehicles drive on the SPaT "
        "this shard hears, so the shards' traffic stays alike, though not bit-identical in real time",
    )
    parser.add_argument(
        "--by", choices=["vehicle", "area"], default="vehicle",
        help="shard by vehicle id (default), or by area: shard I simulates and is the OBUs of whole independent "
        "sites only (the scenario's road-connected groups of intersections, dealt round-robin; see --copies), "
        "and hears V2V from its own sites",
    )
    add_obu_connections_option(parser)
    args = parser.parse_args(argv)
    setup_logging(logging.WARNING)
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    try:
        conn = connection(args, "v2x fleet", ("fleet",))
        shared = Fleet.shared_connection(conn, args.shard) if args.obu_connections == "shared" else None
        fleet = Fleet(sc, conn, conn.clock(), shard=args.shard, by_area=args.by == "area", shared=shared)
    except ValueError as e:
        print(f"v2x fleet: {e}", file=sys.stderr)
        return 2
    except ScenarioError as e:  # a SUMO scenario's network or routes
        print("\n".join(e.problems), file=sys.stderr)
        return 2
    long_running()
    try:
        asyncio.run(fleet.run(args.duration if args.duration is not None else sc.duration_s))
    except KeyboardInterrupt:
        pass
    except BrokerError as e:
        print(f"v2x fleet: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "summary", **FleetSummary.of(fleet).to_json()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
