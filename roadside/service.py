"""The RSU service: one process per intersection (or several), on a broker.

It runs the intersection's signal controller in sim time and is its radio:
  - MAP, retained (QoS 1), on start;
  - SPaT at 10 Hz (QoS 0, 1 s expiry) on the sidelink path topic;
  - a retained online status, with a Last Will of offline;
  - RSM at 10 Hz: the road users it heard (their BSMs) within its radio range;
  - actuated control: detector calls from the BSMs it hears (a vehicle within DETECTOR_M of the
    stop line on one of its approach lanes calls the groups that lane feeds);
  - SignalPlans from the cloud (QoS 1, persistent session), checked against the intersection's PlanLimits
    (no crossing movements green together, clearances no shorter than its own), applied at the next phase boundary;
  - signal priority: a PriorityRequest from an emergency vehicle (QoS 1) gets an early or
    extended green for its movement (unless `control.priority` is false) and a PriorityStatus
    reply; SPaT carries the grant in its timing and the signal-priority-active status bit.
Bad payloads are counted per kind and never stop the service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from roadside.perception import Perception
from v2x import __version__
from v2x.core import messages as m
from v2x.core import rsu_wire, truth
from v2x.core.mapdata import build_map, intersection_ref
from v2x.core.network import Network
from v2x.core.scenario import Scenario
from v2x.core.signal.controller import DETECTOR_M, HeadWatch, Mode, SignalController
from v2x.core.signal.plans import PlanLimits, controllers, plan_from_message
from v2x.core.signal.spat import intersection_state, spat_wire
from v2x.core.topics import Topics, tiles_covering
from v2x.core.trust import TrustRules
from v2x.net.connection import Connection
from v2x.net.impair import Impairment
from v2x.net.intake import (
    ACCURACY,
    EDGE,
    ELEVATION,
    HEADING,
    LAT_DEG,
    LENGTH,
    LON_DEG,
    OUT,
    SPEED,
    WIDTH,
    Batch,
    BsmIntake,
    X,
    Y,
    position_of,
    values_of,
)
from v2x.net.reception import Decoded
from v2x.net.service import Service, ServiceSummary
from v2x.net.signing import role_permissions
from v2x.net.station import Clock
from v2x.net.transport import Message, MqttTransport, Transport

if TYPE_CHECKING:
    from v2x.sumo.site import Approaches, SumoSite

SPAT_PERIOD_S = 0.1  # [s] 10 Hz, SPaT and RSM
SPAT_EXPIRY_S = 1  # [s] MQTT 5 message expiry for SPaT and RSM
RSM_WINDOW_S = 1.0  # [s] a road user is in the RSM while its last BSM is at most this old
MAX_REFUSALS_KEPT = 100  # refused plans listed in the summary (all are counted as bad_plan)
CALL_FRESH_S = 0.3  # [s] a BSM places a detector call for this long after it was heard
LANE_SLACK_M = 0.5  # [m] beyond a lane's half width a position still counts as on it (as Network.in_lane_at)
LANE_SIGMAS = 2.0  # a BSM that states its accuracy calls for every lane within this many sigmas more
ACCURACY_CAP_M = 3.0  # [m] a stated accuracy counts up to this (claiming to know nothing calls no more)


def rsu_id(sc: Scenario, index: int) -> str:
    return sc.rsu_of(index).id


@dataclass
class RsuSummary(ServiceSummary):
    """What an RSU did: what every service reports, the cloud's plans (issued, received, applied) and the priority
    requests it served."""

    rsu: str = ""
    plans_applied: int = 0
    plans: list[dict[str, Any]] = field(default_factory=list)  # plan_id, issued_s, received_s, applied_s (None: not yet)
    plans_refused: list[dict[str, Any]] = field(default_factory=list)  # plan_id, from, sim_s, reasons (the first MAX_REFUSALS_KEPT)
    intersection: str = ""
    # what its signal heads really showed: [sim time [s], group id, Light] at every change (a run's red-light
    # violations are judged against it where the controllers are not at hand: real time)
    lights: list[list[float]] = field(default_factory=list)
    priority: list[dict[str, Any]] = field(default_factory=list)  # each priority request and what was done
    perception: dict[str, Any] = field(default_factory=dict)  # its sensors' counts (roadside.perception); none: no sensors


@dataclass
class RsuCounters:
    plans_applied: int = 0


class RsuService(Service):
    """One RSU: the controller of intersection `index` and its radio.

    Synchronous at heart: `tick(now)` steps the controller and publishes what is due,
    `receive()` handles what arrived. `run()` paces them on the clock (real time); the
    lockstep driver calls them itself (fast mode).
    """

    def __init__(
        self, net: Network, index: int, transport: Transport, topics: Topics, clock: Clock, impairment: Impairment | None = None
    ) -> None:
        rsu = net.scenario.rsu_of(index)
        super().__init__(
            rsu.id, m.SenderKind.RSU, transport, clock, topics.status("rsu", rsu.id), impairment, self._distance,
            TrustRules(net.scenario),
        )
        self.net = net
        self.index = index
        self.topics = topics
        self.range_m = rsu.range_m
        # the seam between the RSU and its intersection: a schematic one of the network, or a SUMO junction (its MAP
        # and plan read from the SUMO network: v2x.sumo.site); the rest of the RSU is the same for both
        self.sumo: SumoSite | None = None
        self._sumo_lanes: Approaches | None = None
        if net.scenario.mobility == "sumo":
            from v2x.sumo.site import approaches, sumo_sites  # reads the network as XML: no libsumo in the RSU

            self.sumo = sumo_sites(net.scenario)[index]
            self.iid, self.limits = self.sumo.id, self.sumo.limits
            mode = Mode.ACTUATED if net.scenario.control.policy == "actuated" else Mode.FIXED
            self.ctl: SignalController = SignalController(dataclasses.replace(self.sumo.plan, mode=mode), 0.0)
            self._sumo_lanes = approaches(net.scenario)  # its ingress lanes: detector calls from the BSMs heard
        else:
            self.iid = net.intersections[index].spec.id
            self.ctl = controllers(net)[index]
            self.limits = PlanLimits.of(net, index)  # what a plan from the cloud may do here
        self.tile = net.site_tiles[index]
        self.xy = net.rsu_xy[self.id]
        self.position = net.frame.to_geo(*self.xy)
        self._rsm_ref = rsu_wire.ref_field(self.position)  # every RSM's reference position, in wire form
        self._spat_head = rsu_wire.spat_head(intersection_ref(index), self.iid)  # every SPaT's id and name, in wire form
        rsu_wire.rsm_body(self._rsm_ref, [], [])  # the compiled writers loaded now (numba's disk cache), not mid-run
        rsu_wire.spat_body(self._spat_head, 0, 0, 0, 0, 0, [])
        self.counters = RsuCounters()
        self.perception = Perception.of(net, index, self.id, self.xy)  # its sensors (None: none), fed by `sense`
        # vehicle in range -> (its latest BSM's values, v2x.net.intake.VALUES; sim time heard)
        self.heard: dict[str, tuple[Sequence[float], float]] = {}
        self._ptc: dict[str, int] = {}  # vehicle -> its RSM participant id
        self._next_ptc = 0
        self.refused: list[dict[str, Any]] = []  # plans refused, with why
        self.lights: list[list[float]] = []  # [sim time, group id, Light] at each change of what a head shows
        self._heads = HeadWatch(self.ctl)
        # groups whose green is permissive (left turns that yield): geometry, so a plan from the cloud keeps them
        self._permissive = frozenset(g for p in self.ctl.plan.phases for g in p.permissive)
        self._next_s: float | None = None  # [s] sim time of the next SPaT/RSM
        self._k = 0
        self.plans: dict[int, dict[str, float]] = {}  # plan id -> sim times [s] it was issued and received
        self.priority_log: list[dict[str, object]] = []  # each priority request and what was done
        # MAP lane id -> the network's link; each approach lane -> the groups of the movements it feeds (what a loop
        # on it calls). On SUMO: detector calls from its ingress lanes (above), a request's lanes read from its MAP
        self._lane_link: dict[int, int] = {}
        self._lane_groups: dict[int, set[int]] = {}
        if self.sumo is None:
            ig = net.intersections[index]
            self._lane_link = {net.map_lane_ids[lid]: lid for lid in [*ig.in_links.values(), *ig.out_links.values()]}
            self._lane_groups = {lid: set() for lid in ig.in_links.values()}
            for lk in net.links:
                if lk.source in self._lane_groups and lk.group >= 0:
                    self._lane_groups[lk.source].add(net.groups[lk.group].group_id)

    def announce(self) -> None:
        """Its retained messages: the online status and MAP (again after each reconnect: `Service.reassert`)."""
        self.station.publish(self.status_topic, m.Status(m.ServiceState.ONLINE, __version__, f"{self.iid} range_m={self.range_m:g}"), qos=1, retain=True)
        self.station.publish(self.map_topic, m.MapData((self.geometry(),)), qos=1, retain=True)

    def geometry(self) -> m.IntersectionGeometry:
        """Its intersection's MAP: from the schematic network, or from the SUMO network's lanes."""
        return self.sumo.geometry if self.sumo is not None else build_map(self.net, self.index)

    @property
    def map_topic(self) -> str:
        return self.topics.map(self.tile, self.iid)

    async def start(self) -> None:
        """Announce (status, MAP), subscribe to plans and to the BSMs of the tiles in radio range."""
        self.announce()
        self._reconnects = self.transport.stats.reconnects
        await self.transport.subscribe(self.topics.plan(self.iid), qos=1)
        await self.transport.subscribe(self.topics.priority_request(self.iid, "+"), qos=1)
        for tile in tiles_covering(self.position.lat_deg, self.position.lon_deg, self.range_m):
            await self.transport.subscribe(self.topics.area("bsm", tile), qos=0)
        if self.perception is not None:  # real time: the fleet's ground truth for its sensors (fast mode hands it over)
            await self.transport.subscribe(self.topics.truth(self.id), qos=0)

    def accept(self, msg: Message, read: Decoded | None = None) -> None:
        """The fleet's ground truth for the sensors (not a V2X message: checked, never measured); else as every
        service."""
        if self.perception is not None and msg.topic == self.topics.truth(self.id):
            try:
                users = truth.decode(msg.payload)
            except ValueError as e:
                self.bad.record("bad_truth", msg.topic, str(e), "fleet")
                return
            self.perception.sense(users)
            return
        super().accept(msg, read)

    def calls(self, now: float) -> set[int]:
        """Groups with a vehicle in their detection zone, from the BSMs heard in the last CALL_FRESH_S."""
        out: set[int] = set()
        exact: list[tuple[float, float]] = []  # positions stated without an accuracy: looked up all at once, below
        for v, at in self.heard.values():
            if now - at > CALL_FRESH_S:
                continue
            x, y = v[X], v[Y]
            # GNSS error: every lane it may be on calls (a missed call would strand it; an extra one costs a green)
            stated = not math.isnan(v[ACCURACY])
            slack = LANE_SLACK_M + (LANE_SIGMAS * min(v[ACCURACY], ACCURACY_CAP_M) if stated else 0.0)
            if self._sumo_lanes is not None:  # a SUMO junction: its ingress lanes
                out |= self._sumo_lanes.calls(self.index, x, y, v[HEADING], slack)
            elif not stated:
                exact.append((x, y))
            else:
                self._call(out, self.net.in_lanes_near(x, y, v[HEADING], slack))
        if exact:
            lanes, to_line = self.net.in_lanes_at(np.array([p[0] for p in exact]), np.array([p[1] for p in exact]))
            self._call(out, [(lane, d) for lane, d in zip(lanes.tolist(), to_line.tolist(), strict=True) if lane >= 0])
        return out

    def _call(self, out: set[int], hits: list[tuple[int, float]]) -> None:
        """Add to `out` the groups of the lanes a vehicle is on (lane, distance to the stop line [m]), if within
        DETECTOR_M of the line."""
        for lane, to_line in hits:
            if lane in self._lane_groups and to_line < DETECTOR_M:
                out |= self._lane_groups[lane]

    def tick(self, now: float) -> None:
        """Advance the controller to sim time `now` (with detector calls when actuated); publish SPaT and RSM when due."""
        calls = self.calls(now) if self.ctl.actuated else set()
        self.ctl.step(max(now, self.ctl.t), calls)
        self._record_lights()
        if self._next_s is None:
            self._next_s = now
        if now + 1e-9 < self._next_s:
            return
        self._next_s += SPAT_PERIOD_S * max(1, int((now - self._next_s) / SPAT_PERIOD_S + 1e-9) + 1)
        self._publish_spat()
        self._publish_rsm(now)

    def _record_lights(self) -> None:
        """Log each signal head's true light when it changes."""
        self.lights += [[round(self.ctl.t, 3), g, int(light)] for g, light in self._heads.changes()]

    def next_due_s(self) -> float:
        return self.clock.sim_s() if self._next_s is None else self._next_s

    def _publish_spat(self) -> None:
        """The SPaT: written at once in wire form (v2x.core.rsu_wire, the same bytes as the object way's), or as objects
        when a value is one only the codec can name."""
        topic, ts = self.topics.spat("rsu", self.tile, self.iid), self.clock.utc_us() // 1000
        wire = spat_wire(self._spat_head, self.ctl, ts, revision=self._k)
        if wire is not None:
            self.station.relay(topic, m.MessageType.SPAT, wire, expiry_s=SPAT_EXPIRY_S)
        else:
            state = intersection_state(self.net, self.index, self.ctl, ts, revision=self._k, name=self.iid)
            self.station.publish(topic, m.Spat((state,)), expiry_s=SPAT_EXPIRY_S)
        self._k += 1

    def _publish_rsm(self, now: float) -> None:
        """The RSM (`rsm`): written at once in wire form when it holds only road users heard over V2X (v2x.core.rsu_wire,
        the same bytes); as objects when the sensors add some, or when a value is one only the codec can name."""
        topic = self.topics.rsm(self.tile, self.id)
        if self.perception is None:
            self._forget(now)
            heard = sorted(self.heard.items())
            wire = rsu_wire.rsm_body(self._rsm_ref, [sid for sid, _ in heard], [  # `rsu_wire.row` of each, from its values
                (self._ptc[sid], v[LAT_DEG], v[LON_DEG], v[ELEVATION], not math.isnan(v[ELEVATION]), v[SPEED], v[HEADING],
                 v[WIDTH], v[LENGTH]) for sid, (v, _) in heard
            ])
            if wire is not None:
                self.station.relay(topic, m.MessageType.RSM, wire, expiry_s=SPAT_EXPIRY_S)
                return
        self.station.publish(topic, self.rsm(now), expiry_s=SPAT_EXPIRY_S)

    def _forget(self, now: float) -> None:
        """Road users not heard in the last RSM_WINDOW_S are no longer in the RSM."""
        for sid in [sid for sid, (_, at) in self.heard.items() if now - at > RSM_WINDOW_S]:
            del self.heard[sid]
            self._ptc.pop(sid, None)

    def rsm(self, now: float) -> m.Rsm:
        """The road users this RSU heard within range in the last RSM_WINDOW_S."""
        self._forget(now)
        parts = []
        for sid, (v, _) in sorted(self.heard.items()):
            parts.append(
                m.Participant(
                    type=m.ParticipantType.MOTOR, ptc_id=self._ptc[sid], source=m.SourceType.V2X, vehicle_id=sid,
                    position=position_of(v), speed_mps=v[SPEED], heading_deg=v[HEADING], width_m=v[WIDTH], length_m=v[LENGTH],
                )
            )
        if self.perception is not None:
            parts += self.perception.participants(now)
        return m.Rsm(self.position, tuple(parts))

    def _distance(self, _receiver: str, frame: m.Frame) -> float | None:
        """How far a BSM's sender is, for the sidelink."""
        if not isinstance(frame.body, m.Bsm):
            return None
        x, y = self.net.frame.to_local(frame.body.position.lat_deg, frame.body.position.lon_deg)
        return math.hypot(x - self.xy[0], y - self.xy[1])

    def handle(self, topic: str, frame: m.Frame) -> None:
        body = frame.body
        kind = m.type_name(body)
        sender = frame.header.sender_id
        if isinstance(body, m.Bsm):
            self.received[kind] += 1
            v = values_of(body, self.net.frame)
            if math.hypot(v[X] - self.xy[0], v[Y] - self.xy[1]) <= self.range_m:
                self.heard[sender] = (v, self.clock.sim_s())
                if sender not in self._ptc:
                    self._next_ptc = self._next_ptc % 65535 + 1
                    self._ptc[sender] = self._next_ptc
        elif isinstance(body, m.SignalPlan):
            self.received[kind] += 1
            plan = plan_from_message(body, self._permissive, self.ctl.plan.passage_s)
            reasons = self.limits.problems(plan)
            if frame.header.sender_kind is not m.SenderKind.CLOUD:
                reasons.insert(0, f"sent by a {frame.header.sender_kind.name.lower()}, not the cloud")
            late_ms = self.clock.utc_us() // 1000 - (body.valid_until_ms or 2**63)
            if late_ms > 0:
                reasons.insert(0, f"valid until {late_ms / 1000:.1f} s ago")
            if body.intersection.id != self.index + 1:
                reasons.insert(0, f"for intersection {body.intersection.id}, not {self.iid} ({self.index + 1})")
            if reasons:  # never reaches the controller
                self.bad.record("bad_plan", topic, f"plan {body.plan_id} refused: {'; '.join(reasons)}", sender)
                if len(self.refused) < MAX_REFUSALS_KEPT:
                    self.refused.append({"plan_id": body.plan_id, "from": sender, "sim_s": round(self.clock.sim_s(), 3), "reasons": reasons})
                return
            self.ctl.command(plan)
            self.counters.plans_applied += 1
            self.plans[body.plan_id] = {"issued_s": frame.header.sim_time_ms / 1000.0, "received_s": self.clock.sim_s()}
        elif isinstance(body, m.PriorityRequest):
            self.received[kind] += 1
            self._priority(topic, sender, frame.header.sim_time_ms / 1000.0, body)
        else:
            self.bad.record("not_handled", topic, kind, sender)

    def make_intake(self) -> BsmIntake:
        """Its BSMs taken as rows, each with where it is against the radio range."""
        return BsmIntake(self.reception, self.net.frame, (*self.xy, self.range_m))

    def took_bsms(self, intake: BsmIntake, batch: Batch, first: int, end: int) -> None:
        """`handle` of rows `first` to `end` of `batch`, BSMs `intake` took: each heard if within radio range."""
        self.received["bsm"] += end - first
        now, heard, ptc, senders, x0, y0 = self.clock.sim_s(), self.heard, self._ptc, intake.senders, *self.xy
        for s, v, where in zip(batch.slots[first:end].tolist(), batch.values[first:end].tolist(),
                               batch.radio[first:end].tolist(), strict=True):
            if where == OUT or (where == EDGE and math.hypot(v[X] - x0, v[Y] - y0) > self.range_m):
                continue
            sender = senders[s]
            heard[sender] = (v, now)
            if sender not in ptc:
                self._next_ptc = self._next_ptc % 65535 + 1
                ptc[sender] = self._next_ptc

    def _movement(self, req: m.PriorityRequest) -> int | None:
        """The signal group of the movement a request names (in lane -> out lane; no out lane: through)."""
        if self.sumo is not None:  # a SUMO junction: its MAP's connection from that lane to that lane
            conns = [c for ln in self.sumo.geometry.lanes if ln.lane_id == req.in_lane_id and ln.direction is m.LaneDirection.INGRESS
                     for c in ln.connections]
            conn = next((c for c in conns if c.lane_id == req.out_lane_id), None)
            conn = conn or next((c for c in conns if req.out_lane_id == 0 and m.Maneuver.STRAIGHT in c.maneuver), None)
            return None if conn is None else conn.signal_group
        in_link = self._lane_link.get(req.in_lane_id)
        if in_link is None:
            return None
        leg = self.net.links[in_link].leg
        out_link = self._lane_link.get(req.out_lane_id)
        out_leg = self.net.links[out_link].leg if out_link is not None else None
        turn = next((t for t in ("through", "left", "right") if self.net.exit_leg(leg, t) == out_leg), "through")
        g = self.net.intersections[self.index].groups.get((leg, turn))
        return None if g is None else self.net.groups[g].group_id

    def _priority(self, topic: str, sender: str, sent_s: float, req: m.PriorityRequest) -> None:
        """Grant (or refuse) a priority request and reply with a PriorityStatus (QoS 1)."""
        now = self.clock.sim_s()
        if req.type is m.RequestType.CANCELLATION:
            self.ctl.cancel_priority()
            self.priority_log.append({"vehicle": sender, "request_id": req.request_id, "type": "cancel", "sim_s": round(now, 3)})
            return
        group = self._movement(req)
        if group is None:
            self.bad.record("bad_priority_request", topic, f"lanes {req.in_lane_id} -> {req.out_lane_id} are no movement here", sender)
            return
        if not self.net.scenario.control.priority:
            state, action = m.PriorityState.REJECTED, m.PriorityAction.NONE
        else:
            done = self.ctl.request_priority(group, now + req.eta_s)
            state = m.PriorityState.GRANTED
            action = {"extension": m.PriorityAction.GREEN_EXTENSION, "early_green": m.PriorityAction.EARLY_GREEN}.get(done, m.PriorityAction.NONE)
        self.priority_log.append({
            "vehicle": sender, "request_id": req.request_id, "type": req.type.name.lower(), "sent_s": round(sent_s, 3),
            "sim_s": round(now, 3), "group": group, "eta_s": round(req.eta_s, 2), "state": state.name.lower(), "action": action.name.lower(),
        })
        reply = m.PriorityStatus(requester_id=sender, request_id=req.request_id, intersection=req.intersection, state=state, action=action, signal_group=group)
        self.station.publish(self.topics.priority_status(self.iid, sender), reply, qos=1)

    def summary(self) -> RsuSummary:
        return self._summary(
            RsuSummary, rsu=self.id, plans_applied=self.counters.plans_applied, plans=self.plan_log(), plans_refused=self.refused,
            priority=self.priority_log, intersection=self.iid, lights=self.lights,
            perception=self.perception.summary() if self.perception is not None else {},
        )

    def plan_log(self) -> list[dict[str, float | int | None]]:
        """Each plan the cloud sent: when it was issued, received, and applied at a phase boundary (None: not yet)."""
        applied = {pid: t for t, pid in self.ctl.plan_changes}
        return [{"plan_id": pid, **times, "applied_s": applied.get(pid)} for pid, times in self.plans.items()]

    def stopping(self) -> None:
        """Before a clean disconnect: say it stopped, and clear its MAP and status."""
        self.stopped([self.map_topic, self.status_topic])

    async def run(self, duration_s: float | None = None) -> None:
        """Real time: start, then tick and receive until `duration_s` of sim time (None: until cancelled)."""
        await self.start()
        await asyncio.sleep(max(-self.clock.sim_s(), 0.0))  # every tier begins at sim time 0
        while duration_s is None or self.clock.sim_s() < duration_s:
            self.turn()
            self.receive()
            self.tick(self.clock.sim_s())
            await asyncio.sleep(max(self.next_due_s() - self.clock.sim_s(), 0.0))


