"""Many vehicles' BSM bodies at once, in wire form: what `codec.encode` writes for each, compiled.

The fleet sends every vehicle's BSM ten times a second. Built one by one, a BSM is a `Bsm` object (~2.7 us) and a
protobuf message filled field by field and serialised (~6 us). Here a step's BSMs are quantised as numpy columns,
by the codec's own units and rounding (`round` and `np.rint` both round half to even), checked against the codec's
ranges, and written by one numba loop into protobuf's wire format: each body is the bytes of the frame's `bsm`
field, tag and length included, for `codec.encode_relayed` to put behind a header (a `Station.relay`). A row the
codec's common path would not take (a value not finite or out of range) gets None: its BSM goes the object way,
which names the field. tests/test_codec.py holds every body to `codec.encode` of the same BSM, byte for byte.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.jit import ByteArray, IntArray, IntMatrix, kernel
from v2x.core.protowire import field, message, varint, zigzag

# what the kernel here compiles in from other files, and its hash (`jit.fingerprint`: numba's cache knows only this file)
COMPILED_FROM = (varint, field, message, zigzag)
COMPILED_IN = "128e514d0825a20b"

# the columns of the quantised matrix, in the order the kernel reads them
LAT, LON, ELEV, SPEED, HEADING, ALONG, ALAT, YAW, TRANSMISSION, BRAKE, WIDTH, LENGTH, HEIGHT, VCLASS, EVENTS, EMERGENCY, LIGHTS = range(17)
MOST_BYTES = 80  # room for one body: at most 55 bytes pass the checks (every field at the widest its range allows)
NO_EMERGENCY = -1  # EMERGENCY column: no EmergencyExt; else its bits (1 siren, 2 lights, 4 responding)


_CLASSES = np.array([int(v) for v in m.VehicleClass], dtype=np.float64)
_TRANSMISSIONS = frozenset(int(t) for t in m.Transmission)
EVENT_BITS = sum(1 << e for e in m.VehicleEvent)  # the bits of the events there are


class BsmColumns(NamedTuple):
    """One value per vehicle, in the `Bsm`'s own units; a scalar where every vehicle has the same."""

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    elevation_m: float | None
    speed_mps: np.ndarray
    heading_deg: np.ndarray
    accel_mps2: np.ndarray
    brake_applied: np.ndarray  # bool
    width_m: np.ndarray
    length_m: np.ndarray
    vehicle_class: np.ndarray  # VehicleClass values
    events: np.ndarray  # bit sets of VehicleEvent
    emergency: np.ndarray  # NO_EMERGENCY, or the EmergencyExt's bits
    transmission: m.Transmission = m.Transmission.FORWARD


def bsm_bodies(c: BsmColumns) -> list[bytes | None]:
    """Each vehicle's BSM body in wire form (the frame's field 10), or None where a value is not finite or is out
    of the codec's range; lateral acceleration, yaw rate, height, lights and accuracy are the `Bsm` defaults
    (0, 0, unavailable, none, not stated)."""
    n = len(c.lat_deg)
    if n == 0:
        return []
    if (c.elevation_m is not None and not math.isfinite(c.elevation_m)) or c.transmission not in _TRANSMISSIONS:
        return [None] * n  # as the codec: not its common path (or no transmission state the wire has)
    q = np.zeros((n, 17), dtype=np.float64)
    with np.errstate(all="ignore"):  # a value not finite, or too large, fails the range check below
        q[:, LAT] = np.rint(np.asarray(c.lat_deg, dtype=np.float64) / codec.LATLON_DEG)
        q[:, LON] = np.rint(np.asarray(c.lon_deg, dtype=np.float64) / codec.LATLON_DEG)
        q[:, ELEV] = codec.ELEVATION_NA if c.elevation_m is None else round(c.elevation_m / codec.ELEVATION_M)
        q[:, SPEED] = np.rint(np.asarray(c.speed_mps, dtype=np.float64) / codec.SPEED_MPS)
        q[:, HEADING] = np.rint(np.mod(np.asarray(c.heading_deg, dtype=np.float64), 360.0) / codec.HEADING_DEG)
        q[:, ALONG] = np.rint(np.asarray(c.accel_mps2, dtype=np.float64) / codec.ACCEL_MPS2)
        q[:, WIDTH] = np.rint(np.asarray(c.width_m, dtype=np.float64) / codec.CM_M)
        q[:, LENGTH] = np.rint(np.asarray(c.length_m, dtype=np.float64) / codec.CM_M)
    q[:, TRANSMISSION] = int(c.transmission)
    q[:, BRAKE] = np.asarray(c.brake_applied, dtype=bool)
    q[:, VCLASS] = c.vehicle_class
    q[:, EVENTS] = c.events
    q[:, EMERGENCY] = c.emergency
    elev_ok = c.elevation_m is None or -4095 <= q[0, ELEV] <= 61439
    # `codec._enc_bsm`'s check of its common path (NaN fails every comparison)
    ok = (
        _within(q[:, LAT], -900_000_000, 900_000_000) & _within(q[:, LON], -1_799_999_999, 1_800_000_000)
        & _within(q[:, SPEED], 0, 8190) & _within(q[:, HEADING], 0, 28800) & _within(q[:, ALONG], -2000, 2000)
        & _within(q[:, WIDTH], 0, 1023) & _within(q[:, LENGTH], 0, 4095)
        # and what the objects' types hold (here plain numbers): a class and event bits the wire can carry, and
        # what room each body has
        & np.isin(q[:, VCLASS], _CLASSES) & (np.asarray(c.events, dtype=np.int64) & ~EVENT_BITS == 0)
        & _within(q[:, EMERGENCY], NO_EMERGENCY, 7)
    ) & elev_ok
    q[~ok] = 0.0
    q[:, HEADING] %= 28800  # 360 degrees is 0 on the wire
    buf = np.empty(n * MOST_BYTES, dtype=np.uint8)
    ends = np.empty(n, dtype=np.int64)
    _write_bodies(np.ascontiguousarray(q.astype(np.int64)), buf, ends)
    raw = buf.tobytes()
    out: list[bytes | None] = []
    start = 0
    for end, good in zip(ends.tolist(), ok.tolist(), strict=True):
        out.append(raw[start:end] if good else None)
        start = end
    return out


