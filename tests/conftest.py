"""Shared by every test module.

Unit tests and integration tests: a test that talks to a broker or starts a process is an integration test,
marked `integration` (a test that uses the `mosquitto`, `broker_factory`, `v2x_run` or `v2x_report` fixture is
marked so here). The rest are unit tests (`pytest -m "not integration"`), and they are held to it: a unit test
that opens a network connection or starts a process fails, saying to mark it.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from v2x.core.traffic import load_kernels

BROKER_FIXTURES = frozenset({"mosquitto", "broker_factory", "v2x_run", "v2x_report"})


@pytest.fixture(scope="session", autouse=True)
def compiled_core() -> None:
    """numba's loops compiled before any test starts processes on the clock: in a clean clone the cache is
    empty, and tiers that each compiled (several seconds) would start late. Every file with kernels is imported
    first, so that all of them are compiled (the codec's readers, the batch writers, the cloud's checks)."""
    for name in ("v2x.core.codec", "v2x.core.bsm_wire", "v2x.core.rsu_wire", "cloud.misbehaviour", "roadside.service"):
        importlib.import_module(name)
    load_kernels()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In a unit test, connecting a socket or starting a process is an error that says to mark the test."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            # pytest.fail raises a BaseException: no `except Exception` in the code under test can swallow it
            pytest.fail(f"{request.node.nodeid} {what}: mark it @pytest.mark.integration (unit tests stay in process)", pytrace=False)
        return call

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))
    monkeypatch.setattr(socket.socket, "connect", refuse("opens a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("opens a network connection"))
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refuse("opens a network connection"))
    yield
