"""The broker's gaps, said at the start of a run and costed at its end (v2x.run.gaps): on RabbitMQ's MQTT plugin, which
sends no retained message to a wildcard subscription and speaks only MQTT 3.1.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from v2x.net.broker import end_process, free_port, mqtt_ping
from v2x.run.gaps import Abilities, costs, missing

RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's rabbitmq-server, which scripts/test.sh installs
EPMD = Path("/usr/bin/epmd")


def test_what_a_broker_lacks_is_said_unless_the_run_asked_for_it() -> None:
    assert missing(Abilities(), "auto") == {}
    assert set(missing(Abilities(retained_to_wildcard=False, mqtt5=False), "auto")) == {"retained_to_wildcard", "mqtt5"}
    assert missing(Abilities(mqtt5=False), "auto")["mqtt5"].startswith("no MQTT 5")
    assert missing(Abilities(mqtt5=False), "3.1.1") == {}  # 3.1.1 asked for: not a gap


def test_what_a_gap_cost_is_read_from_the_report() -> None:
    report = {
        "wall_s": 60.0, "spat_coverage": {"vehicles_approaching": 10, "vehicles_with_map": 0},
        "events": {"hazard_warning_ms": {"per_hazard": [{"reached": 4, "reached_unwarned": 3}]}},
        "lockstep": {"lost": 11, "waited_out_s": 55.0},
    }
    assert costs(report, gaps=True) == [
        "10 of 10 approaching vehicles never got a MAP", "3 of 4 vehicles reached a hazard unwarned",
        "11 expected deliveries never came, and waiting them out took 55.0 s of the 60.0 s wall",
    ]
    # no gap found: missing MAPs and warnings may be the links' doing; lost deliveries are the broker's
    assert costs(report, gaps=False) == ["11 expected deliveries never came, and waiting them out took 55.0 s of the 60.0 s wall"]


@pytest.fixture
def rabbitmq() -> Iterator[str]:
    """A private RabbitMQ with its MQTT plugin on a free loopback port: its own node name, data directory and Erlang
    port mapper (on a free port too, as a child of this test, stopped by PID: none is left running)."""
    if not (RABBITMQ.exists() and EPMD.exists()):
        pytest.skip("RabbitMQ is not installed (Debian: apt-get install rabbitmq-server; scripts/test.sh tries to)")
    with tempfile.TemporaryDirectory(prefix="v2x-rabbitmq-") as d:
        base, mqtt_port, epmd_port = Path(d), free_port(), free_port()
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{free_port()}\nmqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
        )
        (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        env = {
            **os.environ, "HOME": d, "ERL_EPMD_PORT": str(epmd_port), "RABBITMQ_NODENAME": f"v2x{os.getpid()}@localhost",
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_DIST_PORT": str(free_port()), "RABBITMQ_PID_FILE": str(base / "pid"),
        }
        with open(base / "out.log", "wb") as out:
            epmd = subprocess.Popen([str(EPMD), "-port", str(epmd_port)], stdout=out, stderr=subprocess.STDOUT, env=env)
            server = subprocess.Popen([str(RABBITMQ)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 60.0
            while not mqtt_ping("127.0.0.1", mqtt_port, 1.0, version=4):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"RabbitMQ did not start: {(base / 'out.log').read_text()[-3000:]}")
                time.sleep(0.5)
            yield f"mqtt://127.0.0.1:{mqtt_port}"
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)  # the script and the Erlang VM it started, one session
            end_process(server, wait_s=15.0)
            end_process(epmd)


@pytest.mark.integration
def test_a_run_on_rabbitmq_says_retained_messages_miss_wildcards_and_what_that_cost(rabbitmq: str, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", "hazard", "--fast", "--duration", "20", "--headless", "--broker", rabbitmq,
         "--report", str(report)],
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stderr.splitlines()
    assert any(x.startswith("broker gap: retained messages are not delivered to wildcard subscriptions") for x in lines), res.stderr
    assert any(x.startswith("broker gap: no MQTT 5") for x in lines), res.stderr
    (cost,) = [x for x in lines if x.startswith("broker gaps cost:")]
    assert "approaching vehicles never got a MAP" in cost
    r = json.loads(report.read_text())
    assert r["messages"]["map"]["received"] == 0  # what the warning is about
    # the lockstep barrier expects no retained message through a wildcard there: no round waits for one that never
    # comes (before: four_way's 20 s took 57.7 s, 55.6 of them waiting out 5 s timeouts; now 4.1 s)
    assert r["lockstep"]["waited_out_s"] == 0, r["lockstep"]
