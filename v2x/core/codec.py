"""The one codec: domain messages (`v2x.core.messages`, SI units) <-> wire bytes (`v2x.v1.MessageFrame`).

Encoding quantises to the standards' units (see proto/v2x/v1/v2x.proto); decoding checks every
field against the standard's range and raises only `DecodeError`, whose `kind` says what
was wrong, so that receivers can count faults per kind. A value that holds the standard's
"unavailable" code is decoded as None where the domain field is optional, and rejected
(kind "unavailable") where the simulator needs it (a BSM's position, speed and heading).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError as _PbDecodeError

from v2x.core import messages as m
from v2x.core import wire_read
from v2x.core.errors import DecodeError, V2xError
from v2x.core.wire import v2x_pb2 as pb

# Wire units: one unit on the wire is this much of the SI quantity.
LATLON_DEG = 1e-7
ELEVATION_M = 0.1
SPEED_MPS = 0.02
HEADING_DEG = 0.0125
ACCEL_MPS2 = 0.01
YAW_RATE_DPS = 0.01
CM_M = 0.01
DM_M = 0.1
TENTH_S = 0.1

# The standards' "unavailable" codes.
LAT_NA = 900_000_001
LON_NA = 1_800_000_001
ELEVATION_NA = -4096
SPEED_NA = 8191
HEADING_NA = 28800
ACCEL_NA = 2001
TIME_NA = 36001
ACCURACY_M = 0.05  # J2735 SemiMajorAxisAccuracy / SemiMinorAxisAccuracy
ACCURACY_MAX = 254  # 12.7 m or more
ACCURACY_NA = 255
ORIENTATION_DEG = 360.0 / 65535  # J2735 SemiMajorAxisOrientation
ORIENTATION_NA = 65535

#: Largest payload a receiver accepts; bigger ones are rejected before parsing.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TIME = 2**63 - 1  # header times must fit a signed 64-bit integer (numpy arrays and arithmetic downstream)

E = TypeVar("E", bound=enum.IntEnum)
IntArrays = npt.NDArray[np.int64]
T = TypeVar("T")


class EncodeError(V2xError):
    """A domain value cannot be represented on the wire (a bug in the sender)."""


# ---------------------------------------------------------------------------
# Scalar helpers
# ---------------------------------------------------------------------------


def _q(value: float, unit: float, lo: int, hi: int, field: str) -> int:
    """Quantise `value` to wire units and check the range."""
    if not math.isfinite(value):
        raise EncodeError(f"{field}: {value} is not finite")
    k = round(value / unit)
    if not lo <= k <= hi:
        raise EncodeError(f"{field}: {value} is outside {lo * unit:g}..{hi * unit:g}")
    return k


def _check(k: int, lo: int, hi: int, field: str) -> int:
    if not lo <= k <= hi:
        raise DecodeError("out_of_range", f"{k} is outside {lo}..{hi}", field)
    return k


def _enum(cls: type[E], k: int, field: str) -> E:
    # the members by value (a dict the enum keeps): calling cls(k) costs several times more, per field per message
    e = cls._value2member_map_.get(k)
    if e is None:
        raise DecodeError("out_of_range", f"{k} is not a {cls.__name__}", field)
    return e  # type: ignore[return-value]


def _bits(members: Iterable[enum.IntEnum]) -> int:
    return sum(1 << int(e) for e in set(members))


def _unbits(cls: type[E], k: int, field: str) -> frozenset[E]:
    out = set()
    bit = 0
    while k:
        if k & 1:
            out.add(_enum(cls, bit, field))
        k >>= 1
        bit += 1
    return frozenset(out)


def maker(cls: type[T]) -> Callable[..., T]:
    """What `cls(...)` makes of every field's value, given in the order of its fields, for less (bench.codec): for the
    decoders, once a message's values have passed their checks (at 10 Hz per vehicle, for every receiver), and for a
    connection's arrivals (`v2x.net.transport.Message`, one per message every receiver gets).

    A frozen dataclass's own __init__ sets each field through object.__setattr__, a global lookup and a call per field;
    this fills a plain class of the same slots and then makes the object a `cls` (the same layout, so Python allows it).
    Only for a frozen slotted dataclass with nothing in its __init__ but the fields (no __post_init__, no InitVar).
    """
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if getattr(cls, "__slots__", None) != names or not params.frozen or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: not a frozen slotted dataclass of plain fields")
    # generated as dataclasses generates __init__: one plain attribute store per field
    src = f"def __init__(self, {', '.join(names)}):\n" + "".join(f"    self.{n} = {n}\n" for n in names)
    scope: dict[str, Any] = {"cls": cls}
    exec(src + "    self.__class__ = cls\n", scope)
    return cast("Callable[..., T]", type(f"_{cls.__name__}Maker", (), {"__slots__": names, "__init__": scope["__init__"]}))


_GeoPoint = maker(m.GeoPoint)
_Header = maker(m.Header)
_Frame = maker(m.Frame)
_Bsm = maker(m.Bsm)
_Participant = maker(m.Participant)
_IntersectionRef = maker(m.IntersectionRef)
_MovementState = maker(m.MovementState)
_MovementEvent = maker(m.MovementEvent)
_TimeChange = maker(m.TimeChange)


def _opt_tenths(value: float | None, field: str) -> int:
    return TIME_NA if value is None else _q(value, TENTH_S, 0, 36000, field)


def _opt_untenths(k: int, field: str) -> float | None:
    return None if k == TIME_NA else _check(k, 0, 36000, field) * TENTH_S


# ---------------------------------------------------------------------------
# Shared types
# ---------------------------------------------------------------------------


def _enc_pos(p: m.GeoPoint, out: pb.Position3D, field: str) -> None:
    out.lat = _q(p.lat_deg, LATLON_DEG, -900_000_000, 900_000_000, f"{field}.lat")
    out.lon = _q(p.lon_deg, LATLON_DEG, -1_799_999_999, 1_800_000_000, f"{field}.lon")
    out.elevation = (
        ELEVATION_NA
        if p.elevation_m is None
        else _q(p.elevation_m, ELEVATION_M, -4095, 61439, f"{field}.elevation")
    )


def _geo_in_range(lat: int, lon: int, elev: int) -> m.GeoPoint | None:
    """The point of these wire values if all are in range (an elevation may be unavailable); else None."""
    if not (-900_000_000 <= lat <= 900_000_000 and -1_799_999_999 <= lon <= 1_800_000_000
            and (-4095 <= elev <= 61439 or elev == ELEVATION_NA)):
        return None
    return _GeoPoint(lat * LATLON_DEG, lon * LATLON_DEG, None if elev == ELEVATION_NA else elev * ELEVATION_M)


def _dec_pos(p: pb.Position3D, field: str) -> m.GeoPoint:
    lat, lon, elev = p.lat, p.lon, p.elevation
    point = _geo_in_range(lat, lon, elev)
    if point is not None:
        return point
    if lat == LAT_NA or lon == LON_NA:
        raise DecodeError("unavailable", "position unavailable", field)
    try:  # field names only for a fault: every BSM holds a position
        _check(lat, -900_000_000, 900_000_000, "lat")
        _check(lon, -1_799_999_999, 1_800_000_000, "lon")
        _check(elev, -4095, 61439, "elevation")  # (not unavailable: that is in range)
    except DecodeError as e:
        raise e.under(field) from None
    raise AssertionError("a point out of range passed every check")  # pragma: no cover


def _enc_ref(r: m.IntersectionRef, out: pb.IntersectionRef, field: str) -> None:
    out.region = _q(r.region, 1, 0, 65535, f"{field}.region")
    out.id = _q(r.id, 1, 0, 65535, f"{field}.id")


def _dec_ref(r: pb.IntersectionRef, field: str) -> m.IntersectionRef:
    return _ref(r.region, r.id, field)


def _ref(region: int, iid: int, field: str) -> m.IntersectionRef:
    return m.IntersectionRef(_check(region, 0, 65535, f"{field}.region"), _check(iid, 0, 65535, f"{field}.id"))


def _heading(deg: float, field: str) -> int:
    return _q(deg % 360.0, HEADING_DEG, 0, 28800, field) % 28800


# ---------------------------------------------------------------------------
# BSM
# ---------------------------------------------------------------------------


def _enc_bsm(b: m.Bsm, out: pb.Bsm) -> None:
    """A BSM: quantised and range-checked at once where every value is finite and in range (the common case, at 10 Hz
    per vehicle); otherwise field by field, naming the first that is not (`_enc_bsm_checked`)."""
    p = b.position
    try:
        lat, lon = round(p.lat_deg / LATLON_DEG), round(p.lon_deg / LATLON_DEG)
        elev = ELEVATION_NA if p.elevation_m is None else round(p.elevation_m / ELEVATION_M)
        speed, heading = round(b.speed_mps / SPEED_MPS), round(b.heading_deg % 360.0 / HEADING_DEG)
        along, alat = round(b.accel_mps2 / ACCEL_MPS2), round(b.accel_lat_mps2 / ACCEL_MPS2)
        yaw = round(b.yaw_rate_dps / YAW_RATE_DPS)
        width, length = round(b.width_m / CM_M), round(b.length_m / CM_M)
        height = 0 if b.height_m is None else round(b.height_m / CM_M)
    except (ValueError, OverflowError):  # not finite
        ok = False
    else:
        ok = (
            -900_000_000 <= lat <= 900_000_000 and -1_799_999_999 <= lon <= 1_800_000_000
            and (elev == ELEVATION_NA if p.elevation_m is None else -4095 <= elev <= 61439)
            and 0 <= speed <= 8190 and 0 <= heading <= 28800 and -2000 <= along <= 2000 and -2000 <= alat <= 2000
            and -32767 <= yaw <= 32767 and 0 <= width <= 1023 and 0 <= length <= 4095
            and (b.height_m is None or 1 <= height <= 635)
        )
    if not ok:
        _enc_bsm_checked(b, out)
        return
    pos = out.pos
    pos.lat, pos.lon, pos.elevation = lat, lon, elev
    out.speed = speed
    out.heading = heading % 28800
    out.accel_long, out.accel_lat, out.yaw_rate = along, alat, yaw
    out.transmission = b.transmission.value  # type: ignore[assignment]
    out.brake_applied = b.brake_applied
    size = out.size
    size.width_cm, size.length_cm, size.height_cm = width, length, height
    out.vehicle_class = b.vehicle_class.value  # type: ignore[assignment]
    if b.events:
        out.events = _bits(b.events)
    if b.lights:
        out.lights = _bits(b.lights)
    if b.emergency is not None:
        out.emergency.siren_in_use = b.emergency.siren_in_use
        out.emergency.lights_in_use = b.emergency.lights_in_use
        out.emergency.responding = b.emergency.responding
    if b.accuracy is not None:
        _enc_accuracy(b.accuracy, out.accuracy)


def _enc_bsm_checked(b: m.Bsm, out: pb.Bsm) -> None:
    _enc_pos(b.position, out.pos, "bsm.pos")
    out.speed = _q(b.speed_mps, SPEED_MPS, 0, 8190, "bsm.speed")
    out.heading = _heading(b.heading_deg, "bsm.heading")
    out.accel_long = _q(b.accel_mps2, ACCEL_MPS2, -2000, 2000, "bsm.accel_long")
    out.accel_lat = _q(b.accel_lat_mps2, ACCEL_MPS2, -2000, 2000, "bsm.accel_lat")
    out.yaw_rate = _q(b.yaw_rate_dps, YAW_RATE_DPS, -32767, 32767, "bsm.yaw_rate")
    out.transmission = b.transmission.value  # type: ignore[assignment]
    out.brake_applied = b.brake_applied
    out.size.width_cm = _q(b.width_m, CM_M, 0, 1023, "bsm.size.width_cm")
    out.size.length_cm = _q(b.length_m, CM_M, 0, 4095, "bsm.size.length_cm")
    out.size.height_cm = 0 if b.height_m is None else _q(b.height_m, CM_M, 1, 635, "bsm.size.height_cm")
    out.vehicle_class = b.vehicle_class.value  # type: ignore[assignment]
    out.events = _bits(b.events)
    out.lights = _bits(b.lights)
    if b.emergency is not None:
        out.emergency.siren_in_use = b.emergency.siren_in_use
        out.emergency.lights_in_use = b.emergency.lights_in_use
        out.emergency.responding = b.emergency.responding
    if b.accuracy is not None:  # absent when not stated: a BSM without it is byte for byte what it was before
        _enc_accuracy(b.accuracy, out.accuracy)


def _enc_accuracy(a: m.PositionalAccuracy, out: pb.PositionalAccuracy) -> None:
    for name, value in (("semi_major", a.semi_major_m), ("semi_minor", a.semi_minor_m)):
        if not math.isfinite(value) or value < 0:
            raise EncodeError(f"bsm.accuracy.{name}: {value} is not a length >= 0")
        # rounded up: a stated accuracy never claims better than it is (RTK's 2 cm is 0.05 m, not 0); beyond the
        # range: "12.7 m or more"
        setattr(out, name, min(math.ceil(value / ACCURACY_M - 1e-9), ACCURACY_MAX))
    if a.orientation_deg is None:
        out.orientation = ORIENTATION_NA
    elif not math.isfinite(a.orientation_deg):
        raise EncodeError(f"bsm.accuracy.orientation: {a.orientation_deg} is not finite")
    else:
        out.orientation = round(a.orientation_deg % 360.0 / ORIENTATION_DEG) % ORIENTATION_NA


def _dec_accuracy(a: pb.PositionalAccuracy) -> m.PositionalAccuracy | None:
    major = _check(a.semi_major, 0, ACCURACY_NA, "bsm.accuracy.semi_major")
    minor = _check(a.semi_minor, 0, ACCURACY_NA, "bsm.accuracy.semi_minor")
    orientation = _check(a.orientation, 0, ORIENTATION_NA, "bsm.accuracy.orientation")
    if ACCURACY_NA in (major, minor):
        return None  # unavailable: as if not stated
    return m.PositionalAccuracy(
        major * ACCURACY_M, minor * ACCURACY_M, None if orientation == ORIENTATION_NA else orientation * ORIENTATION_DEG
    )


_NO_BITS: frozenset[Any] = frozenset()
_TRANSMISSIONS = m.Transmission._value2member_map_
_VEHICLE_CLASSES = m.VehicleClass._value2member_map_


def _dec_bsm(b: pb.Bsm) -> m.Bsm:
    """A BSM: every field checked at once where all are in range (`_bsm_in_range`, the common case, at 10 Hz per
    vehicle for every receiver); otherwise field by field, naming the first that is not (`_dec_bsm_checked`)."""
    pos, size = b.pos, b.size
    em, acc = (b.emergency if b.HasField("emergency") else None), (b.accuracy if b.HasField("accuracy") else None)
    bsm = _bsm_in_range(
        pos.lat, pos.lon, pos.elevation, b.speed, b.heading, b.accel_long, b.accel_lat, b.yaw_rate, b.transmission,
        b.brake_applied, size.width_cm, size.length_cm, size.height_cm, b.vehicle_class, b.events, b.lights,
        None if em is None else (em.siren_in_use, em.lights_in_use, em.responding),
        None if acc is None else (acc.semi_major, acc.semi_minor, acc.orientation),
    )
    return bsm if bsm is not None else _dec_bsm_checked(b)


def _bsm_in_range(
    lat: int, lon: int, elev: int, speed: int, heading: int, along: int, alat: int, yaw: int, transmission: int,
    brake: bool, width: int, length: int, height: int, vclass: int, events: int, lights: int,
    emergency: tuple[bool, bool, bool] | None, accuracy: tuple[int, int, int] | None,
) -> m.Bsm | None:
    """The BSM of these wire values (protobuf's fields, or `wire_read`'s) if every one is in range and no event or
    light bit is set (the common case); else None, for the field by field path to name what is not."""
    t, vc, position = _TRANSMISSIONS.get(transmission), _VEHICLE_CLASSES.get(vclass), _geo_in_range(lat, lon, elev)
    if not (
        position is not None
        and 0 <= speed <= 8190 and 0 <= heading <= 28799 and -2000 <= along <= 2000 and -2000 <= alat <= 2000
        and -32767 <= yaw <= 32767 and width <= 1023 and length <= 4095 and height <= 635
        and t is not None and vc is not None and events == 0 and lights == 0
        and (accuracy is None or (accuracy[0] <= ACCURACY_NA and accuracy[1] <= ACCURACY_NA and accuracy[2] <= ORIENTATION_NA))
    ):
        return None
    acc = None
    if accuracy is not None and ACCURACY_NA not in accuracy[:2]:  # both axes stated (else unavailable: as if not stated)
        major, minor, orientation = accuracy
        acc = m.PositionalAccuracy(
            major * ACCURACY_M, minor * ACCURACY_M, None if orientation == ORIENTATION_NA else orientation * ORIENTATION_DEG
        )
    return _Bsm(  # in Bsm's field order
        position, speed * SPEED_MPS, heading * HEADING_DEG, along * ACCEL_MPS2, alat * ACCEL_MPS2, yaw * YAW_RATE_DPS, t,
        brake, width * CM_M, length * CM_M, None if height == 0 else height * CM_M, vc, _NO_BITS,
        None if emergency is None else m.EmergencyExt(*emergency), _NO_BITS, acc,
    )


def _bsm_frame(data: bytes) -> m.Frame | None:
    """`decode`'s common case: a BSM frame in the layout protobuf writes, every value in range, read from its bytes by
    compiled code (`wire_read`); None for anything else, which `decode` gives to protobuf (the same frame, or the
    error that names what is wrong)."""
    out = np.empty(wire_read.SLOTS, np.int64)
    if not wire_read.bsm_frame(np.frombuffer(data, np.uint8), out):
        return None
    return bsm_of_row(data, out.tolist())


def bsm_of_row(data: bytes, row: list[int]) -> m.Frame | None:
    """The frame of `wire_read`'s values of a BSM frame's bytes (`data`), if all are in range; else None (to `decode`
    one by one). For a caller that read them with `wire_read.bsm_frames` already (v2x.net.intake)."""
    (at, end, kind, seq, gen_us, sim_ms, lat, lon, elev, speed, heading, along, alat, yaw, transmission, brake, width,
     length, height, vclass, events, em, siren, em_lights, responding, lights, acc, major, minor, orientation) = row
    header = _wire_header(data, at, end, kind, seq, gen_us, sim_ms)
    if header is None:
        return None
    bsm = _bsm_in_range(
        lat, lon, elev, speed, heading, along, alat, yaw, transmission, brake == 1, width, length, height, vclass, events,
        lights, (siren == 1, em_lights == 1, responding == 1) if em else None, (major, minor, orientation) if acc else None,
    )
    return None if bsm is None else _Frame(header, bsm)


def decode_bsms(payloads: Sequence[bytes]) -> list[m.Frame | None]:
    """`decode`'s common case for many payloads at once (a receiver's arrivals of one step, most of them BSMs): the
    frame of each that is a BSM frame `decode` reads by compiled code (`_bsm_frame`), all read in one call; None for
    every other payload, to `decode` one by one (its frame, or the error that names what is wrong). Where it gives a
    frame, it is the frame `decode` gives (tests/test_codec.py)."""
    out: list[m.Frame | None] = [None] * len(payloads)
    picked = [i for i, data in enumerate(payloads) if _body_tag(data) == 0x52]
    if not picked:
        return out
    frames = [payloads[i] for i in picked]
    starts = np.fromiter(itertools.accumulate(map(len, frames), initial=0), np.int64, len(frames) + 1)
    rows = np.empty((len(frames), wire_read.SLOTS), np.int64)
    ok = np.empty(len(frames), np.int64)
    wire_read.bsm_frames(np.frombuffer(b"".join(frames), np.uint8), starts, rows, ok)
    for i, data, row, good in zip(picked, frames, rows.tolist(), ok.tolist(), strict=True):
        if good:
            out[i] = bsm_of_row(data, row)
    return out


def _header_in_range(sender: str, kind: int, seq: int, gen_us: int, sim_ms: int) -> m.Header | None:
    """The header of these wire values (protobuf's fields, or `wire_read`'s) if all are in range at once (the wire's
    integers here are unsigned) and the sender is named; else None, for the field by field path."""
    k = _SENDER_KINDS.get(kind)
    if k is None or not sender or gen_us > MAX_TIME or sim_ms > MAX_TIME:
        return None
    return _Header(sender, k, seq, gen_us, sim_ms)


def _wire_header(data: bytes, at: int, end: int, kind: int, seq: int, gen_us: int, sim_ms: int) -> m.Header | None:
    """`_header_in_range` of `wire_read`'s values, the sender id being data[at:end] (None if it is no UTF-8)."""
    try:
        sender = data[at:end].decode()
    except UnicodeDecodeError:
        return None
    return _header_in_range(sender, kind, seq, gen_us, sim_ms)


