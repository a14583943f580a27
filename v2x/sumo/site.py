"""A signalised junction of a SUMO network as an RSU's site: its MAP, its plan and what a plan may do there.

What the RSU reads of the network itself (docs/sumo.md); every other tier knows the junction only from the
scenario's `[[sumo.junctions]]`. No libsumo here: the network file is read as XML.

MAP's lanes are the incoming and outgoing lanes of the traffic light's controlled links (SUMO connections with a
`linkIndex`), each once: an ingress lane with a connection per link it starts, an egress lane for every lane a
link ends on. Node offsets are metres around the junction's centre in the network's own coordinates (a projected
network's metres), ingress lists from the stop line outwards. Each link index is a signal group (index + 1).

The rest of the road: every other lane of the network (not a junction's internal lane) is in the MAP of the RSU
junction nearest to its middle, if within that RSU's radio range, after the junction's own lanes: a lane with no
approach (0), no direction and no connections, its nodes in the direction of travel. So the road between the
junctions, through the unsignalised ones, is on the wire too, and a receiver draws all of it from MAP alone.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2x.core import messages as m
from v2x.core.errors import ScenarioError
from v2x.core.geo import LocalFrame
from v2x.core.mapdata import intersection_ref
from v2x.core.scenario import Scenario
from v2x.core.signal.controller import DETECTOR_M, Mode, Plan
from v2x.core.signal.plans import PlanLimits
from v2x.sumo.netfile import Lane, TrafficLight, read_lanes, read_traffic_lights
from v2x.sumo.signals import group_of, program_plan

#: SUMO's connection directions -> MAP maneuvers (partly left/right count as left/right)
MANEUVER_OF_DIR = {"s": m.Maneuver.STRAIGHT, "l": m.Maneuver.LEFT, "L": m.Maneuver.LEFT, "r": m.Maneuver.RIGHT,
                   "R": m.Maneuver.RIGHT, "t": m.Maneuver.U_TURN}
MAX_LANES = 255  # MAP lane ids are 1..255 within an intersection
ON_LANE_SLACK_M = 0.5  # [m] beyond a lane's half width a point still counts as on it (as Network.in_lane_at)
ON_LANE_TURN_DEG = 45.0  # [deg] a vehicle on a lane heads along it within this (so not the exit lane beside it)


@dataclass(frozen=True)
class SumoSite:
    """One RSU's junction: its traffic light, the MAP made from the network, the plan made from the program."""

    index: int  # in the scenario's [[sumo.junctions]]: MAP's intersection id is index + 1
    light: TrafficLight
    xy: tuple[float, float]  # [m] local, from the scenario
    geometry: m.IntersectionGeometry
    plan: Plan
    limits: PlanLimits

    @property
    def id(self) -> str:
        return self.light.id


def map_lanes(light: TrafficLight) -> list[str]:
    """The lanes of a light's MAP, in lane id order: its links' incoming lanes, then their outgoing lanes."""
    ins = list(dict.fromkeys(lk.from_lane for lk in light.links))
    outs = [lane for lane in dict.fromkeys(lk.to_lane for lk in light.links) if lane not in ins]
    return [*ins, *outs]


