"""An RSU's sensors: ground truth in, detections out (docs/perception.md).

Each sensor of the scenario (v2x.core.sensors) updates at its rate: every road user in its coverage (within its
range of the RSU, in its field of view, on the legs it watches) is detected with its detection probability, and its
position and speed are measured with Gaussian noise. A frame of detections is ready `latency_ms` after it was
measured; the RSM carries, from each sensor's latest ready frame, each detection moved on to the RSM's time along
the measured heading and speed (what a roadside tracker reports), with the sensor type's CSAE source type. A road
user seen by several sensors is reported once: their positions averaged by precision, source "integrated".

Each tracked road user keeps its RSM participant id (a track id) while it is seen. The sensor model knows the truth
behind each track (`labels`): it is kept for the report's fusion score, and never sent.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from v2x.core import messages as m
from v2x.core.network import Network
from v2x.core.scenario import LEG_BEARING_DEG
from v2x.core.sensors import SOURCE, Sensor, SensorModel
from v2x.core.truth import RoadUsers

PTC_FIRST = 32768  # sensor tracks take participant ids 32768..65535; road users heard by V2X take 1.. (roadside.service)
FRAME_STALE_S = 1.0  # [s] a sensor's latest frame older than this is not reported (the sensor has gone quiet)
LEG_HALF_DEG = 45.0  # [deg] a road user is on a leg when its bearing from the junction centre is within this of the leg's
ERROR_BIN_M = 0.01  # [m] position errors are kept as a histogram of this resolution


@dataclass
class Frame:
    """One sensor update: what it detected, measured at `measured_s`, ready at `ready_s`."""

    sensor: int
    measured_s: float
    ready_s: float
    ids: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    speed_mps: np.ndarray
    heading_deg: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray


@dataclass
class PerceptionStats:
    """Counted per sensor update: road users in coverage, detected, missed (unequipped ones apart: no BSM puts them
    in the cloud's picture); the RSM's detections and their position error against the truth at the RSM's time."""

    truth_updates: int = 0  # ground truth received (none in real time: the fleet's truth feed does not arrive)
    in_coverage: int = 0
    detected: int = 0
    missed: int = 0
    missed_unequipped: int = 0
    reported: int = 0
    error_cm: Counter[int] = field(default_factory=Counter)  # position error [cm] -> detections


class Perception:
    """The sensors of one RSU."""

    def __init__(self, net: Network, index: int, sensors: list[Sensor], xy: tuple[float, float]) -> None:
        self.net = net
        self.sensors = sensors
        self.models: list[SensorModel] = [s.model() for s in sensors]
        self.xy = xy
        self.centre = net.intersections[index].center if index < len(net.intersections) else xy
        self.rng = np.random.default_rng([net.scenario.seed, index, 0x5E5])
        self._next_s: list[float | None] = [None] * len(sensors)
        self.pending: deque[Frame] = deque()  # measured, not yet ready
        self.latest: dict[int, Frame] = {}  # sensor -> its latest ready frame
        self.tracks: dict[int, tuple[int, float]] = {}  # vehicle id -> (participant id, sim time last detected)
        self.labels: dict[int, list[Any]] = {}  # participant id -> [vehicle id, equipped] (the truth, for the score)
        self._next_ptc = PTC_FIRST - 1
        self.stats = PerceptionStats()
        self._truth: RoadUsers | None = None

    @classmethod
    def of(cls, net: Network, index: int, rsu_id: str, xy: tuple[float, float]) -> Perception | None:
        """The perception of RSU `rsu_id`, or None when the scenario gives it no sensor."""
        mine = [s for s in net.scenario.sensors if s.rsu == rsu_id]
        return cls(net, index, mine, xy) if mine else None

    def sense(self, truth: RoadUsers) -> None:
        """Each sensor due at `truth.t` measures the road users in its coverage."""
        self._truth = truth
        self.stats.truth_updates += 1
        now = truth.t
        for k, (sensor, model) in enumerate(zip(self.sensors, self.models, strict=True)):
            due = self._next_s[k]
            if due is not None and now + 1e-9 < due:
                continue
            nxt = (now if due is None else due) + 1.0 / model.rate_hz
            self._next_s[k] = nxt if nxt > now + 1e-9 else now + 1.0 / model.rate_hz  # a late call does not catch up
            self._measure(k, sensor, model, truth)

    def covered(self, truth: RoadUsers) -> np.ndarray:
        """Per road user: within some sensor's coverage (detected or not)."""
        inside = np.zeros(len(truth.ids), dtype=bool)
        for sensor, model in zip(self.sensors, self.models, strict=True):
            inside |= self._coverage(sensor, model, truth)
        return inside

    def _coverage(self, sensor: Sensor, model: SensorModel, truth: RoadUsers) -> np.ndarray:
        dx, dy = truth.x_m - self.xy[0], truth.y_m - self.xy[1]
        inside: np.ndarray = dx * dx + dy * dy <= model.range_m**2
        if sensor.fov_deg < 360.0:
            off = (np.degrees(np.arctan2(dx, dy)) - sensor.bearing_deg + 180.0) % 360.0 - 180.0
            inside &= np.abs(off) <= sensor.fov_deg / 2
        if sensor.approaches:
            bearing = np.degrees(np.arctan2(truth.x_m - self.centre[0], truth.y_m - self.centre[1])) % 360.0
            on = np.zeros(len(bearing), dtype=bool)
            for leg in sensor.approaches:
                on |= np.abs((bearing - LEG_BEARING_DEG[leg] + 180.0) % 360.0 - 180.0) <= LEG_HALF_DEG
            inside &= on
        return inside

    def _measure(self, k: int, sensor: Sensor, model: SensorModel, truth: RoadUsers) -> None:
        idx = np.flatnonzero(self._coverage(sensor, model, truth))
        hit = self.rng.random(len(idx)) < model.detection_p
        seen, unseen = idx[hit], idx[~hit]
        st = self.stats
        st.in_coverage += len(idx)
        st.detected += len(seen)
        st.missed += len(unseen)
        st.missed_unequipped += int(np.count_nonzero(~truth.equipped[unseen]))
        noise = self.rng.normal(0.0, 1.0, (3, len(seen)))
        frame = Frame(
            k, truth.t, truth.t + model.latency_ms / 1000.0, truth.ids[seen],
            truth.x_m[seen] + model.position_std_m * noise[0], truth.y_m[seen] + model.position_std_m * noise[1],
            np.clip(truth.speed_mps[seen] + model.speed_std_mps * noise[2], 0.0, 163.8), truth.heading_deg[seen],
            truth.length_m[seen], truth.width_m[seen],
        )
        for vid, equipped in zip(frame.ids.tolist(), truth.equipped[seen].tolist(), strict=True):
            track = self.tracks.get(vid)
            if track is None:
                self._next_ptc = PTC_FIRST if self._next_ptc >= 65535 else self._next_ptc + 1
                self.labels[self._next_ptc] = [vid, equipped]
                track = (self._next_ptc, truth.t)
            self.tracks[vid] = (track[0], truth.t)
        self.pending.append(frame)

    def participants(self, now: float) -> list[m.Participant]:
        """The detections to report in an RSM at sim time `now`."""
        while self.pending and self.pending[0].ready_s <= now + 1e-9:
            f = self.pending.popleft()
            self.latest[f.sensor] = f
        by_vid: dict[int, list[tuple[float, float, float, float, float, float, float, int]]] = {}
        for k, f in self.latest.items():
            if now - f.measured_s > FRAME_STALE_S:
                continue
            dt = now - f.measured_s
            rad = np.radians(f.heading_deg)
            x = f.x_m + f.speed_mps * dt * np.sin(rad)
            y = f.y_m + f.speed_mps * dt * np.cos(rad)
            w = 1.0 / max(self.models[k].position_std_m, 0.01) ** 2
            for row in zip(f.ids.tolist(), x.tolist(), y.tolist(), f.speed_mps.tolist(), f.heading_deg.tolist(),
                           f.length_m.tolist(), f.width_m.tolist(), strict=True):
                by_vid.setdefault(row[0], []).append((w, *row[1:], k))
        for vid in [vid for vid, (_, last) in self.tracks.items() if now - last > FRAME_STALE_S]:
            del self.tracks[vid]  # not detected for a while: a new track if it is seen again
        out = []
        truth = self._truth
        where = {} if truth is None else dict(zip(truth.ids.tolist(), range(len(truth.ids)), strict=True))
        for vid, seen in sorted(by_vid.items()):
            total = sum(s[0] for s in seen)
            x = sum(s[0] * s[1] for s in seen) / total
            y = sum(s[0] * s[2] for s in seen) / total
            speed = sum(s[0] * s[3] for s in seen) / total
            _, _, _, _, heading, length, width, k = seen[0]
            source = SOURCE[self.sensors[k].type] if len({s[7] for s in seen}) == 1 else m.SourceType.INTEGRATED
            lat, lon = self.net.frame.to_geo_arrays(np.array([x]), np.array([y]))
            out.append(m.Participant(
                type=m.ParticipantType.MOTOR, ptc_id=self.tracks[vid][0], source=source, vehicle_id="",
                position=m.GeoPoint(float(lat[0]), float(lon[0]), self.net.frame.elevation0_m), speed_mps=speed,
                heading_deg=heading, width_m=width, length_m=length,
            ))
            j = where.get(vid)
            if j is not None and truth is not None:
                err = math.hypot(x - float(truth.x_m[j]), y - float(truth.y_m[j]))
                self.stats.error_cm[round(err / ERROR_BIN_M)] += 1
        self.stats.reported += len(out)
        return out

    def summary(self) -> dict[str, Any]:
        """What the sensors did, and the truth behind each track (participant id -> [vehicle id, equipped])."""
        st = self.stats
        return {
            "sensors": [{"type": s.type, **vars(md)} for s, md in zip(self.sensors, self.models, strict=True)],
            "truth_updates": st.truth_updates, "in_coverage": st.in_coverage, "detected": st.detected, "missed": st.missed,
            "missed_unequipped": st.missed_unequipped, "reported": st.reported,
            "error_cm": {str(k): n for k, n in sorted(st.error_cm.items())},
            "labels": {str(p): lab for p, lab in self.labels.items()},
        }