def _dec_bsm_checked(b: pb.Bsm) -> m.Bsm:
    if b.speed == SPEED_NA:
        raise DecodeError("unavailable", "speed unavailable", "bsm.speed")
    if b.heading == HEADING_NA:
        raise DecodeError("unavailable", "heading unavailable", "bsm.heading")
    if b.accel_long == ACCEL_NA or b.accel_lat == ACCEL_NA:
        raise DecodeError("unavailable", "acceleration unavailable", "bsm.accel")
    em = b.emergency if b.HasField("emergency") else None
    size = b.size
    height = size.height_cm
    return m.Bsm(
        position=_dec_pos(b.pos, "bsm.pos"),
        speed_mps=_check(b.speed, 0, 8190, "bsm.speed") * SPEED_MPS,
        heading_deg=_check(b.heading, 0, 28799, "bsm.heading") * HEADING_DEG,
        accel_mps2=_check(b.accel_long, -2000, 2000, "bsm.accel_long") * ACCEL_MPS2,
        accel_lat_mps2=_check(b.accel_lat, -2000, 2000, "bsm.accel_lat") * ACCEL_MPS2,
        yaw_rate_dps=_check(b.yaw_rate, -32767, 32767, "bsm.yaw_rate") * YAW_RATE_DPS,
        transmission=_enum(m.Transmission, b.transmission, "bsm.transmission"),
        brake_applied=b.brake_applied,
        width_m=_check(size.width_cm, 0, 1023, "bsm.size.width_cm") * CM_M,
        length_m=_check(size.length_cm, 0, 4095, "bsm.size.length_cm") * CM_M,
        height_m=None if height == 0 else _check(height, 1, 635, "bsm.size.height_cm") * CM_M,
        vehicle_class=_enum(m.VehicleClass, b.vehicle_class, "bsm.vehicle_class"),
        events=_unbits(m.VehicleEvent, b.events, "bsm.events"),
        lights=_unbits(m.ExteriorLight, b.lights, "bsm.lights"),
        emergency=None
        if em is None
        else m.EmergencyExt(em.siren_in_use, em.lights_in_use, em.responding),
        accuracy=_dec_accuracy(b.accuracy) if b.HasField("accuracy") else None,
    )


