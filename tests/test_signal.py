"""Signal controllers: fixed-time is a function of time; commands never cut a clearance; actuation works."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from v2x.core.messages import LightState
from v2x.core.signal.controller import Interval, Mode, PhaseTiming, Plan, SignalController


def two_phase(mode: Mode = Mode.FIXED, green: float = 30.0, offset: float = 0.0, plan_id: int = 1) -> Plan:
    return Plan(
        plan_id,
        mode,
        (
            PhaseTiming(frozenset({1, 2}), green, 3.0, 2.0, 10.0, 50.0, permissive=frozenset({1}), phase_id=1),
            PhaseTiming(frozenset({3, 4}), green, 3.0, 2.0, 10.0, 50.0, phase_id=2),
        ),
        offset_s=offset,
    )


def run(ctl: SignalController, until: float, dt: float = 0.1, calls: frozenset[int] = frozenset()) -> None:
    t = ctl.t
    while t < until - 1e-9:
        t = round(t + dt, 6)
        ctl.step(t, calls)


def test_fixed_time_states_follow_the_cycle() -> None:
    ctl = SignalController(two_phase())
    assert ctl.state(1) is LightState.PERMISSIVE_GREEN
    assert ctl.state(2) is LightState.PROTECTED_GREEN
    assert ctl.state(3) is LightState.RED
    run(ctl, 31.0)
    assert ctl.state(2) is LightState.YELLOW
    run(ctl, 34.0)
    assert ctl.state(2) is LightState.RED
    assert ctl.state(3) is LightState.RED
    run(ctl, 35.5)
    assert ctl.state(3) is LightState.PROTECTED_GREEN
    run(ctl, 70.5)
    assert ctl.state(2) is LightState.PROTECTED_GREEN


@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 500.0), st.floats(0.0, 69.0))
def test_fixed_time_is_a_pure_function_of_time(t: float, offset: float) -> None:
    stepped = SignalController(two_phase(offset=offset))
    run(stepped, t)
    direct = SignalController(two_phase(offset=offset), t0=stepped.t)
    assert stepped.states() == direct.states()


def test_offset_shifts_the_cycle() -> None:
    ctl = SignalController(two_phase(offset=20.0))
    run(ctl, 20.05)
    assert ctl.interval is Interval.GREEN
    assert ctl.k == 0
    assert abs(ctl.interval_start - 20.0) < 1e-9


def test_fixed_time_timing_predicts_the_change_exactly() -> None:
    ctl = SignalController(two_phase())
    run(ctl, 12.0)
    predicted = ctl.timing(3).likely_end_s  # red group 3 turns green at 35 s
    assert abs(predicted - 35.0) < 1e-9
    assert ctl.timing(2).likely_end_s == 30.0
    run(ctl, 35.05)
    assert ctl.state(3) is LightState.PROTECTED_GREEN


def _clearances(ctl: SignalController, until: float, commands: dict[float, Plan]) -> list[tuple[str, float, float]]:
    """Run, issuing commands at given times; return (kind, measured duration, configured duration)."""
    out = []
    t = ctl.t
    cur = (ctl.interval, ctl.interval_start, ctl.phase)
    pending = sorted(commands.items())
    while t < until:
        t = round(t + 0.1, 6)
        while pending and pending[0][0] <= t:
            ctl.command(pending.pop(0)[1])
        ctl.step(t)
        now = (ctl.interval, ctl.interval_start, ctl.phase)
        if now[:2] != cur[:2]:
            kind, start, phase = cur
            length = ctl.interval_start - start
            if kind is Interval.YELLOW:
                out.append(("yellow", length, phase.yellow_s))
            elif kind is Interval.ALL_RED:
                out.append(("all_red", length, phase.all_red_s))
            cur = now
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(1.0, 400.0), st.floats(5.0, 60.0), st.sampled_from(list(Mode))), min_size=1, max_size=6),
)
def test_a_commanded_plan_never_shortens_yellow_or_all_red(commands: list[tuple[float, float, Mode]]) -> None:
    ctl = SignalController(two_phase())
    plans = {t: two_phase(mode, green=g, plan_id=i + 2) for i, (t, g, mode) in enumerate(commands)}
    seen = _clearances(ctl, 500.0, plans)
    assert seen, "the run must contain clearance intervals"
    for kind, measured, configured in seen:
        assert abs(measured - configured) < 1e-6, f"{kind} lasted {measured} s, configured {configured} s"
    assert ctl.plan_changes, "at least one plan must have taken effect"


def test_plan_takes_effect_at_the_phase_boundary() -> None:
    ctl = SignalController(two_phase())
    run(ctl, 10.0)
    ctl.command(two_phase(green=15.0, plan_id=7, offset=15.0))  # phase 2 due at 15 + 20 = 35 s: no transition
    run(ctl, 34.9)
    assert ctl.plan.plan_id == 1  # still in the old plan's clearance
    run(ctl, 35.1)
    assert ctl.plan.plan_id == 7
    assert ctl.plan_changes == [(35.0, 7)]
    run(ctl, 50.5)  # new green of 15 s for phase 2 ended at 50 s
    assert ctl.state(3) is LightState.YELLOW


@settings(max_examples=40, deadline=None)
@given(st.floats(1.0, 200.0), st.floats(12.0, 45.0), st.floats(0.0, 100.0))
def test_a_new_offset_is_reached_by_a_transition_within_min_and_max_green(at: float, green: float, offset: float) -> None:
    ctl = SignalController(two_phase())
    run(ctl, at)
    new = two_phase(green=green, offset=offset, plan_id=9)
    ctl.command(new)
    starts: list[float] = []  # phase 1 green starts under the new plan
    greens: list[float] = []
    t = ctl.t
    while t < at + 8 * 100.0:
        t = round(t + 0.1, 6)
        before = (ctl.k, ctl.interval, ctl.interval_start)
        ctl.step(t)
        if ctl.plan is new and ctl.interval is Interval.GREEN and (ctl.k, ctl.interval, ctl.interval_start) != before:
            greens.append(ctl.green_s)
            if ctl.k == 0:
                starts.append(ctl.interval_start)
    assert all(10.0 - 1e-9 <= g <= 50.0 + 1e-9 for g in greens)  # never outside min/max green
    late = [min((s - offset) % new.cycle_s, -(s - offset) % new.cycle_s) for s in starts]
    assert late[-1] < 1e-6, f"phase 1 starts {late} s off the offset"
    assert late[-2] < 1e-6  # and it stays aligned


def test_actuated_gaps_out_without_demand() -> None:
    ctl = SignalController(two_phase(Mode.ACTUATED))
    run(ctl, 10.5)  # min green 10 s, passage 3 s, no calls: green ends at min green
    assert ctl.interval is Interval.YELLOW
    assert abs(ctl.interval_start - 10.0) < 1e-9
    assert ctl.green_ended_by == "gap"


def test_actuated_extends_to_max_green_under_continuous_demand() -> None:
    ctl = SignalController(two_phase(Mode.ACTUATED))
    run(ctl, 49.0, calls=frozenset({1, 2}))
    assert ctl.interval is Interval.GREEN
    run(ctl, 50.5, calls=frozenset({1, 2}))
    assert ctl.interval is Interval.YELLOW
    assert abs(ctl.interval_start - 50.0) < 1e-9
    assert ctl.green_ended_by == "max"


def test_actuated_gap_out_after_the_last_call() -> None:
    ctl = SignalController(two_phase(Mode.ACTUATED))
    run(ctl, 20.0, calls=frozenset({1}))
    run(ctl, 24.0)  # last call at 20.0 s, passage 3 s: green ends at 23.0 s
    assert ctl.interval is Interval.YELLOW
    assert abs(ctl.interval_start - 23.0) < 0.1 + 1e-9


def test_actuated_timing_brackets_the_end() -> None:
    ctl = SignalController(two_phase(Mode.ACTUATED))
    run(ctl, 5.0, calls=frozenset({1}))
    tm = ctl.timing(1)
    assert tm.min_end_s == 10.0
    assert tm.max_end_s == 50.0
    assert tm.min_end_s <= tm.likely_end_s <= tm.max_end_s


def test_priority_extends_the_green_to_cover_the_arrival() -> None:
    ctl = SignalController(two_phase())
    run(ctl, 25.0)
    assert ctl.request_priority(2, arrival_s=33.0) == "extension"
    assert ctl.timing(2).likely_end_s == 36.0  # arrival + 3 s to clear
    run(ctl, 35.9)
    assert ctl.state(2) is LightState.PROTECTED_GREEN  # would have turned yellow at 30 s
    run(ctl, 36.1)
    assert ctl.state(2) is LightState.YELLOW
    assert ctl.request_priority(2, arrival_s=200.0) != "extension"  # not green now: early green later


def test_priority_ends_the_conflicting_green_early_but_not_before_min_green() -> None:
    ctl = SignalController(two_phase())
    run(ctl, 4.0)
    assert ctl.request_priority(3, arrival_s=40.0) == "early_green"
    assert ctl.timing(3).likely_end_s == 15.0  # min green 10 s, then 3 s yellow and 2 s all-red
    run(ctl, 9.9)
    assert ctl.state(2) is LightState.PROTECTED_GREEN  # min green is kept
    run(ctl, 10.1)
    assert ctl.state(2) is LightState.YELLOW
    run(ctl, 14.9)
    assert ctl.state(3) is LightState.RED  # the yellow and the all-red are kept whole
    run(ctl, 15.1)
    assert ctl.state(3) is LightState.PROTECTED_GREEN  # instead of at 35 s


def test_priority_skips_the_phases_in_between() -> None:
    three = Plan(1, Mode.ACTUATED, tuple(
        PhaseTiming(frozenset({g}), 20.0, 3.0, 2.0, 8.0, 40.0, phase_id=g) for g in (1, 2, 3)
    ))
    ctl = SignalController(three)
    run(ctl, 12.0, calls=frozenset({1}))
    assert ctl.request_priority(3, arrival_s=30.0) == "early_green"
    run(ctl, 17.1)  # group 1 ended at once (past its min green): yellow + all-red, then group 3
    assert ctl.state(3) is LightState.PROTECTED_GREEN
    assert ctl.state(2) is LightState.RED
    assert ctl.priority_group == 3
    run(ctl, 60.0)
    assert ctl.priority_group is None  # served: over
