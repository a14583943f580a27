"""The mobility core: vehicles as numpy arrays, stepped in sim time, with no I/O.

One step is two calls, as in highway-env:

    view = traffic.signal_view()          # for each vehicle: the signal group of its next stop line
    traffic.step(dt, believed, truth)     # believed[i]: the Light vehicle i believes it sees

`believed` is what the vehicle acts on: the SPaT it received, mapped to `Light`. The core
never reads a controller. `truth` (optional) is the light really shown, used only to count
red-light entries.

Car following is the Intelligent Driver Model (Treiber, Hennecke & Helbing 2000; Treiber &
Kesting, *Traffic Flow Dynamics*, 2013, ch. 11). Behaviour at signals:
  - red, or unknown (stale or missing SPaT): the stop line is a standing obstacle;
  - yellow: the driver stops if the stop needs no more than `YELLOW_DECEL_MPS2`
    (the ITE kinematic rule, 3.0 m/s^2 ~ 10 ft/s^2), else goes, and the decision sticks; but a driver
    who knows how long the yellow has left (`yellow_left`) and would not reach the line before the
    red (the ITE dilemma zone) brakes harder, up to `MAX_DECEL_MPS2`, rather than enter on red;
  - stalled vehicles (`obstacles`) stand in their lane: the vehicles behind stop for them and
    change to the next lane of the approach when the gap there allows it (a front gap of
    s0 + 0.5 s and a back gap of s0 + 1 s at the other vehicle's speed), keeping their turn
    if that lane allows it, else going straight; a driver sees the obstacle `SIGHT_M` ahead,
    one warned of it (the `warned` input: HLW) looks for a gap from `WARNED_M` and slows to
    30 km/h within `HAZARD_SLOW_M` of it;
  - permissive green: the movement yields at its conflict points, entering only if no
    priority vehicle reaches the conflict point within the critical gap (HCM 6th ed.,
    permitted left turn: 4.1 s for a passenger car; we use 4.5 s for margin).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from v2x.core import kernels
from v2x.core.kernels import YELLOW_DECEL_MPS2 as YELLOW_DECEL_MPS2
from v2x.core.kernels import Light as Light
from v2x.core.kernels import load_kernels as load_kernels
from v2x.core.messages import LightState
from v2x.core.network import LinkKind, Network
from v2x.core.scenario import Demand, Driver, Scenario

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

STALLED_LENGTH_M = 4.5  # [m] a scenario's hazard (stalled vehicle, obstacle) in its lane
SIGHT_M = 60.0  # [m] how far ahead a driver sees a stalled vehicle in time to plan a lane change around it
WARNED_M = 300.0  # [m] how far ahead a driver warned of it (HLW) starts looking for a gap in the next lane
HAZARD_SLOW_M = 150.0  # [m] a warned driver slows down within this distance before the hazard...
HAZARD_SPEED_MPS = 30.0 / 3.6  # [m/s] ...to this speed, on every lane of the approach
LC_FRONT_GAP_S = 0.5  # [s] a lane change needs this time gap (plus s0) to the new leader...
LC_BACK_GAP_S = 1.0  # [s] ...and this to the new follower, at its speed
QUEUE_GAP_S = 8.0  # [s] a longer gap between stop-line crossings ends a queue discharge


# Plain ints for the hot paths: IntEnum class-attribute lookups cost a Python call each.
_IN = int(LinkKind.IN)
_RED, _UNKNOWN, _NONE = int(Light.RED), int(Light.UNKNOWN), int(Light.NONE)


@dataclass(frozen=True)
class VehicleType:
    name: str
    length_m: float  # [m]
    width_m: float  # [m]
    speed_factor: float  # desired speed / speed limit
    accel_factor: float  # max acceleration / the driver's


VEHICLE_TYPES: dict[str, VehicleType] = {
    "car": VehicleType("car", 4.5, 1.8, 1.0, 1.0),
    "truck": VehicleType("truck", 10.0, 2.5, 0.9, 0.6),
    "bus": VehicleType("bus", 12.0, 2.5, 0.9, 0.6),
    "emergency": VehicleType("emergency", 5.5, 2.0, 1.3, 1.3),
}
KIND_INDEX = {name: i for i, name in enumerate(VEHICLE_TYPES)}
TYPE_OF_KIND = tuple(VEHICLE_TYPES.values())  # a vehicle's `kind` indexes this
EMERGENCY = KIND_INDEX["emergency"]


@dataclass
class LinkStats:
    """Measurements on one approach lane (an IN link)."""

    served: int = 0  # vehicles that crossed the stop line
    max_queue: int = 0  # most vehicles stopped on the lane at once
    discharge_headways_s: list[float] = field(default_factory=list)  # HCM: queued vehicles after the 4th
    queue_pos: int = 0  # position of the last crossing vehicle in the current discharge
    last_cross_s: float = -math.inf


@dataclass(frozen=True)
class FinishedVehicle:
    vid: int
    route: int
    t_enter: float  # [s] arrival at the network edge
    delay_s: float  # [s] control delay: travel time minus free-flow time over the whole route
    line_delay_s: float  # [s] delay up to the first stop line (a point queue's delay, as in Webster)
    stops: int
    travel_s: float = 0.0  # [s] from the network edge to the end of the route
    kind: int = 0  # index into VEHICLE_TYPES


@dataclass
class Stats:
    """Network-wide measurements."""

    spawned: int = 0
    finished: int = 0
    delay_sum_s: float = 0.0  # control delay of finished vehicles
    stops_sum: int = 0  # stops of finished vehicles
    red_light_entries: int = 0
    obstacle_collisions: int = 0  # vehicles that ran into a stalled vehicle (also in `collisions`)
    red_light_log: list[tuple[float, int, int, float, bool]] = field(default_factory=list)
    # (time [s], vehicle id, IN link, speed [m/s], had committed on yellow)
    collisions: int = 0
    collision_pairs: set[tuple[int, int]] = field(default_factory=set)
    waiting_to_enter: int = 0  # vehicles queued outside the network (entry lane full)
    links: dict[int, LinkStats] = field(default_factory=dict)
    finished_log: list[FinishedVehicle] = field(default_factory=list)

    @property
    def mean_delay_s(self) -> float:
        return self.delay_sum_s / self.finished if self.finished else 0.0

    @property
    def stops_per_vehicle(self) -> float:
        return self.stops_sum / self.finished if self.finished else 0.0


@dataclass(frozen=True)
class _Source:
    """One demand's Poisson arrivals at one approach, with its turn and vehicle-kind shares as cumulative
    distributions (drawn as numpy's Generator.choice(p=...) draws: the same random stream, the same picks)."""

    demand: Demand
    key: tuple[int, str]  # (intersection index, approach leg)
    turns: tuple[str, ...]
    turn_cdf: FloatArray
    kinds: tuple[int, ...]
    kind_cdf: FloatArray


def _cdf(shares: list[float]) -> FloatArray:
    cdf: FloatArray = np.array(shares, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    return cdf


@dataclass
class _Pending:
    """A vehicle that has arrived at the network edge and waits for room to enter."""

    t_arrive: float
    kind: int
    turn: str
    key: tuple[int, str, str]
    vid: int
    route: int = -1  # fixed route (scheduled vehicles), else chosen at entry
    priority: bool = False


# the per-vehicle arrays of Traffic, one entry per vehicle in the network, in the same order
COLUMNS = (
    "ids", "route", "s", "v", "a", "kind", "length", "width", "vmax_factor", "amax", "t_enter",
    "free_time", "free_to_line", "line_delay", "stops", "stopped", "queued", "go_on_yellow", "priority", "link_idx",
)


class Traffic:
    """All vehicles of a scenario. Arrays are indexed by slot; `ids` gives each vehicle's id."""

    def __init__(
        self, network: Network, scenario: Scenario | None = None, seed: int | None = None,
        area: frozenset[int] | None = None, shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.net = network
        # an area shard of independent sites: only traffic entering at these intersections, with ids k*N + I
        # (shard I of N), unique across the shards
        self.area = area
        self._id_shard = shard
        self.scenario = scenario or network.scenario
        self.driver: Driver = self.scenario.driver
        self.rng = np.random.default_rng(self.scenario.seed if seed is None else seed)
        self.t = 0.0
        self.stats = Stats()
        self._max_queue = np.zeros(len(network.links), dtype=np.int64)  # per link: stats.links[...].max_queue, as an array
        self._next_id = 0
        n = 0
        self.ids: IntArray = np.zeros(n, dtype=np.int64)
        self.route: IntArray = np.zeros(n, dtype=np.int64)
        self.s: FloatArray = np.zeros(n)  # [m] along the route (front bumper)
        self.v: FloatArray = np.zeros(n)  # [m/s]
        self.a: FloatArray = np.zeros(n)  # [m/s^2]
        self.kind: IntArray = np.zeros(n, dtype=np.int64)
        self.length: FloatArray = np.zeros(n)
        self.width: FloatArray = np.zeros(n)
        self.vmax_factor: FloatArray = np.zeros(n)
        self.amax: FloatArray = np.zeros(n)
        self.t_enter: FloatArray = np.zeros(n)  # [s] arrival at the network edge
        self.free_time: FloatArray = np.zeros(n)  # [s] route time at desired speed
        self.free_to_line: FloatArray = np.zeros(n)  # [s] time to the first stop line at desired speed
        self.line_delay: FloatArray = np.zeros(n)  # [s] delay up to the first stop line (nan before it)
        self.stops: IntArray = np.zeros(n, dtype=np.int64)
        self.stopped: BoolArray = np.zeros(n, dtype=bool)
        self.queued: BoolArray = np.zeros(n, dtype=bool)  # stopped on its current IN link
        self.go_on_yellow: BoolArray = np.zeros(n, dtype=bool)
        self.priority: BoolArray = np.zeros(n, dtype=bool)  # requests signal priority
        self.link_idx: IntArray = np.zeros(n, dtype=np.int64)  # index of the current link in the route
        # stalled vehicles: key -> (IN link, front along it [m], length [m]); placed and removed by the driver
        # stop-line crossings (sim time [s], vehicle id, global signal group), logged when this is a list: a run
        # without the controllers at hand (real time) judges them against the RSUs' own record of their lights
        self.crossings: list[tuple[float, int, int]] | None = None
        self.obstacles: dict[int, tuple[int, float, float]] = {}
        self.stood_since: dict[int, float] = {}  # key -> sim time [s] it was placed: its start, or later (its place not clear)
        self._view: tuple[IntArray, FloatArray] | None = None  # signal_view() until the state changes
        self._pending: list[_Pending] = []
        self._sources: list[_Source] = []
        self._arrivals: list[tuple[float, int]] = []  # heap of (next arrival [s], source index)
        self._schedule_demand()
        # conflicts by path: (other path, my conflict point [m], its conflict point [m], I yield)
        # per path: (other path, my waiting point, my zone exit, its waiting point, its zone start, its zone exit,
        #            I yield), all [m] along the respective path
        self._conflicts: dict[int, list[tuple[int, float, float, float, float, float, bool]]] = {}
        for c in network.conflicts:
            self._conflicts.setdefault(c.yielder, []).append(
                (c.priority, c.wait_yielder, c.exit_yielder, c.wait_priority, c.s_priority, c.exit_priority, True)
            )
            self._conflicts.setdefault(c.priority, []).append(
                (c.yielder, c.wait_priority, c.exit_priority, c.wait_yielder, c.s_yielder, c.exit_yielder, False)
            )
        self._arrays = kernels.NetArrays.of(network)
        div_a = np.array([d.a for d in network.diverges] + [d.b for d in network.diverges], dtype=np.int64)
        div_b = np.array([d.b for d in network.diverges] + [d.a for d in network.diverges], dtype=np.int64)
        # the pairs by path b, in pair order: (where each link's pairs start in the list, the list of pair indices)
        by_b = np.argsort(div_b, kind="stable")
        self._diverges = kernels.Diverges(
            div_a, np.array([d.separate_s for d in network.diverges] * 2),
            np.searchsorted(div_b[by_b], np.arange(len(network.links) + 1)), by_b,
        )
        # the same table as arrays, rows grouped by path (a path's first row and count)
        rows = [(p, *c) for p in sorted(self._conflicts) for c in self._conflicts[p]]
        table = np.array([r[1:7] for r in rows], dtype=np.float64).reshape(-1, 6)
        other = table[:, 0].astype(np.int64)
        wait_me, exit_me, wait_other, s_other, exit_other = np.ascontiguousarray(table[:, 1:].T)
        first = np.zeros(len(network.links) + 1, dtype=np.int64)
        count = np.zeros(len(network.links) + 1, dtype=np.int64)
        for k, r in enumerate(rows):
            first[r[0]] = k if count[r[0]] == 0 else first[r[0]]
            count[r[0]] += 1
        # per path, the nearest waiting point it has as the other path of a conflict [m]: a vehicle short of it,
        # standing, is in no conflict zone and no gap to judge (skipped as the other vehicle of a triple)
        first_wait_as_other = np.full(len(network.links) + 1, np.inf)
        np.minimum.at(first_wait_as_other, other, wait_other)
        self._conflict_table = kernels.Conflicts(
            first, count, other, np.array([r[7] for r in rows], dtype=bool), wait_me, exit_me, wait_other, s_other,
            exit_other, first_wait_as_other,
        )
        # load the compiled kernels now, not at the first vehicle, where a real-time run would see it as a late step
        load_kernels()

    # -- demand --------------------------------------------------------------

    def _schedule_demand(self) -> None:
        ids = {x.id: i for i, x in enumerate(self.scenario.intersections)}
        for d in self.scenario.demand:
            if d.vph <= 0:
                continue
            a = self.scenario.intersections[ids[d.intersection]].approach(d.approach)
            assert a is not None
            turns = d.turn_shares(a.turns)
            src = _Source(d, (ids[d.intersection], d.approach), tuple(turns), _cdf(list(turns.values())),
                          tuple(KIND_INDEX[k] for k in d.mix), _cdf(list(d.mix.values())))
            self._arrivals.append((d.start_s + self.rng.exponential(3600.0 / d.vph), len(self._sources)))
            self._sources.append(src)
        heapq.heapify(self._arrivals)
        for sv in self.scenario.vehicles:
            key = (ids[sv.intersection], sv.approach, sv.turn)
            routes = [r for r in self.net.entry_routes[key] if self.net.links[self.net.routes[r][0]].lane == sv.lane]
            if self.area is None or key[0] in self.area:
                self._pending.append(_Pending(sv.depart_s, KIND_INDEX[sv.kind], sv.turn, key, self._new_id(), routes[0], sv.priority))
        self._pending.sort(key=lambda p: p.t_arrive)

    def _new_id(self) -> int:
        self._next_id += 1
        i, n = self._id_shard
        return (self._next_id - 1) * n + i + 1 if n > 1 else self._next_id

    def _pick(self, cdf: FloatArray) -> int:
        return int(cdf.searchsorted(self.rng.random(), side="right"))

    def _generate(self, t_end: float) -> None:
        """Move Poisson arrivals due by t_end into the pending list."""
        due = []
        while self._arrivals and self._arrivals[0][0] <= t_end:
            due.append(heapq.heappop(self._arrivals))
        if not due:
            return
        due.sort(key=lambda e: e[1])  # the sources in the order they were listed: the random draws follow it
        for t_next, k in due:
            src = self._sources[k]
            d, (ii, leg) = src.demand, src.key
            while t_next <= t_end and t_next < d.end_s:
                turn = src.turns[self._pick(src.turn_cdf)]
                kind = src.kinds[self._pick(src.kind_cdf)]
                if self.area is None or ii in self.area:
                    self._pending.append(_Pending(t_next, kind, turn, (ii, leg, turn), self._new_id()))
                t_next += self.rng.exponential(3600.0 / d.vph)
            if t_next < d.end_s:
                heapq.heappush(self._arrivals, (t_next, k))
        self._pending.sort(key=lambda p: p.t_arrive)

    def _entry_room(self, link: int, rear: IntArray, s_link: FloatArray) -> tuple[float, float]:
        """(free space [m] at the start of a link, speed [m/s] of the rearmost vehicle there), given the rearmost
        vehicle per link and every vehicle's position on its link."""
        j = int(rear[link])
        if j < 0:
            return math.inf, math.inf
        return float(s_link[j] - self.length[j]), float(self.v[j])

    def _admit(self) -> None:
        """Let waiting vehicles enter where their entry lane has room."""
        still = []
        blocked: set[tuple[int, str, str]] = set()
        cur, s_link = self._where()
        rear = kernels.rearmost(cur, s_link, len(self.net.links))
        # a lane entered in this step: its newcomer is the rearmost vehicle there (at 0, as _entry_room would find it)
        entered: dict[int, tuple[float, float]] = {}
        admitted: list[tuple[_Pending, int, VehicleType, float]] = []
        for p in self._pending:
            if p.t_arrive > self.t or p.key in blocked:
                still.append(p)
                continue
            vt = TYPE_OF_KIND[p.kind]
            candidates = [p.route] if p.route >= 0 else self.net.entry_routes[p.key]
            best, best_room, best_v = -1, -math.inf, 0.0
            for r in candidates:
                first = self.net.routes[r][0]
                room, v_rear = entered[first] if first in entered else self._entry_room(first, rear, s_link)
                if room > best_room + 1e-6 or (abs(room - best_room) <= 1e-6 and self.rng.random() < 0.5):
                    best, best_room, best_v = r, room, v_rear
            v0 = self.net.link_speed[self.net.routes[best][0]] * vt.speed_factor
            need = self.driver.min_gap_m + vt.length_m * 0 + 1.0
            if best_room < need:
                blocked.add(p.key)  # keep arrival order per approach
                still.append(p)
                continue
            # enter no faster than lets us stop behind the rear vehicle
            v_safe = math.sqrt(max(0.0, 2 * self.driver.comfort_decel_mps2 * (best_room - self.driver.min_gap_m)))
            v_enter = min(v0, v_safe if math.isinf(best_v) else min(v_safe, max(best_v, 0.0) + 0.5 * v_safe))
            admitted.append((p, best, vt, v_enter))
            entered[self.net.routes[best][0]] = (-vt.length_m, v_enter)  # at s 0 (every route starts at 0)
        self._pending = still
        self.stats.waiting_to_enter = sum(1 for p in still if p.t_arrive <= self.t)
        if admitted:
            self._append(admitted)

    def _append(self, admitted: list[tuple[_Pending, int, VehicleType, float]]) -> None:
        """New vehicles at the start of their routes, in the order they entered (one concatenation per column)."""
        def cat(arr: npt.NDArray[np.generic], vals: list[object]) -> npt.NDArray[np.generic]:
            return np.concatenate([arr, np.array(vals, dtype=arr.dtype)])

        columns: dict[str, list[object]] = {
            "ids": [p.vid for p, _, _, _ in admitted],
            "route": [r for _, r, _, _ in admitted],
            "s": [0.0] * len(admitted),
            "v": [v for _, _, _, v in admitted],
            "a": [0.0] * len(admitted),
            "kind": [p.kind for p, _, _, _ in admitted],
            "length": [vt.length_m for _, _, vt, _ in admitted],
            "width": [vt.width_m for _, _, vt, _ in admitted],
            "vmax_factor": [vt.speed_factor for _, _, vt, _ in admitted],
            "amax": [self.driver.max_accel_mps2 * vt.accel_factor for _, _, vt, _ in admitted],
            "t_enter": [p.t_arrive for p, _, _, _ in admitted],
            "free_time": [self._free_time(r, vt) for _, r, vt, _ in admitted],
            "free_to_line": [self._link_time(self.net.routes[r][0], vt) for _, r, vt, _ in admitted],
            "line_delay": [np.nan] * len(admitted),
            "stops": [0] * len(admitted),
            "stopped": [False] * len(admitted),
            "queued": [False] * len(admitted),
            "go_on_yellow": [False] * len(admitted),
            "priority": [p.priority for p, _, _, _ in admitted],
            "link_idx": [0] * len(admitted),
        }
        for name in COLUMNS:
            setattr(self, name, cat(getattr(self, name), columns[name]))
        self._view = None
        self.stats.spawned += len(admitted)

    def _link_time(self, lid: int, vt: VehicleType) -> float:
        """[s] to drive link `lid` at its speed limit (or the type's slower desired speed)."""
        link = self.net.links[lid]
        return link.length / (link.speed_limit_mps * min(vt.speed_factor, 1.0))

    def _free_time(self, route: int, vt: VehicleType) -> float:
        return float(sum(self._link_time(lid, vt) for lid in self.net.routes[route]))

    # -- views for the caller ---------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.s)

    def _where(self) -> tuple[IntArray, FloatArray]:
        """(current link, position on it [m]) of every vehicle."""
        return kernels.locate(self._arrays, self)

    def current_link(self) -> IntArray:
        return self._where()[0]

    def s_on_link(self) -> FloatArray:
        return self._where()[1]

    def signal_view(self) -> tuple[IntArray, FloatArray]:
        """For each vehicle: (global signal group of its next stop line or -1, distance to it [m])."""
        if self._view is None:
            self._view = self._compute_signal_view()
        return self._view

    def _compute_signal_view(self) -> tuple[IntArray, FloatArray]:
        return kernels.signal_view(self._arrays, self)

    def bodies(self, idx: IntArray | None = None) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(centre x [m], centre y [m], heading [deg]) of the bodies of vehicles `idx` (default: all),
        placed by front and rear points on the path, so a body on a curve lies along the chord."""
        return kernels.bodies(self._arrays, self, np.arange(self.n) if idx is None else idx)

    # -- the step ----------------------------------------------------------------

    def step(
        self, dt: float, believed: IntArray | None = None, truth: IntArray | None = None, warned: BoolArray | None = None,
        advice: FloatArray | None = None, make_way: BoolArray | None = None, yellow_left: FloatArray | None = None,
    ) -> None:
        """Advance by dt [s]. `believed`/`truth`: a `Light` per vehicle, aligned with signal_view();
        `yellow_left`: per vehicle believing yellow, the seconds it knows the yellow has left (inf: not known);
        `warned`: per vehicle, whether it was warned of the hazards ahead (HLW); `advice`: per vehicle,
        an advisory speed [m/s] it follows as its desired speed (GLOSA), NaN for none; `make_way`:
        per vehicle, warned of an emergency vehicle behind (EVW): it moves to the next lane if it can."""
        self._generate(self.t + dt)
        self._place_obstacles(dt)
        n = self.n
        if believed is None:
            believed = np.full(n, _NONE, dtype=np.int64)
        if n:
            if self.obstacles or (make_way is not None and make_way.any()):
                self._change_lanes(np.zeros(n, dtype=bool) if warned is None else warned, make_way)
            self._move(
                dt, believed, truth, np.zeros(n, dtype=bool) if warned is None else warned, advice,
                np.full(n, np.inf) if yellow_left is None else yellow_left,
            )
        self.t += dt
        self._admit()

    # -- stalled vehicles ------------------------------------------------------------

    def _place_obstacles(self, dt: float) -> None:
        """The scenario's hazards stand in their lanes while they last (the physical world, not a message). One
        starts when its place is clear: no vehicle there, and none behind it in its lane nearer than it could stop
        in, braking as hard as a car can (`MAX_DECEL_MPS2`) after a step's travel. A car breaks down where it drives,
        not on top of another or under the bumper of the next (it appeared at its start time whatever stood there: a
        collision, now and then). It does not break down inside a standing queue: there it waits for the queue to
        move (the report's `stood_s` says when it stood)."""
        where: tuple[IntArray, FloatArray] | None = None
        for k, ev in enumerate(self.scenario.events, start=1):
            if ev.start_s <= self.t + 1e-6 < ev.start_s + ev.duration_s:
                if k not in self.obstacles:
                    lid, s, _, _ = self.net.lane_point(ev.intersection, ev.approach, ev.lane, ev.distance_m)
                    where = self._where() if where is None else where
                    if self._clear(where, lid, s - STALLED_LENGTH_M, s, dt):
                        self.obstacles[k] = (lid, s, STALLED_LENGTH_M)
                        self.stood_since[k] = self.t
            else:
                self.obstacles.pop(k, None)
                self.stood_since.pop(k, None)

    def _clear(self, where: tuple[IntArray, FloatArray], lid: int, rear: float, front: float, dt: float) -> bool:
        """Whether a stalled vehicle may stand on link `lid` from `rear` to `front` [m along it] now: no vehicle or
        other stalled one there, none behind nearer than it could stop in."""
        if any(o[0] == lid and o[1] - o[2] < front and o[1] > rear for o in self.obstacles.values()):
            return False
        link, s_link = where
        on = link == lid
        if not on.any():
            return True
        s0 = self.driver.min_gap_m
        fronts, v = s_link[on], self.v[on]
        behind = fronts <= rear - s0
        there = ~behind & (fronts - self.length[on] < front + s0)
        stop_m = s0 + v * dt + v * v / (2.0 * kernels.MAX_DECEL_MPS2)
        return not (there.any() or (behind & (rear - fronts < stop_m)).any())

    def _obstacle_ahead(self, link: IntArray, s_link: FloatArray) -> tuple[FloatArray, IntArray]:
        """Per vehicle: the gap [m] to the rear of the nearest obstacle ahead on its link (inf: none), and its key."""
        gap = np.full(self.n, np.inf)
        key = np.full(self.n, -1, dtype=np.int64)
        for k, (lid, front, length) in self.obstacles.items():
            on = link == lid
            g = np.where(on & (s_link < front), front - length - s_link, np.inf)
            nearer = g < gap
            gap[nearer] = g[nearer]
            key[nearer] = k
        return gap, key

    def _near_hazard(self, link: IntArray, s_link: FloatArray) -> BoolArray:
        """Per vehicle: within HAZARD_SLOW_M before a stalled vehicle on its approach, in any lane."""
        net = self.net
        out = np.zeros(self.n, dtype=bool)
        to_line = net.link_length[link] - s_link
        for lid, front, _ in self.obstacles.values():
            ob = net.links[lid]
            ob_to_line = net.link_length[lid] - front
            same = np.isin(link, list(self._approach_links(ob.intersection, ob.leg)))
            out |= same & (to_line > ob_to_line) & (to_line - ob_to_line < HAZARD_SLOW_M)
        return out

    def _approach_links(self, intersection: int, leg: str) -> frozenset[int]:
        ig = self.net.intersections[intersection]
        return frozenset(lid for (lg, _), lid in ig.in_links.items() if lg == leg)

    def _change_lanes(self, warned: BoolArray, make_way: BoolArray | None = None) -> None:
        """Vehicles facing a stalled vehicle in their lane, or making way for an emergency vehicle behind,
        move to a neighbouring lane when the gap allows."""
        net = self.net
        link, s_link = self._where()
        gap, _ = self._obstacle_ahead(link, s_link)
        move = gap < np.where(warned, WARNED_M, SIGHT_M)
        if make_way is not None:
            move |= make_way & (self.kind != EMERGENCY)
        want = np.flatnonzero(move & (self.link_idx == 0))
        blocked = {lid for lid, _, _ in self.obstacles.values()}
        for i in (int(x) for x in want):
            lk = net.links[int(link[i])]
            turn = net.links[int(net.route_links[self.route[i], 1])].turn
            for lane in (lk.lane + 1, lk.lane - 1):
                target = net.intersections[lk.intersection].in_links.get((lk.leg, lane))
                if target is None or target in blocked:
                    continue
                route = self._route_from(target, lk.intersection, lk.leg, turn)
                if route is not None and self._room(i, target, link, s_link):
                    self.route[i] = route
                    link[i] = target
                    self._view = None
                    break

    def _route_from(self, first: int, intersection: int, leg: str, turn: str) -> int | None:
        """An entry route starting on lane link `first` with this turn, else going straight; None: neither."""
        for t in (turn, "through"):
            for r in self.net.entry_routes.get((intersection, leg, t), []):
                if self.net.route_links[r, 0] == first:
                    return int(r)
        return None

    def _room(self, i: int, target: int, link: IntArray, s_link: FloatArray) -> bool:
        """Whether vehicle i fits into lane link `target` where it is: gaps to the new leader and follower."""
        s = float(s_link[i])
        on = np.flatnonzero((link == target) & (np.arange(self.n) != i))
        if not len(on):
            return True
        s0 = self.driver.min_gap_m
        other = s_link[on]
        ahead, behind = on[other >= s], on[other < s]
        if len(ahead):
            j = ahead[np.argmin(other[other >= s])]
            if s_link[j] - self.length[j] - s < s0 + LC_FRONT_GAP_S * self.v[i]:
                return False
        if len(behind):
            j = behind[np.argmax(other[other < s])]
            if s - self.length[i] - s_link[j] < s0 + LC_BACK_GAP_S * self.v[j]:
                return False
        for _, front, length in (o for o in self.obstacles.values() if o[0] == target):
            if s > front - length - s0 and s - self.length[i] < front + s0:
                return False
        return True

    def leaders(self) -> tuple[IntArray, FloatArray]:
        """Each vehicle's leader (its slot; -1: none within the lookahead) and the gap to its rear [m]."""
        leader, gap, _ = self._leaders(*self._where())
        return leader, gap

    def _leaders(self, link: IntArray, s_link: FloatArray) -> tuple[IntArray, FloatArray, IntArray]:
        """(leader slot or -1, gap [m], the rearmost vehicle on each link or -1): the next vehicle on the same
        link, else the rearmost on the next LOOKAHEAD_LINKS links of the route."""
        order = kernels.link_order(link, s_link, len(self.net.links))
        return kernels.leaders(self._arrays, self, order, link, s_link)

    def _move(
        self, dt: float, believed: IntArray, truth: IntArray | None, warned: BoolArray, advice: FloatArray | None,
        yellow_left: FloatArray,
    ) -> None:
        d, net = self.driver, self._arrays
        link, s_link = kernels.locate(net, self)
        leader, gap, tail = self._leaders(link, s_link)
        lead_v = kernels.overhang_gaps(net, self, leader, tail, link, s_link, gap)
        # a stalled vehicle is a standing leader
        if self.obstacles:
            g_obs, _ = self._obstacle_ahead(link, s_link)
            nearer = g_obs < gap
            gap[nearer] = g_obs[nearer]
            lead_v[nearer] = 0.0
        # paths leaving one lane overlap at first: a vehicle on one is a leader for the other until they separate
        if len(self._diverges.a):
            kernels.diverge_gaps(net, self, self._diverges, link, s_link, tail, gap, lead_v)

        # a cap on the desired speed: near a hazard one was warned of (HLW), and an advisory speed (GLOSA)
        v0_cap = np.full(self.n, np.inf)
        if self.obstacles and warned.any():
            v0_cap[warned & self._near_hazard(link, s_link)] = HAZARD_SPEED_MPS
        if advice is not None:
            np.minimum(v0_cap, advice, out=v0_cap, where=np.isfinite(advice))

        group, dist = self.signal_view()
        idm = kernels.Idm(d.min_gap_m, d.time_headway_s, d.comfort_decel_mps2, float(d.delta))
        acc, v0, stop_line = kernels.desire(net, self, idm, link, s_link, gap, lead_v, v0_cap, group, dist, believed, yellow_left)
        # standing obstacles: the stop line, and waiting points at conflicts
        wait = self._conflict_obstacles(link, s_link, dist, stop_line)
        s_old = self.s
        self.s, self.v, self.a = kernels.integrate(self, idm, acc, v0, stop_line, dist, wait, dt)
        self._view = None
        self._measure(dt, link, s_old, believed, truth, group, dist)

    def _conflict_obstacles(
        self, link: IntArray, s_link: FloatArray, dist: FloatArray, stopping: BoolArray
    ) -> FloatArray:
        """Distance [m] to where each vehicle must wait for conflicting traffic (inf: none).

        Two rules at the junction's conflict points:
          - gap acceptance: a yielding movement waits just before its conflict point (inside
            the box, as drivers do) until no moving priority vehicle reaches the point within
            the critical gap of its own arrival;
          - box clear: nobody passes a conflict point while a vehicle on the crossing path is
            in the conflict zone (a late turner, a long bus still clearing).
        Loops over (vehicle, conflict) pairs and (vehicle, conflict, other vehicle) triples, compiled by numba.
        """
        return kernels.conflict_waits(self._arrays, self, self._conflict_table, link, s_link, dist, stopping)

    def _measure(
        self, dt: float, link: IntArray, s_old: FloatArray, believed: IntArray, truth: IntArray | None,
        group: IntArray, dist: FloatArray,
    ) -> None:
        net = self.net
        st = self.stats
        t_now = self.t + dt
        # stops with hysteresis, and the queue per approach lane
        counts = np.zeros(len(net.links), dtype=np.int64)
        start_next, crossed, done = kernels.measure_flags(self._arrays, self, link, counts)
        for q_link in np.flatnonzero(counts > self._max_queue):  # only the lanes whose longest queue grew
            st.links.setdefault(int(q_link), LinkStats()).max_queue = int(counts[q_link])
        np.maximum(self._max_queue, counts, out=self._max_queue)
        # advance link indices; a crossing of an IN link's end is a stop-line crossing
        if crossed.any():
            for i in np.flatnonzero(crossed & (net.link_kind[link] == _IN)):
                lid = int(link[i])
                ls = st.links.setdefault(lid, LinkStats())
                ls.served += 1
                # time the front crossed the line, interpolated within the step
                frac = (float(start_next[i]) - float(s_old[i])) / max(float(self.s[i] - s_old[i]), 1e-9)
                t_cross = self.t + dt * min(max(frac, 0.0), 1.0)
                if self.queued[i] and t_cross - ls.last_cross_s < QUEUE_GAP_S:
                    ls.queue_pos += 1
                    if ls.queue_pos >= 5:
                        ls.discharge_headways_s.append(t_cross - ls.last_cross_s)
                else:
                    ls.queue_pos = 1 if self.queued[i] else 0
                ls.last_cross_s = t_cross
                if self.link_idx[i] == 0:
                    self.line_delay[i] = max(t_cross - self.t_enter[i] - self.free_to_line[i], 0.0)
                if truth is not None and truth[i] in (_RED, _UNKNOWN):
                    st.red_light_entries += 1
                    st.red_light_log.append((t_cross, int(self.ids[i]), lid, float(self.v[i]), bool(self.go_on_yellow[i])))
                if self.crossings is not None:
                    self.crossings.append((t_cross, int(self.ids[i]), int(group[i])))
            self.queued[crossed] = False
            self.link_idx = kernels.link_indices(self._arrays, self)
        # vehicles that reached the end of their route leave
        if done.any():
            idx = np.flatnonzero(done)
            travel = t_now - self.t_enter[idx]
            delay = np.maximum(travel - self.free_time[idx], 0.0)
            st.finished += len(idx)
            st.delay_sum_s += float(delay.sum())
            st.stops_sum += int(self.stops[idx].sum())
            for j, i in enumerate(idx):
                st.finished_log.append(
                    FinishedVehicle(
                        int(self.ids[i]), int(self.route[i]), float(self.t_enter[i]), float(delay[j]),
                        float(self.line_delay[i]), int(self.stops[i]), float(travel[j]), int(self.kind[i]),
                    )
                )
            self._drop(~done)
        self._collisions()

    def _collisions(self) -> None:
        """Count pairs of vehicles whose bodies overlap: in-lane (1D) and in junction boxes (2D)."""
        n = self.n
        if n < 2:
            return
        net = self._arrays
        link, s_link = kernels.locate(net, self)
        order = kernels.link_order(link, s_link, len(self.net.links))
        lane_rear, lane_front, in_box = kernels.lane_overlaps(net, self, order, link, s_link)
        pairs = [(int(self.ids[a]), int(self.ids[b])) for a, b in zip(lane_rear, lane_front, strict=True)]
        # 2D check among vehicles on turning paths or within a car length of a stop line
        idx = np.flatnonzero(in_box)
        if len(idx) >= 2:
            x, y, h = kernels.bodies(net, self, idx)
            ia, ib = kernels.overlapping_boxes(x, y, h, self.length[idx], self.width[idx])
            pairs += [(int(a), int(b)) for a, b in zip(self.ids[idx[ia]], self.ids[idx[ib]], strict=True)]
        for k, (lid, front, length) in self.obstacles.items():  # a stalled vehicle is -1 - its key
            on = np.flatnonzero((link == lid) & (s_link > front - length + 1e-6) & (s_link - self.length < front - 1e-6))
            pairs += [(-1 - k, int(self.ids[i])) for i in on]
        for p in pairs:
            key = (min(p), max(p))
            if key not in self.stats.collision_pairs:
                self.stats.collision_pairs.add(key)
                self.stats.collisions += 1
                self.stats.obstacle_collisions += key[0] < 0

    def _drop(self, keep: BoolArray) -> None:
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[keep])
        self._view = None

    # -- summaries ----------------------------------------------------------------

    def saturation_flow_vphpl(self, links: list[int] | None = None) -> float:
        """HCM saturation flow [veh/h/lane] from the queued headways after the 4th vehicle."""
        hs = [h for lid, ls in self.stats.links.items() if links is None or lid in links for h in ls.discharge_headways_s]
        return 3600.0 / float(np.mean(hs)) if hs else math.nan


_LIGHT_OF_STATE = {
    LightState.PROTECTED_GREEN: Light.GREEN,
    LightState.PERMISSIVE_GREEN: Light.PERMISSIVE,
    LightState.FLASHING_GREEN: Light.GREEN,
    LightState.YELLOW: Light.YELLOW,
    LightState.RED: Light.RED,
    LightState.FLASHING_RED: Light.RED,
}


def light_of(state: LightState) -> Light:
    """How a driver reads a SPaT light state (anything else: unknown, treated as red)."""
    return _LIGHT_OF_STATE.get(state, Light.UNKNOWN)