# ---------------------------------------------------------------------------
# MAP
# ---------------------------------------------------------------------------


def _enc_map(d: m.MapData, out: pb.MapData) -> None:
    for i, g in enumerate(d.intersections):
        f = f"map.intersections[{i}]"
        og = out.intersections.add()
        _enc_ref(g.ref, og.id, f"{f}.id")
        og.name = g.name
        og.revision = _q(g.revision, 1, 0, 127, f"{f}.revision")
        _enc_pos(g.ref_point, og.ref_point, f"{f}.ref_point")
        for j, lane in enumerate(g.lanes):
            lf = f"{f}.lanes[{j}]"
            ol = og.lanes.add()
            ol.lane_id = _q(lane.lane_id, 1, 0, 255, f"{lf}.lane_id")
            ol.name = lane.name
            ol.direction = lane.direction.value  # type: ignore[assignment]
            ol.approach_id = _q(lane.approach_id, 1, 0, 15, f"{lf}.approach_id")
            ol.maneuvers = _bits(lane.maneuvers)
            ol.width_cm = _q(lane.width_m, CM_M, 0, 32767, f"{lf}.width_cm")
            ol.speed_limit = _q(lane.speed_limit_mps, SPEED_MPS, 0, 8190, f"{lf}.speed_limit")
            for x, y in lane.nodes:
                n = ol.nodes.add()
                n.x_cm = _q(x, CM_M, -(2**31), 2**31 - 1, f"{lf}.nodes.x_cm")
                n.y_cm = _q(y, CM_M, -(2**31), 2**31 - 1, f"{lf}.nodes.y_cm")
            for k, c in enumerate(lane.connections):
                oc = ol.connects_to.add()
                oc.lane_id = _q(c.lane_id, 1, 0, 255, f"{lf}.connects_to[{k}].lane_id")
                oc.maneuver = _bits(c.maneuver)
                oc.signal_group = _q(c.signal_group, 1, 0, 255, f"{lf}.connects_to[{k}].signal_group")
                if c.remote_intersection is not None:
                    _enc_ref(c.remote_intersection, oc.remote_intersection, f"{lf}.connects_to[{k}]")


