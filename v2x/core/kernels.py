"""The traffic core's compiled loops (numba), the bundles of arrays they take, and how they are loaded.

`Traffic` (v2x/core/traffic.py) keeps the vehicles as numpy arrays and calls the functions
below for the per-vehicle work of a step. Each takes a few named bundles and the arrays of
the call: the network's arrays (`NetArrays`, built once per network), the vehicles' state
columns (`Vehicles`: `Traffic` itself), the IDM parameters (`Idm`), the junctions' conflict
table (`Conflicts`) and the diverging paths (`Diverges`). It hands exactly the arrays its
loop reads to the compiled kernel, a plain function compiled by `@kernel` (v2x/core/jit.py):
typed as the function itself, so mypy checks every call, and compiled by `load_kernels` for
the numba types its annotations carry: one signature per kernel, written once.

The bundles stop at this Python layer on purpose. numba types a NamedTuple argument on every
call from its class, field names and every field (~0.5 us plus ~0.1 us per array), where a
flat array costs ~0.05 us; at one junction (a step of ~75 us calling ~15 kernels) passing
the bundles into the compiled code made a step 87% slower (the network's arrays alone:
~2 us more per call), while this layer costs ~0.1 us per call.
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple, Protocol

import numpy as np

from v2x.core.jit import BoolArray, FloatArray, FloatMatrix, IntArray, IntMatrix, compile_all, kernel
from v2x.core.network import LinkKind, Network, point_at

# what the kernels here compile in from other files, and its hash (`jit.fingerprint`: numba's cache knows only this file)
COMPILED_FROM = (point_at,)
COMPILED_IN = "55c77b478eb3236f"

YELLOW_DECEL_MPS2 = 3.0  # [m/s^2] most a driver brakes to stop for a yellow (ITE)
MAX_DECEL_MPS2 = 8.0  # [m/s^2] physical braking limit
CRITICAL_GAP_S = 4.5  # [s] permissive movements: the gap needed to cross or merge
LOOKAHEAD_LINKS = 2  # links beyond the current one searched for a leader
STOPPED_MPS = 0.5  # [m/s] below this a vehicle counts as stopped
MOVING_MPS = 2.0  # [m/s] above this a stopped vehicle counts as moving again (hysteresis)
APPROACH_M = 40.0  # [m] from the stop line: vehicles this close look at the junction's conflicts
CLEAR_M = 0.5  # [m] margin past a conflict zone's end before a vehicle's rear has cleared it
COMMIT_M = 0.3  # [m] a front this far past its waiting point has entered the conflict zone


class Light(enum.IntEnum):
    """What a vehicle believes its next signal shows."""

    GREEN = 0  # protected: go
    PERMISSIVE = 1  # go, yielding to conflicting traffic
    YELLOW = 2
    RED = 3
    UNKNOWN = 4  # no fresh SPaT: treated as red
    NONE = 5  # no signal ahead


# Plain ints in the loops (numba reads module globals as constants).
_IN, _CONN = int(LinkKind.IN), int(LinkKind.CONN)
_GREEN, _PERMISSIVE, _YELLOW, _RED, _UNKNOWN = (
    int(Light.GREEN), int(Light.PERMISSIVE), int(Light.YELLOW), int(Light.RED), int(Light.UNKNOWN)
)

class NetArrays(NamedTuple):
    """The network's arrays (`Network`), built once per network: routes by row, links by id, and the links'
    polylines joined end to end."""

    route_links: IntMatrix  # [route, k] the route's k-th link, -1 past its end
    route_start: FloatMatrix  # [route, k] where along the route [m] its k-th link starts (inf past its end)
    route_nlinks: IntArray  # links per route
    route_length: FloatArray  # [m]
    link_kind: IntArray  # LinkKind
    link_length: FloatArray  # [m]
    link_speed: FloatArray  # [m/s] speed limit
    link_group: IntArray  # CONN: global signal group, else -1
    link_source: IntArray  # CONN: the IN link it leaves
    link_offset: FloatArray  # [m] where the link's polyline starts in poly_s
    poly_s: FloatArray  # [m] arc length of every polyline point, links end to end
    poly_xy: FloatMatrix  # [m] the points, (x, y) per row

    @classmethod
    def of(cls, net: Network) -> NetArrays:
        return cls(
            net.route_links, net.route_start, net.route_nlinks, net.route_length, net.link_kind, net.link_length,
            net.link_speed, net.link_group, net.link_source, net.link_offset, net.poly_s, net.poly_xy,
        )


class Vehicles(Protocol):
    """The vehicles' state columns the kernels read, one entry per vehicle in slot order: `Traffic` has them (its
    arrays themselves: the kernels that update some in place, update Traffic's)."""

    route: IntArray
    link_idx: IntArray  # index of the current link in the route
    s: FloatArray  # [m] along the route (front bumper)
    v: FloatArray  # [m/s]
    length: FloatArray  # [m]
    vmax_factor: FloatArray  # desired speed / speed limit
    amax: FloatArray  # [m/s^2] maximum acceleration
    go_on_yellow: BoolArray  # decided to go on this yellow
    stopped: BoolArray
    stops: IntArray
    queued: BoolArray  # stopped on its current IN link