def build_geometry(
    light: TrafficLight, lanes: dict[str, Lane], index: int, ref_point: m.GeoPoint, net: Path, roads: tuple[str, ...] = (),
) -> m.IntersectionGeometry:
    """The MAP geometry of a traffic light's junction, and of the `roads` lanes around it (see the module docstring)."""
    order = map_lanes(light)
    if len(order) > MAX_LANES:
        raise ScenarioError([f"{net}: traffic light {light.id} has {len(order)} lanes (expected at most {MAX_LANES} in one MAP)"])
    missing = [lane for lane in order if lane not in lanes or len(lanes[lane].shape) < 2]
    if missing:
        raise ScenarioError([f"{net}: traffic light {light.id}: lanes {', '.join(missing)} have no shape (expected <lane shape=...>)"])
    lane_id = {lane: k + 1 for k, lane in enumerate(order)}
    edges = list(dict.fromkeys(lane.rsplit("_", 1)[0] for lane in order))
    cx, cy = light.xy
    ingress = {lk.from_lane for lk in light.links}
    out = []
    for lane in order:
        ln = lanes[lane]
        nodes = [(round(x - cx, 2), round(y - cy, 2)) for x, y in ln.shape]
        links = [lk for lk in light.links if lk.from_lane == lane]
        conns = tuple(
            m.Connection(lane_id[lk.to_lane], frozenset({MANEUVER_OF_DIR.get(lk.direction, m.Maneuver.STRAIGHT)}), group_of(lk.index))
            for lk in links
        )
        into = lane in ingress
        out.append(m.MapLane(
            lane_id=lane_id[lane], name=lane, direction=m.LaneDirection.INGRESS if into else m.LaneDirection.EGRESS,
            approach_id=edges.index(lane.rsplit("_", 1)[0]) + 1,
            maneuvers=frozenset(mv for c in conns for mv in c.maneuver), width_m=ln.width_m, speed_limit_mps=ln.speed_mps,
            nodes=tuple(nodes[::-1] if into else nodes),  # J2735: an ingress lane's nodes start at the stop line
            connections=conns,
        ))
    for k, lane in enumerate(roads, start=len(order) + 1):
        ln = lanes[lane]
        out.append(m.MapLane(
            lane_id=k, name=lane, direction=m.LaneDirection.UNSPECIFIED, approach_id=0, maneuvers=frozenset(),
            width_m=ln.width_m, speed_limit_mps=ln.speed_mps, nodes=tuple((round(x - cx, 2), round(y - cy, 2)) for x, y in ln.shape),
        ))
    return m.IntersectionGeometry(ref=intersection_ref(index), name=light.id, revision=1, ref_point=ref_point, lanes=tuple(out))


def plan_limits(light: TrafficLight, plan: Plan) -> PlanLimits:
    """What a plan may do at this light: its own groups; no two groups green together that its program never has
    green together (the program is the conflict monitor's programming); clearances no shorter than its own."""
    groups = frozenset(group_of(lk.index) for lk in light.links)
    together = {tuple(sorted(pair)) for p in plan.phases for pair in itertools.combinations(p.groups, 2)}
    never = frozenset((a, b) for a, b in itertools.combinations(sorted(groups), 2) if (a, b) not in together)
    return PlanLimits(
        light.id, groups, never, min(p.min_green_s for p in plan.phases), min(p.yellow_s for p in plan.phases),
        min(p.all_red_s for p in plan.phases),
    )


@functools.cache
def sumo_sites(sc: Scenario) -> tuple[SumoSite, ...]:
    """The RSU sites of a SUMO scenario, in its [[sumo.junctions]] order (the network read once per scenario)."""
    if sc.sumo is None:
        return ()
    net = Path(sc.sumo.net)
    lights = {tl.id: tl for tl in read_traffic_lights(net)}
    missing = [j.id for j in sc.sumo.junctions if j.id not in lights]
    if missing:
        raise ScenarioError([f"{net}: no traffic light {', '.join(missing)} (expected one of {', '.join(lights) or 'none: it has no traffic lights'})"])
    lanes = read_lanes(net, None)
    roads, _ = road_lanes(sc, [lights[j.id] for j in sc.sumo.junctions], lanes)
    frame = LocalFrame(sc.origin.lat_deg, sc.origin.lon_deg, sc.origin.elevation_m)
    out = []
    for i, j in enumerate(sc.sumo.junctions):
        tl = lights[j.id]
        plan = program_plan(tl, Mode.FIXED)
        geometry = build_geometry(tl, lanes, i, frame.to_geo(j.x_m, j.y_m), net, roads[i])
        out.append(SumoSite(i, tl, (j.x_m, j.y_m), geometry, plan, plan_limits(tl, plan)))
    return tuple(out)


