"""Scheduled hazards end to end in fast mode: RSI raised (QoS 1, retained per tile), received, then cleared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from v2x.core.scenario import bundled_dir
from v2x.net.broker import MosquittoBroker


def test_a_scheduled_hazard_is_broadcast_then_cleared(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    text = (bundled_dir() / "hazard.toml").read_text()
    text = text.replace("start_s = 60.0\nduration_s = 600.0", "start_s = 10.0\nduration_s = 20.0")
    assert "start_s = 10.0" in text
    scenario = tmp_path / "short_hazard.toml"
    scenario.write_text(text)
    report = tmp_path / "r.json"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", str(scenario), "--fast", "--duration", "40", "--report", str(report),
         "--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(report.read_text())
    events = [(e["event"], e.get("sim_s")) for e in r["cloud"]["events"] if e["event"].startswith("hazard")]
    assert events == [("hazard-raised", 10.0), ("hazard-cleared", 30.0)]
    rsi, cleared = r["messages"]["rsi"], r["messages"]["rsi_cleared"]
    assert rsi["sent"] == cleared["sent"] > 1  # one retained RSI per tile, each cleared
    assert rsi["received_by"]["vehicles"] > 0  # vehicles on those tiles heard it
    assert cleared["received_by"]["vehicles"] > 0  # and heard it end
    assert r["lockstep"]["lost"] == 0
