"""MQTT transport: one interface, a gmqtt implementation for real brokers and an in-memory one for tests.

gmqtt was chosen by measurement (bench/transport.py, docs/protocol.md). Around it this module adds
what a V2X service needs:

  - bounded queues both ways, with drop counters: `publish()` never blocks the caller;
    a sender task drains the outbox; incoming messages wait in a bounded inbox, which
    `receive()` empties without waiting (`await wait(timeout_s)` waits for an arrival);
  - the broker's Receive Maximum respected for QoS 1 (gmqtt raises past it rather than queue);
  - reconnect with jittered exponential backoff, re-subscribing every filter on each CONNACK;
    unacknowledged QoS 1 messages are resent on the same session (at least once);
  - persistent sessions (`clean_start=False`, a session expiry), a Last Will, username and
    password, TLS (`mqtts://`);
  - MQTT 5 where the broker speaks it (message expiry on short-lived messages), else
    MQTT 3.1.1 with the same behaviour: receivers then enforce expiry from the header time;
  - a client id taken over by another client (MQTT 5 DISCONNECT 0x8E; on 3.1.1, the broker closing the
    connection right after accepting it, TAKEN_OVER_TIMES in a row) ends the connection instead of a
    reconnect fight: `receive()` raises `BrokerError` saying so.

Library errors are translated into `BrokerError` at this boundary.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import math
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from v2x.core.codec import maker
from v2x.core.errors import BrokerError
from v2x.core.jsonview import JsonRecord
from v2x.core.kept import Kept
from v2x.net.broker import UNSUPPORTED_LEVEL, Closed, NotMqtt, Transient, broker_problem, connack

log = logging.getLogger(__name__)

MQTT5 = 5
MQTT311 = 4
BACKOFF_BASE_S = 0.2  # [s] first reconnect delay
BACKOFF_CAP_S = 10.0  # [s] longest reconnect delay
DEFAULT_RECEIVE_MAXIMUM = 20  # what Mosquitto announces unless configured otherwise
RATE_WINDOW_S = 0.1  # [s] a receiver's QoS 0 rate (`qos0_per_s`) is held over windows this long
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with this client id
# MQTT 3.1.1 has no DISCONNECT from the broker: a takeover shows as the broker closing the connection soon after
# accepting it, again and again (the two clients throw each other out as each reconnects)
TAKEN_OVER_WITHIN_S = 2.0  # [s] a connection closed this soon after its CONNACK ...
TAKEN_OVER_TIMES = 3  # ... this many times in a row: taken over
MqttVersion = Literal["auto", "5", "3.1.1"]  # "auto": MQTT 5, falling back to 3.1.1 when the broker speaks only that


class _Levels:
    """The MQTT level of each broker (host, port) this process is connected to, so that a new connection skips the
    probe (an OBU connects as its vehicle enters). A broker restarted on its port may be another one, of another
    level: so a level is known only while a connection made at it is up and has not lost the broker; when the last
    such closes or loses it, the next connection probes again. A broker swapped for one of another level before any
    connection saw it go would still be met at the old level, as connections made before a restart are (gmqtt
    reconnects at theirs)."""

    def __init__(self) -> None:
        self.level: dict[tuple[str, int], int] = {}
        self.up: Counter[tuple[str, int]] = Counter()  # connections up at the known level

    def connected(self, key: tuple[str, int], level: int) -> None:
        self.level[key] = level
        self.up[key] += 1

    def closed(self, key: tuple[str, int]) -> None:
        self.up[key] -= 1
        if self.up[key] <= 0:
            self.up.pop(key, None)
            self.level.pop(key, None)


_BROKER_LEVELS = _Levels()


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    rx_ns: int  # time.time_ns() at receipt
    # QoS 1 sent again by the broker on this session (MQTT's DUP flag: the broker sets it itself, a publisher's is never
    # passed on): after a reconnect, what the connection had already taken may come a second time
    dup: bool = False


# a Message as an arrival makes it, with every field given (`maker`: a frozen dataclass's own __init__ sets each field
# through object.__setattr__, 0.66 us a message, this 0.2; the object is the same)
_arrived = maker(Message)


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class TransportStats:
    published: int = 0  # accepted by publish()
    sent: int = 0  # handed to the connection
    received: int = 0
    dropped_out: int = 0  # outbox full, or QoS 0 while disconnected
    dropped_in: int = 0  # inbox full, or QoS 0 beyond the rate the receiver takes (MqttTransport's `qos0_per_s`)
    # retained messages on topics none of our filters matches, set aside: amqtt 0.12 sends a connecting client the
    # retained messages of every filter any client has subscribed to (its broker.py loops over all subscriptions)
    not_subscribed: int = 0
    reconnects: int = 0
    disconnects: int = 0  # connections lost (not closed by us)
    sessions_lost: int = 0  # reconnects whose CONNACK said no session was present (the broker kept nothing of ours)
    outages: list[list[float]] = field(default_factory=list)  # [down, up] UTC [s] of each lost connection; up NaN: still down
    closed_s: float = math.nan  # UTC [s] the transport was closed (NaN: still open)


@dataclass
class ConnectionSummary(JsonRecord):
    """Lost connections of one or many transports: counts, and the down intervals [from, to] in sim seconds
    (`to` None: still down)."""

    disconnects: int = 0
    reconnects: int = 0
    down_s: list[list[float | None]] = field(default_factory=list)

    @classmethod
    def merge(cls, parts: Iterable[ConnectionSummary]) -> ConnectionSummary:
        """Several processes' (or instances') lost connections: counts added, down intervals merged."""
        ps = list(parts)
        return cls(sum(p.disconnects for p in ps), sum(p.reconnects for p in ps), merge_spans([s for p in ps for s in p.down_s]))


def outage_summary(stats: Iterable[TransportStats], epoch_s: float) -> ConnectionSummary:
    """Lost connections of one or many transports (of one process), with their down intervals merged.

    A connection closed while it was down (a vehicle that left the network during a broker outage) never sees the
    broker return: its outage ends when another of the transports reconnected after it began, the broker being back
    then. Without such evidence (no connection came back before the end) it stays open ("to end")."""
    sts = list(stats)
    back = sorted(up for st in sts for _, up in st.outages if not math.isnan(up))  # when any connection reconnected
    spans: list[tuple[float, float | None]] = []
    disconnects = reconnects = 0
    for st in sts:
        disconnects += st.disconnects
        reconnects += st.reconnects
        for down, up in st.outages:
            if math.isnan(up) and not math.isnan(st.closed_s):
                k = bisect.bisect_left(back, down)
                up = back[k] if k < len(back) else up
            spans.append((round(down - epoch_s, 2), None if math.isnan(up) else round(up - epoch_s, 2)))
    return ConnectionSummary(disconnects, reconnects, merge_spans(spans))


def merge_spans(spans: Iterable[tuple[float, float | None] | list[float | None]]) -> list[list[float | None]]:
    """Overlapping [from, to] intervals merged into one; `to` None: still open."""
    merged: list[list[float]] = []
    for a, b in sorted(((float(a or 0.0), math.inf if b is None else float(b)) for a, b in spans), key=lambda sp: sp[0]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [[a, None if math.isinf(b) else b] for a, b in merged]


@dataclass(frozen=True)
class BrokerUrl:
    """mqtt://[user[:password]@]host[:port] or mqtts://...[?ca=CA.pem] (TLS, default port 8883; `ca`: the
    certificate authority to trust, for a broker with a private or self-signed certificate)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise BrokerError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        if not parts.hostname:
            raise BrokerError(f"broker URL {url!r}: no host (expected mqtt://host:port)")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise BrokerError(f"broker URL {url!r}: the port is not a number") from None
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"ca"})
        if unknown:
            raise BrokerError(f"broker URL {url!r}: unknown parameter {unknown[0]!r} (expected ?ca=CA.pem)")
        ca = query.get("ca", [None])[-1]
        if ca is not None and not tls:
            raise BrokerError(f"broker URL {url!r}: ?ca= goes with mqtts:// (TLS)")
        return cls(
            parts.hostname,
            port,
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            ca,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def masked(url: str) -> str:
    """A broker URL fit to print or save: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


class Transport(Protocol):
    """What services use to talk to a broker."""

    stats: TransportStats

    @property
    def connected(self) -> bool: ...

    @property
    def protocol_version(self) -> int: ...

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: int | None = None
    ) -> bool: ...

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None: ...

    async def unsubscribe(self, topic_filter: str) -> None: ...

    def receive(self, limit: int = 10_000) -> list[Message]: ...

    async def wait(self, timeout_s: float) -> bool: ...

    async def drain(self, timeout_s: float = 5.0) -> bool: ...


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching with + and # (a leading $ is not matched by wildcards)."""
    if topic.startswith("$") and not topic_filter.startswith("$"):
        return False
    fparts = topic_filter.split("/")
    tparts = topic.split("/")
    for i, f in enumerate(fparts):
        if f == "#":
            return True
        if i >= len(tparts) or (f != "+" and f != tparts[i]):
            return False
    return len(fparts) == len(tparts)


S = TypeVar("S")  # a subscriber


MATCHES_KEPT = 4096  # topics whose matches a FilterTree keeps until its filters change: a vehicle's BSM topic, a SPaT's


class FilterTree(Generic[S]):
    """Topic filters and their subscribers, matched by walking a topic's levels once (MQTT + and #; a topic
    starting with $ is not matched by a wildcard at its first level): what a broker does, for the lockstep hub and a
    shared connection. A topic's matches are kept: the same topics come again and again (a vehicle's BSMs, ten a
    second, on the topic of its tile), and a walk down a tile's twenty levels costs about 4 us. What is kept is the
    matching filters' own subscriber sets, which subscribing and unsubscribing change in place, so the kept matches
    hold until a filter new to the tree adds a node (vehicles come and go on the same filters all the time: their
    tiles', their junctions')."""

    def __init__(self) -> None:
        self._root: _FilterNode[S] = _FilterNode()
        self._matches: Kept[str, list[set[S]]] = Kept(MATCHES_KEPT)

    def add(self, topic_filter: str, who: S) -> None:
        node = self._root
        levels = topic_filter.split("/")
        grown = False
        for k, level in enumerate(levels):
            child = node.children.get(level)
            if child is None:
                if not grown:  # (the nodes below a new one are new too)
                    grown = True
                    self._forget_matches(levels, k)
                child = node.children[level] = _FilterNode()
            node = child
        node.subs.add(who)

    def _forget_matches(self, levels: list[str], k: int) -> None:
        """A filter adds nodes from its level `k` on: drop the kept matches they may change. Without wildcards, only
        the topics that are its own levels up to a new node reach one (a walk takes a topic's levels one by one and
        ends at the node of its last): a vehicle's own filters (its advisories, its priority replies) leave the rest
        kept. A wildcard may match anything: all are dropped."""
        if "+" in levels or "#" in levels:
            self._matches.clear()
            return
        for j in range(k + 1, len(levels) + 1):
            self._matches.pop("/".join(levels[:j]), None)

    def discard(self, topic_filter: str, who: S) -> None:
        node: _FilterNode[S] | None = self._root
        for level in topic_filter.split("/"):
            node = node.children.get(level) if node is not None else None
        if node is not None:
            node.subs.discard(who)

    def match(self, topic: str) -> list[set[S]]:
        """The subscriber sets of every filter that matches `topic` (a subscriber with two matching filters is in two;
        a filter whose subscribers have all gone gives an empty set). The list and the sets are the tree's own, kept
        for the next ask: read them, do not change them."""
        got = self._matches.get(topic)
        return got if got is not None else self._matches.keep(topic, self._walk(topic))

    def _walk(self, topic: str) -> list[set[S]]:
        levels = topic.split("/")
        out: list[set[S]] = []
        dollar = topic.startswith("$")

        def walk(node: _FilterNode[S], i: int) -> None:
            wild = not (i == 0 and dollar)
            hash_node = node.children.get("#")
            if hash_node is not None and wild:
                out.append(hash_node.subs)
            if i == len(levels):
                out.append(node.subs)
                return
            exact = node.children.get(levels[i])
            if exact is not None:
                walk(exact, i + 1)
            plus = node.children.get("+")
            if plus is not None and wild:
                walk(plus, i + 1)

        walk(self._root, 0)
        return out


class _FilterNode(Generic[S]):
    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _FilterNode[S]] = {}
        self.subs: set[S] = set()


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Jittered exponential backoff [s]: base * 2^attempt, capped, times a factor in [0.5, 1.5)."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(attempt, 30))) * (0.5 + rng.random())


