"""BSMs from the traffic core's arrays: what each vehicle's OBU says about itself."""

from __future__ import annotations

import numpy as np

from v2x.core import messages as m
from v2x.core.geo import LocalFrame
from v2x.core.mobility import VehicleStates
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


def bsms_of(states: VehicleStates) -> list[tuple[int, m.Bsm]]:
    """(vehicle id, BSM) for every vehicle of a state report (SUMO's: docs/sumo.md), by the same rules as
    `build_bsms`; the brake is what the vehicle's brake lights say, and its exterior lights are reported (hazard
    lights also as the event)."""
    no_events: frozenset[m.VehicleEvent] = frozenset()
    return [
        (
            vid,
            m.Bsm(
                position=m.GeoPoint(la, lo, states.elevation_m),
                speed_mps=min(max(v, 0.0), 163.8),
                heading_deg=h,
                accel_mps2=min(max(a, -20.0), 20.0),
                brake_applied=brake,
                width_m=w,
                length_m=ln,
                vehicle_class=_CLASS_OF_KIND[kind],
                events=frozenset(
                    e for e, on in ((m.VehicleEvent.HARD_BRAKING, a < -HARD_BRAKING_MPS2),
                                    (m.VehicleEvent.HAZARD_LIGHTS, m.ExteriorLight.HAZARD_SIGNAL in lights)) if on
                ) or no_events,
                emergency=m.EmergencyExt(True, True, True) if kind == EMERGENCY else None,
                lights=lights,
            ),
        )
        for vid, la, lo, v, h, a, w, ln, kind, brake, lights in zip(
            states.ids, states.lat_deg, states.lon_deg, states.speed_mps, states.heading_deg, states.accel_mps2,
            states.width_m, states.length_m, states.kind, states.brake, states.lights, strict=True,
        )
    ]
