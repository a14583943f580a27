"""Signal priority, the vehicle side: each emergency vehicle's OBU asks the RSU ahead for it.

An emergency vehicle (a scheduled vehicle with `priority = true`; on SUMO, one of vClass emergency) sends a PriorityRequest
(QoS 1, `prq/<intersection>/<vehicle>`) once it is within PRIORITY_RANGE_M of the stop line,
an update every UPDATE_EVERY_S with its new arrival estimate, and a cancellation once it has
crossed. The RSU's PriorityStatus replies are kept as events. Synchronous: `step()` returns
the requests to publish; the fleet carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref, lane_id
from v2x.core.network import Network
from v2x.core.traffic import KIND_INDEX, Traffic

if TYPE_CHECKING:
    from v2x.sumo.mobility import SumoTraffic

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
        out: list[tuple[int, str, m.PriorityRequest]] = []
        present = set()
        for i in np.flatnonzero(traffic.priority):
            vid = int(traffic.ids[i])
            present.add(vid)
            if not ready(vid):
                continue
            g = int(group[i])
            ix = net.groups[g].intersection if g >= 0 else -1
            kind = self._due(vid, ix, float(dist[i]), now, out)
            if kind is None:
                continue
            conn = next(lid for lid in net.routes[int(traffic.route[i])] if net.links[lid].group == g)
            link = net.links[conn]
            exit_link = net.intersections[ix].out_links.get((net.exit_leg(link.leg, link.turn), 0))
            out_lane = lane_id(net, exit_link) if exit_link is not None else 0  # 0: through (a corridor road has no exit lane)
            eta = float(dist[i]) / max(float(traffic.v[i]), MIN_ETA_SPEED * link.speed_limit_mps)
            out.append(self._request(vid, ix, self.asked[vid].request_id, kind, (lane_id(net, link.source), out_lane, eta), now))
        for vid in self.asked.keys() - present:  # left the network
            del self.asked[vid]
        return out

    def step_sumo(self, sumo: SumoTraffic, now: float, ready: Callable[[int], bool]) -> list[tuple[int, str, m.PriorityRequest]]:
        """The same on SUMO (docs/sumo.md): its emergency vehicles (vClass emergency) ask the next junction with an RSU
        on their route; the movement is SUMO's link there (its lanes as MAP lane ids, its index + 1 the group)."""
        from v2x.sumo.site import map_lanes, sumo_sites

        sites = sumo_sites(self.net.scenario)
        site, group, dist = sumo.signals_ahead()
        out: list[tuple[int, str, m.PriorityRequest]] = []
        present = set()
        for i in np.flatnonzero(sumo.kind == KIND_INDEX["emergency"]):
            vid = int(sumo.ids[i])
            present.add(vid)
            if not ready(vid):
                continue
            ix = int(site[i])
            kind = self._due(vid, ix, float(dist[i]), now, out)
            if kind is None:
                continue
            light = sites[ix].light
            link = next(lk for lk in light.links if lk.index == int(group[i]) - 1)
            lanes = map_lanes(light)
            eta = float(dist[i]) / max(sumo.speed(vid), MIN_ETA_SPEED * sumo.allowed_speed(vid))
            movement = (lanes.index(link.from_lane) + 1, lanes.index(link.to_lane) + 1, eta)
            out.append(self._request(vid, ix, self.asked[vid].request_id, kind, movement, now))
        for vid in self.asked.keys() - present:
            del self.asked[vid]
        return out

    def _due(self, vid: int, ix: int, dist_m: float, now: float, out: list[tuple[int, str, m.PriorityRequest]]) -> m.RequestType | None:
        """What an emergency vehicle asks now, `ix` the intersection ahead (-1: none) `dist_m` [m] from its stop line:
        a request within range, an update every UPDATE_EVERY_S, else None; a cancellation (into `out`) once it has
        crossed the one it asked."""
        asked = self.asked.get(vid)
        if asked is not None and asked.intersection != ix:  # crossed: the request is over
            out.append(self._request(vid, asked.intersection, asked.request_id, m.RequestType.CANCELLATION, (0, 0, 0.0), now))
            self.crossings.append({
                "vehicle": f"veh-{vid}", "intersection": self.net.scenario.sites[asked.intersection],
                "from_s": round(asked.since_s, 2), "crossed_s": round(now, 2), "seconds": round(now - asked.since_s, 2),
            })
            del self.asked[vid]
            asked = None
        if ix < 0 or dist_m > PRIORITY_RANGE_M:
            return None
        if asked is None:
            self._next_id = self._next_id % 255 + 1
            asked = self.asked[vid] = _Asked(ix, self._next_id, now, now)
            kind = m.RequestType.REQUEST
        elif now + 1e-9 >= asked.next_update_s:
            kind = m.RequestType.UPDATE
        else:
            return None
        asked.next_update_s = now + UPDATE_EVERY_S
        return kind

    def _request(
        self, vid: int, ix: int, request_id: int, kind: m.RequestType, movement: tuple[int, int, float], now: float
    ) -> tuple[int, str, m.PriorityRequest]:
        in_lane, out_lane, eta = movement
        iid = self.net.scenario.sites[ix]
        self.events.append({"event": kind.name.lower(), "vehicle": vid, "intersection": iid, "sim_s": round(now, 3), "eta_s": round(eta, 2)})
        req = m.PriorityRequest(
            request_id=request_id, intersection=intersection_ref(ix), type=kind, role=m.VehicleRole.EMERGENCY,
            in_lane_id=in_lane, out_lane_id=out_lane, eta_s=eta,
        )
        return vid, iid, req

    def heard(self, vid: int, status: m.PriorityStatus, now: float) -> None:
        self.events.append({
            "event": "status", "vehicle": vid, "intersection": self.net.scenario.sites[status.intersection.id - 1],
            "sim_s": round(now, 3), "state": status.state.name.lower(), "action": status.action.name.lower(),
        })
