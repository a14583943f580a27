"""Signal priority, the vehicle side: each emergency vehicle's OBU asks the RSU ahead for it.

An emergency vehicle (a scheduled vehicle with `priority = true`) sends a PriorityRequest
(QoS 1, `prq/<intersection>/<vehicle>`) once it is within PRIORITY_RANGE_M of the stop line,
an update every UPDATE_EVERY_S with its new arrival estimate, and a cancellation once it has
crossed. The RSU's PriorityStatus replies are kept as events. Synchronous: `step()` returns
the requests to publish; the fleet carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref, lane_id
from v2x.core.network import Network
from v2x.core.traffic import Traffic

PRIORITY_RANGE_M = 250.0  # [m] from the stop line: when the request goes out
UPDATE_EVERY_S = 1.0  # [s] how often the arrival estimate is updated
MIN_ETA_SPEED = 0.6  # an arrival estimate assumes at least this share of the speed limit


@dataclass
class _Asked:
    intersection: int
    request_id: int
    next_update_s: float
    since_s: float  # [s] when the first request went out


class PriorityRequests:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.asked: dict[int, _Asked] = {}  # vehicle -> its request in force
        self._next_id = 0
        self.events: list[dict[str, object]] = []  # requests sent and replies heard
        # per emergency vehicle and intersection: from its first request (PRIORITY_RANGE_M out) to crossing the line
        self.crossings: list[dict[str, object]] = []

    def step(self, traffic: Traffic, now: float, ready: Callable[[int], bool]) -> list[tuple[int, str, m.PriorityRequest]]:
        """(vehicle, intersection id, request) to send now; `ready(vehicle)`: whether its OBU can send (else: later)."""
        net = self.net
        group, dist = traffic.signal_view()
        out = []
        present = set()
        for i in np.flatnonzero(traffic.priority):
            vid = int(traffic.ids[i])
            present.add(vid)
            if not ready(vid):
                continue
            g = int(group[i])
            ix = net.groups[g].intersection if g >= 0 else -1
            asked = self.asked.get(vid)
            if asked is not None and asked.intersection != ix:  # crossed: the request is over
                out.append(self._request(vid, asked.intersection, asked.request_id, m.RequestType.CANCELLATION, None, now))
                self.crossings.append({
                    "vehicle": f"veh-{vid}", "intersection": net.intersections[asked.intersection].spec.id,
                    "from_s": round(asked.since_s, 2), "crossed_s": round(now, 2), "seconds": round(now - asked.since_s, 2),
                })
                del self.asked[vid]
                asked = None
            if ix < 0 or dist[i] > PRIORITY_RANGE_M:
                continue
            if asked is None:
                self._next_id = self._next_id % 255 + 1
                asked = self.asked[vid] = _Asked(ix, self._next_id, now, now)
                kind = m.RequestType.REQUEST
            elif now + 1e-9 >= asked.next_update_s:
                kind = m.RequestType.UPDATE
            else:
                continue
            asked.next_update_s = now + UPDATE_EVERY_S
            conn = next(lid for lid in net.routes[int(traffic.route[i])] if net.links[lid].group == g)
            limit = net.links[conn].speed_limit_mps
            eta = float(dist[i]) / max(float(traffic.v[i]), MIN_ETA_SPEED * limit)
            out.append(self._request(vid, ix, asked.request_id, kind, (conn, eta), now))
        for vid in self.asked.keys() - present:  # left the network
            del self.asked[vid]
        return out

    def _request(
        self, vid: int, ix: int, request_id: int, kind: m.RequestType, movement: tuple[int, float] | None, now: float
    ) -> tuple[int, str, m.PriorityRequest]:
        net = self.net
        in_lane = out_lane = 0
        eta = 0.0
        if movement is not None:
            conn, eta = movement
            link = net.links[conn]
            in_lane = lane_id(net, link.source)
            out = net.intersections[ix].out_links.get((net.exit_leg(link.leg, link.turn), 0))
            out_lane = lane_id(net, out) if out is not None else 0  # 0: through (a corridor road has no exit lane)
        iid = net.intersections[ix].spec.id
        self.events.append({"event": kind.name.lower(), "vehicle": vid, "intersection": iid, "sim_s": round(now, 3), "eta_s": round(eta, 2)})
        req = m.PriorityRequest(
            request_id=request_id, intersection=intersection_ref(ix), type=kind, role=m.VehicleRole.EMERGENCY,
            in_lane_id=in_lane, out_lane_id=out_lane, eta_s=eta,
        )
        return vid, iid, req

    def heard(self, vid: int, status: m.PriorityStatus, now: float) -> None:
        self.events.append({
            "event": "status", "vehicle": vid, "intersection": self.net.intersections[status.intersection.id - 1].spec.id,
            "sim_s": round(now, 3), "state": status.state.name.lower(), "action": status.action.name.lower(),
        })
