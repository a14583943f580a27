"""Cloud signal-control policy: plain, synchronous functions from what the cloud measured to plans.

The adaptive policy retimes each intersection once a cycle from the arrivals and the residual
queues the cloud estimated from BSMs (cloud.service):

  1. each phase's critical flow ratio y = max over the approaches it serves of
     (arrivals + residual queue cleared over three cycles) / (lanes x saturation flow);
  2. the cycle: the scenario's, lengthened while queues stay through whole cycles and
     shortened back when they clear, and long enough that the split below respects the min
     greens; one common cycle for intersections linked by roads, so they can be coordinated.
     (Webster's optimum cycle (1.5 L + 5) / (1 - Y) needs the true saturation flow; with
     shared lanes and permissive left turns it is far below the textbook 1,800 veh/h/lane,
     and the textbook value gives cycles too short to serve the left turns.)
  3. the effective green C - L split in proportion to y (Webster's split; HCM 2010 ch. 31),
     within each phase's min/max green; L = yellow + all-red per cycle;
  4. on a corridor, offsets for a green wave in the direction with the heavier arterial flow:
     the downstream through green starts a link travel time (at the speed limit) after the
     upstream one.

The controller walks into new offsets within min/max green (v2x.core.signal.controller), so coordination
survives retiming.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from v2x.core.network import Network
from v2x.core.signal.controller import Mode, Plan
from v2x.core.signal.plans import scenario_plan

SATURATION_VPHPL = 1800.0  # [veh/h/lane] the core's measured queue discharge is ~1,820 (bench.traffic)
MAX_CYCLE_S = 120.0  # [s] the longest cycle the policy sets
RESIDUAL_CYCLES = 3.0  # a residual queue is planned to clear over this many cycles
CYCLE_GROW = 0.10  # per cycle while a residual queue stays
CYCLE_SHRINK = 0.05  # per cycle once none does
RESIDUAL_MIN = 2  # vehicles standing through a whole cycle that make an approach oversaturated
GREEN_STEP_S = 2.0  # [s] smaller changes of green are not worth a new plan
MINOR_SHARE = 0.1  # a phase with less than this share of the demand just gets its min green


@dataclass(frozen=True)
class Approach:
    """What the cloud measured on one approach."""

    lanes: int
    arrivals_vph: float  # [veh/h] vehicles entering it, over the measuring window
    residual: float = 0.0  # vehicles that stayed queued through the whole last cycle


def phase_ratios(phase_legs: Sequence[Sequence[str]], approaches: Mapping[str, Approach], cycle_s: float) -> list[float]:
    """Each phase's critical flow ratio y from the approaches (by leg) it serves."""
    out = []
    for legs in phase_legs:
        y = 0.0
        for leg in legs:
            a = approaches.get(leg)
            if a is None:
                continue
            flow = a.arrivals_vph + a.residual * 3600.0 / (RESIDUAL_CYCLES * cycle_s)
            y = max(y, flow / (max(a.lanes, 1) * SATURATION_VPHPL))
        out.append(y)
    return out


def lost_time_s(plan: Plan) -> float:
    return sum(p.yellow_s + p.all_red_s for p in plan.phases)


def cycle_s(plan: Plan, ratios: Sequence[float], current_s: float, oversaturated: bool) -> float:
    """The next cycle: the scenario's cycle, lengthened by 10% a cycle while queues stay
    (oversaturated) and shortened by 5% a cycle back towards it when they clear (SCATS-like);
    always long enough that the split in proportion to the ratios gives each phase carrying real
    demand its min green (on a shorter cycle the min greens bind and the split stops following
    demand); within the sum of min and max greens."""
    lost = lost_time_s(plan)
    c = current_s * (1.0 + CYCLE_GROW) if oversaturated else current_s * (1.0 - CYCLE_SHRINK)
    c = max(c, plan.cycle_s)
    total = sum(ratios)
    for p, r in zip(plan.phases, ratios, strict=True):
        if total > 0 and r >= MINOR_SHARE * total:
            c = max(c, lost + p.min_green_s * total / r)
    lo = lost + sum(p.min_green_s for p in plan.phases)
    hi = min(lost + sum(p.max_green_s for p in plan.phases), max(MAX_CYCLE_S, lo))
    return float(round(min(max(c, lo), hi)))


