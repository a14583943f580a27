"""What every receiver measures: latency per hop and message type, loss and duplicates.

- Latency is receipt time minus the header's generation time, in whole microseconds, kept in
  a log-linear histogram (the HdrHistogram layout with 3 significant digits): exact below
  2,048 us, within 1/1024 above, in memory that grows with the spread of values, never
  with their number. Histograms merge, so a report can add up every receiver's.
- Loss and duplicates come from sequence numbers: a sender numbers each stream (one message
  type on one topic) 0, 1, 2... (modulo 2**32); a receiver keeps, per stream, the first and highest number
  it saw and the numbers it saw recently. A number further ahead than the sender could have
  numbered since the highest (by their generation times) is not a gap of lost messages but another
  stream under the same name (a forgery, or a second sender): it starts a new stream, counted as a jump.
- Latency over time: per hop and sim second of generation, a coarse histogram (buckets 10% wide),
  enough to draw p50 and p99 against time in memory that grows with the run's length only: a second
  more than OPEN_S behind the newest is kept as a compact array (about 300 bytes, a fifth of a dict's).
- A receiver takes a latency by putting it aside with its generation time; a few thousand at a time, or when the
  figures are read, they are folded into the histograms at once (numpy), as each would have been on its own.
- Hops are named "<sender kind>-><receiver kind>": vehicle->rsu, vehicle->cloud, rsu->vehicle,
  rsu->cloud, cloud->rsu, cloud->vehicle.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from v2x.core.scenario import Scenario

_EXACT = 2048  # values below this are their own bucket
_HALF = 1024  # sub-buckets per power of two above it

DUP_WINDOW = 4096  # sequence numbers remembered per stream, to tell a duplicate from a late arrival
SEQ_MOD = 2**32  # senders number each stream modulo this (v2x.net.station.Station.encode)
# A station numbers a stream at most once per step, and no scenario's step is shorter than its schema allows
# (Scenario.step_s, at least 0.01 s): 100 numbers per second of the sender's clock at the most. A number further
# ahead of the highest than that rate allows over the generation times between them (plus a little slack for a
# clock's resolution) was not numbered by the same sender: it begins a new stream (counted as a jump).
MAX_RATE_HZ = 1.0 / float(next(f for f in fields(Scenario) if f.name == "step_s").metadata["ge"])
JUMP_SLACK = 16  # sequence numbers beyond that rate still taken as the same stream
# A stream whose sender has said nothing for this long on the receiver's clock is closed and folded into the totals
# (its numbers remembered no more): its sender has gone (a vehicle left, or moved to another tile's topic). A minute
# is 600 periods of the 10 Hz streams (BSM, SPaT, RSM, which expire after 1 s) and six times the longest reconnect
# backoff (10 s): a stream only interrupted (a broker outage, a stalled receiver) stays open and its gap is counted as
# lost. A slower stream (plans, statuses, hazards) resuming after a minute starts a new stream, and a retained message
# delivered again after that counts as received again, not as a duplicate.
SILENT_S = 60.0  # [s]
SWEEP_EVERY_S = 1.0  # [s] how often streams are looked at for silence
OPEN_S = 2  # [s] seconds of a hop's latency series kept as dicts behind its newest; older ones are packed
FOLD_EVERY = 4096  # latencies a receiver puts aside before it folds them into its histograms at once
_EXACT_FLOAT = 2**53  # latencies and generation times below this are exact as floats, and folded as arrays


def bucket(v: int) -> int:
    if v < _EXACT:
        return v
    e = v.bit_length() - 11
    return _EXACT + (e - 1) * _HALF + ((v >> e) - _HALF)


def bucket_range(i: int) -> tuple[int, int]:
    """(lowest, highest) value of bucket i."""
    if i < _EXACT:
        return i, i
    e = (i - _EXACT) // _HALF + 1
    low = ((i - _EXACT) % _HALF + _HALF) << e
    return low, low + (1 << e) - 1


class Histogram:
    """Integer microseconds in log-linear buckets."""

    __slots__ = ("counts", "max", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max = 0

    def record(self, v_us: int, n: int = 1) -> None:
        """A value, `n` times."""
        v = int(v_us)
        if v < 0:
            v = 0
        i = v if v < _EXACT else bucket(v)  # most latencies: the value itself, without a call
        self.counts[i] = self.counts.get(i, 0) + n
        self.n += n
        if v > self.max:
            self.max = v

    def merge(self, other: Histogram) -> None:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.n += other.n
        self.max = max(self.max, other.max)

    def quantile_us(self, q: float) -> int:
        """The value at quantile q (0..1): the highest value of the bucket holding that rank, at most the max."""
        if self.n == 0:
            return 0
        rank = max(math.ceil(q * self.n), 1)
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(bucket_range(i)[1], self.max)
        return self.max

    def summary_ms(self) -> dict[str, float]:
        def ms(us: int) -> float:
            return round(us / 1000.0, 3)

        return {
            "count": self.n,
            "p50": ms(self.quantile_us(0.50)),
            "p90": ms(self.quantile_us(0.90)),
            "p99": ms(self.quantile_us(0.99)),
            "p999": ms(self.quantile_us(0.999)),
            "max": ms(self.max),
        }

    def to_json(self) -> dict[str, int]:
        return {str(i): c for i, c in sorted(self.counts.items())} | {"max": self.max}

    @classmethod
    def from_json(cls, d: Mapping[str, int]) -> Histogram:
        h = cls()
        for k, c in d.items():
            if k == "max":
                h.max = int(c)
            else:
                h.counts[int(k)] = int(c)
                h.n += int(c)
        return h


@dataclass
class Stream:
    """One sender's stream as one receiver sees it.

    A duplicate repeats a sequence number with the same generation time. The same number
    with another time, or a number far behind the highest, means the sender started over
    (a restart, or a Last Will built at connect time): the caller begins a new stream. A number
    further from the highest than one sender could have numbered in the time between their
    generation (MAX_RATE_HZ, plus JUMP_SLACK), or on the wrong side of it in time, is another sender
    under the same name (a forged frame, or the stream it interrupted resuming): ahead, a JUMP; behind,
    a RESTART; the caller begins a new stream either way rather than count the numbers between as lost.
    Numbers wrap at SEQ_MOD: `first` and `highest` count on past it, so a stream may outlast the wrap.
    """

    first: int
    highest: int
    unique: int = 1
    duplicates: int = 0
    recent: dict[int, int] = field(default_factory=dict)  # seq -> generation time [us]

    NEW: ClassVar[int] = 0
    DUPLICATE: ClassVar[int] = 1
    RESTART: ClassVar[int] = 2
    JUMP: ClassVar[int] = 3

    def see(self, seq: int, gen_us: int) -> int:
        """Record a sequence number: NEW, DUPLICATE, or RESTART or JUMP (not recorded here)."""
        ahead = (seq - self.highest) % SEQ_MOD  # the nearer way round the wrap, ahead or behind
        if 0 < ahead <= JUMP_SLACK:
            # the next number or a few past it (nearly every message): new, whatever the times say, as the general
            # path would find: no number above the highest is in `recent`, and one sender may number JUMP_SLACK ahead
            seq = self.highest = self.highest + ahead
            self.recent[seq] = gen_us
            self.unique += 1
            if len(self.recent) > 2 * DUP_WINDOW:
                self.forget_old()
            return Stream.NEW
        return self._see(self.highest + ahead if ahead < SEQ_MOD // 2 else self.highest + ahead - SEQ_MOD, gen_us)

    def _see(self, seq: int, gen_us: int) -> int:
        """`see` for any number, counted on from the highest (not modulo SEQ_MOD)."""
        seen = self.recent.get(seq)
        if seen is not None:
            if seen == gen_us:
                self.duplicates += 1
                return Stream.DUPLICATE
            return Stream.RESTART
        if seq < self.highest - DUP_WINDOW:
            return Stream.RESTART
        if not self._numbered_by_one(seq, gen_us):
            return Stream.JUMP if seq > self.highest else Stream.RESTART
        self.recent[seq] = gen_us
        self.unique += 1
        if seq > self.highest:
            self.highest = seq
        elif seq < self.first:
            self.first = seq
        if len(self.recent) > 2 * DUP_WINDOW:
            self.forget_old()
        return Stream.NEW

    def forget_old(self) -> None:
        """Keep the numbers of the last DUP_WINDOW only."""
        floor = self.highest - DUP_WINDOW
        self.recent = {k: v for k, v in self.recent.items() if k >= floor}

    def _numbered_by_one(self, seq: int, gen_us: int) -> bool:
        """Whether one sender could have numbered the highest and `seq` (generated at `gen_us`): no more numbers
        apart than MAX_RATE_HZ allows over the time between them, in the same order (a later number, a later time)."""
        last_us = self.recent.get(self.highest)
        if last_us is None:
            return seq - self.highest <= DUP_WINDOW
        apart_us = gen_us - last_us if seq > self.highest else last_us - gen_us
        return abs(seq - self.highest) <= JUMP_SLACK + max(apart_us, 0) * MAX_RATE_HZ / 1e6

    @property
    def lost(self) -> int:
        return self.highest - self.first + 1 - self.unique


@dataclass
class Counts:
    """By (message type, hop): messages received (each once), lost (sequence gaps), duplicates; jumps: streams
    begun anew because a number came further ahead than its sender could have numbered (Stream.JUMP); expired: of
    those received, how many arrived older than their expiry (dropped unused: a stalled or congested receiver)."""

    received: int = 0
    lost: int = 0
    duplicates: int = 0
    jumps: int = 0
    expired: int = 0

    def add(self, other: Counts) -> None:
        self.received += other.received
        self.lost += other.lost
        self.duplicates += other.duplicates
        self.jumps += other.jumps
        self.expired += other.expired


COARSE_STEP = 1.1  # the coarse histogram's bucket i holds values near COARSE_STEP ** i [us]
_LOG_STEP = math.log(COARSE_STEP)


COARSE_KEPT = 4096  # latencies whose coarse bucket is kept, the first seen (most repeat: in fast mode, a step's multiples)
_coarse: dict[int, int] = {}


def coarse_bucket(v_us: int) -> int:
    b = _coarse.get(v_us)
    if b is None:
        b = round(math.log(max(v_us, 1)) / _LOG_STEP)
        if len(_coarse) < COARSE_KEPT:
            _coarse[v_us] = b
    return b


_COARSE_MAX = 512  # above every coarse bucket of a latency below _EXACT_FLOAT (log(2**53) / log(1.1) is 385)


def _exact(v: npt.NDArray[Any]) -> bool:
    """Whether `v` holds integers only (numpy's signed kind: not floats, nor Python ints beyond 64 bits), each one a
    float holds exactly."""
    return v.dtype.kind == "i" and bool(((v > -_EXACT_FLOAT) & (v < _EXACT_FLOAT)).all())


def buckets(v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`bucket` of each of an array of latencies [us], 0 <= v < _EXACT_FLOAT."""
    e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 11  # bit_length - 11: exact below 2**53
    out: npt.NDArray[np.int64] = np.where(v < _EXACT, v, _EXACT + (e - 1) * _HALF + ((v >> np.maximum(e, 0)) - _HALF))
    return out


def coarse_buckets(v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`coarse_bucket` of each of an array of latencies [us], |v| < _EXACT_FLOAT. numpy's log may differ from the
    math module's in the last bit: a value whose bucket that could change (within 1e-9 of half way between two) is
    worked out by `coarse_bucket` itself."""
    x = np.log(np.maximum(v, 1).astype(np.float64)) / _LOG_STEP
    out = np.rint(x).astype(np.int64)  # round half to even, as round() does
    for i in np.flatnonzero(np.abs(x - np.floor(x) - 0.5) < 1e-9):
        out[i] = coarse_bucket(int(v[i]))
    return out


def coarse_value_us(i: int) -> float:
    return float(COARSE_STEP**i)


def coarse_quantile_us(counts: Mapping[int, int], q: float) -> float:
    """The value at quantile q of a coarse histogram (within about 5%)."""
    n = sum(counts.values())
    rank = max(math.ceil(q * n), 1)
    seen = 0
    for i in sorted(counts):
        seen += counts[i]
        if seen >= rank:
            return coarse_value_us(i)
    return 0.0


class Measurements:
    """A receiver's (or a whole fleet's) latency histograms and per-stream sequence bookkeeping."""

    def __init__(self, epoch_s: float = 0.0) -> None:
        self.epoch_s = epoch_s  # UTC [s] of sim time 0: the series is by sim second
        self._latency_by: dict[tuple[str, str], Histogram] = {}  # (message type, hop) -> histogram
        # hop -> sim second of generation -> coarse histogram: a dict, or packed (bucket, count, bucket, count...)
        self._series: dict[str, dict[int, dict[int, int] | array[int]]] = {}
        # by (message type, hop): latencies [us] and generation times [us] put aside, not yet in the histograms
        self._aside: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._n_aside = 0
        self._open: dict[str, set[int]] = {}  # by hop: the seconds of its series still dicts
        self.streams: dict[tuple[str, str, str], Stream] = {}  # (receiver, topic, sender) -> stream
        self._stream_type: dict[tuple[str, str, str], tuple[str, str]] = {}  # -> (message type, hop)
        self.closed: dict[tuple[str, str], Counts] = {}  # by (message type, hop): streams whose receiver or sender has gone
        self.unsequenced: dict[tuple[str, str], int] = {}  # by (message type, hop): received through a shared subscription
        self._next_sweep_us = -math.inf
        self.sweeps = 0  # how many times `close_silent` has looked

    def record(
        self, receiver: str, topic: str, mtype: str, hop: str, seq: int, gen_us: int, latency_us: int | None, sender: str = "",
        sequenced: bool = True,
    ) -> bool:
        """One message received; False if it duplicates one received before (not measured again).
        `latency_us` None: count it, but it says nothing of the link (a retained message). A stream is one
        sender's messages on one topic (instances of the cloud relay SPaT on the same topics). `sequenced`
        False: a share of a stream (a shared subscription hands each message to one of a group), whose gaps
        say nothing of loss: latency only."""
        if not sequenced:
            self.unsequenced[(mtype, hop)] = self.unsequenced.get((mtype, hop), 0) + 1
            self._latency(mtype, hop, gen_us, latency_us)
            return True
        key = (receiver, topic, sender)
        stream = self.streams.get(key)
        seen = Stream.RESTART if stream is None else stream.see(seq, gen_us)
        if seen != Stream.NEW and not self._seen_anew(key, stream, seen, seq, gen_us, mtype, hop):
            return False  # (the next number of a stream, nearly every message, is NEW without `_seen_anew`'s call)
        self._latency(mtype, hop, gen_us, latency_us)
        return True

    def _seen_anew(self, key: tuple[str, str, str], stream: Stream | None, seen: int, seq: int, gen_us: int, mtype: str,
                   hop: str) -> bool:
        """A message its stream `key` (receiver, topic, sender), `stream` (None: none yet), did not take as NEW but as
        `seen`: a DUPLICATE (False), or a RESTART or JUMP, when a new stream begins with it (True)."""
        if seen == Stream.DUPLICATE:
            return False
        if stream is not None:
            self._close(key)
        if seen == Stream.JUMP:
            self.closed.setdefault((mtype, hop), Counts()).jumps += 1
        self.streams[key] = Stream(seq, seq, recent={seq: gen_us})
        self._stream_type[key] = (mtype, hop)
        return True

    def record_all(
        self, receivers: Sequence[str], topic: str, mtype: str, hop: str, seq: int, gen_us: int, latency_us: int | None,
        sender: str = "", sequenced: bool = True,
    ) -> list[bool]:
        """`record` of one message for each of `receivers` in turn (a fleet's vehicles hearing the same SPaT): each
        receiver's stream on its own, the latency counted once for all that had not had it."""
        if not sequenced:
            return [self.record(r, topic, mtype, hop, seq, gen_us, latency_us, sender, sequenced) for r in receivers]
        streams, out = self.streams, []
        for r in receivers:  # `record`'s way, receiver by receiver
            key = (r, topic, sender)
            stream = streams.get(key)
            seen = Stream.RESTART if stream is None else stream.see(seq, gen_us)
            out.append(seen == Stream.NEW or self._seen_anew(key, stream, seen, seq, gen_us, mtype, hop))
        n = sum(out)
        if n:
            self._latency(mtype, hop, gen_us, latency_us, n)
        return out

    def expire(self, mtype: str, hop: str) -> None:
        """A message just recorded arrived older than its expiry: received, but of no use."""
        self.closed.setdefault((mtype, hop), Counts()).expired += 1

    @property
    def latency(self) -> dict[tuple[str, str], Histogram]:
        """(message type, hop) -> latency histogram [us], everything received so far in it."""
        self._fold()
        return self._latency_by

    @property
    def series(self) -> dict[str, dict[int, dict[int, int] | array[int]]]:
        """hop -> sim second of generation -> coarse histogram of latency: a dict, or packed (bucket, count, ...)."""
        self._fold()
        return self._series

    def put_aside(self, mtype: str, hop: str, latencies_us: list[int], gens_us: list[int]) -> None:
        """The latencies of many messages recorded (not retained, not a share of a stream), with their generation
        times, as `record` puts each aside (v2x.net.intake: a run of BSMs taken at once)."""
        at, n = 0, len(latencies_us)
        while at < n:  # folded where `record` one by one would have folded: the same figures, packed the same way
            part = min(n - at, FOLD_EVERY - self._n_aside)
            aside = self._aside.get((mtype, hop))
            if aside is None:
                aside = self._aside[(mtype, hop)] = ([], [])
            aside[0].extend(latencies_us[at : at + part])
            aside[1].extend(gens_us[at : at + part])
            self._n_aside += part
            at += part
            if self._n_aside >= FOLD_EVERY:
                self._fold()

    def _latency(self, mtype: str, hop: str, gen_us: int, latency_us: int | None, n: int = 1) -> None:
        if latency_us is None:
            return
        if n != 1:  # one message counted for many receivers at once (rare): now (the figures do not depend on order)
            self._count(mtype, hop, gen_us, latency_us, n)
            return
        aside = self._aside.get((mtype, hop))
        if aside is None:
            aside = self._aside[(mtype, hop)] = ([], [])
        aside[0].append(latency_us)
        aside[1].append(gen_us)
        self._n_aside += 1
        if self._n_aside >= FOLD_EVERY:
            self._fold()

    def _count(self, mtype: str, hop: str, gen_us: int, latency_us: int, n: int = 1) -> None:
        """One latency, `n` times, into its histogram and its hop's series."""
        h = self._latency_by.get((mtype, hop))
        if h is None:
            h = self._latency_by[(mtype, hop)] = Histogram()
        h.record(latency_us, n)
        per_s = self._second(hop, math.floor(gen_us / 1e6 - self.epoch_s))
        b = coarse_bucket(latency_us)
        per_s[b] = per_s.get(b, 0) + n

    def _fold(self) -> None:
        """The latencies put aside into the histograms and series, as `_count` would have put each: the histogram's
        bucket of each, and the coarse bucket of each in the sim second of its generation, counted at once."""
        if not self._n_aside:
            return
        aside, self._aside, self._n_aside = self._aside, {}, 0
        for (mtype, hop), (lats, gens) in aside.items():
            lat, gen = np.array(lats), np.array(gens)
            if not (_exact(lat) and _exact(gen)):  # not all integers a float holds exactly (nothing a receiver's
                for one, g in zip(lats, gens, strict=True):  # clock gives): each alone
                    self._count(mtype, hop, g, one)
                continue
            h = self._latency_by.get((mtype, hop))
            if h is None:
                h = self._latency_by[(mtype, hop)] = Histogram()
            clipped = np.maximum(lat, 0)
            fine, n_fine = np.unique(buckets(clipped), return_counts=True)
            for b, c in zip(fine.tolist(), n_fine.tolist(), strict=True):
                h.counts[b] = h.counts.get(b, 0) + c
            h.n += len(clipped)
            h.max = max(h.max, int(clipped.max()))
            sec = np.floor(gen / 1e6 - self.epoch_s).astype(np.int64)
            coarse = coarse_buckets(lat)
            low = int(sec.min())
            keys, counts = np.unique((sec - low) * _COARSE_MAX + coarse, return_counts=True)
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                per_s = self._second(hop, low + k // _COARSE_MAX)
                b = k % _COARSE_MAX
                per_s[b] = per_s.get(b, 0) + c

    def _second(self, hop: str, sec: int) -> dict[int, int]:
        """A hop's coarse histogram of sim second `sec`, as a dict to count in (the seconds OPEN_S behind it packed)."""
        per_hop = self._series.setdefault(hop, {})
        per_s = per_hop.get(sec)
        if not isinstance(per_s, dict):  # a new second, or a late arrival for one packed already
            per_s = per_hop[sec] = {} if per_s is None else dict(_bins(per_s))
            opened = self._open.setdefault(hop, set())
            opened.add(sec)
            for old in [s for s in opened if s < sec - OPEN_S]:
                opened.discard(old)
                packed = per_hop[old]
                if isinstance(packed, dict):
                    per_hop[old] = array("I", [x for bc in sorted(packed.items()) for x in bc])
        return per_s

    def close_silent(self, now_us: int) -> None:
        """Close the streams whose latest message was generated more than SILENT_S before `now_us` (UTC [us], the
        receiver's clock), folding their counts into the totals; looked at every SWEEP_EVERY_S at most. What a
        receiver keeps then grows with the senders heard in the last SILENT_S, not with every sender ever heard."""
        if now_us < self._next_sweep_us:
            return
        self._next_sweep_us = now_us + SWEEP_EVERY_S * 1e6
        self.sweeps += 1
        since_us = now_us - SILENT_S * 1e6
        for key in [k for k, s in self.streams.items() if s.recent.get(s.highest, since_us) < since_us]:
            self._close(key)

    @property
    def next_sweep_us(self) -> int:
        """The receiver's time [us] from which `close_silent` looks again (it has not looked yet: the lowest int64)."""
        return -(2**63) if self._next_sweep_us == -math.inf else math.ceil(self._next_sweep_us)

    def forget(self, receiver: str) -> None:
        """A receiver left (a vehicle's OBU): fold its streams into the totals."""
        for key in [k for k in self.streams if k[0] == receiver]:
            self._close(key)

    def _close(self, key: tuple[str, str, str]) -> None:
        s = self.streams.pop(key)
        c = self.closed.setdefault(self._stream_type.pop(key), Counts())
        c.add(Counts(s.unique, s.lost, s.duplicates))

    def counts(self) -> dict[tuple[str, str], Counts]:
        """Received, lost and duplicates by (message type, hop); a shared subscription's share counts as received only."""
        out: dict[tuple[str, str], Counts] = {k: Counts(**vars(c)) for k, c in self.closed.items()}
        for k, n in self.unsequenced.items():
            out.setdefault(k, Counts()).add(Counts(n, 0, 0))
        for key, s in self.streams.items():
            out.setdefault(self._stream_type[key], Counts()).add(Counts(s.unique, s.lost, s.duplicates))
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "latency": {f"{t}|{hop}": h.to_json() for (t, hop), h in sorted(self.latency.items())},
            "counts": {f"{t}|{hop}": vars(c) for (t, hop), c in sorted(self.counts().items())},
            "series": {hop: {str(sec): {str(b): c for b, c in _bins(h)} for sec, h in per.items()} for hop, per in self.series.items()},
        }


def _bins(h: dict[int, int] | array[int]) -> Iterable[tuple[int, int]]:
    """(bucket, count) of one second's coarse histogram, a dict or packed."""
    return h.items() if isinstance(h, dict) else zip(h[0::2], h[1::2], strict=True)


Series = dict[str, dict[int, dict[int, int]]]  # hop -> sim second -> coarse histogram


def merge_json(parts: Iterable[Mapping[str, object]]) -> tuple[dict[tuple[str, str], Histogram], dict[tuple[str, str], Counts], Series]:
    """Add up receivers' `Measurements.to_json()`: histograms and counts by (message type, hop), series by hop."""
    latency: dict[tuple[str, str], Histogram] = {}
    counts: dict[tuple[str, str], Counts] = {}
    series: Series = {}
    for p in parts:
        lat = p.get("latency", {})
        assert isinstance(lat, Mapping)
        for key, hj in lat.items():
            t, hop = key.split("|", 1)
            latency.setdefault((t, hop), Histogram()).merge(Histogram.from_json(hj))
        cts = p.get("counts", {})
        assert isinstance(cts, Mapping)
        for key, c in cts.items():
            t, hop = key.split("|", 1)
            counts.setdefault((t, hop), Counts()).add(Counts(**c))
        ser = p.get("series", {})
        assert isinstance(ser, Mapping)
        for hop, per in ser.items():
            into = series.setdefault(hop, {})
            for sec, h in per.items():
                bins = into.setdefault(int(sec), {})
                for b, c in h.items():
                    bins[int(b)] = bins.get(int(b), 0) + int(c)
    return latency, counts, series


def series_after(series: Mapping[int, Mapping[int, int]], from_s: float) -> dict[str, float]:
    """Count, p50 and p99 [ms] (coarse: within about 5%) of what was generated from sim second `from_s` on."""
    h: dict[int, int] = {}
    for sec, counts in series.items():
        if sec >= from_s:
            for b, c in counts.items():
                h[b] = h.get(b, 0) + c
    return {"count": sum(h.values()), "p50": round(coarse_quantile_us(h, 0.5) / 1e3, 3), "p99": round(coarse_quantile_us(h, 0.99) / 1e3, 3)}


def series_table(series: Mapping[int, Mapping[int, int]], window_s: int) -> list[list[float]]:
    """Rows [sim time at the window's start, count, p50 ms, p99 ms] over windows of `window_s` seconds."""
    windows: dict[int, dict[int, int]] = {}
    for sec, h in series.items():
        into = windows.setdefault(sec // window_s, {})
        for b, c in h.items():
            into[b] = into.get(b, 0) + c
    return [
        [w * window_s, sum(h.values()), round(coarse_quantile_us(h, 0.5) / 1e3, 3), round(coarse_quantile_us(h, 0.99) / 1e3, 3)]
        for w, h in sorted(windows.items())
    ]
