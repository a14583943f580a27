"""Signal plans and controllers for a scenario's intersections."""

from __future__ import annotations

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.network import IntersectionGeom, Network
from v2x.core.signal.controller import Mode, PhaseTiming, Plan, SignalController


def scenario_plan(net: Network, ig: IntersectionGeom, mode: Mode, plan_id: int = 1) -> Plan:
    """The intersection's plan from its scenario signal table; group ids are those of MAP/SPaT."""
    sig = ig.spec.signal
    phases = []
    for k, (ph, green, permissive) in enumerate(zip(sig.phases, ig.phase_groups, ig.phase_permissive, strict=True)):
        phases.append(
            PhaseTiming(
                groups=frozenset(net.groups[g].group_id for g in green),
                green_s=ph.green_s,
                yellow_s=ph.yellow_s,
                all_red_s=ph.all_red_s,
                min_green_s=ph.min_green_s,
                max_green_s=ph.max_green_s,
                permissive=frozenset(net.groups[g].group_id for g in permissive),
                phase_id=k + 1,
            )
        )
    return Plan(plan_id, mode, tuple(phases), offset_s=sig.offset_s, passage_s=sig.passage_s)


def controllers(net: Network, mode: Mode | None = None, t0: float = 0.0) -> list[SignalController]:
    """One controller per intersection, in the scenario's order. `mode` defaults to the scenario policy."""
    if mode is None:
        mode = Mode.ACTUATED if net.scenario.control.policy == "actuated" else Mode.FIXED
    return [SignalController(scenario_plan(net, ig, mode), t0) for ig in net.intersections]


def plan_message(plan: Plan, index: int, reason: str = "") -> m.SignalPlan:
    """A plan for the scenario's `index`-th intersection as the SignalPlan the cloud sends."""
    return m.SignalPlan(
        intersection=intersection_ref(index),
        plan_id=plan.plan_id,
        mode=m.ControlMode.ACTUATED if plan.mode is Mode.ACTUATED else m.ControlMode.FIXED_TIME,
        cycle_s=plan.cycle_s,
        offset_s=plan.offset_s,
        phases=tuple(
            m.PhasePlan(
                phase_id=p.phase_id, signal_groups=tuple(sorted(p.groups)), green_s=p.green_s, yellow_s=p.yellow_s,
                all_red_s=p.all_red_s, min_green_s=p.min_green_s, max_green_s=p.max_green_s,
            )
            for p in plan.phases
        ),
        reason=reason,
    )


def plan_from_message(p: m.SignalPlan, permissive: frozenset[int] = frozenset(), passage_s: float = 3.0) -> Plan:
    """A received SignalPlan as a controller plan. `permissive`: the intersection's groups whose green
    is permissive (a property of its geometry, not of the plan), kept wherever the plan serves them."""
    mode = Mode.ACTUATED if p.mode is m.ControlMode.ACTUATED else Mode.FIXED
    phases = tuple(
        PhaseTiming(
            frozenset(ph.signal_groups), ph.green_s, ph.yellow_s, ph.all_red_s, ph.min_green_s, ph.max_green_s,
            permissive=frozenset(ph.signal_groups) & permissive, phase_id=ph.phase_id,
        )
        for ph in p.phases
    )
    return Plan(p.plan_id, mode, phases, offset_s=p.offset_s, passage_s=passage_s)
