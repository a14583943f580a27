"""The cloud-control service on a broker: the area picture, the SPaT relay, RSU liveness.

  - subscribes to BSMs, RSMs, RSU SPaT and every service's status in its region (one wildcard each);
  - keeps a live picture: the latest BSM per vehicle, the latest RSM per RSU, the queue on
    each approach (vehicles standing on its lanes, by their BSMs), each RSU's liveness;
  - relays each intersection's SPaT, as the RSU reported it, on the cellular-path topic, so a
    vehicle out of RSU range (or without sidelink) still gets it;
  - reports an RSU lost when its status turns offline (its Last Will, published by the broker).
  - raises the scenario's reported hazards as RSI (QoS 1, retained on every tile they concern)
    and clears them when they end; detects hazards itself from the BSMs (a vehicle standing in
    a travel lane away from a stop line, a cluster of hard braking: cloud.detect) and raises
    them the same way, source "detection";
  - estimates arrivals per approach (vehicles entering it, over a sliding window) and the
    residual queue (vehicles that stayed queued through a whole cycle);
  - with `control.policy = "adaptive"`, retimes every signal once a cycle from those
    estimates (cloud.policy) and sends the SignalPlans to the RSUs (QoS 1; the RSU holds a
    persistent session).
Bad payloads are counted per kind, never fatal.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sys
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from cloud.detect import Detection, Detector
from cloud.fusion import Fusion
from cloud.misbehaviour import Misbehaviour, MisbehaviourSummary
from cloud.policy import Approach
from cloud.sumo_policy import adaptive
from v2x import __version__
from v2x.core import codec, wire_read
from v2x.core import messages as m
from v2x.core.jsonview import add_counts
from v2x.core.mapdata import intersection_ref, lane_id
from v2x.core.network import Network
from v2x.core.scenario import HazardEvent
from v2x.core.signal.controller import Plan
from v2x.core.signal.plans import plan_message
from v2x.core.topics import Topics, tile_path, tiles_covering
from v2x.core.trust import TrustRules
from v2x.net.connection import Connection
from v2x.net.impair import Impairment
from v2x.net.intake import ACCURACY, HEADING, SPEED, Batch, BsmIntake, X, Y, values_of
from v2x.net.reception import Decoded, LinkDrops
from v2x.net.service import Service, ServiceSummary
from v2x.net.station import Clock
from v2x.net.transport import ConnectionSummary, Message, Transport
from v2x.sumo.site import approach_of, approaches, hazard_points

CLOUD_ID = "cloud"
YIELD_EVERY = 64  # real time: messages handled between reads of the connection (a run of BSMs: 0.1-0.3 ms)
TICK_S = 0.1  # [s] real time: how often the cloud's periodic work runs, at most
# [s] real time: what has arrived is taken at most this often. Each arrival is stamped as the connection reads it,
# whenever that is, so no latency measured changes; the cloud acts on a message up to this much later. Taken as it
# came, the cloud woke for every few messages (700 vehicles, one connection each), and each wake cost more than its BSMs
TAKE_EVERY_S = 0.005
QUEUE_SPEED_MPS = 2.0  # [m/s] a vehicle slower than this on an approach lane is queued
FRESH_S = 1.0  # [s] a vehicle's latest BSM counts for this long
# [s] a vehicle not heard for this long is let go from the picture (its latest BSM, the approach it was on): ten
# times FRESH_S, so that one only interrupted (a broker outage) keeps its approach and is not counted arriving again;
# the picture then holds the vehicles heard lately, not every vehicle ever heard
GONE_S = 10.0
QUEUE_EVERY_S = 1.0  # [s] how often the queue picture is refreshed
PLAN_VALID_CYCLES = 2.0  # a plan is not to be applied later than this many of its cycles after the cloud sent it
RSI_RELEVANCE_M = 300.0  # [m] a hazard's RSI goes to every tile within this distance of it
DETECTED_IDS = 128  # detected hazards' event ids: 129..255 (the wire's range), scheduled ones 1, 2, ...
ARRIVALS_WINDOW_S = 300.0  # [s] arrivals per approach are counted over this sliding window
_SOURCE = {"road_works": m.EventSource.GOVERNMENT, "accident": m.EventSource.POLICE}


@dataclass
class RsuLiveness:
    online: bool
    since_s: float  # [s] sim time of the last change


@dataclass
class CloudSummary(ServiceSummary):
    """What a cloud instance did: what every service reports, the SPaT it relayed, the vehicles it saw, the
    longest queue per approach, the hazards it detected and what its misbehaviour checks flagged."""

    relayed_spat: int = 0
    vehicles_seen: int = 0
    max_queue_by_approach: dict[str, int] = field(default_factory=dict)  # "J1.north" -> vehicles
    detected_hazards: list[dict[str, Any]] = field(default_factory=list)
    misbehaviour: MisbehaviourSummary = field(default_factory=MisbehaviourSummary)
    fusion: dict[str, Any] = field(default_factory=dict)  # BSM and RSM fused (cloud.fusion); none without sensors

    @classmethod
    def merge(cls, parts: list[CloudSummary]) -> CloudSummary:
        """One summary for the instances of a run (`v2x run --clouds N`): counts added, lists joined. Each instance
        owns whole sites, so their vehicles, approaches and flagged senders do not overlap. Measurements stay per
        instance (the report adds them up with the other tiers'): the merged one has none."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            sent=add_counts(p.sent for p in parts), received=add_counts(p.received for p in parts),
            bad_input=add_counts(p.bad_input for p in parts), rejected_by_type=add_counts(p.rejected_by_type for p in parts),
            link_drops=LinkDrops.merge(p.link_drops for p in parts),
            connection=ConnectionSummary.merge(p.connection for p in parts), dropped=add_counts(p.dropped for p in parts),
            stalls_s=[s for p in parts for s in p.stalls_s],
            relayed_spat=sum(p.relayed_spat for p in parts), vehicles_seen=sum(p.vehicles_seen for p in parts),
            max_queue_by_approach=add_counts(p.max_queue_by_approach for p in parts),
            detected_hazards=[d for p in parts for d in p.detected_hazards],
            misbehaviour=MisbehaviourSummary(
                add_counts(p.misbehaviour.senders for p in parts), {s: f for p in parts for s, f in p.misbehaviour.flagged.items()},
            ),
            fusion=Fusion.merge([p.fusion for p in parts]),
        )


