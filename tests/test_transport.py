"""The MQTT transport against a real Mosquitto, and its in-memory twin."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.errors import BrokerError
from v2x.net import transport as transport_module
from v2x.net.broker import EmbeddedBroker, MosquittoBroker
from v2x.net.shared import _literal_head
from v2x.net.transport import (
    BACKOFF_CAP_S,
    BrokerUrl,
    FilterTree,
    MemoryBroker,
    MemoryTransport,
    Message,
    MqttTransport,
    Will,
    backoff_delay,
    topic_matches,
)
from v2x.testing import messages


async def _collect(t: MqttTransport | MemoryTransport, n: int, timeout_s: float = 10.0) -> list[Message]:
    out: list[Message] = []

    async def run() -> None:
        async for msg in messages(t):
            out.append(msg)
            if len(out) >= n:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run(), timeout_s)
    return out


def _frame(seq: int) -> bytes:
    return codec.encode(
        m.Frame(
            m.Header("veh-1", m.SenderKind.VEHICLE, seq, 1_763_700_000_000_000, seq * 100),
            m.Bsm(position=m.GeoPoint(31.49, 120.31), speed_mps=10.0, heading_deg=90.0),
        )
    )


async def test_round_trip_of_a_frame(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-sub") as sub, MqttTransport(mosquitto.url, f"{topic_prefix}-pub") as pub:
        await sub.subscribe(f"{topic_prefix}/#")
        await asyncio.sleep(0.2)
        assert pub.publish(f"{topic_prefix}/bsm/x", _frame(7), expiry_s=1)
        [msg] = await _collect(sub, 1)
    assert msg.topic == f"{topic_prefix}/bsm/x"
    assert codec.decode(msg.payload).header.seq == 7
    assert pub.protocol_version == 5


async def test_qos1_burst_beyond_receive_maximum_is_delivered(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    n = 3000  # Mosquitto's default Receive Maximum is 20
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-sub") as sub, MqttTransport(mosquitto.url, f"{topic_prefix}-pub") as pub:
        await sub.subscribe(f"{topic_prefix}/#", qos=1)
        await asyncio.sleep(0.2)
        for i in range(n):
            assert pub.publish(f"{topic_prefix}/rsi", _frame(i), qos=1)
        got = await _collect(sub, n, 30)
        assert await pub.drain()
    assert len({codec.decode(x.payload).header.seq for x in got}) == n
    assert pub.stats.dropped_out == 0


async def test_many_subscriptions_at_once_stay_within_the_broker_s_receive_maximum(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    """A shared OBU connection subscribes for many vehicles at once, beside QoS 1 publishes: SUBSCRIBE takes a packet
    id from the same pool as they do, which Mosquitto's Receive Maximum (20) bounds. gmqtt raised OverflowError
    ("All ids has already used") past it, and the fleet process died (four_way x 48, shared). And what comes and goes
    leaves nothing behind in gmqtt's own list of subscriptions, which it would walk whole on every acknowledgement."""
    n = 60
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-sub") as sub, MqttTransport(mosquitto.url, f"{topic_prefix}-pub") as pub:
        for i in range(40):  # QoS 1 publishes in flight on the subscriber's own connection too
            assert sub.publish(f"{topic_prefix}/echo", _frame(i), qos=1)
        await asyncio.gather(*(sub.subscribe(f"{topic_prefix}/t/{i}", qos=1) for i in range(n)))
        await asyncio.gather(*(sub.unsubscribe(f"{topic_prefix}/t/{i}") for i in range(0, n, 2)))
        for i in range(n):
            assert pub.publish(f"{topic_prefix}/t/{i}", _frame(i), qos=1)
        got = await _collect(sub, n // 2, 10)
        assert await sub.drain()
        await asyncio.sleep(0.3)
        assert sub._client.subscriptions == []  # gmqtt keeps no list of its own to walk on each (UN)SUBACK
    assert sorted(codec.decode(x.payload).header.seq for x in got) == list(range(1, n, 2))
    assert sub.stats.dropped_out == 0
    assert sub.stats.sent == 40


async def test_reconnect_resubscribes_more_filters_than_the_receive_maximum(broker_factory, topic_prefix: str) -> None:  # type: ignore[no-untyped-def]
    """After a reconnect every remembered filter is subscribed again: more of them than the broker's Receive
    Maximum (20) must not run out of packet ids."""
    broker = broker_factory()
    n = 50
    async with MqttTransport(broker.url, f"{topic_prefix}-sub", seed=1) as sub:
        for i in range(n):
            await sub.subscribe(f"{topic_prefix}/t/{i}", qos=1)
        broker.stop()
        await asyncio.sleep(0.5)
        assert not sub.connected
        broker.start()
        for _ in range(100):
            if sub.connected:
                break
            await asyncio.sleep(0.1)
        assert sub.connected
        assert sub.stats.reconnects == 1
        async with MqttTransport(broker.url, f"{topic_prefix}-pub") as pub:
            await asyncio.sleep(0.5)
            for i in range(n):
                assert pub.publish(f"{topic_prefix}/t/{i}", _frame(i), qos=1)
            got = await _collect(sub, n, 10)
    assert sorted(codec.decode(x.payload).header.seq for x in got) == list(range(n))


async def _reconnected(t: MqttTransport, timeout_s: float = 10.0) -> None:
    """Until `t` has reconnected and its filters are subscribed again (no acknowledgement awaited)."""
    for _ in range(int(timeout_s / 0.1)):
        if t.stats.reconnects >= 1 and t.connected and not t._acks:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{t.client_id} did not reconnect and subscribe again")


async def test_subscribes_in_flight_when_the_broker_dies_free_their_packet_ids(broker_factory, topic_prefix: str) -> None:  # type: ignore[no-untyped-def]
    """SUBSCRIBEs sent to a broker that hangs and then dies are never acknowledged: their packet ids must be freed with
    the connection (gmqtt keeps them), else the window stays full and every later subscribe and QoS 1 publish fails."""
    broker = broker_factory()
    async with MqttTransport(broker.url, f"{topic_prefix}-sub", seed=1) as sub:
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)  # up, but answering nothing
        pending = [asyncio.ensure_future(sub.subscribe(f"{topic_prefix}/t/{i}", qos=1)) for i in range(25)]
        await asyncio.sleep(0.5)
        broker.crash()
        broker.start()
        await asyncio.wait_for(asyncio.gather(*pending), 10)  # given up with the connection: subscribed on the next
        await _reconnected(sub)
        await sub.subscribe(f"{topic_prefix}/late", qos=1)  # an id was free
        async with MqttTransport(broker.url, f"{topic_prefix}-pub") as pub:
            for i in range(25):
                assert pub.publish(f"{topic_prefix}/t/{i}", _frame(i), qos=1)
            assert pub.publish(f"{topic_prefix}/late", _frame(99), qos=1)
            got = await _collect(sub, 26, 10)
    assert sorted(codec.decode(x.payload).header.seq for x in got) == [*range(25), 99]


