"""RSU and cloud as separate OS processes on one broker: the SPaT relay and a lost RSU."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from v2x import codec
from v2x import messages as m
from v2x.broker import MosquittoBroker
from v2x.scenario import bundled_dir
from v2x.transport import MqttTransport

FOUR_WAY = str(bundled_dir() / "four_way.toml")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "v2x", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_event(proc: subprocess.Popen[str], name: str, timeout_s: float) -> tuple[dict[str, object], float]:
    """The next JSON event line called `name` on the process's stdout, and when it arrived."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event.get("event") == name:
            return event, time.monotonic()
    raise AssertionError(f"no {name!r} event within {timeout_s} s")


async def test_cloud_relays_spat_and_reports_a_killed_rsu_lost(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    root = f"{topic_prefix}/v2x/v1"
    keepalive = 1
    cloud = _spawn("cloud", FOUR_WAY, "--broker", mosquitto.url, "--root", root, "--duration", "20", "--keepalive", "5")
    rsu = _spawn("roadside", FOUR_WAY, "--broker", mosquitto.url, "--root", root, "--keepalive", str(keepalive))
    try:
        async with MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
            await watch.subscribe(f"{root}/spat/cloud/#")
            relayed: list[m.Frame] = []

            async def collect() -> None:
                async for msg in watch.messages():
                    relayed.append(codec.decode(msg.payload))
                    if len(relayed) >= 10:
                        return

            await asyncio.wait_for(collect(), 15)
        online, _ = await asyncio.to_thread(_read_event, cloud, "rsu-online", 10)
        assert online["rsu"] == "RSU-J1"
        killed = time.monotonic()
        os.kill(rsu.pid, signal.SIGKILL)
        lost, seen = await asyncio.to_thread(_read_event, cloud, "rsu-lost", 10)
        assert lost["rsu"] == "RSU-J1"
        # the broker publishes the Will once 1.5 keepalives pass without a packet
        assert seen - killed < 1.5 * keepalive + 2.0
        cloud.send_signal(signal.SIGINT)
        cloud.wait(10)
    finally:
        for p in (rsu, cloud):
            p.kill()
            p.wait()
    assert all(f.header.sender_kind is m.SenderKind.CLOUD for f in relayed)
    assert all(isinstance(f.body, m.Spat) and f.body.intersections[0].name == "J1" for f in relayed)
