"""Vehicles, RSU and cloud as three OS processes on one Mosquitto, in real time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from v2x.net.broker import MosquittoBroker
from v2x.run.realtime import START_DELAY_S

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")  # 60 m approaches: vehicles cross in ~10 s
# seed 17: by 15 s, 14 vehicles in and 3 out, the last in at 13.9 s (seed 1 took 25 s for 13 in and 4 out); by 12.5 s,
# 12 in, the last at 11.3 s
SEED = "17"
# sim time 0 this long after the launch: `v2x run`'s START_DELAY_S, and 3 s more, as four Python processes start at
# once on a 2-core CI machine that runs other tests too (the cloud then subscribed past sim time 0 and missed the first
# BSMs: 843 of 848 with two busy loops beside it, none lost in sequence)
AHEAD_S = START_DELAY_S + 3.0
RUN_S = 15.0


def test_three_tiers_as_processes(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    root = f"{topic_prefix}/v2x/v1"
    # as `v2x run` has them: sim time 0 once the tiers have started (no arrival skipped), the RSU outliving the fleet
    # by 1 s, the cloud outliving the RSU
    common = ["--broker", mosquitto.url, "--epoch", f"{time.time() + AHEAD_S:.3f}", "--root", root, "--seed", SEED]
    rsu = subprocess.Popen([sys.executable, "-m", "v2x", "roadside", SHORT, *common, "--duration", str(RUN_S + 1)], stderr=subprocess.PIPE, text=True)
    cloud = subprocess.Popen(
        [sys.executable, "-m", "v2x", "cloud", SHORT, *common, "--duration", str(RUN_S + 2.5)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        fleet = subprocess.run(
            [sys.executable, "-m", "v2x", "fleet", SHORT, *common, "--duration", str(RUN_S)],
            capture_output=True, text=True, timeout=AHEAD_S + RUN_S + 30,
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
    print(f"spawned {f['vehicles']['spawned']}, finished {f['vehicles']['finished']}, BSMs {c['received']['bsm']}")


def test_fleet_in_two_shards(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    """`v2x fleet --shard 0/2` and `1/2`: each vehicle is one shard's OBU; together they are the whole fleet."""
    root = f"{topic_prefix}/v2x/v1"
    run_s = 12.5
    # sim time 0 once the four processes have started, as in `v2x run`: a shard that started late would skip the first
    # arrivals' approach, and then its vehicles no longer move as the other shard's do
    common = ["--broker", mosquitto.url, "--epoch", f"{time.time() + AHEAD_S:.3f}", "--root", root, "--seed", SEED]
    rsu = subprocess.Popen([sys.executable, "-m", "v2x", "roadside", SHORT, *common, "--duration", str(run_s + 1)], stderr=subprocess.PIPE, text=True)
    cloud = subprocess.Popen(
        [sys.executable, "-m", "v2x", "cloud", SHORT, *common, "--duration", str(run_s + 2.5)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    shards = [
        subprocess.Popen(
            [sys.executable, "-m", "v2x", "fleet", SHORT, *common, "--duration", str(run_s), "--shard", f"{i}/2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=run_s + 30) for p in shards]
        cloud_out, _ = cloud.communicate(timeout=30)
        rsu.wait(30)
    finally:
        for p in (rsu, cloud, *shards):
            p.kill()
            p.wait()
    for p, (_, err) in zip(shards, outs, strict=True):
        assert p.returncode == 0, err
    f0, f1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    c = next(e for e in map(json.loads, cloud_out.splitlines()) if e["event"] == "summary")
    assert f0["shard"]["obus"] > 0
    assert f1["shard"]["obus"] > 0
    # the cloud hears every BSM either shard sent, from as many vehicles as the two shards were OBUs for
    assert c["received"]["bsm"] == f0["messages"]["sent"]["bsm"] + f1["messages"]["sent"]["bsm"]
    assert c["vehicles_seen"] == f0["shard"]["obus"] + f1["shard"]["obus"]
    for f in (f0, f1):
        assert f["spat"]["approaching_without_spat"] == []
        assert f["traffic"]["collisions"] == 0
    # both shards simulate the same arrivals from the same seed
    assert f0["vehicles"]["spawned"] == f1["vehicles"]["spawned"]
    print(f"spawned {f0['vehicles']['spawned']}, OBUs {f0['shard']['obus']} + {f1['shard']['obus']}, BSMs {c['received']['bsm']}")