async def test_publishes_of_a_lost_session_are_counted_dropped_and_free_their_packet_ids(broker_factory, topic_prefix: str) -> None:  # type: ignore[no-untyped-def]
    """QoS 1 publishes in flight when the session is lost (a broker restarted without persistence: CONNACK with no
    session) will never be acknowledged: counted as dropped, their packet ids freed, and the filters subscribed again."""
    broker = broker_factory()
    async with MqttTransport(broker.url, f"{topic_prefix}-sub", seed=1) as sub:
        await sub.subscribe(f"{topic_prefix}/z/#", qos=1)
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)
        for i in range(30):
            assert sub.publish(f"{topic_prefix}/out", _frame(i), qos=1)
        await asyncio.sleep(0.5)
        broker.crash()
        broker.start()
        await _reconnected(sub)
        assert await sub.drain(10.0)
        async with MqttTransport(broker.url, f"{topic_prefix}-pub") as pub:
            await asyncio.sleep(0.3)
            assert pub.publish(f"{topic_prefix}/z/a", _frame(7), qos=1)
            [msg] = await _collect(sub, 1, 10)
    assert codec.decode(msg.payload).header.seq == 7
    assert sub.stats.dropped_out > 0
    assert sub.stats.sent + sub.stats.dropped_out >= 30