def split_greens(plan: Plan, ratios: Sequence[float], cycle_s: float) -> list[float]:
    """The effective green C - L shared in proportion to the ratios, each within its min/max green."""
    phases = plan.phases
    greens = [0.0] * len(phases)
    free = list(range(len(phases)))
    budget = cycle_s - lost_time_s(plan)
    while free:
        weights = [max(ratios[i], 1e-6) for i in free]
        total = sum(weights)
        share = {i: budget * w / total for i, w in zip(free, weights, strict=True)}
        clamped = [i for i in free if not phases[i].min_green_s <= share[i] <= phases[i].max_green_s]
        if not clamped:
            for i in free:
                greens[i] = share[i]
            break
        for i in clamped:  # fix these at their limit and share the rest again
            greens[i] = min(max(share[i], phases[i].min_green_s), phases[i].max_green_s)
            budget -= greens[i]
            free.remove(i)
    # to 0.1 s, keeping the sum (a common cycle must stay common): the longest green takes the rounding
    total = sum(greens)
    out = [round(g, 1) for g in greens]
    k = max(range(len(out)), key=lambda i: out[i])
    out[k] = round(out[k] + total - sum(out), 6)
    return out


def retime(plan: Plan, ratios: Sequence[float], cycle_s: float, plan_id: int, offset_s: float | None = None) -> Plan:
    """The plan with Webster's split of `cycle_s`, fixed time, as plan `plan_id`."""
    greens = split_greens(plan, ratios, cycle_s)
    phases = tuple(replace(p, green_s=g) for p, g in zip(plan.phases, greens, strict=True))
    new = replace(plan, plan_id=plan_id, mode=Mode.FIXED, phases=phases)
    return replace(new, offset_s=(plan.offset_s if offset_s is None else offset_s) % new.cycle_s)


def green_start_s(plan: Plan, group: int) -> float:
    """When `group`'s green starts within the cycle, counted from phase 1's start."""
    t = 0.0
    for p in plan.phases:
        if group in p.groups:
            return t
        t += p.duration_s
    return 0.0


@dataclass(frozen=True)
class Link:
    """A road between two intersections, one way: through traffic leaves `up` by `up_group` and
    reaches `down`, where `down_group` serves it."""

    up: int  # intersection index
    down: int
    up_group: int  # group id at `up`: the through movement that drives onto the link
    down_group: int  # group id at `down`: the through movement of the approach the link feeds
    travel_s: float  # [s] at the speed limit
    flow_vph: float  # [veh/h] measured arrivals at `down` on that approach


def progression_offsets(plans: Sequence[Plan], links: Sequence[Link], anchors: Mapping[int, float]) -> list[float]:
    """Offsets [s]: each anchor intersection keeps the offset given; the ones linked to it by roads get
    a green wave along each road in its heavier direction. `links` holds both directions of each road."""
    offsets = [p.offset_s for p in plans]
    best: dict[frozenset[int], Link] = {}
    for ln in links:
        key = frozenset((ln.up, ln.down))
        if key not in best or ln.flow_vph > best[key].flow_vph:
            best[key] = ln
    done = set(anchors)
    todo = list(anchors)
    for i, off in anchors.items():
        offsets[i] = off % plans[i].cycle_s
    while todo:
        i = todo.pop()
        for ln in best.values():
            if i not in (ln.up, ln.down):
                continue
            j = ln.down if ln.up == i else ln.up
            if j in done:
                continue
            if ln.up == i:  # the downstream through green starts travel_s after the upstream one
                start = offsets[i] + green_start_s(plans[i], ln.up_group) + ln.travel_s
                offsets[j] = start - green_start_s(plans[j], ln.down_group)
            else:  # j is upstream: its through green starts travel_s before ours
                start = offsets[i] + green_start_s(plans[i], ln.down_group) - ln.travel_s
                offsets[j] = start - green_start_s(plans[j], ln.up_group)
            offsets[j] %= plans[j].cycle_s
            done.add(j)
            todo.append(j)
    return offsets


