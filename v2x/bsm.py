"""BSMs from the traffic core's arrays: what each vehicle's OBU says about itself."""

from __future__ import annotations

import numpy as np

from v2x import messages as m
from v2x.geo import LocalFrame
from v2x.traffic import EMERGENCY, VEHICLE_TYPES, Traffic

HARD_BRAKING_MPS2 = 0.4 * 9.81  # [m/s^2] J2735 eventHardBraking: deceleration over 0.4 g
BRAKING_MPS2 = 0.3  # [m/s^2] deceleration above which the brake is reported applied

_CLASS = {
    "car": m.VehicleClass.PASSENGER_CAR,
    "truck": m.VehicleClass.TRUCK,
    "bus": m.VehicleClass.BUS,
    "emergency": m.VehicleClass.EMERGENCY,
}
_CLASS_OF_KIND = [_CLASS[name] for name in VEHICLE_TYPES]


def build_bsms(traffic: Traffic, frame: LocalFrame) -> list[tuple[int, m.Bsm]]:
    """(vehicle id, BSM) for every vehicle; the position is the body's centre (J2735 reference point)."""
    if traffic.n == 0:
        return []
    cx, cy, heading = traffic.bodies()
    lat, lon = frame.to_geo_arrays(cx, cy)
    out = []
    elevation = frame.elevation0_m
    for i in range(traffic.n):
        a = float(traffic.a[i])
        kind = int(traffic.kind[i])
        events = frozenset({m.VehicleEvent.HARD_BRAKING}) if a < -HARD_BRAKING_MPS2 else frozenset()
        out.append(
            (
                int(traffic.ids[i]),
                m.Bsm(
                    position=m.GeoPoint(float(lat[i]), float(lon[i]), elevation),
                    speed_mps=float(np.clip(traffic.v[i], 0.0, 163.8)),
                    heading_deg=float(heading[i]),
                    accel_mps2=float(np.clip(a, -20.0, 20.0)),
                    brake_applied=a < -BRAKING_MPS2,
                    width_m=float(traffic.width[i]),
                    length_m=float(traffic.length[i]),
                    vehicle_class=_CLASS_OF_KIND[kind],
                    events=events,
                    emergency=m.EmergencyExt(True, True, True) if kind == EMERGENCY else None,
                ),
            )
        )
    return out