def _within(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """lo <= a <= hi, element by element (NaN: False)."""
    return (a >= lo) & (a <= hi)


@kernel
def _write_bodies(q: IntMatrix, buf: ByteArray, ends: IntArray) -> None:
    """Each row of `q` (quantised, in range) as a MessageFrame's `bsm` field, one after another into `buf`; the end
    of each in `ends`. Fields in number order, zeros left out, as protobuf serialises; `pos` and `size` are present
    even when all zero (the codec always sets them), `emergency` when the row has one."""
    part = np.empty(MOST_BYTES, dtype=np.uint8)  # one body, before its length is known
    sub = np.empty(32, dtype=np.uint8)  # one sub-message, the same way
    at = 0
    for i in range(q.shape[0]):
        r = q[i]
        s = field(sub, 0, 0x08, zigzag(r[LAT]))  # pos = 1: lat, lon, elevation (sint32)
        s = field(sub, s, 0x10, zigzag(r[LON]))
        s = field(sub, s, 0x18, zigzag(r[ELEV]))
        k = message(part, 0, 0x0A, sub, s)
        k = field(part, k, 0x10, r[SPEED])  # speed = 2
        k = field(part, k, 0x18, r[HEADING])  # heading = 3
        k = field(part, k, 0x20, zigzag(r[ALONG]))  # accel_long = 4 (sint32)
        k = field(part, k, 0x28, zigzag(r[ALAT]))  # accel_lat = 5
        k = field(part, k, 0x30, zigzag(r[YAW]))  # yaw_rate = 6
        k = field(part, k, 0x38, r[TRANSMISSION])  # transmission = 7
        k = field(part, k, 0x40, r[BRAKE])  # brake_applied = 8
        s = field(sub, 0, 0x08, r[WIDTH])  # size = 9: width_cm, length_cm, height_cm
        s = field(sub, s, 0x10, r[LENGTH])
        s = field(sub, s, 0x18, r[HEIGHT])
        k = message(part, k, 0x4A, sub, s)
        k = field(part, k, 0x50, r[VCLASS])  # vehicle_class = 10
        k = field(part, k, 0x58, r[EVENTS])  # events = 11
        if r[EMERGENCY] != NO_EMERGENCY:  # emergency = 12: siren_in_use, lights_in_use, responding
            s = field(sub, 0, 0x08, r[EMERGENCY] & 1)
            s = field(sub, s, 0x10, (r[EMERGENCY] >> 1) & 1)
            s = field(sub, s, 0x18, (r[EMERGENCY] >> 2) & 1)
            k = message(part, k, 0x62, sub, s)
        k = field(part, k, 0x68, r[LIGHTS])  # lights = 13
        at = message(buf, at, 0x52, part, k)  # the frame's bsm = 10
        ends[i] = at
