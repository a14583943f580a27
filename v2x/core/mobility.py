"""What the fleet needs from whatever moves its vehicles: the numba core (`v2x.core.traffic.Traffic`) or SUMO
(`v2x.sumo.mobility.SumoTraffic`). The tiers above the vehicles' motion see only this (docs/sumo.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from v2x.core.messages import ExteriorLight
from v2x.core.traffic import Stats

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class Mobility(Protocol):
    """A road's vehicles stepped in sim time."""

    t: float  # [s] sim time
    stats: Stats  # network-wide measurements
    crossings: list[tuple[float, int, int]] | None  # stop-line crossings (sim time [s], vehicle id, signal group), when a list
    obstacles: dict[int, tuple[int, float, float]]  # stalled vehicles of the scenario's hazards, by event

    @property
    def n(self) -> int:
        """Vehicles present."""
        ...

    @property
    def ids(self) -> IntArray:
        """Their ids, one per vehicle present (an OBU is `veh-<id>`)."""
        ...

    @property
    def kind(self) -> IntArray:
        """Their kinds: indices into `v2x.core.traffic.VEHICLE_TYPES`."""
        ...

    def signal_view(self) -> tuple[IntArray, FloatArray]:
        """For each vehicle: (global signal group of its next stop line or -1, distance to it [m])."""
        ...

    def step(
        self, dt: float, believed: IntArray | None = None, truth: IntArray | None = None, warned: BoolArray | None = None,
        advice: FloatArray | None = None, make_way: BoolArray | None = None,
    ) -> None:
        """Advance by dt [s] on what each vehicle believes and was advised (see `Traffic.step`)."""
        ...


@dataclass(frozen=True)
class VehicleStates:
    """Every vehicle's state as its OBU reports it, column by column (Python numbers: what a BSM is built from)."""

    ids: list[int]
    lat_deg: list[float]  # of the body's centre (the J2735 reference point)
    lon_deg: list[float]
    elevation_m: float
    speed_mps: list[float]
    heading_deg: list[float]  # [deg] clockwise from north
    accel_mps2: list[float]  # longitudinal
    length_m: list[float]
    width_m: list[float]
    kind: list[int]  # index into VEHICLE_TYPES
    brake: list[bool]  # brake lights on
    lights: list[frozenset[ExteriorLight]]  # exterior lights on (turn signals, hazard signal...)
