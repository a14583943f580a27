"""Vehicles, RSU and cloud as three OS processes on one Mosquitto, in real time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from v2x.broker import MosquittoBroker

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")  # 60 m approaches: vehicles cross in ~10 s
RUN_S = 25.0


def test_three_tiers_as_processes(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    root = f"{topic_prefix}/v2x/v1"
    common = ["--broker", mosquitto.url, "--epoch", f"{time.time():.3f}", "--root", root]
    rsu = subprocess.Popen([sys.executable, "-m", "v2x", "roadside", SHORT, *common, "--duration", str(RUN_S + 3)], stderr=subprocess.PIPE, text=True)
    cloud = subprocess.Popen(
        [sys.executable, "-m", "v2x", "cloud", SHORT, *common, "--duration", str(RUN_S + 5)],  # outlives the RSU
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        fleet = subprocess.run(
            [sys.executable, "-m", "v2x", "fleet", SHORT, *common, "--duration", str(RUN_S)],
            capture_output=True, text=True, timeout=RUN_S + 30,
        )
        cloud_out, _ = cloud.communicate(timeout=30)
        rsu.wait(30)
    finally:
        for p in (rsu, cloud):
            p.kill()
            p.wait()
    assert fleet.returncode == 0, fleet.stderr
    f = json.loads(fleet.stdout.strip().splitlines()[-1])
    events = [json.loads(x) for x in cloud_out.splitlines()]
    c = next(e for e in events if e["event"] == "summary")
    # vehicles enter and leave
    assert f["vehicles"]["spawned"] >= 8
    assert f["vehicles"]["finished"] >= 2
    # the cloud receives every vehicle's BSMs
    assert c["vehicles_seen"] == f["vehicles"]["spawned"]
    assert c["received"]["bsm"] == f["messages"]["sent"]["bsm"]
    # SPaT reaches every approaching vehicle, by both paths
    assert f["spat"]["approaching_without_spat"] == []
    assert f["messages"]["received"]["spat/rsu"] > 0
    assert f["messages"]["received"]["spat/cloud"] > 0
    assert f["traffic"]["collisions"] == 0
    assert f["bad_input"] == {}
    assert [e["event"] for e in events if e["event"].startswith("rsu-")] == ["rsu-online", "rsu-stopped"]
