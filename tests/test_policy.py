"""The cloud's adaptive signal policy: pure functions, unit-tested without a broker."""

from __future__ import annotations

import pytest

from cloud.policy import (
    Adaptive,
    Approach,
    Link,
    cycle_s,
    green_start_s,
    phase_ratios,
    progression_offsets,
    split_greens,
)
from v2x.core import scenario
from v2x.core.network import Network
from v2x.core.signal.controller import Mode, PhaseTiming, Plan


def two_phase(green: float = 30.0, offset: float = 0.0) -> Plan:
    return Plan(
        1, Mode.FIXED,
        (
            PhaseTiming(frozenset({1, 2}), green, 3.0, 2.0, 10.0, 50.0, phase_id=1),
            PhaseTiming(frozenset({3, 4}), green, 3.0, 2.0, 10.0, 50.0, phase_id=2),
        ),
        offset_s=offset,
    )


def test_ratios_take_the_critical_approach_of_each_phase() -> None:
    approaches = {"north": Approach(2, 720.0), "south": Approach(2, 360.0), "east": Approach(1, 180.0, residual=3)}
    ys = phase_ratios([["north", "south"], ["east", "west"]], approaches, cycle_s=60.0)
    assert ys[0] == pytest.approx(720.0 / (2 * 1800.0))
    assert ys[1] == pytest.approx((180.0 + 3 * 3600.0 / (3 * 60.0)) / 1800.0)  # residual cleared over three cycles


def test_greens_follow_demand_within_min_and_max() -> None:
    plan = two_phase()
    assert split_greens(plan, [0.3, 0.1], 70.0) == [45.0, 15.0]
    assert split_greens(plan, [0.3, 0.01], 70.0) == [50.0, 10.0]  # minor at its min, major at its max
    assert split_greens(plan, [0.0, 0.0], 70.0) == [30.0, 30.0]  # no demand measured: an even split
    g = split_greens(plan, [0.2137, 0.1011], 67.0)
    assert sum(g) == pytest.approx(57.0)  # the cycle is kept exactly


def test_cycle_grows_while_queues_stay_and_returns_when_they_clear() -> None:
    plan = two_phase()  # cycle 70 s
    assert cycle_s(plan, [0.2, 0.2], 70.0, oversaturated=True) == 77.0
    assert cycle_s(plan, [0.2, 0.2], 77.0, oversaturated=False) == 73.0
    assert cycle_s(plan, [0.2, 0.2], 71.0, oversaturated=False) == 70.0  # never below the scenario's
    assert cycle_s(plan, [0.2, 0.2], 110.0, oversaturated=True) == 110.0  # at most min... max greens + lost time
    # 4:1 demand: the minor phase's share must still reach its 10 s min green -> 10 + 10 * 5 = 60 s green time
    assert cycle_s(two_phase(green=15.0), [0.4, 0.1], 40.0, oversaturated=False) == 60.0


def test_progression_offsets_give_a_green_wave_in_the_heavier_direction() -> None:
    plans = [two_phase(), two_phase(), two_phase()]
    east = [Link(0, 1, 2, 1, 21.6, 800.0), Link(1, 2, 2, 1, 28.8, 700.0)]
    west = [Link(1, 0, 1, 2, 21.6, 300.0), Link(2, 1, 1, 2, 28.8, 400.0)]
    off = progression_offsets(plans, east + west, {0: 5.0})
    assert off == pytest.approx([5.0, 26.6, 55.4])
    # the same roads with heavier westbound flow: J1's green follows J2's by the travel time
    west_heavy = [Link(1, 0, 1, 2, 21.6, 900.0), Link(2, 1, 1, 2, 28.8, 900.0)]
    off = progression_offsets(plans, east + west_heavy, {0: 5.0})
    assert off == pytest.approx([5.0, (5.0 - 21.6) % 70.0, (5.0 - 21.6 - 28.8) % 70.0])
    assert green_start_s(plans[0], 3) == 35.0


def test_adaptive_gives_the_major_road_more_green_and_keeps_a_steady_plan() -> None:
    net = Network(scenario.load(scenario.resolve("four_way")))
    policy = Adaptive(net)
    measured = {
        "J1.north": Approach(2, 675.0), "J1.south": Approach(2, 600.0),
        "J1.east": Approach(2, 225.0), "J1.west": Approach(2, 200.0),
    }
    ((i, plan),) = policy.plans(100.0, measured)
    assert i == 0
    assert plan.plan_id == 2
    ns, ew = plan.phases  # four_way: phase 1 north-south, phase 2 east-west
    assert ns.green_s == pytest.approx(3 * ew.green_s, abs=1.0)
    assert ew.green_s >= ew.min_green_s
    # the phase-1 rhythm is kept: the new plan's phase 1 starts when the old one's next would (140 s)
    assert (140.0 - plan.offset_s) % plan.cycle_s == pytest.approx(0.0, abs=1e-6)
    # the same counts again: nothing worth a new plan
    assert policy.plans(100.0 + plan.cycle_s, measured) == []


def test_adaptive_on_the_corridor_shares_one_cycle_and_keeps_the_wave() -> None:
    net = Network(scenario.load(scenario.resolve("corridor")))
    policy = Adaptive(net)
    measured = {f"{j}.{leg}": Approach(2 if leg in ("east", "west") else 1, v) for j in ("J1", "J2", "J3")
                for leg, v in (("west", 800.0), ("east", 500.0), ("north", 150.0), ("south", 150.0))}
    measured["J3.north"] = Approach(1, 400.0, residual=4)  # queues stay at J3: its cycle grows, and all three follow
    plans = dict(policy.plans(80.0, measured))
    assert [p.cycle_s for p in plans.values()] == [88.0, 88.0, 88.0]
    # eastbound is heavier: J2's east-west green starts 300 m / 13.9 m/s after J1's
    lag = (plans[1].offset_s - plans[0].offset_s) % plans[0].cycle_s
    assert lag == pytest.approx(300.0 / (50.0 / 3.6), abs=0.01)