class Lifecycle:
    """`async with transport:` starts it and closes it, for every transport."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Inbox(Lifecycle):
    """The receiving side both transports share: a bounded inbox, emptied by `receive()`; `wait()` waits for it."""

    stats: TransportStats
    _heard: Callable[[], None] | None = None

    def on_arrival(self, callback: Callable[[], None] | None) -> None:
        """Have `callback()` called after each message put into the inbox (the lockstep barrier wakes on it, a fleet
        with one connection per OBU reads only those it was called for), and when `receive()` has a failure to raise."""
        self._heard = callback

    def _open_inbox(self, size: int) -> None:
        """`size`: the most messages kept waiting (0 or less: no limit)."""
        self._inbox: deque[Message] = deque()
        self._inbox_size = size if size > 0 else math.inf
        self._waiters: set[asyncio.Future[bool]] = set()  # what each `wait()` awaits while it waits: True on an arrival

    def _put(self, msg: Message) -> None:
        """One arrival into the inbox, or counted as dropped when it is full."""
        if len(self._inbox) >= self._inbox_size:
            self.stats.dropped_in += 1
            return
        self._inbox.append(msg)
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(True)
            self._waiters.clear()
        if self._heard is not None:
            self._heard()

    def receive(self, limit: int = 10_000) -> list[Message]:
        """The messages waiting in the inbox (at most `limit`, oldest first), without waiting."""
        inbox = self._inbox
        if not inbox:  # the common case, asked per vehicle several times a step
            return []
        if len(inbox) <= limit:
            out = list(inbox)
            inbox.clear()
            return out
        return [inbox.popleft() for _ in range(limit)]

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` [s] for a message to arrive; whether one is waiting. (A future and a timer: the cloud
        waits once per arrival, hundreds of times a second, and `asyncio.wait_for` of an Event made a task each time,
        about 4 us more a wait.)"""
        if self._inbox:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.add(waiter)
        timer = loop.call_later(max(timeout_s, 0.0), _settle, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiters.discard(waiter)


def _settle(waiter: asyncio.Future[bool]) -> None:
    """A wait's time is up: its future done with False, unless an arrival made it done with True."""
    if not waiter.done():
        waiter.set_result(False)


# ---------------------------------------------------------------------------
# gmqtt
# ---------------------------------------------------------------------------


@dataclass
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: dict[str, Any] = field(default_factory=dict)


_EXPIRY_PROPERTY = 0x02  # MQTT 5 Message Expiry Interval: four bytes
MAX_REMAINING_LENGTH = 268_435_455  # the most an MQTT packet's variable header and payload may hold (4-byte length)


def _remaining_length(n: int) -> bytes:
    """MQTT's variable byte integer: seven bits a byte, the low bits first, the top bit saying more follow."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, b = divmod(n, 128)
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def qos0_publish(topic: str, payload: bytes, retain: bool, v5: bool, expiry_s: int | None = None) -> bytes:
    """A QoS 0 PUBLISH packet, byte for byte what gmqtt builds for it (its fixed header, topic, MQTT 5 properties:
    none, or the message expiry), at a tenth of the cost: no `Message`, no generic property encoding."""
    t = topic.encode("utf-8", errors="replace")  # as gmqtt encodes a topic
    props = _v5_properties(expiry_s) if v5 else b""
    n = 2 + len(t) + len(props) + len(payload)
    if n > MAX_REMAINING_LENGTH:
        raise ValueError(f"a {len(payload)}-byte payload is more than an MQTT packet holds")
    return b"".join((b"\x31" if retain else b"\x30", _remaining_length(n), len(t).to_bytes(2, "big"), t, props, payload))


@functools.lru_cache(maxsize=64)
def _v5_properties(expiry_s: int | None) -> bytes:
    """A QoS 0 PUBLISH's MQTT 5 properties (`qos0_publish`): none, or the message expiry (a message type's own, a few
    in all: made once each)."""
    return b"\x00" if expiry_s is None else bytes((5, _EXPIRY_PROPERTY)) + int(expiry_s).to_bytes(4, "big")


def _plain_qos0(data: bytes, v5: bool) -> tuple[str, bytes] | None:
    """(topic, payload) of a QoS 0 PUBLISH's variable header and payload, when it is plain: a UTF-8 topic name and,
    on MQTT 5, no property but a message expiry. None for anything else (a topic alias, user properties, a bad
    topic), which gmqtt's own handling reads."""
    if len(data) < 2:
        return None
    end = 2 + ((data[0] << 8) | data[1])
    if end == 2 or end > len(data):
        return None
    if v5:
        if end >= len(data):
            return None
        n = data[end]  # the properties' length: one byte below 128
        if not (n == 0 or (n == 5 and end + 1 < len(data) and data[end + 1] == _EXPIRY_PROPERTY)):
            return None
        start = end + 1 + n
        if start > len(data):
            return None
    else:
        start = end
    try:
        topic = data[2:end].decode()
    except UnicodeDecodeError:
        return None
    return topic, data[start:]


