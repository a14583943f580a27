"""`v2x run --scheduling`: the run's processes, and the broker it starts, under Linux's SCHED_BATCH (docs/scale.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.tiers import descendants
from v2x.net.broker import find_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not hasattr(os, "SCHED_BATCH") or find_mosquitto() is None,
                                                         reason="Linux's scheduling policies and Mosquitto")]


def _policy_in_child(code: str) -> int:
    """The policy a process started after `code` ran in its parent reports for itself."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport subprocess, sys\nsubprocess.run([sys.executable, '-c', "
                          "'import os; print(os.sched_getscheduler(0))'], check=True)"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_policy_set_holds_for_what_the_process_starts_after() -> None:
    batch = "from v2x.net.options import scheduling; assert scheduling('batch') == 'batch'"
    assert _policy_in_child(batch) == os.SCHED_BATCH
    normal = f"{batch}; assert scheduling('normal') == 'normal'"
    assert _policy_in_child(normal) == os.SCHED_OTHER


def test_every_process_of_a_run_and_its_broker_run_batch_by_default(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--duration", "8", "--workers", "2",
         "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    seen: dict[int, str] = {}
    policies: dict[int, int] = {}
    deadline = time.monotonic() + 60
    wanted = ("mosquitto", "-m roadside", "-m cloud", "v2x fleet")
    while run.poll() is None and time.monotonic() < deadline and not all(any(w in c for c in seen.values()) for w in wanted):
        for pid, cmd in descendants(run.pid).items():
            try:
                policies[pid] = os.sched_getscheduler(pid)
            except OSError:  # gone since
                continue
            seen[pid] = cmd
        time.sleep(0.2)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    for w in wanted:
        assert any(w in c for c in seen.values()), f"no {w} process seen: {sorted(seen.values())}"
    not_batch = {seen[p]: p_ for p, p_ in policies.items() if p_ != os.SCHED_BATCH}
    assert not not_batch, not_batch
    assert json.loads(report.read_text())["scheduling"] == "batch"
