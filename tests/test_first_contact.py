"""What a new user sees first: a clean run's output, a summary that tells the truth, labelled latencies, one clear
line for every failure, and helpful refusals of bad input."""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from v2x.core import scenario
from v2x.core.errors import ScenarioError
from v2x.net.broker import EmbeddedBroker, MosquittoBroker, free_port
from v2x.net.options import OncePerKind
from v2x.net.security import mosquitto_hash
from v2x.net.transport import MqttTransport
from v2x.run.main import build_parser as build_run_parser
from v2x.run.report import Report
from v2x.run.results import Results, RunInfo, build_report, print_summary
from v2x.testing import until

TABLE = re.compile(r"^[┏┃┡│└]")  # a line of the summary's table (its title is checked apart)


def _v2x(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "v2x", *args], capture_output=True, text=True, timeout=timeout)


def test_a_clean_four_way_run_prints_the_progress_the_summary_and_the_report_path_only(
    mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    """Fast mode: the same 60 s of sim, messages and code paths as real time, in a few seconds of CI time (the
    real-time path's output is the same code: `print_summary` and the same progress bar)."""
    res = _v2x("run", "four_way", "--fast", "--duration", "60", "--headless", "--report", str(tmp_path / "r.json"),
               "--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    title = next((i for i, x in enumerate(lines) if x.strip().startswith("four_way: ")), None)
    assert title is not None, lines[:6]
    assert "60.0 of 60 s sim, fast" in " ".join(lines[title : title + 2])
    assert [x.split(":")[0] for x in lines[:title]][:2] == ["broker", "run id"]
    assert all(x.startswith("sim ") for x in lines[2:title]), lines[:title]  # the progress, on its own line(s)
    table = lines[next(i for i, x in enumerate(lines) if x.startswith("┏")) : -1]
    assert all(TABLE.match(x) for x in table), table
    assert lines[-1] == f"report: {tmp_path / 'r.json'}"
    assert "None" not in res.stderr
    assert "modelled" in res.stderr
    assert Report.load(tmp_path / "r.json")["latency_basis"]["kind"] == "modelled"


def _report(interrupted: bool) -> dict[str, object]:
    sc = scenario.load(scenario.resolve("four_way"))
    info = RunInfo(sc, 120.0, "mosquitto", "mqtt://u:secret@127.0.0.1:1883", "auto", True, [], None, 3.0, "abcd1234")
    return build_report(info, Results(mode="realtime", interrupted=interrupted))


def _printed(report: dict[str, object]) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=200), report)
    return out.getvalue()


def test_an_interrupted_run_says_so_and_how_far_it_got() -> None:
    r = _report(interrupted=True)
    assert r["duration_s"] == 0.0  # no fleet reported: no sim time ran
    assert r["duration_configured_s"] == 120.0
    text = _printed(r)
    assert text.startswith("INTERRUPTED at sim 0.0 s of 120 s")
    assert "0.0 of 120 s sim" in text


def test_the_summary_says_n_a_with_the_reason_never_none() -> None:
    r = _report(interrupted=False)
    r["vehicles"] = {"spawned": 3, "finished": 0, "in_network": 3}
    r["traffic"] = {"mean_delay_s": 0.0, "stops_per_vehicle": 0.0, "collisions": 0, "red_light_violations": None}
    r["latency_ms"] = {"vehicle->cloud": {"count": 3, "p50": 3.001, "p90": 3.5, "p99": 3.981, "p999": 4, "max": 4}}
    text = _printed(r)
    assert "None" not in text
    assert "n/a (no vehicle finished) / n/a (no vehicle finished)" in text
    assert "0 / n/a (not judged: no record of the lights at the crossings)" in text
    assert "3.00 / 3.98 / 4.00" in text  # one number format for every latency
    assert "measured: wall clock, through the broker" in text
    assert "fleet tick lag" in text


def test_a_latency_the_report_lacks_is_an_error_that_lists_what_it_has() -> None:
    report = Report(json.loads(json.dumps(_report(interrupted=False))))
    report.data["latency_ms_by_type"] = {"bsm": {"vehicle->cloud": {"count": 1, "p50": 1, "p90": 1, "p99": 1, "p999": 1, "max": 1}}}
    assert report.latency("vehicle->cloud", "BSM").count == 1  # message types are named in any case
    with pytest.raises(KeyError, match=r"message types measured: \['bsm'\]"):
        report.latency("vehicle->cloud", "spat")
    with pytest.raises(KeyError, match=r"hops measured for 'bsm': \['vehicle->cloud'\]"):
        report.latency("cloud->vehicle", "bsm")


@pytest.fixture(scope="module")
def not_brokers() -> Iterator[dict[str, int]]:
    """Ports that are not MQTT brokers: a web server's, and a silent one (it accepts TCP connections, never answers)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=web.serve_forever, name="web", daemon=True).start()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel accepts connections into the backlog; nobody reads them
        yield {"http": web.server_address[1], "silent": silent.getsockname()[1], "closed": free_port()}
    web.shutdown()


@pytest.fixture(scope="module")
def locked_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A Mosquitto that lets in user `alice` with password `right` only."""
    d = tmp_path_factory.mktemp("locked")
    (d / "passwd").write_text(f"alice:{mosquitto_hash('right')}\n")
    (d / "acl").write_text("user alice\ntopic readwrite #\n")
    with MosquittoBroker(secure=(d / "passwd", d / "acl")) as broker:
        yield broker