def road_lanes(sc: Scenario, lights: list[TrafficLight], lanes: dict[str, Lane]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Per RSU junction (in `lights`' order), the lanes of the rest of the road in its MAP: each lane not in any of
    the junctions' own MAPs, by the junction nearest its middle within that junction's range, nearest first, as
    many as MAP's lane ids leave room for; and the lanes in no MAP (beyond every range, or no room)."""
    assert sc.sumo is not None
    if not lights:
        return [], sorted(lanes)
    own = {lane for tl in lights for lane in map_lanes(tl)}
    near: list[list[tuple[float, str]]] = [[] for _ in lights]
    left_out = []
    for lane in sorted(set(lanes) - own):
        x, y = lanes[lane].shape[len(lanes[lane].shape) // 2]  # its middle node
        d, k = min((math.hypot(x - tl.xy[0], y - tl.xy[1]), k) for k, tl in enumerate(lights))
        if d <= sc.sumo.junctions[k].range_m:
            near[k].append((d, lane))
        else:
            left_out.append(lane)
    roads = []
    for tl, by_distance in zip(lights, near, strict=True):
        room = max(MAX_LANES - len(map_lanes(tl)), 0)
        ranked = [lane for _, lane in sorted(by_distance)]
        roads.append(tuple(ranked[:room]))
        left_out += ranked[room:]
    return roads, sorted(left_out)


def hazard_points(sc: Scenario) -> tuple[tuple[float, float], ...]:
    """Where each of a SUMO scenario's hazards is, in local metres [m]: on its lane's centre line, `distance_m`
    before the lane's end, put on our local plane by `to_local`."""
    if sc.sumo is None or not sc.sumo.hazards:
        return ()
    lanes = read_lanes(Path(sc.sumo.net), {f"{hz.edge}_{hz.lane}" for hz in sc.sumo.hazards})
    a, b = to_local(sc)
    out = []
    for hz in sc.sumo.hazards:
        x, y = _back_along(lanes[f"{hz.edge}_{hz.lane}"].shape, hz.distance_m)
        z = a * complex(x, y) + b
        out.append((z.real, z.imag))
    return tuple(out)


@functools.cache
def to_local(sc: Scenario) -> tuple[complex, complex]:
    """(a, b): a network point z (x + iy, the network's metres) is at a * z + b on our local plane [m]: the similarity
    (scale, rotation, shift) that takes the RSU junctions' centres in the network to theirs in the scenario
    (written from the network's projection by `v2x import-sumo`): exact on a tangent plane, within centimetres over a
    city on a transverse Mercator one. With one junction: shifted by it; with none, the network's own metres (as for
    a network without a projection, laid out around the origin)."""
    a, b = complex(1.0), complex(0.0)
    sites = sumo_sites(sc)
    src = [complex(*s.light.xy) for s in sites]
    dst = [complex(*s.xy) for s in sites]
    if len(sites) >= 2:
        sm, dm = sum(src) / len(src), sum(dst) / len(dst)
        a = sum((d - dm) * (s - sm).conjugate() for s, d in zip(src, dst, strict=True)) / sum(abs(s - sm) ** 2 for s in src)
        b = dm - a * sm
    elif sites:
        b = dst[0] - src[0]
    return a, b


@dataclass(frozen=True)
class Approaches:
    """The ingress lanes of a SUMO scenario's RSU junctions on our local plane, as straight segments, to tell which
    lane a position heard in a BSM is on (the cloud's demand, the RSU's detector calls: docs/sumo.md)."""

    site: np.ndarray  # per segment: its junction's index in the scenario's sites
    lane: tuple[str, ...]  # per segment: SUMO's lane id
    a: np.ndarray  # [m] (n, 2) each segment's start, local
    b: np.ndarray  # [m] (n, 2) its end, nearer the stop line
    half_m: np.ndarray  # [m] the lane's half width
    beyond_m: np.ndarray  # [m] from the segment's end to the stop line, along the lane
    groups: dict[tuple[int, str], frozenset[int]]  # (junction, lane) -> the signal groups of the links it starts
    lanes: dict[tuple[int, str], int]  # (junction, approach: the lane's edge) -> its ingress lanes

    def _along(self, x: float, y: float, heading_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """Per segment: the distance [m] from local (x, y) (infinite where the segment does not run within
        ON_LANE_TURN_DEG of `heading_deg`), and the distance [m] along the lane to its stop line."""
        ab = self.b - self.a
        p = np.array([x, y])
        t = np.clip(((p - self.a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-9), 0.0, 1.0)
        d = np.hypot(*(self.a + ab * t[:, None] - p).T)
        turn = np.abs((np.degrees(np.arctan2(ab[:, 0], ab[:, 1])) - heading_deg + 180.0) % 360.0 - 180.0)
        d[turn > ON_LANE_TURN_DEG] = np.inf
        return d, self.beyond_m + (1.0 - t) * np.hypot(ab[:, 0], ab[:, 1])

    def at(self, x: float, y: float, heading_deg: float) -> tuple[int, str, float] | None:
        """(junction index, lane, distance to its stop line [m]) of the ingress lane a vehicle at local (x, y) [m]
        heading `heading_deg` is on; None off every one (or in the junction)."""
        if not len(self.lane):
            return None
        d, to_line = self._along(x, y, heading_deg)
        k = int(np.argmin(d))
        if d[k] > self.half_m[k] + ON_LANE_SLACK_M:
            return None
        return int(self.site[k]), self.lane[k], float(to_line[k])

    def calls(self, index: int, x: float, y: float, heading_deg: float, slack_m: float = ON_LANE_SLACK_M) -> set[int]:
        """The signal groups a vehicle at local (x, y) [m] heading `heading_deg` calls at junction `index`: those of
        the links each ingress lane there starts that it may be on (within the lane's half width and `slack_m` [m]:
        a position known only to within a GNSS error calls for every lane it may be on) within DETECTOR_M of the
        stop line (a loop detector's zone)."""
        if not len(self.lane):
            return set()
        d, to_line = self._along(x, y, heading_deg)
        hit = np.flatnonzero((self.site == index) & (d <= self.half_m + slack_m) & (to_line < DETECTOR_M))
        return {g for k in hit for g in self.groups[(index, self.lane[k])]}


def approach_of(lane: str) -> str:
    """The approach a SUMO lane belongs to: its edge."""
    return lane.rsplit("_", 1)[0]


@functools.cache
def approaches(sc: Scenario) -> Approaches:
    """The ingress lanes of every RSU junction of a SUMO scenario (its MAPs' ingress lanes, put on our plane by
    `to_local`)."""
    a, b = to_local(sc)
    site, lane, starts, ends, half, beyond = [], [], [], [], [], []
    groups: dict[tuple[int, str], frozenset[int]] = {}
    lanes: dict[tuple[int, str], int] = {}
    for s in sumo_sites(sc):
        cx, cy = s.light.xy
        for ln in s.geometry.lanes:
            if ln.direction is not m.LaneDirection.INGRESS:
                continue
            pts = [a * complex(cx + x, cy + y) + b for x, y in ln.nodes]  # from the stop line outwards
            along = 0.0
            for near, far in itertools.pairwise(pts):
                site.append(s.index)
                lane.append(ln.name)
                starts.append((far.real, far.imag))
                ends.append((near.real, near.imag))
                half.append(ln.width_m / 2)
                beyond.append(along)
                along += abs(far - near)
            groups[(s.index, ln.name)] = frozenset(c.signal_group for c in ln.connections)
            key = (s.index, approach_of(ln.name))
            lanes[key] = lanes.get(key, 0) + 1
    return Approaches(
        np.array(site, dtype=np.int64), tuple(lane), np.array(starts).reshape(-1, 2), np.array(ends).reshape(-1, 2),
        np.array(half), np.array(beyond), groups, lanes,
    )


def _back_along(shape: tuple[tuple[float, float], ...], distance_m: float) -> tuple[float, float]:
    """The point `distance_m` back from the end of a polyline [m]."""
    pts = shape[::-1]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        seg = math.hypot(x1 - x0, y1 - y0)
        if distance_m <= seg and seg > 0:
            f = distance_m / seg
            return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        distance_m -= seg
    return pts[-1]
