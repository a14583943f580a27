"""What the visualiser knows: the latest state of the area, built from messages and nothing else.

`Scene.ingest(topic, payload, rx_ns)` takes one MQTT message as it came over the wire (live
from a broker or from a recording) and updates:

  - intersections from MAP (lanes and stop lines in local metres);
  - vehicles from BSMs (position, heading, size, speed, class, events), dropped when
    their BSMs stop for `STALE_S` of sim time (they left the network);
  - signal state per intersection from SPaT (the RSU's sidelink path, else the cloud's);
  - hazards from RSI (cleared by an empty retained payload or an ENDED status);
  - RSUs from their status and MAP/RSM, with the radio range their status announces;
  - cloud plan changes, advisories and signal-priority requests and replies;
  - counts per message type and sim second, and latency from each sender kind to here.

It has no pygame and no I/O, so it is unit-tested on its own. Bad payloads are counted per
kind and logged once per topic; nothing raises out of `ingest`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.errors import DecodeError
from v2x.core.geo import LocalFrame
from v2x.core.topics import DEFAULT_ROOT, Topics, kind_of

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

STALE_S = 1.5  # [s] of sim time without a BSM before a vehicle is taken off the picture
WARN_RANGE_M = 300.0  # [m] a hazard this close ahead (as HLW's range) marks a vehicle warned
WARN_CONE_DEG = 30.0  # [deg] "ahead": within this angle of the vehicle's heading
PRIORITY_FRESH_S = 2.5  # [s] a priority request counts as active this long after its last update (1 Hz)
FLOW_S = 0.4  # [s] a message's flow line fades out over this much sim time
FLOW_MAX = 1_000  # priority-request flow lines kept at most
LATENCY_WINDOW = 5_000  # latencies kept per hop for the live p50/p99
SANE_LATENCY_S = 60.0  # [s] beyond this the sender's clock is not the wall clock (fast mode): no latency
SPAT_STALE_S = 1.0  # [s] a signal head whose SPaT is older than this goes dark (as SPaT's own expiry)
#: the periodic streams whose times set the picture's clock: a service's status at shutdown does not move it
CLOCK_TYPES = frozenset({"bsm", "spat", "rsm"})
DEFAULT_RANGE_M = 300.0  # [m] an RSU's radio range when its status does not say
RUN_MARKER = Topics("").run_marker().strip("/")  # the run's marker, under the root


class Flag:
    """Bits of `Vehicles.flags`: what the wire says about a vehicle."""

    BRAKING = 1  # hard-braking event in its BSM
    HAZARD_LIGHTS = 2  # hazard lights or disabled vehicle
    EMERGENCY = 4  # vehicle class emergency
    PRIORITY = 8  # an active signal-priority request
    GRANTED = 16  # ... that the RSU granted
    WARNED = 32  # a hazard ahead within range, or an advisory names it


class Vehicles:
    """The vehicles on the picture, as arrays (one row each) for the renderer."""

    def __init__(self, capacity: int = 256) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.xy = np.zeros((capacity, 2))
        self.heading = np.zeros(capacity)  # [rad] clockwise from north
        self.length = np.zeros(capacity)
        self.width = np.zeros(capacity)
        self.speed = np.zeros(capacity)
        self.flags = np.zeros(capacity, dtype=np.int64)
        self.seen_ms = np.zeros(capacity, dtype=np.int64)  # sim time of the latest BSM
        self.last: list[tuple[m.Header, m.Bsm]] = []

    @property
    def n(self) -> int:
        return len(self.ids)

    def _grow(self) -> None:
        cap = 2 * len(self.heading)
        self.xy = np.resize(self.xy, (cap, 2))
        for name in ("heading", "length", "width", "speed", "flags", "seen_ms"):
            setattr(self, name, np.resize(getattr(self, name), cap))

    def update(self, header: m.Header, bsm: m.Bsm, xy: tuple[float, float]) -> None:
        i = self.index.get(header.sender_id)
        if i is None:
            i = len(self.ids)
            if i == len(self.heading):
                self._grow()
            self.index[header.sender_id] = i
            self.ids.append(header.sender_id)
            self.last.append((header, bsm))
        else:
            if header.sim_time_ms < self.seen_ms[i]:
                return  # older than what we show (a late or replayed message)
            self.last[i] = (header, bsm)
        self.xy[i] = xy
        self.heading[i] = math.radians(bsm.heading_deg)
        self.length[i] = bsm.length_m
        self.width[i] = bsm.width_m
        self.speed[i] = bsm.speed_mps
        flags = 0
        if m.VehicleEvent.HARD_BRAKING in bsm.events:
            flags |= Flag.BRAKING
        if bsm.events & {m.VehicleEvent.HAZARD_LIGHTS, m.VehicleEvent.DISABLED_VEHICLE}:
            flags |= Flag.HAZARD_LIGHTS
        if bsm.vehicle_class == m.VehicleClass.EMERGENCY:
            flags |= Flag.EMERGENCY
        self.flags[i] = flags
        self.seen_ms[i] = header.sim_time_ms

    def expire(self, now_ms: int, stale_ms: int) -> int:
        """Drop vehicles not heard from for `stale_ms`; how many."""
        gone = [vid for vid, i in self.index.items() if now_ms - self.seen_ms[i] > stale_ms]
        for vid in gone:
            i = self.index.pop(vid)
            j = len(self.ids) - 1
            if i != j:  # move the last row into the hole
                moved = self.ids[j]
                self.ids[i], self.last[i] = moved, self.last[j]
                self.index[moved] = i
                self.xy[i] = self.xy[j]
                for arr in (self.heading, self.length, self.width, self.speed, self.flags, self.seen_ms):
                    arr[i] = arr[j]
            self.ids.pop()
            self.last.pop()
        return len(gone)


@dataclass
class LaneView:
    lane_id: int
    name: str
    ingress: bool
    approach: int  # MAP approach id: the lanes of one road leg
    width_m: float
    points: FloatArray  # (n, 2) local metres; an ingress lane starts at its stop line
    movements: tuple[tuple[int, str], ...]  # ingress: (signal group, turn "L"/"T"/"R"/"U") of its connections


@dataclass
class IntersectionView:
    name: str
    ref: m.IntersectionRef
    sender: str
    center: tuple[float, float]
    lanes: list[LaneView]
    revision: int


@dataclass
class HazardView:
    sender: str
    event: m.RoadTrafficEvent
    xy: tuple[float, float]
    travel_rad: float | None = None  # the direction of travel of the affected lane, when MAP names it


@dataclass
class RsuView:
    sender: str
    intersection: str = ""
    state: str = "online"  # "online", "stopped" (clean shutdown) or "lost" (its Last Will)
    range_m: float = DEFAULT_RANGE_M
    xy: tuple[float, float] | None = None


@dataclass
class PlanChange:
    sim_s: float
    intersection: str
    plan_id: int
    cycle_s: float
    greens: tuple[float, ...]
    reason: str


@dataclass
class Flow:
    sim_ms: int
    src: tuple[float, float]
    dst: str  # "rsu:<sender>" or "cloud"
    kind: str


def ahead(xy: FloatArray, heading_rad: FloatArray, hz: HazardView) -> npt.NDArray[np.bool_]:
    """Per vehicle: the hazard lies ahead (within WARN_CONE_DEG of its heading) within WARN_RANGE_M, and when
    the RSI names its lane, the vehicle travels that lane's way (not the opposite carriageway)."""
    dx, dy = hz.xy[0] - xy[:, 0], hz.xy[1] - xy[:, 1]
    dist = np.hypot(dx, dy)
    cone = math.cos(math.radians(WARN_CONE_DEG))
    along = dx * np.sin(heading_rad) + dy * np.cos(heading_rad)
    out = (dist <= WARN_RANGE_M) & (along > 0) & (along >= dist * cone)
    if hz.travel_rad is not None:
        out &= np.cos(heading_rad - hz.travel_rad) >= cone
    return out


