"""Broker security: `v2x broker-config` logins and ACLs on a real Mosquitto, and `v2x run --secure`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from v2x.core.topics import TILE_ZOOM, Topics
from v2x.net.broker import MosquittoBroker
from v2x.net.security import Credentials, mosquitto_hash

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
    for res in (_pub(broker, None, "", "v2x/v1/bsm/x", "anonymous"), _pub(broker, Credentials.new(), "veh-1", "v2x/v1/x", "x")):
        assert res.returncode != 0
        assert "not authori" in res.stderr.lower(), res.stderr


def test_mosquitto_hash_is_pbkdf2_sha512_in_mosquitto_s_format() -> None:
    h = mosquitto_hash("secret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert len(h.rsplit("$", 1)[1]) == 88  # 64 bytes, base64


@pytest.mark.integration
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


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (its own CA), and the key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v2x test broker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "broker.pem", tmp_path / "broker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_a_tls_listener_with_logins_carries_messages_and_refuses_plain_or_untrusted_clients(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path,
) -> None:
    from v2x.core.errors import BrokerError
    from v2x.core.scenario import load, resolve
    from v2x.net.security import OBSERVER, write_config
    from v2x.net.transport import MqttTransport

    cert, key = _self_signed(tmp_path)
    creds = Credentials.new()
    paths = write_config(load(resolve("four_way")), tmp_path / "sec", "v2x/v1", 0, creds, 60.0, tls=(cert, key))
    assert f"certfile {cert.resolve()}" in paths["mosquitto.conf"].read_text()
    broker = broker_factory(secure=(paths["passwd"], paths["acl"]), tls=(cert, key))
    url = f"mqtts://127.0.0.1:{broker.port}?ca={cert}"
    topic = Topics().bsm(TILE, "veh-3")
    async with MqttTransport(creds.url(url, OBSERVER), "watch") as watch, MqttTransport(creds.url(url, "veh-3"), "veh-3") as car:
        await watch.subscribe("v2x/v1/#", qos=1)
        assert car.publish(topic, b"over tls", qos=1)
        await watch.wait(5.0)
        got = watch.receive()
    assert [(m.topic, m.payload) for m in got] == [(topic, b"over tls")]
    for bad_url in (f"mqtt://127.0.0.1:{broker.port}", f"mqtts://127.0.0.1:{broker.port}"):  # plain; TLS without the CA
        with pytest.raises(BrokerError):
            async with MqttTransport(creds.url(bad_url, "veh-3"), "veh-3b", connect_timeout_s=2.0):
                pass
