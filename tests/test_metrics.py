"""Latency histograms and sequence bookkeeping (pure logic), and what Reception drops and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from v2x.core import messages as m
from v2x.core import metrics
from v2x.core.metrics import (
    Counts,
    Histogram,
    Measurements,
    Stream,
    bucket,
    bucket_range,
    coarse_bucket,
    coarse_quantile_us,
    merge_json,
    series_table,
)
from v2x.net.reception import Reception
from v2x.net.station import Station, StepClock
from v2x.net.transport import Message

SEQ_MOD = 2**32  # stations number each stream modulo this (Station.encode)


@given(st.integers(min_value=0, max_value=10**12))
def test_a_value_lies_in_its_bucket_which_is_narrow(v: int) -> None:
    low, high = bucket_range(bucket(v))
    assert low <= v <= high
    assert high - low <= max(low / 1024, 0)


def test_percentiles_match_numpy_within_a_thousandth() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(mean=np.log(30_000), sigma=0.8, size=50_000).astype(np.int64)  # us, 30 ms median
    h = Histogram()
    for v in values:
        h.record(int(v))
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert abs(h.quantile_us(q) - exact) <= exact / 1024 + 1, q
    assert h.max == int(values.max())
    assert h.n == len(values)


def test_histograms_merge_and_survive_json() -> None:
    a, b = Histogram(), Histogram()
    for v in range(0, 5000, 7):
        a.record(v)
    for v in range(100_000, 200_000, 13):
        b.record(v)
    merged = Histogram.from_json(a.to_json())
    merged.merge(Histogram.from_json(b.to_json()))
    both = Histogram()
    for v in [*range(0, 5000, 7), *range(100_000, 200_000, 13)]:
        both.record(v)
    assert merged.counts == both.counts
    assert merged.summary_ms() == both.summary_ms()


def test_a_stream_counts_gaps_as_lost_and_repeats_as_duplicates() -> None:
    s = Stream(10, 10, recent={10: 10})
    for seq in (11, 13, 13, 16, 12):  # 14 and 15 never come; 13 twice; 12 late
        s.see(seq, seq)
    assert s.see(16, 99) == Stream.RESTART  # the same number at another time: the sender started over
    assert s.lost == 2
    assert s.duplicates == 1
    assert s.unique == 5


def _bsms(ms: Measurements, seqs: range | list[int], t0_us: int, sender: str = "veh-1") -> None:
    """BSMs `seqs` from `sender` at 10 Hz from `t0_us`, as the cloud receives them."""
    for k, seq in enumerate(seqs):
        ms.record("cloud", f"t/bsm/{sender}", "bsm", "vehicle->cloud", seq % SEQ_MOD, t0_us + k * 100_000, 1000, sender)


def test_a_number_further_ahead_than_its_sender_could_have_numbered_starts_a_new_stream_counted_as_a_jump() -> None:
    ms = Measurements()
    _bsms(ms, range(100), 0)  # 0..99 at 10 Hz: up to 9.9 s
    # forged: "veh-1" numbering 2^31, and its highest + 1000, 50 ms after its last
    ms.record("cloud", "t/bsm/veh-1", "bsm", "vehicle->cloud", 2**31, 9_950_000, 1000, "veh-1")
    _bsms(ms, range(100, 150), 10_000_000)
    ms.record("cloud", "t/bsm/veh-1", "bsm", "vehicle->cloud", 1149, 15_010_000, 1000, "veh-1")
    _bsms(ms, range(150, 200), 15_000_000)
    c = merge_json([ms.to_json()])[1][("bsm", "vehicle->cloud")]
    assert (c.received, c.lost) == (202, 0)
    assert c.jumps == 2
    # a genuine gap: ten seconds of silence, then the numbers the sender took meanwhile (a 10 Hz stream, 100 of them)
    _bsms(ms, range(300, 310), 30_000_000)
    c = merge_json([ms.to_json()])[1][("bsm", "vehicle->cloud")]
    assert (c.received, c.lost) == (212, 100)
    assert c.jumps == 2


def test_a_stream_carries_on_across_the_wrap_of_its_sequence_numbers() -> None:
    ms = Measurements()
    _bsms(ms, [SEQ_MOD - 3, SEQ_MOD - 2, SEQ_MOD - 1, SEQ_MOD + 1, SEQ_MOD + 2], 0)  # numbers 0 lost past the wrap
    c = merge_json([ms.to_json()])[1][("bsm", "vehicle->cloud")]
    assert (c.received, c.lost) == (5, 1)
    assert len(ms.streams) == 1
    assert c.jumps == 0


def test_counts_from_a_report_written_before_jumps_were_counted_still_load() -> None:
    _, counts, _ = merge_json([{"counts": {"bsm|vehicle->cloud": {"received": 3, "lost": 1, "duplicates": 0}}}])
    assert counts[("bsm", "vehicle->cloud")] == Counts(received=3, lost=1, duplicates=0, jumps=0)


def test_measurements_fold_a_departed_receiver_into_the_totals() -> None:
    ms = Measurements()
    for seq in (0, 1, 3):
        ms.record("veh-1", "t/spat", "spat", "rsu->vehicle", seq, seq, 1000)
    ms.record("veh-2", "t/spat", "spat", "rsu->vehicle", 1, 1, 2000)  # another receiver: its own stream
    ms.record("veh-2", "t/spat", "spat", "rsu->vehicle", 0, 50, 2000)  # the RSU restarted: a new stream
    ms.forget("veh-1")
    latency, counts, _ = merge_json([ms.to_json()])
    assert counts[("spat", "rsu->vehicle")].received == 5
    assert counts[("spat", "rsu->vehicle")].lost == 1
    assert latency[("spat", "rsu->vehicle")].n == 5


def test_a_receiver_keeps_the_streams_of_the_senders_heard_lately_not_of_every_sender_ever_heard() -> None:
    """Vehicles pass a receiver one after another (a new one every 0.5 s, each heard for 5 s at 10 Hz, one BSM of
    each lost): what it keeps grows with the vehicles of the last minute (SILENT_S), and its totals are those of
    every vehicle. Before, the RSU and the cloud kept every vehicle's stream for good (the RSU grew 114 -> 127 MB in
    600 s)."""
    clock = StepClock(1_767_225_600.0)
    rx = Reception("cloud", m.SenderKind.CLOUD, clock)
    body = m.Bsm(position=m.GeoPoint(31.0, 121.0), speed_mps=10.0, heading_deg=90.0)
    vehicles, kept = 1000, []
    stations = [Station(f"veh-{k}", m.SenderKind.VEHICLE, clock) for k in range(vehicles)]
    for step in range(vehicles * 5 + 50):  # 0.1 s steps
        clock.t = step / 10
        for k in range(max(-(-(step - 49) // 5), 0), min(step // 5 + 1, vehicles)):  # vehicle k is heard from 0.5 k s for 5 s
            frame = stations[k].encode(body, stream=f"t/bsm/{k}")
            if step - 5 * k != 20:  # its 21st BSM lost on the way
                assert rx.accept(Message(f"t/bsm/{k}", frame, 0, False, 0)) is not None
        kept.append(len(rx.measure.streams))
    counts = merge_json([rx.measure.to_json()])[1][("bsm", "vehicle->cloud")]
    assert (counts.received, counts.lost) == (vehicles * 49, vehicles)
    assert max(kept) <= (60 + 5 + 2) / 0.5, max(kept)  # the vehicles heard in the last minute (SILENT_S), give or take
    assert kept[-1] < 0.2 * vehicles


def test_closing_silent_streams_leaves_the_totals_as_they_were() -> None:
    ms = Measurements()
    for k in range(50):
        _bsms(ms, [s for s in range(30) if s % 7], k * 1_000_000, f"veh-{k}")  # lost: 0, 7, 14, 21, 28; 0 unseen
        ms.record("cloud", f"t/bsm/veh-{k}", "bsm", "vehicle->cloud", 3, k * 1_000_000 + 200_000, 1000, f"veh-{k}")  # a duplicate
    ms.record("cloud", "t/bsm/veh-0", "bsm", "vehicle->cloud", 2**31, 3_000_000, 1000, "veh-0")  # and a jump
    before = ms.to_json()
    ms.close_silent(round((60 + metrics.SILENT_S) * 1e6))  # every stream silent for more than SILENT_S
    assert not ms.streams
    assert ms.to_json() == before


def test_reception_drops_duplicates_and_expired_messages_and_skips_retained_latency() -> None:
    clock = StepClock(1_767_225_600.0)
    rsu = Station("rsu-1", m.SenderKind.RSU, clock)
    rx = Reception("veh", m.SenderKind.VEHICLE, clock)
    spat = m.Spat(())
    fresh = rsu.encode(spat, stream="t/spat")
    assert rx.accept(Message("t/spat", fresh, 0, False, 0)) is not None
    assert rx.accept(Message("t/spat", fresh, 0, False, 0)) is None  # the same again: a duplicate
    old = rsu.encode(spat, stream="t/spat")
    clock.t = 1.5  # 1.5 s later: past SPaT's 1 s expiry
    assert rx.accept(Message("t/spat", old, 0, False, 0)) is None
    assert rx.bad.counts == {"expired": 1}
    geometry = rsu.encode(m.MapData(()), stream="t/map")
    assert rx.accept(Message("t/map", geometry, 1, True, 0)) is not None  # retained: no age limit, not a latency
    latency, counts, _ = merge_json([rx.measure.to_json()])
    assert counts[("spat", "rsu->vehicle")].duplicates == 1
    assert counts[("spat", "rsu->vehicle")].received == 2
    assert latency[("spat", "rsu->vehicle")].n == 2
    assert latency[("spat", "rsu->vehicle")].max == 1_500_000
    assert ("map", "rsu->vehicle") not in latency


def test_latency_over_time_in_windows_of_sim_time() -> None:
    epoch_s = 1_000.5
    ms = Measurements(epoch_s)  # sim time 0 is half way through UTC second 1000
    for k in range(100):  # sim 0.0 .. 9.9 s: 1 ms for the first 5 s, then 10 ms
        gen_us = round((epoch_s + k * 0.1) * 1e6)
        ms.record("cloud", f"t/{k}", "bsm", "vehicle->cloud", 0, gen_us, 1_000 if k < 50 else 10_000)
    _, _, series = merge_json([ms.to_json(), Measurements().to_json()])
    rows = series_table(series["vehicle->cloud"], 5)
    assert [r[0] for r in rows] == [0, 5]  # window starts, sim seconds
    assert [r[1] for r in rows] == [50, 50]
    assert rows[0][2] == pytest.approx(1.0, rel=0.05)
    assert rows[1][3] == pytest.approx(10.0, rel=0.05)
    assert coarse_quantile_us({coarse_bucket(123_456): 1}, 0.5) == pytest.approx(123_456, rel=0.05)


def test_latency_series_packs_past_seconds_and_still_takes_late_arrivals_for_them() -> None:
    ms = Measurements(0.0)
    for sec in range(10):
        ms.record("cloud", f"t/{sec}", "bsm", "vehicle->cloud", 0, sec * 1_000_000, 1_000 + sec)
    assert sum(not isinstance(h, dict) for h in ms.series["vehicle->cloud"].values()) >= 7  # packed
    ms.record("cloud", "t/late", "bsm", "vehicle->cloud", 0, 500_000, 50_000)  # generated in second 0, arriving now
    _, _, series = merge_json([ms.to_json()])
    per_s = series["vehicle->cloud"]
    assert sorted(per_s) == list(range(10))
    assert per_s[0] == {coarse_bucket(1_000): 1, coarse_bucket(50_000): 1}
    assert per_s[9] == {coarse_bucket(1_009): 1}


# (numbers ahead of or behind the highest, microseconds after or before its generation): the next number and a few
# past it, most often, as a stream goes; and repeats, late ones, restarts and jumps far ahead
_STEPS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(range(-3, 2 * metrics.JUMP_SLACK)), st.integers(-2 * metrics.DUP_WINDOW, 2 * metrics.DUP_WINDOW),
                  st.integers(0, 2**31 - 1)),
        st.one_of(st.sampled_from([100_000, 0, -1]), st.integers(-2_000_000, 20_000_000)),
    ),
    max_size=200,
)


@given(_STEPS, st.integers(0, SEQ_MOD - 1))
def test_a_stream_takes_the_next_numbers_as_its_general_rule_does(steps: list[tuple[int, int]], start: int) -> None:
    """`Stream.see` takes the numbers just ahead of the highest without the general rule's checks: twin streams, one
    seeing each number as sent (modulo SEQ_MOD), the other through the general rule alone, agree on every verdict."""
    fast, general = Stream(start, start, recent={start: 0}), Stream(start, start, recent={start: 0})
    gen_us = 0
    for ahead, later_us in steps:
        seq, gen_us = fast.highest + ahead, gen_us + later_us
        assert fast.see(seq % SEQ_MOD, gen_us) == general._see(seq, gen_us), (seq, gen_us)
        assert vars(fast) == vars(general)


@given(st.lists(st.tuples(st.sampled_from(["vehicle->rsu", "vehicle->cloud"]), st.integers(0, 12), st.integers(-5, 10**7)), max_size=300))
def test_the_latency_series_counts_every_message_in_its_hop_and_second(arrivals: list[tuple[str, int, int]]) -> None:
    """Whatever the order of hops and seconds (late arrivals for packed seconds among them), each message is counted
    once in its hop's second, in the coarse bucket of its latency."""
    ms = Measurements(0.0)
    expected: dict[str, dict[int, dict[int, int]]] = {}
    for k, (hop, sec, latency_us) in enumerate(arrivals):
        ms.record("cloud", f"t/{k}", "bsm", hop, 0, sec * 1_000_000 + k, latency_us)
        per_s = expected.setdefault(hop, {}).setdefault(sec, {})
        b = round(math.log(max(latency_us, 1)) / math.log(metrics.COARSE_STEP))
        per_s[b] = per_s.get(b, 0) + 1
    assert merge_json([ms.to_json()])[2] == expected