def _dec_map(d: pb.MapData) -> m.MapData:
    out = []
    for i, g in enumerate(d.intersections):
        f = f"map.intersections[{i}]"
        lanes = []
        for j, ol in enumerate(g.lanes):
            lf = f"{f}.lanes[{j}]"
            conns = tuple(
                m.Connection(
                    lane_id=_check(c.lane_id, 0, 255, f"{lf}.connects_to[{k}].lane_id"),
                    maneuver=_unbits(m.Maneuver, c.maneuver, f"{lf}.connects_to[{k}].maneuver"),
                    signal_group=_check(c.signal_group, 0, 255, f"{lf}.connects_to[{k}].signal_group"),
                    remote_intersection=_dec_ref(c.remote_intersection, f"{lf}.connects_to[{k}]")
                    if c.HasField("remote_intersection")
                    else None,
                )
                for k, c in enumerate(ol.connects_to)
            )
            lanes.append(
                m.MapLane(
                    lane_id=_check(ol.lane_id, 0, 255, f"{lf}.lane_id"),
                    name=ol.name,
                    direction=_enum(m.LaneDirection, ol.direction, f"{lf}.direction"),
                    approach_id=_check(ol.approach_id, 0, 15, f"{lf}.approach_id"),
                    maneuvers=_unbits(m.Maneuver, ol.maneuvers, f"{lf}.maneuvers"),
                    width_m=_check(ol.width_cm, 0, 32767, f"{lf}.width_cm") * CM_M,
                    speed_limit_mps=_check(ol.speed_limit, 0, 8190, f"{lf}.speed_limit") * SPEED_MPS,
                    nodes=tuple((n.x_cm * CM_M, n.y_cm * CM_M) for n in ol.nodes),
                    connections=conns,
                )
            )
        out.append(
            m.IntersectionGeometry(
                ref=_dec_ref(g.id, f"{f}.id"),
                name=g.name,
                revision=_check(g.revision, 0, 127, f"{f}.revision"),
                ref_point=_dec_pos(g.ref_point, f"{f}.ref_point"),
                lanes=tuple(lanes),
            )
        )
    return m.MapData(tuple(out))


# ---------------------------------------------------------------------------
# SPaT
# ---------------------------------------------------------------------------


def _enc_spat(s: m.Spat, out: pb.Spat) -> None:
    for i, st in enumerate(s.intersections):
        f = f"spat.intersections[{i}]"
        o = out.intersections.add()
        _enc_ref(st.ref, o.id, f"{f}.id")
        o.name = st.name
        o.revision = _q(st.revision, 1, 0, 127, f"{f}.revision")
        o.status = _bits(st.status)
        o.timestamp_ms = st.timestamp_ms
        o.plan_id = _q(st.plan_id, 1, 0, 65535, f"{f}.plan_id")
        for j, mv in enumerate(st.states):
            om = o.states.add()
            g = mv.signal_group  # (the field's name built only when it is needed, as below)
            om.signal_group = g if type(g) is int and 1 <= g <= 255 else _q(g, 1, 1, 255, f"{f}.states[{j}].signal_group")
            add = om.events.add
            for k, ev in enumerate(mv.events):
                kept = _EVENT_WIRE.get(id(ev))
                add().MergeFromString(kept[1] if kept is not None and kept[0] is ev else _event_wire(ev, f"{f}.states[{j}].events[{k}]"))


_EVENT_WIRE: dict[int, tuple[m.MovementEvent, bytes]] = {}  # id -> the event (kept alive: its id stays its own), its bytes


def _event_wire(ev: m.MovementEvent, where: str) -> bytes:
    """A movement event's wire bytes, kept for the event object: the SPaT builder keeps its events (groups red until the
    same time share one, and an RSU sends a SPaT every 0.1 s), so most of a SPaT's events were encoded before."""
    oe = pb.MovementEvent()
    oe.state = ev.state.value  # type: ignore[assignment]
    t = ev.timing
    if t is not None:
        # field names only for a fault: a SPaT holds dozens of events, at 10 Hz per junction
        ot = oe.timing
        try:
            ot.start_time = _opt_tenths(t.start_s, "start_time")
            ot.min_end_time = _opt_tenths(t.min_end_s, "min_end_time")
            ot.max_end_time = _opt_tenths(t.max_end_s, "max_end_time")
            ot.likely_end_time = _opt_tenths(t.likely_end_s, "likely_end_time")
            ot.confidence = _q(t.confidence, 1, 0, 15, "confidence")
        except EncodeError as e:
            raise EncodeError(f"{where}.{e}") from None
    wire = oe.SerializeToString()
    if len(_EVENT_WIRE) >= EVENTS_KEPT:
        _EVENT_WIRE.clear()
    _EVENT_WIRE[id(ev)] = (ev, wire)
    return wire


def _dec_event(oe: pb.MovementEvent) -> m.MovementEvent:
    """One movement event; fields named relative to it (the caller adds where it is).

    Events repeat (every group that is red until the same time, every junction on the same plan): decoded ones are
    kept by their wire bytes, as reading their fields costs more than serialising them.
    """
    return _event(oe.SerializeToString(), oe)


def _event(key: bytes, oe: pb.MovementEvent | None = None) -> m.MovementEvent:
    """The event whose wire bytes are `key` (parsed as `oe`, or here if not given), kept once decoded."""
    ev = _EVENTS.get(key)
    if ev is None:
        ev = _new_event(oe if oe is not None else pb.MovementEvent.FromString(key))  # raises if out of range: not kept
        if len(_EVENTS) >= EVENTS_KEPT:
            _EVENTS.clear()
        _EVENTS[key] = ev
    return ev


EVENTS_KEPT = 4096
_EVENTS: dict[bytes, m.MovementEvent] = {}


def _new_event(oe: pb.MovementEvent) -> m.MovementEvent:
    """An event checked at once where every value is in range; otherwise field by field, naming the first that is not."""
    state = _LIGHT_STATES.get(oe.state)
    if not oe.HasField("timing"):
        return _MovementEvent(state, None) if state is not None else _new_event_checked(oe)
    t = oe.timing
    start, min_end, max_end, likely = t.start_time, t.min_end_time, t.max_end_time, t.likely_end_time
    if not (
        state is not None and t.confidence <= 15 and (start <= 36000 or start == TIME_NA)
        and (min_end <= 36000 or min_end == TIME_NA) and (max_end <= 36000 or max_end == TIME_NA)
        and (likely <= 36000 or likely == TIME_NA)
    ):  # (the wire's integers here are unsigned)
        return _new_event_checked(oe)
    return _MovementEvent(state, _TimeChange(  # in TimeChange's field order
        None if start == TIME_NA else start * TENTH_S, None if min_end == TIME_NA else min_end * TENTH_S,
        None if max_end == TIME_NA else max_end * TENTH_S, None if likely == TIME_NA else likely * TENTH_S, t.confidence,
    ))


def _new_event_checked(oe: pb.MovementEvent) -> m.MovementEvent:
    timing = None
    if oe.HasField("timing"):
        t = oe.timing
        timing = m.TimeChange(
            start_s=_opt_untenths(t.start_time, "start_time"),
            min_end_s=_opt_untenths(t.min_end_time, "min_end_time"),
            max_end_s=_opt_untenths(t.max_end_time, "max_end_time"),
            likely_end_s=_opt_untenths(t.likely_end_time, "likely_end_time"),
            confidence=_check(t.confidence, 0, 15, "confidence"),
        )
    state = _LIGHT_STATES.get(oe.state)
    return m.MovementEvent(state if state is not None else _enum(m.LightState, oe.state, "state"), timing)


_LIGHT_STATES = {int(s): s for s in m.LightState}


def _dec_spat(s: pb.Spat) -> m.Spat:
    # field names are built only for a fault: a SPaT holds dozens of events, decoded by every receiver
    out = []
    for i, o in enumerate(s.intersections):
        f = f"spat.intersections[{i}]"
        states = []
        for j, om in enumerate(o.states):
            try:
                events = tuple([_dec_event(oe) for oe in om.events])
            except DecodeError:  # name the first that fails
                for k, oe in enumerate(om.events):
                    try:
                        _dec_event(oe)
                    except DecodeError as e:
                        raise e.under(f"{f}.states[{j}].events[{k}]") from None
                raise
            g = om.signal_group
            states.append(_MovementState(g if 1 <= g <= 255 else _check(g, 1, 255, f"{f}.states[{j}].signal_group"), events))
        ref = o.id
        out.append(_intersection_state(ref.region, ref.id, o.name, o.revision, o.status, o.timestamp_ms, o.plan_id,
                                       tuple(states), f))
    return m.Spat(tuple(out))


