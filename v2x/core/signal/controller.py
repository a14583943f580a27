"""Signal controllers: fixed-time, actuated, and commanded by the cloud.

One controller per intersection runs a ring of phases. Each phase gives green to a set of
signal groups, then yellow, then all-red. The controller is driven by sim time:

    ctl.step(t, calls)      advance to sim time t [s]; `calls` = groups with a vehicle on their detector
    ctl.command(plan)       a new plan, applied at the next phase boundary (the end of an all-red),
                            so a yellow or an all-red is never shortened
    ctl.timing(group)       the group's current state and min/max/likely end: what SPaT carries
    ctl.request_priority(group, arrival)
                            an emergency vehicle due at `group`'s stop line: extend its green to
                            cover the arrival (up to max green), or end the conflicting green early
                            (not before its min green) and go straight to the phase serving it

Fixed-time timing is a pure function of time (cycle and offset); actuated timing
depends on the detector calls it was given; both are deterministic. After a fixed-time
plan change, the controller walks into the new plan's offset: each green is lengthened
or shortened, within its min/max, until phase 1 starts at offset + k * cycle again (a
transition, as field controllers do), so a corridor's green wave survives retiming.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from v2x.core.messages import LightState
from v2x.core.traffic import Light, light_of

_EPS = 1e-9
DETECTOR_M = 30.0  # [m] an actuated controller's detection zone upstream of the stop line


class Mode(enum.Enum):
    FIXED = "fixed"
    ACTUATED = "actuated"


class Interval(enum.IntEnum):
    GREEN = 0
    YELLOW = 1
    ALL_RED = 2


@dataclass(frozen=True)
class PhaseTiming:
    groups: frozenset[int]  # group ids with green in this phase
    green_s: float  # [s] fixed-time green (the expected green when actuated)
    yellow_s: float  # [s]
    all_red_s: float  # [s]
    min_green_s: float  # [s]
    max_green_s: float  # [s]
    permissive: frozenset[int] = frozenset()  # groups whose green is permissive (they yield)
    phase_id: int = 0
    # groups green in the next phase too that still go yellow and red at this phase's end (no overlap): a SUMO
    # program with an all-red between two greens that share links, or of one green (v2x/sumo/signals.py)
    clears: frozenset[int] = frozenset()

    @property
    def duration_s(self) -> float:
        return self.green_s + self.yellow_s + self.all_red_s


@dataclass(frozen=True)
class Plan:
    plan_id: int
    mode: Mode
    phases: tuple[PhaseTiming, ...]
    offset_s: float = 0.0  # [s] phase 1 starts at t = offset (mod cycle) in fixed time
    passage_s: float = 3.0  # [s] actuated: a gap this long in the calls ends the green

    @property
    def cycle_s(self) -> float:
        return sum(p.duration_s for p in self.phases)


class GroupTiming(NamedTuple):
    """A group's current state and when it may end, in absolute sim time [s] (a tuple: an RSU makes one per group
    ten times a second, and a frozen dataclass takes four times as long to make)."""

    state: LightState
    start_s: float
    min_end_s: float
    max_end_s: float
    likely_end_s: float
    next_state: LightState


class GroupEnds(NamedTuple):
    """A group's `GroupTiming` without its start (`SignalController.ends`)."""

    group: int
    state: LightState
    min_end_s: float
    max_end_s: float
    likely_end_s: float
    next_state: LightState


GREEN_STATES = (LightState.PROTECTED_GREEN, LightState.PERMISSIVE_GREEN)
# per group served ahead, (min, likely, max) start of the phase that serves it and that phase; and what a group no
# phase serves gets (`SignalController._ahead`)
_Ahead = tuple[dict[int, tuple[float, float, float, PhaseTiming]], tuple[float, float, float, PhaseTiming]]


