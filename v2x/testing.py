"""pytest plugin (entry point `pytest11: v2x`): fixtures for testing V2X message flows.

Installed with the package, so a user's own suite gets them with no conftest:

    def test_broker_up(mosquitto):
        assert mosquitto.url.startswith("mqtt://127.0.0.1:")

Fixtures:
    mosquitto       a private Mosquitto on a free loopback port, one per test session
    topic_prefix    a topic prefix unique to the test, so tests never see each other's messages
    broker_factory  starts further brokers (persistence, custom config); all stopped after the test
    v2x_run         runs a scenario (`v2x run`) on that Mosquitto and returns its `Report`
    v2x_report      the `Report` of the run a test names with
                    `@pytest.mark.v2x_scenario("four_way", "--set", "...", duration=60, fast=True)`
                    (default: four_way, 60 s, fast mode)

    @pytest.mark.v2x_scenario("four_way", "--set", "links.cellular.latency_ms=50")
    def test_spat_by_cellular_is_quick_enough(v2x_report):
        assert v2x_report.latency("cloud->vehicle").p99 < 200

Latencies in fast mode (the default here) are modelled: the scenario's link delays in sim time, not the
broker's (four_way's cellular link alone gives about 80 ms p99). With `fast=False` they are measured on the
wall clock through the broker, link delays included. `report["latency_basis"]["kind"]` says which.

Helpers: `await until(lambda: transport.connected)` waits for a condition (fails the test after 30 s);
`async for msg in messages(transport):` takes each message as it arrives; `at_once(lambda: v2x_run(...), ...)` runs
several runs at the same time.

Broker tests do not skip when `mosquitto` is missing: they fail, saying how to install it.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from v2x.net.broker import INSTALL_HINT, MosquittoBroker, find_mosquitto
from v2x.run.report import Report

if TYPE_CHECKING:
    from v2x.net.connection import Connection
    from v2x.net.transport import Message, Transport
    from v2x.run.fast import FastRun


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "v2x_scenario(name, *args, duration=60, fast=True): the run behind the v2x_report fixture"
    )


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


RunScenario = Callable[..., Report]


@pytest.fixture
def v2x_run(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> RunScenario:
    """`v2x_run("four_way", "--set", "links.cellular.loss=0.1", duration=60, fast=True)` -> Report.

    The run uses the session's Mosquitto under the test's own topic prefix; extra arguments
    go to `v2x run` as they are. A run that fails fails the test with its error output. Several runs can go at
    once, from threads (`at_once`): each has its own topic root and report.
    """
    counter = itertools.count(1)  # next() on it is atomic: runs started from threads never share a number

    def run(scenario: str, *args: str, duration: float = 60.0, fast: bool = True, timeout_s: float = 600.0) -> Report:
        n = next(counter)
        path = tmp_path / f"report-{n}.json"
        cmd = [
            sys.executable, "-m", "v2x", "run", scenario, "--headless", "--duration", f"{duration:g}", "--report", str(path),
            "--broker", mosquitto.url, "--root", f"{topic_prefix}/{n}/v2x/v1", *(["--fast"] if fast else []), *args,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if res.returncode != 0:
            pytest.fail(f"v2x run {scenario} {' '.join(args)} exited with {res.returncode}:\n{res.stderr[-3000:]}")
        return Report.load(path)

    return run


@pytest.fixture
def v2x_report(request: pytest.FixtureRequest, v2x_run: RunScenario) -> Report:
    """The report of the test's `@pytest.mark.v2x_scenario(...)` run (default: four_way, 60 s, fast)."""
    marker = request.node.get_closest_marker("v2x_scenario")
    if marker is None:
        return v2x_run("four_way")
    return v2x_run(*marker.args, **marker.kwargs)


T = TypeVar("T")


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Each call in a thread of its own, all at the same time; their results, in order (a call's failure is raised).
    For runs that mostly wait: a fast run waits on the broker at every lockstep round, a real-time one on the clock,
    so two at once take about the wall time of one: `on, off = at_once(lambda: v2x_run(...), lambda: v2x_run(...))`."""
    with ThreadPoolExecutor(len(calls), thread_name_prefix="at_once") as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


async def messages(transport: Transport) -> AsyncIterator[Message]:
    """Each message `transport` receives, as it arrives (built on its `wait()` and `receive()`)."""
    while True:
        await transport.wait(1.0)
        for msg in transport.receive():
            yield msg


async def until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait until `cond()` holds, looking every 50 ms (for states no event signals, such as a connection's);
    fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s"
        await asyncio.sleep(0.05)


def run_watching(run: FastRun, conn: Connection, duration_s: float, filters: list[tuple[str, int]]) -> list[tuple[str, bytes]]:
    """Run a fast run (`v2x.run.fast.FastRun`) for `duration_s` while a subscriber of its own hears `filters` (under
    the run's root, with their QoS); what it heard, (topic, payload), in order."""
    watcher = conn.transport(f"watch-{uuid.uuid4().hex[:6]}", inbox=100_000)
    heard: list[tuple[str, bytes]] = []

    async def main() -> None:
        await watcher.start()
        for f, qos in filters:
            await watcher.subscribe(f"{conn.root}/{f}", qos=qos)

        async def drain() -> None:
            async for msg in messages(watcher):
                heard.append((msg.topic, msg.payload))

        task = asyncio.create_task(drain(), name="watch")
        try:
            await run.run(duration_s)
            await asyncio.sleep(1.0)
        finally:
            task.cancel()
            heard.extend((msg.topic, msg.payload) for msg in watcher.receive())
            await watcher.close()

    asyncio.run(main())
    return heard
