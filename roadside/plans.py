"""Signal plans and controllers for a scenario's intersections."""

from __future__ import annotations

from roadside.signal import Mode, PhaseTiming, Plan, SignalController
from v2x.network import IntersectionGeom, Network


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
