"""Every bundled scenario on the embedded broker (amqtt), as a user without Mosquitto runs it: each in fast mode for
120 s and in real time for 30 s completes, or is refused within 10 s saying why and what to install (issue #28).

A test per scenario, so that the suite's workers share them out; its two runs go at once, each with its own broker,
as subprocesses, so the real-time one, which mostly waits for the clock, takes no wall time of its own.
`--broker embedded` picks the broker a run without Mosquitto falls back to (`broker_for_run()`); Mosquitto is also
left off the PATH (v2x.net.broker.find_mosquitto would find it in /usr/sbin anyway, hence the option), so nothing of
the run can lean on its tools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_fast import _check
from v2x.core.scenario import bundled

MODES = {"fast": ["--fast", "--duration", "120"], "realtime": ["--duration", "30"]}
REFUSED_WITHIN_S = 10.0  # [s] a run the embedded broker cannot carry is refused this soon, saying why


def _path_without_mosquitto() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "mosquitto").exists())


@pytest.mark.integration
@pytest.mark.parametrize("sc", bundled(), ids=lambda p: p.stem)
def test_every_bundled_scenario_runs_on_the_embedded_broker_in_both_modes(sc: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without_mosquitto()}
    runs = {}
    for mode, args in MODES.items():
        report = tmp_path / f"{sc.stem}-{mode}.json"
        cmd = [sys.executable, "-m", "v2x", "run", str(sc), *args, "--headless", "--broker", "embedded", "--report", str(report)]
        runs[mode] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env),
                      report, time.monotonic())
    failed = []
    try:
        for mode, (proc, report, started) in runs.items():
            _, err = proc.communicate(timeout=600)
            took_s = time.monotonic() - started
            if proc.returncode == 0:
                r = json.loads(report.read_text())
                assert r["broker"]["kind"] == "amqtt (embedded)", r["broker"]
                assert r["messages"]["bsm"]["sent"] > 0, (sc.stem, mode, r["messages"])
                assert r["tiers_failed"] == [], (sc.stem, mode, r["tiers_failed"])
                if (sc.stem, mode) == ("four_way", "fast"):
                    _check(r)  # every hop measured, every message accounted for, as on Mosquitto
            elif not (took_s <= REFUSED_WITHIN_S and "install Mosquitto" in err):
                failed.append(f"{sc.stem} {mode}: exit code {proc.returncode} after {took_s:.0f} s: {err[-1500:]}")
    finally:
        for proc, _, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not failed, "\n".join(failed)


@pytest.mark.integration
def test_a_run_the_embedded_broker_cannot_carry_is_refused_within_seconds_saying_why() -> None:
    """Several cloud instances share the SPaT relay through an MQTT 5 shared subscription; amqtt speaks 3.1.1 and has
    none, so vehicles would get no SPaT by cellular, silently. Before, the run went ahead."""
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", "four_way", "--copies", "2", "--clouds", "2", "--duration", "5", "--headless",
         "--broker", "embedded"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": _path_without_mosquitto()},
    )
    assert time.monotonic() - started <= REFUSED_WITHIN_S, res.stderr[-2000:]
    assert res.returncode == 2, res.stderr[-2000:]
    (said,) = [x for x in res.stderr.splitlines() if x.startswith("v2x run: --clouds 2")]
    assert "shared subscription" in said, said
    assert "install Mosquitto: apt-get install mosquitto" in said, said
