"""`v2x run` end to end in real time: every tier, a report, on Mosquitto and on the embedded broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from v2x.net.broker import MosquittoBroker

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")


def _run(tmp_path: Path, *extra: str) -> dict[str, object]:
    report = tmp_path / "r.json"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", SHORT, "--headless", "--duration", "15", "--report", str(report), *extra],
        capture_output=True, text=True, timeout=90,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def _check(r: dict[str, object]) -> None:
    vehicles, messages, traffic = r["vehicles"], r["messages"], r["traffic"]
    assert isinstance(vehicles, dict)
    assert isinstance(messages, dict)
    assert isinstance(traffic, dict)
    assert vehicles["spawned"] >= 5
    assert vehicles["finished"] >= 1
    bsm = messages["bsm"]
    assert bsm["sent"] > 100
    assert bsm["received_by"]["cloud"] == bsm["sent"]  # the cloud hears every vehicle's BSMs
    assert r["spat_coverage"]["approaching_without_spat"] == []  # type: ignore[index]
    assert messages["spat"]["received_by_vehicles_by_path"]["rsu"] > 0
    assert messages["spat"]["received_by_vehicles_by_path"]["cloud"] > 0
    assert messages["rsm"]["received_by"]["cloud"] == messages["rsm"]["sent"] > 0
    assert traffic["collisions"] == 0


def test_run_on_the_fixture_mosquitto_with_mqtt_311(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    r = _run(tmp_path, "--broker", mosquitto.url, "--mqtt", "3.1.1", "--root", f"{topic_prefix}/v2x/v1")
    assert r["broker"] == {"kind": "external", "url": mosquitto.url, "mqtt": "3.1.1"}
    assert r["broker_gaps"] == {"missing": {}, "cost": []}  # retained messages reach wildcards; 3.1.1 was asked for
    _check(r)


def test_run_with_shared_obu_connections(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    """#27 item 2 in real time: the OBUs on one connection pass the same end-to-end checks; a secured broker is refused."""
    r = _run(tmp_path, "--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1", "--obu-connections", "shared")
    _check(r)
    assert r["connection"]["obus"].startswith("shared")  # type: ignore[index]
    res = subprocess.run([sys.executable, "-m", "v2x", "run", SHORT, "--secure", "--obu-connections", "shared"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "cannot run on a secured broker" in res.stderr


@pytest.mark.integration
def test_run_on_the_embedded_broker(tmp_path: Path) -> None:
    r = _run(tmp_path, "--broker", "embedded")
    assert r["broker"]["kind"] == "amqtt (embedded)"  # type: ignore[index]
    _check(r)


@pytest.mark.integration
@pytest.mark.parametrize("bad", ["nope.toml", "no_such_bundled_name"])
def test_run_rejects_a_missing_scenario(bad: str) -> None:
    res = subprocess.run([sys.executable, "-m", "v2x", "run", bad], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "cannot read" in res.stderr