async def serve(
    sc: Scenario, conn: Connection, indices: list[int], duration_s: float | None, started: list[RsuService] | None = None,
) -> None:
    """Run RSUs for the given intersections, each with its own connection (a persistent session), until
    `duration_s`. `started` receives the services as soon as they exist (for a summary after Ctrl-C)."""
    net = Network(sc)
    clock = conn.clock()
    services: list[RsuService] = []
    transports: list[MqttTransport] = []
    authority = conn.authority("roadside", m.SenderKind.RSU, clock, [sc.sites[i] for i in indices])
    for i in indices:
        # a tick's SPaT and RSM (and any reply) leave in one write: half the system calls, the same bytes in the same order
        transport = conn.transport(rsu_id(sc, i), clean_start=False, session_expiry_s=3600, coalesce_writes=True)
        transports.append(transport)
        services.append(RsuService(net, i, transport, conn.topics, clock, conn.impairment(sc)))
        if authority is not None:  # each RSU's pseudonym speaks for its own intersection only
            services[-1].sign_with(authority, role_permissions(m.SenderKind.RSU, [sc.sites[i]]))
        transport.will = services[-1].will
    if started is not None:
        started.extend(services)
    for tr in transports:
        await tr.start()
    try:
        async with asyncio.TaskGroup() as tg:
            for svc in services:
                tg.create_task(svc.run(duration_s), name=svc.id)
    finally:
        for svc, tr in zip(services, transports, strict=True):
            svc.stopping()
            await tr.drain(2.0)
            await tr.close()