class Idm(NamedTuple):
    """The Intelligent Driver Model's parameters shared by all drivers."""

    s0: float  # [m] minimum gap
    t_gap: float  # [s] time headway
    b: float  # [m/s^2] comfortable deceleration
    delta: float  # acceleration exponent


class Conflicts(NamedTuple):
    """The junctions' conflicts, one row per (path, conflict) with rows grouped by path: path p's are first_row[p]
    .. first_row[p] + n_rows[p] - 1; each gives the other path and points [m] along both."""

    first_row: IntArray  # per path
    n_rows: IntArray  # per path
    other: IntArray  # the other path
    yields: BoolArray  # this path yields
    wait_me: FloatArray  # this path's waiting point
    exit_me: FloatArray  # where this path leaves the conflict zone
    wait_other: FloatArray  # the other path's waiting point
    s_other: FloatArray  # where the other path enters the zone
    exit_other: FloatArray  # where the other path leaves it
    first_wait_as_other: FloatArray  # per path: its nearest waiting point as the other path of a conflict


class Diverges(NamedTuple):
    """Pairs of paths leaving one lane: pair p's path a shares its first s[p] m with its path b. The pairs by path
    b: by_b[b_start[b]:b_start[b + 1]]."""

    a: IntArray
    s: FloatArray
    b_start: IntArray
    by_b: IntArray


# -- the kernels as the core calls them -------------------------------------------------------------------------
# Each hands the arrays its loop reads, out of the bundles, to the compiled kernel of the same name with a leading
# underscore (documented there). The ones that take no bundle are the compiled kernels themselves.


def locate(net: NetArrays, veh: Vehicles) -> tuple[IntArray, FloatArray]:
    return _locate(net.route_links, net.route_start, veh.route, veh.link_idx, veh.s)


def signal_view(net: NetArrays, veh: Vehicles) -> tuple[IntArray, FloatArray]:
    return _signal_view(net.route_links, net.route_start, net.link_kind, net.link_group, veh.route, veh.link_idx, veh.s)