@dataclass
class CloudCounters:
    relayed_spat: int = 0


class CloudService(Service):
    def __init__(
        self, net: Network, transport: Transport, topics: Topics, clock: Clock, events: TextIO | None = sys.stdout,
        impairment: Impairment | None = None, instance: tuple[int, int] = (0, 1), share: str | None = None,
    ) -> None:
        sid = instance_id(instance)
        super().__init__(sid, m.SenderKind.CLOUD, transport, clock, topics.status("cloud", sid), impairment, trust=TrustRules(net.scenario))
        self.net = net
        # one of N instances: it owns whole sites (v2x.core.network components, dealt round-robin as the fleet's area
        # shards are): their BSMs and RSMs, hazards and signal plans; the SPaT relay, which keeps no state, is
        # shared through `$share/<share>/...` so that the broker hands each RSU SPaT to one instance
        self.area = net.shard_area(*instance) if instance[1] > 1 else None
        self.share = share
        self.topics = topics
        # sender id -> (its latest BSM's values, v2x.net.intake.VALUES; sim time), heard in the last GONE_S
        self.vehicles: dict[str, tuple[Sequence[float], float]] = {}
        self.seen: set[str] = set()  # every vehicle heard, for the summary
        self.rsus: dict[str, RsuLiveness] = {}
        self.queues: dict[str, int] = {}  # "J1.north" -> vehicles queued there now
        self.max_queues: Counter[str] = Counter()  # the longest each queue has been
        self._next_queue_s = 0.0
        self._approach_of: dict[str, str] = {}  # vehicle -> the approach it was last seen on
        self.arrivals: dict[str, deque[float]] = {}  # approach -> sim times vehicles entered it, in the window
        self._first_survey_s: float | None = None
        self._min_queues: dict[str, int] = {}  # approach -> shortest queue since the last retiming
        self.adaptive = adaptive(net) if net.scenario.control.policy == "adaptive" else None
        # on SUMO: the RSU junctions' ingress lanes, which the BSMs are matched to (no schematic lanes there)
        self._sumo_lanes = approaches(net.scenario) if net.scenario.mobility == "sumo" else None
        self.detector = Detector()
        self.misbehaviour = Misbehaviour(net)  # plausibility checks on every BSM (F2MD)
        self.fusion = Fusion(net) if net.scenario.sensors else None  # BSMs and the RSUs' sensor detections as one picture
        # of a SPaT it reads only the intersection, to relay the bytes; of an RSM nothing, but with sensors to fuse:
        # both checked in full (`codec.skim`), not built
        self.reception.skim_rsm = self.fusion is None
        self.detected_log: list[dict[str, object]] = []
        self._next_plan_s = min(p.cycle_s for p in self.adaptive.current) if self.adaptive else math.inf
        self.hazard_topics: dict[int, list[str]] = {}  # active hazard's event id -> the RSI topics it is retained on
        self._rsi: dict[int, m.Rsi] = {}  # active hazard's event id -> its RSI (announced again after a reconnect)
        self.counters = CloudCounters()
        self._wire = b""  # the payload of the message being handled, while `accept` handles it now
        self.events = events  # where events are printed as they happen (JSON lines), if anywhere
        self.event_log: list[dict[str, object]] = []
        # a SPaT names its intersection, or gives its wire id (index + 1)
        self._tile_of = dict(zip(net.scenario.sites, net.site_tiles, strict=True))
        self._tile_of |= {str(i + 1): tile for i, tile in enumerate(net.site_tiles)}

    async def start(self) -> None:
        """Announce; subscribe to BSMs, RSMs, RSU SPaT and every service's status in the region."""
        t = self.transport
        self.announce()
        self._reconnects = t.stats.reconnects
        # one of several instances: the tiles its sites own, so that every BSM and RSM reaches one instance
        for tile in [""] if self.area is None else sorted(t for t, site in self.net.tile_owner.items() if site in self.area):
            await t.subscribe(self.topics.area("bsm", tile), qos=0)
            await t.subscribe(self.topics.area("rsm", tile), qos=0)
        relay = f"{self.topics.root}/spat/rsu/#"
        if self.share is not None:  # any instance relays any SPaT, one instance each
            self.reception.shared_prefix = relay[:-1]
            await t.subscribe(f"$share/{self.share}/{relay}", qos=0)
        elif self.area is None:
            await t.subscribe(relay, qos=0)
        else:  # no shared subscriptions (MQTT 3.1.1 brokers): each instance relays its own sites' SPaT
            for tile in sorted({self.net.tiles[i] for i in self.area}):
                await t.subscribe(f"{self.topics.root}/spat/rsu/{tile_path(tile)}/#", qos=0)
        await t.subscribe(f"{self.topics.root}/status/#", qos=1)

    def announce(self) -> None:
        """Its retained messages: the online status and the RSI of every active hazard (again after each reconnect:
        `Service.reassert`)."""
        self.station.publish(self.status_topic, m.Status(m.ServiceState.ONLINE, __version__, ""), qos=1, retain=True)
        for event_id, topics in self.hazard_topics.items():
            for topic in topics:
                self.station.publish(topic, self._rsi[event_id], qos=1, retain=True)

    def stopping(self) -> None:
        """Before a clean disconnect: clear every active hazard, say it stopped and clear its status."""
        for event_id in list(self.hazard_topics):
            self._clear_hazard(event_id, self.clock.sim_s())
        self.stopped([self.status_topic])

    async def run(self, duration_s: float | None = None) -> None:
        """Real time: start, then take what has arrived (at most every TAKE_EVERY_S) and what the links held until now,
        until `duration_s`."""
        await self.start()
        loop, last_take = asyncio.get_running_loop(), -math.inf
        while duration_s is None or self.clock.sim_s() < duration_s:
            self.reassert()
            due = self.reception.next_due_s()
            wait = TICK_S if due is None else min(TICK_S, due)
            if duration_s is not None:
                wait = min(wait, max(duration_s - self.clock.sim_s(), 0.0))
            await self.transport.wait(wait)
            rest = last_take + TAKE_EVERY_S - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
            last_take = loop.time()
            self.turn()
            msgs = self.transport.receive()
            for k in range(0, len(msgs), YIELD_EVERY):  # each run's BSMs read in one call (`Service.take`)
                run = msgs[k : k + YIELD_EVERY]
                self.take(run)
                if len(run) == YIELD_EVERY:
                    await asyncio.sleep(0)  # let the connection read: arrivals are stamped as they are read
            self.release()
            self.tick(self.clock.sim_s())

    def tick(self, now: float) -> None:
        """Periodic work at sim time `now`: the queue and arrivals picture; retiming when adaptive;
        raise and clear the scenario's hazards."""
        self.misbehaviour.sweep(now)
        if now + 1e-6 >= self._next_queue_s:
            self._next_queue_s = now + QUEUE_EVERY_S
            for sid in [sid for sid, (_, at) in self.vehicles.items() if now - at > GONE_S]:
                del self.vehicles[sid]
                self._approach_of.pop(sid, None)
                if self.fusion is not None:
                    self.fusion.forget(sid)
            self.queues = self.survey(now)
            for k, n in self.queues.items():
                self.max_queues[k] = max(self.max_queues[k], n)
        if self.adaptive is not None and now + 1e-6 >= self._next_plan_s:
            self.retime(now)
        for i, ev in enumerate(self.net.scenario.events):
            event_id = i + 1
            if not self.owns(ev.intersection):
                continue
            # sim time is a sum of steps: allow rounding; an unreported hazard the cloud can only detect
            active = ev.reported and ev.start_s <= now + 1e-6 < ev.start_s + ev.duration_s
            if active and event_id not in self.hazard_topics:
                self._raise_hazard(event_id, ev, now)
            elif not active and event_id in self.hazard_topics:
                self._clear_hazard(event_id, now)
        sumo = self.net.scenario.sumo
        for h, hz in enumerate(sumo.hazards if sumo is not None and self.area is None else ()):
            event_id = len(self.net.scenario.events) + h + 1  # on SUMO the hazards of [[sumo.hazards]], after any others
            active = hz.start_s <= now + 1e-6 < hz.start_s + hz.duration_s
            if active and event_id not in self.hazard_topics:
                end_s = None if math.isinf(hz.duration_s) else hz.start_s + hz.duration_s
                self._raise(event_id, hz.kind, _SOURCE.get(hz.kind, m.EventSource.DETECTION), None, hazard_points(self.net.scenario)[h],
                            end_s, now)
            elif not active and event_id in self.hazard_topics:
                self._clear_hazard(event_id, now)

    def owns(self, intersection: str) -> bool:
        """Whether this instance looks after an intersection (every one, unless one of several)."""
        return self.area is None or self.net.index_of(intersection) in self.area

    def survey(self, now: float) -> dict[str, int]:
        """From the latest BSMs: count each vehicle entering an approach, and return the vehicles
        standing on each approach now (stopped or crawling on one of its lanes)."""
        if self._first_survey_s is None:
            self._first_survey_s = now
        out: Counter[str] = Counter()
        on_lanes = []
        users = list(self.picture(now))
        # every road user's approach lane at once (a loop over hundreds of lookups held the messages waiting behind it)
        lanes, to_line = self.net.in_lanes_at(np.array([u[1] for u in users], dtype=np.float64),
                                              np.array([u[2] for u in users], dtype=np.float64))
        for (sid, x, y, speed, heading), lane, dist in zip(users, lanes.tolist(), to_line.tolist(), strict=True):
            if lane >= 0:
                on_lanes.append((sid, lane, dist, speed))
                link = self.net.links[lane]
                key = f"{self.net.intersections[link.intersection].spec.id}.{link.leg}"
            elif self._sumo_lanes is not None and (on := self._sumo_lanes.at(x, y, heading)) is not None:
                key = f"{self.net.scenario.sites[on[0]]}.{approach_of(on[1])}"
            else:
                continue
            if self._approach_of.get(sid) != key:
                self._approach_of[sid] = key
                self.arrivals.setdefault(key, deque()).append(now)
            if speed < QUEUE_SPEED_MPS:
                out[key] += 1
        for key, times in self.arrivals.items():
            while times and times[0] < now - ARRIVALS_WINDOW_S:
                times.popleft()
            self._min_queues[key] = min(self._min_queues.get(key, out[key]), out[key])
        for det in self.detector.standing(now, on_lanes):
            self._raise_detected(det, now)
        for det in self.detector.expired(now):
            if det.event_id is not None:
                self._clear_hazard(det.event_id, now)
        return dict(sorted(out.items()))

    def picture(self, now: float) -> Iterator[tuple[str, float, float, float, float]]:
        """(id, x, y, speed, heading) of every road user the cloud knows of now: each vehicle by its latest BSM, then those
        the RSUs' sensors alone see (cloud.fusion), so that a queue of cars without an OBU still counts."""
        for sid, (v, at) in self.vehicles.items():
            if now - at <= FRESH_S:
                yield sid, v[X], v[Y], v[SPEED], v[HEADING]
        if self.fusion is not None:
            yield from self.fusion.unmatched(now)

    def approaches(self, now: float) -> dict[str, Approach]:
        """What was measured on each approach: arrivals per hour over the window, and the residual queue."""
        span = max(min(ARRIVALS_WINDOW_S, now - (self._first_survey_s or 0.0)), QUEUE_EVERY_S)
        adaptive = self.adaptive
        assert adaptive is not None
        return {
            key: Approach(adaptive.lanes.get(key, 1), len(times) * 3600.0 / span, self._min_queues.get(key, 0))
            for key, times in self.arrivals.items()
        }

    def retime(self, now: float) -> None:
        """The adaptive policy's new plans for every intersection, sent to the RSUs."""
        assert self.adaptive is not None
        measured = self.approaches(now)
        self._min_queues.clear()
        for i, plan in self.adaptive.plans(now, measured):
            if self.area is not None and i not in self.area:
                continue
            greens = "/".join(f"{p.green_s:g}" for p in plan.phases)
            self.send_plan(i, plan, f"adaptive: cycle {plan.cycle_s:g} s, greens {greens} s, offset {plan.offset_s:.1f} s")
        self._next_plan_s = now + min(p.cycle_s for p in self.adaptive.current)

    def _raise_hazard(self, event_id: int, ev: HazardEvent, now: float) -> None:
        """A reported hazard of the scenario's schedule."""
        lid, _, x, y = self.net.lane_point(ev.intersection, ev.approach, ev.lane, ev.distance_m)
        end_s = None if math.isinf(ev.duration_s) else ev.start_s + ev.duration_s
        self._raise(event_id, ev.kind, _SOURCE.get(ev.kind, m.EventSource.DETECTION), lid, (x, y), end_s, now)

    def _raise_detected(self, det: Detection, now: float) -> None:
        """A hazard the cloud detected, unless a reported one already covers that lane there."""
        for i, ev in enumerate(self.net.scenario.events):
            if i + 1 in self.hazard_topics:
                lid, _, _, _ = self.net.lane_point(ev.intersection, ev.approach, ev.lane, ev.distance_m)
                if lid == det.lane and abs(ev.distance_m - det.to_line_m) <= 30.0:
                    return
        event_id = DETECTED_IDS + len(self.detected_log) % (255 - DETECTED_IDS) + 1
        det.event_id = event_id
        link = self.net.links[det.lane]
        s = max(float(self.net.link_length[det.lane]) - det.to_line_m, 0.0)
        x, y, _ = self.net.xy_heading(np.array([det.lane]), np.array([s]))
        kind = "stalled_vehicle" if det.kind == "stalled_vehicle" else "hard_braking"
        self._raise(event_id, kind, m.EventSource.DETECTION, det.lane, (float(x[0]), float(y[0])), None, now)
        self.detected_log.append({
            "event_id": event_id, "kind": det.kind, "sim_s": round(now, 3),
            "intersection": self.net.intersections[link.intersection].spec.id, "approach": link.leg, "lane": link.lane,
            "to_line_m": round(det.to_line_m, 1), "vehicles": sorted(det.vehicles),
        })

    def _raise(
        self, event_id: int, kind: str, source: m.EventSource, lid: int | None, xy: tuple[float, float], end_s: float | None,
        now: float,
    ) -> None:
        """RSI at QoS 1, retained on every tile the hazard concerns, until it is cleared. `lid`: the lane of our
        network it is on (None on a SUMO network: the position alone says where)."""
        pos = self.net.frame.to_geo(*xy)
        utc_ms = self.clock.utc_us() // 1000
        end_ms = None if end_s is None else utc_ms + round((end_s - now) * 1000)
        lanes = () if lid is None else (m.LaneRef(intersection_ref(self.net.links[lid].intersection), lane_id(self.net, lid)),)
        event = m.RoadTrafficEvent(
            event_id=event_id, kind=m.HazardKind[kind.upper()], source=source,
            status=m.EventStatus.ACTIVE, position=pos, radius_m=10.0, lanes=lanes,
            priority=5, start_time_ms=utc_ms, end_time_ms=end_ms, description=kind.replace("_", " "),
        )
        topics = [self.topics.rsi(tile, self.id, event_id) for tile in tiles_covering(pos.lat_deg, pos.lon_deg, RSI_RELEVANCE_M)]
        rsi = self._rsi[event_id] = m.Rsi(pos, (event,))
        for topic in topics:
            self.station.publish(topic, rsi, qos=1, retain=True)
        self.hazard_topics[event_id] = topics
        self._event("hazard-raised", event_id=event_id, kind=kind, source=source.name.lower(), sim_s=round(now, 3), tiles=len(topics))

    def _clear_hazard(self, event_id: int, now: float) -> None:
        """An empty retained message on each topic: the broker forgets the RSI, subscribers learn it ended."""
        self._rsi.pop(event_id, None)
        for topic in self.hazard_topics.pop(event_id):
            self.station.clear(topic)
        self._event("hazard-cleared", event_id=event_id, sim_s=round(now, 3))

    def send_plan(self, index: int, plan: Plan, reason: str = "") -> None:
        """A new signal plan for the scenario's `index`-th intersection; its RSU applies it at a safe boundary."""
        iid = self.net.scenario.sites[index]
        # valid for PLAN_VALID_CYCLES of its cycle: it answers the demand the cloud saw, and may wait out an outage
        valid_until_ms = self.clock.utc_us() // 1000 + round(PLAN_VALID_CYCLES * plan.cycle_s * 1000)
        body = plan_message(plan, index, reason, valid_until_ms)
        self.station.publish(self.topics.plan(iid), body, qos=1)
        self._event("plan-sent", intersection=iid, plan_id=plan.plan_id, sim_s=round(self.clock.sim_s(), 3), reason=reason)

    def summary(self) -> CloudSummary:
        return self._summary(
            CloudSummary, relayed_spat=self.counters.relayed_spat, vehicles_seen=len(self.seen),
            max_queue_by_approach=dict(sorted(self.max_queues.items())), detected_hazards=self.detected_log,
            misbehaviour=self.misbehaviour.summary(), fusion=self.fusion.summary() if self.fusion is not None else {},
        )

    def make_intake(self) -> BsmIntake | None:
        """Its BSMs taken as rows, unless it fuses the RSUs' sensors with them (`Fusion.bsm` takes a BSM's accuracy as
        an object)."""
        return BsmIntake(self.reception, self.net.frame) if self.fusion is None else None

    def took_bsms(self, intake: BsmIntake, batch: Batch, first: int, end: int) -> None:
        """`handle` of rows `first` to `end` of `batch`, BSMs `intake` took: each vehicle's latest, and its BSM checked
        for misbehaviour (the same values as `handle` gives `Misbehaviour.bsm`)."""
        self.received["bsm"] += end - first
        v = batch.values[first:end]
        senders = [intake.senders[s] for s in batch.slots[first:end].tolist()]
        self.vehicles.update(zip(senders, zip(v.tolist(), itertools.repeat(self.clock.sim_s())), strict=True))
        self.seen.update(senders)
        accuracy = v[:, ACCURACY]
        self.misbehaviour.bsms(senders, np.column_stack((batch.rows[first:end, wire_read.SIM_MS] / 1000, v[:, X], v[:, Y], v[:, SPEED],
                                                         v[:, HEADING], np.where(np.isnan(accuracy), 0.0, accuracy))))

    def accept(self, msg: Message, read: Decoded | None = None) -> None:
        """One arrival, as every service takes it; its bytes are kept while it is handled, for the SPaT relay."""
        self._wire = msg.payload
        try:
            super().accept(msg, read)
        finally:
            self._wire = b""

    def release(self) -> None:
        """What the links held until now, as every service hands it out; its bytes kept as `accept` keeps them."""
        for _, topic, payload, frame in self.reception.due_with_payload():
            self._wire = payload
            try:
                self._handle(topic, frame)
            finally:
                self._wire = b""

    def handle(self, topic: str, frame: m.Frame) -> None:
        body = frame.body
        kind = m.type_name(body)
        self.received[kind] += 1
        now = self.clock.sim_s()
        if isinstance(body, m.Bsm):
            v = values_of(body, self.net.frame)
            self.vehicles[frame.header.sender_id] = (v, now)
            self.seen.add(frame.header.sender_id)
            bx, by = v[X], v[Y]
            accuracy = 0.0 if body.accuracy is None else body.accuracy.semi_major_m
            self.misbehaviour.bsm(
                frame.header.sender_id, frame.header.sim_time_ms / 1000, bx, by, body.speed_mps, body.heading_deg, accuracy
            )
            if self.fusion is not None:
                self.fusion.bsm(frame.header.sender_id, frame.header.sim_time_ms / 1000, bx, by, body.speed_mps, body.heading_deg, body.accuracy)
            if m.VehicleEvent.HARD_BRAKING in body.events:
                x, y = self.net.frame.to_local(body.position.lat_deg, body.position.lon_deg)
                hit = self.net.in_lane_at(x, y)
                det = None
                if hit is not None:
                    link = self.net.links[hit[0]]
                    entry = (link.intersection, link.leg) not in self.net.road_of
                    from_edge = float(self.net.link_length[hit[0]]) - hit[1] if entry else math.inf
                    det = self.detector.hard_brake(now, frame.header.sender_id, x, y, hit[0], hit[1], from_edge)
                if det is not None:
                    self._raise_detected(det, now)
        elif isinstance(body, m.CheckedSpat) and frame.header.sender_kind is m.SenderKind.RSU:
            self._relay_spat(topic, frame.header.sender_id, body.name, body.id, None)
        elif isinstance(body, m.Spat) and frame.header.sender_kind is m.SenderKind.RSU:
            for st in body.intersections:
                self._relay_spat(topic, frame.header.sender_id, st.name, st.ref.id, st, len(body.intersections) == 1)
        elif isinstance(body, m.Status) and frame.header.sender_kind is m.SenderKind.RSU:
            sid = frame.header.sender_id
            online = body.state is m.ServiceState.ONLINE
            before = self.rsus.get(sid)
            if before is None or before.online != online:
                self.rsus[sid] = RsuLiveness(online, now)
                # the Will says the connection was lost; a clean shutdown says it stopped
                name = "rsu-online" if online else ("rsu-stopped" if body.detail == m.STOPPED else "rsu-lost")
                self._event(name, rsu=sid, sim_s=round(now, 3))
        elif isinstance(body, (m.Rsm, m.CheckedRsm)):  # counted; fused with the BSMs where there are sensors
            if self.fusion is not None:
                assert isinstance(body, m.Rsm), "with sensors to fuse, RSMs are decoded in full"
                self.fusion.rsm(frame.header.sender_id, frame.header.sim_time_ms / 1000, body)
        elif not isinstance(body, (m.Spat, m.CheckedSpat, m.Status)):
            self.bad.record("not_handled", topic, kind, frame.header.sender_id)

    def _relay_spat(self, topic: str, sender: str, name: str, iid: int, state: m.IntersectionState | None,
                    alone: bool = True) -> None:
        """One intersection's SPaT on the cellular path of its tile: the body as it came when the SPaT is of it `alone`
        (no need to encode it again; `state` None: a `CheckedSpat`, which gives no more), else its `state` as a SPaT
        of its own."""
        tile = self._tile_of.get(name) or self._tile_of.get(str(iid))
        if tile is None:
            self.bad.record("unknown_intersection", topic, f"SPaT for {name!r}", sender)
            return
        topic_out = self.topics.spat("cloud", tile, name)
        if alone and self._wire:
            self.station.relay(topic_out, m.MessageType.SPAT, codec.relay_body(self._wire, skimmed=state is None), expiry_s=1)
        elif state is not None:
            self.station.publish(topic_out, m.Spat((state,)), expiry_s=1)
        else:  # (a CheckedSpat is handled only as `accept` and `release` give it, with its bytes)
            raise ValueError(f"a SPaT for {name!r} to relay without its bytes")
        self.counters.relayed_spat += 1

    def _event(self, name: str, **fields: object) -> None:
        event = {"event": name, **fields}
        self.event_log.append(event)
        if self.events is not None:
            self.events.write(json.dumps(event) + "\n")
            self.events.flush()


def instance_id(instance: tuple[int, int]) -> str:
    """The cloud's station id: "cloud", or "cloud-I" for instance I of several."""
    return CLOUD_ID if instance[1] == 1 else f"{CLOUD_ID}-{instance[0]}"


async def serve(
    net: Network, conn: Connection, duration_s: float | None, started: list[CloudService] | None = None,
    instance: tuple[int, int] = (0, 1), share: str | None = None,
) -> CloudService:
    """Run the cloud service; `started` receives it as soon as it exists (for a summary after Ctrl-C)."""
    # each instance logs in as itself (v2x.net.security); the SPaT relays of a turn of its loop leave in one socket write
    transport = conn.transport(instance_id(instance), coalesce_writes=True)
    svc = CloudService(net, transport, conn.topics, conn.clock(), impairment=conn.impairment(net.scenario),
                       instance=instance, share=share)
    authority = conn.authority("cloud", m.SenderKind.CLOUD, svc.clock)
    if authority is not None:
        svc.sign_with(authority)
    transport.will = svc.will
    await transport.start()
    if started is not None:
        started.append(svc)
    try:
        await svc.run(duration_s)
    finally:
        svc.stopping()
        await transport.drain(2.0)
        await transport.close()
    return svc
