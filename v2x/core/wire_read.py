"""BSM, RSM and SPaT frames read from their wire bytes by compiled code: `codec.decode`'s common cases, for less.

Every receiver decodes every BSM it hears (the roadside and the cloud each hear every vehicle's ten a second), the
cloud every RSU's RSM and SPaT, and each fleet process every SPaT near its vehicles (ten a second from each RSU);
protobuf's parse is the smaller part of that: reading its fields one Python attribute at a time costs more. Here one
numba loop walks a frame's bytes and puts every value in int64 arrays, for the codec to check and build as it does
from protobuf's fields.

It takes only the layout protobuf and the codec write: the header (field 1) then the body (field 10, a BSM; 12, a
SPaT; 14, an RSM) and nothing after; in every message, down to a SPaT's events, the fields in number order, each at
most once (but for repeated ones, in a row), none unknown, each of its own wire type; every tag within five bytes
(as protobuf takes it), every length within what is left and within five bytes (as protobuf takes it), every varint
within the width its field reads (a uint32 below 2**32, an enum below 2**31, a bool 0 or 1, a 64-bit time within nine
bytes). Anything else (another message type, a signature, a field twice, a field protobuf does not know, a value
protobuf would truncate) it leaves to protobuf (`bsm_frame` and `spat_frame` give 0, `rsm_frame` -1), which then
decodes it or says what is wrong with it as before. tests/test_codec.py holds the two paths to the same frame, or the
same error, for generated messages, their edges, mutated bytes and the layouts protobuf reads but does not write.
"""

from __future__ import annotations

from v2x.core.jit import BoolArray, IntArray, IntMatrix, ReadBytes, helper, inline_helper, kernel

# the slots of `out`, in the order the codec reads them
(SENDER_AT, SENDER_END, KIND, SEQ, GEN_US, SIM_MS, LAT, LON, ELEV, SPEED, HEADING, ALONG, ALAT, YAW, TRANSMISSION,
 BRAKE, WIDTH, LENGTH, HEIGHT, VCLASS, EVENTS, EMERGENCY, SIREN, LIGHTS_IN_USE, RESPONDING, LIGHTS, ACCURACY, MAJOR,
 MINOR, ORIENTATION) = range(30)
SLOTS = 30
# an RSM frame's: the header's six as above, then its ref_pos
RSM_LAT, RSM_LON, RSM_ELEV = 6, 7, 8
RSM_SLOTS = 9
# each of its participants' (a row of `parts`): field 4, vehicle_id, as where its bytes start and end; INTERSECTION is
# 1 where that sub-message is present
(P_TYPE, P_PTC, P_SOURCE, P_VID_AT, P_VID_END, P_LAT, P_LON, P_ELEV, P_SPEED, P_HEADING, P_WIDTH, P_LENGTH, P_HEIGHT,
 P_LANE, P_INTERSECTION, P_REGION, P_ID) = range(17)
P_SLOTS = 17
# a SPaT frame's: the header's six, then where the Spat's own fields start (its bytes, to the frame's end, are what
# decoded bodies are kept by), and how many intersections, movement states and events it has
SPAT_AT, N_INTERSECTIONS, N_STATES, N_EVENTS = 6, 7, 8, 9
SPAT_SLOTS = 10
# each intersection's (a row of `inters`): its name as where its bytes start and end; STATES: how many movement
# states are its own (the next rows of `states`, in order)
I_REGION, I_ID, I_NAME_AT, I_NAME_END, I_REVISION, I_STATUS, I_TIMESTAMP, I_PLAN, I_STATES = range(9)
I_SLOTS = 9
# each movement state's (a row of `states`): EVENTS, how many events are its own (the next rows of `events`, each the
# event's bytes as where they start and end: what decoded events are kept by, `codec._event`)
S_GROUP, S_EVENTS = 0, 1
E_AT, E_END, E_STATE, E_TIMING = 0, 1, 2, 3  # E_TIMING: its five fields from there
E_SLOTS = 8

# how a varint field is read (protobuf's types), and the widest raw varint taken here for each: protobuf would cut a
# wider one to its type's width; a 64-bit time is taken within nine bytes, below 2**63 (the codec refuses more). A tag
# is taken within five bytes, as protobuf takes it
_UINT32, _SINT32, _ENUM, _BOOL, _UINT64 = range(5)
_BELOW = (1 << 32, 1 << 32, 1 << 31, 2, 0)  # (_UINT64's is not used: nine bytes are its limit)


