"""A real-time capacity search that does not take one unlucky run for the answer.

Sizes are tried rising until one fails; then the gap between the largest size that held and the smallest that failed
is halved `refine` times. A size that fails is run once more before it counts as failed (scheduling noise on a shared
machine trips single runs): the repeat's verdict is the size's, and the search says when a repeat was needed.

The trial is any callable from a size to a result with `ok`; the search holds no sockets or processes of its own, so
it is tested on its own (tests/test_bench_capacity.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

# The criteria, the same for the stack and the messaging floor
LATE_SHARE = 0.01  # fleet steps that may start a whole step (100 ms) late: its p99 lag stays under its tick
P99_MS = 50.0  # vehicle->cloud latency, 99th percentile [ms]


def holds(late_share: float, v2c_p99_ms: float) -> bool:
    """Whether a real-time run kept up: the fleet's 10 Hz tick (at most LATE_SHARE of its steps late) and vehicle->cloud
    p99 at most P99_MS (a run that measured none, NaN, does not hold)."""
    return late_share <= LATE_SHARE and v2c_p99_ms <= P99_MS


class Verdict(Protocol):
    @property
    def ok(self) -> bool: ...


R = TypeVar("R", bound=Verdict)


@dataclass
class Attempt(Generic[R]):
    size: int
    result: R
    repeat: bool  # this was the second run of a size whose first run failed


@dataclass
class Search(Generic[R]):
    """Every attempt, in order; a size's verdict is its last attempt's."""

    attempts: list[Attempt[R]] = field(default_factory=list)

    def verdicts(self) -> dict[int, R]:
        """Each size tried -> its last attempt's result."""
        return {a.size: a.result for a in self.attempts}

    @property
    def held(self) -> tuple[int, R] | None:
        """The largest size that held, and its result."""
        ok = [(size, r) for size, r in self.verdicts().items() if r.ok]
        return max(ok, key=lambda sr: sr[0]) if ok else None

    @property
    def failed(self) -> tuple[int, R] | None:
        """The smallest size that failed (on its repeat too), and the repeat's result."""
        bad = [(size, r) for size, r in self.verdicts().items() if not r.ok]
        return min(bad, key=lambda sr: sr[0]) if bad else None

    @property
    def repeats(self) -> list[Attempt[R]]:
        """The second runs, each with its verdict (a size that held on its repeat is one a single run would have lost)."""
        return [a for a in self.attempts if a.repeat]


def search(sizes: Iterable[int], trial: Callable[[int], R], refine: int = 2, say: Callable[[str], None] = print) -> Search[R]:
    """Try `sizes` (rising) until one fails twice running, then halve the gap between the largest that held and the
    smallest that failed, `refine` times at most (while the gap is 2 or more). `say` gets a line for each repeat."""
    s: Search[R] = Search()

    def attempt(size: int) -> bool:
        r = trial(size)
        s.attempts.append(Attempt(size, r, False))
        if r.ok:
            return True
        say(f"    x {size} failed: running it once more before calling it failed (scheduling noise trips single runs)")
        r = trial(size)
        s.attempts.append(Attempt(size, r, True))
        say(f"    x {size} {'held on the repeat: counted as held' if r.ok else 'failed again: counted as failed'}")
        return r.ok

    for size in sizes:
        if not attempt(size):
            break
    for _ in range(refine):
        held, failed = s.held, s.failed
        if held is None or failed is None or failed[0] - held[0] < 2:
            break
        attempt((held[0] + failed[0]) // 2)
    return s


def doubling(start: int, limit: int) -> list[int]:
    """start, 2 start, 4 start, ... up to `limit` (the last may be `limit` itself)."""
    out = [max(start, 1)]
    while out[-1] < limit:
        out.append(min(out[-1] * 2, limit))
    return out
