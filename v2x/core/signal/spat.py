"""SPaT from a signal controller: per signal group, the current state and what comes next."""

from __future__ import annotations

import functools

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.network import Network
from v2x.core.signal.controller import Mode, SignalController

_HORIZON_S = 3600.0  # [s] the wire's countdowns reach at most an hour (36000 tenths)


def _rel(t_abs: float, now: float) -> float:
    """An absolute sim time [s] as a countdown from now, clipped to the wire's range and 0.1 s."""
    return round(min(max(t_abs - now, 0.0), _HORIZON_S), 1)


@functools.lru_cache(maxsize=4096)
def _event(state: m.LightState, start_s: float | None, min_end_s: float | None = None, max_end_s: float | None = None,
           likely_end_s: float | None = None, confidence: int = 0) -> m.MovementEvent:
    """One movement event, kept: groups red until the same time share theirs, and each RSU builds a SPaT every 0.1 s."""
    return m.MovementEvent(state, m.TimeChange(start_s=start_s, min_end_s=min_end_s, max_end_s=max_end_s,
                                               likely_end_s=likely_end_s, confidence=confidence))


def intersection_state(
    net: Network, index: int, ctl: SignalController, timestamp_ms: int, revision: int = 0, name: str | None = None,
) -> m.IntersectionState:
    """The controller's state at its current time, as one SPaT IntersectionState.

    `timestamp_ms` is the UTC time the countdowns count from (the controller's current time); `name`: the
    intersection's, when it is not one of `net`'s (a SUMO junction's).
    """
    now = ctl.t
    confidence = 15 if ctl.plan.mode is Mode.FIXED else 10
    states = []
    for g in sorted(ctl.groups):
        tm = ctl.timing(g)
        likely = _rel(tm.likely_end_s, now)
        current = _event(tm.state, 0.0, _rel(tm.min_end_s, now), _rel(tm.max_end_s, now), likely, confidence)
        states.append(m.MovementState(g, (current, _event(tm.next_state, likely))))
    status = {m.IntersectionStatus.FIXED_TIME if ctl.plan.mode is Mode.FIXED else m.IntersectionStatus.TRAFFIC_DEPENDENT}
    if ctl.priority_group is not None:
        status.add(m.IntersectionStatus.SIGNAL_PRIORITY_ACTIVE)
    return m.IntersectionState(
        ref=intersection_ref(index),
        name=net.intersections[index].spec.id if name is None else name,
        revision=revision % 128,
        status=frozenset(status),
        timestamp_ms=timestamp_ms,
        plan_id=ctl.plan.plan_id,
        states=tuple(states),
    )
