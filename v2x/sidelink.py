"""V2V: what each vehicle hears of its neighbours' BSMs over the sidelink.

A fleet has one V2V radio, a single MQTT subscription to every BSM in the area: each BSM is
decoded once, its broker latency measured (hop vehicle->vehicle), and kept as its sender's
latest. Whether a given vehicle heard it is decided when an application asks: the two must
be within the sidelink's range, and the message survives the sidelink's distance-dependent
loss, drawn per receiver and message (`v2x.impair`), as if each OBU had received it over PC5.
Relative geometry (who is ahead in whose lane) comes from map matching the BSM positions,
which the core's lane topology gives exactly; the kinematics an application acts on (speed,
braking, event flags) come from the BSM heard.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2x import messages as m
from v2x.impair import Impairment

HOP = "vehicle->vehicle"


@dataclass(frozen=True)
class Heard:
    bsm: m.Bsm
    at_s: float  # [s] sim time it arrived
    payload: bytes  # the bytes, for the per-receiver loss draw


class Neighbours:
    """The latest BSM of each vehicle, and what any vehicle heard of it."""

    def __init__(self, range_m: float, impairment: Impairment | None = None, max_age_s: float = 1.0) -> None:
        self.range_m = range_m
        self.impairment = impairment
        self.max_age_s = max_age_s  # [s] an older BSM is not acted on
        self.latest: dict[str, Heard] = {}  # sender id -> its latest BSM
        self.lost = 0  # (receiver, BSM) pairs the sidelink lost when an application asked

    def add(self, sender: str, bsm: m.Bsm, at_s: float, payload: bytes) -> None:
        self.latest[sender] = Heard(bsm, at_s, payload)

    def forget(self, sender: str) -> None:
        self.latest.pop(sender, None)

    def heard(self, receiver: str, sender: str, distance_m: float, now_s: float) -> m.Bsm | None:
        """The sender's latest BSM if `receiver`, `distance_m` away, heard it and it is fresh; else None."""
        got = self.latest.get(sender)
        if got is None or distance_m > self.range_m or now_s - got.at_s > self.max_age_s:
            return None
        if self.impairment is not None and self.impairment.delay_s(HOP, receiver, got.payload, distance_m) is None:
            self.lost += 1
            return None
        return got.bsm
