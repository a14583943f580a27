"""Broker security: `v2x broker-config` logins and ACLs on a real Mosquitto, and `v2x run --secure`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from v2x.broker import MosquittoBroker
from v2x.security import Credentials, mosquitto_hash
from v2x.topics import TILE_ZOOM, Topics

TILE = "1320121011220113" + "0"


@pytest.fixture
def locked(broker_factory: Callable[..., MosquittoBroker], tmp_path: Path) -> tuple[MosquittoBroker, Credentials]:
    out = tmp_path / "sec"
    res = subprocess.run([sys.executable, "-m", "v2x", "broker-config", "four_way", str(out), "--duration", "600"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "mosquitto -c" in res.stdout
    broker = broker_factory(secure=(out / "passwd", out / "acl"))
    return broker, Credentials.load(out / "credentials.json")


def _pub(broker: MosquittoBroker, creds: Credentials | None, user: str, topic: str, payload: str) -> subprocess.CompletedProcess[str]:
    login = [] if creds is None else ["-u", user, "-P", creds.password(user)]
    return subprocess.run(["mosquitto_pub", "-p", str(broker.port), *login, "-t", topic, "-m", payload, "-q", "1", "-V", "mqttv5"],
                          capture_output=True, text=True, timeout=20)


def test_a_vehicle_may_publish_its_own_bsm_only_and_nothing_else_is_delivered(locked: tuple[MosquittoBroker, Credentials]) -> None:
    broker, creds = locked
    t = Topics()
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-u", "observer", "-P", creds.password("observer"),
                            "-t", "v2x/v1/#", "-v", "-V", "mqttv5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    try:
        own = _pub(broker, creds, "veh-1", t.bsm(TILE, "veh-1"), "own-bsm")
        others = _pub(broker, creds, "veh-1", t.bsm(TILE, "veh-2"), "forged-bsm")
        spat = _pub(broker, creds, "veh-1", t.spat("rsu", TILE, "J1"), "forged-spat")
        plan = _pub(broker, creds, "veh-1", t.plan("J1"), "forged-plan")
        rsu_map = _pub(broker, creds, "RSU-J1", t.map(TILE, "J1"), "rsu-map")
        rsu_plan = _pub(broker, creds, "RSU-J1", t.plan("J1"), "rsu-forged-plan")
        cloud_rsi = _pub(broker, creds, "cloud", t.rsi(TILE, "cloud", 1), "cloud-rsi")
        time.sleep(0.5)
    finally:
        sub.terminate()
        delivered, _ = sub.communicate(timeout=10)
    for ok in (own, rsu_map, cloud_rsi):
        assert ok.returncode == 0
        assert "failed" not in ok.stderr, ok.stderr
    for refused in (others, spat, plan, rsu_plan):
        assert "Not authorized" in refused.stderr, refused.stderr
    assert delivered.split() == [t.bsm(TILE, "veh-1"), "own-bsm", t.map(TILE, "J1"), "rsu-map", t.rsi(TILE, "cloud", 1), "cloud-rsi"]
    assert len(t.bsm(TILE, "veh-1").split("/")) == 2 + 1 + TILE_ZOOM + 1


def test_no_login_or_a_wrong_password_is_refused(locked: tuple[MosquittoBroker, Credentials]) -> None:
    broker, _ = locked
    for res in (_pub(broker, None, "", "v2x/v1/bsm/x", "anonymous"), _pub(broker, Credentials("not-the-secret"), "veh-1", "v2x/v1/x", "x")):
        assert res.returncode != 0
        assert "not authori" in res.stderr.lower(), res.stderr


def test_mosquitto_hash_is_pbkdf2_sha512_in_mosquitto_s_format() -> None:
    h = mosquitto_hash("secret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert len(h.rsplit("$", 1)[1]) == 88  # 64 bytes, base64


def test_run_secure_every_tier_logs_in_as_itself(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", "hazard", "--secure", "--fast", "--headless", "--duration", "70",
         "--no-impairment", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["broker"]["kind"].startswith("mosquitto (secured")
    msgs = r["messages"]
    for mtype in ("bsm", "spat", "map", "rsm", "rsi", "status"):
        assert msgs[mtype]["sent"] > 0, mtype
    # with every login and ACL in place, nothing was refused: each BSM reached the cloud, each RSI the vehicles
    assert msgs["bsm"]["received_by"]["cloud"] == msgs["bsm"]["sent"]
    assert msgs["rsi"]["received_by"]["vehicles"] > 0
    assert r["lockstep"]["lost"] == 0
