"""The lockstep barrier's accounting, on the in-memory broker (pure logic; the real-broker runs are in test_fast)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from v2x.net.lockstep import Hub
from v2x.net.transport import MemoryBroker, MemoryTransport, Message


async def test_the_barrier_expects_what_subscriptions_match_and_orders_deliveries() -> None:
    broker = MemoryBroker()
    hub = Hub("v2x/v1", timeout_s=0.2)
    a, b = hub.wrap(MemoryTransport(broker, "a")), hub.wrap(MemoryTransport(broker, "b"))
    await a.start()
    await b.start()
    await b.subscribe("v2x/v1/bsm/#")
    a.publish("v2x/v1/bsm/1/2/veh-2", b"second")
    a.publish("v2x/v1/bsm/1/1/veh-1", b"first")
    a.publish("v2x/v1/spat/rsu/1/J1", b"not for b")
    assert b.outstanding == 2
    assert a.outstanding == 0
    await hub.settle()
    assert [msg.payload for msg in b.receive()] == [b"first", b"second"]  # sorted by topic, not arrival
    assert hub.stats.deliveries == 2
    assert hub.stats.lost == 0
    assert hub.outstanding() == 0


async def test_retained_messages_are_expected_by_a_later_subscriber() -> None:
    broker = MemoryBroker()
    hub = Hub("v2x/v1", timeout_s=0.2)
    rsu, veh = hub.wrap(MemoryTransport(broker, "rsu")), hub.wrap(MemoryTransport(broker, "veh"))
    await rsu.start()
    await veh.start()
    rsu.publish("v2x/v1/map/1/J1", b"geometry", qos=1, retain=True)
    await veh.subscribe("v2x/v1/map/1/#")
    assert veh.outstanding == 1
    await hub.settle()
    assert [msg.payload for msg in veh.receive()] == [b"geometry"]


async def test_strangers_are_set_aside_and_missing_deliveries_counted_lost() -> None:
    broker = MemoryBroker()
    hub = Hub("v2x/v1", timeout_s=0.1)
    small = hub.wrap(MemoryTransport(broker, "small", inbox=1))  # its inbox holds one message
    pub = hub.wrap(MemoryTransport(broker, "pub"))
    stranger = MemoryTransport(broker, "stranger")  # not part of the run
    for t in (small.inner, pub.inner, stranger):
        await t.start()
    await small.subscribe("v2x/v1/rsi/#")
    stranger.publish("v2x/v1/rsi/9/x", b"from elsewhere")  # fills the inbox: nobody of the run expects it
    pub.publish("v2x/v1/rsi/1/cloud/1", b"hazard")  # dropped by the full inbox
    await hub.settle()
    assert small.receive() == []
    assert hub.stats.unexpected == 1
    assert hub.stats.unexpected_by_kind == {"rsi": 1}
    assert hub.stats.lost == 1
    assert hub.outstanding() == 0


async def test_the_barrier_sleeps_until_an_inbox_gets_something_and_takes_in_only_those_that_did() -> None:
    broker = MemoryBroker()
    hub = Hub("v2x/v1", timeout_s=5.0)
    pub, sub, idle = (hub.wrap(MemoryTransport(broker, name)) for name in ("pub", "sub", "idle"))
    for t in (pub, sub, idle):
        await t.start()
    await sub.subscribe("v2x/v1/rsi/#")
    await idle.subscribe("v2x/v1/map/#")
    asked: dict[str, int] = {"sub": 0, "idle": 0}
    for name, t in (("sub", sub), ("idle", idle)):
        def counted(limit: int = 10_000, receive: Callable[[int], list[Message]] = t.inner.receive, name: str = name) -> list[Message]:
            asked[name] += 1
            return receive(limit)
        t.inner.receive = counted  # type: ignore[method-assign]
    sub.expect(("v2x/v1/rsi/1/cloud/1", b"hazard"))  # as if published by another client of the run, still on its way

    async def arrives_later() -> None:
        await asyncio.sleep(0.2)
        broker.route("v2x/v1/rsi/1/cloud/1", b"hazard", 1, False)

    later = asyncio.create_task(arrives_later())
    await hub.settle()
    await later
    assert hub.stats.deliveries == 1
    assert hub.stats.lost == 0
    assert asked == {"sub": 1, "idle": 0}  # taken in once, when it arrived; a client that got nothing is not asked
    assert [msg.payload for msg in sub.receive()] == [b"hazard"]
