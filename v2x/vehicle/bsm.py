"""BSMs from the traffic core's arrays: what each vehicle's OBU says about itself."""

from __future__ import annotations

import numpy as np

from v2x.core import messages as m
from v2x.core.geo import LocalFrame
from v2x.core.traffic import EMERGENCY, VEHICLE_TYPES, Traffic

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
    elevation = frame.elevation0_m
    acc = traffic.a.tolist()
    no_events: frozenset[m.VehicleEvent] = frozenset()
    hard = frozenset({m.VehicleEvent.HARD_BRAKING})
    return [
        (
            vid,
            m.Bsm(
                position=m.GeoPoint(la, lo, elevation),
                speed_mps=v,
                heading_deg=h,
                accel_mps2=ac,
                brake_applied=a < -BRAKING_MPS2,
                width_m=w,
                length_m=ln,
                vehicle_class=_CLASS_OF_KIND[kind],
                events=hard if a < -HARD_BRAKING_MPS2 else no_events,
                emergency=m.EmergencyExt(True, True, True) if kind == EMERGENCY else None,
            ),
        )
        # columns as Python numbers at once: per-element numpy access costs more than the message itself
        for vid, la, lo, v, h, a, ac, w, ln, kind in zip(
            traffic.ids.tolist(), lat.tolist(), lon.tolist(), np.clip(traffic.v, 0.0, 163.8).tolist(), heading.tolist(),
            acc, np.clip(traffic.a, -20.0, 20.0).tolist(), traffic.width.tolist(), traffic.length.tolist(),
            traffic.kind.tolist(), strict=True,
        )
    ]
