"""A hostile client cannot corrupt a run (issue: hardening): on a real Mosquitto, against real tier processes.

- A signal plan that greens crossing movements together, or whose durations are all zero, is refused by the RSU,
  counted and reported with its reason, and never reaches the controller; the RSU carries on.
- A tier that dies makes `v2x run` exit non-zero and say which tier died and why.
- SPaT is trusted within limits: one dated ahead of the receiver's clock, or from a sender that is not the
  intersection's RSU (or the cloud relaying it), is refused and counted; red-light violations are measured against
  the controllers' true lights in real time too.
- The report cannot be poisoned: a forged frame numbered far ahead of a sender's stream starts a new stream, counted
  as a jump, instead of counting every number skipped as lost.
- The report does not mislead: what a stalled receiver lost is counted as lost, and its stall is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.network import Network
from v2x.core.scenario import bundled_dir, load
from v2x.core.topics import Topics, quadkey
from v2x.net.broker import MosquittoBroker
from v2x.net.station import Clock, Station
from v2x.net.transport import MqttTransport
from v2x.run.realtime import START_DELAY_S

pytestmark = pytest.mark.integration

FOUR_WAY = str(bundled_dir() / "four_way.toml")
NS_THROUGH, EW_THROUGH = 2, 5  # four_way's group ids of north and east through: their paths cross


def _phase(groups: tuple[int, ...], green_s: float, yellow_s: float = 3.0, all_red_s: float = 2.0) -> m.PhasePlan:
    return m.PhasePlan(phase_id=1, signal_groups=groups, green_s=green_s, yellow_s=yellow_s, all_red_s=all_red_s,
                       min_green_s=min(10.0, green_s), max_green_s=max(150.0, green_s))


ALL_GREEN = m.SignalPlan(intersection=intersection_ref(0), plan_id=901, mode=m.ControlMode.FIXED_TIME, cycle_s=150.0,
                         offset_s=0.0, phases=(_phase(tuple(range(1, 13)), 145.0),), reason="every movement at once")
ALL_ZERO = m.SignalPlan(intersection=intersection_ref(0), plan_id=902, mode=m.ControlMode.FIXED_TIME, cycle_s=0.0,
                        offset_s=0.0, phases=(_phase((NS_THROUGH,), 0.0, 0.0, 0.0),), reason="no time at all")


def _greens(state: m.IntersectionState) -> set[int]:
    return {mv.signal_group for mv in state.states
            if mv.events[0].state in (m.LightState.PROTECTED_GREEN, m.LightState.PERMISSIVE_GREEN)}


@pytest.mark.parametrize("plan", [ALL_GREEN, ALL_ZERO], ids=["crossing-greens", "zero-durations"])
async def test_a_plan_that_is_unsafe_or_impossible_is_refused_and_the_rsu_carries_on(
    plan: m.SignalPlan, mosquitto: MosquittoBroker, topic_prefix: str,
) -> None:
    root = f"{topic_prefix}/v2x/v1"
    topics = Topics(root)
    # the plan is sent at sim time 1 s and the RSU's first phase boundary is at 35 s: start the run 33 s into its
    # cycle, so a plan that were accepted would take effect within the test
    epoch = time.time() - 33.0
    rsu = subprocess.Popen(  # noqa: ASYNC220 - a real tier process
        [sys.executable, "-m", "roadside", FOUR_WAY, "--broker", mosquitto.url, "--root", root,
         "--epoch", f"{epoch:.3f}", "--duration", "42"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    greens: list[set[int]] = []
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-cloud") as cloud, MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
        await watch.subscribe(topics.spat_area(""))
        deadline = time.monotonic() + 20.0
        while not greens and time.monotonic() < deadline:  # the RSU is up: its SPaT arrives
            await watch.wait(0.5)
            greens += [_greens(st) for msg in watch.receive() for st in codec.decode(msg.payload).body.intersections]  # type: ignore[union-attr]
        assert greens, "the RSU sent no SPaT"
        station = Station("cloud", m.SenderKind.CLOUD, Clock(epoch), cloud)
        assert station.publish(topics.plan("J1"), plan, qos=1)
        end = time.monotonic() + 8.0  # past the phase boundary at sim time 35 s
        while time.monotonic() < end:
            await watch.wait(0.5)
            greens += [_greens(st) for msg in watch.receive() for st in codec.decode(msg.payload).body.intersections]  # type: ignore[union-attr]
    out, err = await asyncio.to_thread(rsu.communicate, timeout=30)
    assert rsu.returncode == 0, err[-2000:]  # the RSU was not ended by the plan
    summary = next(e for e in map(json.loads, out.splitlines()) if e.get("event") == "summary")
    assert summary["bad_input"].get("bad_plan") == 1, summary["bad_input"]
    assert summary["plans_applied"] == 0
    (refusal,) = summary["plans_refused"]
    assert refusal["plan_id"] == plan.plan_id
    assert refusal["reasons"], refusal
    if plan is ALL_GREEN:
        assert any(f"{NS_THROUGH}+{EW_THROUGH}" in r for r in refusal["reasons"]), refusal
    else:
        assert any("yellow 0 s" in r for r in refusal["reasons"]), refusal
    assert not any({NS_THROUGH, EW_THROUGH} <= g for g in greens)  # crossing through movements never green together
    assert len(greens) > 50  # SPaT at 10 Hz all along


def _tier_pid(root: str, module: str, timeout_s: float = 20.0) -> int:
    """The pid of the `python -m <module>` process started for the run under topic root `root`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-m" in argv and module.encode() in argv and root.encode() in argv:
                return int(d.name)
        time.sleep(0.2)
    raise AssertionError(f"no {module} process for {root}")