class Adaptive:
    """The adaptive policy for a whole network: once a cycle, new plans from what was measured.

    Intersections linked by roads share one cycle (the longest any of them needs) and get
    green-wave offsets; an isolated one runs its own Webster cycle."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.ids = [ig.spec.id for ig in net.intersections]  # each intersection's name, the approaches' prefix
        self.base = [scenario_plan(net, ig, Mode.FIXED) for ig in net.intersections]
        self.current = list(self.base)
        # the legs each phase serves, and the lanes of each approach ("J1.north" -> lanes)
        self.phase_legs = [
            [sorted({net.groups[g].leg for g in groups}) for groups in ig.phase_groups] for ig in net.intersections
        ]
        self.lanes = {f"{ig.spec.id}.{a.leg}": a.lanes for ig in net.intersections for a in ig.spec.approaches}
        # coordination groups: intersections joined by roads, each named by its anchor intersection
        self.group_of = net.site_of

    def _links(self, approaches: Mapping[str, Approach]) -> list[Link]:
        net = self.net
        out = []
        for (a, leg_a), (b, leg_b) in net.road_of.items():
            ia, ib = net.intersections[a], net.intersections[b]
            up = ia.groups.get((Network.exit_leg(leg_a, "through"), "through"))
            down = ib.groups.get((leg_b, "through"))
            if up is None or down is None:
                continue
            dist = math.dist(ia.center, ib.center)
            speed = ib.spec.approach(leg_b).speed_limit_kmh / 3.6  # type: ignore[union-attr]
            flow = approaches.get(f"{ib.spec.id}.{leg_b}", Approach(1, 0.0)).arrivals_vph
            out.append(Link(a, b, net.groups[up].group_id, net.groups[down].group_id, dist / speed, flow))
        return out

    def plans(self, now: float, approaches: Mapping[str, Approach]) -> list[tuple[int, Plan]]:
        """New plans for every intersection from the measured approaches ("J1.north" -> Approach), at sim time `now`.

        Returns (intersection index, plan) for the intersections whose timing changes: the same
        cycle with no green changed by GREEN_STEP_S or more keeps the current plan, so a controller
        is not put through a transition for noise in the counts. The first intersection of each
        coordination group keeps its rhythm: the new plan's phase 1 starts when the current one's
        next would (the rest follow by progression), so a change of cycle needs no transition there."""
        ratios = []
        for i, (iid, legs) in enumerate(zip(self.ids, self.phase_legs, strict=True)):
            here = {k.partition(".")[2]: a for k, a in approaches.items() if k.partition(".")[0] == iid}
            ratios.append(phase_ratios(legs, here, self.current[i].cycle_s))
        over = {k.partition(".")[0] for k, a in approaches.items() if a.residual >= RESIDUAL_MIN}
        cycles = [
            cycle_s(b, r, cur.cycle_s, iid in over)
            for b, r, cur, iid in zip(self.base, ratios, self.current, self.ids, strict=True)
        ]
        common = {g: max(c for c, gg in zip(cycles, self.group_of, strict=True) if gg == g) for g in set(self.group_of)}
        new = [
            retime(base, r, common[self.group_of[i]], self.current[i].plan_id)
            for i, (base, r) in enumerate(zip(self.base, ratios, strict=True))
        ]
        anchors = {}
        for i, cur in enumerate(self.current):
            if self.group_of[i] == i:
                anchors[i] = now + (cur.offset_s - now) % cur.cycle_s  # the current plan's next phase-1 start
        same = [
            n.cycle_s == c.cycle_s and all(abs(a.green_s - b.green_s) < GREEN_STEP_S for a, b in zip(n.phases, c.phases, strict=True))
            for n, c in zip(new, self.current, strict=True)
        ]
        if all(same):
            return []
        new = [c if keep else n for n, c, keep in zip(new, self.current, same, strict=True)]
        offsets = progression_offsets(new, self._links(approaches), anchors)
        changed = []
        for i, (p, o) in enumerate(zip(new, offsets, strict=True)):
            if not same[i] or abs(o - p.offset_s) > 1e-6:
                self.current[i] = replace(p, offset_s=o, plan_id=self.current[i].plan_id % 65535 + 1)
                changed.append((i, self.current[i]))
        return changed
