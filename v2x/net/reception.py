"""What every receiver does with what arrives before acting on it: one place for every service.

A bad payload never stops a service: it is counted per kind (DecodeError kinds, plus
"wrong_type" and the like that services add) and logged once per kind and sender.
`Reception` adds measurement (latency per hop and type, loss and duplicates per stream,
v2x.core.metrics) and enforces expiry from the header time (MQTT 3.1.1 carries no expiry;
on MQTT 5 the broker also drops expired messages, so behaviour is the same).
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.errors import DecodeError
from v2x.core.jsonview import JsonRecord, add_counts
from v2x.core.kept import Kept
from v2x.core.metrics import Measurements
from v2x.core.topics import kind_of
from v2x.core.trust import TrustRules, latest_us, spat_names
from v2x.net.impair import Impairment
from v2x.net.signing import DUPLICATE, Verifier
from v2x.net.station import Clock
from v2x.net.transport import Message

log = logging.getLogger(__name__)


#: kinds a service's handler records about a message it accepted (the others reject a message before it is handled)
AFTER_ACCEPT = frozenset({"not_handled", "bad_plan", "bad_priority_request", "unknown_intersection", "invalid", "handler_error"})


class BadInput:
    """Counts rejected input per kind; logs the first of each kind from each sender.

    Kinds: the DecodeError kinds, "wrong_type" (not the type its topic carries), "wrong_sender" (not a sender that
    may send it there), "from_the_future" (generated beyond the allowed clock skew ahead), "expired"; and, about an
    accepted message, the AFTER_ACCEPT kinds ("not_handled": a valid type this service does not act on)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.counts: Counter[str] = Counter()
        # by the message type its topic carries: what was rejected before it was handled (so a plan refused as stale
        # or forged still shows in the plan counts)
        self.rejected_by_type: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def record(self, kind: str, topic: str, detail: str, sender: str = "?") -> None:
        self.counts[kind] += 1
        if kind not in AFTER_ACCEPT:
            self.rejected_by_type[kind_of(topic) or "other"] += 1
        if (kind, sender) not in self._logged:
            self._logged.add((kind, sender))
            log.warning("%s: bad input (%s) on %s from %s: %s", self.owner, kind, topic, sender, detail)

    def decode(self, topic: str, payload: bytes) -> m.Frame | None:
        """The frame, or None after counting why not (undecodable, or not the type its topic carries)."""
        try:
            frame = codec.decode(payload)
        except DecodeError as e:
            self.undecodable(topic, e)
            return None
        return frame if self.right_type(topic, frame, m.type_name(frame.body)) else None

    def undecodable(self, topic: str, e: DecodeError) -> None:
        """Count bytes that are no frame (named by the topic's last level: the header cannot be read)."""
        self.record(e.kind, topic, str(e), sender=topic.rsplit("/", 1)[-1])

    def right_type(self, topic: str, frame: m.Frame, mtype: str) -> bool:
        """Whether a frame (of type `mtype`) is of the type its topic carries; counted as "wrong_type" when not."""
        kind = kind_of(topic)
        if kind is None or kind == mtype:
            return True
        self.record("wrong_type", topic, f"a {mtype} message on a {kind} topic", frame.header.sender_id)
        return False

    def guard(self, topic: str, sender: str, handler: Callable[..., None], *args: Any) -> None:
        """`handler(*args)` for one message; an exception it raises is counted ("handler_error") and logged, never raised."""
        try:
            handler(*args)
        except Exception as e:  # a service must outlive any one message
            self.handler_failed(topic, sender, e)

    def handler_failed(self, topic: str, sender: str, e: Exception) -> None:
        """A handler raised `e` on a message: counted ("handler_error"), logged once per sender with its traceback."""
        self.counts["handler_error"] += 1
        if ("handler_error", sender) not in self._logged:
            self._logged.add(("handler_error", sender))
            log.error("%s: handling a message on %s from %s failed: %s", self.owner, topic, sender, e, exc_info=e)


@dataclass
class LinkDrops(JsonRecord):
    """What the impaired links took from a receiver: lost by message type, and what was still on its way at the end."""

    lost: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0

    @classmethod
    def merge(cls, parts: Iterable[LinkDrops]) -> LinkDrops:
        ps = list(parts)
        return cls(add_counts(p.lost for p in ps), sum(p.in_flight for p in ps))


DECODED_KEPT = 1024  # recently decoded payloads kept for the next receiver of the same bytes
MAX_AGE_S = {"bsm": 1.0, "spat": 1.0, "rsm": 1.0}  # [s] the expiry these are published with

