"""What the RSU and the cloud services share: one station on one connection.

A service publishes through its `Station` (stamped, encoded, counted by type) and receives through
one `Reception` (decoded, impaired, measured, checked); subclasses say what `handle` does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from v2x import __version__
from v2x.core import messages as m
from v2x.core.jsonview import JsonRecord
from v2x.core.topics import RETAINED_KINDS, kind_of
from v2x.core.trust import TrustRules
from v2x.net.impair import Impairment
from v2x.net.intake import Batch, BsmIntake
from v2x.net.reception import Decoded, Distance, LinkDrops, Reception
from v2x.net.signing import Authority, Permissions, Signer, valid_from_ms
from v2x.net.station import Clock, Station
from v2x.net.transport import ConnectionSummary, Message, Transport, Will, outage_summary


def last_will(topic: str, sid: str, kind: m.SenderKind, clock: Clock, signer: Signer | None = None) -> Will:
    """The Will fixed at connect time: a retained offline status, "connection lost"; signed when `signer` is given
    (receivers hold it to no age: the broker publishes it whenever the connection is lost)."""
    station = Station(sid, kind, clock)
    station.signer = signer
    return Will(topic, station.encode(m.Status(m.ServiceState.OFFLINE, __version__, m.LOST), stream=topic))


@dataclass
class ServiceSummary(JsonRecord):
    """What a service did, as its process prints it at the end (one JSON line, "event": "summary")."""

    sent: dict[str, int] = field(default_factory=dict)  # by message type
    received: dict[str, int] = field(default_factory=dict)  # by message type, as it handled them
    bad_input: dict[str, int] = field(default_factory=dict)  # rejected, by kind (v2x.net.reception)
    rejected_by_type: dict[str, int] = field(default_factory=dict)  # rejected before it was handled, by message type
    measurements: dict[str, Any] = field(default_factory=dict)  # latency, loss, duplicates (Measurements.to_json)
    link_drops: LinkDrops = field(default_factory=LinkDrops)
    connection: ConnectionSummary = field(default_factory=ConnectionSummary)
    # its connection's own drops: in (inbox full, before it is read), out (outbox full, or QoS 0 while disconnected)
    dropped: dict[str, int] = field(default_factory=dict)
    stalls_s: list[list[float]] = field(default_factory=list)  # [from, to] sim time [s] its loop did not run (> STALL_S)


S = TypeVar("S", bound=ServiceSummary)
# [s] a service's loop runs at least every 0.1 s (SPaT at 10 Hz, the cloud's tick): a gap of ten times that between
# two turns is a stall (the process stopped, or starved of CPU), in which it read nothing and its messages waited
STALL_S = 1.0


class Service:
    def __init__(
        self, sid: str, kind: m.SenderKind, transport: Transport, clock: Clock, status_topic: str,
        impairment: Impairment | None = None, distance: Distance | None = None, trust: TrustRules | None = None,
    ) -> None:
        self.id = sid
        self.kind = kind
        self.status_topic = status_topic  # its retained online/offline status, and its Last Will
        self.transport = transport
        self.clock = clock
        self.sent: Counter[str] = Counter()  # by message type
        self.station = Station(sid, kind, clock, transport, self.sent)  # what it publishes goes through here
        self.received: Counter[str] = Counter()  # by message type, as the subclass handles them
        self.reception = Reception(sid, kind, clock, impairment, distance, trust=trust)
        self.bad = self.reception.bad
        self._reconnects = 0  # the transport's reconnects, as of the last look
        self.stalls: list[list[float]] = []  # [from, to] sim time [s] of each stall of its loop (real time)
        self._turn_s: float | None = None
        self._intake: BsmIntake | None = None
        self._made = False  # (`_intake` made)

    def announce(self) -> None:
        """Publish every retained message this service owns (its online status, and what else it holds out)."""
        raise NotImplementedError

    def reassert(self) -> None:
        """After each reconnect, announce again: the Will has said this service is offline, and a broker restarted
        without persistence (CONNACK session-present 0: `TransportStats.sessions_lost`) has forgotten everything it
        retained. Polled each step: the service stays synchronous."""
        n = self.transport.stats.reconnects
        if n != self._reconnects:
            self._reconnects = n
            self.announce()

    def stopped(self, retained: list[str]) -> None:
        """A clean stop: say so to who listens (an offline status, "stopped", not retained), then clear the
        retained messages on `retained` (the status's among them): nothing of this run stays on the broker."""
        self.station.publish(self.status_topic, m.Status(m.ServiceState.OFFLINE, __version__, m.STOPPED), qos=1)
        for topic in retained:
            self.station.clear(topic)

    def turn(self) -> None:
        """One turn of the real-time loop: a gap of more than STALL_S since the last is recorded as a stall."""
        now = self.clock.sim_s()
        if self._turn_s is not None and now - self._turn_s > STALL_S:
            self.stalls.append([round(self._turn_s, 2), round(now, 2)])
        self._turn_s = now

    def will(self) -> Will:
        """Its Last Will, made when it connects (signed like its other messages once `sign_with` was called)."""
        return last_will(self.status_topic, self.id, self.kind, self.clock, self.station.signer)

    def sign_with(self, authority: Authority, permissions: Permissions | None = None) -> None:
        """Sign with a pseudonym its tier's authority issues it, permitted `permissions` (default: all the authority
        holds); accept only what is signed under the same root CA."""
        self.station.signer = authority.issue(self.id, valid_from_ms(self.clock), permissions)
        self.reception.verifier = authority.verifier()

    def accept(self, msg: Message, read: Decoded | None = None) -> None:
        """One arrival: handled now, or held by its link, or counted and dropped; an empty payload on a retained
        kind's topic is its owner clearing it (counted as received `<kind>_cleared`). `read`: what its payload decodes
        to, if read already (`Reception.read_bsms`)."""
        if not msg.payload and (kind := kind_of(msg.topic)) in RETAINED_KINDS:
            self.received[f"{kind}_cleared"] += 1
            return
        frame = self.reception.accept(msg, read=read)
        if frame is not None:
            self._handle(msg.topic, frame)

    def receive(self) -> None:
        """Announce again after a reconnect; handle what has arrived (its BSMs read all at once), and what the links
        held until now, without waiting."""
        self.reassert()
        self.take(self.transport.receive())
        self.release()

    def take(self, msgs: Sequence[Message]) -> None:
        """`accept` each of `msgs` in turn. A service that takes BSMs as rows (`took_bsms`), requiring no signature and
        impairing no link, has runs of them taken by compiled code (v2x.net.intake), the rest one by one; else their
        BSMs are read all at once (`Reception.read_bsms`) and a BSM on a BSM topic, when no signature is required, goes
        through `Reception.accept_bsm` straight to its handler."""
        if not msgs:
            return
        reception, intake = self.reception, self.intake
        if intake is None:
            for msg, read in zip(msgs, reception.read_bsms(msgs), strict=True):
                self._take_one(msg, read)
            return
        batch, first, n = intake.read(msgs), 0, len(msgs)
        while first < n:
            end = intake.take(batch, first)
            if end > first:
                try:
                    self.took_bsms(intake, batch, first, end)
                except Exception as e:  # a service must outlive any one message
                    self.bad.handler_failed(msgs[first].topic, intake.senders[int(batch.slots[first])], e)
            if end == n:
                break
            if intake.sweep(batch, end):
                first = end
                continue
            self._take_one(msgs[end], intake.read_one(batch, end))
            intake.after(batch, end)
            first = end + 1

    def _take_one(self, msg: Message, read: Decoded | None) -> None:
        """One of `take`'s messages the one-by-one way: `read`, what `Reception.read_bsms` read it to (None: not a BSM it
        reads)."""
        if read is not None and self.reception.verifier is None and kind_of(msg.topic) == "bsm":
            frame = self.reception.accept_bsm(msg, read)
            if frame is not None:
                try:  # `_handle`, in line
                    self.handle(msg.topic, frame)
                except Exception as e:  # a service must outlive any one message
                    self.bad.handler_failed(msg.topic, frame.header.sender_id, e)
        else:
            self.accept(msg, read)

    @property
    def intake(self) -> BsmIntake | None:
        """The compiled BSM intake (v2x.net.intake) of a service that takes BSMs as rows (`make_intake`), requiring no
        signature and impairing no link; else None (each BSM taken by `accept`)."""
        rec = self.reception
        if rec.verifier is not None or rec.impairment is not None:
            return None
        if not self._made:
            self._intake, self._made = self.make_intake(), True
        return self._intake

    def make_intake(self) -> BsmIntake | None:
        """Its compiled BSM intake, for a service that takes BSMs as rows (`took_bsms`); None: it takes them by `handle`."""
        return None

    def took_bsms(self, intake: BsmIntake, batch: Batch, first: int, end: int) -> None:
        """What `handle` does for each BSM of rows `first` to `end` of `batch`, which `intake` took: a BSM accepted,
        its sender intake.senders[batch.slots[i]], its values batch.values[i] (v2x.net.intake.VALUES)."""
        raise NotImplementedError

    def release(self) -> None:
        for _, topic, frame in self.reception.due():
            self._handle(topic, frame)

    def _handle(self, topic: str, frame: m.Frame) -> None:
        self.bad.guard(topic, frame.header.sender_id, self.handle, topic, frame)

    def handle(self, topic: str, frame: m.Frame) -> None:
        raise NotImplementedError

    def summary(self) -> ServiceSummary:
        return self._summary(ServiceSummary)

    def _summary(self, cls: type[S], **own: Any) -> S:
        """A summary of type `cls`: what every service reports, and the subclass's `own` fields."""
        return cls(
            sent=dict(self.sent), received=dict(self.received), bad_input=dict(self.bad.counts),
            rejected_by_type=dict(self.bad.rejected_by_type),
            measurements=self.reception.measure.to_json(), link_drops=self.reception.link_drops(),
            connection=outage_summary([self.transport.stats], self.clock.epoch_s), stalls_s=self.stalls,
            dropped={"transport_in": self.transport.stats.dropped_in, "transport_out": self.transport.stats.dropped_out,
                     "not_subscribed": self.transport.stats.not_subscribed}, **own,
        )
