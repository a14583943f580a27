"""One broker connection for many stations: a fleet's OBUs in the shared-connection mode (`--obu-connections shared`).

Each vehicle keeps its own `Transport`, topics, sequence numbers and measurements; what changes is underneath:
its messages go out on the fleet's one connection, and each topic filter is subscribed to once, however many of
the vehicles want it. What arrives is handed to every vehicle whose filters match (a `FilterTree`, as a broker
does), once per vehicle: into its inbox, or, for the fleet's OBUs in real time (`fanned`), once with all of them,
for the fleet to take for all at once. So the broker delivers a SPaT once to the fleet instead of once per vehicle
that hears it, and a publish costs no system call and wake-up of its own.

A vehicle that subscribes to a filter already held gets the retained messages under it from the connection's own
copy of them (the broker sends retained messages only when a filter is subscribed to): the last message of each
retained topic this connection heard, dropped when cleared or when no filter holds its topic any more.

What it gives up: per-vehicle client ids, Wills and logins (the broker sees one client, so its ACLs cannot tell
the vehicles apart), and a per-vehicle QoS 0 rate limit (the fleet's one connection takes what it is sent).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from v2x.core.topics import RETAINED_KINDS, kind_of
from v2x.net.transport import FilterTree, Message, MqttTransport, Transport, TransportStats, _Inbox, topic_matches


class SharedConnection:
    """The fleet's one connection, and the vehicles' transports over it (`transport(sid)`)."""

    def __init__(self, inner: MqttTransport) -> None:
        self.inner = inner
        self.tree: FilterTree[SharedTransport] = FilterTree()
        self.holders: dict[str, int] = {}  # filter -> how many vehicles hold it
        self._subscribing: dict[str, asyncio.Task[None]] = {}  # filters on their way to the broker
        self.retained: dict[str, Message] = {}  # retained topic -> its last message
        self._started: asyncio.Task[None] | None = None
        self.transports = 0  # vehicles' transports made
        self.delivered = 0  # messages handed to vehicles (one per vehicle)
        # what arrived for the `fanned` transports, in order of arrival: each message once, with the transports it is
        # for (None: every transport has an inbox; the fleet sets it when it reads its OBUs this way, v2x.vehicle.fleet)
        self.fanned: list[tuple[Message, list[SharedTransport]]] | None = None

    def transport(self, sid: str, fanned: bool = False) -> SharedTransport:
        """A vehicle's transport over this connection (`sid` names it in logs only: the broker sees one client).
        `fanned`: what it is handed goes to `fanned` with the others it is for, not to its inbox (when `fanned` is
        a list): a fleet takes each message once for all of its vehicles that hear it. Its `receive` then has
        nothing (and no inbox limit applies: the connection's own holds what waits)."""
        self.transports += 1
        return SharedTransport(self, sid, fanned=fanned)

    async def start(self) -> None:
        """Connect once, whoever asks first; the others wait for the same connection."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.inner.start())
        await asyncio.shield(self._started)

    async def close(self) -> None:
        if self._started is not None:
            await self.inner.close()

    def pump(self) -> None:
        """Hand what arrived to the vehicles whose filters match it (each vehicle once)."""
        for msg in self.inner.receive(1_000_000):
            if kind_of(msg.topic) in RETAINED_KINDS:
                if msg.payload:
                    self.retained[msg.topic] = msg
                else:
                    self.retained.pop(msg.topic, None)
            matched = self.tree.match(msg.topic)
            who = matched[0] if len(matched) == 1 else set().union(*matched)
            self.delivered += len(who)
            if self.fanned is None:
                for t in who:
                    t._deliver(msg)
                continue
            fanned = []
            for t in who:
                if t.fanned:
                    t.stats.received += 1
                    fanned.append(t)
                else:
                    t._deliver(msg)
            if fanned:
                self.fanned.append((msg, fanned))

    async def hold(self, t: SharedTransport, topic_filter: str, qos: int) -> None:
        """`t` wants `topic_filter`: subscribed on the connection by the first vehicle that wants it; a vehicle that
        comes later gets the retained messages under it from the connection's copy."""
        held = topic_filter in self.holders
        if held:
            self.pump()  # what arrived before this vehicle held the filter is not its
        self.tree.add(topic_filter, t)  # before the broker's SUBACK: the retained messages follow it at once
        self.holders[topic_filter] = self.holders.get(topic_filter, 0) + 1
        if held:
            head = _literal_head(topic_filter)
            for topic, msg in list(self.retained.items()):
                if topic.startswith(head) and topic_matches(topic_filter, topic):
                    copy = Message(topic, msg.payload, msg.qos, True, msg.rx_ns)
                    if t.fanned and self.fanned is not None:  # after what arrived before (pumped above), as an inbox keeps it
                        t.stats.received += 1
                        self.fanned.append((copy, [t]))
                    else:
                        t._deliver(copy)
        task = self._subscribing.get(topic_filter)
        if task is None and not held:
            task = self._subscribing[topic_filter] = asyncio.ensure_future(self.inner.subscribe(topic_filter, qos))
            task.add_done_callback(lambda _t: self._subscribing.pop(topic_filter, None))
        if task is not None:
            try:
                await asyncio.shield(task)
            except BaseException:  # not acknowledged: as if never asked (the fleet asks again)
                self.tree.discard(topic_filter, t)
                if self.holders.get(topic_filter, 0) <= 1:
                    self.holders.pop(topic_filter, None)
                else:
                    self.holders[topic_filter] -= 1
                raise

    async def release(self, t: SharedTransport, topic_filter: str) -> None:
        """`t` no longer wants `topic_filter`: unsubscribed on the connection when no vehicle holds it."""
        self.tree.discard(topic_filter, t)
        n = self.holders.get(topic_filter, 0) - 1
        if n > 0:
            self.holders[topic_filter] = n
            return
        self.holders.pop(topic_filter, None)
        await self.inner.unsubscribe(topic_filter)
        for topic in [tp for tp in self.retained if not any(self.tree.match(tp))]:
            del self.retained[topic]  # no filter holds it: its copy would go stale


@functools.lru_cache(maxsize=4096)
def _literal_head(topic_filter: str) -> str:
    """What every topic a filter matches begins with: its levels before the first wildcard (without the separator,
    as `a/#` matches `a`). A quick test before `topic_matches`, for the copies of the retained messages a vehicle
    gets when it holds a filter: a shared connection keeps every junction's MAP, and holds are many."""
    for i, level in enumerate(parts := topic_filter.split("/")):
        if level in ("+", "#"):
            return "/".join(parts[:i])
    return topic_filter


class SharedTransport(_Inbox):
    """One vehicle's transport over a `SharedConnection`: its own inbox and counts, the fleet's connection."""

    def __init__(self, shared: SharedConnection, sid: str, inbox: int = 1000, fanned: bool = False) -> None:
        self.shared = shared
        self.sid = sid
        self.fanned = fanned  # see SharedConnection.transport
        self.stats = TransportStats()
        self._filters: set[str] = set()
        self._open_inbox(inbox)
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open and self.shared.inner.connected

    @property
    def protocol_version(self) -> int:
        return self.shared.inner.protocol_version

    async def start(self) -> None:
        await self.shared.start()
        self._open = True

    async def close(self) -> None:
        self._open = False
        for f in sorted(self._filters):
            await self.shared.release(self, f)
        self._filters.clear()
        self.stats.closed_s = time.time()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: int | None = None) -> bool:
        if not self._open:
            self.stats.dropped_out += 1
            return False
        ok = self.shared.inner.publish(topic, payload, qos, retain, expiry_s)
        if ok:
            self.stats.published += 1
            self.stats.sent += 1
        else:
            self.stats.dropped_out += 1
        return ok

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        if topic_filter not in self._filters:
            await self.shared.hold(self, topic_filter, qos)
            self._filters.add(topic_filter)

    async def unsubscribe(self, topic_filter: str) -> None:
        if topic_filter in self._filters:
            self._filters.discard(topic_filter)
            await self.shared.release(self, topic_filter)

    def on_arrival(self, callback: Callable[[], None] | None) -> None:
        """`callback()` after each message put into this vehicle's inbox, and after each that reaches the fleet's
        connection: the latest vehicle to ask is called back for those, and its `receive()` hands them to every
        vehicle (`SharedConnection.pump`), whose own inboxes then call back."""
        super().on_arrival(callback)
        self.shared.inner.on_arrival(callback)

    def _deliver(self, msg: Message) -> None:
        self.stats.received += 1
        self._put(msg)

    def receive(self, limit: int = 10_000) -> list[Message]:
        self.shared.pump()
        return super().receive(limit)

    async def wait(self, timeout_s: float) -> bool:
        self.shared.pump()
        if self._inbox:
            return True
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not await self.shared.inner.wait(left):
                return False
            self.shared.pump()
            if self._inbox:
                return True

    async def drain(self, timeout_s: float = 5.0) -> bool:
        return await self.shared.inner.drain(timeout_s)


_IS_A_TRANSPORT: type[Transport] = SharedTransport  # mypy checks it has every method of one
