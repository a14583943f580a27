"""Runs sharing a broker (issue: hardening, item 4): on a real Mosquitto, with real runs and tier processes.

- Every client id of a run carries the run's id: two runs at once on one broker, under different roots, never take
  over each other's connections, and each cloud counts only its own run's BSMs.
- A tier whose client id is taken over by another client stops with a clear error instead of a reconnect fight.
- On a secured broker a client id is its login: a vehicle's login cannot take an RSU's session and its queued plans.
- `v2x broker-config`'s files start Mosquitto as root; the broker carries no 20 MiB message; the fleet's secret
  gives no other role's login; a vehicle reads no other vehicle's advisories.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from v2x.core.errors import BrokerError
from v2x.core.network import Network
from v2x.core.scenario import load, resolve
from v2x.core.topics import Topics
from v2x.net.broker import MosquittoBroker, find_mosquitto, free_port, mqtt_ping
from v2x.net.security import Credentials, write_config
from v2x.net.transport import Message, MqttTransport

pytestmark = pytest.mark.integration

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")


def _run_cmd(url: str, root: str, report: Path, *extra: str, scenario: str = "four_way", duration: float = 30.0) -> list[str]:
    return [sys.executable, "-m", "v2x", "run", scenario, "--headless", "--duration", f"{duration:g}", "--broker", url,
            "--root", root, "--report", str(report), *extra]


def test_two_runs_at_once_on_one_broker_under_different_roots_do_not_touch(
    mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    reports = [tmp_path / "a.json", tmp_path / "b.json"]
    runs = [
        subprocess.Popen(_run_cmd(mosquitto.url, f"{topic_prefix}/{name}/v2x/v1", report, "--fast"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, report in zip("ab", reports, strict=True)
    ]
    errs = [run.communicate(timeout=300)[1] for run in runs]
    for run, err in zip(runs, errs, strict=True):
        assert run.returncode == 0, err[-3000:]
    a, b = (json.loads(p.read_text()) for p in reports)
    assert a["run_id"] != b["run_id"]
    print("run ids", a["run_id"], b["run_id"])
    for r in (a, b):
        tiers = r["connection"]["tiers"]
        print("connections", {k: (v.get("disconnects"), v.get("reconnects")) for k, v in tiers.items()})
        assert all(t.get("disconnects", 0) == 0 and t.get("reconnects", 0) == 0 for t in tiers.values()), tiers
        bsm = r["messages"]["bsm"]
        print("bsm sent / received by the cloud", bsm["sent"], bsm["received_by"].get("cloud"))
        assert bsm["received_by"]["cloud"] == bsm["sent"] > 1000  # its own run's BSMs, all of them, and no other's
        assert r["lockstep"]["lost"] == r["lockstep"]["unexpected"] == 0


def test_a_tier_whose_client_id_is_taken_over_stops_saying_so(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    root = f"{topic_prefix}/v2x/v1"
    rsu = subprocess.Popen(
        [sys.executable, "-m", "roadside", "four_way", "--broker", mosquitto.url, "--root", root, "--run-id", "isolation1",
         "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watch = subprocess.Popen(["mosquitto_sub", "-p", str(mosquitto.port), "-t", f"{root}/status/#", "-C", "1"],
                             stdout=subprocess.PIPE)
    watch.communicate(timeout=30)  # the RSU is up: its status is out
    # another client connects with the RSU's client id (a persistent session, as the RSU's own), and stays
    intruder = subprocess.Popen(["mosquitto_sub", "-p", str(mosquitto.port), "-i", "isolation1-RSU-J1", "-c", "-q", "1",
                                 "-t", f"{root}/plan/J1", "-V", "mqttv5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        out, err = rsu.communicate(timeout=30)
    finally:
        intruder.kill()  # (not SIGTERM: a mosquitto_sub thrown out of its client id may hold it blocked: test_transport)
        intruder.wait(10)
    print(f"the RSU ended after {time.monotonic() - t0:.1f} s with {rsu.returncode}: {err.strip().splitlines()[-1:]}")
    assert rsu.returncode == 1, err[-2000:]
    assert time.monotonic() - t0 < 15  # not a reconnect fight until its duration ends
    last = err.strip().splitlines()[-1]
    assert last.startswith("v2x roadside: client id 'isolation1-RSU-J1' was taken over by another client"), last
    summaries: list[dict[str, Any]] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert not [s for s in summaries if s.get("event") == "summary"]  # it stopped, and said why instead


async def _received(t: MqttTransport, wait_s: float = 1.5) -> list[Message]:
    """What `t` receives within `wait_s` [s]."""
    got: list[Message] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        await t.wait(0.1)
        got += t.receive()
    return got


async def test_on_a_secured_broker_a_vehicle_login_cannot_take_over_an_rsu_s_session(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path,
) -> None:
    """`v2x run --secure`'s broker: a vehicle's login connecting with the RSU's client id gets neither its session nor
    the plan queued in it; the RSU, back, still gets the plan."""
    sc = load(resolve("four_way"))
    creds = Credentials.new()
    paths = write_config(sc, tmp_path / "sec", "v2x/v1", 0, creds, 60.0)
    broker = broker_factory(secure=(paths["passwd"], paths["acl"]))
    t = Topics("v2x/v1")
    rsu_id = "run1-RSU-J1"  # the RSU's client id

    def rsu() -> MqttTransport:
        return MqttTransport(creds.url(broker.url, "RSU-J1"), rsu_id, clean_start=False, session_expiry_s=3600)

    async with rsu() as r:  # the RSU's persistent session, subscribed to its plans; then it is away
        await r.subscribe(t.plan("J1"), qos=1)
    async with MqttTransport(creds.url(broker.url, "cloud"), "run1-cloud") as cloud:
        cloud.publish(t.plan("J1"), b"plan-for-J1", qos=1)
        assert await cloud.drain(5.0)
    async with MqttTransport(creds.url(broker.url, "veh-3"), rsu_id, clean_start=False, session_expiry_s=3600) as thief:
        stolen = await _received(thief)
    async with rsu() as r:
        kept = await _received(r)
    print("the vehicle login got", [m.payload for m in stolen], "; the RSU got", [m.payload for m in kept])
    assert stolen == []
    assert [m.payload for m in kept] == [b"plan-for-J1"]


def test_the_broker_config_starts_as_root_refuses_oversize_messages_other_roles_logins_and_others_advisories(
    tmp_path: Path,
) -> None:
    """`v2x broker-config`'s files, as they are, started with `mosquitto -c`: it starts as root; a 20 MiB BSM is
    carried to nobody; the fleet's secret gives no cloud login; a vehicle reads its own advisories only."""
    out, port = tmp_path / "sec", free_port()
    res = subprocess.run([sys.executable, "-m", "v2x", "broker-config", "four_way", str(out), "--port", str(port)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    broker = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(out / "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not mqtt_ping("127.0.0.1", port, 0.5, refused_ok=True) and broker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"as uid {os.geteuid()}, mosquitto -c mosquitto.conf:", "running" if broker.poll() is None else broker.communicate()[1])
        assert broker.poll() is None, "the broker did not start"
        asyncio.run(_hostile_client_checks(out, f"mqtt://127.0.0.1:{port}"))
    finally:
        broker.terminate()
        broker.wait(10)


async def _hostile_client_checks(out: Path, url: str) -> None:
    t = Topics("v2x/v1")
    tile = Network(load(resolve("four_way"))).tiles[0]
    everything = Credentials.load(out / "credentials.json")
    # what a fleet is given: its own secret (before: the one secret of every login)
    given = json.loads((out / "credentials-fleet.json").read_text())["secrets"]["fleet"]
    forged = hmac.new(given.encode(), b"cloud", hashlib.sha256).hexdigest()[:32]
    with contextlib.suppress(BrokerError):
        async with MqttTransport(f"mqtt://cloud:{forged}@127.0.0.1:{url.rsplit(':', 1)[1]}", "x-cloud", connect_timeout_s=2.0):
            raise AssertionError("the fleet's secret logged in as the cloud")

    async with (
        MqttTransport(everything.url(url, "observer"), "x-watch") as watch,
        MqttTransport(everything.url(url, "veh-1"), "x-veh-1") as veh1,
        MqttTransport(everything.url(url, "cloud"), "x-cloud") as cloud,
    ):
        await watch.subscribe(t.area("bsm", ""), qos=1)
        await veh1.subscribe(t.area("advisory", ""), qos=1)  # every advisory it may read
        await veh1.subscribe(t.advisory(tile, "veh-2"), qos=1)  # and another vehicle's, by name
        veh1.publish(t.bsm(tile, "veh-1"), b"x" * (20 * 1024 * 1024), qos=1)  # 20 MiB on its own BSM topic
        veh1.publish(t.bsm(tile, "veh-1"), b"a-small-bsm", qos=1)
        for who in ("veh-1", "veh-2", "all"):
            cloud.publish(t.advisory(tile, who), f"advice-for-{who}".encode(), qos=1)
        assert await cloud.drain(5.0)
        seen = [(m.topic.rsplit("/", 1)[-1], len(m.payload)) for m in await _received(watch, 3.0)]
        advised = sorted(m.payload.decode() for m in await _received(veh1))
    print("BSMs delivered (sender, bytes):", seen, "; veh-1 read the advisories", advised)
    assert seen == [("veh-1", len(b"a-small-bsm"))]  # the 20 MiB one went to nobody
    assert advised == ["advice-for-all", "advice-for-veh-1"]


def test_a_second_run_under_the_same_root_refuses_to_start(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> None:
    root = f"{topic_prefix}/v2x/v1"
    # the first run holds the root from its marker, put up before its tiers start, to its end 15 s of sim time after
    # v2x.run.realtime's START_DELAY_S: the second looks while the first's tiers start (it is refused within a few
    # seconds of the marker: 2 s on an idle machine, up to 7 s with other runs on it)
    first = subprocess.Popen(_run_cmd(mosquitto.url, root, tmp_path / "a.json", scenario=SHORT, duration=15),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        marker = subprocess.run(["mosquitto_sub", "-p", str(mosquitto.port), "-t", f"{root}/run", "-C", "1", "-W", "30"],
                                capture_output=True, timeout=60)
        assert marker.returncode == 0, "the first run holds no marker"
        t0 = time.monotonic()
        second = subprocess.run(_run_cmd(mosquitto.url, root, tmp_path / "b.json", "--fast", scenario=SHORT, duration=40),
                                capture_output=True, text=True, timeout=120)
        print(f"the second run exited with {second.returncode} after {time.monotonic() - t0:.1f} s:",
              [x for x in second.stderr.splitlines() if "v2x run" in x])
        assert second.returncode == 1, second.stderr[-2000:]
        (line,) = [x for x in second.stderr.splitlines() if x.startswith("v2x run:")]  # one line says it all
        assert f"topic root {root!r} is held by run " in line, line
        assert "give this run another --root" in line, line
        assert not (tmp_path / "b.json").exists()
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]  # the first run was not disturbed
    a = json.loads((tmp_path / "a.json").read_text())
    assert all(t.get("disconnects", 0) == 0 for t in a["connection"]["tiers"].values()), a["connection"]
    print("the first run's BSMs sent / received by the cloud", a["messages"]["bsm"]["sent"], a["messages"]["bsm"]["received_by"]["cloud"])
    assert a["messages"]["bsm"]["received_by"]["cloud"] == a["messages"]["bsm"]["sent"]
    # it cleared its marker at the end: the root is free again
    left = subprocess.run(["mosquitto_sub", "-p", str(mosquitto.port), "-t", f"{root}/#", "-W", "1", "-v"],
                          capture_output=True, timeout=30)
    assert left.stdout == b"", left.stdout[:300]  # and nothing else of it stays retained (MAP, statuses)