def _read_directly(protocol: Any, who: str) -> None:
    """Have gmqtt's protocol split what arrives into packets as it arrives (`data_received`), instead of through its
    read loop: a StreamReader fed, then a task woken to read it, for every read (about a twentieth of an OBU's CPU, at
    one connection per vehicle). A QoS 0 PUBLISH goes straight to what the transport set on the connection to take it
    (`_v2x_qos0`, from the CONNACK on: `MqttTransport._shed_early`); anything else, or one it does not take, to
    gmqtt's `put_package`, as its loop hands it on. The read loop stays, waiting on the StreamReader, which now gets
    only the end of the stream (it closes the connection then, as before)."""
    from gmqtt.mqtt.package import Package

    rest: bytes | None = b""  # None: the stream went wrong, nothing more is read

    def data_received(data: bytes) -> None:
        nonlocal rest
        if rest is None:
            return
        if type(data) is not bytes:  # (what it hands on is sliced from bytes: a payload taken as it is, bytes)
            data = bytes(data)
        buf = rest + data if rest else data
        n, i = len(buf), 0
        connection = protocol._connection
        qos0 = getattr(connection, "_v2x_qos0", None)
        while i + 1 < n:
            cmd, size, start = buf[i], buf[i + 1], i + 2
            if size & 0x80:  # a remaining length of more than one byte
                try:
                    got = _remaining_length_at(buf, i + 1)
                except ValueError:
                    log.warning("%s: the broker sent a packet with a malformed length; closing the connection", who)
                    rest = None
                    protocol._transport.close()
                    return
                if got is None:
                    break
                size, start = got
            end = start + size
            if end > n:
                break
            body = buf[start:end]
            if qos0 is None or cmd & 0xF6 != 0x30 or not qos0(cmd, body):  # (PUBLISH, QoS 0, any DUP or RETAIN flag)
                connection.put_package(Package(cmd, body))
                qos0 = getattr(connection, "_v2x_qos0", None)  # (set on a CONNACK just handed on)
            i = end
        rest = buf[i:] if i < n else b""

    protocol.data_received = data_received


