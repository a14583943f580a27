"""What an RSU sends ten times a second, its SPaT and its RSM, in wire form at once: what `codec.encode` writes for
each, compiled.

**SPaT.** Built as objects, a junction's SPaT of 12 signal groups took ~60 us (its groups' `MovementState`s and
events) and ~33 us more to encode. Here each group's timing goes as a row of one array to one numba loop, which
writes the IntersectionState in protobuf's wire format behind its fixed part (`spat_head`, by the codec): the body
is the bytes of the frame's `spat` field, for `Station.relay` to put behind a header.

**RSM.** Every RSU sends an RSM with every road user it heard lately. Built one by one, each participant
was a `Participant` object (~1.5 us) and a protobuf message filled field by field (~2 us); an RSM of a busy
junction's vehicles took ~60 us. Here the participants' values go as rows of one array to one numba loop, which
quantises them by the codec's units and rounding (`round` and `np.rint` both round half to even), checks them
against the ranges of the codec's common path, and writes them in protobuf's wire format: the body is the bytes of
the frame's `rsm` field, tag and length included, for `Station.relay` to put behind a header. When a value is not finite or is out of range the
whole RSM is None: it goes the object way, whose codec names the field.

tests/test_codec.py holds every body to `codec.encode` of the same `Spat` or `Rsm`, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.codec import CM_M, ELEVATION_M, ELEVATION_NA, HEADING_DEG, LATLON_DEG, SPEED_MPS, TENTH_S, TIME_NA
from v2x.core.jit import ByteArray, FloatMatrix, IntArray, helper, kernel
from v2x.core.protowire import field, message, varint, zigzag

# what the kernels here compile in from other files, and its hash (`jit.fingerprint`: numba's cache knows only this file)
COMPILED_FROM = (varint, field, message, zigzag, CM_M, ELEVATION_M, ELEVATION_NA, HEADING_DEG, LATLON_DEG, SPEED_MPS, TENTH_S,
                 TIME_NA, int(m.ParticipantType.MOTOR), int(m.SourceType.V2X))
COMPILED_IN = "03b690bc7406628d"

# the columns of a participant's row (`row`), in the order the kernel reads them
PTC, LAT, LON, ELEV, ELEV_KNOWN, SPEED, HEADING, WIDTH, LENGTH = range(9)
PART_BYTES = 64  # room for one participant without its id: 41 bytes at most pass the checks, 6 more the id's tag and length
RSM_TAG = 0x72  # the frame's field 14 (rsm), length-delimited
MOTOR, V2X = int(m.ParticipantType.MOTOR), int(m.SourceType.V2X)


def row(ptc_id: int, position: m.GeoPoint, speed_mps: float, heading_deg: float, width_m: float, length_m: float) -> tuple[float, ...]:
    """A participant's values in the `Participant`'s own units, as a row for `rsm_body` (a `ptc_id` that is not an
    int, which the codec's common path would not take, as NaN)."""
    e = position.elevation_m
    return (ptc_id if type(ptc_id) is int else math.nan, position.lat_deg, position.lon_deg, math.nan if e is None else e,
            e is not None, speed_mps, heading_deg, width_m, length_m)


# -- SPaT --------------------------------------------------------------------------------------------------------------

# the columns of a signal group's row (`spat_body`): its current state and when it ends (min, max, likely: countdowns
# [s] from the timestamp, `v2x.core.signal.spat`'s), and the state after it, which starts at the likely end
GROUP, STATE, MIN_END, MAX_END, LIKELY_END, NEXT_STATE = range(6)
SPAT_TAG = 0x62  # the frame's field 12 (spat), length-delimited
GROUP_BYTES = 56  # room for one group's MovementState and its tag and length: 47 bytes at most pass the checks


def spat_head(ref: m.IntersectionRef, name: str) -> bytes:
    """An IntersectionState's id and name fields in wire form, by the codec: an RSU's are the same in every SPaT.
    Raises `EncodeError` as the codec does for a reference out of range."""
    state = m.IntersectionState(ref=ref, name=name, revision=0, status=frozenset(), timestamp_ms=0, plan_id=0, states=())
    body = codec.relay_body(codec.encode(m.Frame(_HEADER, m.Spat((state,)))))
    _, at = _tag_length(body, 0, SPAT_TAG)
    _, at = _tag_length(body, at, 0x0A)  # Spat.intersections = 1
    return body[at:]  # revision, status, timestamp and plan 0, no states: nothing after the id and name


def _tag_length(b: bytes, at: int, tag: int) -> tuple[int, int]:
    """The length of the length-delimited field `tag` at `at`, and where its body starts."""
    assert b[at] == tag, (b, at, tag)
    n = shift = 0
    at += 1
    while True:
        n |= (b[at] & 0x7F) << shift
        shift += 7
        at += 1
        if b[at - 1] < 0x80:
            return n, at


def spat_body(head: bytes, revision: int, status: int, timestamp_ms: int, plan_id: int, confidence: int,
              rows: Sequence[tuple[float, ...]]) -> bytes | None:
    """The frame's `spat` field for one intersection: `head` (`spat_head`'s bytes), then its revision, status bits,
    timestamp [ms UTC] and plan, then a MovementState per row (GROUP...NEXT_STATE) with two events: the current state,
    from now (start 0) until its min, max and likely end, with `confidence`; then the next, from the likely end (no
    ends, no confidence). As the codec writes `intersection_state`'s objects; None when a value is one the codec
    would not take (not finite, or out of range)."""
    fixed = (revision, status, timestamp_ms, plan_id, confidence)
    if not (all(type(v) is int for v in fixed) and 0 <= revision <= 127 and 0 <= status < 2**32
            and 0 <= timestamp_ms < 2**63 and 0 <= plan_id <= 65535 and 0 <= confidence <= 15):
        return None  # (the codec rounds a float, or refuses it: the object way)
    q = np.array(rows, dtype=np.float64).reshape(len(rows), 6)
    buf = np.empty(len(head) + 40 + len(rows) * GROUP_BYTES, dtype=np.uint8)
    end = _write_spat(q, np.array(fixed, dtype=np.int64), np.frombuffer(bytearray(head), dtype=np.uint8), buf)
    return None if end < 0 else buf[:end].tobytes()


@helper
def _tenths(v: float) -> int:
    """A countdown [s] in the wire's tenths, or -1 when the codec would refuse it (not finite, or beyond 0..36000)."""
    k = np.rint(v / TENTH_S)
    return int(k) if 0 <= k <= 36000 else -1


@kernel
def _write_spat(q: FloatMatrix, fixed: IntArray, head: ByteArray, buf: ByteArray) -> int:
    """`spat_body`'s field into `buf`: the end in `buf`, or -1 when a value is one the codec would refuse. `fixed`:
    revision, status, timestamp_ms, plan_id, confidence. Fields in number order, zeros left
    out, as protobuf serialises; each event's timing present (the codec sets it), the next event's missing ends as
    TIME_NA."""
    n = q.shape[0]
    state = np.empty(len(head) + 40 + n * GROUP_BYTES, dtype=np.uint8)  # the IntersectionState, before its length
    group = np.empty(GROUP_BYTES, dtype=np.uint8)  # one MovementState, the same way
    event = np.empty(24, dtype=np.uint8)  # one MovementEvent
    timing = np.empty(24, dtype=np.uint8)  # one TimeChangeDetails
    state[:len(head)] = head
    at = field(state, len(head), 0x18, fixed[0])  # revision = 3
    at = field(state, at, 0x20, fixed[1])  # status = 4
    at = field(state, at, 0x28, fixed[2])  # timestamp_ms = 5
    at = field(state, at, 0x30, fixed[3])  # plan_id = 6
    for i in range(n):
        r = q[i]
        g = r[GROUP]
        lo, hi, likely = _tenths(r[MIN_END]), _tenths(r[MAX_END]), _tenths(r[LIKELY_END])
        if not (1 <= g <= 255 and g == int(g)) or lo < 0 or hi < 0 or likely < 0:
            return -1
        k = field(group, 0, 0x08, int(g))  # signal_group = 1
        t = field(timing, 0, 0x10, lo)  # the current state: start 0 (left out), min_end = 2, max_end = 3, likely = 4,
        t = field(timing, t, 0x18, hi)  # confidence = 5
        t = field(timing, t, 0x20, likely)
        t = field(timing, t, 0x28, fixed[4])
        e = field(event, 0, 0x08, int(r[STATE]))  # state = 1
        e = message(event, e, 0x12, timing, t)  # timing = 2
        k = message(group, k, 0x12, event, e)  # events = 2
        t = field(timing, 0, 0x08, likely)  # the next state: from the likely end, its own ends unknown
        t = field(timing, t, 0x10, TIME_NA)
        t = field(timing, t, 0x18, TIME_NA)
        t = field(timing, t, 0x20, TIME_NA)
        e = field(event, 0, 0x08, int(r[NEXT_STATE]))
        e = message(event, e, 0x12, timing, t)
        k = message(group, k, 0x12, event, e)
        at = message(state, at, 0x3A, group, k)  # states = 7
    body = np.empty(at + 6, dtype=np.uint8)
    b = message(body, 0, 0x0A, state, at)  # Spat.intersections = 1
    return message(buf, 0, SPAT_TAG, body, b)


# -- RSM ---------------------------------------------------------------------------------------------------------------

def ref_field(ref_pos: m.GeoPoint) -> bytes:
    """An Rsm's `ref_pos` field in wire form (its tag and length included), by the codec: an RSU's is the same in
    every RSM it sends. Raises `EncodeError` as the codec does for a position out of range."""
    body = codec.relay_body(codec.encode(m.Frame(_HEADER, m.Rsm(ref_pos, ()))))
    _, at = _tag_length(body, 0, RSM_TAG)
    return body[at:]  # no participants: nothing after the position


_HEADER = m.Header("rsm-wire", m.SenderKind.RSU, 0, 0, 0)  # a frame to cut the body from (the header is not kept)


def rsm_body(ref: bytes, ids: Sequence[str], rows: Sequence[tuple[float, ...]]) -> bytes | None:
    """The frame's `rsm` field for an RSM with reference position `ref` (`ref_field`'s bytes) and one participant per
    row (`row`), with the vehicle id of the same place in `ids` (MOTOR, from V2X, on no lane known, in this order); or
    None when a value is one the codec's common path would not take (not finite, or out of range)."""
    encoded = [v.encode() for v in ids]
    id_bytes = np.frombuffer(bytearray(b"".join(encoded)), dtype=np.uint8)
    id_ends = np.cumsum(np.array([len(i) for i in encoded], dtype=np.int64))
    q = np.array(rows, dtype=np.float64).reshape(len(encoded), 9)
    buf = np.empty(6 + len(ref) + len(encoded) * (PART_BYTES + 6) + len(id_bytes), dtype=np.uint8)
    end = _write_rsm(q, id_bytes, id_ends, np.frombuffer(bytearray(ref), dtype=np.uint8), buf)
    return None if end < 0 else buf[:end].tobytes()


@helper
def _within(v: float, lo: float, hi: float) -> bool:
    """lo <= v <= hi (NaN: False)."""
    return lo <= v <= hi


@kernel
def _write_rsm(q: FloatMatrix, ids: ByteArray, id_ends: IntArray, ref: ByteArray, buf: ByteArray) -> int:
    """The frame's `rsm` field into `buf`: `ref` (the ref_pos field, as written), then each row of `q` as a
    participant (field 2) with the id `ids[id_ends[i - 1]:id_ends[i]]`; the end in `buf`, or -1 when a row is one
    `codec._enc_rsm`'s common path would not take. Each value quantised by the codec's units and rounding (`rint`
    and Python's `round` both round half to even) and checked against its range; fields in number order, zeros left
    out, as protobuf serialises; `pos` and `size` present even when all zero (the codec always sets them)."""
    n = q.shape[0]
    body = np.empty(len(ref) + n * (PART_BYTES + 6) + len(ids), dtype=np.uint8)  # the field's body, before its length
    part = np.empty(PART_BYTES + len(ids), dtype=np.uint8)  # one participant, the same way
    sub = np.empty(32, dtype=np.uint8)  # one sub-message, the same way
    body[:len(ref)] = ref
    at = len(ref)
    start = 0
    for i in range(n):
        r = q[i]
        ptc = r[PTC]
        lat, lon = np.rint(r[LAT] / LATLON_DEG), np.rint(r[LON] / LATLON_DEG)
        elev = np.rint(r[ELEV] / ELEVATION_M) if r[ELEV_KNOWN] else float(ELEVATION_NA)
        speed, heading = np.rint(r[SPEED] / SPEED_MPS), np.rint(r[HEADING] % 360.0 / HEADING_DEG)
        width, length = np.rint(r[WIDTH] / CM_M), np.rint(r[LENGTH] / CM_M)
        if not (
            _within(ptc, 0, 65535) and _within(lat, -900_000_000, 900_000_000) and _within(lon, -1_799_999_999, 1_800_000_000)
            and (_within(elev, -4095, 61439) or not r[ELEV_KNOWN]) and _within(speed, 0, 8190) and _within(heading, 0, 28800)
            and _within(width, 0, 1023) and _within(length, 0, 4095)
        ):
            return -1
        k = field(part, 0, 0x08, MOTOR)  # type = 1
        k = field(part, k, 0x10, int(ptc))  # ptc_id = 2
        k = field(part, k, 0x18, V2X)  # source = 3
        if id_ends[i] > start:  # vehicle_id = 4 (a string: left out when empty)
            k = message(part, k, 0x22, ids[start:id_ends[i]], id_ends[i] - start)
        start = id_ends[i]
        s = field(sub, 0, 0x08, zigzag(int(lat)))  # pos = 5: lat, lon, elevation (sint32)
        s = field(sub, s, 0x10, zigzag(int(lon)))
        s = field(sub, s, 0x18, zigzag(int(elev)))
        k = message(part, k, 0x2A, sub, s)
        k = field(part, k, 0x30, int(speed))  # speed = 6
        k = field(part, k, 0x38, int(heading) % 28800)  # heading = 7 (360 degrees is 0 on the wire)
        s = field(sub, 0, 0x08, int(width))  # size = 8: width_cm, length_cm
        s = field(sub, s, 0x10, int(length))
        k = message(part, k, 0x42, sub, s)  # lane_id = 9: 0 (unknown), left out; intersection = 10: none
        at = message(body, at, 0x12, part, k)  # Rsm.participants = 2
    return message(buf, 0, RSM_TAG, body, at)
