"""`v2x fleet SCENARIO --broker URL`: run a scenario's vehicles against a broker, in real time."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from v2x import scenario
from v2x.errors import BrokerError, ScenarioError
from v2x.fleet import Fleet
from v2x.station import Clock
from v2x.topics import DEFAULT_ROOT, Topics


def summary(fleet: Fleet) -> dict[str, Any]:
    st = fleet.traffic.stats
    c = fleet.counters
    return {
        "event": "summary",
        "vehicles": {"spawned": st.spawned, "finished": st.finished, "in_network": fleet.traffic.n},
        "traffic": {
            "mean_delay_s": round(st.mean_delay_s, 2),
            "stops_per_vehicle": round(st.stops_per_vehicle, 3),
            "collisions": st.collisions,
        },
        "messages": {"sent": dict(c.sent), "received": dict(c.received)},
        "spat": {
            "vehicles_approaching": len(c.vehicles_approaching),
            "vehicles_with_spat": len(c.vehicles_with_spat),
            "approaching_without_spat": sorted(c.vehicles_approaching - c.vehicles_with_spat)[:20],
        },
        "bad_input": dict(c.bad_input),
        "connect_failures": c.connect_failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x fleet",
        description="Run a scenario's vehicles in real time against a broker: each vehicle connects as its own "
        "MQTT client, publishes BSMs and drives on the SPaT it receives. Prints a JSON summary at the end.",
    )
    parser.add_argument("scenario", help="scenario file")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--duration", type=float, default=None, help="sim seconds since the epoch to run (default: the scenario's)")
    parser.add_argument("--epoch", type=float, default=None, help="UTC seconds of sim time 0, shared by every tier of a run (default: now)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    parser.add_argument("--mqtt", choices=["auto", "5", "3.1.1"], default="auto", help="MQTT version (default: 5, falling back to 3.1.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        sc = scenario.load(args.scenario)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    fleet = Fleet(sc, args.broker, Topics(args.root), Clock(args.epoch), version=args.mqtt)
    try:
        asyncio.run(fleet.run(args.duration if args.duration is not None else sc.duration_s))
    except KeyboardInterrupt:
        pass
    except BrokerError as e:
        print(f"v2x fleet: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary(fleet)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