def test_a_tier_that_dies_makes_the_run_fail_naming_it(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> None:
    root = f"{topic_prefix}/v2x/v1"
    report = tmp_path / "r.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "v2x", "run", FOUR_WAY, "--headless", "--duration", "12", "--broker", mosquitto.url,
         "--root", root, "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    os.kill(_tier_pid(root, "roadside"), signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err[-2000:]
    assert "the roadside tier failed" in err, err[-2000:]
    r: dict[str, Any] = json.loads(report.read_text())
    (failed,) = r["tiers_failed"]
    assert failed["tier"] == "roadside"
    assert failed["exit_code"] == -signal.SIGKILL


def _all_green(sender: str, kind: m.SenderKind, at_us: int) -> bytes:
    """A forged SPaT for four_way's J1: every group green for an hour, timed `at_us` [UTC us]."""
    hour = m.TimeChange(start_s=0.0, min_end_s=3600.0, max_end_s=3600.0, likely_end_s=3600.0, confidence=15)
    state = m.IntersectionState(
        ref=intersection_ref(0), name="J1", revision=0, status=frozenset({m.IntersectionStatus.FIXED_TIME}),
        timestamp_ms=at_us // 1000, plan_id=1,
        states=tuple(m.MovementState(g, (m.MovementEvent(m.LightState.PROTECTED_GREEN, hour),)) for g in range(1, 13)),
    )
    return codec.encode(m.Frame(m.Header(sender, kind, 0, at_us, 0), m.Spat((state,))))


async def test_spat_from_the_future_or_from_the_wrong_sender_is_refused_and_nobody_runs_a_red(
    mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    root = f"{topic_prefix}/v2x/v1"
    topic = Topics(root).spat("rsu", Network(load(FOUR_WAY)).tiles[0], "J1")
    report = tmp_path / "r.json"
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-forger") as forger:
        # retained before the run, "from RSU-J1", an hour ahead: every vehicle that subscribes gets it
        forger.publish(topic, _all_green("RSU-J1", m.SenderKind.RSU, time.time_ns() // 1000 + 3_600_000_000), qos=1, retain=True)
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "v2x", "run", FOUR_WAY, "--headless", "--duration", "45", "--broker", mosquitto.url,
            "--root", root, "--report", str(report), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        while run.returncode is None:  # and all along, "from a vehicle", timed now, at 20 Hz
            forger.publish(topic, _all_green("veh-666", m.SenderKind.VEHICLE, time.time_ns() // 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wait(), 0.05)
        err = (await run.stderr.read()).decode() if run.stderr else ""
        forger.publish(topic, b"", qos=1, retain=True)
    assert run.returncode == 0, err[-2000:]
    r = json.loads(report.read_text())
    refused = r["bad_input"]["fleet"]
    assert refused.get("from_the_future", 0) >= 1, refused
    assert refused.get("wrong_sender", 0) >= 100, refused
    assert r["traffic"]["red_light_violations"] == 0, r["traffic"]  # a number in real time, against the true lights
    assert r["spat_coverage"]["vehicles_approaching"] >= 20  # vehicles came to the stop lines, through a red phase


async def test_a_forged_sequence_jump_starts_a_new_stream_and_is_counted_as_one_not_as_loss(
    mosquitto: MosquittoBroker, topic_prefix: str,
) -> None:
    """A vehicle's BSMs to a real RSU process, with two forged frames in its name: one numbered 2^31, one a thousand
    ahead of its latest. Before, the RSU counted 2^31 BSMs lost (the report said 386,547,046,024 in a run)."""
    root = f"{topic_prefix}/v2x/v1"
    net = Network(load(FOUR_WAY))
    pos = net.frame.to_geo(*net.rsu_xy["RSU-J1"])
    topic = Topics(root).bsm(quadkey(pos.lat_deg, pos.lon_deg), "veh-7")
    epoch = time.time()
    rsu = subprocess.Popen(  # noqa: ASYNC220 - a real tier process
        [sys.executable, "-m", "roadside", FOUR_WAY, "--broker", mosquitto.url, "--root", root, "--no-impairment",
         "--epoch", f"{epoch:.3f}", "--duration", "12"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-veh") as veh, MqttTransport(mosquitto.url, f"{topic_prefix}-watch") as watch:
        await watch.subscribe(Topics(root).spat_area(""))
        deadline = time.monotonic() + 20.0
        while not watch.receive() and time.monotonic() < deadline:  # the RSU is up (and subscribed): its SPaT arrives
            await watch.wait(0.5)
        clock = Clock(epoch)
        station = Station("veh-7", m.SenderKind.VEHICLE, clock, veh)
        bsm = m.Bsm(position=pos, speed_mps=0.0, heading_deg=0.0)
        for k in range(40):  # 4 s at 10 Hz
            assert station.publish(topic, bsm)
            if k in (10, 25):  # forged: the same sender, numbered far ahead of its stream, generated now
                seq = 2**31 if k == 10 else k + 1000
                forged = codec.encode(m.Frame(m.Header("veh-7", m.SenderKind.VEHICLE, seq, clock.utc_us(), round(clock.sim_s() * 1000)), bsm))
                assert veh.publish(topic, forged)
            await asyncio.sleep(0.1)
    out, err = await asyncio.to_thread(rsu.communicate, timeout=30)
    assert rsu.returncode == 0, err[-2000:]
    summary = next(e for e in map(json.loads, out.splitlines()) if e.get("event") == "summary")
    counts = summary["measurements"]["counts"]["bsm|vehicle->rsu"]
    print("RSU's BSM counts:", counts)
    assert counts["received"] == 42  # 40 genuine, 2 forged: each measured once
    assert counts["lost"] == 0
    assert counts["jumps"] == 2


STALL_AT_S = 15.0  # [s] sim time the cloud process is stopped (SIGSTOP)
STALL_S = 10.0  # [s] until it is continued (SIGCONT)


async def test_the_loss_a_stalled_receiver_suffers_is_counted_and_its_stall_shown(
    mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    """The cloud process stopped for 10 s in a real-time run. Its connection is closed when it resumes (gmqtt finds
    no heartbeat for twice its keepalive) and what waited for it is lost, much of it at the ends of streams (vehicles
    that left, or changed tile, meanwhile), where no sequence gap shows it. A tap on the same broker counts what was
    sent to the cloud. Before, received + lost fell short of it by about 1,000 BSMs and the report showed only a
    0.2 s outage."""
    root = f"{topic_prefix}/v2x/v1"
    report = tmp_path / "r.json"
    tapped = 0
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-tap") as tap:
        await tap.subscribe(Topics(root).area("bsm", ""))
        t0 = time.time()
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "v2x", "run", FOUR_WAY, "--headless", "--duration", "45", "--broker", mosquitto.url,
            "--root", root, "--report", str(report), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        cloud = await asyncio.to_thread(_tier_pid, root, "cloud")
        await asyncio.sleep(max(t0 + START_DELAY_S + STALL_AT_S - time.time(), 0.0))
        stopped_utc = time.time()
        os.kill(cloud, signal.SIGSTOP)
        try:
            end = time.monotonic() + STALL_S
            while time.monotonic() < end:
                await tap.wait(0.1)
                tapped += sum(1 for msg in tap.receive() if msg.payload)
        finally:
            os.kill(cloud, signal.SIGCONT)
        while run.returncode is None:
            await tap.wait(0.1)
            tapped += sum(1 for msg in tap.receive() if msg.payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wait(), 0.01)
        err = (await run.stderr.read()).decode() if run.stderr else ""
    assert run.returncode == 0, err[-2000:]
    r = json.loads(report.read_text())
    to_cloud = r["loss_by_hop"]["vehicle->cloud"]
    print(f"BSMs sent to the cloud (tap) {tapped}; the cloud's received {to_cloud['received']}, lost {to_cloud['lost']}, "
          f"stalls {r.get('stalls_s')}, outages {r['connection']['outages_s']}")
    assert to_cloud["lost"] > 500  # the stall cost the cloud about ten seconds of BSMs
    assert abs(to_cloud["received"] + to_cloud["lost"] - tapped) <= max(0.01 * tapped, 10), (tapped, to_cloud)
    ((a, b),) = r["stalls_s"]["cloud"]
    stopped_s = stopped_utc - r["epoch_utc_s"]
    assert stopped_s - 0.5 <= a <= stopped_s + 0.5
    assert STALL_S - 0.5 <= b - a <= STALL_S + 1.0
