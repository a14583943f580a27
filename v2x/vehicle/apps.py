"""Day-1 vehicle applications (T/CSAE 53 names) and the warnings they raise.

Each app is a plain function of what one vehicle knows (its position on its path, its speed,
the SPaT and RSI it received); `Apps` runs them over the fleet each step and keeps every
warning as an event: time, vehicle, app, the message that triggered it, and the point on the
vehicle's path it warns of, for the lead time.

  HLW   hazard ahead: an RSI hazard lies on the approach the vehicle is on or heading for,
        not yet passed, within `HLW_RANGE_M` along its path. Lead time: warning to the
        vehicle's arrival at the hazard's distance from the stop line (measured).
  RLVW  red-light violation warning: with a stop line ahead within `RLVW_RANGE_M`, the SPaT
        says yellow or red, at its current speed the vehicle reaches the line after red
        begins, and stopping would take more than comfortable braking (ITE's 3 m/s^2: the
        driver is past the point of a comfortable stop). Lead time: the predicted time to the
        stop line at the warning.

  FCW   forward collision warning: the leader's BSM, heard over the sidelink, gives a
        time-to-collision (gap / closing speed) under `FCW_TTC_S` while closing faster than
        `FCW_MIN_CLOSING_MPS`, and avoiding it takes more than comfortable braking (3 m/s^2,
        as RLVW): a driver already braking in time is not warned. Lead time: the
        time-to-collision at the warning.
  EBW   emergency brake warning: a vehicle up to `EBW_VEHICLES` ahead in the lane, within
        `EBW_RANGE_M`, sends a BSM with the hard-braking event (over 0.4 g). Lead time: the
        time to reach its position at the current speed.
  EVW   emergency vehicle warning: an emergency vehicle's BSM (sirens on) heard from behind
        in the same lane within `EVW_RANGE_M`; the warned driver moves to the next lane if
        there is room (making way). Lead time: the time the emergency vehicle needs to close
        the gap at its speed.
  GLOSA green light optimal speed advisory (when the scenario's `fleet.glosa` is on): with a
        stop line ahead within `GLOSA_RANGE_M` showing red (as SPaT says), the speed that
        reaches the back of the queue as it starts moving, if that is between `GLOSA_MIN_MPS`
        and the limit; the vehicle follows it as its desired speed. The queue is the vehicles
        ahead in the lane up to the stop line, heard by their BSMs: its back is `JAM_SPACING_M`
        per vehicle before the line, and starts moving `START_UP_S` + `DISCHARGE_S` per
        vehicle after the green (the start-up wave). One advisory event per vehicle and
        approach; lead time: the predicted time to the stop line at the advice.

The sidelink apps (FCW, EBW, EVW, and GLOSA's queue) act only on BSMs the vehicle heard
(`v2x.vehicle.sidelink`): within range, past the sidelink's loss, at most a second old.

Ground truth for the hazard measurements comes from the scenario's events (`HazardWatch`):
which vehicles were affected when a hazard began, when each was warned, and whether any
reached the hazard unwarned, once it stands in its lane (the traffic core places a stalled
car when its place is clear: at its start, or a little later when a vehicle is there or too
close behind to stop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from v2x.core import messages as m
from v2x.core.jsonview import JsonRecord
from v2x.core.network import LinkKind, Network, SignalGroup
from v2x.core.scenario import HazardEvent
from v2x.core.traffic import EMERGENCY, YELLOW_DECEL_MPS2, Light, Traffic, light_of
from v2x.vehicle.belief import SignalBelief
from v2x.vehicle.sidelink import Neighbours

HLW_RANGE_M = 300.0  # [m] along the path: a hazard further ahead is not yet worth a warning
RLVW_RANGE_M = 150.0  # [m] to the stop line
GLOSA_RANGE_M = 300.0  # [m] to the stop line: about the sidelink's range
GLOSA_MIN_MPS = 15.0 / 3.6  # [m/s] slower advice is not given: the driver stops as usual
MIN_SPEED_MPS = 0.5  # below this a vehicle is not about to enter anything
FCW_TTC_S = 2.5  # [s] time-to-collision threshold (ISO 15623 systems warn around 2-3 s)
FCW_MIN_CLOSING_MPS = 2.0  # [m/s] slower closing is ordinary car-following
EBW_RANGE_M = 150.0  # [m] ahead along the lane
EBW_VEHICLES = 3  # vehicles ahead in the lane whose hard braking is worth a warning
EVW_RANGE_M = 200.0  # [m] behind, along the lane
JAM_SPACING_M = 7.0  # [m] per queued vehicle: a car's length plus the standstill gap
START_UP_S = 2.0  # [s] from green until the first queued vehicle moves
DISCHARGE_S = 1.0  # [s] per queued vehicle: the start-up wave reaching the back of the queue
MAX_EVENTS_KEPT = 10_000  # warnings listed in the report (all are counted)


@dataclass
class Warning:
    t_s: float  # [s] sim time
    vehicle: int
    app: str
    trigger: str  # the message: "rsi cloud/1", "spat J1 rev 12 via rsu"
    target_s: float  # [m] along the vehicle's route: the hazard, or the stop line
    lead_s: float | None = None  # [s] warning to arrival (measured for HLW, predicted for RLVW)

    def to_json(self) -> dict[str, object]:
        return {"t_s": round(self.t_s, 2), "vehicle": self.vehicle, "app": self.app, "trigger": self.trigger,
                "lead_s": None if self.lead_s is None else round(self.lead_s, 2)}


def approach_point(net: Network, x: float, y: float) -> tuple[int, str, float] | None:
    """(intersection, leg, distance to the stop line [m]) of a point on an approach lane."""
    hit = net.in_lane_at(x, y)
    if hit is None:
        return None
    lk = net.links[hit[0]]
    return lk.intersection, lk.leg, hit[1]


def route_points(net: Network, intersection: int, leg: str, to_line_m: float) -> np.ndarray:
    """Per route: where along it [m] the point `to_line_m` before the stop line of (intersection, leg) lies; NaN: not on it."""
    out = np.full(len(net.routes), np.nan)
    for r in range(len(net.routes)):
        for k, lid in enumerate(net.route_links[r]):
            if lid < 0:
                break
            lk = net.links[int(lid)]
            if lk.kind == LinkKind.IN and lk.intersection == intersection and lk.leg == leg:
                out[r] = net.route_start[r, k] + net.link_length[lid] - to_line_m
                break
    return out


@dataclass
class AppKpis(JsonRecord):
    warnings: int = 0
    vehicles: int = 0
    lead_time_s_p50: float | None = None
    lead_time_s_min: float | None = None
    with_lead_time: int = 0


@dataclass
class HazardWarnings(JsonRecord):
    """Per hazard, from its start to the first and the last affected vehicle warned [ms]; `first`, `last`: the
    worst hazard's."""

    first: float | None = None
    last: float | None = None
    per_hazard: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Apps:
    net: Network
    glosa: bool = False
    warnings: list[Warning] = field(default_factory=list)
    advice: dict[int, float] = field(default_factory=dict)  # vehicle -> GLOSA speed [m/s], for the next step
    _warned: set[tuple[int, str, str]] = field(default_factory=set)  # (vehicle, app, what)
    _pending: list[Warning] = field(default_factory=list)  # HLW awaiting arrival
    _hazard_at: dict[str, np.ndarray | None] = field(default_factory=dict)  # RSI key -> route_points, None: off every approach
    neighbours: Neighbours | None = None  # what vehicles hear of each other (V2V); None: no sidelink apps
    make_way: set[int] = field(default_factory=set)  # vehicles warned by EVW of an emergency vehicle behind, this step
    _leaders: tuple[np.ndarray, np.ndarray] | None = None  # traffic.leaders() of this step

    def step(self, traffic: Traffic, hazards: Mapping[int, Mapping[str, m.RoadTrafficEvent]],
             beliefs: Mapping[int, SignalBelief]) -> None:
        """Run every app for every vehicle with an OBU, after the traffic moved to `traffic.t`."""
        if traffic.n == 0:
            return
        if hazards or self._pending:  # only HLW and its arrivals look vehicles up by id
            index = {int(v): i for i, v in enumerate(traffic.ids)}
            self._hlw(traffic, index, hazards)
            self._arrivals(traffic, index)
        self._rlvw(traffic, beliefs)
        self._leaders = traffic.leaders() if self.neighbours is not None else None
        if self._leaders is not None:
            self._sidelink(traffic, beliefs.keys())
        if self.glosa:
            self._glosa(traffic, beliefs)

    def hazard_warned(self, traffic: Traffic, hazards: Mapping[int, Mapping[str, m.RoadTrafficEvent]]) -> np.ndarray:
        """Per vehicle: warned (HLW) of a hazard that its OBU still holds active."""
        warned = [vid for vid, active in hazards.items() if any((vid, "hlw", key) in self._warned for key in active)]
        return np.isin(traffic.ids, warned)

    def warn(self, w: Warning, what: str) -> bool:
        """Keep warning `w` about `what` (a hazard's key, a signal group, a vehicle), unless its vehicle was already
        warned by its app about it: whether it is new. For another backend's vehicles (SUMO)."""
        return self._warn(w, what)

    def _warn(self, w: Warning, what: str) -> bool:
        key = (w.vehicle, w.app, what)
        if key in self._warned:
            return False
        self._warned.add(key)
        self.warnings.append(w)
        return True

    def _hlw(self, traffic: Traffic, index: Mapping[int, int], hazards: Mapping[int, Mapping[str, m.RoadTrafficEvent]]) -> None:
        for vid, active in hazards.items():
            i = index.get(vid)
            if i is None or not active:
                continue
            for key, ev in active.items():
                if (vid, "hlw", key) in self._warned:
                    continue
                if key not in self._hazard_at:
                    at = approach_point(self.net, *self.net.frame.to_local(ev.position.lat_deg, ev.position.lon_deg))
                    self._hazard_at[key] = None if at is None else route_points(self.net, *at)
                table = self._hazard_at[key]
                if table is None:
                    continue
                target = float(table[int(traffic.route[i])])
                s = float(traffic.s[i])
                if not (s < target <= s + HLW_RANGE_M):  # NaN (not on its path) fails too
                    continue
                w = Warning(traffic.t, vid, "hlw", f"rsi {key}", target)
                if self._warn(w, key):
                    self._pending.append(w)

    def _with_spat(
        self, traffic: Traffic, idx: np.ndarray, group: np.ndarray, beliefs: Mapping[int, SignalBelief]
    ) -> Iterator[tuple[int, int, SignalBelief, SignalGroup]]:
        """(slot, vehicle, its belief, the signal group ahead) for each slot in `idx` whose vehicle has an OBU."""
        for i in idx:
            vid = int(traffic.ids[i])
            belief = beliefs.get(vid)
            if belief is not None:
                yield int(i), vid, belief, self.net.groups[int(group[i])]

    def _spat_warning(
        self, traffic: Traffic, app: str, vid: int, belief: SignalBelief, sg: SignalGroup, at_s: float, lead_s: float
    ) -> None:
        """One warning per vehicle, app and approach, naming the SPaT it came from."""
        got = belief.latest[sg.intersection + 1]
        name = self.net.intersections[sg.intersection].spec.id
        w = Warning(traffic.t, vid, app, f"spat {name} rev {got.state.revision} via {got.path}", at_s, lead_s=lead_s)
        self._warn(w, f"{sg.intersection}/{sg.leg}")

    def _rlvw(self, traffic: Traffic, beliefs: Mapping[int, SignalBelief]) -> None:
        group, dist = traffic.signal_view()
        v = traffic.v
        near = np.flatnonzero((group >= 0) & (dist <= RLVW_RANGE_M) & (v > MIN_SPEED_MPS)
                              & (v * v / (2.0 * np.maximum(dist, 0.01)) > YELLOW_DECEL_MPS2))
        for i, vid, belief, sg in self._with_spat(traffic, near, group, beliefs):
            red_in = time_to_red(belief, sg.intersection + 1, sg.group_id, traffic.t)
            to_line = float(dist[i]) / float(v[i])
            if red_in is not None and to_line > red_in:
                self._spat_warning(traffic, "rlvw", vid, belief, sg, float(traffic.s[i] + dist[i]), to_line)

    def _chain(self, traffic: Traffic, i: int, up_to_m: float, most: int) -> Iterator[tuple[int, float]]:
        """The vehicles ahead of slot i in its lane, nearest first (at most `most`, up to `up_to_m` to their
        rear): (slot, distance to its rear [m])."""
        assert self._leaders is not None
        leader, gap = self._leaders
        j, d = int(leader[i]), float(gap[i])
        for _ in range(most):
            if j < 0 or d > up_to_m:
                return
            yield j, d
            d += float(traffic.length[j]) + float(gap[j])
            j = int(leader[j])

    def _ahead(self, traffic: Traffic, i: int, up_to_m: float, most: int) -> Iterator[tuple[int, float, m.Bsm]]:
        """Those of `_chain` whose BSM slot i heard: (slot, distance to its rear [m], the BSM)."""
        assert self.neighbours is not None
        me = f"veh-{int(traffic.ids[i])}"
        for j, d in self._chain(traffic, i, up_to_m, most):
            bsm = self.neighbours.heard(me, f"veh-{int(traffic.ids[j])}", d + float(traffic.length[j]) / 2, traffic.t)
            if bsm is not None:
                yield j, d, bsm

    def _sidelink(self, traffic: Traffic, obus: Iterable[int]) -> None:
        """FCW and EBW for moving vehicles with an OBU; EVW ahead of each emergency vehicle."""
        assert self._leaders is not None
        assert self.neighbours is not None
        leader, gap = self._leaders
        v = traffic.v
        has = np.isin(traffic.ids, list(obus))
        for i in (int(x) for x in np.flatnonzero(has & (v > MIN_SPEED_MPS) & (leader >= 0) & (gap <= EBW_RANGE_M))):
            vid = int(traffic.ids[i])
            for k, (j, d, bsm) in enumerate(self._ahead(traffic, i, EBW_RANGE_M, EBW_VEHICLES)):
                other = f"veh-{int(traffic.ids[j])}"
                closing = float(v[i]) - bsm.speed_mps
                critical = closing * closing / (2.0 * max(d, 0.1)) > YELLOW_DECEL_MPS2  # past a comfortable stop
                if k == 0 and closing > FCW_MIN_CLOSING_MPS and d / closing < FCW_TTC_S and critical:
                    self._warn(Warning(traffic.t, vid, "fcw", f"bsm {other}", float(traffic.s[i]) + d, lead_s=d / closing),
                               other)
                if m.VehicleEvent.HARD_BRAKING in bsm.events:
                    self._warn(Warning(traffic.t, vid, "ebw", f"bsm {other}", float(traffic.s[i]) + d, lead_s=d / float(v[i])),
                               other)
        self.make_way = set()
        for e in (int(x) for x in np.flatnonzero(traffic.kind == EMERGENCY)):
            ev = f"veh-{int(traffic.ids[e])}"
            for j, d in self._chain(traffic, e, EVW_RANGE_M, traffic.n):  # the cars ahead of it hear it from behind
                vid = int(traffic.ids[j])
                if has[j] and self.neighbours.heard(f"veh-{vid}", ev, d + float(traffic.length[j]) / 2, traffic.t) is not None:
                    self.make_way.add(vid)
                    lead = d / max(float(v[e]), MIN_SPEED_MPS)
                    self._warn(Warning(traffic.t, vid, "evw", f"bsm {ev}", float(traffic.s[j]), lead_s=lead), ev)

    def making_way(self, traffic: Traffic) -> np.ndarray:
        """Per vehicle: warned by EVW this step, so it moves over if it can."""
        return np.isin(traffic.ids, list(self.make_way))

    def _queue(self, traffic: Traffic, i: int, to_line_m: float) -> int:
        """Vehicles ahead of slot i in its lane, up to the stop line, that it heard: the queue it will meet."""
        if self._leaders is None:
            return 0
        return sum(1 for _ in self._ahead(traffic, i, to_line_m, 64))

    def _glosa(self, traffic: Traffic, beliefs: Mapping[int, SignalBelief]) -> None:
        group, dist = traffic.signal_view()
        self.advice = {}
        v_limit = self.net.link_speed[traffic.current_link()] * traffic.vmax_factor
        near = np.flatnonzero((group >= 0) & (dist <= GLOSA_RANGE_M) & (dist > 5.0))
        for i, vid, belief, sg in self._with_spat(traffic, near, group, beliefs):
            green_in = time_to_green(belief, sg.intersection + 1, sg.group_id, traffic.t)
            if green_in is None or green_in <= 0.0:
                continue
            v = glosa_speed(float(dist[i]), green_in, self._queue(traffic, i, float(dist[i])), float(v_limit[i]))
            if v is not None:
                self.advice[vid] = v
                self._spat_warning(traffic, "glosa", vid, belief, sg, float(traffic.s[i] + dist[i]), green_in)

    def advise(
        self, t: float, vid: int, belief: SignalBelief, site: tuple[int, str], group_id: int, to_line_m: float, limit_mps: float,
    ) -> float | None:
        """GLOSA for one vehicle that another backend moves (SUMO): the advised speed [m/s] towards signal group
        `group_id` of `site` (its index, its name), `to_line_m` ahead, from the SPaT the vehicle received (None: no
        advice). The queue ahead is not known there (no sidelink apps on SUMO yet): taken as empty."""
        if not GLOSA_RANGE_M >= to_line_m > 5.0:
            return None
        green_in = time_to_green(belief, site[0] + 1, group_id, t)
        v = glosa_speed(to_line_m, green_in, 0, limit_mps)
        if v is not None:
            got = belief.latest[site[0] + 1]
            w = Warning(t, vid, "glosa", f"spat {site[1]} rev {got.state.revision} via {got.path}", math.nan, lead_s=green_in)
            self._warn(w, f"{site[0]}/{group_id}")
        return v

    def speed_advice(self, traffic: Traffic) -> np.ndarray | None:
        """Per vehicle, the GLOSA speed it follows this step (NaN: none); None when GLOSA is off."""
        if not self.glosa:
            return None
        return np.array([self.advice.get(int(v), np.nan) for v in traffic.ids])

    def _arrivals(self, traffic: Traffic, index: Mapping[int, int]) -> None:
        still = []
        for w in self._pending:
            i = index.get(w.vehicle)
            if i is None:
                continue  # left without reaching it (turned off before, or the run ended)
            if traffic.s[i] >= w.target_s:
                w.lead_s = traffic.t - w.t_s
            else:
                still.append(w)
        self._pending = still

    def summary(self) -> dict[str, AppKpis]:
        out: dict[str, AppKpis] = {}
        for app in ("hlw", "rlvw", *(["fcw", "ebw", "evw"] if self.neighbours else []), *(["glosa"] if self.glosa else [])):
            ws = [w for w in self.warnings if w.app == app]
            leads = [w.lead_s for w in ws if w.lead_s is not None]
            out[app] = AppKpis(
                warnings=len(ws),
                vehicles=len({w.vehicle for w in ws}),
                lead_time_s_p50=round(float(np.median(leads)), 2) if leads else None,
                lead_time_s_min=round(min(leads), 2) if leads else None,
                with_lead_time=len(leads),
            )
        return out


