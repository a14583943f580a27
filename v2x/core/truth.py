"""Ground truth of the road users, as roadside sensors see it: every vehicle the traffic core moves, equipped or not.

The fleet owns it (it moves the vehicles); an RSU's sensor model (roadside.perception) turns it into detections.
It is never a V2X message: in fast mode the driver hands it to the RSUs in process (v2x.run.fast), as it hands the
true lights to the fleet (docs/perception.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v2x.core.mobility import BoolArray, FloatArray, IntArray
from v2x.core.traffic import Traffic


@dataclass(frozen=True)
class RoadUsers:
    """Every road user at sim time `t`, one row per vehicle; positions are body centres in local metres."""

    t: float  # [s]
    ids: IntArray
    x_m: FloatArray  # east
    y_m: FloatArray  # north
    speed_mps: FloatArray
    heading_deg: FloatArray  # clockwise from north
    length_m: FloatArray
    width_m: FloatArray
    equipped: BoolArray  # carries an OBU (sends BSMs as `veh-<id>`)

    @classmethod
    def of(cls, traffic: Traffic, equipped: BoolArray | None = None) -> RoadUsers:
        """The core's vehicles now; `equipped`: which carry an OBU (default: every one)."""
        x, y, heading = traffic.bodies()
        return cls(
            traffic.t, traffic.ids.copy(), x, y, np.clip(traffic.v, 0.0, None), heading % 360.0, traffic.length.copy(),
            traffic.width.copy(), np.ones(traffic.n, dtype=bool) if equipped is None else equipped,
        )
