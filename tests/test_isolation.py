"""Runs sharing a broker (issue: hardening, item 4): on a real Mosquitto, with real runs and tier processes.

- Every client id of a run carries the run's id: two runs at once on one broker, under different roots, never take
  over each other's connections, and each cloud counts only its own run's BSMs.
- A tier whose client id is taken over by another client stops with a clear error instead of a reconnect fight.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from v2x.net.broker import MosquittoBroker

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
        intruder.terminate()
        intruder.wait(10)
    print(f"the RSU ended after {time.monotonic() - t0:.1f} s with {rsu.returncode}: {err.strip().splitlines()[-1:]}")
    assert rsu.returncode == 1, err[-2000:]
    assert time.monotonic() - t0 < 15  # not a reconnect fight until its duration ends
    last = err.strip().splitlines()[-1]
    assert last.startswith("v2x roadside: client id 'isolation1-RSU-J1' was taken over by another client"), last
    summaries: list[dict[str, Any]] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert not [s for s in summaries if s.get("event") == "summary"]  # it stopped, and said why instead