Distance = Callable[[str, m.Frame], "float | None"]  # (receiver, frame) -> sidelink distance [m], if known
# what a payload decodes to, worked out once for every receiver of the same bytes: the frame, its type's name, a
# SPaT's intersections (a sender's verdict depends on them, too) and the latest time it claims [us UTC]
Decoded = tuple[m.Frame, str, tuple[str, ...], int]


def decoded(frame: m.Frame) -> Decoded:
    return frame, m.type_name(frame.body), spat_names(frame.body), latest_us(frame)


class Reception:
    """Decode, impair, measure, and drop duplicates and expired messages, counting each.

    With an `Impairment`, each message is lost or delayed as its link says; a delayed one is
    held and handed out by `due()` once its time comes (on the receiver's clock: the wall in
    real time, sim time in fast mode). Its latency is what the application sees: the
    broker's own, plus the link's.
    """

    def __init__(
        self, owner: str, kind: m.SenderKind, clock: Clock, impairment: Impairment | None = None,
        distance: Distance | None = None, max_age_s: Mapping[str, float] | None = None, trust: TrustRules | None = None,
    ) -> None:
        self.owner = owner
        self.trust = trust  # who may send what, and the clock skew allowed (v2x.core.trust); None: not checked
        self.max_age_s = {**MAX_AGE_S, **(max_age_s or {})}  # by message type: older is dropped as expired
        self.kind = kind.name.lower()
        self._hops = {k: f"{k.name.lower()}->{self.kind}" for k in m.SenderKind}  # by sender kind: "vehicle->rsu"
        self.clock = clock
        self.impairment = impairment
        self.distance = distance
        self.bad = BadInput(owner)
        self.measure = Measurements(clock.epoch_s)
        # topics taken through a shared subscription: each instance gets a share of every stream, so its
        # sequence gaps are not losses (the relay's completeness shows downstream, and in relayed counts)
        self.shared_prefix: str | None = None
        self.verifier: Verifier | None = None  # signed messages required (v2x.net.signing): rejected ones are counted by kind
        # how payloads are read: None, `codec.decode`; else `codec.skim`, an RSM skimmed too if True (a receiver that
        # only relays a SPaT and counts an RSM: the cloud, without sensors to fuse). Either reads a BSM as `decode` does
        self.skim_rsm: bool | None = None
        self.link_lost: Counter[str] = Counter()  # by message type: lost by the impaired link
        # what became of each message offered to accept(): "own", "duplicate", "held", "accepted"; the rest
        # (undecodable, wrong type, expired, link-lost) are in bad.counts and link_lost
        self.outcomes: Counter[str] = Counter()
        self._held: list[tuple[int, str, bytes, str | None, m.Frame]] = []  # heap by release time [us]
        # a fleet's vehicles hear the same SPaT bytes: decode them once (frames are immutable)
        self._decoded: Kept[bytes, Decoded | DecodeError] = Kept(DECODED_KEPT)  # and why bytes that are no frame are not

    def hop(self, kind: m.SenderKind) -> str:
        """The hop from a sender of `kind` to this receiver: "vehicle->rsu"."""
        return self._hops[kind]

    def verified(self, msg: Message, frame: m.Frame, receiver: str) -> bool:
        """Signed messages required: whether `receiver` may act on it; a rejection is counted by kind."""
        if self.verifier is None:
            return True
        h = frame.header
        # a Last Will is signed at connect time and published by the broker when the connection is lost: old by design
        will = isinstance(frame.body, m.Status) and frame.body.state is m.ServiceState.OFFLINE and frame.body.detail == m.LOST
        # DUP means something only on QoS 1 and 2 (on QoS 0 it is a protocol error: not taken to mean a copy)
        rejected = self.verifier.check(msg.payload, frame, self.clock.utc_us(), receiver, msg.retain or will, msg.dup and msg.qos > 0)
        if rejected == DUPLICATE:
            self.outcomes["duplicate"] += 1
            return False
        if rejected is not None:
            self.bad.record(rejected, msg.topic, f"{rejected.replace('_', ' ')} ({m.type_name(frame.body)})", h.sender_id)
        return rejected is None

    def _trusted(self, topic: str, got: Decoded, rx_us: int) -> bool:
        """Whether the sender may send this on this topic, and the message is not from the future (beyond the clock
        skew allowed): checked before a message is acted on or measured; a refusal is counted by kind."""
        trust = self.trust
        if trust is None:
            return True
        frame, _, names, latest = got
        h = frame.header
        why = trust.judged(topic, frame, names)  # a sender judged once on each topic, not once per message
        if why is not None:
            self.bad.record("wrong_sender", topic, why, h.sender_id)
            return False
        ahead = latest - rx_us  # trust.ahead_us, with the latest time worked out once for the bytes
        if ahead > trust.clock_skew_us:
            self.bad.record("from_the_future", topic, f"{ahead / 1e6:.3f} s ahead of this receiver's clock "
                            f"(at most {trust.clock_skew_us / 1e6:g} s allowed)", h.sender_id)
            return False
        return True

    def read_bsms(self, msgs: Sequence[Message]) -> list[Decoded | None]:
        """What each of `msgs` decodes to where it is a BSM frame the compiled reader takes, all read in one call
        (`codec.decode_bsms`: a step's BSMs, dozens to hundreds, for less than a call each), to hand `accept` as
        `read`; None for the others, decoded as they are accepted."""
        return [None if f is None else (f, "bsm", (), f.header.gen_time_us)  # `decoded(f)` of a BSM
                for f in codec.decode_bsms([msg.payload for msg in msgs])]

    def accept_bsm(self, msg: Message, got: Decoded) -> m.Frame | None:
        """`accept(msg, read=got)` of a BSM frame `read_bsms` read, on a BSM topic, for a receiver that requires no
        signature (`verifier` None): its type is its topic's and there is nothing to verify, so straight to what
        `accept` does next (a tier takes hundreds a step)."""
        return self._judged(msg, got, None)

    def _decode(self, msg: Message, read: Decoded | None = None) -> Decoded | None:
        """What a payload decodes to, or None after counting why not (undecodable, or not its topic's type); bytes
        decoded recently (or found to be no frame) are not decoded again: a fleet's vehicles get the same bytes, a
        flood's garbage too. A BSM's are not kept: each comes once to a receiver (a copy is a duplicate, counted).
        `read`: what its bytes were read to already (`read_bsms`: a BSM's, never kept)."""
        got = self._decoded.get(msg.payload) if read is None else read
        if got is None:
            try:
                frame = codec.decode(msg.payload) if self.skim_rsm is None else codec.skim(msg.payload, self.skim_rsm)
                got = decoded(frame)
            except DecodeError as e:
                got = e
            if isinstance(got, DecodeError) or got[1] != "bsm":  # a BSM's bytes come once to a receiver: not kept
                self._decoded.keep(msg.payload, got)
        if isinstance(got, DecodeError):
            self.bad.undecodable(msg.topic, got)
            return None
        return got if self.bad.right_type(msg.topic, got[0], got[1]) else None

    def checked(self, msg: Message, receiver: str) -> m.Frame | None:
        """The frame, or None after counting why not: decoded, of its topic's type, verified and trusted, as `accept`
        checks it, but neither measured nor impaired (listeners that are no vehicle: a fleet's shard-wide radio, the
        signal heads)."""
        got = self._decode(msg)
        if got is None or not self.verified(msg, got[0], receiver):
            return None
        return got[0] if self._trusted(msg.topic, got, self.clock.receipt_us(msg)) else None

    def accept(self, msg: Message, receiver: str | None = None, read: Decoded | None = None) -> m.Frame | None:
        """The frame to act on now, or None: bad, lost, duplicate or expired (counted), or held for later. `read`: what its
        payload decodes to, if read already (`read_bsms`)."""
        got = self._decode(msg, read)
        if got is None:
            return None
        if self.verifier is not None and not self.verified(msg, got[0], receiver or self.owner):  # (no call unsigned)
            return None
        return self._judged(msg, got, receiver)

    def _judged(self, msg: Message, got: Decoded, receiver: str | None) -> m.Frame | None:
        """`accept` of a message decoded, of its topic's type and verified: its sender and clock judged, its link
        applied, measured, and refused as a duplicate or expired, or held, or handed out."""
        frame, mtype = got[0], got[1]
        h = frame.header
        who = receiver or self.owner
        rx_us = self.clock.receipt_us(msg)
        if self.trust is not None and not self._trusted(msg.topic, got, rx_us):
            return None
        if h.sender_id == who:
            self.outcomes["own"] += 1
            return frame  # its own message, back from the broker: no link, nothing to measure
        hop = self._hops[h.sender_kind]
        delay_us = 0
        if self.impairment is not None and not msg.retain:
            d = self.impairment.delay_s(hop, who, msg.payload, self.distance(who, frame) if self.distance else None)
            if d is None:
                self.link_lost[mtype] += 1  # the sequence numbers show it as lost, too
                return None
            delay_us = round(d * 1e6)
        age_us = rx_us + delay_us - h.gen_time_us
        # a retained message delivered on subscribing is as old as it is: no measure of the link
        sequenced = self.shared_prefix is None or not msg.topic.startswith(self.shared_prefix)
        self.measure.close_silent(rx_us)  # senders gone silent: their streams folded into the totals
        if not self.measure.record(who, msg.topic, mtype, hop, h.seq, h.gen_time_us, None if msg.retain else age_us, h.sender_id, sequenced):
            self.outcomes["duplicate"] += 1
            return None
        if self._expired(msg.topic, mtype, hop, age_us, h.sender_id):
            return None
        if delay_us > 0:
            heapq.heappush(self._held, (rx_us + delay_us, msg.topic, msg.payload, receiver, frame))
            self.outcomes["held"] += 1
            return None
        self.outcomes["accepted"] += 1
        return frame

    def accept_all(self, msg: Message, receivers: Sequence[str]) -> list[m.Frame | None]:
        """`accept(msg, r)` for each of `receivers` in turn (a fleet's vehicles hearing the same message), with the same
        outcomes and counts; without signatures or impaired links, the message is decoded, judged and timed once
        and only what is each receiver's own (its stream, its latency, a duplicate) is worked out per receiver."""
        if self.verifier is not None or self.impairment is not None or not receivers:
            return [self.accept(msg, r) for r in receivers]
        receivers = [r or self.owner for r in receivers]  # as `accept` names a receiver
        got = self._decode(msg)
        rx_us = self.clock.receipt_us(msg)
        if got is None or (self.trust is not None and not self._trusted(msg.topic, got, rx_us)):
            return [None, *(self.accept(msg, r) for r in receivers[1:])]  # each refusal counted, as accept counts it
        frame, mtype = got[0], got[1]
        h = frame.header
        hop = self._hops[h.sender_kind]
        age_us = rx_us - h.gen_time_us
        latency_us = None if msg.retain else age_us
        sequenced = self.shared_prefix is None or not msg.topic.startswith(self.shared_prefix)
        topic, outcomes = msg.topic, self.outcomes
        own = h.sender_id in receivers
        others = [r for r in receivers if r != h.sender_id] if own else receivers
        if others:  # (`accept` sweeps before measuring: not for its own message)
            self.measure.close_silent(rx_us)
        fresh = iter(self.measure.record_all(others, topic, mtype, hop, h.seq, h.gen_time_us, latency_us, h.sender_id, sequenced))
        out: list[m.Frame | None] = []
        for who in receivers:
            if own and h.sender_id == who:
                outcomes["own"] += 1
                out.append(frame)
            elif not next(fresh):
                outcomes["duplicate"] += 1
                out.append(None)
            elif self._expired(topic, mtype, hop, age_us, h.sender_id):
                out.append(None)
            else:
                outcomes["accepted"] += 1
                out.append(frame)
        return out

    def _expired(self, topic: str, mtype: str, hop: str, age_us: int, sender: str) -> bool:
        """Whether a message just recorded arrived older than its type's expiry (counted, as received but of no use)."""
        max_age = self.max_age_s.get(mtype)
        if max_age is None or age_us <= max_age * 1e6:
            return False
        self.measure.expire(mtype, hop)
        self.bad.record("expired", topic, f"{age_us / 1e3:.0f} ms old (expires after {max_age:g} s)", sender)
        return True

    def due(self) -> list[tuple[str | None, str, m.Frame]]:
        """Held messages whose time has come: (receiver, topic, frame), in release order."""
        return [(receiver, topic, frame) for receiver, topic, _, frame in self.due_with_payload()]

    def due_with_payload(self) -> list[tuple[str | None, str, bytes, m.Frame]]:
        """As `due`, with each message's payload: (receiver, topic, payload, frame)."""
        now = self.clock.utc_us()
        out = []
        while self._held and self._held[0][0] <= now:
            _, topic, payload, receiver, frame = heapq.heappop(self._held)
            out.append((receiver, topic, payload, frame))
        return out

    def link_drops(self) -> LinkDrops:
        """What the impaired links took: lost by type, and what was still on its way at the end."""
        return LinkDrops(dict(self.link_lost), len(self._held))

    @property
    def holding(self) -> int:
        """Messages delayed by their link, not yet handed out."""
        return len(self._held)

    def next_due_s(self) -> float | None:
        """Seconds until the next held message is due, if any."""
        return None if not self._held else max(self._held[0][0] - self.clock.utc_us(), 0) / 1e6
