"""A V2X station (vehicle OBU, RSU or the cloud): stamps, encodes and publishes its frames: the one publish path."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.topics import kind_of
from v2x.net.signing import Signer
from v2x.net.transport import Message, Transport


class Clock:
    """Sim time for a real-time run: seconds since a UTC epoch shared by every tier of the run.

    Separate processes given the same `epoch_s` agree on sim time, so a SPaT's timestamp
    (UTC) means the same sim time to the RSU that sent it and the vehicle that reads it.
    """

    def __init__(self, epoch_s: float | None = None) -> None:
        self.epoch_s = time.time() if epoch_s is None else epoch_s

    def sim_s(self) -> float:
        return time.time() - self.epoch_s

    def sim_of_utc_ms(self, utc_ms: int) -> float:
        return utc_ms / 1000.0 - self.epoch_s

    def utc_us(self) -> int:
        return time.time_ns() // 1000

    def receipt_us(self, msg: Message) -> int:
        """UTC [us] at which a message arrived: stamped by the transport."""
        return msg.rx_ns // 1000

    def receipts_us(self, msgs: Sequence[Message]) -> npt.NDArray[np.int64]:
        """`receipt_us` of each of `msgs`, as an array."""
        return np.fromiter([msg.rx_ns for msg in msgs], np.int64, len(msgs)) // 1000


class StepClock(Clock):
    """Sim time set by a lockstep driver (fast mode): UTC is the epoch plus sim time, not the wall.

    With a fixed epoch every timestamp, and so every message, is the same from run to run.
    """

    def __init__(self, epoch_s: float) -> None:
        super().__init__(epoch_s)
        self.t = 0.0  # [s] sim time, set by the driver

    def sim_s(self) -> float:
        return self.t

    def utc_us(self) -> int:
        return round((self.epoch_s + self.t) * 1e6)

    def receipt_us(self, msg: Message) -> int:
        """In lockstep a message arrives in the step it was sent: now, in sim time."""
        return self.utc_us()

    def receipts_us(self, msgs: Sequence[Message]) -> npt.NDArray[np.int64]:
        return np.full(len(msgs), self.utc_us(), np.int64)


class Station:
    """Builds frames with a header (this station's id and kind, and a sequence number per stream) and publishes
    them on its transport, counting what was sent by type: every station of every tier publishes through here.

    A stream is one message type on one topic: a receiver tells loss and duplicates apart by
    topic and sequence number, whatever else the sender publishes elsewhere.
    """

    def __init__(
        self, sender_id: str, kind: m.SenderKind, clock: Clock, transport: Transport | None = None,
        sent: Counter[str] | None = None,
    ) -> None:
        self.sender_id = sender_id
        self.kind = kind
        self.clock = clock
        self.transport = transport  # None: a station that only encodes (a Last Will, a benchmark)
        self.sent: Counter[str] = Counter() if sent is None else sent  # by message type; may be shared by a tier's stations
        self.signer: Signer | None = None  # signed messages (v2x.net.signing): its pseudonym certificate and key
        self._seq: dict[tuple[m.MessageType, str], int] = defaultdict(int)
        self._fields: bytes | None = None  # its headers' first fields in wire form (`relay_at`), once asked for

    def publish(
        self, topic: str, body: m.Body, *, qos: int = 0, retain: bool = False, expiry_s: int | None = None,
        sim_s: float | None = None,
    ) -> bool:
        """Stamp, encode and publish `body` on `topic` (its own sequence stream); count it sent. False when the
        transport did not take it (its sequence number is spent: receivers count the gap)."""
        if self.transport is None:
            raise RuntimeError(f"station {self.sender_id} has no transport to publish on")
        if not self.transport.publish(topic, self.encode(body, sim_s, topic), qos=qos, retain=retain, expiry_s=expiry_s):
            return False
        self.sent[m.type_name(body)] += 1
        return True

    def clear(self, topic: str) -> bool:
        """Clear a retained message (an empty retained payload, QoS 1): subscribers learn it ended; counted as
        `<type>_cleared` by the topic's kind."""
        if self.transport is None:
            raise RuntimeError(f"station {self.sender_id} has no transport to publish on")
        if not self.transport.publish(topic, b"", qos=1, retain=True):
            return False
        self.sent[f"{kind_of(topic)}_cleared"] += 1
        return True

    def encode(self, body: m.Body, sim_s: float | None = None, stream: str = "") -> bytes:
        """The frame as bytes; `stream` is the topic it goes to."""
        data = codec.encode(m.Frame(self._header(m.message_type(body), sim_s, stream), body))
        return data if self.signer is None else self.signer.sign(data)

    def relay(
        self, topic: str, mtype: m.MessageType, wire: bytes, *, qos: int = 0, expiry_s: int | None = None, sim_s: float | None = None,
    ) -> bool:
        """Publish a body of type `mtype` as `publish` does, its wire form given (`codec.relay_body` of the frame it
        came in, or a fleet's BSMs encoded at once): sent under this station's header without encoding it again. The
        same bytes as `publish` when `wire` is the encoding of the body (the header written by `relay_at`'s parts)."""
        sim = self.clock.sim_s() if sim_s is None else sim_s
        return self.relay_at(codec.time_fields(self.clock.utc_us(), max(round(sim * 1000), 0)), topic, mtype, wire, qos=qos,
                             expiry_s=expiry_s)

    def relay_at(
        self, times: bytes, topic: str, mtype: m.MessageType, wire: bytes, *, qos: int = 0, expiry_s: int | None = None,
    ) -> bool:
        """`relay` at an instant given as a header's times in wire form (`codec.time_fields`), worked out once for the
        many messages of one instant (a fleet's slice of BSMs): the same bytes as `publish` at that instant."""
        if self._fields is None:
            self._fields = codec.station_fields(self.sender_id, self.kind)
        return self._send(topic, mtype, codec.relayed_frame(self._fields, self._next_seq(mtype, topic), times, wire), qos, expiry_s)

    def _send(self, topic: str, mtype: m.MessageType, data: bytes, qos: int, expiry_s: int | None) -> bool:
        """A frame of type `mtype` (signed when signing) on `topic`; counted sent if the transport took it."""
        if self.transport is None:
            raise RuntimeError(f"station {self.sender_id} has no transport to publish on")
        if not self.transport.publish(topic, data if self.signer is None else self.signer.sign(data), qos=qos, expiry_s=expiry_s):
            return False
        self.sent[mtype.value] += 1
        return True

    def _next_seq(self, mtype: m.MessageType, stream: str) -> int:
        """The next sequence number of a stream (one message type on one topic)."""
        key = (mtype, stream)
        seq = self._seq[key]
        self._seq[key] = (seq + 1) % 2**32
        return seq

    def _header(self, mtype: m.MessageType, sim_s: float | None, stream: str) -> m.Header:
        """The next header of a stream (one message type on one topic): its sequence number, now."""
        seq = self._next_seq(mtype, stream)
        sim = self.clock.sim_s() if sim_s is None else sim_s
        return m.Header(self.sender_id, self.kind, seq, self.clock.utc_us(), max(round(sim * 1000), 0))