class SignalController:
    """Runs one intersection's phases. See the module docstring."""

    def __init__(self, plan: Plan, t0: float = 0.0) -> None:
        if len(plan.phases) < 1:
            raise ValueError("a plan needs at least one phase")
        self.plan = plan
        self.pending: Plan | None = None
        self.groups = frozenset(g for p in plan.phases for g in p.groups)
        self.t = t0
        self.plan_changes: list[tuple[float, int]] = []  # (sim time, plan id) when a plan took effect
        # where in the cycle t0 falls (fixed-time alignment; actuated starts the same way)
        pos = (t0 - plan.offset_s) % plan.cycle_s
        start = t0 - pos
        self.k = 0
        for k, p in enumerate(plan.phases):
            if pos < p.duration_s - _EPS:
                self.k = k
                break
            pos -= p.duration_s
            start += p.duration_s
        p = plan.phases[self.k]
        if pos < p.green_s:
            self.interval, self.interval_start = Interval.GREEN, start
        elif pos < p.green_s + p.yellow_s:
            self.interval, self.interval_start = Interval.YELLOW, start + p.green_s
        else:
            self.interval, self.interval_start = Interval.ALL_RED, start + p.green_s + p.yellow_s
        self.last_call_s = self.interval_start  # [s] last detector call seen during this green
        self.green_s = p.green_s  # [s] this green's fixed-time length (the plan's, or a transition's)
        self.forced_end_s: float | None = None  # [s] actuated: this green's end, set by a priority request
        self.skip_to: int | None = None  # the phase to serve next, for a priority request
        self.priority_group: int | None = None  # the group a granted priority request is for, while it lasts
        self.green_ended_by = ""  # "gap", "max" or "fixed": why the last green ended
        self._ends_kept: tuple[tuple[object, ...] | None, tuple[GroupEnds, ...]] = (None, ())  # `ends()` and its key

    # -- stepping --------------------------------------------------------------

    @property
    def phase(self) -> PhaseTiming:
        return self.plan.phases[self.k]

    @property
    def actuated(self) -> bool:
        """Whether detector calls can count in the next step: an actuated plan, running or taking effect."""
        return self.plan.mode is Mode.ACTUATED or (self.pending is not None and self.pending.mode is Mode.ACTUATED)

    def command(self, plan: Plan) -> None:
        """Accept a new plan; it takes effect at the next phase boundary."""
        if {g for p in plan.phases for g in p.groups} - self.groups:
            raise ValueError(f"plan {plan.plan_id} names signal groups this intersection does not have")
        self.pending = plan

    def _green_end(self) -> float:
        """When the current green ends, given what is known now."""
        p = self.phase
        start = self.interval_start
        if self.plan.mode is Mode.FIXED:
            return start + self.green_s
        if self.forced_end_s is not None:
            return self.forced_end_s
        gap_end = max(start + p.min_green_s, self.last_call_s + self.plan.passage_s)
        return min(gap_end, start + p.max_green_s)

    def step(self, t: float, calls: Iterable[int] = ()) -> None:
        """Advance to sim time t [s]. `calls`: groups whose detectors are occupied now."""
        if t < self.t - _EPS:
            raise ValueError(f"time went backwards: {t} < {self.t}")
        called = set(calls)
        self.t = t
        while True:
            p = self.phase
            if self.interval is Interval.GREEN:
                if called & p.groups:
                    self.last_call_s = t
                end = self._green_end()
                if end > t + _EPS:
                    return
                if self.plan.mode is Mode.FIXED:
                    self.green_ended_by = "fixed"
                else:
                    self.green_ended_by = "max" if end >= self.interval_start + p.max_green_s - _EPS else "gap"
                self.interval, self.interval_start = Interval.YELLOW, end
            elif self.interval is Interval.YELLOW:
                end = self.interval_start + p.yellow_s
                if end > t + _EPS:
                    return
                self.interval, self.interval_start = Interval.ALL_RED, end
            else:
                end = self.interval_start + p.all_red_s
                if end > t + _EPS:
                    return
                self._next_phase(end)

    def _next_phase(self, boundary: float) -> None:
        if self.pending is not None:
            new, self.pending = self.pending, None
            current_id = self.phase.phase_id
            ids = [q.phase_id for q in new.phases]
            # continue with the phase that follows the current one in the new plan's order
            self.k = (ids.index(current_id) + 1) % len(ids) if current_id in ids else 0
            self.plan = new
            self.plan_changes.append((boundary, new.plan_id))
            if self.priority_group is not None:
                self.skip_to = self._serving_index(self.priority_group)
        else:
            self.k = (self.k + 1) % len(self.plan.phases)
        if self.skip_to is not None:
            self.k, self.skip_to = self.skip_to, None
        if self.priority_group is not None and self.priority_group not in self.phase.groups:
            self.priority_group = None  # served (or a plan change moved it): over
        self.interval, self.interval_start = Interval.GREEN, boundary
        self.last_call_s = boundary
        self.forced_end_s = None
        self.green_s = self._transition_green(boundary)

    def _next_index(self) -> int:
        """The phase that follows the current one (a priority request may skip some)."""
        return self.skip_to if self.skip_to is not None else (self.k + 1) % len(self.plan.phases)

    def _serving_index(self, g: int) -> int | None:
        """The index of the next phase after the current one that serves group `g`."""
        n = len(self.plan.phases)
        return next(((self.k + j) % n for j in range(1, n + 1) if g in self.plan.phases[(self.k + j) % n].groups), None)

    def cancel_priority(self) -> None:
        """The vehicle has passed (or turned away): no more phase skipping for it."""
        self.priority_group = self.skip_to = None

    def request_priority(self, g: int, arrival_s: float, clear_s: float = 3.0) -> str:
        """An emergency vehicle due at group `g`'s stop line at sim time `arrival_s`.

        Green now: extend it to `arrival_s + clear_s`, up to max green ("extension"). Otherwise end
        the current green now, or at its min green, and serve `g`'s phase next, skipping others
        ("early_green"). Never shortens a yellow or an all-red. Returns "" when `g` is served
        already (green long enough) or by no phase."""
        if g not in self.groups:
            return ""
        p, start = self.phase, self.interval_start
        if g in p.groups and self.interval is Interval.GREEN:
            end = self._green_end()
            want = min(arrival_s + clear_s, start + max(p.max_green_s, self.green_s))
            if want <= end + _EPS:
                return ""
            self.priority_group = g
            if self.plan.mode is Mode.FIXED:
                self.green_s = want - start
            else:
                self.forced_end_s = want
            return "extension"
        k = self._serving_index(g)
        if k is None:
            return ""
        self.priority_group, self.skip_to = g, k
        if self.interval is Interval.GREEN and g not in p.groups:
            end = max(self.t, start + min(p.min_green_s, self.green_s))
            if end < self._green_end() - _EPS:
                if self.plan.mode is Mode.FIXED:
                    self.green_s = end - start
                else:
                    self.forced_end_s = end
        return "early_green"

    def _transition_green(self, start: float) -> float:
        """Fixed time: this green's length, changed within min/max to bring phase 1 back onto the offset."""
        p, plan = self.phase, self.plan
        if plan.mode is not Mode.FIXED:
            return p.green_s
        aligned = plan.offset_s + sum(q.duration_s for q in plan.phases[: self.k])  # when this phase should start, mod cycle
        late = (start - aligned) % plan.cycle_s  # [s] behind schedule (or ahead by cycle - late)
        if late < 1e-6 or plan.cycle_s - late < 1e-6:
            return p.green_s
        # catch up by shortening, or wait by lengthening, whichever is the smaller change
        if late <= plan.cycle_s / 2:
            return max(p.green_s - late, min(p.min_green_s, p.green_s))
        return min(p.green_s + (plan.cycle_s - late), max(p.max_green_s, p.green_s))

    # -- state -----------------------------------------------------------------

    def _green_state(self, g: int, phase: PhaseTiming) -> LightState:
        return LightState.PERMISSIVE_GREEN if g in phase.permissive else LightState.PROTECTED_GREEN

    def state(self, g: int) -> LightState:
        """The light group `g` shows now."""
        p = self.phase
        if g in p.groups:
            if self.interval is Interval.GREEN:
                return self._green_state(g, p)
            nxt = self.plan.phases[self._next_index()]
            if g in nxt.groups and g not in p.clears and self.pending is None:
                return self._green_state(g, p)  # overlap: stays green into the next phase
            return LightState.YELLOW if self.interval is Interval.YELLOW else LightState.RED
        return LightState.RED

    def state_key(self) -> tuple[object, ...]:
        """Everything state() reads: while it is unchanged, every group shows what it showed (callers may cache)."""
        return (self.plan, self.k, self.interval, self.pending is None, self._next_index())

    def states(self) -> dict[int, LightState]:
        return {g: self.state(g) for g in self.groups}

    def timing(self, g: int) -> GroupTiming:
        """State of group `g` with its min/max/likely end times [s, absolute sim time]."""
        st = self.state(g)
        p = self.phase
        if st in GREEN_STATES and self.interval is Interval.GREEN:
            start = self.interval_start
            lo, likely, hi = self._green_bounds()
            return GroupTiming(st, start, lo, hi, likely, LightState.YELLOW)
        if st is LightState.YELLOW:
            end = self.interval_start + p.yellow_s
            return GroupTiming(st, self.interval_start, end, end, end, LightState.RED)
        if st in GREEN_STATES:  # an overlap carrying into the next phase: ends with the next phase's green
            end = self.interval_start + (p.yellow_s if self.interval is Interval.YELLOW else 0.0) + p.all_red_s
            nxt = self.plan.phases[self._next_index()]
            lo, likely, hi = end + nxt.min_green_s, end + nxt.green_s, end + nxt.max_green_s
            if self.plan.mode is Mode.FIXED:
                lo = hi = likely
            return GroupTiming(st, self.interval_start, lo, hi, likely, LightState.YELLOW)
        return self._red(g, self._ahead())  # red: until the next phase that serves g

    def timings(self) -> list[tuple[int, GroupTiming]]:
        """(g, `timing(g)`) of every group, in order: the same values, with what the red groups share worked out once
        (the current phase's ends, and one walk over the phases to come), for an RSU's SPaT ten times a second."""
        out = []
        ahead: _Ahead | None = None
        for g in sorted(self.groups):
            if self.state(g) is not LightState.RED:
                out.append((g, self.timing(g)))
                continue
            if ahead is None:
                ahead = self._ahead()
            out.append((g, self._red(g, ahead)))
        return out

    def ends(self) -> tuple[GroupEnds, ...]:
        """Per group, in order: `timings()` without its starts (what SPaT carries: the state, its min, max and likely
        end [s, absolute sim time], the state after it). A fixed plan's ends move only when its phase or interval
        changes (or a priority request or a new plan moves them), not with the clock: they are worked out once and
        kept while `_ends_key` is unchanged. An actuated plan's move with the time and the calls: worked out each
        time."""
        key = self._ends_key()
        if key is not None and key == self._ends_kept[0]:
            return self._ends_kept[1]
        out = tuple(GroupEnds(g, tm.state, tm.min_end_s, tm.max_end_s, tm.likely_end_s, tm.next_state) for g, tm in self.timings())
        if key is not None:
            self._ends_kept = (key, out)
        return out

    def _ends_key(self) -> tuple[object, ...] | None:
        """Everything a fixed plan's `timings()` reads but the clock (which only red groups' starts take); None for an
        actuated plan, whose green ends follow the clock and the calls."""
        if self.plan.mode is not Mode.FIXED:
            return None
        return (self.plan, self.k, self.interval, self.interval_start, self.green_s, self.pending is None, self._next_index())

    def _red(self, g: int, ahead: _Ahead) -> GroupTiming:
        """A red group's timing: until the next phase that serves it (`_ahead`), and the green it shows then."""
        served, never = ahead
        lo, likely, hi, q = served.get(g, never)
        return GroupTiming(LightState.RED, self.t, lo, hi, likely, self._green_state(g, q))

    def _ahead(self) -> _Ahead:
        """One walk over the phases to come, for every group at once: per group the (min, likely, max) start of the
        next phase that serves it, and that phase; and what a group no phase serves gets (the walk's end, and the
        current phase)."""
        lo, likely, hi = self._remaining_current()
        n, first = len(self.plan.phases), self._next_index()
        fixed = self.plan.mode is Mode.FIXED
        ahead: dict[int, tuple[float, float, float, PhaseTiming]] = {}
        for j in range(n):
            q = self.plan.phases[(first + j) % n]
            for g in q.groups:
                ahead.setdefault(g, (lo, likely, hi, q))
            tail = q.yellow_s + q.all_red_s
            lo += (q.green_s if fixed else q.min_green_s) + tail
            likely += q.green_s + tail
            hi += (q.green_s if fixed else q.max_green_s) + tail
        return ahead, (lo, likely, hi, self.phase)

    def _green_bounds(self) -> tuple[float, float, float]:
        """(min, likely, max) end of the current green."""
        if self.plan.mode is Mode.FIXED or self.forced_end_s is not None:
            end = self._green_end()
            return end, end, end
        p = self.phase
        lo = max(self.t, self.interval_start + p.min_green_s)
        hi = self.interval_start + p.max_green_s
        return lo, min(max(lo, self._green_end()), hi), hi

    def _remaining_current(self) -> tuple[float, float, float]:
        """(min, likely, max) end of the current phase's all-red."""
        p = self.phase
        if self.interval is Interval.GREEN:
            g_lo, g_likely, g_hi = self._green_bounds()
            tail = p.yellow_s + p.all_red_s
            return g_lo + tail, g_likely + tail, g_hi + tail
        if self.interval is Interval.YELLOW:
            end = self.interval_start + p.yellow_s + p.all_red_s
        else:
            end = self.interval_start + p.all_red_s
        return end, end, end


class HeadWatch:
    """What a controller's signal heads show, as a driver reads them (`Light`), looked at again only when the
    controller's state changed: the offline runner's truth for every vehicle, and each RSU's log of its heads."""

    def __init__(self, ctl: SignalController) -> None:
        self.ctl = ctl
        self.shown: dict[int, Light] = {}  # group id -> what it shows
        self._key: tuple[object, ...] | None = None

    def changes(self) -> list[tuple[int, Light]]:
        """(group id, light) of each head whose light changed since the last look, in group order."""
        key = self.ctl.state_key()
        if key == self._key:
            return []
        self._key = key
        out = []
        for g in sorted(self.ctl.groups):
            light = light_of(self.ctl.state(g))
            if self.shown.get(g) != light:
                self.shown[g] = light
                out.append((g, light))
        return out
