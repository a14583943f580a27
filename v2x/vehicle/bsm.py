"""BSMs from the traffic core's arrays: what each vehicle's OBU says about itself."""

from __future__ import annotations

import numpy as np

from v2x.core import messages as m
from v2x.core.bsm_wire import NO_EMERGENCY, BsmColumns, bsm_bodies
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
# a BSM due: (vehicle id, latitude, longitude, the BSM, or its body in wire form as `build_bsm_wires` makes it)
DueBsm = tuple[int, float, float, "m.Bsm | bytes"]

_CLASS_OF_KIND = [_CLASS[name] for name in VEHICLE_TYPES]
_CLASS_VALUES = np.array([int(c) for c in _CLASS_OF_KIND], dtype=np.int64)  # by kind
_EMERGENCY_BITS = 7  # an emergency vehicle's EmergencyExt: siren, lights, responding (bsm_wire's bits)


def bsm_columns(traffic: Traffic, frame: LocalFrame) -> BsmColumns:
    """Every vehicle's BSM as columns: the position is the body's centre (J2735 reference point)."""
    cx, cy, heading = traffic.bodies()
    lat, lon = frame.to_geo_arrays(cx, cy)
    kind = traffic.kind
    return BsmColumns(
        lat_deg=lat, lon_deg=lon, elevation_m=frame.elevation0_m, speed_mps=np.clip(traffic.v, 0.0, 163.8),
        heading_deg=heading, accel_mps2=np.clip(traffic.a, -20.0, 20.0), brake_applied=traffic.a < -BRAKING_MPS2,
        width_m=traffic.width, length_m=traffic.length, vehicle_class=_CLASS_VALUES[kind],
        events=np.where(traffic.a < -HARD_BRAKING_MPS2, 1 << m.VehicleEvent.HARD_BRAKING, 0),
        emergency=np.where(kind == EMERGENCY, _EMERGENCY_BITS, NO_EMERGENCY),
    )


def build_bsms(traffic: Traffic, frame: LocalFrame) -> list[tuple[int, m.Bsm]]:
    """(vehicle id, BSM) for every vehicle (`bsm_columns` as objects)."""
    if traffic.n == 0:
        return []
    c = bsm_columns(traffic, frame)
    no_events: frozenset[m.VehicleEvent] = frozenset()
    hard = frozenset({m.VehicleEvent.HARD_BRAKING})
    return [
        (
            vid,
            m.Bsm(
                position=m.GeoPoint(la, lo, c.elevation_m),
                speed_mps=v,
                heading_deg=h,
                accel_mps2=ac,
                brake_applied=brake,
                width_m=w,
                length_m=ln,
                vehicle_class=_CLASS_OF_KIND[kind],
                events=hard if ev else no_events,
                emergency=m.EmergencyExt(True, True, True) if kind == EMERGENCY else None,
            ),
        )
        # columns as Python numbers at once: per-element numpy access costs more than the message itself
        for vid, la, lo, v, h, ac, brake, w, ln, kind, ev in zip(
            traffic.ids.tolist(), c.lat_deg.tolist(), c.lon_deg.tolist(), c.speed_mps.tolist(), c.heading_deg.tolist(),
            c.accel_mps2.tolist(), c.brake_applied.tolist(), c.width_m.tolist(), c.length_m.tolist(), traffic.kind.tolist(),
            c.events.tolist(), strict=True,
        )
    ]


def build_bsm_wires(traffic: Traffic, frame: LocalFrame) -> list[tuple[int, float, float, bytes | None]]:
    """(vehicle id, latitude, longitude, the BSM's body in wire form) for every vehicle, encoded at once
    (`bsm_wire.bsm_bodies`: what `build_bsms`'s objects encode to, byte for byte); None for a BSM the codec's common
    path would not take, to be built as an object."""
    if traffic.n == 0:
        return []
    c = bsm_columns(traffic, frame)
    return list(zip(traffic.ids.tolist(), c.lat_deg.tolist(), c.lon_deg.tolist(), bsm_bodies(c), strict=True))


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
