"""`v2x sweep`: a grid of fast-mode runs, a CSV of their KPIs and a plot of each KPI against the swept setting.

    v2x sweep four_way --set links.cellular.latency_ms=0,50,100,200,500 --seeds 3
    v2x sweep four_way --set links.sidelink.latency_ms+links.cellular.latency_ms=0,250,500,1000 \\
        --set fleet.spat_countdown=false,true --duration 600 --seeds 3 --jobs 2

Each `--set` gives a setting and its values (comma-separated); settings joined by `+` take the
same value together (one axis of the grid). The grid is every combination, each run with
`--seeds N` seeds (the scenario's seed, +1, +2...). Every run is `v2x run --fast` in its own
process, on a broker started for the sweep (one per job, each run under its own topic root); its report
is kept in OUT/runs/. OUT/sweep.csv has one row per run: the traffic KPIs, each hop's latency
(p50 and p99, ms) and loss, and each application's warnings. OUT/sweep.png plots them against
the first axis (one line per combination of the others): the median across seeds, the range
as a band, each seed as a dot; latency p99 and loss one line per hop, warnings one per app.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from v2x.core import scenario
from v2x.core.errors import BrokerError, ScenarioError
from v2x.net.broker import EmbeddedBroker, MosquittoBroker, broker_for_run
from v2x.net.options import load, positive_seconds
from v2x.run.plots import HOP_ORDER

APPS = ("hlw", "rlvw", "fcw", "ebw", "evw")  # the applications whose warnings a report counts


def _at(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    """How to read a figure nested under `keys` in a report (None where any level is missing)."""
    def get(r: dict[str, Any]) -> float | None:
        v: Any = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return None if v is None else float(v)
    return get


def _hop(hop: str) -> str:
    return hop.replace("->", "_")

def _of_finished(r: dict[str, Any], key: str) -> float | None:
    """A figure over the vehicles that finished: none when none did (as the run's summary says n/a), not 0."""
    return r["traffic"].get(key) if r.get("vehicles", {}).get("finished") else None


# (column, title, how to read it from a report); None where the run has no such figure
KPIS: list[tuple[str, str, Callable[[dict[str, Any]], float | None]]] = [
    ("red_light_violations", "red-light violations", lambda r: r["traffic"].get("red_light_violations")),
    ("collisions", "collisions", lambda r: r["traffic"].get("collisions")),
    ("mean_delay_s", "mean delay [s]", lambda r: _of_finished(r, "mean_delay_s")),
    ("stops_per_vehicle", "stops per vehicle", lambda r: _of_finished(r, "stops_per_vehicle")),
    ("throughput_vph", "throughput [veh/h]", lambda r: r["traffic"].get("throughput_vph")),
    ("hazard_warning_first_ms", "hazard: first vehicle warned [ms]",
     lambda r: r.get("events", {}).get("hazard_warning_ms", {}).get("first")),
    ("hazard_lead_time_s_p50", "hazard warning lead time p50 [s]",
     lambda r: r.get("apps", {}).get("hlw", {}).get("lead_time_s_p50")),
    ("spat_rsu_vehicle_p50_ms", "SPaT rsu->vehicle p50 [ms]",
     lambda r: r["latency_ms_by_type"].get("spat", {}).get("rsu->vehicle", {}).get("p50")),
    ("spat_cloud_vehicle_p50_ms", "SPaT cloud->vehicle p50 [ms]",
     lambda r: r["latency_ms_by_type"].get("spat", {}).get("cloud->vehicle", {}).get("p50")),
    *((f"{_hop(h)}_{q}_ms", f"{h} {q} [ms]", _at("latency_ms", h, q)) for h in HOP_ORDER for q in ("p50", "p99")),
    *((f"{_hop(h)}_loss", f"{h} loss", _at("loss_by_hop", h, "loss")) for h in HOP_ORDER),
    *((f"{app}_warnings", f"{app.upper()} warnings", _at("apps", app, "warnings")) for app in APPS),
    # of the equipped vehicles that came to a hazard, the share warned before arriving, all told and by path (an RSI
    # reaches a vehicle only from the cloud over cellular: no RSU rebroadcast, no V2V relay exists to report); and
    # how many of each group came to it (the unequipped cannot be warned by V2X)
    ("hazard_coverage", "hazard warning coverage (equipped warned / equipped affected)", lambda r: _hazards(r, "coverage")),
    ("hazard_coverage_cloud", "hazard warning coverage by cloud", lambda r: _hazards(r, "coverage", "cloud")),
    ("hazard_reached_equipped", "hazard: equipped vehicles that came to it", lambda r: _hazards(r, "reached_equipped")),
    ("hazard_reached_unequipped", "hazard: unequipped vehicles that came to it", lambda r: _hazards(r, "reached_unequipped")),
    # the share of the true road users the cloud's picture holds: from BSMs alone, fused with RSM (v2x.run.picture)
    *((f"picture_{k}", f"cloud picture: {t}", _at("cloud_picture", "area", k)) for k, t in (("bsm_only", "BSM only"), ("fused", "fused"))),
    *((f"picture_{k}_in_coverage", f"cloud picture in sensor coverage: {t}", _at("cloud_picture", "in_sensor_coverage", k))
      for k, t in (("bsm_only", "BSM only"), ("fused", "fused"))),
    # fleet.penetration: how many vehicles had an OBU, and each group's delay and stops
    *((f"{g}_{k}", f"{g} {t}", _at("penetration", g, k)) for g in ("equipped", "unequipped")
      for k, t in (("vehicles", "vehicles"), ("mean_delay_s", "mean delay [s]"), ("stops_per_vehicle", "stops per vehicle"))),
]


def _hazards(r: dict[str, Any], key: str, path: str | None = None) -> float | None:
    """Over every hazard of a run: a count (`key`: reached_equipped, reached_unequipped...), or (key "coverage") the
    share of the equipped vehicles that came to a hazard while it was active that were warned before arriving, all
    told or by one path (None: no equipped vehicle came to one)."""
    per = r.get("events", {}).get("hazard_warning_ms", {}).get("per_hazard", [])
    if not per or any("reached_equipped" not in h for h in per):
        return None
    if key != "coverage":
        return float(sum(h[key] for h in per))
    equipped = sum(h["reached_equipped"] for h in per)
    warned = sum(h["reached_equipped_warned"] if path is None else (h["warned_by_path"].get(path) or 0) for h in per)
    return warned / equipped if equipped else None


def _single(*columns: str) -> list[tuple[str, list[tuple[str | None, str]]]]:
    """A panel of one line for each of these KPI columns, titled as in KPIS."""
    titles = {c: t for c, t, _ in KPIS}
    return [(titles[c], [(None, c)]) for c in columns]


# the panels of sweep.png: a title and its lines, each (label, column); one line per hop or per app where several share one
PANELS: list[tuple[str, list[tuple[str | None, str]]]] = [
    ("latency p99 per hop [ms]", [(h, f"{_hop(h)}_p99_ms") for h in HOP_ORDER]),
    ("loss per hop", [(h, f"{_hop(h)}_loss") for h in HOP_ORDER]),
    *_single("red_light_violations", "hazard_lead_time_s_p50", "mean_delay_s", "stops_per_vehicle"),
    ("warnings per application", [(app.upper(), f"{app}_warnings") for app in APPS]),
    *_single("collisions"),
    ("hazard warning coverage (equipped warned / equipped affected)",
     [("all paths", "hazard_coverage"), ("cloud (cellular)", "hazard_coverage_cloud")]),
    ("cloud picture completeness (share of true road users held)",
     [("BSM only", "picture_bsm_only"), ("fused with RSM", "picture_fused"),
      ("BSM only, in sensor coverage", "picture_bsm_only_in_coverage"), ("fused, in sensor coverage", "picture_fused_in_coverage")]),
]


@dataclass(frozen=True)
class Axis:
    keys: tuple[str, ...]  # settings that take the same value
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join(self.keys)


def parse_axis(text: str) -> Axis:
    """KEY[+KEY...]=V1,V2,... -> Axis; ValueError naming what is wrong."""
    keys, sep, values = text.partition("=")
    if not sep or not keys.strip():
        raise ValueError(f"--set {text!r}: expected KEY=V1,V2,... (keys joined by + move together)")
    vals = tuple(v.strip() for v in values.split(","))
    if any(not v for v in vals):
        raise ValueError(f"--set {text!r}: an empty value in the list")
    return Axis(tuple(k.strip() for k in keys.split("+")), vals)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="v2x sweep", description=__doc__.split("\n\n")[0],
        epilog="Example: v2x sweep four_way --set links.cellular.latency_ms=0,50,100,200,500 --seeds 3",
    )
    p.add_argument("scenario", help="scenario file, or the name of a bundled one")
    p.add_argument("--set", dest="axes", action="append", default=[], metavar="KEY[+KEY]=V1,V2,...",
                   help="a setting and the values to sweep (repeatable: the grid is every combination)")
    p.add_argument("--seeds", type=int, default=1, help="runs per grid point, seeds from the scenario's (default 1)")
    p.add_argument("--duration", type=positive_seconds, default=None, help="sim seconds per run (default: the scenario's)")
    p.add_argument("--out", type=Path, default=Path("sweep"), help="folder for the CSV, plot and reports (default ./sweep)")
    p.add_argument("--broker", default=None, help="broker URL (default: start Mosquitto for the sweep, else amqtt)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1; 2 suits a 2-core machine)")
    p.add_argument("--no-impairment", dest="impair", action="store_false", help="every run without link impairment")
    p.add_argument("--replot", action="store_true", help="only redraw OUT/sweep.png from OUT/sweep.csv (no runs)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        axes = [parse_axis(a) for a in args.axes]
    except ValueError as e:
        print(f"v2x sweep: {e}", file=sys.stderr)
        return 2
    if not axes:
        print("v2x sweep: nothing to sweep: give at least one --set KEY=V1,V2,...", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.jobs < 1:
        print("v2x sweep: --seeds and --jobs must be at least 1", file=sys.stderr)
        return 2
    base = load(args.scenario)
    if base is None:
        return 2
    if args.replot:
        return _replot(args, axes, base.name)
    grid = list(itertools.product(*(a.values for a in axes)))
    # every point must make a valid scenario: find out now, not after an hour of runs
    for point in grid:
        try:
            scenario.override(base, _settings(axes, point))
        except ScenarioError as e:
            print(e, file=sys.stderr)
            return 2
    runs = [(point, base.seed + k) for point in grid for k in range(args.seeds)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runs").mkdir(exist_ok=True)
    duration = args.duration if args.duration is not None else base.duration_s
    print(f"sweep: {len(grid)} point(s) x {args.seeds} seed(s) = {len(runs)} fast runs of {duration:g} s sim; "
          f"out {args.out}", flush=True)

    # one broker per job: runs sharing a broker would share client ids, and MQTT lets only one
    # connection hold a client id (the broker drops the other)
    brokers: list[MosquittoBroker] = []
    urls: queue.Queue[str] = queue.Queue()
    if args.broker is not None and args.broker != "embedded":
        if args.jobs > 1:
            print("v2x sweep: --jobs > 1 needs a broker per job: leave out --broker", file=sys.stderr)
            return 2
        urls.put(args.broker)
    else:
        try:
            for _ in range(args.jobs):
                broker = EmbeddedBroker() if args.broker == "embedded" else broker_for_run()
                brokers.append(broker)
                broker.start()
                urls.put(broker.url)
        except BrokerError as e:
            print(f"v2x sweep: {e}", file=sys.stderr)
            for b in brokers:
                b.close()
            return 1
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    done = [0]
    t0 = time.monotonic()

    def one(i: int) -> None:
        point, seed = runs[i]
        report = args.out / "runs" / f"run{i:03d}.json"
        url = urls.get()
        cmd = [
            sys.executable, "-m", "v2x", "run", args.scenario, "--fast", "--headless", "--duration", f"{duration:g}",
            "--seed", str(seed), "--broker", url, "--root", f"sweep{i}/v2x/v1", "--report", str(report),
            *(["--no-impairment"] if not args.impair else []), *(x for s in _settings(axes, point) for x in ("--set", s)),
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            urls.put(url)
        row: dict[str, Any] = {"run": i, "seed": seed, **{a.name: v for a, v in zip(axes, point, strict=True)}}
        if res.returncode != 0:
            row["error"] = (res.stderr.strip().splitlines() or ["?"])[-1][:300]
        else:
            r = json.loads(report.read_text())
            row |= {col: get(r) for col, _, get in KPIS} | {"wall_s": r["wall_s"]}
        rows[i] = row
        done[0] += 1
        what = ", ".join(f"{a.name}={v}" for a, v in zip(axes, point, strict=True))
        result = row.get("error") or f"violations {row.get('red_light_violations')}, delay {row.get('mean_delay_s')} s"
        print(f"[{done[0]}/{len(runs)}] {what} seed {seed}: {result} ({time.monotonic() - t0:.0f} s)", flush=True)

    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, range(len(runs))))
    finally:
        for b in brokers:
            b.close()
    got = [r for r in rows if r is not None]
    columns = ["run", "seed", *(a.name for a in axes), *(c for c, _, _ in KPIS), "wall_s", "error"]
    with (args.out / "sweep.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in got:
            w.writerow({c: r.get(c, "") for c in columns})
    print(f"csv: {args.out / 'sweep.csv'}")
    plot = plot_sweep(got, axes, args.out / "sweep.png", f"{base.name}: {len(grid)} points x {args.seeds} seeds, {duration:g} s each")
    print(f"plot: {plot}")
    failed = [r for r in got if "error" in r]
    if failed:
        print(f"v2x sweep: {len(failed)} run(s) failed; see the error column", file=sys.stderr)
        return 1
    return 0


def _replot(args: argparse.Namespace, axes: list[Axis], name: str) -> int:
    path = args.out / "sweep.csv"
    try:
        rows: list[dict[str, Any]] = [
            {k: (None if v == "" else v) for k, v in r.items()} for r in csv.DictReader(path.open())
        ]
    except OSError as e:
        print(f"v2x sweep --replot: cannot read {path}: {e}", file=sys.stderr)
        return 2
    missing = [a.name for a in axes if rows and a.name not in rows[0]]
    if missing:
        print(f"v2x sweep --replot: {path} has no column {missing[0]!r} (give the sweep's own --set)", file=sys.stderr)
        return 2
    for r in rows:
        if r.get("error") is None:
            r.pop("error", None)
    seeds = len({r["seed"] for r in rows})
    points = len({tuple(r[a.name] for a in axes) for r in rows})
    duration = f"{args.duration:g}" if args.duration is not None else "?"
    print(f"plot: {plot_sweep(rows, axes, args.out / 'sweep.png', f'{name}: {points} points x {seeds} seeds, {duration} s each')}")
    return 0


def _settings(axes: list[Axis], point: tuple[str, ...]) -> list[str]:
    return [f"{k}={v}" for a, v in zip(axes, point, strict=True) for k in a.keys]


def _number(v: str) -> float | str:
    try:
        return float(v)
    except ValueError:
        return v


def plot_sweep(rows: list[dict[str, Any]], axes: list[Axis], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]

    def measured(col: str) -> bool:
        return any(r.get(col) not in (None, "") for r in ok)

    panels = [(t, [(lab, c) for lab, c in lines if measured(c)]) for t, lines in PANELS]
    panels = [(t, lines) for t, lines in panels if lines]
    x_axis = axes[0]
    fixed = [a for a in axes[1:] if len(a.values) == 1]  # said once in the title, not in every legend
    others = [a for a in axes[1:] if len(a.values) > 1]
    xs = list(x_axis.values)
    numeric = all(isinstance(_number(v), float) for v in xs)
    xpos = {v: (float(v) if numeric else float(i)) for i, v in enumerate(xs)}
    ncol = 2
    nrow = max((len(panels) + ncol - 1) // ncol, 1)
    fig, axs = plt.subplots(nrow, ncol, figsize=(11, 3.3 * nrow + 0.8), dpi=110, squeeze=False)
    groups = sorted({tuple(r[a.name] for a in others) for r in ok}) or [()]
    dashes = ["-", "--", ":", "-."]
    for ax, (panel, lines) in zip(axs.flat, panels, strict=False):
        seen: list[float] = []
        for k, g in enumerate(groups):
            for line_label, col in lines:
                label = ", ".join([*([line_label] if line_label else []), *(f"{a.name}={v}" for a, v in zip(others, g, strict=True))]) or None
                mx, med, lo, hi, dots_x, dots_y = [], [], [], [], [], []
                for v in xs:
                    vals = [float(r[col]) for r in ok if r[x_axis.name] == v and tuple(r[a.name] for a in others) == g
                            and r.get(col) not in (None, "")]
                    if not vals:
                        continue
                    mx.append(xpos[v])
                    med.append(float(np.median(vals)))
                    lo.append(min(vals))
                    hi.append(max(vals))
                    dots_x += [xpos[v]] * len(vals)
                    dots_y += vals
                if not mx:
                    continue
                seen += dots_y
                line = ax.plot(mx, med, marker="o", lw=1.5, linestyle=dashes[k % len(dashes)], label=label, zorder=2)[0]
                ax.fill_between(mx, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
                ax.scatter(dots_x, dots_y, s=14, color=line.get_color(), edgecolors="white", linewidths=0.5, zorder=3)
        ax.set_ylim(*axis_limits(seen))
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(x_axis.name, fontsize=8)
        if not numeric:
            ax.set_xticks(list(xpos.values()), xs)
        ax.grid(True, alpha=0.3)
        if others or len(lines) > 1:
            ax.legend(fontsize=7)
    for ax in list(axs.flat)[len(panels):]:
        ax.axis("off")
    held = "; ".join(f"{a.name}={a.values[0]}" for a in fixed)
    fig.suptitle(f"{title}{' (' + held + ')' if held else ''}\nline: median across seeds; band: min to max; dots: each seed",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def axis_limits(values: list[float]) -> tuple[float, float]:
    """Y limits that fit the data from zero (or from below it), with a margin: a measure that stays flat shows as a
    flat line at its level, not as noise magnified to fill the panel."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    bottom = min(lo, 0.0)
    span = max(hi - bottom, abs(hi), 1e-9)
    return bottom - (0.05 * span if bottom < 0 else 0.0), hi + 0.1 * span if hi > bottom else bottom + 1.0

