"""`v2x sweep`: a grid of fast runs on one broker, a CSV row per run, a plot of the KPIs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from v2x.net.broker import MosquittoBroker
from v2x.run.sweep import Axis, axis_limits, parse_axis

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")


def test_a_sweep_writes_a_row_per_run_and_a_plot(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "sweep", SHORT, "--set", "links.sidelink.latency_ms+links.cellular.latency_ms=0,200",
         "--seeds", "2", "--duration", "20", "--out", str(out), "--broker", mosquitto.url],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    axis = "links.sidelink.latency_ms+links.cellular.latency_ms"
    assert [(r[axis], r["seed"]) for r in rows] == [("0", "1"), ("0", "2"), ("200", "1"), ("200", "2")]
    assert all(r["error"] == "" and r["collisions"] == "0" and r["mean_delay_s"] != "" for r in rows)
    # the swept setting reached the runs: SPaT's measured latency follows it (sim time, fast mode)
    p50 = {r[axis]: float(r["spat_rsu_vehicle_p50_ms"]) for r in rows}
    assert p50["0"] < 5.0
    assert 195.0 < p50["200"] < 210.0
    # each hop's p99 and loss, and each app's warnings, are columns: the cellular hops' p99 follows the setting
    p99 = {r[axis]: float(r["vehicle_cloud_p99_ms"]) for r in rows}
    assert p99["0"] < 10.0 < 200.0 < p99["200"]
    assert all(0.0 <= float(r["vehicle_rsu_loss"]) < 1.0 and r["hlw_warnings"] != "" for r in rows)
    assert len(list((out / "runs").glob("*.json"))) == 4
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # --replot redraws the plot from the CSV alone
    (out / "sweep.png").unlink()
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "sweep", SHORT, "--set", f"{axis}=0,200", "--out", str(out), "--replot"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_sweep_axes_and_their_errors(tmp_path: Path) -> None:
    assert parse_axis("a.b+c.d=0, 50,100") == Axis(("a.b", "c.d"), ("0", "50", "100"))
    with pytest.raises(ValueError, match="expected KEY=V1,V2"):
        parse_axis("links.cellular.latency_ms")
    with pytest.raises(ValueError, match="empty value"):
        parse_axis("x=1,,2")
    # a value the scenario refuses is found before any run, naming the setting
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "sweep", SHORT, "--set", "links.cellular.latency_ms=0,-5", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2
    assert "links.cellular.latency_ms" in res.stderr
    assert not (tmp_path / "sweep.csv").exists()


def test_a_panel_s_axis_fits_its_data_from_zero() -> None:
    """A measure that stays flat shows as a flat line at its level (before: four flat measures drawn on +-0.04 axes,
    as if they varied); one below zero keeps room under it."""
    assert axis_limits([0.12, 0.12, 0.12]) == pytest.approx((0.0, 0.132))
    assert axis_limits([0.0, 0.0]) == (0.0, 1.0)
    assert axis_limits([]) == (0.0, 1.1)
    lo, hi = axis_limits([-2.0, 3.0])
    assert lo < -2.0
    assert hi > 3.0
