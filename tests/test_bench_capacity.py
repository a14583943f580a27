"""The benchmark's capacity search (bench.capacity): a failing size is run once more before it counts as failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.capacity import Search, doubling, search


@dataclass
class Run:
    size: int
    ok: bool


def machine(limit: int, flaky: dict[int, int] | None = None) -> tuple[Callable[[int], Run], list[int]]:
    """A trial that holds up to `limit`, except that the first `flaky[size]` runs of a size fail (noise)."""
    tried: list[int] = []
    left = dict(flaky or {})

    def trial(size: int) -> Run:
        tried.append(size)
        if left.get(size, 0) > 0:
            left[size] -= 1
            return Run(size, False)
        return Run(size, size <= limit)

    return trial, tried


def ends(s: Search[Run]) -> tuple[int | None, int | None]:
    """The largest size that held and the smallest that failed."""
    return (s.held[0] if s.held else None, s.failed[0] if s.failed else None)


def test_a_size_that_fails_once_is_run_again_and_counts_as_held() -> None:
    trial, tried = machine(20, flaky={16: 1})
    said: list[str] = []
    s = search([8, 16, 24, 32], trial, refine=0, say=said.append)
    assert tried == [8, 16, 16, 24, 24]  # 16 again after its noisy failure; 24 fails twice and ends the rising sizes
    assert ends(s) == (16, 24)
    assert [(a.size, a.result.ok) for a in s.repeats] == [(16, True), (24, False)]
    assert any("16 held on the repeat" in line for line in said)
    assert any("24 failed again" in line for line in said)


def test_refinement_halves_the_gap_and_repeats_failures_there_too() -> None:
    trial, tried = machine(21)
    s = search([8, 16, 32], trial, refine=3, say=lambda _: None)
    # 32 fails (twice), then 24 (fails twice), 20 (holds), 22 (fails twice)
    assert tried == [8, 16, 32, 32, 24, 24, 20, 22, 22]
    assert ends(s) == (20, 22)


def test_nothing_holds() -> None:
    trial, tried = machine(0)
    s = search([8, 16], trial, refine=2, say=lambda _: None)
    assert tried == [8, 8]
    assert ends(s) == (None, 8)


def test_everything_holds_and_no_repeat_is_run() -> None:
    trial, tried = machine(1000)
    s = search(doubling(8, 64), trial, refine=2, say=lambda _: None)
    assert tried == [8, 16, 32, 64]
    assert ends(s) == (64, None)
    assert not s.repeats


def test_doubling() -> None:
    assert doubling(8, 64) == [8, 16, 32, 64]
    assert doubling(5, 30) == [5, 10, 20, 30]
    assert doubling(0, 1) == [1]


def test_the_pattern_takes_each_type_into_the_steady_seconds_by_its_hops_share() -> None:
    from bench.pattern import SPAT_HZ, Pattern

    vehicles, seconds = 40.0, 30  # present in the steady seconds, and how many
    steady_bsm, steady_spat = 10 * vehicles * seconds, 0.75 * SPAT_HZ * vehicles * seconds  # 75% of them hear SPaT
    report = {
        "latency_ms": {"vehicle->cloud": {"count": 2 * steady_bsm}, "rsu->vehicle": {"count": 2 * steady_spat},
                       "rsu->cloud": {"count": 1000}},
        # the RSU->cloud hop carries two types: each is taken into the steady seconds by the hop's share
        "latency_ms_by_type": {"bsm": {"vehicle->cloud": {"count": 2 * steady_bsm}}, "spat": {"rsu->vehicle": {"count": 2 * steady_spat},
                                                                                         "rsu->cloud": {"count": 600}},
                               "rsm": {"rsu->cloud": {"count": 400}}},
        "steady": {"latency_ms": {"vehicle->cloud": {"count": steady_bsm}, "rsu->vehicle": {"count": steady_spat},
                                  "rsu->cloud": {"count": 500}},
                   "tick": {"vehicles_mean": vehicles, "seconds": seconds}},
    }
    delivered_per_s = 1234.0
    p = Pattern.of(report, delivered_per_s, copies=2, mode="per-vehicle")
    assert p.per("bsm", "vehicle->cloud") == 10
    assert p.per("spat", "rsu->cloud") == 300 / (vehicles * seconds)
    assert p.per("rsm", "rsu->cloud") == 200 / (vehicles * seconds)
    assert p.spat_share == 0.75
    assert p.per_junction == vehicles / 2
    assert p.broker == delivered_per_s / vehicles
    assert p.measured == sum(x for *_, x in p.rows)


def test_the_capacity_table_marks_lower_bounds_and_lists_repeats() -> None:
    from bench.__main__ import RunResult, capacity_table
    from bench.pattern import Pattern

    def run(copies: int, late_share: float) -> RunResult:
        vehicles = 19.0 * copies
        return RunResult(copies, "per-vehicle", vehicles, late_share, 0.0, 20.0, 45 * vehicles, 12 * vehicles, 0.0, 0,
                         Pattern(copies, "per-vehicle", vehicles, [], 45.0))

    # 16 fails once (5% of steps late) and holds on its repeat; 24 fails twice
    results = {8: iter([run(8, 0.0)]), 16: iter([run(16, 0.05), run(16, 0.0)]), 24: iter([run(24, 0.05), run(24, 0.05)])}
    capped = search([8, 16, 24], lambda k: next(results[k]), refine=0, say=lambda _: None)
    results = {8: iter([run(8, 0.0)]), 16: iter([run(16, 0.0)])}
    open_ended = search([8, 16], lambda k: next(results[k]), refine=0, say=lambda _: None)
    row_capped = capacity_table({"per-vehicle": capped}, {}, 90_000.0)[-1]
    row_open = capacity_table({"shared": open_ended}, {}, 90_000.0)[-1]
    assert "| 304 (x 16," in row_capped  # the largest that held, not a lower bound: x 24 failed
    assert "x 16 held; x 24 failed" in row_capped
    assert "| >= 304 (x 16," in row_open  # nothing failed: at least this
