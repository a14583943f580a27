"""Road geometry built from a scenario: lanes, turning paths, signal groups, conflicts, routes.

Everything is in local metres (x east, y north). Traffic drives on the right. Each lane
is a *link*: a polyline a vehicle moves along by arc length.

    IN    an approach lane, from the network edge (or the upstream junction) to the stop line
    CONN  a turning path through the junction box, from a stop line to an exit lane
    OUT   an exit lane, from the junction box to the network edge

On a corridor, a CONN leads straight onto the IN lane of the next intersection.
Lanes are numbered from the median (0) outwards. A *signal group* controls one movement
(approach leg and turn) and all its CONN links. Two CONN links *conflict* where their paths
come within a vehicle's width of each other; the lower-ranked movement yields there
(through > right > left), which is how permissive left turns work.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from v2x.core import jit
from v2x.core.geo import LocalFrame
from v2x.core.jit import kernel
from v2x.core.scenario import LEG_BEARING_DEG, LEGS, Approach, Intersection, Scenario
from v2x.core.topics import quadkey, tile_bounds, tiles_covering

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Turn -> how many legs clockwise from the approach leg the exit leg is.
_TURN_OFFSET = {"through": 2, "left": 1, "right": 3}
#: Who yields at a conflict: the lower rank.
_RANK = {"through": 3, "right": 2, "left": 1}
STOP_LINE_MARGIN_M = 6.0  # [m] between the crossing road's edge and the stop line: a crosswalk and a setback
WIDEST_M = 2.5  # [m] the widest vehicle (truck, bus)
LONGEST_M = 12.0  # [m] the longest vehicle (bus)
MARGIN_M = 0.3  # [m] clearance kept between bodies
MAX_SWEEP_M = 3.0  # [m] cap on off-tracking
BODY_CLEARANCE_M = WIDEST_M / 2 + MARGIN_M  # [m] a straight body this far from a path is clear of it
_SAMPLE_M = 0.5  # [m] spacing of conflict-search samples along a turning path
IN_GRID_M = 25.0  # [m] grid squares of the search for the approach lane a point lies on (`Network.in_lane_at`)


class LinkKind(enum.IntEnum):
    IN = 0
    CONN = 1
    OUT = 2


@dataclass
class Link:
    id: int
    kind: LinkKind
    intersection: int  # index into Network.intersections
    leg: str  # IN/OUT: the leg; CONN: the approach leg
    lane: int  # IN/OUT: lane from the median; CONN: the IN lane it starts from
    points: FloatArray  # (n, 2) [m]
    speed_limit_mps: float
    turn: str = ""  # CONN only
    group: int = -1  # CONN only: global signal-group index
    source: int = -1  # CONN: the IN link it leaves
    target: int = -1  # CONN: the OUT (or next IN) link it joins
    cum: FloatArray = field(init=False)  # (n,) [m] arc length at each point

    def __post_init__(self) -> None:
        seg = np.hypot(*np.diff(self.points, axis=0).T)
        self.cum = np.concatenate(([0.0], np.cumsum(seg)))

    @property
    def length(self) -> float:
        return float(self.cum[-1])


@dataclass(frozen=True)
class SignalGroup:
    index: int  # global
    intersection: int
    group_id: int  # 1..255 within its intersection, as in MAP and SPaT
    leg: str
    turn: str


@dataclass(frozen=True)
class Conflict:
    """Two turning paths that come too close: `yielder` gives way to `priority`."""

    yielder: int  # link id
    priority: int  # link id
    s_yielder: float  # [m] along the yielder's path where the conflict zone begins
    s_priority: float  # [m] along the priority path where it begins
    wait_yielder: float  # [m] furthest a yielder's front can be with its body clear of the other path
    wait_priority: float  # [m] the same on the priority path
    exit_yielder: float  # [m] along the yielder's path where the zone ends
    exit_priority: float  # [m] along the priority path where it ends


@dataclass(frozen=True)
class Diverge:
    """Two turning paths leaving the same lane: they overlap until `separate_s` [m]."""

    a: int  # link id
    b: int  # link id
    separate_s: float


@dataclass
class IntersectionGeom:
    index: int
    spec: Intersection
    center: tuple[float, float]
    stop_offset_m: float  # [m] from the centre to every stop line
    in_links: dict[tuple[str, int], int] = field(default_factory=dict)  # (leg, lane) -> link id
    out_links: dict[tuple[str, int], int] = field(default_factory=dict)
    groups: dict[tuple[str, str], int] = field(default_factory=dict)  # (leg, turn) -> global group index
    #: for each phase, the global group indices with green
    phase_groups: list[list[int]] = field(default_factory=list)
    #: for each phase, the groups whose green is permissive (they must yield to another green group)
    phase_permissive: list[set[int]] = field(default_factory=list)


class Network:
    """The whole road network of a scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.frame = LocalFrame(scenario.origin.lat_deg, scenario.origin.lon_deg, scenario.origin.elevation_m)
        self.links: list[Link] = []
        self.groups: list[SignalGroup] = []
        self.conflicts: list[Conflict] = []
        self.diverges: list[Diverge] = []
        self.intersections: list[IntersectionGeom] = []
        self._ids = {x.id: i for i, x in enumerate(scenario.intersections)}
        # (intersection, leg) -> (other intersection, other leg) for corridor roads
        self.road_of: dict[tuple[int, str], tuple[int, str]] = {}
        for road in scenario.roads:
            (ia, _, la), (ib, _, lb) = (e.rpartition(".") for e in road.ends)
            self.road_of[(self._ids[ia], la)] = (self._ids[ib], lb)
            self.road_of[(self._ids[ib], lb)] = (self._ids[ia], la)
        for i, spec in enumerate(scenario.intersections):
            half = max(max(a.lanes, a.n_exit_lanes) * a.lane_width_m for a in spec.approaches)
            self.intersections.append(IntersectionGeom(i, spec, (spec.x_m, spec.y_m), half + STOP_LINE_MARGIN_M))
        self._build_lanes()
        # MAP lane ids: per intersection, ingress lanes then egress lanes, by leg and lane
        self.map_lane_ids: dict[int, int] = {}
        for ig in self.intersections:
            ordered = sorted(ig.in_links.items(), key=lambda kv: (LEGS.index(kv[0][0]), kv[0][1]))
            ordered += sorted(ig.out_links.items(), key=lambda kv: (LEGS.index(kv[0][0]), kv[0][1]))
            for k, (_key, lid) in enumerate(ordered, start=1):
                self.map_lane_ids[lid] = k
        self._build_groups()
        self._build_connectors()
        self._build_conflicts()
        self._build_phases()
        self.routes: list[list[int]] = []
        self.entry_routes: dict[tuple[int, str, str], list[int]] = {}
        self._build_routes()
        self._build_arrays()

    # -- lanes ---------------------------------------------------------------

    @staticmethod
    def _unit(leg: str) -> tuple[float, float]:
        b = math.radians(LEG_BEARING_DEG[leg])
        return math.sin(b), math.cos(b)

    def _lane_points(self, ig: IntersectionGeom, a: Approach, lane: int, inbound: bool, length: float) -> FloatArray:
        ux, uy = self._unit(a.leg)
        # right-hand traffic: inbound lanes lie right of the inbound direction (-u): offset along (-uy, ux)
        nx, ny = (-uy, ux) if inbound else (uy, -ux)
        off = (lane + 0.5) * a.lane_width_m
        cx, cy = ig.center
        near = (cx + ux * ig.stop_offset_m + nx * off, cy + uy * ig.stop_offset_m + ny * off)
        far = (near[0] + ux * length, near[1] + uy * length)
        return np.array([far, near] if inbound else [near, far], dtype=np.float64)

    def _add(self, link: Link) -> int:
        link.id = len(self.links)
        self.links.append(link)
        return link.id

    def _approach_length(self, ig: IntersectionGeom, a: Approach) -> float:
        other = self.road_of.get((ig.index, a.leg))
        if other is None:
            return a.length_m
        og = self.intersections[other[0]]
        d = math.dist(ig.center, og.center)
        return d - ig.stop_offset_m - og.stop_offset_m

    def _build_lanes(self) -> None:
        for ig in self.intersections:
            for a in ig.spec.approaches:
                v = a.speed_limit_kmh / 3.6
                length = self._approach_length(ig, a)
                for lane in range(a.lanes):
                    pts = self._lane_points(ig, a, lane, True, length)
                    ig.in_links[(a.leg, lane)] = self._add(Link(0, LinkKind.IN, ig.index, a.leg, lane, pts, v))
                if (ig.index, a.leg) in self.road_of:
                    continue  # the exit continues as the next intersection's IN lanes
                for lane in range(a.n_exit_lanes):
                    pts = self._lane_points(ig, a, lane, False, length)
                    ig.out_links[(a.leg, lane)] = self._add(Link(0, LinkKind.OUT, ig.index, a.leg, lane, pts, v))

    def _exit_lanes(self, ig: IntersectionGeom, leg: str) -> list[int]:
        """Link ids a vehicle can join when leaving `ig` by `leg`, median lane first."""
        other = self.road_of.get((ig.index, leg))
        if other is None:
            return [ig.out_links[(leg, k)] for k in range(ig.spec.approach(leg).n_exit_lanes)]  # type: ignore[union-attr]
        og = self.intersections[other[0]]
        return [og.in_links[(other[1], k)] for k in range(og.spec.approach(other[1]).lanes)]  # type: ignore[union-attr]

    # -- signal groups and turning paths ----------------------------------------

    def _build_groups(self) -> None:
        for ig in self.intersections:
            gid = 0
            for a in ig.spec.approaches:
                for t in ("left", "through", "right"):
                    if t in a.turns:
                        gid += 1
                        ig.groups[(a.leg, t)] = len(self.groups)
                        self.groups.append(SignalGroup(len(self.groups), ig.index, gid, a.leg, t))

    @staticmethod
    def exit_leg(leg: str, turn: str) -> str:
        return LEGS[(LEGS.index(leg) + _TURN_OFFSET[turn]) % 4]

    def _build_connectors(self) -> None:
        for ig in self.intersections:
            for a in ig.spec.approaches:
                by_lane = a.turns_by_lane()
                for turn in a.turns:
                    out_leg = self.exit_leg(a.leg, turn)
                    if ig.spec.approach(out_leg) is None:
                        continue  # validation guarantees the scenario's turns have exits; defensive
                    exits = self._exit_lanes(ig, out_leg)
                    lanes = [k for k in range(a.lanes) if turn in by_lane[k]]
                    for rank, k in enumerate(lanes):
                        if turn == "left":
                            j = min(rank, len(exits) - 1)
                        elif turn == "right":
                            j = max(len(exits) - len(lanes) + rank, 0)
                        else:
                            j = min(k, len(exits) - 1)
                        src, dst = ig.in_links[(a.leg, k)], exits[j]
                        pts = _turn_path(self.links[src].points, self.links[dst].points, turn)
                        v = min(self.links[src].speed_limit_mps, self.links[dst].speed_limit_mps)
                        if turn != "through":
                            v = min(v, 8.0)  # [m/s] about 30 km/h through a turn
                        self._add(
                            Link(
                                0, LinkKind.CONN, ig.index, a.leg, k, pts, v,
                                turn=turn, group=ig.groups[(a.leg, turn)], source=src, target=dst,
                            )
                        )

    def _build_conflicts(self) -> None:
        conns = [lk for lk in self.links if lk.kind == LinkKind.CONN]
        samples = {lk.id: _resample(lk) for lk in conns}
        sweep = {lk.id: _sweep(lk) for lk in conns}
        for i, a in enumerate(conns):
            for b in conns[i + 1 :]:
                if a.intersection != b.intersection or a.source == b.source or a.leg == b.leg:
                    continue
                (pa, sa), (pb, sb) = samples[a.id], samples[b.id]
                d = np.hypot(pa[:, None, 0] - pb[None, :, 0], pa[:, None, 1] - pb[None, :, 1])
                # bodies can touch where the paths are closer than a vehicle width plus both sweeps
                close = d < WIDEST_M + MARGIN_M + sweep[a.id] + sweep[b.id]
                if not close.any():
                    continue
                # the conflict point on each path: where it first comes close to the other
                za, zb = sa[close.any(axis=1)], sb[close.any(axis=0)]
                s_first = {a.id: float(za.min()), b.id: float(zb.min())}
                s_last = {a.id: float(za.max()), b.id: float(zb.max())}
                wait = {
                    a.id: _wait_point(pa, sa, pb, s_first[a.id], WIDEST_M + MARGIN_M + sweep[b.id]),
                    b.id: _wait_point(pb, sb, pa, s_first[b.id], WIDEST_M + MARGIN_M + sweep[a.id]),
                }
                ya, yb = (a, b) if _RANK[a.turn] <= _RANK[b.turn] else (b, a)
                self.conflicts.append(
                    Conflict(
                        ya.id, yb.id, s_first[ya.id], s_first[yb.id], wait[ya.id], wait[yb.id],
                        s_last[ya.id], s_last[yb.id],
                    )
                )
        for i, a in enumerate(conns):
            for b in conns[i + 1 :]:
                if a.source != b.source:
                    continue
                (pa, sa), (pb, sb) = samples[a.id], samples[b.id]
                m = min(len(sa), len(sb))
                apart = np.hypot(*(pa[:m] - pb[:m]).T) >= 2 * BODY_CLEARANCE_M
                sep = float(sa[int(np.argmax(apart))]) if apart.any() else float(min(a.length, b.length))
                self.diverges.append(Diverge(a.id, b.id, sep))

    def _build_phases(self) -> None:
        groups_of_link = {lk.id: lk.group for lk in self.links if lk.kind == LinkKind.CONN}
        for ig in self.intersections:
            for phase in ig.spec.signal.phases:
                green = [ig.groups[tuple(mv.split("."))] for mv in phase.movements]  # type: ignore[index]
                ig.phase_groups.append(green)
                gs = set(green)
                permissive = {
                    groups_of_link[c.yielder]
                    for c in self.conflicts
                    if groups_of_link[c.yielder] in gs and groups_of_link[c.priority] in gs
                }
                ig.phase_permissive.append(permissive)

    # -- routes ------------------------------------------------------------------

    def _build_routes(self) -> None:
        conn_from: dict[int, list[Link]] = {}
        for lk in self.links:
            if lk.kind == LinkKind.CONN:
                conn_from.setdefault(lk.source, []).append(lk)

        def continue_from(link_id: int, first_turn: str | None) -> list[list[int]]:
            link = self.links[link_id]
            if link.kind == LinkKind.OUT:
                return [[link_id]]
            conns = conn_from.get(link_id, [])
            if first_turn is not None:
                conns = [c for c in conns if c.turn == first_turn]
            elif any(c.turn == "through" for c in conns):
                conns = [c for c in conns if c.turn == "through"]  # downstream: go straight where possible
            out = []
            for c in conns:
                for tail in continue_from(c.target, None):
                    out.append([link_id, c.id, *tail])
            return out

        for ig in self.intersections:
            for a in ig.spec.approaches:
                if (ig.index, a.leg) in self.road_of:
                    continue  # not an entry
                for turn in a.turns:
                    key = (ig.index, a.leg, turn)
                    self.entry_routes[key] = []
                    for lane in range(a.lanes):
                        for r in continue_from(ig.in_links[(a.leg, lane)], turn):
                            self.entry_routes[key].append(len(self.routes))
                            self.routes.append(r)

    def _build_arrays(self) -> None:
        """Flat arrays for vectorised lookups by route and by link."""
        n = len(self.routes)
        width = max(len(r) for r in self.routes) if self.routes else 1
        self.route_links = np.full((n, width), -1, dtype=np.int64)
        self.route_start = np.full((n, width + 1), np.inf)  # [m] along the route where each link starts
        self.route_length = np.zeros(n)
        self.route_nlinks = np.array([len(r) for r in self.routes], dtype=np.int64)
        for i, r in enumerate(self.routes):
            s = 0.0
            for k, lid in enumerate(r):
                self.route_links[i, k] = lid
                self.route_start[i, k] = s
                s += self.links[lid].length
            self.route_start[i, len(r)] = s
            self.route_length[i] = s
        self.link_length = np.array([lk.length for lk in self.links])
        self.link_kind = np.array([int(lk.kind) for lk in self.links], dtype=np.int64)
        self.link_group = np.array([lk.group for lk in self.links], dtype=np.int64)
        self.link_speed = np.array([lk.speed_limit_mps for lk in self.links])
        self.link_intersection = np.array([lk.intersection for lk in self.links], dtype=np.int64)
        self.link_source = np.array([lk.source for lk in self.links], dtype=np.int64)  # CONN: the IN link it leaves
        # one polyline for all links, with a gap of 1 m between links so a search never crosses one
        offsets, pts, cums = [], [], []
        base = 0.0
        for lk in self.links:
            offsets.append(base)
            pts.append(lk.points)
            cums.append(lk.cum + base)
            base += lk.length + 1.0
        self.link_offset = np.array(offsets)
        self.poly_xy = np.concatenate(pts) if pts else np.zeros((0, 2))  # no links: a SUMO scenario's (docs/sumo.md)
        self.poly_s = np.concatenate(cums) if cums else np.zeros(0)

    # -- queries ---------------------------------------------------------------

    def xy_heading(self, link: IntArray, s_link: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Positions [m] and compass headings [deg] of points at arc length `s_link` on `link`."""
        return _points(self.link_offset, self.link_length, self.poly_s, self.poly_xy, link, s_link)

    @functools.cached_property
    def _in_segments(self) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
        """Every IN lane as a straight segment: (link ids, start points, end points, half widths)."""
        ids = [lid for ig in self.intersections for lid in ig.in_links.values()]
        a = np.array([self.links[lid].points[0] for lid in ids])
        b = np.array([self.links[lid].points[-1] for lid in ids])
        half = np.array(
            [self.intersections[self.links[lid].intersection].spec.approach(self.links[lid].leg).lane_width_m / 2 for lid in ids]  # type: ignore[union-attr]
        )
        return np.array(ids), a, b, half

    @functools.cached_property
    def _in_table(self) -> tuple[IntArray, npt.NDArray[np.int64], IntArray, IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """IN_GRID_M squares and the IN segments that come within the widest half width + 0.5 m (and a metre more) of
        some point of each, for `_in_lanes_kernel`: a point's nearest segment, if it is near enough to count, is among
        its square's, so `in_lanes_at` looks at those alone and not at every lane of a district. The squares as a
        dense grid over their bounding box (the lowest square, and each square's number, -1 where no segment is within
        reach); each square's segments as a run of indices into `_in_segments` (`start[c]` to `start[c + 1]`), in
        that order; and every segment's start point, direction vector, and squared length (at least 1e-9), half width
        and length (rows of the last array)."""
        _, a, b, half = self._in_segments
        if not len(a):  # no approach lane (a SUMO scenario's network, docs/sumo.md): no square
            none = np.empty(0)
            return (np.zeros(2, dtype=np.int64), np.full((1, 1), -1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                    np.empty(0, dtype=np.int64), none, none, none, none, np.empty((3, 0)))
        ab = b - a
        len2, length = np.maximum((ab * ab).sum(axis=1), 1e-9), np.hypot(ab[:, 0], ab[:, 1])
        reach = float(half.max()) + 0.5 + 1.0  # a metre more than needed: no rounding at a square's edge can matter
        first = np.floor((np.minimum(a, b) - reach) / IN_GRID_M).astype(int)
        last = np.floor((np.maximum(a, b) + reach) / IN_GRID_M).astype(int)
        cells: dict[tuple[int, int], list[int]] = {}
        for k in range(len(a)):
            for cx in range(first[k, 0], last[k, 0] + 1):
                for cy in range(first[k, 1], last[k, 1] + 1):
                    cells.setdefault((cx, cy), []).append(k)
        squares = np.array(list(cells), dtype=np.int64)
        lo = squares.min(axis=0)
        dense = np.full(tuple(squares.max(axis=0) - lo + 1), -1, dtype=np.int64)
        start = np.zeros(len(cells) + 1, dtype=np.int64)
        for c, ((cx, cy), ks) in enumerate(cells.items()):
            dense[cx - lo[0], cy - lo[1]] = c
            start[c + 1] = start[c] + len(ks)
        runs = np.array([k for ks in cells.values() for k in ks], dtype=np.int64)
        return (lo, dense, start, runs, a[:, 0].copy(), a[:, 1].copy(), ab[:, 0].copy(), ab[:, 1].copy(),
                np.stack([len2, half, length]))

    def in_lane_at(self, x: float, y: float) -> tuple[int, float] | None:
        """The IN lane a point lies on, and its distance [m] to the stop line; None off every approach lane.

        The nearest IN segment is looked for among those of the point's grid square (`_in_table`): every segment within
        the widest half width + 0.5 m is there, and a nearest segment farther than that is too far for its own half
        width + 0.5 m as well, so the answer is the one a search of every segment gives."""
        lane, to_line = self.in_lanes_at(np.array([x], dtype=np.float64), np.array([y], dtype=np.float64))
        return None if lane[0] < 0 else (int(lane[0]), float(to_line[0]))

    def in_lanes_at(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, FloatArray]:
        """`in_lane_at` for many points at once: per point, its IN lane (-1: none) and distance [m] to the stop line."""
        k, to_line = _in_lanes_kernel(*self._in_table, np.require(x, np.float64, ["C", "W"]), np.require(y, np.float64, ["C", "W"]))
        lane = np.full(len(k), -1, dtype=np.int64)
        hit = k >= 0
        lane[hit] = np.asarray(self._in_segments[0], dtype=np.int64)[k[hit]]
        return lane, to_line

    def in_lanes_near(self, x: float, y: float, heading_deg: float, slack_m: float) -> list[tuple[int, float]]:
        """Every IN lane a point may lie on when it is known only to within `slack_m` [m] (GNSS error): those
        within their half width plus `slack_m` that run within 45 degrees of `heading_deg` (so not the exit lanes
        beside them); each with the point's distance [m] to its stop line."""
        ids, a, b, half = self._in_segments
        if not len(ids):
            return []
        ab = b - a
        p = np.array([x, y])
        t = np.clip(((p - a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-9), 0.0, 1.0)
        d = np.hypot(*(a + ab * t[:, None] - p).T)
        turn = np.abs((np.degrees(np.arctan2(ab[:, 0], ab[:, 1])) - heading_deg + 180.0) % 360.0 - 180.0)
        near = np.flatnonzero((d <= half + slack_m) & (turn <= 45.0))
        return [(int(ids[k]), float((1.0 - t[k]) * np.hypot(*ab[k]))) for k in near]

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) [m] of every lane and turning path."""
        pts = np.concatenate([lk.points for lk in self.links])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def index_of(self, intersection: str) -> int:
        """An intersection's index from its scenario id."""
        return self._ids[intersection]

    @functools.cached_property
    def site_of(self) -> list[int]:
        """Each intersection's site, named by one of its intersections (a union-find root over the roads):
        intersections that roads connect share a site; traffic never passes between sites."""
        parent = list(range(len(self.intersections)))

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for (a, _), (b, _) in self.road_of.items():
            parent[root(a)] = root(b)
        return [root(i) for i in range(len(parent))]

    @functools.cached_property
    def components(self) -> list[list[int]]:
        """Intersections (by index) grouped into sites (`site_of`), sorted."""
        groups: dict[int, list[int]] = {}
        for i, site in enumerate(self.site_of):
            groups.setdefault(site, []).append(i)
        return sorted(groups.values())

    def area_tiles(self, intersections: list[int], margin_m: float = 50.0) -> list[str]:
        """The tiles that the approaches of these intersections (plus a margin) touch."""
        out: set[str] = set()
        for i in intersections:
            ig = self.intersections[i]
            reach = max(a.length_m for a in ig.spec.approaches) + ig.stop_offset_m + margin_m
            g = self.frame.to_geo(*ig.center)
            out.update(tiles_covering(g.lat_deg, g.lon_deg, reach))
        return sorted(out)

    def shard_area(self, index: int, of: int) -> frozenset[int]:
        """The intersections of area shard `index` of `of`: whole sites (`components`), dealt round-robin."""
        return frozenset(ix for k, site in enumerate(self.components) if k % of == index for ix in site)

    @functools.cached_property
    def tile_owner(self) -> dict[str, int]:
        """Each tile any site's approaches touch -> the site (`site_of`) of the intersection nearest the tile's
        centre: every such tile has exactly one owner."""
        centres = [(self.site_of[ig.index], self.frame.to_geo(*ig.center)) for ig in self.intersections]
        out = {}
        for tile in self.area_tiles(list(range(len(self.intersections)))):
            s, w, n, e = tile_bounds(tile)
            lat, lon = (s + n) / 2, (w + e) / 2
            out[tile] = min(centres, key=lambda kc: (kc[1].lat_deg - lat) ** 2 + ((kc[1].lon_deg - lon) * math.cos(math.radians(lat))) ** 2)[0]
        return out

    @functools.cached_property
    def tiles(self) -> list[str]:
        """Each intersection's tile (quadkey of its centre): where its SPaT and MAP are addressed."""
        out = []
        for ig in self.intersections:
            g = self.frame.to_geo(*ig.center)
            out.append(quadkey(g.lat_deg, g.lon_deg))
        return out

    @functools.cached_property
    def site_tiles(self) -> list[str]:
        """The tile of each intersection with an RSU (`Scenario.sites`, in order): the schematic intersections'
        (`tiles`), or a SUMO scenario's junctions', from the positions the scenario gives them."""
        sumo = self.scenario.sumo
        if self.scenario.mobility != "sumo" or sumo is None:
            return self.tiles
        return [quadkey(g.lat_deg, g.lon_deg) for g in (self.frame.to_geo(j.x_m, j.y_m) for j in sumo.junctions)]

    @functools.cached_property
    def rsu_xy(self) -> dict[str, tuple[float, float]]:
        """Each RSU's position [m], by id (a SUMO junction's RSU: at the junction's centre)."""
        sumo = self.scenario.sumo
        if self.scenario.mobility == "sumo" and sumo is not None:
            return {self.scenario.rsu_of(i).id: (j.x_m, j.y_m) for i, j in enumerate(sumo.junctions)}
        out = {}
        for ig in self.intersections:
            rsu = self.scenario.rsu_of(ig.index)
            out[rsu.id] = (ig.center[0] + rsu.dx_m, ig.center[1] + rsu.dy_m)
        return out

    def lane_point(self, iid: str, leg: str, lane: int, upstream_m: float) -> tuple[int, float, float, float]:
        """(IN link, arc length on it, x, y) of a point `upstream_m` before a lane's stop line."""
        ig = next(ig for ig in self.intersections if ig.spec.id == iid)
        lanes = [k for (lg, k) in ig.in_links if lg == leg]
        lid = ig.in_links[(leg, min(lane, max(lanes)))]
        s = max(float(self.link_length[lid]) - upstream_m, 0.0)
        x, y, _ = self.xy_heading(np.array([lid]), np.array([s]))
        return lid, s, float(x[0]), float(y[0])

    def group_of(self, iid: str, leg: str, turn: str) -> SignalGroup:
        return self.groups[self.intersections[self._ids[iid]].groups[(leg, turn)]]


def _turn_path(src: FloatArray, dst: FloatArray, turn: str, n: int = 24) -> FloatArray:
    """A smooth path from the end of `src` to the start of `dst` (a cubic Bezier; straight for through)."""
    p0, p3 = src[-1], dst[0]
    if turn == "through":
        return np.array([p0, p3])
    d_in = (src[-1] - src[-2]) / np.linalg.norm(src[-1] - src[-2])
    d_out = (dst[1] - dst[0]) / np.linalg.norm(dst[1] - dst[0])
    # control points where the two tangents meet makes a near-circular arc; 0.55 is the circle constant
    k = 0.55 * np.linalg.norm(p3 - p0) / math.sqrt(2)
    p1, p2 = p0 + d_in * k, p3 - d_out * k
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3  # type: ignore[no-any-return]


def _resample(link: Link) -> tuple[FloatArray, FloatArray]:
    """Points every _SAMPLE_M along a link, with their arc lengths."""
    s = np.arange(0.0, link.length + _SAMPLE_M, _SAMPLE_M)
    s = np.minimum(s, link.length)
    x = np.interp(s, link.cum, link.points[:, 0])
    y = np.interp(s, link.cum, link.points[:, 1])
    return np.stack([x, y], axis=1), s


def _wait_point(pa: FloatArray, sa: FloatArray, pb: FloatArray, s_conflict: float, clearance: float) -> float:
    """Furthest arc length on path a, at or before its conflict zone, whose point is at least
    `clearance` [m] from path b."""
    for k in range(int(np.searchsorted(sa, s_conflict)), -1, -1):
        if np.hypot(pb[:, 0] - pa[k, 0], pb[:, 1] - pa[k, 1]).min() >= clearance:
            return float(sa[k])
    return 0.0


def _sweep(link: Link) -> float:
    """How far inside its path the longest vehicle's body reaches on a turn (off-tracking, L^2 / 8R) [m]."""
    d = np.diff(link.points, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 0], d[:, 1]))
    turned = abs(float(heading[-1] - heading[0]))
    if turned < 0.1:
        return 0.0
    radius = link.length / turned
    return min(LONGEST_M**2 / (8.0 * radius), MAX_SWEEP_M)


