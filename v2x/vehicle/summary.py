"""What a fleet did, as one typed record: `v2x fleet` prints it as its last JSON line, `v2x run` reads it back
(`FleetSummary.from_json`) and adds up the shards of a run (`FleetSummary.merge`)."""

from __future__ import annotations

import resource
import statistics
from dataclasses import dataclass, field
from typing import Any

from v2x.core.jsonview import JsonRecord, add_counts
from v2x.core.traffic import EMERGENCY
from v2x.net.reception import LinkDrops
from v2x.net.transport import ConnectionSummary
from v2x.vehicle.apps import MAX_EVENTS_KEPT, AppKpis, HazardWarnings
from v2x.vehicle.equipment import Penetration
from v2x.vehicle.fleet import Fleet


@dataclass
class Vehicles(JsonRecord):
    spawned: int = 0
    finished: int = 0
    in_network: int = 0


@dataclass
class Shard(JsonRecord):
    index: int | None = 0  # None: the shards of a run, merged
    of: int = 1
    obus: int = 0  # OBUs this fleet has been (its shard's vehicles so far)
    by: str = "vehicle"  # "vehicle" or "area"
    connections: str = "per-vehicle"  # the OBUs' broker connections: one each, or "shared" (one per fleet process)


@dataclass
class TrafficKpis(JsonRecord):
    throughput_vph: float = 0.0
    mean_delay_s: float = 0.0
    stops_per_vehicle: float = 0.0
    red_light_violations: int | None = None  # counted against the controllers' true state, which only an in-process run has
    collisions: int = 0
    collisions_with_obstacles: int = 0


@dataclass
class MessageCounts(JsonRecord):
    sent: dict[str, int] = field(default_factory=dict)  # by type
    received: dict[str, int] = field(default_factory=dict)  # by type, SPaT also by path ("spat/rsu")


@dataclass
class AppEvents(JsonRecord):
    listed: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_EVENTS_KEPT warnings
    not_listed: int = 0


@dataclass
class Emergency(JsonRecord):
    vehicles: list[dict[str, Any]] = field(default_factory=list)  # travel time, delay and stops of each that finished
    still_driving: list[str] = field(default_factory=list)
    crossings: list[dict[str, Any]] = field(default_factory=list)  # from its priority request to crossing the line
    priority_events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SpatCoverage(JsonRecord):
    vehicles_approaching: int = 0
    vehicles_with_spat: int = 0
    approaching_without_spat: list[int] = field(default_factory=list)  # the first 20 per fleet process
    vehicles_with_map: int = 0  # approaching vehicles that received the MAP of an intersection ahead
    approaching_without_map: list[int] = field(default_factory=list)  # the first 20 per fleet process


@dataclass
class FleetLinkDrops(LinkDrops):
    arrived_after_leaving: int = 0  # delayed by the link until after its vehicle had left


@dataclass
class LineCrossing(JsonRecord):
    """A vehicle of this fleet crossing a stop line (real time: judged against the RSU's record of its lights)."""

    t_s: float  # [s] sim time
    vehicle: int
    intersection: str
    group: int  # the signal group id of the movement (as in MAP and SPaT)


@dataclass
class Dropped(JsonRecord):
    bsm_not_connected: int = 0  # the vehicle's connection was not up yet
    bsm_not_sent: int = 0  # generated (a sequence number taken), but the connection was down
    transport_out: int = 0  # the transports' own drops, summed over vehicles
    transport_in: int = 0
    not_subscribed: int = 0  # retained messages on topics no filter of the vehicle's matches, set aside (amqtt)


