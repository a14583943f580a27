"""A SUMO traffic light's program as our controller's plan, and light states both ways (docs/sumo.md).

The RSU's controller is the one source of truth and drives SUMO's light: a program is imported into a `Plan`
(`program_plan`) whose signal groups are the light's link indices + 1 (MAP and SPaT number groups from 1), and
what the controller shows is written into SUMO as a state string (`sumo_state`).

A program fits our controller when it is a ring of greens, each followed by its yellow and then all-red time:
netconvert's and netgenerate's programs are. A link green in two greens in a row stays green through the
transition between them, as our controller's overlaps do, unless the program clears it there (yellow, then red:
netconvert's programs with an all-red do, and a program of one green does): then the phase `clears` it. Anything else (red-yellow `u`, blinking, a program
the plan does not reproduce step for step) is refused with the light and the phase named.
"""

from __future__ import annotations

from v2x.core.errors import ScenarioError
from v2x.core.messages import LightState
from v2x.core.signal.controller import Mode, PhaseTiming, Plan, SignalController
from v2x.sumo.netfile import TlsPhase, TrafficLight

#: SUMO's light characters <-> SPaT's states
STATE_OF_CHAR = {"G": LightState.PROTECTED_GREEN, "g": LightState.PERMISSIVE_GREEN, "y": LightState.YELLOW, "r": LightState.RED}
CHAR_OF_STATE = {state: char for char, state in STATE_OF_CHAR.items()}
MIN_GREEN_S, MAX_GREEN_S = 5.0, 60.0  # [s] a static program's green bounds (the scenario defaults), widened to fit it


def group_of(link_index: int) -> int:
    """The MAP/SPaT signal group of a link index."""
    return link_index + 1


def light_states(state: str) -> dict[int, LightState]:
    """A SUMO state string as SPaT states by signal group (a character we do not map: unavailable)."""
    return {group_of(i): STATE_OF_CHAR.get(c, LightState.UNAVAILABLE) for i, c in enumerate(state)}


def sumo_state(states: dict[int, LightState], links: int) -> str:
    """What a controller shows, as SUMO's state string over `links` link indices (a group it does not name: red)."""
    return "".join(CHAR_OF_STATE.get(states.get(group_of(i), LightState.RED), "r") for i in range(links))


def _greens(state: str) -> frozenset[int]:
    """The signal groups a state string shows green (protected or permissive)."""
    return frozenset(group_of(k) for k, c in enumerate(state) if c in "Gg")


def _green(p: TlsPhase) -> bool:
    return "y" not in p.state and any(c in "Gg" for c in p.state)


def program_plan(tl: TrafficLight, mode: Mode = Mode.FIXED, plan_id: int = 1) -> Plan:
    """The plan that runs `tl`'s program; ScenarioError when the program does not fit our controller."""
    def refuse(why: str) -> ScenarioError:
        return ScenarioError([f"traffic light {tl.id}: {why} (expected a ring of greens, each with its yellow and all-red)"])

    odd = sorted({c for p in tl.phases for c in p.state} - set(STATE_OF_CHAR))
    if odd:
        raise refuse(f"its program shows {''.join(odd)!r}, which SPaT's states do not carry here")
    start = next((i for i, p in enumerate(tl.phases) if _green(p)), None)
    if start is None:
        raise refuse("its program has no green")
    ring = [*tl.phases[start:], *tl.phases[:start]]
    steps: list[tuple[TlsPhase, list[TlsPhase]]] = []  # each green and the yellow and red phases after it
    i = 0
    while i < len(ring):
        green, after = ring[i], list[TlsPhase]()
        i += 1
        while i < len(ring) and "y" in ring[i].state:
            after, i = [*after, ring[i]], i + 1
        while i < len(ring) and not _green(ring[i]) and "y" not in ring[i].state:
            after, i = [*after, ring[i]], i + 1
        steps.append((green, after))
    phases: list[PhaseTiming] = []
    for k, (green, after) in enumerate(steps):
        groups = _greens(green.state)
        nxt = _greens(steps[(k + 1) % len(steps)][0].state)
        lo = green.min_dur_s if green.min_dur_s is not None else min(MIN_GREEN_S, green.duration_s)
        hi = green.max_dur_s if green.max_dur_s is not None else max(MAX_GREEN_S, green.duration_s)
        phases.append(PhaseTiming(
            groups, green.duration_s, sum(p.duration_s for p in after if "y" in p.state),
            sum(p.duration_s for p in after if "y" not in p.state), lo, hi,
            permissive=frozenset(group_of(j) for j, c in enumerate(green.state) if c == "g"), phase_id=len(phases) + 1,
            # green in this green and the next, and yet cleared between them (netconvert's all-red does so)
            clears=frozenset(g for g in groups & nxt if any(p.state[g - 1] not in "Gg" for p in after)),
        ))
    cycle_s = sum(p.duration_s for p in tl.phases)
    plan = Plan(plan_id, mode, tuple(phases), offset_s=(tl.offset_s + sum(p.duration_s for p in tl.phases[:start])) % cycle_s)
    mismatch = _mismatch(tl, plan)
    if mismatch:
        raise refuse(mismatch)
    return plan


def _mismatch(tl: TrafficLight, plan: Plan) -> str:
    """Where the plan, run fixed-time, shows other than the program in the middle of one of its phases ("": nowhere)."""
    ctl = SignalController(Plan(plan.plan_id, Mode.FIXED, plan.phases, plan.offset_s), 0.0)
    t = tl.offset_s
    for k, p in enumerate(tl.phases):
        ctl.step(t + p.duration_s / 2)
        shown = sumo_state(ctl.states(), len(p.state))
        if shown != p.state:
            return f"phase {k} shows {p.state}, and the plan made from the program shows {shown} there"
        t += p.duration_s
    return ""
