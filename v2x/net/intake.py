"""A receiver's BSMs taken by compiled code: what `Reception.accept_bsm` and a service's handling do with each, for the
common case, in one call for a run of them.

An RSU hears every BSM of the tiles its radio covers and the cloud every vehicle's, ten a second each: in Python each
cost about 9 us to decode, judge, measure and handle (docs/scale.md), most of it neither the objects nor the calls
between them but Python's own work per message. Here one numba loop takes a run of a step's BSMs, as `wire_read` read
them, and for each row decides what `accept_bsm` would and does it:

- its bytes are a BSM frame the codec's common path reads, every value in range (`codec._bsm_in_range`'s checks);
- its topic is a *slot*: a BSM topic whose stream this receiver has open, whose sender (the topic's last level) it
  accepted a BSM from before, as a vehicle (so the trust rules' verdict on the topic, sender and kind is known: a
  BSM on a vehicle's topic must come from that vehicle, as a vehicle); the row names the same sender and kind;
- it is not from the future (the clock skew allowed), not retained, not due the silent streams' sweep, not expired;
- its sequence number is the next of its stream, or a few past it (`Stream.see`'s common case: NEW).

The first row that is not all of these stops the loop: the caller takes that message the one-by-one way (`accept`,
which counts and logs whatever is wrong with it), brings the slots up to date with what that did to the streams, and
calls the loop again from the next row. So every message is taken in its order, by the one path or the other, with
the same checks, counts and outcomes (tests/test_intake.py holds the two to the same figures). A taken row's
stream and latency go to `Measurements` as `record` would put them; its values, in the `Bsm`'s own units (`VALUES`),
go to the service (an RSU's picture, the cloud's table) without a `Bsm` object.

Only for a receiver that requires no signature and impairs no link (`Service.intake`): a signature must be checked
message by message, an impaired link draws each message's fate from a hash of its bytes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numba
import numpy as np
import numpy.typing as npt

from v2x.core import codec, wire_read
from v2x.core import messages as m
from v2x.core.codec import (
    ACCURACY_M,
    ACCURACY_NA,
    CM_M,
    ELEVATION_M,
    ELEVATION_NA,
    HEADING_DEG,
    LATLON_DEG,
    ORIENTATION_NA,
    SPEED_MPS,
)
from v2x.core.geo import LocalFrame
from v2x.core.jit import FloatArray, FloatMatrix, IntArray, IntMatrix, ReadBytes, kernel
from v2x.core.metrics import DUP_WINDOW, JUMP_SLACK, SEQ_MOD, Stream
from v2x.core.topics import kind_of
from v2x.net.reception import Decoded, Reception, decoded

if TYPE_CHECKING:
    from v2x.net.transport import Message

ByteMatrix = Annotated[npt.NDArray[np.uint8], numba.uint8[:, ::1]]

# what the kernel compiles in from other files, and its hash (`jit.fingerprint`: numba's cache knows only this file)
_VEHICLE = int(m.SenderKind.VEHICLE)
COMPILED_FROM = (ACCURACY_M, ACCURACY_NA, CM_M, ELEVATION_M, ELEVATION_NA, HEADING_DEG, LATLON_DEG, ORIENTATION_NA, SPEED_MPS,
                 JUMP_SLACK, SEQ_MOD, _VEHICLE, *(getattr(wire_read, k) for k in (
                     "SENDER_AT", "SENDER_END", "KIND", "SEQ", "GEN_US", "LAT", "LON", "ELEV", "SPEED", "HEADING", "ALONG", "ALAT",
                     "YAW", "TRANSMISSION", "WIDTH", "LENGTH", "HEIGHT", "VCLASS", "EVENTS", "LIGHTS", "ACCURACY", "MAJOR",
                     "MINOR", "ORIENTATION")))
COMPILED_IN = "d962c2bac155643e"

# a taken row's values, in the `Bsm`'s own units (an elevation or accuracy not stated is NaN), and its position in the
# receiver's local metres (`LocalFrame.to_local`): `values_of` of a `Bsm`
LAT_DEG, LON_DEG, ELEVATION, SPEED, HEADING, WIDTH, LENGTH, ACCURACY, X, Y = range(10)
VALUES = 10
# where a taken row is against the receiver's radio range (`BsmIntake.radio`): out of it, within it, or so near its
# edge that numpy's hypot and Python's could disagree in their last bit (Python's to decide)
OUT, IN, EDGE = 0, 1, 2
_EDGE = 1e-9  # of the range
NAME_BYTES = 64  # a slot's sender id in bytes at most (a longer one is never a slot: its BSMs go one by one)
_NEVER = 2**62  # a limit no time reaches: no sweep due, no expiry, any clock skew

Values = tuple[float, float, float, float, float, float, float, float, float, float]


def values_of(bsm: m.Bsm, frame: LocalFrame) -> Values:
    """A `Bsm`'s `VALUES` (x and y in `frame`), as the kernel gives them for its wire form (the same floats: the codec's
    products, and `to_local`'s)."""
    p, acc = bsm.position, bsm.accuracy
    x, y = frame.to_local(p.lat_deg, p.lon_deg)
    return (p.lat_deg, p.lon_deg, math.nan if p.elevation_m is None else p.elevation_m, bsm.speed_mps, bsm.heading_deg,
            bsm.width_m, bsm.length_m, math.nan if acc is None else acc.semi_major_m, x, y)


