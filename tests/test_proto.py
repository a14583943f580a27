"""The published .proto is the contract: generated code is current, and stock tools decode our bytes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from v2x.core import codec
from v2x.core import messages as m
from v2x.net.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "v2x" / "v1" / "v2x.proto"


def _protoc_decode(payload: bytes) -> str:
    """Decode with protoc (from grpcio-tools) and nothing but the files in proto/."""
    out = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", "--decode=v2x.v1.MessageFrame", str(PROTO)],
        input=payload,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def _sample_frame() -> m.Frame:
    return m.Frame(
        m.Header("veh-42", m.SenderKind.VEHICLE, 17, 1_763_700_000_000_000, 12_300),
        m.Bsm(
            position=m.GeoPoint(31.4912345, 120.3119876, 5.0),
            speed_mps=13.9,
            heading_deg=270.0,
            brake_applied=True,
            events=frozenset({m.VehicleEvent.HARD_BRAKING}),
        ),
    )


@pytest.mark.integration
def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_protoc_decodes_a_codec_payload() -> None:
    text = _protoc_decode(codec.encode(_sample_frame()))
    assert 'sender_id: "veh-42"' in text
    assert "sender_kind: SENDER_KIND_VEHICLE" in text
    assert "seq: 17" in text
    assert "lat: 314912345" in text
    assert "speed: 695" in text
    assert "heading: 21600" in text
    assert "brake_applied: true" in text
    assert "events: 128" in text  # bit 7, hard braking


def test_payload_through_mosquitto_decodes_with_protoc(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> None:
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install it with `apt-get install mosquitto-clients`")
    payload = codec.encode(_sample_frame())
    (tmp_path / "bsm.bin").write_bytes(payload)
    topic = f"{topic_prefix}/bsm"
    port = str(mosquitto.port)
    subprocess.run(
        ["mosquitto_pub", "-h", mosquitto.host, "-p", port, "-V", "5", "-t", topic, "-r", "-f", str(tmp_path / "bsm.bin")],
        check=True,
        timeout=10,
    )
    got = subprocess.run(
        ["mosquitto_sub", "-h", mosquitto.host, "-p", port, "-V", "5", "-t", topic, "-C", "1", "-N", "-W", "5"],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    assert got == payload
    assert 'sender_id: "veh-42"' in _protoc_decode(got)
    assert codec.decode(got) == codec.decode(payload)