def glosa_speed(to_line_m: float, green_in_s: float | None, queued: int, limit_mps: float) -> float | None:
    """GLOSA's advised speed [m/s]: `to_line_m` to the stop line of a group that turns green in `green_in_s` (from the
    SPaT received), `queued` vehicles heard waiting ahead; None when there is no advice (not red, the queue's back too
    near, or the speed below `GLOSA_MIN_MPS` or not below the limit)."""
    if green_in_s is None or green_in_s <= 0.0:
        return None
    to_back = to_line_m - JAM_SPACING_M * queued
    if to_back <= 5.0:
        return None  # it will stop behind the queue anyway
    v = to_back / (green_in_s + (START_UP_S + DISCHARGE_S * queued if queued else 0.0))
    return v if GLOSA_MIN_MPS <= v < limit_mps else None


def _current(belief: SignalBelief, intersection_id: int, group_id: int, now_s: float) -> tuple[Light, float | None] | None:
    """A group's light in the freshest SPaT heard and when it likely ends [s from now]; None if stale or unknown."""
    got = belief.latest.get(intersection_id)
    if got is None or now_s - got.at_s > belief.stale_s:
        return None
    for mv in got.state.states:
        if mv.signal_group == group_id and mv.events:
            timing = mv.events[0].timing
            end = None if timing is None or timing.likely_end_s is None else got.at_s + timing.likely_end_s - now_s
            return light_of(mv.events[0].state), end
    return None


