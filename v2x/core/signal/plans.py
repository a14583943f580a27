"""Signal plans and controllers for a scenario's intersections, and the checks a received plan must pass."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.network import IntersectionGeom, Network
from v2x.core.scenario import Phase, Signal
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


def plan_message(plan: Plan, index: int, reason: str = "", valid_until_ms: int | None = None) -> m.SignalPlan:
    """A plan for the scenario's `index`-th intersection as the SignalPlan the cloud sends, not to be applied after
    `valid_until_ms` (UTC)."""
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
        valid_until_ms=valid_until_ms,
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


def _upper(table: type, name: str) -> float:
    """The upper bound a scenario file's field has (`spec(le=...)`): a received plan is held to the same."""
    field = next(f for f in dataclasses.fields(table) if f.name == name)
    return float(field.metadata["le"])


# Bounds of any plan: those of a scenario file's plan (v2x.core.scenario: Phase, Signal)
MAX_GREEN_S = _upper(Phase, "green_s")  # [s] longest green, and longest max green
MAX_YELLOW_S = _upper(Phase, "yellow_s")  # [s]
MAX_ALL_RED_S = _upper(Phase, "all_red_s")  # [s]
MAX_OFFSET_S = _upper(Signal, "offset_s")  # [s]


@dataclass(frozen=True)
class PlanLimits:
    """What a plan for one intersection may do, as a conflict monitor programs it (a plan that breaks any of these
    never reaches the controller):

    - only the intersection's own signal groups;
    - no two movements whose paths cross green together, unless the intersection's own phasing has them green
      together (a permissive left turn that yields to the oncoming through);
    - clearance intervals no shorter than the intersection's own: yellow, all-red, and a minimum green;
    - every duration within the bounds a scenario file's plan is held to, and green within min/max green.
    """

    intersection: str
    groups: frozenset[int]  # the intersection's group ids (as in MAP and SPaT)
    crossing: frozenset[tuple[int, int]]  # group id pairs (low, high) never green together
    min_green_s: float  # [s] the shortest min green of the intersection's own phases
    min_yellow_s: float  # [s] the shortest yellow of its own phases
    min_all_red_s: float  # [s] the shortest all-red of its own phases

    @classmethod
    def of(cls, net: Network, index: int) -> PlanLimits:
        ig = net.intersections[index]
        gid = {g.index: g.group_id for g in net.groups if g.intersection == index}
        link_group = {lk.id: lk.group for lk in net.links}
        conflicting = set()
        for c in net.conflicts:
            a, b = link_group[c.yielder], link_group[c.priority]
            if a in gid and b in gid and gid[a] != gid[b]:
                conflicting.add((min(gid[a], gid[b]), max(gid[a], gid[b])))
        together = {(min(gid[a], gid[b]), max(gid[a], gid[b])) for green in ig.phase_groups for a, b in itertools.combinations(green, 2)}
        phases = ig.spec.signal.phases
        return cls(
            ig.spec.id, frozenset(gid.values()), frozenset(conflicting - together),
            min(p.min_green_s for p in phases), min(p.yellow_s for p in phases), min(p.all_red_s for p in phases),
        )

    def problems(self, plan: Plan) -> list[str]:
        """What is wrong with `plan` for this intersection (empty: it may take effect)."""
        out = []
        if not plan.phases:
            out.append("no phases")
        if not 0.0 <= plan.offset_s <= MAX_OFFSET_S:
            out.append(f"offset {plan.offset_s:g} s (expected 0..{MAX_OFFSET_S:g})")
        for p in plan.phases:
            name = f"phase {p.phase_id}"
            unknown = sorted(p.groups - self.groups)
            if unknown:
                out.append(f"{name}: signal groups {unknown} are not {self.intersection}'s (expected some of {sorted(self.groups)})")
            both = sorted(pair for pair in itertools.combinations(sorted(p.groups), 2) if pair in self.crossing)
            if both:
                out.append(f"{name}: crossing movements green together: groups {', '.join(f'{a}+{b}' for a, b in both)}")
            for what, value, low, high in (
                ("yellow", p.yellow_s, self.min_yellow_s, MAX_YELLOW_S),
                ("all-red", p.all_red_s, self.min_all_red_s, MAX_ALL_RED_S),
                ("min green", p.min_green_s, self.min_green_s, MAX_GREEN_S),
                ("max green", p.max_green_s, self.min_green_s, MAX_GREEN_S),
            ):
                if not low <= value <= high:
                    out.append(f"{name}: {what} {value:g} s (expected {low:g}..{high:g} s)")
            if not p.min_green_s <= p.green_s <= p.max_green_s:
                out.append(f"{name}: green {p.green_s:g} s outside its min/max green ({p.min_green_s:g}..{p.max_green_s:g} s)")
        return out