@dataclass
class FleetSummary(JsonRecord):
    vehicles: Vehicles = field(default_factory=Vehicles)
    shard: Shard = field(default_factory=Shard)
    traffic: TrafficKpis = field(default_factory=TrafficKpis)
    messages: MessageCounts = field(default_factory=MessageCounts)
    apps: dict[str, AppKpis] = field(default_factory=dict)
    app_events: AppEvents = field(default_factory=AppEvents)
    hazard_warning_ms: HazardWarnings = field(default_factory=HazardWarnings)
    emergency: Emergency = field(default_factory=Emergency)
    spat: SpatCoverage = field(default_factory=SpatCoverage)
    bad_input: dict[str, int] = field(default_factory=dict)
    connection: ConnectionSummary = field(default_factory=ConnectionSummary)
    attackers: dict[str, str] = field(default_factory=dict)  # misbehaving OBUs: sender -> attack
    measurements: dict[str, Any] = field(default_factory=dict)  # Measurements.to_json(); per process, never merged here
    link_drops: FleetLinkDrops = field(default_factory=FleetLinkDrops)
    dropped: Dropped = field(default_factory=Dropped)
    # real time: rows [sim second, most a step started late (ms), most vehicles present, steps, steps a step late]
    tick: list[list[float]] = field(default_factory=list)
    peak_rss_mb: float = 0.0  # the fleet process's (the processes' of a run, added up)
    connect_failures: int = 0
    resubscriptions: int = 0
    subscribe_failures: int = 0
    line_crossings: list[LineCrossing] = field(default_factory=list)  # real time: its own vehicles' stop-line crossings
    sim_s: float = 0.0  # [s] the sim time the fleet reached (short of the run's duration when it was stopped)
    crossings_logged: bool = True  # its mobility logged stop-line crossings (both backends do): red-light violations judged
    penetration: Penetration = field(default_factory=Penetration)  # who had an OBU; traffic figures of each group

    @classmethod
    def of(cls, fleet: Fleet) -> FleetSummary:
        st = fleet.traffic.stats
        c = fleet.counters
        return cls(
            vehicles=Vehicles(st.spawned, st.finished, fleet.traffic.n),
            shard=Shard(fleet.shard[0], fleet.shard[1], fleet.obus, "vehicle" if fleet.area is None else "area",
                        "shared" if fleet.shared is not None else "per-vehicle"),
            traffic=TrafficKpis(
                throughput_vph=round(st.finished / max(fleet.traffic.t, 1e-9) * 3600.0, 1),
                mean_delay_s=round(st.mean_delay_s, 2),
                stops_per_vehicle=round(st.stops_per_vehicle, 3),
                # counted against the controllers' true state in process, and by the core only (not yet on SUMO)
                red_light_violations=st.red_light_entries if (fleet.truth is not None and fleet.core is not None) or (
                    fleet.sumo is not None and fleet.sumo.driven_by_controllers) else None,
                collisions=st.collisions,
                collisions_with_obstacles=st.obstacle_collisions,
            ),
            messages=MessageCounts(dict(c.sent), dict(c.received)),
            apps=fleet.apps.summary(),
            app_events=AppEvents(
                [w.to_json() for w in fleet.apps.warnings[:MAX_EVENTS_KEPT]], max(len(fleet.apps.warnings) - MAX_EVENTS_KEPT, 0),
            ),
            hazard_warning_ms=fleet.hazard_watch.summary(fleet.apps.warnings),
            emergency=Emergency(
                vehicles=[
                    {"vehicle": f"veh-{f.vid}", "travel_s": round(f.travel_s, 2), "delay_s": round(f.delay_s, 2), "stops": f.stops}
                    for f in st.finished_log if f.kind == EMERGENCY
                ],
                still_driving=[f"veh-{int(v)}" for v, k in zip(fleet.traffic.ids, fleet.traffic.kind, strict=True) if k == EMERGENCY],
                crossings=list(fleet.priority.crossings),
                priority_events=fleet.priority.events[:MAX_EVENTS_KEPT],
            ),
            spat=SpatCoverage(
                len(c.vehicles_approaching), len(c.vehicles_with_spat), sorted(c.vehicles_approaching - c.vehicles_with_spat)[:20],
                len(c.vehicles_approaching & c.vehicles_with_map), sorted(c.vehicles_approaching - c.vehicles_with_map)[:20],
            ),
            bad_input=dict(fleet.bad.counts),
            connection=fleet.connection(),
            attackers={} if fleet.attacks is None else dict(sorted(fleet.attacks.assigned.items())),
            measurements=fleet.reception.measure.to_json(),
            link_drops=FleetLinkDrops(**vars(fleet.reception.link_drops()), arrived_after_leaving=c.arrived_after_leaving),
            dropped=Dropped(c.bsm_not_connected, c.bsm_not_sent, c.dropped_out, c.dropped_in, c.not_subscribed),
            tick=[[sec, round(lag, 1), int(n), int(k), int(late)] for sec, (lag, n, k, late) in sorted(fleet.tick.items())],
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # this process's
            connect_failures=c.connect_failures,
            resubscriptions=c.resubscriptions,
            subscribe_failures=c.subscribe_failures,
            line_crossings=[
                LineCrossing(round(t, 3), vid, fleet.net.intersections[fleet.net.groups[g].intersection].spec.id, fleet.net.groups[g].group_id)
                for t, vid, g in fleet.traffic.crossings or [] if g >= 0 and fleet.mine(vid)
            ] + [LineCrossing(round(t, 3), vid, iid, g) for t, vid, iid, g in (fleet.sumo.line_crossings if fleet.sumo else [])],
            sim_s=round(fleet.traffic.t, 1),
            crossings_logged=True,
            penetration=Penetration.of(fleet.equipment, fleet.obus, st, fleet.truth is not None and fleet.core is not None),
        )

    @classmethod
    def merge(cls, parts: list[FleetSummary]) -> FleetSummary:
        """One summary for the fleet shards of a run: counts added, lists joined, averages and percentiles recomputed
        (delay and stops weighted by vehicles finished; app lead times from the events listed), the tick merged
        per second (the latest shard's lag; all shards' vehicles, steps and late steps), outages merged.
        Measurements stay per shard: the report adds them up with the other tiers' (the merged one has none)."""
        if len(parts) == 1:
            return parts[0]

        finished = [p.vehicles.finished for p in parts]
        done = max(sum(finished), 1)
        rl = [p.traffic.red_light_violations for p in parts]
        ticks: dict[int, list[float]] = {}
        for p in parts:
            for sec, lag, n, k, late in p.tick:
                t = ticks.setdefault(int(sec), [sec, lag, 0, 0, 0])
                t[1], t[2], t[3], t[4] = max(t[1], lag), t[2] + n, t[3] + k, t[4] + late
        events = [e for p in parts for e in p.app_events.listed]
        apps: dict[str, AppKpis] = {}
        for app in parts[0].apps:
            leads = sorted(e["lead_s"] for e in events if e["app"] == app and e["lead_s"] is not None)
            apps[app] = AppKpis(
                warnings=sum(p.apps[app].warnings for p in parts),
                vehicles=sum(p.apps[app].vehicles for p in parts),
                lead_time_s_p50=round(float(statistics.median(leads)), 2) if leads else None,
                lead_time_s_min=leads[0] if leads else None,
                with_lead_time=sum(p.apps[app].with_lead_time for p in parts),
            )
        per = [h for p in parts for h in p.hazard_warning_ms.per_hazard]
        firsts = [h["first_ms"] for h in per if h.get("first_ms") is not None]
        lasts = [h["last_ms"] for h in per if h.get("last_ms") is not None]
        return cls(
            vehicles=Vehicles(*(sum(getattr(p.vehicles, k) for p in parts) for k in ("spawned", "finished", "in_network"))),
            shard=Shard(None, len(parts), sum(p.shard.obus for p in parts), parts[0].shard.by, parts[0].shard.connections),
            traffic=TrafficKpis(
                throughput_vph=sum(p.traffic.throughput_vph for p in parts),
                mean_delay_s=round(sum(p.traffic.mean_delay_s * n for p, n in zip(parts, finished, strict=True)) / done, 2),
                stops_per_vehicle=round(sum(p.traffic.stops_per_vehicle * n for p, n in zip(parts, finished, strict=True)) / done, 3),
                red_light_violations=None if None in rl else sum(x for x in rl if x is not None),
                collisions=sum(p.traffic.collisions for p in parts),
                collisions_with_obstacles=sum(p.traffic.collisions_with_obstacles for p in parts),
            ),
            messages=MessageCounts(add_counts(p.messages.sent for p in parts), add_counts(p.messages.received for p in parts)),
            apps=apps,
            app_events=AppEvents(events, sum(p.app_events.not_listed for p in parts)),
            hazard_warning_ms=HazardWarnings(max(firsts) if firsts else None, max(lasts) if lasts else None, per),
            emergency=Emergency(
                [x for p in parts for x in p.emergency.vehicles], [x for p in parts for x in p.emergency.still_driving],
                [x for p in parts for x in p.emergency.crossings], [x for p in parts for x in p.emergency.priority_events],
            ),
            spat=SpatCoverage(
                sum(p.spat.vehicles_approaching for p in parts), sum(p.spat.vehicles_with_spat for p in parts),
                [v for p in parts for v in p.spat.approaching_without_spat], sum(p.spat.vehicles_with_map for p in parts),
                [v for p in parts for v in p.spat.approaching_without_map],
            ),
            bad_input=add_counts(p.bad_input for p in parts),
            connection=ConnectionSummary.merge(p.connection for p in parts),
            attackers={s: a for p in parts for s, a in p.attackers.items()},
            link_drops=FleetLinkDrops(
                **vars(LinkDrops.merge(p.link_drops for p in parts)),
                arrived_after_leaving=sum(p.link_drops.arrived_after_leaving for p in parts),
            ),
            dropped=Dropped(*(sum(getattr(p.dropped, k) for p in parts) for k in ("bsm_not_connected", "bsm_not_sent", "transport_out", "transport_in", "not_subscribed"))),
            tick=[ticks[k] for k in sorted(ticks)],
            peak_rss_mb=sum(p.peak_rss_mb for p in parts),
            connect_failures=sum(p.connect_failures for p in parts),
            resubscriptions=sum(p.resubscriptions for p in parts),
            subscribe_failures=sum(p.subscribe_failures for p in parts),
            line_crossings=[x for p in parts for x in p.line_crossings],
            sim_s=min(p.sim_s for p in parts),  # the run reached what every shard did
            crossings_logged=all(p.crossings_logged for p in parts),
            penetration=Penetration.merge([p.penetration for p in parts]),
        )
