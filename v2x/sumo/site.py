"""A signalised junction of a SUMO network as an RSU's site: its MAP, its plan and what a plan may do there.

What the RSU reads of the network itself (docs/sumo.md); every other tier knows the junction only from the
scenario's `[[sumo.junctions]]`. No libsumo here: the network file is read as XML.

MAP's lanes are the incoming and outgoing lanes of the traffic light's controlled links (SUMO connections with a
`linkIndex`), each once: an ingress lane with a connection per link it starts, an egress lane for every lane a
link ends on. Node offsets are metres around the junction's centre in the network's own coordinates (a projected
network's metres), ingress lists from the stop line outwards. Each link index is a signal group (index + 1).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

from v2x.core import messages as m
from v2x.core.errors import ScenarioError
from v2x.core.geo import LocalFrame
from v2x.core.mapdata import intersection_ref
from v2x.core.scenario import Scenario
from v2x.core.signal.controller import Mode, Plan
from v2x.core.signal.plans import PlanLimits
from v2x.sumo.netfile import Lane, TrafficLight, read_lanes, read_traffic_lights
from v2x.sumo.signals import group_of, program_plan

#: SUMO's connection directions -> MAP maneuvers (partly left/right count as left/right)
MANEUVER_OF_DIR = {"s": m.Maneuver.STRAIGHT, "l": m.Maneuver.LEFT, "L": m.Maneuver.LEFT, "r": m.Maneuver.RIGHT,
                   "R": m.Maneuver.RIGHT, "t": m.Maneuver.U_TURN}
MAX_LANES = 255  # MAP lane ids are 1..255 within an intersection


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


def build_geometry(light: TrafficLight, lanes: dict[str, Lane], index: int, ref_point: m.GeoPoint, net: Path) -> m.IntersectionGeometry:
    """The MAP geometry of a traffic light's junction (see the module docstring)."""
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
    lanes = read_lanes(net, {lane for j in sc.sumo.junctions for lane in map_lanes(lights[j.id])})
    frame = LocalFrame(sc.origin.lat_deg, sc.origin.lon_deg, sc.origin.elevation_m)
    out = []
    for i, j in enumerate(sc.sumo.junctions):
        tl = lights[j.id]
        plan = program_plan(tl, Mode.FIXED)
        out.append(SumoSite(i, tl, (j.x_m, j.y_m), build_geometry(tl, lanes, i, frame.to_geo(j.x_m, j.y_m), net), plan, plan_limits(tl, plan)))
    return tuple(out)