@kernel
def point_at(
    link_offset: jit.FloatArray, link_length: jit.FloatArray, poly_s: jit.FloatArray, poly_xy: jit.FloatMatrix, link: int,
    s_link: float,
) -> tuple[float, float, float]:
    """(x [m], y [m], compass heading [deg]) of the point at arc length `s_link` on `link` of the joined polyline
    (`Network.poly_s`, `poly_xy`): interpolated within its segment, the heading of that segment."""
    g = link_offset[link] + min(max(s_link, 0.0), link_length[link])
    j = min(max(np.searchsorted(poly_s, g, side="right"), 1), len(poly_s) - 1)
    s0, s1 = poly_s[j - 1], poly_s[j]
    t = min(max((g - s0) / max(s1 - s0, 1e-9), 0.0), 1.0)
    dx, dy = poly_xy[j, 0] - poly_xy[j - 1, 0], poly_xy[j, 1] - poly_xy[j - 1, 1]
    return poly_xy[j - 1, 0] + dx * t, poly_xy[j - 1, 1] + dy * t, math.atan2(dx, dy) * (180.0 / math.pi) % 360.0


@kernel
def _points(
    link_offset: jit.FloatArray, link_length: jit.FloatArray, poly_s: jit.FloatArray, poly_xy: jit.FloatMatrix,
    link: jit.IntArray, s_link: jit.FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    x, y, heading = np.empty(len(link)), np.empty(len(link)), np.empty(len(link))
    for i in range(len(link)):
        x[i], y[i], heading[i] = point_at(link_offset, link_length, poly_s, poly_xy, link[i], s_link[i])
    return x, y, heading


@kernel
def _in_lanes_kernel(
    lo: jit.IntArray, dense: jit.IntMatrix, start: jit.IntArray, runs: jit.IntArray, ax: jit.FloatArray, ay: jit.FloatArray,
    abx: jit.FloatArray, aby: jit.FloatArray, per: jit.FloatMatrix, x: jit.FloatArray, y: jit.FloatArray,
) -> tuple[IntArray, FloatArray]:
    """`Network.in_lanes_at` on `_in_table`: per point, the index of its IN segment (-1: none) and the distance [m] to
    its stop line. The arithmetic of the numpy search it replaced, in the same order: the nearest segment of the
    point's square (the first of equals; a NaN distance first of all, as numpy's argmin), if within its half width
    + 0.5 m."""
    len2, half, length = per[0], per[1], per[2]
    seg, to_line = np.full(len(x), -1, dtype=np.int64), np.zeros(len(x))
    for i in range(len(x)):
        gx, gy = np.floor(x[i] / IN_GRID_M) - lo[0], np.floor(y[i] / IN_GRID_M) - lo[1]  # (NaN: in no square)
        if not (0 <= gx < dense.shape[0] and 0 <= gy < dense.shape[1]):
            continue
        c = dense[int(gx), int(gy)]
        if c < 0:
            continue
        best, best_d, best_t = -1, np.inf, 0.0
        for p in range(start[c], start[c + 1]):
            k = runs[p]
            t = min(max(((x[i] - ax[k]) * abx[k] + (y[i] - ay[k]) * aby[k]) / len2[k], 0.0), 1.0)
            d = math.hypot(ax[k] + abx[k] * t - x[i], ay[k] + aby[k] * t - y[i])
            if d != d:
                best, best_d, best_t = k, d, t
                break
            if best < 0 or d < best_d:
                best, best_d, best_t = k, d, t
        if best >= 0 and not best_d > half[best] + 0.5:
            seg[i], to_line[i] = best, (1.0 - best_t) * length[best]
    return seg, to_line
