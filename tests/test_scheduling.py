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


def _allowed() -> bool:
    """Whether this system has the policies and lets a process take SCHED_BATCH (a sandbox may refuse it)."""
    if not hasattr(os, "SCHED_BATCH"):
        return False
    probe = "import os; os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode == 0


pytestmark = [pytest.mark.integration, pytest.mark.skipif(not _allowed(), reason="Linux's SCHED_BATCH, allowed here")]


def _default_policy() -> None:
    """In a child before it runs: Linux's default policy, whatever the test's own (so that what it has, it set)."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _policy_in_child(code: str) -> int:
    """The policy a process started after `code` ran in its parent reports for itself."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport subprocess, sys\nsubprocess.run([sys.executable, '-c', "
                          "'import os; print(os.sched_getscheduler(0))'], check=True)"], capture_output=True, text=True,
                         check=True, preexec_fn=_default_policy)
    return int(out.stdout.split()[-1])


def test_a_policy_set_holds_for_what_the_process_starts_after() -> None:
    batch = "from v2x.net.options import scheduling; assert scheduling('batch') == ('batch', None)"
    assert _policy_in_child(batch) == os.SCHED_BATCH
    normal = f"{batch}; assert scheduling('normal') == ('normal', None)"
    assert _policy_in_child(normal) == os.SCHED_OTHER


@pytest.mark.skipif(find_mosquitto() is None, reason="the run starts Mosquitto")
def test_every_process_of_a_run_and_its_broker_run_batch_by_default(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--duration", "8", "--workers", "2",
         "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_default_policy,
    )
    seen: dict[int, str] = {}
    policies: dict[int, int] = {}
    wanted = {"mosquitto": 1, "-m roadside": 1, "-m cloud": 1, "v2x fleet": 2}  # command-line part -> processes

    def found(part: str) -> int:
        return sum(part in c for c in seen.values())

    deadline = time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline and any(found(w) < n for w, n in wanted.items()):
        for pid, cmd in descendants(run.pid).items():
            try:
                policies[pid] = os.sched_getscheduler(pid)
            except OSError:  # gone since
                continue
            seen[pid] = cmd
        time.sleep(0.2)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    for w, n in wanted.items():
        assert found(w) == n, f"{found(w)} {w} process(es) seen, not {n}: {sorted(seen.values())}"
    not_batch = {seen[pid]: policy for pid, policy in policies.items() if policy != os.SCHED_BATCH}
    assert not not_batch, not_batch
    assert json.loads(report.read_text())["scheduling"] == "batch"