def bodies(net: NetArrays, veh: Vehicles, idx: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    return _bodies(
        net.link_offset, net.link_length, net.poly_s, net.poly_xy, net.route_links, net.route_start,
        veh.route, veh.link_idx, veh.s, veh.length, idx,
    )


def link_indices(net: NetArrays, veh: Vehicles) -> IntArray:
    return _link_indices(net.route_start, net.route_nlinks, veh.route, veh.s)


def leaders(
    net: NetArrays, veh: Vehicles, order: IntArray, link: IntArray, s_link: FloatArray
) -> tuple[IntArray, FloatArray, IntArray]:
    return _leaders(order, link, s_link, veh.length, veh.route, veh.link_idx, net.route_links, net.link_length)


def overhang_gaps(
    net: NetArrays, veh: Vehicles, leader: IntArray, tail: IntArray, link: IntArray, s_link: FloatArray, gap: FloatArray
) -> FloatArray:
    return _overhang_gaps(
        leader, tail, link, s_link, veh.length, veh.v, net.link_kind, net.link_source, net.link_length, gap
    )


def diverge_gaps(
    net: NetArrays, veh: Vehicles, div: Diverges, link: IntArray, s_link: FloatArray, tail: IntArray,
    gap: FloatArray, lead_v: FloatArray,
) -> None:
    _diverge_gaps(
        link, s_link, veh.length, veh.v, veh.route, veh.link_idx, net.route_links, net.link_kind, net.link_length,
        tail, div.a, div.s, div.b_start, div.by_b, gap, lead_v,
    )


def desire(
    net: NetArrays, veh: Vehicles, idm: Idm, link: IntArray, s_link: FloatArray, gap: FloatArray, lead_v: FloatArray,
    v0_cap: FloatArray, group: IntArray, dist: FloatArray, believed: IntArray, yellow_left: FloatArray,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    return _desire(
        link, s_link, veh.route, veh.link_idx, veh.v, veh.vmax_factor, veh.amax, gap, lead_v, v0_cap, group, dist,
        believed, yellow_left, veh.go_on_yellow, net.route_links, net.link_length, net.link_speed, idm.s0, idm.t_gap, idm.b,
        idm.delta,
    )


def conflict_waits(
    net: NetArrays, veh: Vehicles, table: Conflicts, link: IntArray, s_link: FloatArray, dist: FloatArray,
    stopping: BoolArray,
) -> FloatArray:
    return _conflict_waits(
        link, s_link, dist, stopping, veh.route, veh.link_idx, veh.v, veh.amax, veh.length, veh.vmax_factor,
        net.route_links, net.link_kind, net.link_length, net.link_speed, table.first_row, table.n_rows, table.other,
        table.yields, table.wait_me, table.exit_me, table.wait_other, table.s_other, table.exit_other,
        table.first_wait_as_other,
    )


def integrate(
    veh: Vehicles, idm: Idm, acc: FloatArray, v0: FloatArray, stop_line: BoolArray, dist: FloatArray,
    wait: FloatArray, dt: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    return _integrate(acc, v0, stop_line, dist, wait, veh.v, veh.s, veh.amax, dt, idm.s0, idm.t_gap, idm.b, idm.delta)


def measure_flags(
    net: NetArrays, veh: Vehicles, link: IntArray, queue: IntArray
) -> tuple[FloatArray, BoolArray, BoolArray]:
    return _measure_flags(
        veh.v, veh.s, veh.route, veh.link_idx, link, net.link_kind, net.route_start, net.route_length,
        veh.stopped, veh.stops, veh.queued, queue,
    )


def lane_overlaps(
    net: NetArrays, veh: Vehicles, order: IntArray, link: IntArray, s_link: FloatArray
) -> tuple[IntArray, IntArray, BoolArray]:
    return _lane_overlaps(order, link, s_link, veh.length, net.link_kind, net.link_length)


# -- compiling and loading --------------------------------------------------------------------------------------


def load_kernels() -> int:
    """Load every kernel of the core (these and the network's) from numba's on-disk cache (~0.5 s per process), or
    compile them if the cache is empty (the first run after install: several seconds), for the argument types
    their annotations give: those of the real calls, so the step finds them ready. Returns how many it compiled."""
    return compile_all()


# -- the compiled loops ----------------------------------------------------------------------------------------


@kernel
def _bodies(
    link_offset: FloatArray, link_length: FloatArray, poly_s: FloatArray, poly_xy: FloatMatrix, route_links: IntMatrix,
    route_start: FloatMatrix, route: IntArray, link_idx: IntArray, s: FloatArray, length: FloatArray, idx: IntArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`Traffic.bodies` for vehicles `idx`, from their route, link index, position along the route and length: the
    front point, the rear point (on an earlier link of the route if the body reaches back), the heading of the chord
    between them (of the front's segment when shorter than 0.5 m) and the centre half a length behind the front."""
    n = len(idx)
    cx, cy, heading = np.empty(n), np.empty(n), np.empty(n)
    for p in range(n):
        i = idx[p]
        r, li = route[i], link_idx[i]
        fx, fy, fh = point_at(link_offset, link_length, poly_s, poly_xy, route_links[r, li], s[i] - route_start[r, li])
        s_rear = max(s[i] - length[i], 0.0)
        k = -1
        for c in range(route_start.shape[1]):
            k += route_start[r, c] <= s_rear
        k = max(k, 0)
        rx, ry, _ = point_at(link_offset, link_length, poly_s, poly_xy, route_links[r, k], s_rear - route_start[r, k])
        dx, dy = fx - rx, fy - ry
        h = math.atan2(dx, dy) * (180.0 / math.pi) % 360.0 if math.hypot(dx, dy) > 0.5 else fh
        hr = h * (math.pi / 180.0)
        cx[p], cy[p], heading[p] = fx - math.sin(hr) * length[i] / 2, fy - math.cos(hr) * length[i] / 2, h
    return cx, cy, heading


@kernel
def link_order(link: IntArray, s_link: FloatArray, n_links: int) -> IntArray:
    """The vehicles by link, and along each link by position: `np.lexsort((s_link, link))` (ties in slot order),
    as a counting sort by link and an insertion sort of each link's few vehicles."""
    n = len(link)
    start = np.zeros(n_links + 1, dtype=np.int64)
    for i in range(n):
        start[link[i] + 1] += 1
    for k in range(n_links):
        start[k + 1] += start[k]
    order = np.empty(n, dtype=np.int64)
    fill = start[:n_links].copy()
    for i in range(n):
        order[fill[link[i]]] = i
        fill[link[i]] += 1
    for k in range(n_links):
        for p in range(start[k] + 1, start[k + 1]):
            i = order[p]
            q = p
            while q > start[k] and s_link[order[q - 1]] > s_link[i]:  # strictly greater: ties stay in slot order
                order[q] = order[q - 1]
                q -= 1
            order[q] = i
    return order


@kernel
def _link_indices(route_start: FloatMatrix, route_nlinks: IntArray, route: IntArray, s: FloatArray) -> IntArray:
    """Each vehicle's link in its route: the last whose start is at or behind it."""
    out = np.empty(len(s), dtype=np.int64)
    for i in range(len(s)):
        k = 0
        for c in range(route_start.shape[1]):
            k += route_start[route[i], c] <= s[i]
        out[i] = min(k - 1, route_nlinks[route[i]] - 1)
    return out


@kernel
def _locate(
    route_links: IntMatrix, route_start: FloatMatrix, route: IntArray, link_idx: IntArray, s: FloatArray
) -> tuple[IntArray, FloatArray]:
    """Each vehicle's current link and position on it [m]."""
    n = len(s)
    link, s_link = np.empty(n, dtype=np.int64), np.empty(n)
    for i in range(n):
        link[i] = route_links[route[i], link_idx[i]]
        s_link[i] = s[i] - route_start[route[i], link_idx[i]]
    return link, s_link


@kernel
def _signal_view(
    route_links: IntMatrix, route_start: FloatMatrix, link_kind: IntArray, link_group: IntArray,
    route: IntArray, link_idx: IntArray, s: FloatArray,
) -> tuple[IntArray, FloatArray]:
    """`Traffic.signal_view`: the group of the stop line at the end of the vehicle's IN link, or, on a turning path
    whose exit is the next junction's approach lane (corridor), at that lane's end."""
    n, width = len(s), route_links.shape[1]
    group, dist = np.full(n, -1, dtype=np.int64), np.full(n, np.inf)
    for i in range(n):
        r, k = route[i], link_idx[i]
        kind = link_kind[route_links[r, k]]
        nxt1 = route_links[r, min(k + 1, width - 1)]
        if kind == _IN and k + 1 < width and nxt1 >= 0:
            group[i], dist[i] = link_group[nxt1], route_start[r, k + 1] - s[i]
        elif kind == _CONN and k + 2 < width and route_links[r, k + 2] >= 0 and link_kind[max(nxt1, 0)] == _IN:
            group[i], dist[i] = link_group[route_links[r, k + 2]], route_start[r, k + 2] - s[i]
    return group, dist


@kernel
def rearmost(link: IntArray, s_link: FloatArray, n_links: int) -> IntArray:
    """Per link, the vehicle furthest back on it (on a tie the first slot; -1: none)."""
    rear = np.full(n_links, -1, dtype=np.int64)
    for i in range(len(link)):
        j = rear[link[i]]
        if j < 0 or s_link[i] < s_link[j]:
            rear[link[i]] = i
    return rear


@kernel
def _overhang_gaps(
    leader: IntArray, tail: IntArray, link: IntArray, s_link: FloatArray, length: FloatArray, v: FloatArray,
    link_kind: IntArray, link_source: IntArray, link_length: FloatArray, gap: FloatArray,
) -> FloatArray:
    """The leader's speed per vehicle (0: none), and the rear of a vehicle that just turned off an IN link as a
    standing leader on that link, for it still overhangs it: siblings must not run into it (`gap` shortened in
    place, that vehicle's speed taken as 0)."""
    n, n_links = len(link), len(link_kind)
    lead_v = np.zeros(n)
    for i in range(n):
        if leader[i] >= 0:
            lead_v[i] = v[leader[i]]
    overhang = np.full(n_links, -np.inf)  # per IN link, how far the rearmost body on a path leaving it reaches back
    hangs = False
    for c in range(n_links):
        t = tail[c]
        if link_kind[c] == _CONN and t >= 0 and length[t] - s_link[t] > 0:
            overhang[link_source[c]] = max(overhang[link_source[c]], length[t] - s_link[t])
            hangs = True
    if hangs:
        for i in range(n):
            lk = link[i]
            if link_kind[lk] == _IN and np.isfinite(overhang[lk]):
                g = link_length[lk] - overhang[lk] - s_link[i]
                if g < gap[i]:
                    gap[i], lead_v[i] = g, 0.0
    return lead_v


@kernel
def idm(v: float, v0: float, amax: float, gap: float, dv: float, s0: float, t_gap: float, b: float, delta: float) -> float:
    """IDM acceleration [m/s^2] (Treiber & Kesting 2013, eq. 11.3): desired speed v0, gap [m] to the leader's rear,
    approach rate dv = v - v_leader; s0 minimum gap, t_gap time headway, b comfortable deceleration."""
    s_star = s0 + max(0.0, v * t_gap + v * dv / (2.0 * math.sqrt(amax * b)))
    free = 1.0 - (v / max(v0, 0.1)) ** delta
    ratio = s_star / max(gap, 0.01)
    return float(amax * (free - ratio * ratio))


@kernel
def _desire(
    link: IntArray, s_link: FloatArray, route: IntArray, link_idx: IntArray, v: FloatArray, vmax_factor: FloatArray,
    amax: FloatArray, gap: FloatArray, lead_v: FloatArray, v0_cap: FloatArray, group: IntArray, dist: FloatArray,
    believed: IntArray, yellow_left: FloatArray, go_on_yellow: BoolArray, route_links: IntMatrix,
    link_length: FloatArray, link_speed: FloatArray, s0: float, t_gap: float, b: float, delta: float,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Per vehicle: (IDM acceleration behind its leader, desired speed, whether it stops at its stop line).
    The desired speed is the link's limit (times the type's factor), capped by `v0_cap`
    and by braking at comfortable deceleration to a slower next link. At the line: on red or unknown the vehicle
    stops unless it went on yellow and can no longer stop (MAX_DECEL_MPS2); on yellow it stops if that takes no
    more than YELLOW_DECEL_MPS2, and also, braking up to MAX_DECEL_MPS2, if at its speed it would not reach the
    line within the `yellow_left` [s] it knows the yellow has (inf: not known); else it goes, and the decision to
    go sticks (`go_on_yellow`, updated in place)."""
    n, width = len(link), route_links.shape[1]
    acc, v0, stop_line = np.empty(n), np.empty(n), np.zeros(n, dtype=np.bool_)
    for i in range(n):
        lk, k = link[i], link_idx[i]
        want = min(link_speed[lk] * vmax_factor[i], v0_cap[i])
        nxt = route_links[route[i], min(k + 1, width - 1)]
        v_next = link_speed[nxt] * vmax_factor[i] if k + 1 < width and nxt >= 0 else np.inf
        v0[i] = min(want, math.sqrt(v_next * v_next + 2.0 * b * max(link_length[lk] - s_link[i], 0.0)))
        acc[i] = idm(v[i], v0[i], amax[i], gap[i], v[i] - lead_v[i], s0, t_gap, b, delta)
        if group[i] < 0:
            go_on_yellow[i] = False
            continue
        light = believed[i]
        need_decel = v[i] * v[i] / (2.0 * max(dist[i], 0.01))
        if light in (_GREEN, _PERMISSIVE):
            go_on_yellow[i] = False
        elif light == _YELLOW:
            late = dist[i] > v[i] * yellow_left[i]  # would reach the line after the red: a dilemma zone, braked out of
            stop_line[i] = not go_on_yellow[i] and (need_decel <= YELLOW_DECEL_MPS2 or (late and need_decel <= MAX_DECEL_MPS2))
            go_on_yellow[i] = not stop_line[i]
        elif light in (_RED, _UNKNOWN):
            stop_line[i] = not (go_on_yellow[i] and need_decel > MAX_DECEL_MPS2)
    return acc, v0, stop_line


@kernel
def _integrate(
    acc: FloatArray, v0: FloatArray, stop_line: BoolArray, dist: FloatArray, wait: FloatArray, v: FloatArray,
    s: FloatArray, amax: FloatArray, dt: float, s0: float, t_gap: float, b: float, delta: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(position, speed, acceleration) after dt. The stop line (if the vehicle stops
    there) and the waiting point at a conflict (`wait`, inf: none) are standing obstacles: the acceleration is
    the lower of `acc` and IDM towards the nearer, and never below -MAX_DECEL_MPS2. Ballistic update; a vehicle
    that would reverse stops where its speed reaches 0."""
    n = len(v)
    s_new, v_new, a_new = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        a = acc[i]
        obstacle = min(dist[i] if stop_line[i] else np.inf, wait[i])
        if np.isfinite(obstacle):
            a = min(a, idm(v[i], v0[i], amax[i], obstacle, v[i], s0, t_gap, b, delta))
        a = max(a, -MAX_DECEL_MPS2)
        vn = v[i] + a * dt
        if vn < 0:
            s_new[i] = s[i] + -(v[i] * v[i]) / (2.0 * min(a, -1e-9))
        else:
            s_new[i] = s[i] + (v[i] * dt + 0.5 * a * dt * dt)
        v_new[i], a_new[i] = max(vn, 0.0), a
    return s_new, v_new, a_new


@kernel
def _measure_flags(
    v: FloatArray, s: FloatArray, route: IntArray, link_idx: IntArray, link: IntArray, link_kind: IntArray,
    route_start: FloatMatrix, route_length: FloatArray, stopped: BoolArray, stops: IntArray, queued: BoolArray,
    queue: IntArray,
) -> tuple[FloatArray, BoolArray, BoolArray]:
    """After the move: stops with hysteresis (`stopped`, `stops`, and `queued` for a
    vehicle stopped on an IN link, updated in place), the stopped vehicles per IN link (`queue`, zeros in, counted
    in place), and per vehicle (where its next link starts [m], whether it reached it, whether it is past the
    end of its route)."""
    n, width = len(v), route_start.shape[1] - 1
    start_next, crossed, done = np.empty(n), np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
    for i in range(n):
        now = v[i] < MOVING_MPS if stopped[i] else v[i] < STOPPED_MPS
        if now and not stopped[i]:
            stops[i] += 1
        stopped[i] = now
        if now and link_kind[link[i]] == _IN:
            queued[i] = True
            queue[link[i]] += 1
        start_next[i] = route_start[route[i], min(link_idx[i] + 1, width)]
        crossed[i] = s[i] >= start_next[i]
        done[i] = s[i] >= route_length[route[i]]
    return start_next, crossed, done


@kernel
def _lane_overlaps(
    order: IntArray, link: IntArray, s_link: FloatArray, length: FloatArray, link_kind: IntArray,
    link_length: FloatArray,
) -> tuple[IntArray, IntArray, BoolArray]:
    """(rear, front) slots of the pairs that overlap on one link, given the vehicles in (link, position) order,
    and per vehicle whether it needs the 2D check: on a turning path, within 6 m of a stop line, or with its body
    reaching back onto the previous link."""
    n = len(order)
    rear, front = [], []
    for p in range(n - 1):
        a, b = order[p], order[p + 1]
        if link[a] == link[b] and s_link[b] - length[b] < s_link[a] - 1e-6:
            rear.append(a)
            front.append(b)
    in_box = np.empty(n, dtype=np.bool_)
    for i in range(n):
        kind = link_kind[link[i]]
        in_box[i] = kind == _CONN or (kind == _IN and link_length[link[i]] - s_link[i] < 6.0) or s_link[i] < length[i]
    return np.array(rear, dtype=np.int64), np.array(front, dtype=np.int64), in_box


@kernel
def _diverge_gaps(
    link: IntArray, s_link: FloatArray, length: FloatArray, v: FloatArray, route: IntArray, link_idx: IntArray,
    route_links: IntMatrix, link_kind: IntArray, link_length: FloatArray, tail: IntArray,
    div_a: IntArray, div_s: FloatArray, b_start: IntArray, by_b: IntArray, gap: FloatArray, lead_v: FloatArray,
) -> None:
    """Gaps to the rear of a vehicle on a sibling path still within the shared start. Pair p: paths div_a[p] and b
    leave one lane and share their first div_s[p] m; the rearmost vehicle on a, while its rear is within them, leads every vehicle
    behind it on b or on the lane before b. Per vehicle the smallest gap (on a tie the first pair), if smaller
    than `gap`: `gap` and `lead_v` are updated in place."""
    width = route_links.shape[1]
    for i in range(len(link)):
        best_g, best_p = np.inf, -1
        for key_n in range(2):
            if key_n == 0:
                key, x = link[i], s_link[i]  # on path b, from its start
            else:  # on the lane before it, from the end of that lane
                if link_kind[link[i]] != _IN or link_idx[i] + 1 >= width:
                    continue
                key, x = route_links[route[i], link_idx[i] + 1], s_link[i] - link_length[link[i]]
                if key < 0:
                    continue
            for q in range(b_start[key], b_start[key + 1]):
                p = by_b[q]
                lead = tail[div_a[p]]
                if lead < 0:
                    continue
                rear = s_link[lead] - length[lead]  # [m] along path a
                if not rear < div_s[p] or not x < rear:
                    continue
                g = rear - x
                if g < best_g or (g == best_g and p < best_p):
                    best_g, best_p = g, p
        if best_p >= 0 and best_g < gap[i]:
            gap[i] = best_g
            lead_v[i] = v[tail[div_a[best_p]]]


@kernel
def _leaders(
    order: IntArray, link: IntArray, s_link: FloatArray, length: FloatArray, route: IntArray, link_idx: IntArray,
    route_links: IntMatrix, link_length: FloatArray,
) -> tuple[IntArray, FloatArray, IntArray]:
    """`Traffic._leaders` given the vehicles in (link, position) order: the next vehicle on the same link, else
    the rearmost on one of the next LOOKAHEAD_LINKS links of the route."""
    n = len(order)
    leader = np.full(n, -1, dtype=np.int64)
    gap = np.full(n, np.inf)
    tail = np.full(len(link_length), -1, dtype=np.int64)
    for p in range(n):
        i = order[p]
        if p == 0 or link[order[p - 1]] != link[i]:
            tail[link[i]] = i  # rearmost on its link
        if p + 1 < n and link[order[p + 1]] == link[i]:
            j = order[p + 1]
            leader[i] = j
            gap[i] = s_link[j] - length[j] - s_link[i]
    width = route_links.shape[1]
    for i in range(n):
        if leader[i] >= 0:
            continue
        ahead = link_length[link[i]] - s_link[i]  # to the end of the links searched so far
        for k in range(1, LOOKAHEAD_LINKS + 1):
            if link_idx[i] + k >= width:
                break
            nxt = route_links[route[i], link_idx[i] + k]
            if nxt < 0:
                break
            t = tail[nxt]
            if t >= 0:
                leader[i] = t
                gap[i] = ahead + s_link[t] - length[t]
                break
            ahead += link_length[nxt]
    return leader, gap, tail


@kernel
def _conflict_waits(
    link: IntArray, s_link: FloatArray, dist: FloatArray, stopping: BoolArray, route: IntArray, link_idx: IntArray,
    v: FloatArray, amax: FloatArray, length: FloatArray, vmax_factor: FloatArray,
    route_links: IntMatrix, link_kind: IntArray, link_length: FloatArray, link_speed: FloatArray,
    first: IntArray, count: IntArray, c_other: IntArray, c_yield: BoolArray, c_wait_me: FloatArray,
    c_exit_me: FloatArray, c_wait_other: FloatArray, c_s_other: FloatArray, c_exit_other: FloatArray,
    c_first_wait_as_other: FloatArray,
) -> FloatArray:
    """`Traffic._conflict_obstacles`. Conflict rows are grouped by path: path p's are first[p] .. first[p] +
    count[p] - 1; for each, the other path and the points along both [m] (`Conflicts`)."""
    n = len(link)
    width = route_links.shape[1]
    out = np.full(n, np.inf)
    # the turning path each vehicle is on or about to take, and its position along it (negative: before the line);
    # a vehicle just off a turning path whose rear is still on it (a long bus) still occupies it
    path = np.full(n, -1, dtype=np.int64)
    pos = np.empty(n)
    for i in range(n):
        kind = link_kind[link[i]]
        nxt = route_links[route[i], link_idx[i] + 1] if link_idx[i] + 1 < width else -1
        if kind == _CONN:
            path[i], pos[i] = link[i], s_link[i]
        else:
            pos[i] = -dist[i]
            if kind == _IN and nxt >= 0 and dist[i] < APPROACH_M:
                path[i] = nxt
        if path[i] < 0 and link_idx[i] > 0 and s_link[i] < length[i]:
            prev = route_links[route[i], link_idx[i] - 1]
            if prev >= 0 and link_kind[prev] == _CONN:
                path[i], pos[i] = prev, link_length[prev] + s_link[i]
    # the vehicles that can be the other of a conflict, by path in slot order: a vehicle standing or stopping
    # short of every zone on its path can neither fill a zone nor close a gap
    moving = np.empty(n, dtype=np.bool_)
    n_paths = len(count)
    per_path = np.zeros(n_paths + 1, dtype=np.int64)
    for i in range(n):
        moving[i] = v[i] > MOVING_MPS and not stopping[i]
        p = path[i]
        if p >= 0 and count[p] > 0 and (moving[i] or pos[i] > c_first_wait_as_other[p] + COMMIT_M):
            per_path[p + 1] += 1
    for p in range(n_paths):
        per_path[p + 1] += per_path[p]
    others = np.empty(per_path[n_paths], dtype=np.int64)
    fill = per_path[:n_paths].copy()
    for i in range(n):
        p = path[i]
        if p >= 0 and count[p] > 0 and (moving[i] or pos[i] > c_first_wait_as_other[p] + COMMIT_M):
            others[fill[p]] = i
            fill[p] += 1
    for i in range(n):
        p = path[i]
        if p < 0 or count[p] == 0:
            continue
        x_i = pos[i]
        vmax_i = link_speed[link[i]] * vmax_factor[i]
        # where i waits when it must yield: short of every zone it yields at, not inside the nearer ones
        first_yield_wait = np.inf
        for c in range(first[p], first[p] + count[p]):
            if x_i <= c_wait_me[c] + COMMIT_M and c_yield[c]:
                first_yield_wait = min(first_yield_wait, c_wait_me[c])
        wait_at = np.inf
        for c in range(first[p], first[p] + count[p]):
            if not x_i <= c_wait_me[c] + COMMIT_M:
                continue  # a zone it has entered
            o = c_other[c]
            # box clear: someone is in the conflict zone (past their waiting point, rear not yet out)
            zone = False
            for k in range(per_path[o], per_path[o + 1]):
                j = others[k]
                if pos[j] > c_wait_other[c] + COMMIT_M and pos[j] - length[j] < c_exit_other[c] + CLEAR_M:
                    zone = True
                    break
            if zone:
                wait_at = min(wait_at, 0.0 if x_i <= 0.0 else c_wait_me[c])
                continue
            if not c_yield[c]:
                continue
            # gap acceptance against priority vehicles on their way (not those standing at a line)
            t_me = time_to_cover(c_exit_me[c] - x_i, v[i], amax[i], vmax_i)
            t_me = t_me + CRITICAL_GAP_S - (c_exit_me[c] - c_wait_me[c]) / max(vmax_i, 1.0)
            for k in range(per_path[o], per_path[o + 1]):
                j = others[k]
                if moving[j] and pos[j] <= c_wait_other[c] + COMMIT_M:
                    vmax_j = link_speed[link[j]] * vmax_factor[j]
                    if time_to_cover(c_s_other[c] - pos[j], v[j], amax[j], vmax_j) < t_me:
                        wait_at = min(wait_at, first_yield_wait)
                        break
        if wait_at < np.inf:
            out[i] = max(wait_at - x_i, 0.0)
    return out


@kernel
def time_to_cover(d: float, v: float, a: float, vmax: float) -> float:
    """Time [s] to travel d [m] from speed v [m/s], accelerating at a [m/s^2] up to vmax [m/s]."""
    v = min(v, vmax)
    d_acc = (vmax * vmax - v * v) / (2.0 * a)
    dd = max(d, 0.0)
    t = (-v + math.sqrt(v * v + 2.0 * a * dd)) / a if dd <= d_acc else (vmax - v) / a + (dd - d_acc) / vmax
    return 0.0 if d <= 0 else t


@kernel
def overlapping_boxes(
    x: FloatArray, y: FloatArray, h: FloatArray, length: FloatArray, width: FloatArray
) -> tuple[IntArray, IntArray]:
    """Index pairs (a < b) of oriented rectangles (centre x, y [m]; heading h [deg]; length, width [m]) that
    intersect, by separating axes. Sweeps along x: only pairs closer than half their lengths plus 1 m are tested.
    A few microseconds at one junction, where the same test as numpy calls cost ~200 us of fixed overhead per step."""
    n = len(x)
    order = np.argsort(x)
    reach = length.max() + 1.0 if n else 0.0  # no pair within reach is further apart than this along x
    fx, fy = np.sin(np.radians(h)), np.cos(np.radians(h))  # forward unit vectors
    out_a, out_b = [], []
    for p in range(n):
        a = order[p]
        for q in range(p + 1, n):
            b = order[q]
            dx, dy = x[b] - x[a], y[b] - y[a]
            if dx > reach:
                break
            hl_a, hl_b, hw_a, hw_b = length[a] / 2, length[b] / 2, width[a] / 2, width[b] / 2
            if math.hypot(dx, dy) >= hl_a + hl_b + 1.0:
                continue
            separated = False
            for k in range(4):  # the axes: each box's forward and sideways direction
                src, side = (a, k == 1) if k < 2 else (b, k == 3)
                ax, ay = (fy[src], -fx[src]) if side else (fx[src], fy[src])
                ext_a = hl_a * abs(fx[a] * ax + fy[a] * ay) + hw_a * abs(fy[a] * ax - fx[a] * ay)
                ext_b = hl_b * abs(fx[b] * ax + fy[b] * ay) + hw_b * abs(fy[b] * ax - fx[b] * ay)
                if abs(dx * ax + dy * ay) >= ext_a + ext_b:
                    separated = True
                    break
            if not separated:
                out_a.append(min(a, b))
                out_b.append(max(a, b))
    return np.array(out_a, dtype=np.int64), np.array(out_b, dtype=np.int64)