async def test_forced_mqtt_311(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    async with (
        MqttTransport(mosquitto.url, f"{topic_prefix}-sub", version="3.1.1") as sub,
        MqttTransport(mosquitto.url, f"{topic_prefix}-pub", version="3.1.1") as pub,
    ):
        assert sub.protocol_version == 4
        await sub.subscribe(f"{topic_prefix}/+")
        await asyncio.sleep(0.2)
        pub.publish(f"{topic_prefix}/a", b"x", expiry_s=1)  # expiry is MQTT 5 only: dropped, not an error
        got = await _collect(sub, 1)
    assert [x.payload for x in got] == [b"x"]


async def test_a_full_inbox_drops_and_counts(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-sub", inbox=10) as sub, MqttTransport(mosquitto.url, f"{topic_prefix}-pub") as pub:
        await sub.subscribe(f"{topic_prefix}/#", qos=1)
        await asyncio.sleep(0.2)
        for i in range(200):
            pub.publish(f"{topic_prefix}/x", _frame(i), qos=1)
        assert await pub.drain()
        await asyncio.sleep(0.3)
        assert sub.stats.received == 200
        assert sub.stats.dropped_in == 190
        assert len(await _collect(sub, 10, 1)) == 10


async def test_reconnect_resubscribes_and_delivers_what_was_published_during_the_outage(broker_factory, topic_prefix: str) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory(persistence=True)
    url = broker.url
    async with (
        MqttTransport(url, f"{topic_prefix}-sub", clean_start=False, session_expiry_s=600, seed=1) as sub,
        MqttTransport(url, f"{topic_prefix}-pub", clean_start=False, session_expiry_s=600, seed=2) as pub,
    ):
        await sub.subscribe(f"{topic_prefix}/#", qos=1)
        await asyncio.sleep(0.3)
        for i in range(50):
            pub.publish(f"{topic_prefix}/plan", _frame(i), qos=1)
        assert await pub.drain()
        before = await _collect(sub, 50)
        await asyncio.sleep(1.2)  # let Mosquitto autosave the sessions (autosave_interval 1)
        broker.stop()
        await asyncio.sleep(0.5)
        assert not pub.connected
        for i in range(50, 100):  # published while the broker is down
            pub.publish(f"{topic_prefix}/plan", _frame(i), qos=1)
        broker.start()
        after = await _collect(sub, 50, 30)
        assert pub.stats.reconnects >= 1
        assert sub.stats.reconnects >= 1
    seqs = {codec.decode(x.payload).header.seq for x in before + after}
    assert seqs == set(range(100))


async def test_last_will_on_a_killed_client(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    will_topic = f"{topic_prefix}/status/rsu/R1"
    script = textwrap.dedent(f"""
        import asyncio, time
        from v2x.net.transport import MqttTransport, Will
        async def main():
            t = MqttTransport({mosquitto.url!r}, "rsu-R1", will=Will({will_topic!r}, b"offline"), keepalive_s=1)
            await t.start()
            t.publish({will_topic!r}, b"online", qos=1, retain=True)
            await t.drain()
            print("up", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
        await watch.subscribe(will_topic, qos=1)
        # a separate OS process, so that SIGKILL leaves the broker to publish the Will
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ})  # noqa: ASYNC220
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"up"
            [online] = await _collect(watch, 1)
            assert online.payload == b"online"
            os.kill(proc.pid, signal.SIGKILL)
            [will] = await _collect(watch, 1, 10)
            assert will.payload == b"offline"
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.integration
async def test_unreachable_broker_is_a_clear_error(topic_prefix: str) -> None:
    from v2x.net.broker import free_port

    t = MqttTransport(f"mqtt://127.0.0.1:{free_port()}", "x", connect_timeout_s=0.5)
    with pytest.raises(BrokerError, match=r"cannot connect to mqtt://127\.0\.0\.1"):
        await t.start()


@pytest.mark.integration
async def test_the_broker_level_is_probed_once_while_connected_and_again_for_another_broker_on_the_port(
    topic_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    probed: list[int] = []
    connack = transport_module.connack

    def counted(host: str, port: int, timeout_s: float = 1.0, version: int = 5) -> int:
        probed.append(version)
        return connack(host, port, timeout_s, version)

    monkeypatch.setattr(transport_module, "connack", counted)
    with MosquittoBroker() as first:
        port = first.port
        async with MqttTransport(first.url, f"{topic_prefix}-rsu") as rsu:
            for k in range(3):  # vehicles come and go while the RSU stays connected
                async with MqttTransport(first.url, f"{topic_prefix}-veh-{k}") as veh:
                    assert veh.protocol_version == transport_module.MQTT5
            assert rsu.protocol_version == transport_module.MQTT5
        assert probed == [transport_module.MQTT5]  # one probe for four connections
    with EmbeddedBroker(port) as second:  # on the same port, a broker of MQTT 3.1.1 only
        # with a Will, gmqtt cannot fall back to 3.1.1 on its own: connecting at 5 would fail
        async with MqttTransport(second.url, "after", will=Will(f"{topic_prefix}/status", b"gone")) as t:
            assert t.protocol_version == transport_module.MQTT311
    assert probed == [transport_module.MQTT5, transport_module.MQTT5, transport_module.MQTT311]


def test_topic_matching() -> None:
    assert topic_matches("v2x/v1/bsm/#", "v2x/v1/bsm/1/2/veh-1")
    assert topic_matches("v2x/v1/spat/+/1/#", "v2x/v1/spat/rsu/1/2/J1")
    assert topic_matches("a/#", "a")
    assert not topic_matches("v2x/v1/spat/+/1/#", "v2x/v1/spat/rsu/2/J1")
    assert not topic_matches("a/+", "a/b/c")
    assert not topic_matches("#", "$SYS/broker")


def test_broker_urls() -> None:
    assert BrokerUrl.parse("mqtt://127.0.0.1:1884") == BrokerUrl("127.0.0.1", 1884)
    assert BrokerUrl.parse("mqtts://u:p%40ss@host") == BrokerUrl("host", 8883, True, "u", "p@ss")
    assert BrokerUrl.parse("localhost").port == 1883
    with pytest.raises(BrokerError, match="scheme"):
        BrokerUrl.parse("http://x")
    with pytest.raises(BrokerError, match="port"):
        BrokerUrl.parse("mqtt://x:abc")


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(k, rng) for k in range(12)]
    assert delays[0] < 0.3
    assert max(delays) <= BACKOFF_CAP_S * 1.5
    assert delays[6] > delays[1]
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


async def test_memory_transport_retains_and_publishes_wills() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "a", will=Will("s/a", b"offline")) as a, MemoryTransport(broker, "b") as b:
        a.publish("s/a", b"online", qos=1, retain=True)
        await b.subscribe("s/#")
        [retained] = await _collect(b, 1)
        assert retained.payload == b"online"
        broker.kill("a")
        [will] = await _collect(b, 1)
        assert will.payload == b"offline"


def test_filter_tree_matches_exactly_what_topic_matches_does() -> None:
    """The lockstep hub's filter tree against the plain matcher, on random filters and topics (with + # and $); and
    every topic a filter matches begins with the filter's literal head (`v2x.net.shared._literal_head`)."""
    rng = random.Random(1)
    levels = ["a", "b", "c", "$SYS", "v2x"]

    def topic() -> str:
        return "/".join(rng.choice(levels) for _ in range(rng.randint(1, 4)))

    def topic_filter() -> str:
        parts = [rng.choice([*levels, "+", "+"]) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            parts.append("#")
        elif rng.random() < 0.2:
            parts[-1] = "#"
        return "/".join(parts)

    for _ in range(300):
        filters = sorted({topic_filter() for _ in range(30)})
        tree: FilterTree[str] = FilterTree()
        for f in filters:
            tree.add(f, f)
        tree.add(filters[0], "gone")
        tree.discard(filters[0], "gone")
        for _ in range(50):
            t = topic()
            assert sorted(x for subs in tree.match(t) for x in subs) == [f for f in filters if topic_matches(f, t)], t
            for f in filters:  # and a shared connection's quick test before the matcher lets through all it matches
                assert not topic_matches(f, t) or t.startswith(_literal_head(f)), (f, t)


@pytest.mark.parametrize("v5", [True, False])
def test_a_qos0_publish_is_built_byte_for_byte_as_gmqtt_builds_it(v5: bool) -> None:
    """`qos0_publish` against gmqtt's own PublishPacket, over topics (empty, non-ASCII, a lone surrogate gmqtt
    replaces), payloads on each side of every length where the remaining length grows a byte (128, 16,384,
    2,097,152), retain, and expiry on MQTT 5."""
    from gmqtt import Message as GmqttMessage
    from gmqtt.mqtt.constants import MQTTv50, MQTTv311
    from gmqtt.mqtt.package import PublishPacket

    class Protocol:
        proto_ver = MQTTv50 if v5 else MQTTv311

    checked = 0
    for topic in ["", "v2x/v1/bsm/1/3/2/1/2/1/0/1/1/2/3/veh-123", "ü/ß/路", "bad\udcff"]:
        t = len(topic.encode("utf-8", errors="replace"))
        for expiry in ((None, 0, 1, 2**32 - 1) if v5 else (None,)):
            props = (0 if expiry is None else 5) + 1 if v5 else 0
            # the remaining length is 2 + t + props + the payload's: 127 / 128 and so on exactly
            for n in (0, 1, 58, *(edge - 2 - t - props + d for edge in (128, 16_384, 2_097_152) for d in (-1, 0))):
                payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
                for retain in (False, True):
                    kwargs = {} if expiry is None else {"message_expiry_interval": expiry}
                    _, want = PublishPacket.build_package(GmqttMessage(topic, payload, qos=0, retain=retain, **kwargs), Protocol())
                    got = transport_module.qos0_publish(topic, payload, retain, v5, expiry)
                    assert got == bytes(want), (topic, n, retain, expiry)
                    checked += 1
    assert checked == 4 * (4 if v5 else 1) * 9 * 2  # every case ran
    with pytest.raises(ValueError, match="more than an MQTT packet holds"):
        transport_module.qos0_publish("t", bytes(transport_module.MAX_REMAINING_LENGTH), False, v5)


class _Written:
    """A stand-in for gmqtt's client as far as `_send_qos0` reaches: its protocol level, and what it writes."""

    def __init__(self, level: int) -> None:
        self.data: list[bytes] = []
        self._connection_state = type("State", (), {"protocol_version": level})()
        self._connection = type("Connection", (), {"_protocol": type("Protocol", (), {"write_data": self.data.append})()})()


@pytest.mark.parametrize("level", [transport_module.MQTT5, transport_module.MQTT311])
def test_a_queued_qos0_message_keeps_its_retain_flag_and_expiry_and_no_properties_reach_mqtt_311(level: int) -> None:
    """A QoS 0 message that waited in the outbox (behind QoS 1 ones) is written with its retain flag and expiry; on
    a connection that fell back to MQTT 3.1.1 ("auto" against a 3.1.1 broker) no expiry property is written, which
    would make the packet malformed there."""
    t = MqttTransport("mqtt://127.0.0.1:1", "c", version="auto")
    t._client = _Written(level)
    t._v5 = t.protocol_version == transport_module.MQTT5  # as the connection's CONNACK sets it (`_on_connect`)
    t._send(transport_module._Outgoing("a/b", b"xyz", 0, True, {"message_expiry_interval": 5}))
    t._send_qos0("a/c", b"", False, 7)
    v5 = level == transport_module.MQTT5
    assert t._client.data == [
        transport_module.qos0_publish("a/b", b"xyz", True, v5, 5 if v5 else None),
        transport_module.qos0_publish("a/c", b"", False, v5, 7 if v5 else None),
    ]
    assert t.stats.sent == 2
    t._client = None  # the connection gone between the checks and the write: counted, not raised
    t._send_qos0("a/d", b"", False, None)
    assert (t.stats.sent, t.stats.dropped_out) == (2, 1)


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_qos0_messages_built_here_reach_the_c_client_as_sent(mosquitto: MosquittoBroker, topic_prefix: str, version: str) -> None:
    """What `publish` writes at QoS 0 (built by `qos0_publish`) is read by mosquitto_sub as sent: topic, payload, and
    on MQTT 5 the expiry it carries (the broker passes on what is left of it)."""
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-V", "5" if version == "5" else "311",
        "-t", f"{topic_prefix}/#", "-F", "%t|%x|%E", stdout=asyncio.subprocess.PIPE,
    )
    assert sub.stdout is not None
    sent = [(f"{topic_prefix}/a", _frame(1), 30), (f"{topic_prefix}/ü", b"", None), (f"{topic_prefix}/b", bytes(200), 7)]
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-pub", version=version) as pub:  # type: ignore[arg-type]
        probes = 0
        while True:  # until mosquitto_sub has subscribed: it prints a probe
            assert pub.publish(f"{topic_prefix}/probe", b"")
            probes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.stdout.readline(), timeout=0.3)
                break
            assert probes < 100, "mosquitto_sub never subscribed"
        for topic, payload, expiry in sent:
            assert pub.publish(topic, payload, expiry_s=expiry)
        lines: list[str] = []
        while len(lines) < 3:  # (probes still on their way are skipped)
            line = (await asyncio.wait_for(sub.stdout.readline(), timeout=10)).decode().rstrip("\n")
            if not line.startswith(f"{topic_prefix}/probe|"):
                lines.append(line)
        assert pub.stats.sent == 3 + probes
        assert pub.stats.dropped_out == 0
    sub.kill()
    await sub.wait()
    assert [ln.split("|")[:2] for ln in lines] == [[t, p.hex()] for t, p, _ in sent]
    expiries = [ln.split("|")[2] for ln in lines]
    if version == "5":  # whole seconds left: at most what was sent, and none on the message sent without one
        assert 0 < int(expiries[0]) <= 30, expiries
        assert 0 < int(expiries[2]) <= 7, expiries
        assert expiries[1] in ("", "-1"), expiries
    else:
        assert all(e in ("", "-1") for e in expiries), expiries


def test_a_filter_trees_kept_matches_follow_its_filters() -> None:
    """Matches kept for topics asked again stay right while filters are added and subscribers discarded (the kept
    sets are the tree's own; a filter that adds nodes drops the matches it may change): mixed adds, discards and
    repeated matches (the same few topics, as BSMs come) agree with matching every filter each time. Filters come new
    all along, with and without wildcards, many of them a kept topic or one of its prefixes (as a vehicle's own
    filters are)."""
    for seed in range(4):
        rng = random.Random(seed)
        levels = ["a", "b", "c", "d"]
        topics = ["/".join(rng.choice(levels) for _ in range(rng.randint(1, 5))) for _ in range(16)]
        topics += [t.rsplit("/", 1)[0] for t in topics if "/" in t]  # and prefixes of them
        exact = sorted({"/".join(rng.choice(levels) for _ in range(rng.randint(1, 5))) for _ in range(60)} | set(topics))
        wild = sorted({"/".join(rng.choice([*levels, "+"]) for _ in range(rng.randint(1, 3))) + rng.choice(["", "/#"])
                       for _ in range(30)})
        tree: FilterTree[str] = FilterTree()
        held: set[tuple[str, str]] = set()
        for _ in range(6000):
            r = rng.random()
            if r < 0.12:
                f, who = rng.choice(exact if rng.random() < 0.8 else wild), rng.choice("xyz")
                tree.add(f, f + ":" + who)
                held.add((f, f + ":" + who))
            elif r < 0.22 and held:
                f, who = rng.choice(sorted(held))
                tree.discard(f, who)
                held.discard((f, who))
            else:
                t = rng.choice(topics)
                want = sorted(who for f, who in held if topic_matches(f, t))
                got = tree.match(t)
                assert sorted(x for subs in got for x in subs) == want, (seed, t)
                assert any(got) == bool(want), t  # whether anyone holds it (a shared connection asks this)


async def _mosquitto_pub(broker: MosquittoBroker, *args: str, payload: bytes) -> None:
    """One message by the C client: `payload` from stdin, or a null message."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", broker.host, "-p", str(broker.port), *args, "-s" if payload else "-n", stdin=asyncio.subprocess.PIPE,
    )
    await proc.communicate(payload)
    assert proc.returncode == 0


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_qos0_messages_read_past_gmqtt_are_what_was_sent(
    mosquitto: MosquittoBroker, topic_prefix: str, version: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain QoS 0 PUBLISH is read by the transport itself, anything else by gmqtt: either way the same topic, payload
    and retain flag arrive, in order (mosquitto_pub sends them: a frame, an empty payload, a non-ASCII topic, a
    message expiry, a user property, retained)."""
    read_here: list[str] = []
    plain = transport_module._plain_qos0

    def spy(data: bytes, v5: bool) -> tuple[str, bytes] | None:
        got = plain(data, v5)
        if got is not None:
            read_here.append(got[0])
        return got

    monkeypatch.setattr(transport_module, "_plain_qos0", spy)
    sent = [
        ("a", _frame(1), []), ("b", b"", []), ("ü/ß", b"\x00\xff", []), ("c", _frame(2), ["-D", "publish", "message-expiry-interval", "5"]),
        ("d", b"u", ["-D", "publish", "user-property", "k", "v"]), ("e", b"kept", ["-r"]),
    ]
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-sub", version=version) as sub:  # type: ignore[arg-type]
        await sub.subscribe(f"{topic_prefix}/#")
        await asyncio.sleep(0.2)
        for topic, payload, extra in sent:
            if version == "3.1.1" and "-D" in extra:
                continue  # properties are MQTT 5 only
            await _mosquitto_pub(mosquitto, "-V", "5" if version == "5" else "311", "-t", f"{topic_prefix}/{topic}", *extra, payload=payload)
        expected = [(f"{topic_prefix}/{t}", p, False) for t, p, x in sent if not (version == "3.1.1" and "-D" in x)]
        got = await _collect(sub, len(expected))
    await _mosquitto_pub(mosquitto, "-t", f"{topic_prefix}/e", "-r", payload=b"")
    # the retained one reached a live subscriber: MQTT says its retain flag is clear
    assert [(x.topic, x.payload, x.retain) for x in got] == expected
    assert sub.stats.received == len(expected)
    assert f"{topic_prefix}/a" in read_here
    assert f"{topic_prefix}/ü/ß" in read_here
    assert f"{topic_prefix}/d" not in read_here  # a user property: gmqtt's path


def test_packets_read_as_they_arrive_are_those_gmqtts_read_loop_hands_on_however_the_bytes_are_split() -> None:
    """`_read_directly`: gmqtt's protocol splits what arrives into packets in `data_received` (no read loop between):
    every split of the same bytes into reads hands on the same packets, in order: a QoS 0 PUBLISH to the transport's
    taker when there is one and it takes it, anything else (a refused one too) to gmqtt (`put_package`); a malformed
    length closes the connection, nothing after it handed on."""
    from gmqtt.mqtt.protocol import MQTTProtocol
    from gmqtt.mqtt.utils import ConnectionState, IdGenerator

    from v2x.net.transport import _read_directly, qos0_publish

    # remaining lengths of one, two and three bytes (127, 128, 16,383, 16,384 each side of a boundary)
    packets = [qos0_publish("a/b", bytes(range(256)) * (n // 256) + b"x" * (n % 256), False, True) for n in (0, 1, 121, 122, 300, 16_377, 16_378)]
    packets += [b"\x90\x03\x00\x01\x00", b"\xd0\x00", qos0_publish("t", b"", True, False)]  # a SUBACK, a PINGRESP
    packets += [b"\x32\x08\x00\x03a/b\x00\x07\x00", qos0_publish("a/b", b"z", True, True)]  # QoS 1; a retained QoS 0
    stream = b"".join(packets)

    def body(packet: bytes) -> bytes:  # what follows the fixed header (its remaining length: 7 bits a byte)
        i = 1
        while packet[i] & 0x80:
            i += 1
        return packet[i + 1:]

    assert [len(p) - len(body(p)) - 1 for p in packets[:7]] == [1, 1, 1, 2, 2, 2, 3]

    class Closing:
        closed = 0

        def close(self) -> None:
            self.closed += 1

        def is_closing(self) -> bool:
            return False

    async def read(chunks: list[bytes], taker: bool) -> tuple[list[tuple[str, int, bytes]], int]:
        got: list[tuple[str, int, bytes]] = []

        class Connection:
            def put_package(self, pkg: Any) -> None:
                got.append(("gmqtt", pkg.cmd, bytes(pkg.data)))

        class Taking(Connection):
            def _v2x_qos0(self, cmd: int, data: bytes) -> bool:  # takes all but topic "t"
                if data[:3] == b"\x00\x01t":
                    return False
                got.append(("taken", cmd, bytes(data)))
                return True

        protocol = MQTTProtocol(connection_state=ConnectionState(), id_generator=IdGenerator())
        protocol.set_connection(Taking() if taker else Connection())
        transport = protocol._transport = Closing()
        _read_directly(protocol, "test")
        for chunk in chunks:
            protocol.data_received(chunk)
        return got, transport.closed

    rng = random.Random(5)
    splits = [[stream], [bytes((b,)) for b in stream], [stream[i:i + 7] for i in range(0, len(stream), 7)]]
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        splits.append([stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)])
    for taker in (False, True):
        qos0 = [p[0] & 0xF6 == 0x30 for p in packets]
        expected = [("taken" if taker and q and body(p)[:3] != b"\x00\x01t" else "gmqtt", p[0], body(p))
                    for p, q in zip(packets, qos0, strict=True)]
        assert [w for w, _, _ in expected].count("taken") == (8 if taker else 0)
        for chunks in splits:
            assert asyncio.run(read(chunks, taker)) == (expected, 0)
    # the taker set on a CONNACK takes what follows it in the same read
    connack, publish = b"\x20\x03\x00\x00\x00", packets[1]

    class Connecting:
        def put_package(self, pkg: Any) -> None:
            if pkg.cmd == 0x20:
                self._v2x_qos0 = self.take

        def take(self, cmd: int, data: bytes) -> bool:
            taken.append(bytes(data))
            return True

    taken: list[bytes] = []

    async def connect() -> None:
        protocol = MQTTProtocol(connection_state=ConnectionState(), id_generator=IdGenerator())
        protocol.set_connection(Connecting())
        _read_directly(protocol, "test")
        protocol.data_received(connack + publish)

    asyncio.run(connect())
    assert taken == [body(publish)]
    # a remaining length of five bytes: the connection is closed; what came before it was handed on, nothing after
    got, closed = asyncio.run(read([packets[1], b"\x30\xff\xff\xff\xff\x7f", packets[2]], True))
    assert got == [("taken", packets[1][0], body(packets[1]))]
    assert closed == 1


async def test_a_connection_whose_client_id_is_taken_over_tells_whoever_reads_on_arrival(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    """A fleet with one connection per OBU reads an OBU's inbox only when told something arrived (`on_arrival`); a
    client id taken over is told too, so that `receive()` raises it (the run stops saying why) with nothing arrived."""
    told: list[int] = []
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-obu", seed=1) as t:
        t.on_arrival(lambda: told.append(len(t._inbox)))
        await t.subscribe(f"{topic_prefix}/nothing")
        intruder = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-p", str(mosquitto.port), "-i", f"{topic_prefix}-obu", "-t", f"{topic_prefix}/x", "-V", "mqttv5",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if told:
                    break
                await asyncio.sleep(0.1)
        finally:
            # SIGKILL: a mosquitto_sub thrown out of its client id may hold SIGTERM blocked while it waits to reconnect
            # (seen in CI: blocked for ten minutes, this test waiting on it)
            intruder.kill()
            await asyncio.wait_for(intruder.wait(), 10)
        assert told == [0]  # once, with nothing in the inbox
        with pytest.raises(BrokerError, match="was taken over by another client"):
            t.receive()


def test_a_qos0_publish_the_transport_does_not_read_itself_is_looked_at_once() -> None:
    """A QoS 0 PUBLISH with properties of its own (not plain) goes on to gmqtt's handling after the transport looked
    at it: it takes one place of the receiver's rate, not two (`_read_directly` with `MqttTransport._shed_early`)."""
    from gmqtt.mqtt.protocol import MQTTProtocol
    from gmqtt.mqtt.utils import ConnectionState, IdGenerator

    from v2x.net.transport import _read_directly, qos0_publish

    handed: list[bytes] = []

    class Handler:
        current_connection: Any = None

    class Connection:
        _handler = Handler()
        _last_data_in = 0.0

        def put_package(self, pkg: Any) -> None:  # gmqtt's own
            handed.append(bytes(pkg.data))

    class Client:
        _connection = Connection()
        _connection_state = ConnectionState()

    Client._connection._handler.current_connection = Client._connection
    t = MqttTransport("mqtt://127.0.0.1:1", "rate", qos0_per_s=1000)
    t._client = Client()
    t._shed_early(t._client)

    async def read(data: bytes) -> None:
        protocol = MQTTProtocol(connection_state=ConnectionState(), id_generator=IdGenerator())
        protocol.set_connection(Client._connection)
        _read_directly(protocol, "test")
        protocol.data_received(data)

    user_property = b"\x00\x03a/b" + b"\x07\x26\x00\x01k\x00\x01v" + b"payload"  # topic, properties, payload
    asyncio.run(read(qos0_publish("a/b", b"plain", False, True) + bytes((0x30, len(user_property))) + user_property))
    assert [m.payload for m in t.receive()] == [b"plain"]
    assert handed == [user_property]  # gmqtt's to read
    assert t._qos0_in_window == 2  # one place each
    asyncio.run(read(bytearray(qos0_publish("a/c", b"kept", False, True))))  # what a transport may hand on, other than bytes
    got = t.receive()
    assert [(m.topic, m.payload, m.retain) for m in got] == [("a/c", b"kept", False)]
    assert type(got[0].payload) is bytes  # as the inbox's every payload (hashed, kept by its bytes downstream)


async def test_an_arrival_wakes_every_wait_and_a_wait_says_whether_one_woke_it() -> None:
    """Two tasks waiting on one transport are both woken by one arrival (each `wait()` True); a wait that runs out
    says False; an arrival already waiting is True at once."""
    broker = MemoryBroker()
    t = MemoryTransport(broker, "rx")
    await t.start()
    assert await t.wait(0.01) is False
    first, second = asyncio.ensure_future(t.wait(5.0)), asyncio.ensure_future(t.wait(5.0))
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_soon(t._put, Message("a/b", b"x", 0, False, 0))
    assert await asyncio.wait_for(asyncio.gather(first, second), 1.0) == [True, True]
    assert await t.wait(5.0) is True
    assert len(t.receive()) == 1
    assert await t.wait(0.01) is False


def test_a_memory_transport_delivers_what_its_filters_match_as_they_change() -> None:
    """The in-process transport keeps each topic's match until its filters change: a topic it did not match comes
    once it is subscribed to, and stops coming once it is unsubscribed from."""
    broker = MemoryBroker()
    sub = MemoryTransport(broker, "sub")
    asyncio.run(sub.start())

    def sent(topic: str) -> int:
        broker.route(topic, b"x", 0, False)
        return len(sub.receive())

    assert [sent("a/b"), sent("a/c")] == [0, 0]
    asyncio.run(sub.subscribe("a/+"))
    assert [sent("a/b"), sent("a/c"), sent("b/c")] == [1, 1, 0]
    asyncio.run(sub.unsubscribe("a/+"))
    asyncio.run(sub.subscribe("a/c"))
    assert [sent("a/b"), sent("a/c")] == [0, 1]
