"""Broker faults: the broker is killed mid-run and restarted with persistence; the run carries on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from v2x.net.broker import MosquittoBroker
from v2x.net.transport import MqttTransport
from v2x.run.realtime import START_DELAY_S
from v2x.testing import until

CRASH_AT_S = 12.0  # [s] sim time the broker is killed (SIGKILL), timed from the tiers' own epoch
DOWN_S = 6.0  # [s] before it is started again on the same port
HAZARD_AT_S = 15.0  # [s] the stalled vehicle appears while the broker is down (12 to 18 s): its RSI is published in the outage
# A 30 s cycle of unequal greens: the adaptive cloud retimes it after one cycle, at 30 s (greens about equal for hazard's
# even demand, a change of more than GREEN_STEP_S), and the RSU applies the plan at its next phase boundary, within the
# run: phase 1 starts at 32 s (offset 2 s; at offset 0 the plan came just after the boundary at 30 s, and waited to 40 s)
SHORT_CYCLE = [
    "--set", "intersections.0.signal.phases.0.min_green_s=5", "--set", "intersections.0.signal.phases.1.min_green_s=5",
    "--set", "intersections.0.signal.phases.0.green_s=5", "--set", "intersections.0.signal.phases.1.green_s=15",
    "--set", "intersections.0.signal.cycle_s=30", "--set", "intersections.0.signal.offset_s=2",
]


def _epoch_of_tiers(run_pid: int, timeout_s: float = 60.0) -> float:
    """The UTC epoch [s] the tiers of `v2x run` (process `run_pid`) were given (`--epoch`): when their sim time is 0.
    `v2x run` sets it START_DELAY_S after it launches them, and its own start-up before that takes seconds under load."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{run_pid}/task/{run_pid}/children").read_text().split():
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if b"--epoch" in argv:
                    return float(argv[argv.index(b"--epoch") + 1])
        time.sleep(0.1)
    raise AssertionError(f"no tier of `v2x run` (pid {run_pid}) started within {timeout_s:g} s")


def _run_through_an_outage(broker: MosquittoBroker, args: list[str], crash_at_s: float, down_s: float, tmp_path: Path) -> dict[str, Any]:
    """`v2x run ARGS` on `broker`, killed `crash_at_s` into sim time and started again `down_s` later; the report,
    which has been checked to show that one outage, from the crash to the restart (or a reconnect backoff after)."""
    report_path = tmp_path / "r.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "v2x", "run", *args, "--headless", "--broker", broker.url, "--report", str(report_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(max(_epoch_of_tiers(run.pid) + crash_at_s - time.time(), 0.0))  # at sim time crash_at_s, load or not
    crashed_utc = time.time()
    broker.crash()
    time.sleep(down_s)
    restarted_utc = time.time()
    broker.start()
    _, err = run.communicate(timeout=180)
    assert run.returncode == 0, err[-3000:]
    r: dict[str, Any] = json.loads(report_path.read_text())
    conn = r["connection"]
    crash_s, restart_s = crashed_utc - r["epoch_utc_s"], restarted_utc - r["epoch_utc_s"]  # in sim time
    print("outages:", conn["outages_s"], "fleet:", conn["tiers"]["fleet"], f"(killed at {crash_s:.2f} s, started at {restart_s:.2f} s)")
    ((down, up),) = conn["outages_s"]
    assert crash_s - 0.5 <= down <= crash_s + 2.0, (crash_s, conn)
    assert up is not None, conn
    assert restart_s - 0.5 <= up <= restart_s + 15.0, (restart_s, conn)  # reconnect backoff is capped at 10 s
    return r


def test_broker_killed_and_restarted_mid_run(broker_factory: Callable[..., MosquittoBroker], tmp_path: Path) -> None:
    broker = broker_factory(persistence=True)
    t0 = time.monotonic()
    args = ["hazard", "--duration", "37", "--policy", "adaptive", *SHORT_CYCLE, "--set", f"events.0.start_s={HAZARD_AT_S:g}"]
    r = _run_through_an_outage(broker, args, CRASH_AT_S, DOWN_S, tmp_path)
    assert time.monotonic() - t0 < 120

    plans, rsi, bsm = r["events"]["plan_apply_ms"], r["messages"]["rsi"], r["messages"]["bsm"]
    print("plans:", plans["plans"], "RSI:", {k: rsi[k] for k in ("sent", "lost", "received_by")}, "HLW warnings:",
          r["apps"]["hlw"]["warnings"], "BSMs not sent:", r["dropped"]["fleet"]["bsm_not_sent"], "vehicle->cloud:",
          r["loss_by_hop"]["vehicle->cloud"])

    # The report shows the outage (checked above), and every tier came back.
    conn = r["connection"]
    for tier, c in conn["tiers"].items():
        assert c["disconnects"] >= 1, (tier, c)
        assert c["reconnects"] >= 1, (tier, c)

    # QoS 1 hazards published during the outage were delivered afterwards: none lost, vehicles warned.
    ((down, up),) = conn["outages_s"]
    assert down <= HAZARD_AT_S <= up, (HAZARD_AT_S, conn["outages_s"])  # the hazard came while the broker was down
    assert rsi["sent"] >= 1
    assert rsi["lost"] == 0
    assert rsi["received_by"].get("vehicles", 0) > 0
    assert r["apps"]["hlw"]["warnings"] > 0
    # plans the cloud issued (adaptive control) all reached their RSU and were applied: at least one was issued
    assert plans["issued"] >= 1, plans
    assert plans["issued"] == plans["applied"]

    # BSM loss is counted from sequence gaps: vehicles kept taking sequence numbers while they could not send.
    # Gaps can only be among what was generated and not received, and the outage made many.
    not_sent = r["dropped"]["fleet"]["bsm_not_sent"]
    generated = bsm["sent"] + not_sent
    to_cloud = r["loss_by_hop"]["vehicle->cloud"]
    assert not_sent > 100
    assert 0.5 * not_sent <= to_cloud["lost"] <= generated - to_cloud["received"]