def time_to_red(belief: SignalBelief, intersection_id: int, group_id: int, now_s: float) -> float | None:
    """Seconds until the group shows red, from the SPaT heard: 0 if red now, the yellow's end if yellow, else None."""
    cur = _current(belief, intersection_id, group_id, now_s)
    if cur is None:
        return None
    light, end = cur
    if light in (Light.RED, Light.UNKNOWN):
        return 0.0
    if light is Light.YELLOW:
        return max(end or 0.0, 0.0)
    return None


def time_to_green(belief: SignalBelief, intersection_id: int, group_id: int, now_s: float) -> float | None:
    """Seconds until a red group turns green, from the SPaT heard (its red's likely end); None unless red now."""
    cur = _current(belief, intersection_id, group_id, now_s)
    return cur[1] if cur is not None and cur[0] is Light.RED else None


@dataclass
class HazardWatch:
    """Ground truth for the scenario's hazards: who was affected, when warned, who reached one unwarned."""

    net: Network
    events: tuple[HazardEvent, ...]
    has_obu: Callable[[int, int], bool] | None = None  # (vehicle id, kind index) -> equipped; None: every vehicle is
    affected: dict[int, dict[int, float]] = field(default_factory=dict)  # event id -> vehicle -> target [m]
    unequipped: dict[int, set[int]] = field(default_factory=dict)  # event id -> the affected without an OBU
    reached: dict[int, dict[int, float]] = field(default_factory=dict)  # event id -> vehicle -> sim time it got there
    _started: set[int] = field(default_factory=set)
    stood: dict[int, float] = field(default_factory=dict)  # event id -> sim time its car was first seen standing
    _upstream: dict[int, set[int]] = field(default_factory=dict)  # event id -> vehicles seen upstream of it while active
    _targets: dict[int, np.ndarray] = field(default_factory=dict)  # event id -> route_points

    def __post_init__(self) -> None:
        ids = {x.spec.id: x.index for x in self.net.intersections}
        for k, ev in enumerate(self.events, start=1):
            self._targets[k] = route_points(self.net, ids[ev.intersection], ev.approach, ev.distance_m)

    def step(self, traffic: Traffic) -> None:
        for k, ev in enumerate(self.events, start=1):
            active = ev.start_s <= traffic.t + 1e-6 < ev.start_s + ev.duration_s
            if not active:
                continue
            target = self._targets[k][traffic.route] if traffic.n else np.zeros(0)
            if k not in self._started:  # the hazard began: the vehicles within warning range upstream of it
                self._started.add(k)
                ahead = (traffic.s < target) & (target <= traffic.s + HLW_RANGE_M)
                self.affected[k] = {int(v): float(t) for v, t in zip(traffic.ids[ahead], target[ahead], strict=True)}
                has_obu = self.has_obu
                self.unequipped[k] = set() if has_obu is None else {
                    int(v) for v, kind in zip(traffic.ids[ahead], traffic.kind[ahead], strict=True) if not has_obu(int(v), int(kind))
                }
            if k not in traffic.obstacles:  # its car does not stand there yet (its place was not clear): none reach it
                continue
            self.stood.setdefault(k, traffic.stood_since[k])
            up = self._upstream.setdefault(k, set())
            got = self.reached.setdefault(k, {})
            there = traffic.s >= target  # NaN (not on its path) compares False
            for v, kind in zip(traffic.ids[there].tolist(), traffic.kind[there].tolist(), strict=True):
                if v in up and v not in got:
                    got[v] = traffic.t
                    if self.has_obu is not None and not self.has_obu(v, kind):
                        self.unequipped.setdefault(k, set()).add(v)
            up.update(int(v) for v in traffic.ids[traffic.s < target])

    def summary(self, warnings: list[Warning]) -> HazardWarnings:
        """events.hazard_warning_ms: per hazard, from its start to the first and last affected vehicle warned."""
        per: list[dict[str, Any]] = []
        firsts: list[float] = []
        lasts: list[float] = []
        for k, ev in enumerate(self.events, start=1):
            if k not in self._started:
                continue
            warned: dict[int, float] = {}
            for w in warnings:
                if w.app == "hlw" and w.trigger.endswith(f"/{k}") and w.vehicle not in warned:
                    warned[w.vehicle] = w.t_s
            affected = self.affected.get(k, {})
            unequipped = self.unequipped.get(k, set())  # affected at its start, or reaching it, without an OBU
            equipped = len(affected.keys() - unequipped)  # only these can be warned by V2X
            times = [warned[v] - ev.start_s for v in affected if v in warned]
            # reaching it unwarned: got there with no HLW before (or only after) arriving
            reached = self.reached.get(k, {})
            unwarned = sorted(v for v, at in reached.items() if v not in warned or warned[v] > at)
            reached_equipped = len(reached.keys() - unequipped)
            reached_warned = reached_equipped - len(set(unwarned) - unequipped)
            first = round(min(times) * 1000.0, 1) if times else None
            last = round(max(times) * 1000.0, 1) if len(times) == equipped and times else None
            firsts += [] if first is None else [first]
            lasts += [] if last is None else [last]
            per.append({
                "event_id": k, "kind": ev.kind, "start_s": ev.start_s,
                # when its car stood in its lane: at its start, or later when its place was not clear then (None: never)
                "stood_s": round(self.stood[k], 3) if k in self.stood else None,
                "affected": len(affected), "affected_equipped": equipped, "affected_unequipped": len(affected) - equipped,
                "affected_warned": len(times), "coverage": round(len(times) / equipped, 4) if equipped else None,
                "first_ms": first, "last_ms": last,
                "reached": len(reached), "reached_unwarned": len(unwarned), "unwarned_vehicles": unwarned[:20],
                # every vehicle that came to it while it was active, equipped or not: the equipped warned before arriving
                "reached_equipped": reached_equipped, "reached_unequipped": len(reached) - reached_equipped,
                "reached_equipped_warned": reached_warned,
                "reached_coverage": round(reached_warned / reached_equipped, 4) if reached_equipped else None,
                # how they were warned: an RSI comes only from a cloud (v2x.core.trust admits no other sender), over
                # cellular; no RSU rebroadcasts it on the sidelink and no vehicle relays it over V2V (null: no such path)
                "warned_by_path": {"cloud": reached_warned, "rsu": None, "v2v": None},
            })
        # the worst hazard's: the slowest first warning, the slowest last
        return HazardWarnings(max(firsts) if firsts else None, max(lasts) if lasts else None, per)