class _EachAtOnce(Measurements):
    """Measurements that count each latency as it comes (what the fold must give)."""

    def _latency(self, mtype: str, hop: str, gen_us: int, latency_us: int | None, n: int = 1) -> None:
        if latency_us is not None:
            self._count(mtype, hop, gen_us, latency_us, n)


_LATENCIES = st.one_of(
    st.integers(-5, 3_000), st.integers(-(2**40), 10**8), st.sampled_from([0, 1, 2_047, 2_048, 2**53 - 1, 2**53, -(2**53), 2**63, -(2**64)]),
    st.integers(0, 400).map(lambda i: round(metrics.COARSE_STEP ** (i + 0.5))),  # near a coarse bucket's edge
    st.sampled_from([1.7, -0.5, 2_047.5]),  # not what a receiver's clock gives, but what the signature would let in
)


@given(st.lists(st.tuples(st.sampled_from([("bsm", "vehicle->rsu"), ("bsm", "vehicle->cloud"), ("spat", "vehicle->cloud")]),
                          st.integers(-3, 40), st.sampled_from([0, 1, 249_999, 250_000, 250_001, 999_999]), _LATENCIES,
                          st.sampled_from([1, 1, 1, 3]), st.booleans()), max_size=300),
       st.sampled_from([1, 7, metrics.FOLD_EVERY]))