def _intersection_state(
    region: int, iid: int, name: str, revision: int, status: int, timestamp_ms: int, plan_id: int,
    states: tuple[m.MovementState, ...], f: str,
) -> m.IntersectionState:
    return m.IntersectionState(
        ref=_ref(region, iid, f"{f}.id"),
        name=name,
        revision=_check(revision, 0, 127, f"{f}.revision"),
        status=_unbits(m.IntersectionStatus, status, f"{f}.status"),
        timestamp_ms=timestamp_ms,
        plan_id=_check(plan_id, 0, 65535, f"{f}.plan_id"),
        states=states,
    )


def _spat_frame(data: bytes) -> m.Frame | None:
    """`decode`'s third common case, as `_bsm_frame`: a SPaT frame in the layout protobuf writes, every value in range
    (its body decoded once for its bytes, its events kept by theirs, as `_spat_body` and `_dec_event` keep them);
    None for anything else."""
    read = _spat_rows(data)
    if read is None:
        return None
    out, inters, states, events = read
    at, end, kind, seq, gen_us, sim_ms, spat_at, ni, ns, ne = out.tolist()
    header = _wire_header(data, at, end, kind, seq, gen_us, sim_ms)
    if header is None:
        return None
    key = data[spat_at:]
    body = _SPAT_BODIES.get(key)
    if body is not None:
        return _Frame(header, body)
    ev_rows, st_rows = events[:ne, : wire_read.E_END + 1].tolist(), states[:ns].tolist()  # each event: its bytes' span
    out_inters, s, e = [], 0, 0
    try:
        for i, (region, iid, name_at, name_end, revision, status, timestamp, plan, n_states) in enumerate(inters[:ni].tolist()):
            out_states = []
            for group, n_events in st_rows[s : s + n_states]:
                if not 1 <= group <= 255:
                    return None
                out_states.append(_MovementState(group, tuple([_event(data[a:b]) for a, b in ev_rows[e : e + n_events]])))
                e += n_events
            s += n_states
            out_inters.append(_intersection_state(region, iid, data[name_at:name_end].decode(), revision, status, timestamp,
                                                  plan, tuple(out_states), f"spat.intersections[{i}]"))
    except (DecodeError, UnicodeDecodeError, _PbDecodeError, RecursionError):  # protobuf's path names what is wrong
        return None
    body = m.Spat(tuple(out_inters))
    if len(_SPAT_BODIES) >= SPAT_BODIES_KEPT:
        _SPAT_BODIES.clear()
    _SPAT_BODIES[key] = body
    return _Frame(header, body)


# ---------------------------------------------------------------------------
# RSI, RSM
# ---------------------------------------------------------------------------


def _enc_rsi(r: m.Rsi, out: pb.Rsi) -> None:
    _enc_pos(r.ref_pos, out.ref_pos, "rsi.ref_pos")
    for i, ev in enumerate(r.events):
        f = f"rsi.events[{i}]"
        o = out.events.add()
        o.event_id = _q(ev.event_id, 1, 0, 255, f"{f}.event_id")
        o.kind = ev.kind.value  # type: ignore[assignment]
        o.source = ev.source.value  # type: ignore[assignment]
        o.status = ev.status.value  # type: ignore[assignment]
        _enc_pos(ev.position, o.position, f"{f}.position")
        o.radius_dm = _q(ev.radius_m, DM_M, 0, 2**32 - 1, f"{f}.radius_dm")
        for j, lane in enumerate(ev.lanes):
            ol = o.lanes.add()
            _enc_ref(lane.intersection, ol.intersection, f"{f}.lanes[{j}].intersection")
            ol.lane_id = _q(lane.lane_id, 1, 0, 255, f"{f}.lanes[{j}].lane_id")
        o.priority = _q(ev.priority, 1, 0, 7, f"{f}.priority")
        o.start_time_ms = ev.start_time_ms
        o.end_time_ms = 0 if ev.end_time_ms is None else ev.end_time_ms
        o.description = ev.description


def _dec_rsi(r: pb.Rsi) -> m.Rsi:
    events = []
    for i, o in enumerate(r.events):
        f = f"rsi.events[{i}]"
        events.append(
            m.RoadTrafficEvent(
                event_id=_check(o.event_id, 0, 255, f"{f}.event_id"),
                kind=_enum(m.HazardKind, o.kind, f"{f}.kind"),
                source=_enum(m.EventSource, o.source, f"{f}.source"),
                status=_enum(m.EventStatus, o.status, f"{f}.status"),
                position=_dec_pos(o.position, f"{f}.position"),
                radius_m=o.radius_dm * DM_M,
                lanes=tuple(
                    m.LaneRef(
                        _dec_ref(ol.intersection, f"{f}.lanes[{j}].intersection"),
                        _check(ol.lane_id, 0, 255, f"{f}.lanes[{j}].lane_id"),
                    )
                    for j, ol in enumerate(o.lanes)
                ),
                priority=_check(o.priority, 0, 7, f"{f}.priority"),
                start_time_ms=o.start_time_ms,
                end_time_ms=None if o.end_time_ms == 0 else o.end_time_ms,
                description=o.description,
            )
        )
    return m.Rsi(_dec_pos(r.ref_pos, "rsi.ref_pos"), tuple(events))


def _enc_rsm(r: m.Rsm, out: pb.Rsm) -> None:
    """An RSM: each participant quantised and range-checked at once where every value is finite and in range (the
    common case: an RSU sends one every 0.1 s with every road user it hears); otherwise field by field, naming the first
    that is not (`_enc_participant_checked`)."""
    _enc_pos(r.ref_pos, out.ref_pos, "rsm.ref_pos")
    add = out.participants.add
    for i, p in enumerate(r.participants):
        o = add()
        q, ptc, lane = p.position, p.ptc_id, p.lane_id
        try:
            lat, lon = round(q.lat_deg / LATLON_DEG), round(q.lon_deg / LATLON_DEG)
            elev = ELEVATION_NA if q.elevation_m is None else round(q.elevation_m / ELEVATION_M)
            speed, heading = round(p.speed_mps / SPEED_MPS), round(p.heading_deg % 360.0 / HEADING_DEG)
            width, length = round(p.width_m / CM_M), round(p.length_m / CM_M)
        except (ValueError, OverflowError):  # not finite
            ok = False
        else:
            ok = (
                type(ptc) is int and 0 <= ptc <= 65535 and type(lane) is int and 0 <= lane <= 255
                and -900_000_000 <= lat <= 900_000_000 and -1_799_999_999 <= lon <= 1_800_000_000
                and (elev == ELEVATION_NA if q.elevation_m is None else -4095 <= elev <= 61439)
                and 0 <= speed <= 8190 and 0 <= heading <= 28800 and 0 <= width <= 1023 and 0 <= length <= 4095
            )
        if not ok:
            _enc_participant_checked(p, o, i)
            continue
        o.type = p.type.value  # type: ignore[assignment]
        o.source = p.source.value  # type: ignore[assignment]
        o.vehicle_id = p.vehicle_id
        o.ptc_id = ptc
        pos = o.pos
        pos.lat, pos.lon, pos.elevation = lat, lon, elev
        o.speed, o.heading = speed, heading % 28800
        size = o.size
        size.width_cm, size.length_cm = width, length
        o.lane_id = lane
        if p.intersection is not None:
            _enc_ref(p.intersection, o.intersection, f"rsm.participants[{i}].intersection")


def _enc_participant_checked(p: m.Participant, o: pb.Participant, i: int) -> None:
    o.type = p.type.value  # type: ignore[assignment]
    o.source = p.source.value  # type: ignore[assignment]
    o.vehicle_id = p.vehicle_id
    # field names relative to the participant, its place added only for a fault
    try:
        o.ptc_id = _q(p.ptc_id, 1, 0, 65535, "ptc_id")
        _enc_pos(p.position, o.pos, "pos")
        o.speed = _q(p.speed_mps, SPEED_MPS, 0, 8190, "speed")
        o.heading = _heading(p.heading_deg, "heading")
        o.size.width_cm = _q(p.width_m, CM_M, 0, 1023, "size.width_cm")
        o.size.length_cm = _q(p.length_m, CM_M, 0, 4095, "size.length_cm")
        o.lane_id = _q(p.lane_id, 1, 0, 255, "lane_id")
        if p.intersection is not None:
            _enc_ref(p.intersection, o.intersection, "intersection")
    except EncodeError as e:
        raise EncodeError(f"rsm.participants[{i}].{e}") from None


