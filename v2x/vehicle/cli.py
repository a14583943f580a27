"""`v2x fleet SCENARIO --broker URL`: run a scenario's vehicles against a broker, in real time."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import sys
from typing import Any

from v2x.core.errors import BrokerError
from v2x.core.jsonview import add_up
from v2x.core.topics import Topics
from v2x.core.traffic import EMERGENCY
from v2x.net.impair import Impairment
from v2x.net.options import add_common, credentials, load, setup_logging, shard_arg, signing_ca
from v2x.net.station import Clock
from v2x.net.transport import merge_spans
from v2x.vehicle.apps import MAX_EVENTS_KEPT
from v2x.vehicle.fleet import Fleet


def summary(fleet: Fleet) -> dict[str, Any]:
    st = fleet.traffic.stats
    c = fleet.counters
    return {
        "event": "summary",
        "vehicles": {"spawned": st.spawned, "finished": st.finished, "in_network": fleet.traffic.n},
        "shard": {"index": fleet.shard[0], "of": fleet.shard[1], "obus": fleet.obus, "by": "vehicle" if fleet.area is None else "area"},
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
        # real time: rows [sim second, most a step started late (ms), most vehicles present, steps, steps a step late]
        "tick": [[sec, round(lag, 1), int(n), int(k), int(late)] for sec, (lag, n, k, late) in sorted(fleet.tick.items())],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # this process's
        "connect_failures": c.connect_failures,
        "resubscriptions": c.resubscriptions,
        "subscribe_failures": c.subscribe_failures,
    }


def merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary for the fleet shards of a run: counts added, lists joined, averages and percentiles
    recomputed (delay and stops weighted by vehicles finished; app lead times from the events listed),
    the tick merged per second (the latest shard's lag; all shards' vehicles, steps and late steps). Measurements stay per shard:
    `v2x.metrics.merge_json` adds them up with the other tiers'."""
    if len(parts) == 1:
        return parts[0]

    out = add_up(parts, skip=("measurements", "tick", "apps", "hazard_warning_ms", "traffic", "shard"))
    finished = [p.get("vehicles", {}).get("finished", 0) for p in parts]
    traffic = {k: sum(p["traffic"].get(k) or 0 for p in parts) for k in ("throughput_vph", "collisions", "collisions_with_obstacles")}
    for k, nd in (("mean_delay_s", 2), ("stops_per_vehicle", 3)):
        traffic[k] = round(sum(p["traffic"].get(k, 0.0) * n for p, n in zip(parts, finished, strict=True)) / max(sum(finished), 1), nd)
    rl = [p["traffic"].get("red_light_violations") for p in parts]
    traffic["red_light_violations"] = None if None in rl else sum(x for x in rl if x is not None)
    out["traffic"] = traffic
    ticks: dict[int, list[float]] = {}
    for p in parts:
        for sec, lag, n, k, late in p.get("tick", []):
            t = ticks.setdefault(int(sec), [sec, lag, 0, 0, 0])
            t[1], t[2], t[3], t[4] = max(t[1], lag), t[2] + n, t[3] + k, t[4] + late
    out["tick"] = [ticks[k] for k in sorted(ticks)]
    events = [e for p in parts for e in p.get("app_events", {}).get("listed", [])]
    apps: dict[str, Any] = {}
    for app in parts[0].get("apps", {}):
        mine = [e for e in events if e["app"] == app]
        leads = sorted(e["lead_s"] for e in mine if e["lead_s"] is not None)
        apps[app] = {
            "warnings": sum(p["apps"][app]["warnings"] for p in parts),
            "vehicles": sum(p["apps"][app]["vehicles"] for p in parts),
            "lead_time_s_p50": round(float(statistics.median(leads)), 2) if leads else None,
            "lead_time_s_min": leads[0] if leads else None,
            "with_lead_time": sum(p["apps"][app]["with_lead_time"] for p in parts),
        }
    out["apps"] = apps
    per = [h for p in parts for h in p.get("hazard_warning_ms", {}).get("per_hazard", [])]
    firsts = [h["first_ms"] for h in per if h.get("first_ms") is not None]
    lasts = [h["last_ms"] for h in per if h.get("last_ms") is not None]
    out["hazard_warning_ms"] = {"first": max(firsts) if firsts else None, "last": max(lasts) if lasts else None, "per_hazard": per}
    out.setdefault("connection", {})["down_s"] = merge_spans([x for p in parts for x in p.get("connection", {}).get("down_s", [])])
    out["shard"] = {"index": None, "of": len(parts), "obus": sum(p["shard"]["obus"] for p in parts), "by": parts[0]["shard"].get("by")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x fleet",
        description="Run a scenario's vehicles in real time against a broker: each vehicle connects as its own "
        "MQTT client, publishes BSMs and drives on the SPaT it receives. Prints a JSON summary at the end.",
    )
    add_common(parser, duration_help="sim seconds since the epoch to run (default: the scenario's duration)")
    parser.add_argument("--mqtt", choices=["auto", "5", "3.1.1"], default="auto", help="MQTT version (default: 5, falling back to 3.1.1)")
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
    args = parser.parse_args(argv)
    setup_logging(logging.WARNING)
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    try:
        fleet = Fleet(
            sc, args.broker, Topics(args.root), Clock(args.epoch), version=args.mqtt, shard=args.shard, by_area=args.by == "area",
            impairment=Impairment(sc.links, sc.seed) if args.impair else None, credentials=credentials(args, "v2x fleet"),
        )
    except ValueError as e:
        print(f"v2x fleet: {e}", file=sys.stderr)
        return 2
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