@pytest.mark.integration
@pytest.mark.parametrize(("case", "cause"), [
    ("http", "answered in HTTP, not MQTT"),
    ("silent", "accepts TCP connections but sent no CONNACK within 5 s"),
    ("closed", "connection refused: nothing listens on port"),
    ("password", "a wrong user name or password"),
    ("host", "unknown host 'no-such-host.invalid'"),
])
def test_a_broker_that_cannot_serve_the_run_is_one_line_naming_the_url_and_the_cause(
    not_brokers: dict[str, int], locked_broker: MosquittoBroker, case: str, cause: str,
) -> None:
    url = {
        "password": f"mqtt://alice:wrong@127.0.0.1:{locked_broker.port}", "host": "mqtt://no-such-host.invalid:1883",
    }.get(case) or f"mqtt://127.0.0.1:{not_brokers.get(case)}"
    res = _v2x("run", "four_way", "--fast", "--duration", "5", "--headless", "--broker", url, timeout=60)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) <= 3, res.stderr
    shown = url.replace(":wrong@", ":***@")  # the password is never printed
    assert f"v2x run: cannot use the broker at {shown}: " in lines[-1], lines
    assert cause in lines[-1]
    assert "wrong" not in res.stderr.replace("wrong user name", "")


@pytest.mark.integration
def test_a_password_is_never_printed_nor_saved(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> None:
    url = f"mqtt://alice:right@127.0.0.1:{mosquitto.port}"  # an anonymous Mosquitto lets any login in
    res = _v2x("run", "four_way", "--fast", "--duration", "2", "--headless", "--broker", url, "--report", str(tmp_path / "r.json"),
               "--root", f"{topic_prefix}/v2x/v1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "right@" not in res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["broker"]["url"] == url.replace(":right@", ":***@")


def test_library_log_lines_come_once_per_kind_per_sender_with_a_traceback_cut_to_one_line() -> None:
    once = OncePerKind()

    def record(sender: str | None, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
        r = logging.LogRecord("gmqtt", logging.WARNING, __file__, 1, msg, args, (type(exc), exc, None) if exc else None)
        if sender is not None:
            r.sender = sender
        return r

    first = record("veh-1", "[CONNACK] %s", "0x68", exc=struct.error("bad char in struct format"))
    assert once.filter(first)
    assert first.getMessage() == "veh-1: [CONNACK] 0x68 (error: bad char in struct format)"
    assert first.exc_info is None
    assert not once.filter(record("veh-1", "[CONNACK] %s", "0x69"))  # the same kind from the same sender
    assert once.filter(record("veh-2", "[CONNACK] %s", "0x68"))  # another sender
    assert once.filter(record(None, "[TRYING WRITE TO CLOSED SOCKET]"))
    assert not once.filter(record(None, "[TRYING WRITE TO CLOSED SOCKET]"))


@pytest.mark.parametrize("bad", ["-5", "0", "nan", "inf", "soon"])
def test_a_duration_that_is_not_a_positive_number_of_seconds_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_run_parser().parse_args(["four_way", "--duration", bad])
    assert stop.value.code == 2
    assert f"argument --duration: {bad!r}" in capsys.readouterr().err


def test_a_misspelt_scenario_gets_the_near_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "four_way_night.toml").write_text("")
    with pytest.raises(ScenarioError, match=r"did you mean 'four_way' or 'four_way_night\.toml'\?"):
        scenario.load(scenario.resolve("four_wya"))
    with pytest.raises(ScenarioError, match=r"did you mean 'corridor'\?"):
        scenario.load(scenario.resolve("corridr"))


@pytest.mark.integration
def test_a_failed_recording_leaves_no_file_behind(not_brokers: dict[str, int], tmp_path: Path) -> None:
    out = tmp_path / "run.mcap"
    res = _v2x("record", str(out), "--broker", f"mqtt://127.0.0.1:{not_brokers['http']}", "--duration", "5", timeout=60)
    assert res.returncode == 1
    assert "answered in HTTP" in res.stderr
    assert not out.exists()


@pytest.mark.integration
async def test_retained_messages_on_topics_never_subscribed_are_counted_and_set_aside(topic_prefix: str) -> None:
    """amqtt 0.12 as it comes sends a connecting client the retained messages of every filter any client subscribed
    to (the embedded broker runs it fixed, v2x.net.embedded); a client guards itself against such a broker."""

    class PlainAmqtt(EmbeddedBroker):
        def command(self, conf: Path) -> list[str]:
            script = "import sys; from amqtt.scripts.broker_script import main; sys.argv = ['amqtt', '-c', sys.argv[1]]; main()"
            return [sys.executable, "-c", script, str(conf)]

    with PlainAmqtt() as broker:
        async with MqttTransport(broker.url, "a") as a, MqttTransport(broker.url, "p") as p:
            await a.subscribe(f"{topic_prefix}/a/#")
            p.publish(f"{topic_prefix}/a/status", b"up", qos=1, retain=True)
            assert await p.drain(5.0)
            async with MqttTransport(broker.url, "b") as b:
                await b.subscribe(f"{topic_prefix}/b/#")
                await until(lambda: b.stats.not_subscribed > 0, 5.0)
                assert b.receive() == []
            await a.wait(5.0)
            assert [m.topic for m in a.receive()] == [f"{topic_prefix}/a/status"]  # its own subscription's: kept


@pytest.mark.integration
@pytest.mark.parametrize("tier", ["fleet", "roadside"])
def test_a_tier_on_its_own_says_in_one_line_that_the_port_is_not_a_broker(not_brokers: dict[str, int], tier: str) -> None:
    res = _v2x(tier, "four_way", "--duration", "3", "--broker", f"mqtt://127.0.0.1:{not_brokers['http']}", timeout=60)
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"cannot connect to mqtt://127.0.0.1:{not_brokers['http']}" in res.stderr
    assert "answered in HTTP, not MQTT" in res.stderr
