"""SPaT from a signal controller: per signal group, the current state and what comes next."""

from __future__ import annotations

import functools

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.network import Network
from v2x.core.rsu_wire import spat_body
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
    confidence = _confidence(ctl)
    states = tuple(
        m.MovementState(g, (_event(state, 0.0, lo, hi, likely, confidence), _event(following, likely)))
        for g, state, lo, hi, likely, following in _groups(ctl)
    )
    return m.IntersectionState(
        ref=intersection_ref(index),
        name=net.intersections[index].spec.id if name is None else name,
        revision=revision % 128,
        status=_status(ctl),
        timestamp_ms=timestamp_ms,
        plan_id=ctl.plan.plan_id,
        states=states,
    )


def spat_wire(head: bytes, ctl: SignalController, timestamp_ms: int, revision: int = 0) -> bytes | None:
    """What `m.Spat((intersection_state(...),))` is in wire form (the frame's `spat` field, for `Station.relay`),
    written at once (v2x.core.rsu_wire); `head`: the intersection's id and name (`rsu_wire.spat_head`). None when a
    value is one only the codec's object path can name."""
    bits = sum(1 << int(s) for s in _status(ctl))
    return spat_body(head, revision % 128, bits, timestamp_ms, ctl.plan.plan_id, _confidence(ctl), _groups(ctl))


def _groups(ctl: SignalController) -> list[tuple[int, m.LightState, float, float, float, m.LightState]]:
    """Per signal group, in order: its state and when it ends (min, max, likely: countdowns [s] from now), and the
    state after it."""
    now = ctl.t
    rel: dict[float, float] = {}  # the groups' ends are few: most are red until the same time, and a fixed plan's
    out = []  # min, max and likely ends are one
    for g, state, lo, hi, likely, following in ctl.ends():
        ends = []
        for t in (lo, hi, likely):
            r = rel.get(t)
            if r is None:
                r = rel[t] = _rel(t, now)
            ends.append(r)
        out.append((g, state, ends[0], ends[1], ends[2], following))
    return out


def _confidence(ctl: SignalController) -> int:
    """J2735 TimeIntervalConfidence of the current state's ends: a fixed plan's are sure, an actuated one's less."""
    return 15 if ctl.plan.mode is Mode.FIXED else 10


def _status(ctl: SignalController) -> frozenset[m.IntersectionStatus]:
    status = {m.IntersectionStatus.FIXED_TIME if ctl.plan.mode is Mode.FIXED else m.IntersectionStatus.TRAFFIC_DEPENDENT}
    if ctl.priority_group is not None:
        status.add(m.IntersectionStatus.SIGNAL_PRIORITY_ACTIVE)
    return frozenset(status)