def position_of(v: Sequence[float]) -> m.GeoPoint:
    """The position of `VALUES`."""
    e = v[ELEVATION]
    return m.GeoPoint(v[LAT_DEG], v[LON_DEG], None if math.isnan(e) else e)


_TRANSMISSIONS = np.zeros(max(m.Transmission) + 1, np.int64)
_TRANSMISSIONS[[int(t) for t in m.Transmission]] = 1
_CLASSES = np.zeros(max(m.VehicleClass) + 1, np.int64)
_CLASSES[[int(c) for c in m.VehicleClass]] = 1


@kernel
def take_bsms(
    buf: ReadBytes, starts: IntArray, rows: IntMatrix, ok: IntArray, slots: IntArray, rx_us: IntArray, first: int,
    skew_us: int, max_age_us: int, sweep_us: int, names: ByteMatrix, name_len: IntArray, highest: IntArray,
    transmissions: IntArray, classes: IntArray, frame: FloatArray, taken_highest: IntArray, values: FloatMatrix,
    radio: IntArray, stop: IntArray,
) -> int:
    """Take rows `first`, `first + 1`, ... (the module's doc) until one that is not the common case: its index (or the
    number of rows). Row i: frame buf[starts[i]:starts[i + 1]], read by `wire_read.bsm_frames` to rows[i] and ok[i];
    slots[i] its topic's slot (-1: none, or not to be taken here), rx_us[i] when it arrived. A slot's sender's bytes
    are names[s, :name_len[s]], the highest number of its stream highest[s], stepped for each row taken, whose new
    highest goes to taken_highest[i], its `VALUES` to values[i] and where it is against the radio range to radio[i]
    (`frame`: the local frame's origin (lat, lon) and metres per degree (lat, lon), then the radio's centre (x, y) and
    range). stop[0] is 1 if the row it stopped at is one to take but for the silent streams' sweep (due from `sweep_us`),
    else 0."""
    stop[0] = 0
    n = len(ok)
    for i in range(first, n):
        s = slots[i]
        if s < 0 or ok[i] != 1:
            return i
        r = rows[i]
        g, rx = r[wire_read.GEN_US], rx_us[i]
        if g - rx > skew_us or rx - g > max_age_us or r[wire_read.KIND] != _VEHICLE:
            return i
        at, end = starts[i] + r[wire_read.SENDER_AT], starts[i] + r[wire_read.SENDER_END]
        if end - at != name_len[s]:
            return i
        for k in range(end - at):
            if buf[at + k] != names[s, k]:
                return i
        lat, lon, elev = r[wire_read.LAT], r[wire_read.LON], r[wire_read.ELEV]
        speed, heading, width, length = r[wire_read.SPEED], r[wire_read.HEADING], r[wire_read.WIDTH], r[wire_read.LENGTH]
        gear, vclass, major, minor = r[wire_read.TRANSMISSION], r[wire_read.VCLASS], r[wire_read.MAJOR], r[wire_read.MINOR]
        if not (  # `codec._bsm_in_range`'s checks
            -900_000_000 <= lat <= 900_000_000 and -1_799_999_999 <= lon <= 1_800_000_000
            and (-4095 <= elev <= 61439 or elev == ELEVATION_NA) and 0 <= speed <= 8190 and 0 <= heading <= 28799
            and -2000 <= r[wire_read.ALONG] <= 2000 and -2000 <= r[wire_read.ALAT] <= 2000 and -32767 <= r[wire_read.YAW] <= 32767
            and width <= 1023 and length <= 4095 and r[wire_read.HEIGHT] <= 635
            and 0 <= gear < len(transmissions) and transmissions[gear] == 1 and 0 <= vclass < len(classes) and classes[vclass] == 1
            and r[wire_read.EVENTS] == 0 and r[wire_read.LIGHTS] == 0
            and (r[wire_read.ACCURACY] == 0 or (major <= ACCURACY_NA and minor <= ACCURACY_NA and r[wire_read.ORIENTATION] <= ORIENTATION_NA))
        ):
            return i
        ahead = (r[wire_read.SEQ] - highest[s]) % SEQ_MOD
        if not 0 < ahead <= JUMP_SLACK:
            return i
        if rx >= sweep_us:  # all but the sweep say take it: the caller sweeps, then calls again from here
            stop[0] = 1
            return i
        highest[s] += ahead
        taken_highest[i] = highest[s]
        v = values[i]
        v[0] = lat * LATLON_DEG
        v[1] = lon * LATLON_DEG
        v[2] = math.nan if elev == ELEVATION_NA else elev * ELEVATION_M
        v[3] = speed * SPEED_MPS
        v[4] = heading * HEADING_DEG
        v[5] = width * CM_M
        v[6] = length * CM_M
        v[7] = major * ACCURACY_M if r[wire_read.ACCURACY] == 1 and major != ACCURACY_NA and minor != ACCURACY_NA else math.nan
        v[8] = (v[1] - frame[1]) * frame[3]  # `LocalFrame.to_local`
        v[9] = (v[0] - frame[0]) * frame[2]
        d, reach = math.hypot(v[8] - frame[4], v[9] - frame[5]), frame[6]
        radio[i] = IN if reach == math.inf or d < reach * (1 - _EDGE) else (OUT if d > reach * (1 + _EDGE) else EDGE)
    return n


