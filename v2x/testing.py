"""pytest plugin (entry point `pytest11: v2x`): fixtures for testing V2X message flows.

Installed with the package, so a user's own suite gets them with no conftest:

    def test_broker_up(mosquitto):
        assert mosquitto.url.startswith("mqtt://127.0.0.1:")

Fixtures:
    mosquitto       a private Mosquitto on a free loopback port, one per test session
    topic_prefix    a topic prefix unique to the test, so tests never see each other's messages
    broker_factory  starts further brokers (persistence, custom config); all stopped after the test

Broker tests do not skip when `mosquitto` is missing: they fail, saying how to install it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from v2x.broker import INSTALL_HINT, MosquittoBroker, find_mosquitto


def _require_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.fail(f"this test needs a real Mosquitto broker, and `mosquitto` is not installed: {INSTALL_HINT}")


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoBroker]:
    """A Mosquitto broker shared by the session (MQTT 5, set_tcp_nodelay, loopback, free port)."""
    _require_mosquitto()
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., MosquittoBroker]]:
    """Start extra brokers: `broker_factory(persistence=True)`; each is stopped after the test."""
    _require_mosquitto()
    started: list[MosquittoBroker] = []

    def make(**kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(**kwargs).start()
        started.append(broker)
        return broker

    yield make
    for b in started:
        b.close()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test uses, e.g. `t/test_name-1a2b3c4d`."""
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in request.node.name)[:40]
    return f"t/{name}-{uuid.uuid4().hex[:8]}"