@helper
def _varint(buf: ReadBytes, at: int, end: int, most: int = 9) -> tuple[int, int]:
    """The varint at `at` and the position after it; the position is -1 if the varint runs past `end` or takes more
    than `most` bytes (nine at most, so the value read is below 2**63)."""
    v = 0
    shift = 0
    while at < end and shift < 7 * most:
        b = buf[at]
        at += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, at
        shift += 7
    return 0, -1


@helper
def _tag(buf: ReadBytes, at: int, end: int) -> tuple[int, int]:
    """A field's tag, as `_varint`; protobuf refuses one of more than five bytes."""
    return _varint(buf, at, end, 5)


@inline_helper
def _next_field(buf: ReadBytes, at: int, end: int, last: int, most: int, repeated: int) -> tuple[int, int, int]:
    """The number and wire type of the field whose tag is at `at`, and where its value starts; that position is -1 for
    a tag protobuf refuses (`_tag`) or a field out of the order protobuf writes: numbers from 1 to `most`, rising after
    `last` (the one before), each once but `repeated`, whose fields come in a row."""
    tag, at = _tag(buf, at, end)
    num = tag >> 3
    if at < 0 or num < 1 or num > most or (num <= last and not (num == last == repeated)):
        return 0, 0, -1
    return num, tag & 7, at


@helper
def _scalar(buf: ReadBytes, at: int, end: int, how: int) -> tuple[int, int]:
    """A varint field's value as protobuf gives it for type `how`, and the position after it (-1 for a varint this
    reader leaves to protobuf)."""
    v, at = _varint(buf, at, end)
    if at < 0 or (how != _UINT64 and v >= _BELOW[how]):
        return 0, -1
    if how == _SINT32:
        return (v >> 1) ^ -(v & 1), at
    return v, at


@helper
def _length(buf: ReadBytes, at: int, end: int) -> tuple[int, int]:
    """A length-delimited field's length and where its bytes start (-1 if they run past `end`, or if the length takes
    more than five bytes, which protobuf refuses as it refuses such a tag)."""
    n, at = _varint(buf, at, end, 5)
    if at < 0 or n > end - at:  # (not at + n > end: a length near 2**63 would wrap)
        return 0, -1
    return n, at


@helper
def _fields(buf: ReadBytes, at: int, end: int, how: int, count: int, out: IntArray, slot: int) -> bool:
    """A message of `count` (at most) varint fields of type `how` (Position3D, VehicleSize, EmergencyExt,
    PositionalAccuracy, IntersectionRef) into out[slot:slot + count]; False for a layout left to protobuf."""
    last = 0
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, count, 0)
        if at < 0 or wire != 0:
            return False
        last = num
        out[slot + num - 1], at = _scalar(buf, at, end, how)
        if at < 0:
            return False
    return True


@helper
def _header(buf: ReadBytes, out: IntArray, body_tag: int) -> tuple[int, int]:
    """The frame's header (field 1) into out[SENDER_AT:SIM_MS + 1], then the body: where its fields start and end,
    if it is the field whose tag is `body_tag` and nothing follows it; (-1, -1) for anything else."""
    end = len(buf)
    if end < 2 or buf[0] != 0x0A:
        return -1, -1
    n, at = _length(buf, 1, end)
    if at < 0:
        return -1, -1
    h_end = at + n
    last = 0
    while at < h_end:
        num, wire, at = _next_field(buf, at, h_end, last, 5, 0)
        if at < 0:
            return -1, -1
        last = num
        if num == 1:
            n, at = _length(buf, at, h_end)
            if wire != 2 or at < 0:
                return -1, -1
            out[SENDER_AT], out[SENDER_END] = at, at + n
            at += n
            continue
        if wire != 0:
            return -1, -1
        out[(KIND, SEQ, GEN_US, SIM_MS)[num - 2]], at = _scalar(buf, at, h_end, _ENUM if num == 2 else (_UINT32 if num == 3 else _UINT64))
        if at < 0:
            return -1, -1
    if at >= end or buf[at] != body_tag:  # the body, length-delimited, and nothing after it
        return -1, -1
    n, at = _length(buf, at + 1, end)
    if at < 0 or at + n != end:
        return -1, -1
    return at, end


