"""What the RSU and the cloud services share: one station on one connection.

A service publishes bodies (stamped and counted by type) and receives through one
`Reception` (decoded, impaired, measured, checked); subclasses say what `handle` does.
"""

from __future__ import annotations

from collections import Counter

from v2x import __version__
from v2x.core import messages as m
from v2x.net.impair import Impairment
from v2x.net.reception import Distance, Reception
from v2x.net.signing import CA, Signer
from v2x.net.station import Clock, Station
from v2x.net.transport import Message, Transport, Will, outage_summary


def last_will(topic: str, sid: str, kind: m.SenderKind, clock: Clock, signer: Signer | None = None) -> Will:
    """The Will fixed at connect time: a retained offline status, "connection lost"; signed when `signer` is given
    (receivers hold it to no age: the broker publishes it whenever the connection is lost)."""
    station = Station(sid, kind, clock)
    station.signer = signer
    return Will(topic, station.encode(m.Status(m.ServiceState.OFFLINE, __version__, m.LOST), stream=topic))


class Service:
    def __init__(
        self, sid: str, kind: m.SenderKind, transport: Transport, clock: Clock, impairment: Impairment | None = None,
        distance: Distance | None = None,
    ) -> None:
        self.id = sid
        self.transport = transport
        self.clock = clock
        self.station = Station(sid, kind, clock)
        self.sent: Counter[str] = Counter()  # by message type
        self.received: Counter[str] = Counter()  # by message type, as the subclass handles them
        self.reception = Reception(sid, kind, clock, impairment, distance)
        self.bad = self.reception.bad

    def sign_with(self, ca: CA) -> None:
        """Sign with a pseudonym the CA issues this service; accept only what is signed under it."""
        self.station.signer = ca.issue(self.id, self.clock.utc_us() // 1000 - 60_000)
        self.reception.verifier = ca.verifier()

    def publish(self, topic: str, body: m.Body, qos: int = 0, retain: bool = False, expiry_s: int | None = None) -> None:
        """Stamp, encode and publish a body on `topic` (its own sequence stream); count it sent."""
        payload = self.station.encode(body, self.clock.sim_s(), topic)
        if self.transport.publish(topic, payload, qos=qos, retain=retain, expiry_s=expiry_s):
            self.sent[m.message_type(body).value] += 1

    def accept(self, msg: Message) -> None:
        """One arrival: handled now, or held by its link, or counted and dropped."""
        frame = self.reception.accept(msg)
        if frame is not None:
            self._handle(msg.topic, frame)

    def receive(self) -> None:
        """Handle what has arrived, and what the links held until now, without waiting."""
        for msg in self.transport.poll():
            self.accept(msg)
        self.release()

    def release(self) -> None:
        for _, topic, frame in self.reception.due():
            self._handle(topic, frame)

    def _handle(self, topic: str, frame: m.Frame) -> None:
        self.bad.guard(topic, frame.header.sender_id, self.handle, topic, frame)

    def handle(self, topic: str, frame: m.Frame) -> None:
        raise NotImplementedError

    def summary(self) -> dict[str, object]:
        return {
            "sent": dict(self.sent),
            "received": dict(self.received),
            "bad_input": dict(self.bad.counts),
            "measurements": self.reception.measure.to_json(),
            "link_drops": self.reception.link_drops(),
            "connection": outage_summary([self.transport.stats], self.clock.epoch_s),
        }
