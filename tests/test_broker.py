"""The Mosquitto launcher behind the fixtures and `v2x run`."""

from __future__ import annotations

import os

import pytest

from v2x.core.errors import BrokerError
from v2x.net.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto, mqtt_ping
from v2x.net.transport import MqttTransport


def test_fixture_broker_speaks_mqtt5(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mqtt_ping(mosquitto.host, mosquitto.port or 0)


def test_config_sets_tcp_nodelay_and_loopback() -> None:
    text = MosquittoBroker().config_text(1883)
    assert "set_tcp_nodelay true" in text
    assert "listener 1883 127.0.0.1" in text


def test_start_stop_by_pid_and_restart_on_same_port(broker_factory) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory()
    pid, port = broker.pid, broker.port
    assert pid is not None
    os.kill(pid, 0)  # running
    broker.stop()
    assert not mqtt_ping("127.0.0.1", port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    broker.start()
    assert broker.port == port
    assert mqtt_ping("127.0.0.1", port)


def test_missing_binary_says_how_to_install() -> None:
    broker = MosquittoBroker(binary=None)
    broker.binary = None
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        broker.start()


@pytest.mark.integration
def test_bad_config_reports_the_broker_error() -> None:
    with pytest.raises(BrokerError, match="did not start"), MosquittoBroker(extra_config="no_such_option 1") as _:
        pass


def test_find_mosquitto() -> None:
    assert find_mosquitto() is not None, "install mosquitto: apt-get install mosquitto"


@pytest.mark.integration
def test_embedded_broker_keeps_answering_after_many_connections() -> None:
    """amqtt logs each connection (about 260 bytes); its output once went to a pipe nobody read during the run,
    and after about 250 connections (64 KiB) the broker blocked in write() for good: the hang of issue #28."""
    with EmbeddedBroker() as broker:
        assert broker.port is not None
        for i in range(400):
            assert mqtt_ping(broker.host, broker.port, 2.0, version=4), f"no CONNACK after {i} connections"


@pytest.mark.integration
async def test_embedded_broker_sends_a_new_client_no_retained_message_it_did_not_subscribe_to() -> None:
    """amqtt sends each new client the retained messages of every filter any client holds (a fleet's vehicles got the
    RSUs' statuses); the embedded broker sends them only to whoever holds the filter."""
    with EmbeddedBroker() as broker:
        async with MqttTransport(broker.url, "holder") as holder, MqttTransport(broker.url, "publisher") as publisher:
            await holder.subscribe("status/#", qos=1)
            publisher.publish("status/rsu", b"online", qos=1, retain=True)
            assert await publisher.drain(5.0)
            assert await holder.wait(5.0)
            async with MqttTransport(broker.url, "newcomer") as newcomer:
                await newcomer.subscribe("bsm/#")
                assert not await newcomer.wait(1.0), newcomer.receive()
                await newcomer.subscribe("status/+")  # a filter of its own: the retained message comes
                assert await newcomer.wait(5.0)
                assert [(m.topic, m.payload) for m in newcomer.receive()] == [("status/rsu", b"online")]