_PARTICIPANT_TYPES = m.ParticipantType._value2member_map_
_SOURCE_TYPES = m.SourceType._value2member_map_


def _dec_rsm(r: pb.Rsm) -> m.Rsm:
    """An RSM: each participant's fields checked at once where all are in range (`_participant_in_range`, the common
    case: an RSU sends one every 0.1 s with every road user it hears); otherwise field by field, naming the first that
    is not (`_dec_participant_checked`)."""
    parts = []
    for i, o in enumerate(r.participants):
        pos, size = o.pos, o.size
        ref = o.intersection if o.HasField("intersection") else None
        p = _participant_in_range(
            o.type, o.ptc_id, o.source, o.vehicle_id, pos.lat, pos.lon, pos.elevation, o.speed, o.heading, size.width_cm,
            size.length_cm, o.lane_id, None if ref is None else (ref.region, ref.id),
        )
        parts.append(p if p is not None else _dec_participant_checked(o, f"rsm.participants[{i}]"))
    return m.Rsm(_dec_pos(r.ref_pos, "rsm.ref_pos"), tuple(parts))


def _participant_in_range(
    ptype: int, ptc: int, source: int, vehicle_id: str, lat: int, lon: int, elev: int, speed: int, heading: int,
    width: int, length: int, lane: int, ref: tuple[int, int] | None,
) -> m.Participant | None:
    """The participant of these wire values (protobuf's fields, or `wire_read`'s) if every one is in range; else None,
    for the field by field path to name what is not."""
    t, src, position = _PARTICIPANT_TYPES.get(ptype), _SOURCE_TYPES.get(source), _geo_in_range(lat, lon, elev)
    if not (
        t is not None and src is not None and position is not None and ptc <= 65535
        and speed <= 8190 and heading <= 28799 and width <= 1023 and length <= 4095 and lane <= 255
        and (ref is None or (ref[0] <= 65535 and ref[1] <= 65535))
    ):  # (the wire's integers here are unsigned)
        return None
    return _Participant(  # in Participant's field order
        t, ptc, src, vehicle_id, position, speed * SPEED_MPS, heading * HEADING_DEG, width * CM_M, length * CM_M, lane,
        None if ref is None else _IntersectionRef(*ref),
    )


def _rsm_frame(data: bytes) -> m.Frame | None:
    """`decode`'s other common case, as `_bsm_frame`: an RSM frame in the layout protobuf writes, every value in range;
    None for anything else."""
    out, rows, n = _rsm_rows(data)
    if n < 0:
        return None
    at, end, kind, seq, gen_us, sim_ms, lat, lon, elev = out.tolist()
    header = _wire_header(data, at, end, kind, seq, gen_us, sim_ms)
    ref_pos = _geo_in_range(lat, lon, elev)
    if header is None or ref_pos is None:
        return None
    parts = []
    for (ptype, ptc, source, vid_at, vid_end, lat, lon, elev, speed, heading, width, length, _, lane, has_ref, region,
         iid) in rows[:n].tolist():
        try:
            vid = data[vid_at:vid_end].decode()
        except UnicodeDecodeError:
            return None
        p = _participant_in_range(ptype, ptc, source, vid, lat, lon, elev, speed, heading, width, length, lane,
                                  (region, iid) if has_ref else None)
        if p is None:
            return None
        parts.append(p)
    return _Frame(header, m.Rsm(ref_pos, tuple(parts)))


def _dec_participant_checked(o: pb.Participant, f: str) -> m.Participant:
    return m.Participant(
        type=_enum(m.ParticipantType, o.type, f"{f}.type"),
        ptc_id=_check(o.ptc_id, 0, 65535, f"{f}.ptc_id"),
        source=_enum(m.SourceType, o.source, f"{f}.source"),
        vehicle_id=o.vehicle_id,
        position=_dec_pos(o.pos, f"{f}.pos"),
        speed_mps=_check(o.speed, 0, 8190, f"{f}.speed") * SPEED_MPS,
        heading_deg=_check(o.heading, 0, 28799, f"{f}.heading") * HEADING_DEG,
        width_m=_check(o.size.width_cm, 0, 1023, f"{f}.size.width_cm") * CM_M,
        length_m=_check(o.size.length_cm, 0, 4095, f"{f}.size.length_cm") * CM_M,
        lane_id=_check(o.lane_id, 0, 255, f"{f}.lane_id"),
        intersection=_dec_ref(o.intersection, f"{f}.intersection") if o.HasField("intersection") else None,
    )


# ---------------------------------------------------------------------------
# Cloud control, priority, status
# ---------------------------------------------------------------------------


def _enc_plan(p: m.SignalPlan, out: pb.SignalPlan) -> None:
    _enc_ref(p.intersection, out.intersection, "plan.intersection")
    out.plan_id = _q(p.plan_id, 1, 0, 65535, "plan.plan_id")
    out.mode = p.mode.value  # type: ignore[assignment]
    out.cycle = _q(p.cycle_s, TENTH_S, 0, 65535, "plan.cycle")
    out.offset = _q(p.offset_s, TENTH_S, 0, 65535, "plan.offset")
    for i, ph in enumerate(p.phases):
        f = f"plan.phases[{i}]"
        o = out.phases.add()
        o.phase_id = _q(ph.phase_id, 1, 0, 255, f"{f}.phase_id")
        o.signal_groups.extend(_q(g, 1, 1, 255, f"{f}.signal_groups") for g in ph.signal_groups)
        o.green = _q(ph.green_s, TENTH_S, 0, 65535, f"{f}.green")
        o.yellow = _q(ph.yellow_s, TENTH_S, 0, 65535, f"{f}.yellow")
        o.all_red = _q(ph.all_red_s, TENTH_S, 0, 65535, f"{f}.all_red")
        o.min_green = _q(ph.min_green_s, TENTH_S, 0, 65535, f"{f}.min_green")
        o.max_green = _q(ph.max_green_s, TENTH_S, 0, 65535, f"{f}.max_green")
    out.not_before_ms = 0 if p.not_before_ms is None else p.not_before_ms
    out.reason = p.reason
    out.valid_until_ms = 0 if p.valid_until_ms is None else p.valid_until_ms


def _dec_plan(p: pb.SignalPlan) -> m.SignalPlan:
    phases = []
    for i, o in enumerate(p.phases):
        f = f"plan.phases[{i}]"
        phases.append(
            m.PhasePlan(
                phase_id=_check(o.phase_id, 0, 255, f"{f}.phase_id"),
                signal_groups=tuple(_check(g, 1, 255, f"{f}.signal_groups") for g in o.signal_groups),
                green_s=_check(o.green, 0, 65535, f"{f}.green") * TENTH_S,
                yellow_s=_check(o.yellow, 0, 65535, f"{f}.yellow") * TENTH_S,
                all_red_s=_check(o.all_red, 0, 65535, f"{f}.all_red") * TENTH_S,
                min_green_s=_check(o.min_green, 0, 65535, f"{f}.min_green") * TENTH_S,
                max_green_s=_check(o.max_green, 0, 65535, f"{f}.max_green") * TENTH_S,
            )
        )
    return m.SignalPlan(
        intersection=_dec_ref(p.intersection, "plan.intersection"),
        plan_id=_check(p.plan_id, 0, 65535, "plan.plan_id"),
        mode=_enum(m.ControlMode, p.mode, "plan.mode"),
        cycle_s=_check(p.cycle, 0, 65535, "plan.cycle") * TENTH_S,
        offset_s=_check(p.offset, 0, 65535, "plan.offset") * TENTH_S,
        phases=tuple(phases),
        not_before_ms=None if p.not_before_ms == 0 else p.not_before_ms,
        reason=p.reason,
        valid_until_ms=None if p.valid_until_ms == 0 else p.valid_until_ms,
    )


def _enc_advisory(a: m.Advisory, out: pb.Advisory) -> None:
    out.target_id = a.target_id
    out.kind = a.kind.value  # type: ignore[assignment]
    out.advised_speed = (
        SPEED_NA
        if a.advised_speed_mps is None
        else _q(a.advised_speed_mps, SPEED_MPS, 0, 8190, "advisory.advised_speed")
    )
    out.valid_until_ms = a.valid_until_ms
    out.event_id = _q(a.event_id, 1, 0, 255, "advisory.event_id")
    if a.intersection is not None:
        _enc_ref(a.intersection, out.intersection, "advisory.intersection")
    out.text = a.text


