"""Hazards the cloud detects itself from the BSMs it receives: plain, synchronous rules.

  stopped vehicle  a vehicle standing (under STOPPED_MPS) in a travel lane for more than
                   STOPPED_S, more than LINE_CLEAR_M before the stop line, at the front of its
                   own standing group (nobody standing within QUEUE_GAP_M ahead of it): not in
                   the queue that stretches back from the signal, so something blocks the lane
                   at its front (it has broken down, or it waits behind an obstruction).
  hard braking     HARD_BRAKES different vehicles send the hard-braking event within
                   CLUSTER_M of each other inside CLUSTER_S, more than LINE_CLEAR_M before a
                   stop line (where a yellow makes drivers brake hard anyway) and, on a lane
                   entering the network, more than EDGE_M after its start (where the simulation
                   puts arriving vehicles onto the road).

Each detection is an approach lane and a distance to its stop line; the service raises it as
RSI (source: detection) and keeps it while it is confirmed, clearing it HOLD_S after the last
confirmation.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

STOPPED_MPS = 0.5  # [m/s]
STOPPED_S = 10.0  # [s] N: how long a vehicle must stand, away from a stop line
LINE_CLEAR_M = 40.0  # [m] a vehicle standing nearer its stop line is in the signal's queue
QUEUE_GAP_M = 15.0  # [m] between standing vehicles' positions: more, and they are not one queue
EDGE_M = 50.0  # [m] from the start of a lane entering the network
HARD_BRAKES = 3  # vehicles
CLUSTER_M = 50.0  # [m]
CLUSTER_S = 10.0  # [s]
HOLD_S = 60.0  # [s] a detection not confirmed for this long is over
SAME_M = 30.0  # [m] detections this close on one lane are the same hazard


@dataclass
class Detection:
    kind: str  # "stalled_vehicle" or "hard_braking"
    lane: int  # IN link id
    to_line_m: float  # [m] from the stop line, where the obstruction is
    first_s: float
    last_s: float
    vehicles: set[str] = field(default_factory=set)  # the vehicles whose BSMs showed it
    event_id: int | None = None  # the RSI event it was raised as (None: not raised, a reported hazard covers it)


@dataclass
class Detector:
    """Fed once a second with what the cloud sees on the approach lanes; returns new detections."""

    detections: list[Detection] = field(default_factory=list)  # active
    ended: list[Detection] = field(default_factory=list)
    _standing_since: dict[str, float] = field(default_factory=dict)
    _brakes: deque[tuple[float, str, float, float, int, float]] = field(default_factory=deque)  # (t, vehicle, x, y, lane, to line)

    def standing(self, now: float, on_lanes: list[tuple[str, int, float, float]]) -> list[Detection]:
        """`on_lanes`: (vehicle, IN link, distance to the stop line [m], speed [m/s]) of every vehicle on an approach lane."""
        standing: dict[int, list[float]] = {}
        for _, lane, d, v in on_lanes:
            if v < STOPPED_MPS:
                standing.setdefault(lane, []).append(d)
        new = []
        still = set()
        for sid, lane, d, v in on_lanes:
            if v >= STOPPED_MPS or d <= LINE_CLEAR_M:
                continue
            if any(d - QUEUE_GAP_M <= other < d for other in standing[lane]):
                continue  # in a queue: someone stands just ahead of it
            still.add(sid)
            since = self._standing_since.setdefault(sid, now)
            if now - since >= STOPPED_S:
                det = self._confirm("stalled_vehicle", lane, max(d - 8.0, 0.0), now, sid)
                if det is not None:
                    new.append(det)
        self._standing_since = {k: t for k, t in self._standing_since.items() if k in still}
        return new

    def hard_brake(
        self, now: float, vehicle: str, x: float, y: float, lane: int, to_line_m: float, from_edge_m: float = math.inf
    ) -> Detection | None:
        """A BSM with the hard-braking event, from a vehicle on approach lane `lane`, `from_edge_m` after the
        start of the lane if it enters the network."""
        if to_line_m <= LINE_CLEAR_M or from_edge_m < EDGE_M:
            return None
        self._brakes.append((now, vehicle, x, y, lane, to_line_m))
        while self._brakes and self._brakes[0][0] < now - CLUSTER_S:
            self._brakes.popleft()
        near = {b[1] for b in self._brakes if math.hypot(b[2] - x, b[3] - y) <= CLUSTER_M}
        if len(near) < HARD_BRAKES:
            return None
        det = self._confirm("hard_braking", lane, to_line_m, now, vehicle)
        if det is not None:
            det.vehicles |= near
        return det

    def _confirm(self, kind: str, lane: int, to_line_m: float, now: float, vehicle: str) -> Detection | None:
        """The detection, if it is new; an existing one at the same place is confirmed again."""
        for det in self.detections:
            if det.kind == kind and det.lane == lane and abs(det.to_line_m - to_line_m) <= SAME_M:
                det.last_s = now
                det.vehicles.add(vehicle)
                return None
        det = Detection(kind, lane, to_line_m, now, now, {vehicle})
        self.detections.append(det)
        return det

    def expired(self, now: float) -> list[Detection]:
        """Detections not confirmed for HOLD_S: over."""
        over = [d for d in self.detections if now - d.last_s > HOLD_S]
        self.detections = [d for d in self.detections if d not in over]
        self.ended.extend(over)
        return over