@dataclass
class Batch:
    """A step's arrivals as the kernel reads them, and what it made of those it took. A row whose topic is no slot yet
    has a code of its topic's in `slots` instead: -2 - its index in `unknown` (-1: a retained message, never taken)."""

    msgs: Sequence[Message]
    buf: npt.NDArray[np.uint8]
    starts: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    ok: npt.NDArray[np.int64]
    slots: npt.NDArray[np.int64]
    unknown: dict[str, int]
    rx_us: npt.NDArray[np.int64]
    taken_highest: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    radio: npt.NDArray[np.int64]
    skew_us: int
    max_age_us: int
    stop: npt.NDArray[np.int64]  # the kernel's (`take_bsms`)


class BsmIntake:
    """A receiver's slots (the module's doc) and the loop over them: one for each `Reception` that may use it. A slot
    whose stream is closed (its sender silent, `Measurements.close_silent`) is let go, for another topic to use: what
    it keeps grows with the senders heard lately, as `Measurements` does."""

    def __init__(self, reception: Reception, frame: LocalFrame, radio: tuple[float, float, float] | None = None) -> None:
        """`frame`: the receiver's local frame, for each row's x and y; `radio`: (x, y, range) of its radio, for each
        row's `OUT`, `IN` or `EDGE` (None: every row `IN`)."""
        self.reception = reception
        (lat_m, lon_m), (x, y, r) = frame.m_per_deg, radio or (0.0, 0.0, math.inf)
        self.frame = np.array([frame.lat0_deg, frame.lon0_deg, lat_m, lon_m, x, y, r], np.float64)
        self.slot_of: dict[str, int] = {}  # topic -> slot
        self.topics: list[str] = []  # by slot ("": free)
        self.senders: list[str] = []  # by slot: the sender its topic names
        self.streams: list[Stream | None] = []  # by slot: its stream in `Measurements` (None: free)
        self.free: list[int] = []
        self.names = np.zeros((0, NAME_BYTES), np.uint8)
        self.name_len = np.zeros(0, np.int64)
        self.highest = np.zeros(0, np.int64)
        self._sweeps = reception.measure.sweeps
        self._ok = np.empty(0, np.int64)
        self._grow(64)
        self._stop = np.zeros(1, np.int64)

    def read(self, msgs: Sequence[Message]) -> Batch:
        """`msgs` read by `wire_read.bsm_frames` in one call, each with its topic's slot and its time of arrival (the
        arrays the kernel writes are this intake's own, reused: a batch is read by one `take` at a time)."""
        n = len(msgs)
        if n > len(self._ok):
            self._grow(n)
        payloads = [msg.payload for msg in msgs]
        starts = np.fromiter(itertools.accumulate(map(len, payloads), initial=0), np.int64, n + 1)
        buf = np.frombuffer(b"".join(payloads), np.uint8)
        rows, ok = self._rows[:n], self._ok[:n]
        wire_read.bsm_frames(buf, starts, rows, ok)
        get, unknown = self.slot_of.get, dict[str, int]()
        slots = [-1 if msg.retain else get(msg.topic, -2) for msg in msgs]
        if -2 in slots:  # topics no slot yet, each its code: the first BSM of a sender, any other message (the cloud's SPaT)
            slots = [-2 - unknown.setdefault(msg.topic, len(unknown)) if s == -2 else s for msg, s in zip(msgs, slots, strict=True)]
        rec = self.reception
        max_age = rec.max_age_s.get("bsm")
        return Batch(msgs, buf, starts, rows, ok, np.array(slots, np.int64), unknown, rec.clock.receipts_us(msgs),
                     self._taken_highest[:n], self._values[:n], self._radio[:n],
                     _NEVER if rec.trust is None else rec.trust.clock_skew_us,
                     _NEVER if max_age is None else math.floor(max_age * 1e6), self._stop)

    def _grow(self, n: int) -> None:
        n = max(n, 2 * len(self._ok))
        self._rows, self._ok = np.empty((n, wire_read.SLOTS), np.int64), np.empty(n, np.int64)
        self._taken_highest, self._values, self._radio = np.empty(n, np.int64), np.empty((n, VALUES), np.float64), np.empty(n, np.int64)

    def read_one(self, b: Batch, i: int) -> Decoded | None:
        """What row `i` decodes to if it is a BSM frame the compiled reader read (as `Reception.read_bsms` gives it),
        else None: for its one-by-one way, without reading its bytes again."""
        frame = codec.bsm_of_row(b.msgs[i].payload, b.rows[i].tolist()) if b.ok[i] == 1 else None
        return None if frame is None else decoded(frame)

    def take(self, b: Batch, first: int) -> int:
        """Take rows `first`, ... as `Reception.accept_bsm` would: each one's stream stepped, its latency put aside, an
        outcome "accepted"; the index of the first row not taken (or the number of rows)."""
        rec = self.reception
        measure = rec.measure
        self._swept(b, first - 1)  # (only `accept` sweeps: a sweep of any other caller's, just in case)
        end = take_bsms(
            b.buf, b.starts, b.rows, b.ok, b.slots, b.rx_us, first, b.skew_us, b.max_age_us, min(measure.next_sweep_us, _NEVER),
            self.names, self.name_len, self.highest, _TRANSMISSIONS, _CLASSES, self.frame, b.taken_highest, b.values, b.radio,
            b.stop)
        if end == first:
            return end
        gens = b.rows[first:end, wire_read.GEN_US]
        streams = self.streams
        for s, h, g in zip(b.slots[first:end].tolist(), b.taken_highest[first:end].tolist(), gens.tolist(), strict=True):
            st = streams[s]
            assert st is not None
            st.highest = h  # `Stream.see`'s common case
            st.recent[h] = g
            st.unique += 1
            if len(st.recent) > 2 * DUP_WINDOW:
                st.forget_old()
        measure.put_aside("bsm", rec.hop(m.SenderKind.VEHICLE), (b.rx_us[first:end] - gens).tolist(), gens.tolist())
        rec.outcomes["accepted"] += end - first
        return end

    def sweep(self, b: Batch, i: int) -> bool:
        """If `take` stopped at row `i` only because the silent streams' sweep is due (`Measurements.close_silent`, which
        `accept` calls for each message it measures), sweep as `accept` would for that row, and say so: the caller
        takes on from row `i`."""
        if not b.stop[0]:
            return False
        self.reception.measure.close_silent(int(b.rx_us[i]))
        self._swept(b, i - 1)
        return True

    def after(self, b: Batch, i: int) -> None:
        """After row `i` was taken the one-by-one way: its topic a slot if the receiver has just begun a stream of a BSM
        its topic's sender sent, and every slot's stream as `Measurements` now has it (a sweep may have closed some, a
        restart begun another), the rows after `i` renumbered to match."""
        rec, topic = self.reception, b.msgs[i].topic
        self._swept(b, i)
        slot = self.slot_of.get(topic)
        if slot is not None:
            self._resync(b, i, slot)
            return
        sender = topic.rsplit("/", 1)[-1]
        stream = rec.measure.streams.get((rec.owner, topic, sender))
        if (stream is None or kind_of(topic) != "bsm" or sender == rec.owner or len(sender.encode()) > NAME_BYTES
                or (rec.shared_prefix is not None and topic.startswith(rec.shared_prefix))
                or (rec.trust is not None and rec.trust.judged(topic, _vehicle_bsm(sender)) is not None)):
            return
        s = self._add(topic, sender, stream)
        code = b.unknown.get(topic)
        if code is not None:
            rest = b.slots[i + 1 :]
            rest[rest == -2 - code] = s

    def _swept(self, b: Batch, i: int) -> None:
        """If `Measurements.close_silent` has looked since the last call, every slot brought up to date with it (rows
        after row `i` renumbered)."""
        sweeps = self.reception.measure.sweeps
        if sweeps != self._sweeps:
            self._sweeps = sweeps
            for s, topic in enumerate(self.topics):
                if topic:
                    self._resync(b, i, s)

    def _add(self, topic: str, sender: str, stream: Stream) -> int:
        if self.free:
            s = self.free.pop()
            self.topics[s], self.senders[s], self.streams[s] = topic, sender, stream
        else:
            s = len(self.topics)
            if s == len(self.highest):  # room for more, doubled
                grow = max(2 * s, 64)
                self.names = np.concatenate([self.names, np.zeros((grow - s, NAME_BYTES), np.uint8)])
                self.name_len = np.concatenate([self.name_len, np.full(grow - s, -1, np.int64)])
                self.highest = np.concatenate([self.highest, np.zeros(grow - s, np.int64)])
            self.topics.append(topic)
            self.senders.append(sender)
            self.streams.append(stream)
        raw = sender.encode()
        self.slot_of[topic] = s
        self.names[s, :] = 0
        self.names[s, : len(raw)] = np.frombuffer(raw, np.uint8)
        self.name_len[s] = len(raw)
        self.highest[s] = stream.highest
        return s

    def _resync(self, b: Batch, i: int, s: int) -> None:
        """Slot `s`'s stream as `Measurements` has it now; if gone (closed), the slot let go, and its rows after row `i`
        left to go one by one (the first of them begins a stream, and a slot, again)."""
        rec = self.reception
        stream = rec.measure.streams.get((rec.owner, self.topics[s], self.senders[s]))
        if stream is not None:
            self.streams[s] = stream
            self.highest[s] = stream.highest
            return
        del self.slot_of[self.topics[s]]
        self.topics[s], self.senders[s], self.streams[s] = "", "", None
        self.name_len[s] = -1  # no row's sender matches
        self.free.append(s)
        rest = b.slots[i + 1 :]
        rest[rest == s] = -1


def _vehicle_bsm(sender: str) -> m.Frame:
    """A BSM frame from `sender` as a vehicle: what the trust rules judge a slot's rows by (their verdict depends on
    the topic, the sender and its kind alone)."""
    return m.Frame(m.Header(sender, m.SenderKind.VEHICLE, 0, 0, 0), m.Bsm(position=m.GeoPoint(0.0, 0.0), speed_mps=0.0, heading_deg=0.0))