def _service_state(s: m.Status) -> str:
    if s.state == m.ServiceState.ONLINE:
        return "online"
    return "stopped" if s.detail == m.STOPPED else "lost"


def _turn(maneuver: frozenset[m.Maneuver]) -> str:
    for man, letter in ((m.Maneuver.LEFT, "L"), (m.Maneuver.RIGHT, "R"), (m.Maneuver.U_TURN, "U")):
        if man in maneuver:
            return letter
    return "T"


@dataclass
class Scene:
    root: str = DEFAULT_ROOT
    frame: LocalFrame | None = None
    vehicles: Vehicles = field(default_factory=Vehicles)
    intersections: dict[str, IntersectionView] = field(default_factory=dict)
    spat: dict[tuple[str, str], tuple[m.Header, m.IntersectionState]] = field(default_factory=dict)  # (iid, path)
    hazards: dict[tuple[str, int], HazardView] = field(default_factory=dict)
    rsus: dict[str, RsuView] = field(default_factory=dict)
    cloud_state: str = "not heard"
    plans: deque[PlanChange] = field(default_factory=lambda: deque(maxlen=6))
    plan_flash: dict[str, int] = field(default_factory=dict)  # intersection -> sim ms until which it flashes
    advisories: dict[str, list[tuple[int, m.Advisory]]] = field(default_factory=dict)  # vehicle -> (valid until UTC ms, advisory)
    priority: dict[str, tuple[int, m.PriorityRequest, m.PriorityState | None]] = field(default_factory=dict)
    flows: deque[Flow] = field(default_factory=lambda: deque(maxlen=FLOW_MAX))  # priority requests (BSMs: flow_lines)
    now_ms: int = 0  # newest sim time of a periodic message (CLOCK_TYPES)
    utc_ms: int = 0  # its generation time
    received: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    broker_version: str = ""
    _per_second: dict[int, Counter[str]] = field(default_factory=dict)
    _latency: dict[str, deque[int]] = field(default_factory=dict)
    _bad_topics: set[str] = field(default_factory=set)

    # -- ingest ------------------------------------------------------------------------

    def ingest(self, topic: str, payload: bytes, rx_ns: int) -> m.Frame | None:
        """One message from the wire; the frame it decoded to, once applied (None when it was counted as bad, or
        was not a frame: a cleared retained message, the broker's version). Never raises on bad input: counts it."""
        if topic.startswith("$SYS/"):
            self.broker_version = payload.decode("utf-8", "replace")[:80]
            return None
        rest = topic[len(self.root) + 1:] if topic.startswith(self.root + "/") else ""
        if rest == RUN_MARKER:  # the run's claim on the root (v2x.run.claim): a Status, not a message to show
            self.received["run marker"] += 1
            return None
        kind = kind_of(topic) or ""
        if not payload:
            if kind == "rsi":  # a retained hazard cleared
                parts = rest.split("/")
                if len(parts) >= 3 and parts[-1].isdigit():
                    self.hazards.pop((parts[-2], int(parts[-1])), None)
            self.received["cleared"] += 1
            return None
        try:
            frame = codec.decode(payload)
        except DecodeError as e:
            self._bad(topic, e.kind, str(e))
            return None
        h, body = frame.header, frame.body
        mtype = m.message_type(body).value
        if kind != mtype:
            self._bad(topic, "wrong_type", f"a {mtype} message on a {kind or 'foreign'} topic")
            return None
        self.received[mtype] += 1
        if mtype in CLOCK_TYPES:
            self.now_ms = max(self.now_ms, h.sim_time_ms)
            self.utc_ms = max(self.utc_ms, h.gen_time_us // 1000)
        sec = h.sim_time_ms // 1000
        per = self._per_second.get(sec)
        if per is None:
            per = self._per_second[sec] = Counter()
            for old in [s for s in self._per_second if s < sec - 3]:
                del self._per_second[old]
        per[mtype] += 1
        hop = f"{h.sender_kind.name.lower()}->viz"
        lat = self._latency.get(hop)
        if lat is None:
            lat = self._latency[hop] = deque(maxlen=LATENCY_WINDOW)
        lat.append(rx_ns // 1000 - h.gen_time_us)
        try:
            self._apply(topic, rest, h, body)
        except ValueError as e:  # a well-formed message that makes no sense (a lane of one node, ...)
            self._bad(topic, "invalid", str(e))
        except Exception as e:  # a bug: counted and logged, never fatal to the window
            self._bad(topic, "handler_error", f"{type(e).__name__}: {e}")
        else:
            return frame
        return None

    def _bad(self, topic: str, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if topic not in self._bad_topics:  # once per sender (the topic names it)
            self._bad_topics.add(topic)
            log.warning("%s: %s payload: %s", topic, kind, detail)

    def local(self, p: m.GeoPoint) -> tuple[float, float]:
        if self.frame is None:
            self.frame = LocalFrame(p.lat_deg, p.lon_deg)
        return self.frame.to_local(p.lat_deg, p.lon_deg)

    def _apply(self, topic: str, rest: str, h: m.Header, body: m.Body) -> None:
        if isinstance(body, m.Bsm):
            xy = self.local(body.position)
            self.vehicles.update(h, body, xy)
        elif isinstance(body, m.Spat):
            path = rest.split("/")[1] if rest.count("/") >= 1 else "rsu"
            for st in body.intersections:
                self.spat[(st.name, path)] = (h, st)
        elif isinstance(body, m.MapData):
            for ig in body.intersections:
                self._map(h, ig)
        elif isinstance(body, m.Rsi):
            for ev in body.events:
                key = (h.sender_id, ev.event_id)
                if ev.status == m.EventStatus.ENDED:
                    self.hazards.pop(key, None)
                else:
                    self.hazards[key] = HazardView(h.sender_id, ev, self.local(ev.position), self._travel(ev.lanes))
        elif isinstance(body, m.Rsm):
            self._rsu(h.sender_id).xy = self.local(body.ref_pos)
        elif isinstance(body, m.Status):
            if h.sender_kind == m.SenderKind.RSU:
                rsu = self._rsu(h.sender_id)
                rsu.state = _service_state(body)
                if rsu.state == "online":
                    words = body.detail.split()
                    rsu.intersection = words[0] if words else ""
                    for w in words[1:]:
                        if w.startswith("range_m="):
                            try:
                                rsu.range_m = float(w.split("=", 1)[1])
                            except ValueError:
                                raise ValueError(f"status of {h.sender_id}: radio range {w!r} is not a number") from None
            elif h.sender_kind == m.SenderKind.CLOUD:
                self.cloud_state = _service_state(body)
        elif isinstance(body, m.SignalPlan):
            iid = rest.split("/")[-1]
            self.plans.append(PlanChange(
                h.sim_time_ms / 1000, iid, body.plan_id, body.cycle_s,
                tuple(p.green_s for p in body.phases), body.reason,
            ))
            self.plan_flash[iid] = h.sim_time_ms + 3000
        elif isinstance(body, m.Advisory):
            if body.target_id:
                held = [a for a in self.advisories.get(body.target_id, []) if a[0] > self.utc_ms]
                self.advisories[body.target_id] = [*held, (body.valid_until_ms, body)][-5:]
        elif isinstance(body, m.PriorityRequest):
            if body.type == m.RequestType.CANCELLATION:
                self.priority.pop(h.sender_id, None)
            else:
                before = self.priority.get(h.sender_id)
                self.priority[h.sender_id] = (h.sim_time_ms, body, before[2] if before else None)
            iid = rest.split("/")[1] if rest.count("/") >= 1 else ""
            target = next((r for r in self.rsus.values() if r.intersection == iid), None)
            if body.position is not None and target is not None:
                self.flows.append(Flow(h.sim_time_ms, self.local(body.position), f"rsu:{target.sender}", "prq"))
        elif isinstance(body, m.PriorityStatus):
            req = self.priority.get(body.requester_id)
            if req is not None:
                self.priority[body.requester_id] = (req[0], req[1], body.state)

    def _travel(self, lanes: tuple[m.LaneRef, ...]) -> float | None:
        """Direction of travel [rad, clockwise from north] of the first affected lane found in MAP."""
        for ref in lanes:
            for iv in self.intersections.values():
                if iv.ref == ref.intersection:
                    lane = next((ln for ln in iv.lanes if ln.lane_id == ref.lane_id), None)
                    if lane is not None:
                        d = lane.points[0] - lane.points[1] if lane.ingress else lane.points[1] - lane.points[0]
                        return math.atan2(float(d[0]), float(d[1]))
        return None

    def _rsu(self, sender: str) -> RsuView:
        rsu = self.rsus.get(sender)
        if rsu is None:
            rsu = self.rsus[sender] = RsuView(sender)
        return rsu

    def _map(self, h: m.Header, ig: m.IntersectionGeometry) -> None:
        cx, cy = self.local(ig.ref_point)
        lanes = []
        for lane in ig.lanes:
            pts = np.array([(cx + x, cy + y) for x, y in lane.nodes], dtype=float).reshape(-1, 2)
            if len(pts) < 2:
                raise ValueError(f"MAP {ig.name} lane {lane.lane_id} has {len(pts)} node(s); a lane needs two")
            movements = tuple(sorted({(c.signal_group, _turn(c.maneuver)) for c in lane.connections if c.signal_group}))
            lanes.append(LaneView(
                lane.lane_id, lane.name, lane.direction == m.LaneDirection.INGRESS, lane.approach_id, lane.width_m, pts, movements,
            ))
        self.intersections[ig.name] = IntersectionView(ig.name, ig.ref, h.sender_id, (cx, cy), lanes, ig.revision)
        if h.sender_kind == m.SenderKind.RSU:
            rsu = self._rsu(h.sender_id)
            rsu.intersection = rsu.intersection or ig.name
            if rsu.xy is None:
                rsu.xy = (cx, cy)

    # -- housekeeping and queries --------------------------------------------------------

    def tick(self) -> None:
        """Drop what has gone stale: vehicles that stopped sending, old flows and requests; set flags."""
        self.vehicles.expire(self.now_ms, int(STALE_S * 1000))
        while self.flows and self.flows[0].sim_ms < self.now_ms - FLOW_S * 1000:
            self.flows.popleft()
        for vid in [v for v, (t, _, _) in self.priority.items() if self.now_ms - t > PRIORITY_FRESH_S * 1000]:
            del self.priority[vid]
        self._flags()

    def _flags(self) -> None:
        v = self.vehicles
        n = v.n
        if n == 0:
            return
        flags = v.flags[:n]
        flags &= ~(Flag.PRIORITY | Flag.GRANTED | Flag.WARNED)
        for vid, (_, _, state) in self.priority.items():
            i = v.index.get(vid)
            if i is not None:
                flags[i] |= Flag.PRIORITY | (Flag.GRANTED if state == m.PriorityState.GRANTED else 0)
        warned = np.zeros(n, dtype=bool)
        for hz in self.hazards.values():
            warned |= ahead(v.xy[:n], v.heading[:n], hz)
        for vid, held in self.advisories.items():
            i = v.index.get(vid)
            if i is not None and any(until > self.utc_ms for until, _ in held):
                warned[i] = True
        flags[warned] |= Flag.WARNED

    def flow_lines(self) -> list[Flow]:
        """The message flows of the last FLOW_S: each vehicle's latest BSM to the cloud and to the RSUs in range
        (derived from the vehicles, not stored per message), and the priority requests."""
        v = self.vehicles
        out = []
        for i in np.flatnonzero(self.now_ms - v.seen_ms[: v.n] < FLOW_S * 1000).tolist():
            xy = (float(v.xy[i, 0]), float(v.xy[i, 1]))
            t = int(v.seen_ms[i])
            out.append(Flow(t, xy, "cloud", "bsm"))
            out += [Flow(t, xy, f"rsu:{r.sender}", "bsm") for r in self.rsus.values()
                    if r.state == "online" and r.xy is not None and math.dist(r.xy, xy) <= r.range_m]
        return out + list(self.flows)

    def rates(self) -> Counter[str]:
        """Messages per type in the last complete sim second."""
        return self._per_second.get(self.now_ms // 1000 - 1, Counter())

    def latency_ms(self) -> dict[str, tuple[float, float] | None]:
        """p50 and p99 [ms] per hop from what arrived lately; None when the sender's clock is a sim clock."""
        out: dict[str, tuple[float, float] | None] = {}
        for hop, values in sorted(self._latency.items()):
            if not values:
                continue
            a = np.fromiter(values, dtype=np.float64, count=len(values))
            p50, p99 = np.percentile(a, [50, 99]) / 1000.0
            out[hop] = None if abs(p50) > SANE_LATENCY_S * 1000 else (float(p50), float(p99))
        return out

    def signal(self, intersection: str) -> tuple[str, m.Header, m.IntersectionState] | None:
        """The signal state to show: the RSU's (sidelink) SPaT, else the cloud's; None when neither is fresh."""
        for path in ("rsu", "cloud"):
            got = self.spat.get((intersection, path))
            if got is not None and self.now_ms - got[0].sim_time_ms <= SPAT_STALE_S * 1000:
                return path, got[0], got[1]
        return None

    def countdown_s(self, st: m.IntersectionState, event: m.MovementEvent) -> float | None:
        """Seconds left in a movement's current state, from the SPaT's likely end, at the newest time heard."""
        if event.timing is None or event.timing.likely_end_s is None:
            return None
        return (st.timestamp_ms + event.timing.likely_end_s * 1000 - self.utc_ms) / 1000

    def nearest_intersection(self, xy: tuple[float, float]) -> IntersectionView | None:
        if not self.intersections:
            return None
        return min(self.intersections.values(), key=lambda iv: math.dist(iv.center, xy))

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(xmin, ymin, xmax, ymax) of the road and the vehicles, local metres."""
        pts = [lane.points for iv in self.intersections.values() for lane in iv.lanes]
        if self.vehicles.n:
            pts.append(self.vehicles.xy[: self.vehicles.n])
        if not pts:
            return None
        allp = np.concatenate(pts)
        return float(allp[:, 0].min()), float(allp[:, 1].min()), float(allp[:, 0].max()), float(allp[:, 1].max())

    def describe(self, vid: str) -> list[str]:
        """The click panel of one vehicle: its last BSM, the SPaT ages, what it is warned of."""
        i = self.vehicles.index.get(vid)
        if i is None:
            return [f"{vid}: no longer heard"]
        h, b = self.vehicles.last[i]
        xy = (float(self.vehicles.xy[i, 0]), float(self.vehicles.xy[i, 1]))
        lines = [
            f"{vid}  ({b.vehicle_class.name.lower().replace('_', ' ')})",
            f"BSM seq {h.seq}, sim {h.sim_time_ms / 1000:.1f} s",
            f"speed {b.speed_mps:.1f} m/s  heading {b.heading_deg:.0f}°",
            f"accel {b.accel_mps2:+.1f} m/s²  brake {'on' if b.brake_applied else 'off'}",
            f"size {b.length_m:.1f} × {b.width_m:.1f} m",
            f"lat {b.position.lat_deg:.6f}  lon {b.position.lon_deg:.6f}",
        ]
        if b.events:
            lines.append("events " + ", ".join(sorted(e.name.lower() for e in b.events)))
        iv = self.nearest_intersection(xy)
        if iv is not None:
            for path in ("rsu", "cloud"):
                got = self.spat.get((iv.name, path))
                if got is not None:
                    lines.append(f"SPaT {iv.name} via {path}: {max(h.sim_time_ms - got[0].sim_time_ms, 0)} ms older than its BSM")
        warn = []
        for hz in self.hazards.values():
            d = math.dist(hz.xy, xy)
            if ahead(self.vehicles.xy[i:i + 1], self.vehicles.heading[i:i + 1], hz)[0]:
                warn.append(f"hazard {hz.event.kind.name.lower()} #{hz.event.event_id} at {d:.0f} m")
        for until, a in self.advisories.get(vid, []):
            if until > self.utc_ms:
                warn.append(f"advisory {a.kind.name.lower()}: {a.text or a.advised_speed_mps}")
        pr = self.priority.get(vid)
        if pr is not None:
            warn.append(f"priority request #{pr[1].request_id}: {pr[2].name.lower() if pr[2] else 'no reply yet'}")
        lines.extend(warn or ["no warnings on the wire"])
        return lines