def test_latencies_put_aside_and_folded_at_once_are_counted_as_each_alone(
    arrivals: list[tuple[tuple[str, str], int, int, int | float, int, bool]], fold_every: int,
) -> None:
    """Latencies folded into the histograms and series a batch at once (numpy) give what counting each as it comes
    gives: the same buckets, counts, maxima and seconds, whatever the order of hops and seconds, with late arrivals
    for packed seconds, generation times about a sim second's edge (the epoch a quarter second into UTC's), many
    receivers at once, values a float does not hold exactly or that are floats, and the figures read midway."""
    folded, each = Measurements(0.25), _EachAtOnce(0.25)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "FOLD_EVERY", fold_every)
        for k, ((mtype, hop), sec, into_us, latency_us, n, look) in enumerate(arrivals):
            gen_us = sec * 1_000_000 + into_us
            for ms in (folded, each):
                ms.record_all([f"r{i}" for i in range(n)], f"t/{k}", mtype, hop, 0, gen_us, latency_us)
            if look:
                assert folded.latency.keys() == each.latency.keys()
    got, want = folded.to_json(), each.to_json()
    assert got["latency"] == want["latency"]
    assert got["counts"] == want["counts"]
    assert merge_json([got])[2] == merge_json([want])[2]  # the series (packed or not as their order fell)
    assert {k: (h.counts, h.n, h.max) for k, h in folded.latency.items()} == {k: (h.counts, h.n, h.max) for k, h in each.latency.items()}


def test_the_coarse_buckets_of_an_array_are_each_value_s_own() -> None:
    """`coarse_buckets` (numpy's log) gives `coarse_bucket` (the math module's) of every latency up to 2**21 us, and of
    the values about every bucket's edges up to 2**53; `buckets` gives `bucket` of each."""
    edges = np.array([round(metrics.COARSE_STEP ** (i + 0.5)) for i in range(380)], dtype=np.int64)
    v = np.concatenate([np.arange(-3, 2**21), (edges[:, None] + np.arange(-3, 4)).ravel(), [2**53 - 1]])
    assert metrics.coarse_buckets(v).tolist() == [metrics.coarse_bucket(int(x)) for x in v]
    w = np.concatenate([np.arange(0, 2**16), np.int64(2) ** np.arange(11, 53), np.int64(2) ** np.arange(11, 53) - 1, [2**53 - 1]])
    assert metrics.buckets(w).tolist() == [metrics.bucket(int(x)) for x in w]
