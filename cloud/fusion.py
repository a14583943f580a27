"""The cloud's fused picture: BSMs and RSU sensor detections (RSM) as one object list (docs/perception.md).

Each RSM's sensor detections (source camera, radar, lidar or integrated; the RSU's echo of the BSMs it heard,
source V2X, adds nothing) are associated with the vehicles whose BSMs the cloud holds:

  1. each fresh BSM (at most FRESH_S old) is moved on to the RSM's time along its heading and speed, less the
     offset learnt for that vehicle (below);
  2. a detection and a BSM may be the same vehicle when they are within the gate: GATE_SIGMAS standard deviations
     of the difference, from the BSM's stated positional accuracy (J2735 semi-major axis; unstated: UNSTATED_M) and
     the sensor's noise (the scenario's sensors of that RSU), plus GATE_SLACK_M; their speeds within
     SPEED_GATE_MPS plus as many sigmas; and, both moving, their headings within HEADING_GATE_DEG;
  3. the pairs are taken nearest first, each detection and each BSM once (greedy global nearest neighbour);
  4. a matched vehicle's BSM-minus-detection offset is learnt (an exponential average, OFFSET_GAIN a match): a
     GNSS bias varies slowly (v2x.vehicle.gnss), so the next association is made on the corrected position.

An unmatched detection is a road user with no OBU (or a ghost): it joins the picture as `<rsu>/<participant id>`,
the RSU's track id, while its latest detection is at most FRESH_S old. While it stands (its detections' mean
speed under cloud.detect.STOPPED_MPS, none faster than the sensor's speed noise allows a standing one, each within the
gate of where it stood), its place and speed are the means of its detections, up to AVERAGED_UP_TO of them: one radar
detection is a metre out on each axis, a lane is 3.5 m wide, and a stalled car must not hop lanes. Nothing here knows the truth: the report
scores the associations against the RSUs' labels (v2x.run.perception).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloud.detect import STOPPED_MPS
from v2x.core import messages as m
from v2x.core.network import Network

FRESH_S = 1.0  # [s] a BSM or a detection counts for this long (as the cloud's FRESH_S)
GATE_SIGMAS = 3.0  # the gate, in standard deviations of a detection's distance from its vehicle's BSM
GATE_SLACK_M = 1.0  # [m] added to the gate: BSM and detection times differ by up to a step, bodies have extent
UNSTATED_M = 0.5  # [m] a BSM's positional error when it states no accuracy (lane-level)
BSM_SPEED_STD_MPS = 0.2  # [m/s]
SPEED_GATE_MPS = 1.0  # [m/s] added to the speed gate
MOVING_MPS = 2.0  # [m/s] headings are compared when both say the vehicle moves faster than this
HEADING_GATE_DEG = 60.0  # [deg]
OFFSET_GAIN = 0.2  # weight of each new match in a vehicle's learnt BSM-minus-detection offset
AVERAGED_UP_TO = 50  # detections of a standing road user averaged for its place, at most (5 s of a 10 Hz RSM)
SENSOR_SOURCES = frozenset({m.SourceType.VIDEO, m.SourceType.MICROWAVE_RADAR, m.SourceType.LIDAR, m.SourceType.INTEGRATED})


@dataclass
class Track:
    """A vehicle as its BSMs say (local metres)."""

    t: float  # [s] generation time of its latest BSM
    x: float
    y: float
    speed: float
    heading: float
    sigma_m: float  # its stated positional accuracy (1 sigma)
    dx: float = 0.0  # learnt offset: BSM minus detection [m]
    dy: float = 0.0


@dataclass
class Detected:
    """An unmatched detection: a road user the cloud knows of from an RSU's sensors alone."""

    t: float  # [s] the RSM's generation time
    x: float
    y: float
    speed: float
    heading: float
    n: int = 1  # detections averaged into (x, y) while it stands


@dataclass
class FusionCounts:
    rsms: int = 0
    detections: int = 0
    matched: int = 0
    # "<rsu>/<participant id>" -> the vehicle each of its detections was matched to ("" for none), counted
    assoc: dict[str, Counter[str]] = field(default_factory=dict)


