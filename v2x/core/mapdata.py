"""MAP messages from the road network, and reading them back.

Each intersection becomes one J2735 IntersectionGeometry: its ingress lanes (node lists
from the stop line outwards) with connections carrying signal groups, and its egress
lanes. Intersection ids on the wire are the scenario order, 1-based, in region 0.
"""

from __future__ import annotations

from v2x.core import messages as m
from v2x.core.network import LinkKind, Network

_MANEUVER = {"through": m.Maneuver.STRAIGHT, "left": m.Maneuver.LEFT, "right": m.Maneuver.RIGHT}
REGION = 0


def intersection_ref(index: int) -> m.IntersectionRef:
    """The wire id of the scenario's `index`-th intersection."""
    return m.IntersectionRef(REGION, index + 1)


def lane_id(network: Network, link_id: int) -> int:
    """The MAP lane id of an IN or OUT link: unique within its intersection, 1..255."""
    return network.map_lane_ids[link_id]


def build_map(network: Network, index: int, revision: int = 1) -> m.IntersectionGeometry:
    """The MAP geometry of intersection `index`."""
    ig = network.intersections[index]
    cx, cy = ig.center
    ref_point = network.frame.to_geo(cx, cy)
    lanes: list[m.MapLane] = []
    legs: list[str] = [a.leg for a in ig.spec.approaches]
    conns_from: dict[int, list[int]] = {}
    for lk in network.links:
        if lk.kind == LinkKind.CONN and lk.intersection == index:
            conns_from.setdefault(lk.source, []).append(lk.id)
    for (leg, lane), lid in sorted(ig.in_links.items(), key=lambda kv: network.map_lane_ids[kv[1]]):
        link = network.links[lid]
        connections = []
        maneuvers = set()
        for cid in conns_from.get(lid, []):
            c = network.links[cid]
            target = network.links[c.target]
            maneuvers.add(_MANEUVER[c.turn])
            remote = None if target.intersection == index else intersection_ref(target.intersection)
            connections.append(
                m.Connection(
                    lane_id(network, c.target),
                    frozenset({_MANEUVER[c.turn]}),
                    network.groups[c.group].group_id,
                    remote,
                )
            )
        a = ig.spec.approach(leg)
        assert a is not None
        lanes.append(
            m.MapLane(
                lane_id=lane_id(network, lid),
                name=f"{leg}.in.{lane}",
                direction=m.LaneDirection.INGRESS,
                approach_id=legs.index(leg) + 1,
                maneuvers=frozenset(maneuvers),
                width_m=a.lane_width_m,
                speed_limit_mps=link.speed_limit_mps,
                # J2735 ingress node lists start at the stop line
                nodes=tuple((float(x - cx), float(y - cy)) for x, y in link.points[::-1]),
                connections=tuple(connections),
            )
        )
    for (leg, lane), lid in sorted(ig.out_links.items(), key=lambda kv: network.map_lane_ids[kv[1]]):
        link = network.links[lid]
        a = ig.spec.approach(leg)
        assert a is not None
        lanes.append(
            m.MapLane(
                lane_id=lane_id(network, lid),
                name=f"{leg}.out.{lane}",
                direction=m.LaneDirection.EGRESS,
                approach_id=legs.index(leg) + 1,
                maneuvers=frozenset(),
                width_m=a.lane_width_m,
                speed_limit_mps=link.speed_limit_mps,
                nodes=tuple((float(x - cx), float(y - cy)) for x, y in link.points),
            )
        )
    return m.IntersectionGeometry(
        ref=intersection_ref(index), name=ig.spec.id, revision=revision, ref_point=ref_point, lanes=tuple(lanes)
    )
