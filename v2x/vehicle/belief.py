"""What a vehicle believes each signal shows, from the SPaT it has received.

A vehicle keeps the latest IntersectionState per intersection, from either path (the RSU's
sidelink or the cloud's cellular relay), and uses the fresher. Between messages it follows
the countdown: past the current state's likely end it takes the next state (unless the
scenario says OBUs do not: `fleet.spat_countdown = false`, then the state as heard, reacted to
`fleet.reaction_s` after hearing it, as a driver does). SPaT older
than the staleness threshold, or never received, is unknown, which the core treats as red.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2x.core import messages as m
from v2x.core.traffic import Light, light_of


@dataclass(frozen=True)
class Received:
    state: m.IntersectionState
    at_s: float  # [s] sim time the timing counts from (the SPaT's timestamp, in sim time)
    path: str  # "rsu" or "cloud"


class SignalBelief:
    """One vehicle's view of the signals around it."""

    def __init__(self, stale_s: float, countdown: bool = True, reaction_s: float = 0.0) -> None:
        self.stale_s = stale_s
        # False: the state as heard (a driver reading a relayed signal head), acted on `reaction_s` after hearing it
        self.countdown = countdown
        self.reaction_s = reaction_s
        self.latest: dict[int, Received] = {}  # intersection wire id -> latest SPaT
        self._reacting: dict[int, list[tuple[float, Received]]] = {}  # without countdown: (acted on from, SPaT)
        # without countdown: per (intersection, group), whether the latest SPaT heard shows yellow, and when the
        # yellow last heard begin ends by the driver's reckoning (heard, plus the yellow's length)
        self._yellow_heard: dict[tuple[int, int], bool] = {}
        self._yellow_end: dict[tuple[int, int], float] = {}

    def receive(self, state: m.IntersectionState, at_s: float, path: str, now_s: float | None = None) -> None:
        """Keep the fresher of what we have and what arrived (by the time it counts from); `now_s`: when heard."""
        self.take(Received(state, at_s, path), now_s)

    def take(self, got: Received, now_s: float | None = None) -> None:
        """As `receive`, with what arrived already made (immutable: the vehicles hearing one SPaT can share it)."""
        state, at_s = got.state, got.at_s
        old = self.latest.get(state.ref.id)
        if old is None or at_s >= old.at_s:
            self.latest[state.ref.id] = got
            if not self.countdown:
                heard = at_s if now_s is None else now_s
                queue = self._reacting.setdefault(state.ref.id, [])
                queue.append((heard + self.reaction_s, got))
                # what was ready a staleness threshold before hearing supersedes the older: the steps that ask
                # (at their own sim time) may lag the clock that heard it (real time), so keep what they may need
                _keep_from_latest_ready(queue, heard - self.stale_s)
                for mv in state.states:
                    key = (state.ref.id, mv.signal_group)
                    ev = mv.events[0] if mv.events else None
                    yellow = ev is not None and light_of(ev.state) == Light.YELLOW
                    if yellow and not self._yellow_heard.get(key, False):
                        end = ev.timing.likely_end_s if ev is not None and ev.timing is not None else None
                        self._yellow_end[key] = heard + end if end is not None else float("inf")
                    self._yellow_heard[key] = yellow

    def light(self, intersection_id: int, group_id: int, now_s: float) -> Light:
        got = self.latest.get(intersection_id)
        if got is None or now_s - got.at_s > self.stale_s:
            return Light.UNKNOWN
        if not self.countdown:
            return self._as_heard(intersection_id, group_id, now_s)
        for mv in got.state.states:
            if mv.signal_group == group_id:
                return _light_at(mv, now_s - got.at_s)
        return Light.UNKNOWN

    def yellow_left(self, intersection_id: int, group_id: int, now_s: float) -> float:
        """The seconds a yellow this vehicle believes it sees has left, by what it knows (inf: unknown).
        With the countdown: the SPaT's own, counted from its timestamp. As heard: a driver knows how long a yellow
        lasts (a fixed, posted interval: 3 s on the bundled junctions; here the first SPaT heard showing it), and
        counts it from when they saw it begin, so a late message makes them think they have longer than they do."""
        if not self.countdown:
            return max(self._yellow_end.get((intersection_id, group_id), float("inf")) - now_s, 0.0)
        got = self.latest.get(intersection_id)
        if got is None:
            return float("inf")
        for mv in got.state.states:
            if mv.signal_group == group_id:
                shown = _shown(mv, now_s - got.at_s)
                end = _end(shown) if shown is not None and light_of(shown.state) == Light.YELLOW else None
                if end is not None and got.at_s + end > now_s:
                    return got.at_s + end - now_s
        return float("inf")

    def _as_heard(self, intersection_id: int, group_id: int, now_s: float) -> Light:
        """The state of the latest SPaT heard at least the reaction time ago."""
        queue = self._reacting.get(intersection_id, [])
        _keep_from_latest_ready(queue, now_s)
        if not queue or queue[0][0] > now_s + 1e-9:
            return Light.UNKNOWN  # heard, not yet reacted to
        for mv in queue[0][1].state.states:
            if mv.signal_group == group_id:
                return light_of(mv.events[0].state) if mv.events else Light.UNKNOWN
        return Light.UNKNOWN


def _keep_from_latest_ready(queue: list[tuple[float, Received]], now_s: float) -> None:
    """Drop what an entry already reacted to by `now_s` supersedes: the queue starts at the latest one ready."""
    ready = 0
    while ready < len(queue) and queue[ready][0] <= now_s + 1e-9:
        ready += 1
    del queue[: max(ready - 1, 0)]


def _end(ev: m.MovementEvent) -> float | None:
    """When an event likely ends [s from its SPaT's timestamp], if said."""
    return ev.timing.likely_end_s if ev.timing is not None else None


def _shown(mv: m.MovementState, age_s: float) -> m.MovementEvent | None:
    """The event a movement shows `age_s` after its SPaT's timestamp, following the countdown (None: none)."""
    if not mv.events:
        return None
    end = _end(mv.events[0])
    if end is None or age_s < end - 1e-9 or len(mv.events) < 2:
        return mv.events[0]
    return mv.events[1]


def _light_at(mv: m.MovementState, age_s: float) -> Light:
    """The state a movement shows `age_s` after its SPaT's timestamp, following the countdown."""
    shown = _shown(mv, age_s)
    return Light.UNKNOWN if shown is None else light_of(shown.state)
