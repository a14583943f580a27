"""`v2x tap` prints live JSON lines (a real process against a real broker)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from v2x.core import codec
from v2x.core import messages as m
from v2x.net.broker import MosquittoBroker


def test_tap_prints_live_json_lines(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "v2x", "tap", f"{topic_prefix}/#", "--broker", mosquitto.url, "-n", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it subscribe
        frame = m.Frame(
            m.Header("veh-3", m.SenderKind.VEHICLE, 9, time.time_ns() // 1000, 900),
            m.Bsm(position=m.GeoPoint(31.4912, 120.3119), speed_mps=12.5, heading_deg=180.0),
        )
        for payload in (b"\xff\x00garbage", codec.encode(frame), codec.encode(frame)):
            subprocess.run(
                ["mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-t", f"{topic_prefix}/bsm", "-s"],
                input=payload,
                check=True,
            )
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 2
    rec = lines[0]
    assert rec["topic"] == f"{topic_prefix}/bsm"
    assert rec["type"] == "bsm"
    assert rec["header"]["sender_id"] == "veh-3"
    assert rec["header"]["sender_kind"] == "VEHICLE"
    assert rec["body"]["speed_mps"] == 12.5
    assert rec["latency_ms"] >= 0
    assert '"error": "malformed"' in err