class Fusion:
    """Fed with every BSM and RSM the cloud accepts; gives the road users the BSMs do not cover."""

    def __init__(self, net: Network) -> None:
        self.net = net
        sc = net.scenario
        # each RSU's sensor noise: the worst of its sensors (a detection does not say which one made it)
        self.sensor_m: dict[str, tuple[float, float]] = {}
        for s in sc.sensors:
            md = s.model()
            pos, spd = self.sensor_m.get(s.rsu, (0.0, 0.0))
            self.sensor_m[s.rsu] = (max(pos, md.position_std_m), max(spd, md.speed_std_mps))
        self.tracks: dict[str, Track] = {}
        self.detected: dict[str, Detected] = {}
        self.counts = FusionCounts()

    def bsm(self, sender: str, t: float, x: float, y: float, speed: float, heading: float, accuracy: m.PositionalAccuracy | None) -> None:
        """A BSM generated at sim time `t`, at local (x, y)."""
        sigma = UNSTATED_M if accuracy is None else max(accuracy.semi_major_m, 0.01)
        tr = self.tracks.get(sender)
        if tr is None:
            self.tracks[sender] = Track(t, x, y, speed, heading, sigma)
        else:
            tr.t, tr.x, tr.y, tr.speed, tr.heading, tr.sigma_m = t, x, y, speed, heading, sigma

    def rsm(self, rsu: str, t: float, rsm: m.Rsm) -> None:
        """An RSM from `rsu` generated at sim time `t`: associate its sensor detections."""
        dets = [p for p in rsm.participants if p.source in SENSOR_SOURCES]
        c = self.counts
        c.rsms += 1
        if not dets:
            return
        c.detections += len(dets)
        frame = self.net.frame
        dxy = np.array([frame.to_local(p.position.lat_deg, p.position.lon_deg) for p in dets])
        dv = np.array([p.speed_mps for p in dets])
        dh = np.array([p.heading_deg for p in dets])
        names = [s for s, tr in self.tracks.items() if abs(t - tr.t) <= FRESH_S]
        sd, sv = self.sensor_m.get(rsu, (UNSTATED_M, BSM_SPEED_STD_MPS))
        matched: dict[int, str] = {}
        if names:
            trs = [self.tracks[s] for s in names]
            dt = np.array([t - tr.t for tr in trs])
            bv = np.array([tr.speed for tr in trs])
            bh = np.array([tr.heading for tr in trs])
            rad = np.radians(bh)
            bx = np.array([tr.x - tr.dx for tr in trs]) + bv * dt * np.sin(rad)
            by = np.array([tr.y - tr.dy for tr in trs]) + bv * dt * np.cos(rad)
            sigma = np.array([tr.sigma_m for tr in trs])
            gate = GATE_SIGMAS * np.sqrt(sigma**2 + sd**2) + GATE_SLACK_M
            dist = np.hypot(dxy[:, 0:1] - bx[None, :], dxy[:, 1:2] - by[None, :])
            ok = dist <= gate[None, :]
            ok &= np.abs(dv[:, None] - bv[None, :]) <= GATE_SIGMAS * math.hypot(sv, BSM_SPEED_STD_MPS) + SPEED_GATE_MPS
            moving = (dv[:, None] > MOVING_MPS) & (bv[None, :] > MOVING_MPS)
            turn = np.abs((dh[:, None] - bh[None, :] + 180.0) % 360.0 - 180.0)
            ok &= ~moving | (turn <= HEADING_GATE_DEG)
            used: set[int] = set()
            pairs = sorted(zip(dist[ok].tolist(), *np.nonzero(ok), strict=True))
            for _, i, j in pairs:
                if i in matched or j in used:
                    continue
                matched[int(i)] = names[j]
                used.add(int(j))
                tr = trs[j]  # learn its offset: BSM (moved on) minus detection
                ex, ey = bx[j] + tr.dx - dxy[i, 0], by[j] + tr.dy - dxy[i, 1]
                tr.dx += OFFSET_GAIN * (float(ex) - tr.dx)
                tr.dy += OFFSET_GAIN * (float(ey) - tr.dy)
        c.matched += len(matched)
        for i, p in enumerate(dets):
            key = f"{rsu}/{p.ptc_id}"
            who = matched.get(i, "")
            c.assoc.setdefault(key, Counter())[who] += 1
            if who:
                self.detected.pop(key, None)
            else:
                self.detected[key] = _standing(self.detected.get(key), t, float(dxy[i, 0]), float(dxy[i, 1]), p, sd, sv)

    def unmatched(self, now: float) -> Iterator[tuple[str, float, float, float, float]]:
        """(object id, x, y, speed, heading) of each road user known from detections alone, detected in the last FRESH_S."""
        for key in [k for k, d in self.detected.items() if now - d.t > FRESH_S]:
            del self.detected[key]
        for key, d in self.detected.items():
            yield key, d.x, d.y, d.speed, d.heading

    def forget(self, sender: str) -> None:
        """A vehicle gone from the cloud's picture."""
        self.tracks.pop(sender, None)

    def summary(self) -> dict[str, Any]:
        c = self.counts
        if not c.detections:
            return {}
        return {
            "rsms": c.rsms, "detections": c.detections, "matched": c.matched,
            "assoc": {k: dict(v) for k, v in sorted(c.assoc.items())},
        }

    @staticmethod
    def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The summaries of several cloud instances (each owns whole sites, so their RSUs' keys do not overlap)."""
        parts = [p for p in parts if p]
        if len(parts) <= 1:
            return parts[0] if parts else {}
        return {
            "rsms": sum(p["rsms"] for p in parts), "detections": sum(p["detections"] for p in parts),
            "matched": sum(p["matched"] for p in parts), "assoc": {k: v for p in parts for k, v in p["assoc"].items()},
        }


def _standing(last: Detected | None, t: float, x: float, y: float, p: m.Participant, sd: float, sv: float) -> Detected:
    """An unmatched detection at (x, y), from a sensor of position noise `sd` [m] and speed noise `sv` [m/s]. While the
    road user stands, the running mean of its places and speeds: each detection no faster than a standing one reads
    through the speed noise, within the gate of where it stood, and the mean speed under STOPPED_MPS. Else (moved, or
    another road user) the detection as it is."""
    reads_standing = STOPPED_MPS + GATE_SIGMAS * sv  # [m/s] the most a standing road user's detection says
    if (last is not None and last.speed < reads_standing and p.speed_mps < reads_standing
            and math.hypot(x - last.x, y - last.y) <= GATE_SIGMAS * sd * math.sqrt(2.0) + GATE_SLACK_M):
        n = min(last.n + 1, AVERAGED_UP_TO)
        speed = last.speed + (p.speed_mps - last.speed) / n
        if speed < STOPPED_MPS:
            return Detected(t, last.x + (x - last.x) / n, last.y + (y - last.y) / n, speed, p.heading_deg, n)
    return Detected(t, x, y, p.speed_mps, p.heading_deg)