@helper
def _bsm(buf: ReadBytes, at: int, end: int, out: IntArray) -> int:
    """The BSM's fields, from `at` to `end`, into `out`; 1, or 0 for a layout this reader leaves to protobuf."""
    last = 0
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, 14, 0)
        if at < 0:
            return 0
        last = num
        if num in (1, 9, 12, 14):  # the sub-messages
            n, at = _length(buf, at, end)
            if wire != 2 or at < 0:
                return 0
            if num == 1:
                ok = _fields(buf, at, at + n, _SINT32, 3, out, LAT)
            elif num == 9:
                ok = _fields(buf, at, at + n, _UINT32, 3, out, WIDTH)
            elif num == 12:
                out[EMERGENCY] = 1
                ok = _fields(buf, at, at + n, _BOOL, 3, out, SIREN)
            else:
                out[ACCURACY] = 1
                ok = _fields(buf, at, at + n, _UINT32, 3, out, MAJOR)
            if not ok:
                return 0
            at += n
            continue
        if wire != 0:
            return 0
        if num in (4, 5, 6):
            how = _SINT32
        elif num in (7, 10):
            how = _ENUM
        elif num == 8:
            how = _BOOL
        else:  # 2, 3, 11, 13
            how = _UINT32
        # field 2..13's slot (1, 9, 12 and 14 are the sub-messages above)
        out[(SPEED, HEADING, ALONG, ALAT, YAW, TRANSMISSION, BRAKE, 0, VCLASS, EVENTS, 0, LIGHTS)[num - 2]], at = _scalar(buf, at, end, how)
        if at < 0:
            return 0
    return 1


@helper
def _participant(buf: ReadBytes, at: int, end: int, row: IntArray) -> bool:
    """One RSM participant's fields, from `at` to `end`, into `row`; False for a layout left to protobuf."""
    last = 0
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, 10, 0)
        if at < 0:
            return False
        last = num
        if num in (4, 5, 8, 10):  # the string and the sub-messages
            n, at = _length(buf, at, end)
            if wire != 2 or at < 0:
                return False
            if num == 4:
                row[P_VID_AT], row[P_VID_END] = at, at + n
                ok = True
            elif num == 5:
                ok = _fields(buf, at, at + n, _SINT32, 3, row, P_LAT)
            elif num == 8:
                ok = _fields(buf, at, at + n, _UINT32, 3, row, P_WIDTH)
            else:
                row[P_INTERSECTION] = 1
                ok = _fields(buf, at, at + n, _UINT32, 2, row, P_REGION)
            if not ok:
                return False
            at += n
            continue
        if wire != 0:
            return False
        # field 1..9's slot (4, 5 and 8 are above)
        row[(P_TYPE, P_PTC, P_SOURCE, 0, 0, P_SPEED, P_HEADING, 0, P_LANE)[num - 1]], at = _scalar(
            buf, at, end, _ENUM if num in (1, 3) else _UINT32)
        if at < 0:
            return False
    return True


@kernel
def bsm_frame(buf: ReadBytes, out: IntArray) -> int:
    """1 if `buf` is a BSM frame in the layout protobuf writes (the module's doc), with its values in `out` (zero where
    a field is absent, as protobuf reads it; EMERGENCY and ACCURACY 1 where that sub-message is present); else 0, and
    `out` is not to be read."""
    return _bsm_frame(buf, out)


@kernel
def bsm_frames(buf: ReadBytes, starts: IntArray, out: IntMatrix, ok: IntArray) -> None:
    """`bsm_frame` of many frames in one call: frame i is buf[starts[i]:starts[i + 1]], its values go to out[i] and
    its answer to ok[i]. (A receiver's BSMs of one step, read together: a call from Python costs more than a frame's
    read.)"""
    for i in range(len(starts) - 1):
        ok[i] = _bsm_frame(buf[starts[i]:starts[i + 1]], out[i])


@helper
def _bsm_frame(buf: ReadBytes, out: IntArray) -> int:
    out[:] = 0
    at, end = _header(buf, out, 0x52)  # field 10
    if at < 0:
        return 0
    return _bsm(buf, at, end, out)


