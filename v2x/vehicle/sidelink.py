"""V2V: what each vehicle hears of its neighbours' BSMs over the sidelink.

A fleet has one V2V radio, a single MQTT subscription to every BSM in the area: each BSM's
bytes are kept as its sender's latest (the sender is the topic's last level), and decoded
once, when an application first asks for them (most are never asked for). Whether a given
vehicle heard it is decided then: the two must be within the sidelink's range, and the
message survives the sidelink's distance-dependent loss, drawn per receiver and message
(`v2x.net.impair`), as if each OBU had received it over PC5. Bad bytes are counted when decoded.
Relative geometry (who is ahead in whose lane) comes from map matching the BSM positions,
which the core's lane topology gives exactly; the kinematics an application acts on (speed,
braking, event flags) come from the BSM heard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from v2x.core import messages as m
from v2x.net.impair import Impairment
from v2x.net.reception import BadInput

if TYPE_CHECKING:
    from v2x.core.trust import TrustRules
    from v2x.net.signing import Verifier

HOP = "vehicle->vehicle"


@dataclass
class Heard:
    topic: str
    payload: bytes  # the bytes, decoded on first use; also the per-receiver loss draw's input
    at_s: float  # [s] sim time it arrived
    bsm: m.Bsm | None = None
    bad: bool = False


class Neighbours:
    """The latest BSM of each vehicle, and what any vehicle heard of it."""

    def __init__(
        self, range_m: float, impairment: Impairment | None = None, max_age_s: float = 1.0, bad: BadInput | None = None
    ) -> None:
        self.range_m = range_m
        self.impairment = impairment
        self.max_age_s = max_age_s  # [s] an older BSM is not acted on
        self.bad = bad or BadInput("v2v")
        self.latest: dict[str, Heard] = {}  # sender id -> its latest BSM
        self.lost = 0  # (receiver, BSM) pairs the sidelink lost when an application asked
        # who may send a BSM, and the clock skew allowed (v2x.core.trust), judged against the receiver's UTC clock [us]
        self.trust: TrustRules | None = None
        self.utc_us: Callable[[], int] | None = None
        self.verifier: Verifier | None = None  # signed messages (v2x.net.signing): a BSM is verified when first decoded

    def add(self, topic: str, payload: bytes, at_s: float) -> None:
        """A BSM as it arrived; its sender is the topic's last level."""
        self.latest[topic.rsplit("/", 1)[-1]] = Heard(topic, payload, at_s)

    def _bsm(self, sender: str, got: Heard) -> m.Bsm | None:
        if got.bsm is None and not got.bad:
            frame = self.bad.decode(got.topic, got.payload)
            if frame is None or not isinstance(frame.body, m.Bsm) or frame.header.sender_id != sender:
                got.bad = True
                if frame is not None:
                    self.bad.record("wrong_type" if not isinstance(frame.body, m.Bsm) else "wrong_sender", got.topic,
                                    m.message_type(frame.body).value, frame.header.sender_id)
            elif (rejected := self._rejected(got.topic, got.payload, frame)) is not None:
                got.bad = True
                self.bad.record(rejected[0], got.topic, rejected[1], frame.header.sender_id)
            else:
                got.bsm = frame.body
        return got.bsm

    def _rejected(self, topic: str, payload: bytes, frame: m.Frame) -> tuple[str, str] | None:
        """Why a BSM heard is not acted on, as (kind, detail): its sender is not the vehicle its topic names, it is
        from the future or expired on the receiver's clock, or (signed) unsigned, forged, replayed...; or None.
        The same checks, in the same order, as every other receiver's (v2x.net.reception)."""
        now_us = None if self.utc_us is None else self.utc_us()
        if self.trust is not None:
            why = self.trust.judged(topic, frame)
            if why is not None:
                return "wrong_sender", why
            if now_us is not None and (ahead := self.trust.ahead_us(frame, now_us)) > self.trust.clock_skew_us:
                return "from_the_future", f"{ahead / 1e6:.3f} s ahead of this receiver's clock"
        if now_us is not None and now_us - frame.header.gen_time_us > self.max_age_s * 1e6:
            return "expired", f"{(now_us - frame.header.gen_time_us) / 1e3:.0f} ms old (expires after {self.max_age_s:g} s)"
        if self.verifier is None or now_us is None:
            return None
        rejected = self.verifier.check(payload, frame, now_us, "v2v")
        return None if rejected is None else (rejected, f"{rejected.replace('_', ' ')} (bsm)")

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
        return self._bsm(sender, got)