async def test_plans_published_in_an_outage_reach_the_rsu_session_afterwards(
    broker_factory: Callable[..., MosquittoBroker],
) -> None:
    """As the cloud and an RSU hold them: plans at QoS 1, the RSU on a persistent session.
    One plan is published while the broker is down (it waits in the cloud's outbox), one after the
    broker is back but before the RSU reconnects (it waits in the RSU's session on the broker)."""
    broker = broker_factory(persistence=True)
    topic = "t/faults/v2x/v1/plan/J1"
    rsu = MqttTransport(broker.url, "rsu-J1-faults", clean_start=False, session_expiry_s=3600)
    async with rsu:
        await rsu.subscribe(topic, qos=1)
    await asyncio.sleep(3.0)  # the broker saves its sessions every second or two (autosave_interval 1)
    cloud = MqttTransport(broker.url, "cloud-faults", connect_timeout_s=30.0)
    async with cloud:
        broker.crash()
        await until(lambda: not cloud.connected)
        assert cloud.publish(topic, b"plan-1", qos=1)  # queued: the broker is down
        broker.start()
        await until(lambda: cloud.connected)
        assert cloud.publish(topic, b"plan-2", qos=1)
        assert await cloud.drain(20.0)  # both acknowledged by the broker
        assert cloud.stats.disconnects == 1
        assert cloud.stats.reconnects == 1
    rsu = MqttTransport(broker.url, "rsu-J1-faults", clean_start=False, session_expiry_s=3600)
    got: list[bytes] = []
    async with rsu:
        deadline = time.monotonic() + 20.0
        while len(got) < 2 and time.monotonic() < deadline:
            await rsu.wait(1.0)
            got += [m.payload for m in rsu.receive()]
    assert got == [b"plan-1", b"plan-2"]


# four_way with 60 m approaches (250 m in the scenario) and its demand doubled: vehicles leave the network from about 12 s
# and then about one every 1.5 s (at the scenario's own, from about 45 s, and fewer)
SHORT_AND_BUSY = [
    *(a for leg in range(4) for a in ("--set", f"intersections.0.approaches.{leg}.length_m=60")),
    "--set", "demand.0.vph=1000", "--set", "demand.1.vph=1000", "--set", "demand.2.vph=800", "--set", "demand.3.vph=800",
]
OUTAGE_AT_S = 15.0  # [s] sim time: vehicles are leaving the network by then
OUTAGE_S = 10.0  # [s] long enough that some leave while the broker is down, whatever their SPaT made them do


def test_an_outage_is_closed_when_the_broker_returns_though_vehicles_left_while_it_was_down(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path,
) -> None:
    """Vehicles that leave the network during a broker outage close their connections while it is down: they never
    see it return. Before, their outages stayed open and the report said the broker was down "to end"."""
    args = ["four_way", "--duration", "40", *SHORT_AND_BUSY]  # 15 s after the restart: the reconnects (backoff) are in the run
    r = _run_through_an_outage(broker_factory(), args, OUTAGE_AT_S, OUTAGE_S, tmp_path)
    fleet = r["connection"]["tiers"]["fleet"]
    assert fleet["disconnects"] > fleet["reconnects"]  # some OBUs were closed while the broker was down


STALL_S = 5.0  # [s] the test's --stall-timeout
SHUTDOWN_S = 8.0  # [s] allowed for stopping the tiers and writing the report once the stall is seen (measured: 1-4)


@pytest.mark.parametrize("mode", ["--fast", "--realtime"])
def test_a_stalled_broker_ends_the_run_with_one_clear_line_and_a_partial_report(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path, mode: str,
) -> None:
    """The broker is stopped (SIGSTOP) mid-run: its port still takes connections, nothing answers on them. Before, the
    run hung (gmqtt's lost heartbeats and reconnects, each lockstep round waiting out its timeout, every step)."""
    broker = broker_factory()
    assert broker.pid is not None
    report_path = tmp_path / "r.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "v2x", "run", "four_way", mode, "--duration", "600", "--headless", "--broker", broker.url,
         "--report", str(report_path), "--stall-timeout", f"{STALL_S:g}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        if mode == "--realtime":  # 6 s into sim time, however long `v2x run` took to start its tiers under load
            time.sleep(max(_epoch_of_tiers(run.pid) + 6.0 - time.time(), 0.0))
        else:
            time.sleep(START_DELAY_S + 6.0)  # well into the run (about 60 of the 600 s)
        assert run.poll() is None, run.communicate()[1][-3000:]
        os.kill(broker.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = run.communicate(timeout=STALL_S + SHUTDOWN_S + 30.0)  # a hang fails below, not here
        took_s = time.monotonic() - stopped
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 1, err[-3000:]
    assert took_s <= STALL_S + 3.0 + SHUTDOWN_S, (took_s, err[-3000:])  # a probe's timeout and its interval: up to 2 s late
    (said,) = [x for x in err.splitlines() if "stopped answering" in x]
    assert broker.url in said, said
    assert f"--stall-timeout {STALL_S:g}" in said, said
    r = json.loads(report_path.read_text())
    assert r["interrupted"] is True
    assert "stopped answering" in r["broker_stalled"]
    assert r["messages"]["bsm"]["sent"] > 0, r["messages"]  # what the run measured until then