@kernel
def rsm_frame(buf: ReadBytes, out: IntArray, parts: IntMatrix) -> int:
    """How many participants an RSM frame in the layout protobuf writes has, with its header and ref_pos in `out` and
    each participant in a row of `parts` (zero where a field is absent; `parts` needs a row for every two bytes of
    `buf`); -1 for anything else, and neither is to be read."""
    out[:] = 0
    at, end = _header(buf, out, 0x72)  # field 14
    if at < 0:
        return -1
    k = 0
    last = 0
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, 2, 2)  # ref_pos once, then the participants
        if at < 0 or wire != 2:
            return -1
        last = num
        n, at = _length(buf, at, end)
        if at < 0:
            return -1
        if num == 1:
            if not _fields(buf, at, at + n, _SINT32, 3, out, RSM_LAT):
                return -1
        else:
            parts[k, :] = 0
            if not _participant(buf, at, at + n, parts[k]):
                return -1
            k += 1
        at += n
    return k


@helper
def _event(buf: ReadBytes, at: int, end: int, row: IntArray) -> bool:
    """A movement event's fields (its state, then its timing) into `row`, checked as the others are; False for a layout
    left to protobuf (so the bytes `codec._event` parses alone are ones protobuf writes)."""
    row[:] = 0
    last = 0
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, 2, 0)
        if at < 0:
            return False
        last = num
        if num == 1:
            row[E_STATE], at = _scalar(buf, at, end, _ENUM)
            if wire != 0 or at < 0:
                return False
            continue
        n, at = _length(buf, at, end)
        if wire != 2 or at < 0 or not _fields(buf, at, at + n, _UINT32, 5, row, E_TIMING):
            return False
        at += n
    return True


@helper
def _state(buf: ReadBytes, at: int, end: int, row: IntArray, events: IntMatrix, k: int) -> int:
    """One movement state's fields into `row`, its events into the rows of `events` from `k` (each with where its bytes
    start and end: `codec._event` keeps decoded events by them); the next free row of `events`, or -1 for a layout
    left to protobuf."""
    last = 0
    first = k
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, 2, 2)  # the group once, then the events
        if at < 0:
            return -1
        last = num
        if num == 1:
            row[S_GROUP], at = _scalar(buf, at, end, _UINT32)
            if wire != 0 or at < 0:
                return -1
            continue
        n, at = _length(buf, at, end)
        if wire != 2 or at < 0 or not _event(buf, at, at + n, events[k]):
            return -1
        events[k, E_AT], events[k, E_END] = at, at + n
        k += 1
        at += n
    row[S_EVENTS] = k - first
    return k


@helper
def _intersection(buf: ReadBytes, at: int, end: int, row: IntArray, states: IntMatrix, events: IntMatrix, ks: int,
                  ke: int) -> tuple[int, int]:
    """One IntersectionState's fields into `row`, its states into the rows of `states` from `ks` (their events from
    `ke`); the next free rows of both, or (-1, -1) for a layout left to protobuf."""
    last = 0
    first = ks
    while at < end:
        num, wire, at = _next_field(buf, at, end, last, 7, 7)  # each once, then the states
        if at < 0:
            return -1, -1
        last = num
        if num in (1, 2, 7):
            n, at = _length(buf, at, end)
            if wire != 2 or at < 0:
                return -1, -1
            if num == 1:
                if not _fields(buf, at, at + n, _UINT32, 2, row, I_REGION):
                    return -1, -1
            elif num == 2:
                row[I_NAME_AT], row[I_NAME_END] = at, at + n
            else:
                states[ks, :] = 0
                ke = _state(buf, at, at + n, states[ks], events, ke)
                if ke < 0:
                    return -1, -1
                ks += 1
            at += n
            continue
        if wire != 0:
            return -1, -1
        row[(I_REVISION, I_STATUS, I_TIMESTAMP, I_PLAN)[num - 3]], at = _scalar(buf, at, end, _UINT64 if num == 5 else _UINT32)
        if at < 0:
            return -1, -1
    row[I_STATES] = ks - first
    return ks, ke


@kernel
def spat_frame(buf: ReadBytes, out: IntArray, inters: IntMatrix, states: IntMatrix, events: IntMatrix) -> int:
    """1 if `buf` is a SPaT frame in the layout protobuf writes, with its header, where its Spat's fields start and its
    counts in `out`, and its intersections, states and events in the first rows of the matrices (each needs a row for
    every two bytes of `buf`); else 0, and none is to be read."""
    out[:] = 0
    at, end = _header(buf, out, 0x62)  # field 12
    if at < 0:
        return 0
    out[SPAT_AT] = at
    ki = ks = ke = 0
    while at < end:
        tag, at = _tag(buf, at, end)
        if at < 0 or tag != 0x0A:  # field 1, length-delimited, repeated: the intersections
            return 0
        n, at = _length(buf, at, end)
        if at < 0:
            return 0
        inters[ki, :] = 0
        ks, ke = _intersection(buf, at, at + n, inters[ki], states, events, ks, ke)
        if ks < 0:
            return 0
        ki += 1
        at += n
    out[N_INTERSECTIONS], out[N_STATES], out[N_EVENTS] = ki, ks, ke
    return 1