def _dec_advisory(a: pb.Advisory) -> m.Advisory:
    return m.Advisory(
        target_id=a.target_id,
        kind=_enum(m.AdvisoryKind, a.kind, "advisory.kind"),
        advised_speed_mps=None
        if a.advised_speed == SPEED_NA
        else _check(a.advised_speed, 0, 8190, "advisory.advised_speed") * SPEED_MPS,
        valid_until_ms=a.valid_until_ms,
        event_id=_check(a.event_id, 0, 255, "advisory.event_id"),
        intersection=_dec_ref(a.intersection, "advisory.intersection")
        if a.HasField("intersection")
        else None,
        text=a.text,
    )


def _enc_prq(r: m.PriorityRequest, out: pb.PriorityRequest) -> None:
    out.request_id = _q(r.request_id, 1, 0, 255, "priority_request.request_id")
    _enc_ref(r.intersection, out.intersection, "priority_request.intersection")
    out.type = r.type.value  # type: ignore[assignment]
    out.role = r.role.value  # type: ignore[assignment]
    out.in_lane_id = _q(r.in_lane_id, 1, 0, 255, "priority_request.in_lane_id")
    out.out_lane_id = _q(r.out_lane_id, 1, 0, 255, "priority_request.out_lane_id")
    out.eta = _q(r.eta_s, TENTH_S, 0, 36000, "priority_request.eta")
    if r.position is not None:
        _enc_pos(r.position, out.pos, "priority_request.pos")


def _dec_prq(r: pb.PriorityRequest) -> m.PriorityRequest:
    return m.PriorityRequest(
        request_id=_check(r.request_id, 0, 255, "priority_request.request_id"),
        intersection=_dec_ref(r.intersection, "priority_request.intersection"),
        type=_enum(m.RequestType, r.type, "priority_request.type"),
        role=_enum(m.VehicleRole, r.role, "priority_request.role"),
        in_lane_id=_check(r.in_lane_id, 0, 255, "priority_request.in_lane_id"),
        out_lane_id=_check(r.out_lane_id, 0, 255, "priority_request.out_lane_id"),
        eta_s=_check(r.eta, 0, 36000, "priority_request.eta") * TENTH_S,
        position=_dec_pos(r.pos, "priority_request.pos") if r.HasField("pos") else None,
    )


def _enc_prs(s: m.PriorityStatus, out: pb.PriorityStatus) -> None:
    out.requester_id = s.requester_id
    out.request_id = _q(s.request_id, 1, 0, 255, "priority_status.request_id")
    _enc_ref(s.intersection, out.intersection, "priority_status.intersection")
    out.state = s.state.value  # type: ignore[assignment]
    out.action = s.action.value  # type: ignore[assignment]
    out.signal_group = _q(s.signal_group, 1, 0, 255, "priority_status.signal_group")


def _dec_prs(s: pb.PriorityStatus) -> m.PriorityStatus:
    return m.PriorityStatus(
        requester_id=s.requester_id,
        request_id=_check(s.request_id, 0, 255, "priority_status.request_id"),
        intersection=_dec_ref(s.intersection, "priority_status.intersection"),
        state=_enum(m.PriorityState, s.state, "priority_status.state"),
        action=_enum(m.PriorityAction, s.action, "priority_status.action"),
        signal_group=_check(s.signal_group, 0, 255, "priority_status.signal_group"),
    )


def _enc_status(s: m.Status, out: pb.Status) -> None:
    out.state = s.state.value  # type: ignore[assignment]
    out.version = s.version
    out.detail = s.detail


def _dec_status(s: pb.Status) -> m.Status:
    return m.Status(_enum(m.ServiceState, s.state, "status.state"), s.version, s.detail)


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------

# body type -> (oneof field name, encoder); oneof field name -> decoder
_ENCODERS: dict[type, tuple[str, Callable[..., None]]] = {
    m.Bsm: ("bsm", _enc_bsm),
    m.MapData: ("map", _enc_map),
    m.Spat: ("spat", _enc_spat),
    m.Rsi: ("rsi", _enc_rsi),
    m.Rsm: ("rsm", _enc_rsm),
    m.SignalPlan: ("signal_plan", _enc_plan),
    m.Advisory: ("advisory", _enc_advisory),
    m.PriorityRequest: ("priority_request", _enc_prq),
    m.PriorityStatus: ("priority_status", _enc_prs),
    m.Status: ("status", _enc_status),
}
_DECODERS: dict[str, Callable[..., m.Body]] = {
    "bsm": _dec_bsm,
    "map": _dec_map,
    "spat": _dec_spat,
    "rsi": _dec_rsi,
    "rsm": _dec_rsm,
    "signal_plan": _dec_plan,
    "advisory": _dec_advisory,
    "priority_request": _dec_prq,
    "priority_status": _dec_prs,
    "status": _dec_status,
}


def _enc_header(h: m.Header, out: pb.Header) -> None:
    if not h.sender_id:
        raise EncodeError("header.sender_id: empty")
    out.sender_id = h.sender_id
    out.sender_kind = h.sender_kind.value  # type: ignore[assignment]
    out.seq = h.seq % 2**32
    out.gen_time_us = h.gen_time_us
    out.sim_time_ms = h.sim_time_ms


def to_proto(frame: m.Frame) -> pb.MessageFrame:
    """Build the protobuf message of a frame."""
    out = pb.MessageFrame()
    _enc_header(frame.header, out.header)
    if isinstance(frame.body, (m.CheckedSpat, m.CheckedRsm)):
        raise EncodeError(f"a {type(frame.body).__name__} is not encoded: it holds what a relay reads of the message, "
                          "whose bytes are relayed as they came")
    name, enc = _ENCODERS[type(frame.body)]
    enc(frame.body, getattr(out, name))
    # An empty sub-message must still mark the oneof (e.g. a Spat with no intersections).
    getattr(out, name).SetInParent()
    return out


def encode(frame: m.Frame) -> bytes:
    """Serialise a frame to wire bytes."""
    return to_proto(frame).SerializeToString()


_SENDER_KINDS = m.SenderKind._value2member_map_
_parse = pb.MessageFrame.FromString  # a new frame parsed from bytes, in one call


def from_proto(msg: pb.MessageFrame) -> m.Frame:
    """Convert a parsed protobuf frame to the domain, checking every field."""
    if not msg.HasField("header"):
        raise DecodeError("empty", "frame has no header", "header")
    h = msg.header
    if not h.sender_id:
        raise DecodeError("empty", "sender id is empty", "header.sender_id")
    header = _header_in_range(h.sender_id, h.sender_kind, h.seq, h.gen_time_us, h.sim_time_ms)
    if header is None:  # field by field, naming the first that is not
        header = m.Header(
            sender_id=h.sender_id,
            sender_kind=_enum(m.SenderKind, h.sender_kind, "header.sender_kind"),
            seq=h.seq,
            gen_time_us=_check(h.gen_time_us, 0, MAX_TIME, "header.gen_time_us"),
            sim_time_ms=_check(h.sim_time_ms, 0, MAX_TIME, "header.sim_time_ms"),
        )
    which = msg.WhichOneof("body")
    if which is None:
        raise DecodeError("empty", "frame has no body", "body")
    if which == "spat":
        return _Frame(header, _spat_body(msg.spat))
    return _Frame(header, _DECODERS[which](getattr(msg, which)))


SPAT_BODIES_KEPT = 512
_SPAT_BODIES: dict[bytes, m.Spat] = {}


def _spat_body(s: pb.Spat) -> m.Spat:
    """A SPaT body, decoded once for its wire bytes: a vehicle hears each SPaT on two paths, the RSU's and the cloud's
    relay of it (the same body under another header), and a fleet process hears it for every vehicle near the junction."""
    key = s.SerializeToString()
    body = _SPAT_BODIES.get(key)
    if body is None:
        body = _dec_spat(s)  # raises for a body that is no SPaT: nothing kept
        if len(_SPAT_BODIES) >= SPAT_BODIES_KEPT:
            _SPAT_BODIES.clear()
        _SPAT_BODIES[key] = body
    return body


