"""What every receiver does with what arrives before acting on it: one place for every service.

A bad payload never stops a service: it is counted per kind (DecodeError kinds, plus
"wrong_type" and the like that services add) and logged once per kind and sender.
`Reception` adds measurement (latency per hop and type, loss and duplicates per stream,
v2x.metrics) and enforces expiry from the header time (MQTT 3.1.1 carries no expiry;
on MQTT 5 the broker also drops expired messages, so behaviour is the same).
"""

from __future__ import annotations

import logging
from collections import Counter

from v2x import codec
from v2x import messages as m
from v2x.errors import DecodeError
from v2x.metrics import Measurements
from v2x.station import Clock
from v2x.transport import Message

log = logging.getLogger(__name__)


class BadInput:
    """Counts rejected input per kind; logs the first of each kind from each sender."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def record(self, kind: str, topic: str, detail: str, sender: str = "?") -> None:
        self.counts[kind] += 1
        if (kind, sender) not in self._logged:
            self._logged.add((kind, sender))
            log.warning("%s: bad input (%s) on %s from %s: %s", self.owner, kind, topic, sender, detail)

    def decode(self, topic: str, payload: bytes) -> m.Frame | None:
        """The frame, or None after counting why not."""
        try:
            return codec.decode(payload)
        except DecodeError as e:
            self.record(e.kind, topic, str(e), sender=topic.rsplit("/", 1)[-1])
            return None


MAX_AGE_S = {"bsm": 1.0, "spat": 1.0, "rsm": 1.0}  # [s] the expiry these are published with


class Reception:
    """Decode, measure, and drop duplicates and expired messages, counting each."""

    def __init__(self, owner: str, kind: m.SenderKind, clock: Clock) -> None:
        self.owner = owner
        self.kind = kind.name.lower()
        self.clock = clock
        self.bad = BadInput(owner)
        self.measure = Measurements()

    def accept(self, msg: Message, receiver: str | None = None) -> m.Frame | None:
        """The frame to act on, or None (bad, duplicate or expired: counted). `receiver`: who, in a fleet."""
        frame = self.bad.decode(msg.topic, msg.payload)
        if frame is None:
            return None
        h = frame.header
        mtype = m.message_type(frame.body).value
        age_us = self.clock.receipt_us(msg) - h.gen_time_us
        # a retained message delivered on subscribing is as old as it is: no measure of the link
        latency = None if msg.retain else age_us
        hop = f"{h.sender_kind.name.lower()}->{self.kind}"
        if not self.measure.record(receiver or self.owner, msg.topic, mtype, hop, h.seq, h.gen_time_us, latency):
            return None
        max_age = MAX_AGE_S.get(mtype)
        if max_age is not None and age_us > max_age * 1e6:
            self.bad.record("expired", msg.topic, f"{age_us / 1e3:.0f} ms old (expires after {max_age:g} s)", h.sender_id)
            return None
        return frame