# The ranges `spat_in_range` and `rsm_in_range` hold values to: the codec's, for its common path (`codec._geo_in_range`,
# `_participant_in_range`, `_intersection_state`, `_new_event`); tests/test_codec.py holds them to the codec's
_MOST_TENTHS, _TIME_NA, _ELEV_NA = 36000, 36001, -4096


@helper
def _known(value: int, members: BoolArray) -> bool:
    """Whether an enum's wire value is one of its members (`members[value]`)."""
    return value < len(members) and members[value]


@helper
def _ascii(buf: ReadBytes, at: int, end: int) -> bool:
    """Whether buf[at:end] is ASCII (so UTF-8, as it is decoded; other UTF-8 is left to the codec's full decode)."""
    for i in range(at, end):  # noqa: SIM110 (a loop numba compiles; all() of a generator it does not)
        if buf[i] >= 0x80:
            return False
    return True


@helper
def _geo(lat: int, lon: int, elev: int) -> bool:
    """`codec._geo_in_range` of a Position3D's values."""
    return (-900_000_000 <= lat <= 900_000_000 and -1_799_999_999 <= lon <= 1_800_000_000
            and (-4095 <= elev <= 61439 or elev == _ELEV_NA))


@kernel
def spat_in_range(buf: ReadBytes, out: IntArray, inters: IntMatrix, states: IntMatrix, events: IntMatrix,
                  light_states: BoolArray, status_bits: int) -> int:
    """After `spat_frame` read a frame into these arrays: 1 if every value is in the range the codec's common path
    takes (each intersection's id, revision, status bits (`status_bits` the known ones), plan and an ASCII name; each
    state's group; each event's state (`light_states`: the known ones) and timing), so that `codec.decode` would build
    the frame from them; else 0 (what the codec then decodes in full, to build it or name what is wrong)."""
    for i in range(out[N_INTERSECTIONS]):
        row = inters[i]
        if (row[I_REGION] > 65535 or row[I_ID] > 65535 or row[I_REVISION] > 127 or row[I_STATUS] & ~status_bits
                or row[I_PLAN] > 65535 or not _ascii(buf, row[I_NAME_AT], row[I_NAME_END])):
            return 0
    for i in range(out[N_STATES]):
        if not 1 <= states[i, S_GROUP] <= 255:
            return 0
    for i in range(out[N_EVENTS]):
        ev = events[i]
        if not _known(ev[E_STATE], light_states) or ev[E_TIMING + 4] > 15:
            return 0
        for t in range(E_TIMING, E_TIMING + 4):
            if ev[t] > _MOST_TENTHS and ev[t] != _TIME_NA:
                return 0
    return 1


@kernel
def rsm_in_range(buf: ReadBytes, out: IntArray, parts: IntMatrix, n: int, types: BoolArray, sources: BoolArray) -> int:
    """After `rsm_frame` read a frame of `n` participants into these arrays: 1 if its ref_pos and every participant's
    values are in the range the codec's common path takes (`codec._participant_in_range`: `types` and `sources` the
    known enum values) and every vehicle id is ASCII, so that `codec.decode` would build the frame from them; else 0."""
    if not _geo(out[RSM_LAT], out[RSM_LON], out[RSM_ELEV]):
        return 0
    for i in range(n):
        p = parts[i]
        if not (_known(p[P_TYPE], types) and _known(p[P_SOURCE], sources) and _geo(p[P_LAT], p[P_LON], p[P_ELEV])
                and p[P_PTC] <= 65535 and p[P_SPEED] <= 8190 and p[P_HEADING] <= 28799 and p[P_WIDTH] <= 1023
                and p[P_LENGTH] <= 4095 and p[P_LANE] <= 255 and p[P_REGION] <= 65535 and p[P_ID] <= 65535
                and _ascii(buf, p[P_VID_AT], p[P_VID_END])):
            return 0
    return 1
