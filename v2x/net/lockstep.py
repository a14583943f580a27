"""Fast mode: every tier in one process, stepping together in sim time, through the real broker.

Each vehicle, RSU and the cloud keeps its own MQTT connection, exactly as in real time; what
changes is the clock. A lockstep driver advances sim time one step at a time, as fast as
the broker carries the messages, and waits at a barrier until every message published in
the step has reached every in-process subscriber before anyone acts on it. So the run is
deterministic: the same scenario and seed give the same traffic and the same message counts.

The barrier knows what each client should receive because every client of the run goes
through a `Hub`: it records each client's subscriptions (after the broker's SUBACK) and,
for each publish, which clients' filters match (and, for retained messages, what a later
subscriber gets). A client then expects a multiset of (topic, payload) deliveries; what
arrives is matched against it. Within a round each client handles its messages sorted by
(topic, payload), so arrival order between connections never shows. A delivery that never
arrives (a broker or inbox drop) ends the wait after `timeout_s`, counted as lost; a message
no subscription of this run explains (something else publishing on the broker) is counted
and set aside. The barrier sleeps until a client's inbox gets something (`on_arrival`), and then
takes in only what those clients got.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from v2x.net.transport import FilterTree, Lifecycle, Message, Transport, TransportStats, topic_matches

Key = tuple[str, bytes]  # (topic, payload): one delivery
_DELIVERY_ORDER = operator.attrgetter("topic", "payload")  # a round's deliveries to a client, in this order


class Inner(Transport, Protocol):
    """A transport the hub can wrap: it says when its inbox gets something."""

    def on_arrival(self, callback: Callable[[], None] | None) -> None: ...


@dataclass
class LockstepStats:
    rounds: int = 0
    deliveries: int = 0  # expected deliveries that arrived
    lost: int = 0  # expected deliveries that never arrived within the timeout
    unexpected: int = 0  # arrivals no subscription of this run explains (set aside)
    unexpected_by_kind: dict[str, int] = field(default_factory=dict)
    wait_s: float = 0.0  # [s] wall time spent waiting at the barrier
    waited_out_s: float = 0.0  # [s] of it in rounds that ended at the timeout, waiting for deliveries that never came


class Hub:
    """Every client of a lockstep run: their subscriptions, what they should receive, the barrier."""

    def __init__(self, root: str, timeout_s: float = 5.0, retained_to_wildcard: bool = True) -> None:
        """`retained_to_wildcard`: whether the broker delivers retained messages to wildcard subscriptions; when it
        does not (RabbitMQ), none is expected there, and no round waits for them (v2x.run.gaps)."""
        self.root_levels = len(root.strip("/").split("/"))
        self.timeout_s = timeout_s
        self.retained_to_wildcard = retained_to_wildcard
        self.clients: dict[LockstepTransport, None] = {}  # open ones
        self.stats = LockstepStats()
        self.published = 0  # publishes so far: the driver runs another round while this grows
        self._filters: FilterTree[LockstepTransport] = FilterTree()
        self._retained: dict[str, bytes] = {}
        self._outstanding = 0  # expected deliveries not yet arrived, over every client
        self._heard: dict[LockstepTransport, None] = {}  # clients whose inbox got something since they were collected
        self._woken = asyncio.Event()  # set when a client is heard

    def wrap(self, inner: Inner) -> LockstepTransport:
        client = LockstepTransport(inner, self)
        self.clients[client] = None

        def heard() -> None:
            self._heard[client] = None
            self._woken.set()

        inner.on_arrival(heard)
        return client

    def _level(self, topic: str) -> str:
        """The level that tells message kinds apart: the first under the root."""
        parts = topic.split("/", self.root_levels + 1)
        return parts[self.root_levels] if len(parts) > self.root_levels else ""

    def subscribed(self, client: LockstepTransport, topic_filter: str) -> None:
        self._filters.add(topic_filter, client)
        client.filters.add(topic_filter)
        if not self.retained_to_wildcard and ("+" in topic_filter or "#" in topic_filter):
            return
        for topic, payload in self._retained.items():
            if topic_matches(topic_filter, topic):
                client.expect((topic, payload))

    def unsubscribed(self, client: LockstepTransport, topic_filter: str) -> None:
        self._filters.discard(topic_filter, client)
        client.filters.discard(topic_filter)

    def publishing(self, topic: str, payload: bytes, retain: bool) -> None:
        self.published += 1
        key = (topic, payload)
        for clients in self._filters.match(topic):
            for c in clients:
                c.expect(key)
        if retain:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)

    def unexpected(self, topic: str) -> None:
        self.stats.unexpected += 1
        kind = self._level(topic)
        self.stats.unexpected_by_kind[kind] = self.stats.unexpected_by_kind.get(kind, 0) + 1

    def outstanding(self) -> int:
        return self._outstanding

    def _collect(self) -> None:
        """Take in what the clients that were heard got (collecting one may hear others: a shared connection's)."""
        while self._heard:
            heard, self._heard = self._heard, {}
            for c in heard:
                c.collect()

    async def settle(self) -> None:
        """Wait until every client has received what it expects (or the timeout passed)."""
        self.stats.rounds += 1
        t0 = time.monotonic()
        self._collect()
        if self._outstanding:
            try:
                async with asyncio.timeout(self.timeout_s):
                    while self._outstanding:
                        self._woken.clear()
                        await self._woken.wait()  # until a connection reads something for a client
                        self._collect()
            except TimeoutError:
                for c in self.clients:
                    c.give_up()
                self.stats.waited_out_s += time.monotonic() - t0
        self.stats.wait_s += time.monotonic() - t0


class LockstepTransport(Lifecycle):
    """A client of a lockstep run: the real transport underneath, with its deliveries accounted for."""

    def __init__(self, inner: Inner, hub: Hub) -> None:
        self.inner = inner
        self.hub = hub
        self.stats: TransportStats = inner.stats
        self._expected: dict[Key, int] = {}
        self.filters: set[str] = set()
        self.outstanding = 0
        self._ready: list[Message] = []

    @property
    def connected(self) -> bool:
        return self.inner.connected

    @property
    def protocol_version(self) -> int:
        return self.inner.protocol_version

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        for topic_filter in list(self.filters):
            self.hub.unsubscribed(self, topic_filter)
        self.give_up()
        self.hub.clients.pop(self, None)
        await self.inner.close()

    def expect(self, key: Key) -> None:
        self._expected[key] = self._expected.get(key, 0) + 1
        self.outstanding += 1
        self.hub._outstanding += 1

    def collect(self) -> None:
        """Take what arrived."""
        for msg in self.inner.receive():
            key = (msg.topic, msg.payload)
            left = self._expected.get(key, 0)
            if left == 0:
                self.hub.unexpected(msg.topic)
                continue
            if left == 1:
                del self._expected[key]
            else:
                self._expected[key] = left - 1
            self.outstanding -= 1
            self.hub._outstanding -= 1
            self.hub.stats.deliveries += 1
            self._ready.append(msg)

    def give_up(self) -> None:
        """Count what is still expected as lost."""
        self.hub.stats.lost += self.outstanding
        self.hub._outstanding -= self.outstanding
        self._expected.clear()
        self.outstanding = 0

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: int | None = None
    ) -> bool:
        if not self.inner.publish(topic, payload, qos=qos, retain=retain, expiry_s=expiry_s):
            return False
        self.hub.publishing(topic, payload, retain)
        return True

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        await self.inner.subscribe(topic_filter, qos)  # returns after the broker's SUBACK
        self.hub.subscribed(self, topic_filter)

    async def unsubscribe(self, topic_filter: str) -> None:
        self.hub.unsubscribed(self, topic_filter)
        await self.inner.unsubscribe(topic_filter)

    def receive(self, limit: int = 10_000) -> list[Message]:
        """This round's deliveries, in a fixed order: by topic, then payload."""
        self.collect()
        out = self._ready
        if not out:
            return []
        self._ready = []
        if len(out) > 1:
            out.sort(key=_DELIVERY_ORDER)
        return out

    async def wait(self, timeout_s: float) -> bool:
        """A lockstep client is not waited on: the driver settles each round, then its owner calls `receive()`."""
        raise RuntimeError("a lockstep client is received from by the driver's rounds, not waited on")

    async def drain(self, timeout_s: float = 5.0) -> bool:
        return await self.inner.drain(timeout_s)
