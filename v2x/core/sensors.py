"""Roadside sensors in a scenario: `[[sensors]]`, each on one RSU (docs/perception.md).

    [[sensors]]
    rsu = "RSU-J1"            # the RSU it reports through (an RSU of the scenario, listed or default)
    type = "radar"            # camera | radar | lidar
    range_m = 150.0           # from the RSU
    approaches = ["north"]    # optional: only road users on these legs (default: every leg)
    bearing_deg = 0.0         # optional field of view: its centre, clockwise from north...
    fov_deg = 360.0           # ...and its width (360: all round)

Unset figures take the type's defaults (`DEFAULTS`). Bad values fail at FILE:LINE like every scenario field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from v2x.core.messages import SourceType
from v2x.core.schema import Path, spec

SensorType = Literal["camera", "radar", "lidar"]
SensorLeg = Literal["north", "east", "south", "west"]

#: CSAE 53 SourceType of each sensor type's detections.
SOURCE: dict[str, SourceType] = {"camera": SourceType.VIDEO, "radar": SourceType.MICROWAVE_RADAR, "lidar": SourceType.LIDAR}


@dataclass(frozen=True)
class SensorModel:
    """A sensor's figures, every one set."""

    range_m: float  # [m]
    detection_p: float  # probability that a road user in coverage is detected in one update
    position_std_m: float  # [m] per axis (east, north)
    speed_std_mps: float  # [m/s]
    latency_ms: float  # [ms] from measurement to the detection being ready for the RSM
    rate_hz: float  # [Hz] updates


#: Per-type defaults: typical figures of roadside units as sold for V2X pilots (orders of magnitude, not a datasheet):
#: a camera sees less far and places a road user less well; a millimetre-wave radar reaches furthest and measures
#: speed best (Doppler); a lidar places best. docs/perception.md says how to set your own.
DEFAULTS: dict[str, SensorModel] = {
    "camera": SensorModel(range_m=80.0, detection_p=0.90, position_std_m=0.8, speed_std_mps=0.5, latency_ms=100.0, rate_hz=10.0),
    "radar": SensorModel(range_m=200.0, detection_p=0.95, position_std_m=1.0, speed_std_mps=0.1, latency_ms=50.0, rate_hz=10.0),
    "lidar": SensorModel(range_m=120.0, detection_p=0.98, position_std_m=0.1, speed_std_mps=0.2, latency_ms=100.0, rate_hz=10.0),
}


@dataclass(frozen=True)
class Sensor:
    """One roadside sensor; its detections go out in its RSU's RSM with the type's CSAE source type."""

    rsu: str = spec(doc="the id of the RSU it reports through")
    type: SensorType = spec(doc='"camera", "radar" or "lidar"')
    range_m: float | None = spec(None, gt=0.0, le=1000.0, doc="coverage radius from the RSU; default: the type's")
    approaches: tuple[SensorLeg, ...] = spec((), doc="the legs it watches; none: every leg")
    bearing_deg: float = spec(0.0, ge=0.0, lt=360.0, doc="the centre of its field of view, clockwise from north")
    fov_deg: float = spec(360.0, gt=0.0, le=360.0, doc="the width of its field of view")
    detection_p: float | None = spec(None, ge=0.0, le=1.0, doc="probability of detecting a road user in coverage, per update")
    position_std_m: float | None = spec(None, ge=0.0, le=20.0, doc="position noise, standard deviation per axis")
    speed_std_mps: float | None = spec(None, ge=0.0, le=20.0, doc="speed noise, standard deviation")
    latency_ms: float | None = spec(None, ge=0.0, le=5000.0, doc="from measurement to the RSM")
    rate_hz: float | None = spec(None, gt=0.0, le=50.0, doc="updates per second")

    def check(self) -> Iterator[tuple[Path, str]]:
        if len(set(self.approaches)) != len(self.approaches):
            yield ("approaches",), "lists a leg twice (expected each leg at most once)"

    def model(self) -> SensorModel:
        """Its figures: those set, the type's defaults for the rest."""
        d = DEFAULTS[self.type]
        return SensorModel(
            range_m=d.range_m if self.range_m is None else self.range_m,
            detection_p=d.detection_p if self.detection_p is None else self.detection_p,
            position_std_m=d.position_std_m if self.position_std_m is None else self.position_std_m,
            speed_std_mps=d.speed_std_mps if self.speed_std_mps is None else self.speed_std_mps,
            latency_ms=d.latency_ms if self.latency_ms is None else self.latency_ms,
            rate_hz=d.rate_hz if self.rate_hz is None else self.rate_hz,
        )
