"""`v2x fleet SCENARIO --broker URL`: run a scenario's vehicles against a broker, in real time."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from v2x.apps import MAX_EVENTS_KEPT
from v2x.errors import BrokerError
from v2x.fleet import Fleet
from v2x.impair import Impairment
from v2x.station import Clock
from v2x.tier_args import add_common, credentials, load, setup_logging, signing_ca
from v2x.topics import Topics
from v2x.traffic import EMERGENCY


def summary(fleet: Fleet) -> dict[str, Any]:
    st = fleet.traffic.stats
    c = fleet.counters
    return {
        "event": "summary",
        "vehicles": {"spawned": st.spawned, "finished": st.finished, "in_network": fleet.traffic.n},
        "shard": {"index": fleet.shard[0], "of": fleet.shard[1], "obus": fleet.obus},
        "traffic": {
            "throughput_vph": round(st.finished / max(fleet.traffic.t, 1e-9) * 3600.0, 1),
            "mean_delay_s": round(st.mean_delay_s, 2),
            "stops_per_vehicle": round(st.stops_per_vehicle, 3),
            # counted against the controllers' true state, which only an in-process run has
            "red_light_violations": st.red_light_entries if fleet.truth is not None else None,
            "collisions": st.collisions,
            "collisions_with_obstacles": st.obstacle_collisions,
        },
        "messages": {"sent": dict(c.sent), "received": dict(c.received)},
        "apps": fleet.apps.summary(),
        "app_events": {
            "listed": [w.to_json() for w in fleet.apps.warnings[:MAX_EVENTS_KEPT]],
            "not_listed": max(len(fleet.apps.warnings) - MAX_EVENTS_KEPT, 0),
        },
        "hazard_warning_ms": fleet.hazard_watch.summary(fleet.apps.warnings),
        "emergency": {
            "vehicles": [
                {"vehicle": f"veh-{f.vid}", "travel_s": round(f.travel_s, 2), "delay_s": round(f.delay_s, 2), "stops": f.stops}
                for f in st.finished_log if f.kind == EMERGENCY
            ],
            "still_driving": [f"veh-{int(v)}" for v, k in zip(fleet.traffic.ids, fleet.traffic.kind, strict=True) if k == EMERGENCY],
            "crossings": fleet.priority.crossings,
            "priority_events": fleet.priority.events[:MAX_EVENTS_KEPT],
        },
        "spat": {
            "vehicles_approaching": len(c.vehicles_approaching),
            "vehicles_with_spat": len(c.vehicles_with_spat),
            "approaching_without_spat": sorted(c.vehicles_approaching - c.vehicles_with_spat)[:20],
        },
        "bad_input": dict(fleet.bad.counts),
        "connection": fleet.connection(),
        "attackers": {} if fleet.attacks is None else dict(sorted(fleet.attacks.assigned.items())),
        "measurements": fleet.reception.measure.to_json(),
        "link_drops": {**fleet.reception.link_drops(), "arrived_after_leaving": c.arrived_after_leaving},
        "dropped": {
            "bsm_not_connected": c.bsm_not_connected,
            "bsm_not_sent": c.bsm_not_sent,
            "transport_out": c.dropped_out,
            "transport_in": c.dropped_in,
        },
        "connect_failures": c.connect_failures,
        "resubscriptions": c.resubscriptions,
        "subscribe_failures": c.subscribe_failures,
    }


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 0/2)") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= I < N")
    return i, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x fleet",
        description="Run a scenario's vehicles in real time against a broker: each vehicle connects as its own "
        "MQTT client, publishes BSMs and drives on the SPaT it receives. Prints a JSON summary at the end.",
    )
    add_common(parser, duration_help="sim seconds since the epoch to run (default: the scenario's duration)")
    parser.add_argument("--mqtt", choices=["auto", "5", "3.1.1"], default="auto", help="MQTT version (default: 5, falling back to 3.1.1)")
    parser.add_argument(
        "--shard", type=_shard, default=(0, 1), metavar="I/N",
        help="be the OBUs of vehicles whose id %% N == I only (run N fleets, I = 0..N-1, with one --epoch). "
        "Every shard simulates all the traffic from the same seed; other shards' vehicles drive on the SPaT "
        "this shard hears, so the shards' traffic stays alike, though not bit-identical in real time",
    )
    args = parser.parse_args(argv)
    setup_logging(logging.WARNING)
    sc = load(args.scenario, args.set, args.seed)
    if sc is None:
        return 2
    fleet = Fleet(
        sc, args.broker, Topics(args.root), Clock(args.epoch), version=args.mqtt, shard=args.shard,
        impairment=Impairment(sc.links, sc.seed) if args.impair else None, credentials=credentials(args, "v2x fleet"),
    )
    ca = signing_ca(args, "v2x fleet")
    if ca is not None:
        fleet.sign_with(ca)
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
