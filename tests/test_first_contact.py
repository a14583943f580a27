"""What a new user sees first: a clean run's output, a summary that tells the truth, labelled latencies, one clear
line for every failure, and helpful refusals of bad input."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from v2x.core import scenario
from v2x.net.broker import MosquittoBroker
from v2x.run.report import Report
from v2x.run.results import Results, RunInfo, build_report, print_summary

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
    assert "0 / n/a (no record of the lights crossed on)" in text
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