def _remaining_length_at(buf: bytes, j: int) -> tuple[int, int] | None:
    """MQTT's remaining length from `buf[j]` on (seven bits a byte, the low first, four bytes at most) and where what
    it measures starts; None when not all of it has arrived. Raises ValueError for a fifth byte."""
    size, shift = 0, 0
    while j < len(buf):
        b = buf[j]
        j += 1
        size |= (b & 0x7F) << shift
        if b < 0x80:
            return size, j
        shift += 7
        if shift == 28:
            raise ValueError("a remaining length of more than four bytes")
    return None


class MqttTransport(_Inbox):
    """A broker connection (gmqtt). Use as `async with MqttTransport(url, client_id) as t:`."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        will: Will | Callable[[], Will] | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        version: MqttVersion = "auto",
        keepalive_s: int = 10,
        inbox: int = 10_000,
        outbox: int = 10_000,
        max_inflight: int = 1000,
        tls_ca: str | None = None,
        connect_timeout_s: float = 10.0,
        seed: int | None = None,
        qos0_per_s: float | None = None,
        coalesce_writes: bool = False,
    ) -> None:
        """`qos0_per_s`: the most QoS 0 messages taken in per second, over windows of RATE_WINDOW_S; beyond it, and
        whenever the inbox is full, a QoS 0 message is dropped as it comes off the socket, before it is parsed, and
        counted (`stats.dropped_in`): a flood costs a receiver about a microsecond a message, and its handling
        at most the rate (None: no limit but the inbox). `coalesce_writes`: the packets written in one turn of the
        event loop go to the socket in one write, at the end of the turn (a connection that carries many stations'
        messages: one system call instead of one per message)."""
        self.url = BrokerUrl.parse(url)
        self._broker = (self.url.host, self.url.port)
        self._holds_level = False  # counted in _BROKER_LEVELS
        self.client_id = client_id
        self.will = will
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.version = version
        self.keepalive_s = keepalive_s
        self.max_inflight = max_inflight
        self.tls_ca = tls_ca
        self.connect_timeout_s = connect_timeout_s
        self.stats = TransportStats()
        self._open_inbox(inbox)
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue(outbox)
        self._subs: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._attempt = 0
        self._connected = asyncio.Event()
        self._freed = asyncio.Event()
        self._unacked: set[int] = set()
        self._receive_max = DEFAULT_RECEIVE_MAXIMUM
        self._client: Any = None
        self._acks: dict[int, asyncio.Future[None]] = {}  # SUBACK/UNSUBACK awaited, by packet id
        self._sender: asyncio.Task[None] | None = None
        self._resubscribing: asyncio.Task[None] | None = None  # after a reconnect (`_resubscribe`)
        self._closing = False
        self._qos0_per_window = math.inf if qos0_per_s is None else max(qos0_per_s * RATE_WINDOW_S, 1.0)
        self.coalesce_writes = coalesce_writes
        self._window_ends = 0.0  # time.monotonic() at which the current rate window ends
        self._qos0_in_window = 0
        self._connected_at = 0.0  # monotonic [s] of the latest CONNACK
        self._short_lived = 0  # connections in a row closed by the broker within TAKEN_OVER_WITHIN_S
        self.failure: BrokerError | None = None  # why this connection ended for good (taken over); receive() raises it
        self._v5 = True  # the protocol level is MQTT 5 (`protocol_version`), as of the latest CONNACK

    # -- properties ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def protocol_version(self) -> int:
        if self._client is None:
            return MQTT5
        return int(self._client._connection_state.protocol_version)

    @property
    def inflight(self) -> int:
        return len(self._unacked)

    # -- lifecycle -------------------------------------------------------------

    def _make_client(self) -> Any:
        import gmqtt
        from gmqtt.storage import PersistentStorage

        transport = self

        class Storage(PersistentStorage):  # type: ignore[misc]
            """gmqtt's store of unacknowledged QoS 1 messages, counted for backpressure."""

            def push_message(self, mid: int, raw: bytes) -> None:
                transport._unacked.add(mid)
                super().push_message(mid, raw)

            def remove_message_by_mid(self, mid: int) -> None:
                transport._unacked.discard(mid)
                transport._freed.set()
                super().remove_message_by_mid(mid)

            def clear(self) -> None:
                """A CONNACK without the session: these will never be acknowledged. Counted as dropped, and their
                packet ids freed (gmqtt does not: they would fill the window for good)."""
                transport._unacked.difference_update(self._messages)
                transport.stats.dropped_out += len(self._messages)
                transport._free_ids(self._messages)
                super().clear()

        will = self._will_message()
        kwargs: dict[str, Any] = {}
        if self.session_expiry_s and self.version != "3.1.1":
            kwargs["session_expiry_interval"] = self.session_expiry_s
        client = gmqtt.Client(
            self.client_id,
            clean_session=self.clean_start,
            will_message=will,
            persistent_storage=Storage(),
            logger=logging.LoggerAdapter(logging.getLogger("gmqtt"), {"sender": self.client_id}),  # whose, in each line
            **kwargs,
        )
        create_connection = client._create_connection

        async def create_and_read_directly(*args: Any, **kwargs: Any) -> Any:  # each connection, reconnects too
            connection = await create_connection(*args, **kwargs)
            _read_directly(connection._protocol, self.client_id)  # before CONNECT: nothing has arrived yet
            return connection

        client._create_connection = create_and_read_directly
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_ack
        client.on_unsubscribe = self._on_ack
        if self.url.username is not None:
            client.set_auth_credentials(self.url.username, self.url.password)
        return client

    def _will_message(self) -> Any:
        """The Will for the next CONNECT: `will`, or what `will()` makes (new bytes for each connection: a receiver
        that refuses the same signed bytes twice must not take a second lost connection for a replay)."""
        import gmqtt

        w = self.will() if callable(self.will) else self.will
        return None if w is None else gmqtt.Message(w.topic, w.payload, qos=w.qos, retain=w.retain)

    async def start(self) -> None:
        """Connect (retrying with backoff until connect_timeout_s) and start the sender."""
        from gmqtt.mqtt.constants import MQTTv50, MQTTv311

        # Probe first: gmqtt's own downgrade from 5 to 3.1.1 fails when a Will or a session
        # expiry is set, so decide the level before the real CONNECT (once per broker while connected: `_Levels`).
        level = None
        if self.version == "auto" and not self.url.tls:
            level = _BROKER_LEVELS.level.get(self._broker) or await asyncio.to_thread(self._level)
            if level == MQTT311:
                self.version = "3.1.1"
        self._client = self._make_client()
        ssl_ctx: ssl.SSLContext | bool = False
        if self.url.tls:
            ssl_ctx = ssl.create_default_context(cafile=self.tls_ca or self.url.ca)
        version = MQTTv311 if self.version == "3.1.1" else MQTTv50
        deadline = time.monotonic() + self.connect_timeout_s
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(
                    self._client.connect(
                        self.url.host, self.url.port, ssl=ssl_ctx, keepalive=self.keepalive_s, version=version
                    ),
                    timeout=max(deadline - time.monotonic(), 0.1),
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # gmqtt raises OSError, MQTTConnectError, TimeoutError... with little to say why
                u = self.url
                problem = await asyncio.to_thread(broker_problem, u.host, u.port, u.tls, u.username, u.password, 2.0)
                # a broker not (yet) listening or answering may come up: retried until the deadline; any other answer will not change
                if time.monotonic() >= deadline or (problem is not None and not isinstance(problem, Transient)):
                    raise BrokerError(f"cannot connect to {u} as {self.client_id!r}: {problem or e or type(e).__name__}") from None
                await asyncio.sleep(min(backoff_delay(attempt, self._rng), max(deadline - time.monotonic(), 0.0)))
                attempt += 1
        if level is not None and not self._holds_level:
            _BROKER_LEVELS.connected(self._broker, level)
            self._holds_level = True
        self._sender = asyncio.create_task(self._send_loop(), name=f"mqtt-send-{self.client_id}")

    def _forget_level(self) -> None:
        """This connection no longer vouches for its broker's level (`_Levels`)."""
        if self._holds_level:
            self._holds_level = False
            _BROKER_LEVELS.closed(self._broker)

    def _level(self) -> int | None:
        """The MQTT level the broker speaks (5, else 4 for 3.1.1; None: no answer yet). Something that is not an MQTT
        broker ends it here, in one line, before gmqtt meets it (and logs a page of tracebacks)."""
        u = self.url
        for level in (MQTT5, MQTT311):
            try:
                if connack(u.host, u.port, 2.0, level) not in UNSUPPORTED_LEVEL:
                    return level
            except NotMqtt as e:
                raise BrokerError(f"cannot connect to {u} as {self.client_id!r}: {e}") from None
            except Closed:  # a broker of 3.1.1 only may close a level-5 CONNECT without a word (RabbitMQ, NATS)
                continue
            except BrokerError:
                return None
        return None

    async def close(self) -> None:
        """Disconnect cleanly (the broker does not publish the Will)."""
        self._closing = True
        self._forget_level()
        self.stats.closed_s = time.time()
        for task in (self._sender, self._resubscribing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sender = self._resubscribing = None
        if self._client is not None:
            uncork = getattr(getattr(getattr(self._client, "_connection", None), "_protocol", None), "_v2x_uncork", None)
            if uncork is not None:
                uncork()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.disconnect(), timeout=5.0)
        self._connected.clear()

    # -- gmqtt callbacks ----------------------------------------------------------

    def _on_connect(self, client: Any, flags: int, rc: int, properties: dict[str, list[Any]]) -> None:
        """`flags`: CONNACK's session-present flag."""
        self._v5 = self.protocol_version == MQTT5  # this connection's level, read per message sent (`_send_qos0`)
        self._receive_max = int(properties.get("receive_maximum", [65535])[0]) if self._v5 else 65535
        self._connected_at = time.monotonic()
        if self._attempt:
            self.stats.reconnects += 1
            self.stats.sessions_lost += not flags
        if self.stats.outages and math.isnan(self.stats.outages[-1][1]):
            self.stats.outages[-1][1] = time.time()
        self._attempt = 0
        client.reconnect_delay = backoff_delay(0, self._rng)
        self._shed_early(client)  # a new connection: its packets come through a new one
        if self.coalesce_writes:
            self._coalesce(client)
        self._connected.set()
        self._freed.set()
        if self._resubscribing is not None:
            self._resubscribing.cancel()  # a previous connection's, maybe still waiting for a packet id
        if self._subs and not self._closing:  # re-subscribe: the session may be new
            self._resubscribing = asyncio.get_running_loop().create_task(self._resubscribe())

    def _on_disconnect(self, client: Any, packet: object, exc: object = None) -> None:
        """`packet`: the broker's DISCONNECT (its first byte the reason code), or b"" when the connection closed."""
        if self._connected.is_set() and not self._closing:  # lost, not closed
            self._forget_level()
            self.stats.disconnects += 1
            self.stats.outages.append([time.time(), math.nan])
            self._short_lived = self._short_lived + 1 if time.monotonic() - self._connected_at < TAKEN_OVER_WITHIN_S else 0
            reason = packet[0] if isinstance(packet, (bytes, bytearray)) and packet else None
            if reason == SESSION_TAKEN_OVER or self._short_lived >= TAKEN_OVER_TIMES:
                how = ("the broker said: session taken over, MQTT 5 reason 0x8E" if reason == SESSION_TAKEN_OVER else
                       f"the broker closed {self._short_lived} connections in a row within {TAKEN_OVER_WITHIN_S:g} s of accepting them")
                self.failure = BrokerError(
                    f"client id {self.client_id!r} was taken over by another client ({how}): another process connected "
                    "to the broker with the same client id; stopping rather than fighting over it"
                )
                self._closing = True
                client._is_active = False  # gmqtt's reconnect, already scheduled, checks this first: no reconnect
                log.error("%s", self.failure)
                if self._heard is not None:  # whoever reads only on arrival: `receive()` has this to say now
                    self._heard()
        self._connected.clear()
        # no acknowledgement will come on this connection (and gmqtt would keep their packet ids for good); the next
        # CONNACK subscribes `_subs` anew
        for fut in self._acks.values():
            if not fut.done():
                fut.set_result(None)
        self._free_ids(self._acks)
        self._acks.clear()
        if not self._closing:
            # gmqtt reconnects on its own after `reconnect_delay`: make that delay jittered and growing
            client.reconnect_delay = backoff_delay(self._attempt, self._rng)
            self._attempt += 1
            if callable(self.will):
                client._will_message = self._will_message()  # gmqtt sends it with the reconnect's CONNECT

    def receive(self, limit: int = 10_000) -> list[Message]:
        """The messages waiting in the inbox (see `_Inbox.receive`); raises `BrokerError` once the client id was
        taken over by another client (the connection is over: what it still holds is not handed out)."""
        if self.failure is not None:
            raise self.failure
        return super().receive(limit)

    def _on_ack(self, client: Any, mid: int, *args: Any) -> None:
        fut = self._acks.pop(mid, None)
        self._freed.set()
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _acked(self, mid: int, what: str) -> None:
        fut = self._acks[mid] = asyncio.get_running_loop().create_future()
        try:  # the entry, like gmqtt's packet id, stays until the acknowledgement (`_on_ack`) or the connection's loss
            await asyncio.wait_for(asyncio.shield(fut), timeout=self.connect_timeout_s)
        except TimeoutError:
            raise BrokerError(f"{self.url}: no acknowledgement of {what} for {self.client_id!r}") from None

    def _free_ids(self, mids: Iterable[int]) -> None:
        """Give back to gmqtt's pool the packet ids of what will never be acknowledged (gmqtt frees one only on its
        acknowledgement), and wake whoever waits for one (`_room`)."""
        ids = self._client._package_handler.id_generator
        for mid in mids:
            ids.free_id(mid)
        self._freed.set()

    def _full(self) -> bool:
        """Whether every packet id the broker allows in flight is taken. QoS 1 publishes awaiting PUBACK and
        SUBSCRIBEs and UNSUBSCRIBEs awaiting their acknowledgement draw on one pool of ids, which gmqtt caps at the
        broker's Receive Maximum (Mosquitto's: 20) and past which it raises OverflowError."""
        return len(self._unacked) + len(self._acks) >= min(self.max_inflight, self._receive_max) - 1

    async def _room(self) -> None:
        """Wait until a packet id is free (`_full`)."""
        while self._full():
            self._freed.clear()
            await self._freed.wait()

    async def _resubscribe(self) -> None:
        """After a CONNACK: every remembered filter again, in one SUBSCRIBE per QoS (each one packet id, taken when
        one is free; the filters read after the wait)."""
        for qos in sorted(set(self._subs.values())):
            await self._room()
            if not self._connected.is_set():
                return  # lost again: the next CONNACK subscribes them
            filters = [f for f, q in self._subs.items() if q == qos]
            if not filters:
                continue
            mid = self._send_subscribe(dict.fromkeys(filters, qos))
            self._acks[mid] = asyncio.get_running_loop().create_future()  # in flight until its SUBACK (`_on_ack`)

    def _send_subscribe(self, filters: dict[str, int]) -> int:
        """One SUBSCRIBE of `filters` (filter -> QoS); its packet id. Sent on gmqtt's connection, not through its
        client, which would also keep each filter in a list of its own: a list this transport never reads (it keeps
        `_subs`, and subscribes them again itself after a reconnect), but which gmqtt walks whole on every
        UNSUBSCRIBE and every SUBACK. A shared OBU connection carries the filters of hundreds of vehicles, and
        walking them was 4% of a fleet worker's CPU at four_way x 40, growing with the vehicles per connection."""
        from gmqtt import Subscription

        mid: int = self._client._connection.subscribe([Subscription(f, qos=q) for f, q in filters.items()])
        return mid

    def _shed_early(self, client: Any) -> None:
        """Take a QoS 0 PUBLISH as soon as it is framed (`_read_directly` hands it to the connection's `_v2x_qos0`):
        dropped (and counted) when the receiver would drop it anyway (`_takes_qos0`), about 1 us instead of 10 or more;
        else, when it is plain (`_plain_qos0`), read here and put in the inbox without gmqtt's generic handling (its
        property parsing and callback dispatch cost several times the rest). Anything else goes through gmqtt."""
        connection = getattr(client, "_connection", None)
        if connection is None or getattr(connection, "_v2x_qos0", None) is not None:
            return
        v5 = self.protocol_version == MQTT5

        def qos0(cmd: int, data: bytes) -> bool:
            """A QoS 0 PUBLISH (`cmd`, what follows its fixed header) taken here; False: for gmqtt to handle."""
            if not self._takes_qos0():
                self.stats.received += 1
                self.stats.dropped_in += 1
                connection._last_data_in = time.monotonic()  # the connection is alive: no keepalive alarm
                return True
            plain = _plain_qos0(data, v5)
            if plain is not None and connection._handler.current_connection is connection:
                connection._last_data_in = time.monotonic()
                if cmd & 0x01:  # retained: `_take` sees whether it is ours
                    self._take(plain[0], plain[1], 0, True)
                else:  # `_take`'s way for the rest, the most of them
                    self.stats.received += 1
                    self._put(_arrived(plain[0], plain[1], 0, False, time.time_ns(), False))  # (bytes: `_read_directly`)
                return True
            return False

        connection._v2x_qos0 = qos0

    @staticmethod
    def _coalesce(client: Any) -> None:
        """Hold what gmqtt writes during a turn of the event loop and write it to the socket at once, at the turn's
        end (the protocol is gmqtt's per connection: patched again after each reconnect)."""
        protocol = getattr(getattr(client, "_connection", None), "_protocol", None)
        if protocol is None or getattr(protocol, "_v2x_coalesces", False):
            return
        write = protocol.write_data
        held: list[bytes] = []

        def flush() -> None:
            if held:  # (an uncork may have written them already)
                data = b"".join(held)
                held.clear()
                write(data)

        def write_data(data: bytes) -> None:
            if not held:
                asyncio.get_running_loop().call_soon(flush)
            held.append(data)

        def uncork() -> None:  # before a clean disconnect: what is held goes first, then writes go straight out
            flush()
            protocol.write_data = write

        protocol.write_data = write_data
        protocol._v2x_coalesces = True
        protocol._v2x_uncork = uncork

    def _takes_qos0(self) -> bool:
        """Whether a QoS 0 message may come in now: room in the inbox, and within the rate (counted if so)."""
        if len(self._inbox) >= self._inbox_size:
            return False
        if self._qos0_per_window != math.inf:
            now = time.monotonic()
            if now >= self._window_ends:
                self._window_ends, self._qos0_in_window = now + RATE_WINDOW_S, 0
            if self._qos0_in_window >= self._qos0_per_window:
                return False
            self._qos0_in_window += 1
        return True

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        self._take(topic, payload, qos, bool(properties.get("retain", False)), bool(properties.get("dup", False)))
        return 0

    def _take(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool = False) -> None:
        if retain and not any(topic_matches(f.split("/", 2)[2] if f.startswith("$share/") else f, topic) for f in self._subs):
            self.stats.not_subscribed += 1  # not ours (see TransportStats.not_subscribed)
            return
        self.stats.received += 1
        self._put(_arrived(topic, bytes(payload), qos, retain, time.time_ns(), dup))

    # -- publishing ---------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: int | None = None
    ) -> bool:
        """Queue a message; never blocks. False (and counted) when the outbox is full."""
        if qos == 0 and not self._connected.is_set():
            self.stats.dropped_out += 1  # short-lived: not worth sending late; the caller learns it was not sent
            return False
        expiry = None if expiry_s is None or self.version == "3.1.1" else int(expiry_s)
        if qos == 0 and self._outbox.empty():  # (connected: see above)
            # nothing queued ahead of it: write it now rather than wait for the sender task's turn
            self.stats.published += 1
            self._send_qos0(topic, payload, retain, expiry)
            return True
        props: dict[str, Any] = {} if expiry is None else {"message_expiry_interval": expiry}
        try:
            self._outbox.put_nowait(_Outgoing(topic, payload, qos, retain, props))
        except asyncio.QueueFull:
            self.stats.dropped_out += 1
            return False
        self.stats.published += 1
        return True

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item.qos == 0 and not self._connected.is_set():
                self.stats.dropped_out += 1  # short-lived: no point sending it late
                continue
            await self._connected.wait()
            if item.qos > 0:
                await self._room()
            self._send(item)

    def _send(self, item: _Outgoing) -> None:
        if item.qos == 0:
            self._send_qos0(item.topic, item.payload, item.retain, item.props.get("message_expiry_interval"))
            return
        props = item.props if self.protocol_version == MQTT5 else {}
        try:
            self._client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain, **props)
        except Exception as e:  # a connection lost between the checks and here
            log.warning("publish to %s failed: %s", item.topic, e)
            self.stats.dropped_out += 1
            return
        self.stats.sent += 1

    def _send_qos0(self, topic: str, payload: bytes, retain: bool, expiry_s: int | None) -> None:
        """Write a QoS 0 PUBLISH through gmqtt's protocol (its keepalive clock, and this connection's coalescing),
        the packet built here (`qos0_publish`): nothing of it waits for an acknowledgement or is stored."""
        v5 = self._v5
        try:
            self._client._connection._protocol.write_data(qos0_publish(topic, payload, retain, v5, expiry_s if v5 else None))
        except Exception as e:  # a connection lost between the checks and here; a payload too large
            log.warning("publish to %s failed: %s", topic, e)
            self.stats.dropped_out += 1
            return
        self.stats.sent += 1

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until the outbox is empty and every QoS 1 message is acknowledged."""
        deadline = time.monotonic() + timeout_s
        while self._outbox.qsize() or self._unacked:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- subscribing ----------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        """Subscribe; when connected, returns once the broker acknowledged (SUBACK).

        While disconnected the filter is remembered and subscribed on the next CONNACK.
        """
        self._subs[topic_filter] = qos
        if self._connected.is_set():
            await self._room()  # many at once (a shared OBU connection's vehicles) wait for packet ids
            if self._connected.is_set() and self._subs.get(topic_filter) == qos:  # else lost (the next CONNACK
                # subscribes it) or unsubscribed meanwhile
                await self._acked(self._send_subscribe({topic_filter: qos}), f"SUBSCRIBE {topic_filter}")

    async def unsubscribe(self, topic_filter: str) -> None:
        if self._subs.pop(topic_filter, None) is not None and self._connected.is_set():
            await self._room()
            if self._connected.is_set() and topic_filter not in self._subs:  # not lost, nor subscribed again meanwhile
                await self._acked(self._client._connection.unsubscribe(topic_filter), f"UNSUBSCRIBE {topic_filter}")



# ---------------------------------------------------------------------------
# In memory, for unit tests of service logic
# ---------------------------------------------------------------------------


class MemoryBroker:
    """An in-process broker: wildcards, retained messages and Last Wills; no network."""

    def __init__(self) -> None:
        self.clients: dict[str, MemoryTransport] = {}
        self.retained: dict[str, Message] = {}

    def route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        msg = Message(topic, payload, qos, False, time.time_ns())
        if retain:
            if payload:
                self.retained[topic] = Message(topic, payload, qos, True, msg.rx_ns)
            else:
                self.retained.pop(topic, None)
        for c in list(self.clients.values()):
            c.deliver(msg)

    def kill(self, client_id: str) -> None:
        """Drop a client without a clean disconnect: its Will is published."""
        c = self.clients.pop(client_id, None)
        if c is not None:
            c._connected = False
            if c.will is not None:
                self.route(c.will.topic, c.will.payload, c.will.qos, c.will.retain)


class MemoryTransport(_Inbox):
    """The Transport interface over a MemoryBroker."""

    def __init__(self, broker: MemoryBroker, client_id: str, *, will: Will | None = None, inbox: int = 10_000) -> None:
        self.broker = broker
        self.client_id = client_id
        self.will = will
        self.stats = TransportStats()
        self._subs: dict[str, int] = {}
        self._matched: Kept[str, bool] = Kept(MATCHES_KEPT)  # topic -> whether a filter of `_subs` matches it
        self._open_inbox(inbox)
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def protocol_version(self) -> int:
        return MQTT5

    async def start(self) -> None:
        self.broker.clients[self.client_id] = self
        self._connected = True

    async def close(self) -> None:
        self.broker.clients.pop(self.client_id, None)
        self._connected = False
        self.stats.closed_s = time.time()

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: int | None = None
    ) -> bool:
        if not self._connected:
            self.stats.dropped_out += 1
            return False
        self.stats.published += 1
        self.stats.sent += 1
        self.broker.route(topic, payload, qos, retain)
        return True

    def deliver(self, msg: Message) -> None:
        matched = self._matched.get(msg.topic)
        if matched is None:  # a topic's answer kept until its filters change
            matched = self._matched.keep(msg.topic, any(topic_matches(f, msg.topic) for f in self._subs))
        if not matched:
            return
        self.stats.received += 1
        self._put(msg)

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        self._subs[topic_filter] = qos
        self._matched.clear()
        for topic, msg in self.broker.retained.items():
            if topic_matches(topic_filter, topic):
                self.deliver(msg)

    async def unsubscribe(self, topic_filter: str) -> None:
        self._subs.pop(topic_filter, None)
        self._matched.clear()


    async def drain(self, timeout_s: float = 5.0) -> bool:
        return True