def decode(data: bytes) -> m.Frame:
    """Parse wire bytes into a frame. Raises only `DecodeError`."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise DecodeError("oversize", f"{len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte cap")
    body = _body_tag(data)
    frame = _bsm_frame(data) if body == 0x52 else _spat_frame(data) if body == 0x62 else _rsm_frame(data) if body == 0x72 else None
    if frame is not None:
        return frame
    return _decode_by_protobuf(data)


def _body_tag(data: bytes) -> int:
    """The tag of the body behind the header, if these are the bytes of a header (field 1, its length in one byte) and
    then perhaps a BSM (field 10, 0x52), a SPaT (12, 0x62) or an RSM (14, 0x72) in protobuf's layout, for `wire_read`;
    else 0."""
    return (data[data[1] + 2] if type(data) is bytes and 2 < len(data) <= MAX_PAYLOAD_BYTES and data[0] == 0x0A
            and data[1] < 0x80 and len(data) > data[1] + 2 else 0)


def skim(data: bytes, rsm: bool = True) -> m.Frame:
    """`decode` for a receiver that only relays a SPaT and counts an RSM (the cloud, without sensors to fuse; `rsm`
    False: an RSM is decoded in full): a SPaT of one intersection comes as a `CheckedSpat`, an RSM as a `CheckedRsm`,
    where compiled code finds every value in the range `decode` takes (`wire_read.spat_in_range`, `rsm_in_range`),
    without building the states and events or the participants (most of their decode); anything else as `decode`
    gives it. Raises only `DecodeError`, for what `decode` raises it for, with the same words."""
    body = _body_tag(data)
    frame = _spat_checked(data) if body == 0x62 else _rsm_checked(data) if body == 0x72 and rsm else None
    return frame if frame is not None else decode(data)


def _spat_rows(data: bytes) -> tuple[IntArrays, IntArrays, IntArrays, IntArrays] | None:
    """`wire_read.spat_frame` of a SPaT frame's bytes: its header and counts, and its intersections', states' and
    events' rows (`_spat_frame`'s and `_spat_checked`'s); None for a frame it leaves to protobuf."""
    rows = len(data) // 2 + 1
    out = np.empty(wire_read.SPAT_SLOTS, np.int64)
    inters, states, events = (np.empty((rows, k), np.int64) for k in (wire_read.I_SLOTS, 2, wire_read.E_SLOTS))
    return (out, inters, states, events) if wire_read.spat_frame(np.frombuffer(data, np.uint8), out, inters, states, events) else None


def _rsm_rows(data: bytes) -> tuple[IntArrays, IntArrays, int]:
    """`wire_read.rsm_frame` of an RSM frame's bytes: its header and ref_pos, its participants' rows and how many
    (-1 for a frame it leaves to protobuf), for `_rsm_frame` and `_rsm_checked`."""
    out, rows = np.empty(wire_read.RSM_SLOTS, np.int64), np.empty((len(data) // 2 + 1, wire_read.P_SLOTS), np.int64)
    return out, rows, wire_read.rsm_frame(np.frombuffer(data, np.uint8), out, rows)


def _spat_checked(data: bytes) -> m.Frame | None:
    """`skim`'s SPaT: a frame of a `CheckedSpat`, or None for `decode` to decode it."""
    read = _spat_rows(data)
    if read is None or read[0][wire_read.N_INTERSECTIONS] != 1:
        return None
    out, inters, states, events = read
    if not wire_read.spat_in_range(np.frombuffer(data, np.uint8), out, inters, states, events, _LIGHT_STATE_KNOWN,
                                   _STATUS_BITS):
        return None
    at, end, kind, seq, gen_us, sim_ms = out[:6].tolist()
    header = _wire_header(data, at, end, kind, seq, gen_us, sim_ms)
    if header is None:
        return None
    _, iid, name_at, name_end, _, _, timestamp, _, _ = inters[0].tolist()
    return _Frame(header, m.CheckedSpat(data[name_at:name_end].decode(), iid, timestamp))


def _rsm_checked(data: bytes) -> m.Frame | None:
    """`skim`'s RSM: a frame of a `CheckedRsm`, or None for `decode` to decode it."""
    out, rows, n = _rsm_rows(data)
    if n < 0 or not wire_read.rsm_in_range(np.frombuffer(data, np.uint8), out, rows, n, _PARTICIPANT_TYPE_KNOWN,
                                           _SOURCE_TYPE_KNOWN):
        return None
    at, end, kind, seq, gen_us, sim_ms = out[:6].tolist()
    header = _wire_header(data, at, end, kind, seq, gen_us, sim_ms)
    return None if header is None else _Frame(header, m.CheckedRsm(n))


def _known(cls: type[enum.IntEnum]) -> npt.NDArray[np.bool_]:
    """Which wire values are members of an enum: True at each member's value (for `wire_read`'s range checks)."""
    out = np.zeros(max(cls) + 1, np.bool_)
    out[[int(x) for x in cls]] = True
    return out


_LIGHT_STATE_KNOWN = _known(m.LightState)
_STATUS_BITS = _bits(m.IntersectionStatus)
_PARTICIPANT_TYPE_KNOWN = _known(m.ParticipantType)
_SOURCE_TYPE_KNOWN = _known(m.SourceType)


def _decode_by_protobuf(data: bytes) -> m.Frame:
    """`decode` by protobuf's parse and the checks of the domain's values: every message, every layout."""
    try:
        msg = _parse(data)
    except _PbDecodeError as e:
        raise DecodeError("malformed", f"not a v2x.v1.MessageFrame: {e}") from None
    except RecursionError:
        raise DecodeError("malformed", "nesting too deep") from None
    return from_proto(msg)


def encode_relayed(header: m.Header, body: bytes) -> bytes:
    """A frame of `header` around a body already in wire form (`relay_body`): what `encode` makes of the same header
    and body, without converting the body from the domain again (protobuf fields may be concatenated; the header,
    field 1, comes first as `encode` writes it)."""
    out = pb.MessageFrame()
    _enc_header(header, out.header)
    return out.SerializeToString() + body


def _varint(v: int) -> bytes:
    """`v` (>= 0) as a protobuf varint."""
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _varint_field(tag: int, v: int) -> bytes:
    """A varint field, left out when 0 (as proto3 serialises)."""
    return b"" if v == 0 else bytes((tag,)) + _varint(v)


def station_fields(sender_id: str, kind: m.SenderKind) -> bytes:
    """A header's first fields, which a station's every header repeats (its id and kind), in wire form: for
    `relayed_frame`."""
    if not sender_id:
        raise EncodeError("header.sender_id: empty")
    sid = sender_id.encode()
    return b"\x0a" + _varint(len(sid)) + sid + _varint_field(0x10, kind.value)


def time_fields(gen_time_us: int, sim_time_ms: int) -> bytes:
    """A header's last fields, its times, in wire form: for `relayed_frame`, worked out once for the messages of one
    instant (a fleet's slice of BSMs). Raises EncodeError for a time a uint64 cannot hold, where protobuf raises."""
    for name, v in (("gen_time_us", gen_time_us), ("sim_time_ms", sim_time_ms)):
        if not 0 <= v < 2**64:
            raise EncodeError(f"header.{name}: {v} is outside 0..2**64-1")
    return _varint_field(0x20, gen_time_us) + _varint_field(0x28, sim_time_ms)


def relayed_frame(station: bytes, seq: int, times: bytes, body: bytes) -> bytes:
    """`encode_relayed` of a header and a body, byte for byte, from the header in parts already in wire form: the
    station's fields (`station_fields`) and the times (`time_fields`); only the sequence number is written here. For
    many messages of one instant: `Station.relay_at` takes 1.4 us a message with it, `Station.relay` 3.0 (a header
    object, a clock read and protobuf's serialisation each time; the transport's publish not counted)."""
    seq %= 2**32
    head = station + (b"" if seq == 0 else bytes((0x18, seq)) if seq < 0x80 else b"\x18" + _varint(seq)) + times
    n = len(head)
    return (bytes((0x0A, n)) if n < 0x80 else b"\x0a" + _varint(n)) + head + body


def relay_body(data: bytes, skimmed: bool = False) -> bytes:
    """The body of a frame that `decode` accepted, in wire form (its field's tag and length included), for a relay to
    send on under its own header (`encode_relayed`): without the sender's header and signature, and without fields
    this codec does not know (they are not checked, so they are not passed on). `skimmed`: the frame is one `skim`
    gave as a `CheckedSpat` or `CheckedRsm`, which it takes only with no signature, no unknown field, the header's
    length in one byte and the body last: its body is the bytes after the header, as they came. That is what protobuf
    writes again for a body written as protobuf writes it (an RSU's); one with a varint padded or a field written out
    at its default, which the compiled reader takes too, is passed on as it came, and decodes to the same body."""
    if skimmed:
        return data[data[1] + 2 :]
    msg = pb.MessageFrame()
    msg.ParseFromString(data)
    msg.ClearField("header")
    msg.ClearField("security")
    msg.DiscardUnknownFields()
    return msg.SerializeToString()
