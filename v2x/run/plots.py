"""Pictures of a run (`v2x run --plots DIR`, `v2x plot r.json DIR`).

- latency_cdf.png: the share of messages delivered within x ms, one curve per hop (from the
  report's merged histograms, exact).
- latency_over_time.png: p50 and p99 per hop against sim time (from the report's coarse
  per-second histograms, within about 5%).
- time_space_<intersection>_<leg>.png: one per approach, from the fleet's trajectories
  (a run only: a report does not carry them). Each line is a vehicle; the distance is to the
  stop line (negative upstream), whatever lane it is in; the bar at 0 is the through
  movement's signal as the vehicles heard it in SPaT (grey: no SPaT); black squares are a
  stalled vehicle (a scenario hazard) in its lane.

Trajectories (`v2x.core.trajectories`) are sampled every `SAMPLE_S` of sim time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from v2x.core.metrics import Histogram, bucket_range
from v2x.core.traffic import Light
from v2x.core.trajectories import PAST_LINE_M, SAMPLE_S, Trajectories

HOP_ORDER = ["vehicle->rsu", "vehicle->cloud", "rsu->vehicle", "rsu->cloud", "cloud->rsu", "cloud->vehicle"]
LIGHT_COLOURS = {
    Light.GREEN: "#2ca02c", Light.PERMISSIVE: "#98df8a", Light.YELLOW: "#ffbf00", Light.RED: "#d62728",
    Light.UNKNOWN: "#bbbbbb", Light.NONE: "#bbbbbb",
}


CDF_STYLES = [("-", 2.6, ""), ("--", 2.0, "o"), (":", 2.2, "s"), ("-.", 1.6, "^"), ((0, (5, 1)), 1.4, "v"), ((0, (1, 1)), 1.2, "D")]


def write_plots(report: Mapping[str, Any], out: Path, traj: Trajectories | None = None) -> list[Path]:
    """Write the PNGs into `out` (created); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    title = f"{report.get('scenario', '?')} ({report.get('mode', '?')}, broker {report.get('broker', {}).get('kind', '?')})"
    # measured (real time: wall clock, through the broker) or modelled (fast mode: the link model, in sim time)
    basis = report.get("latency_basis", {}).get("label") or ("modelled: sim time" if report.get("mode") == "fast" else "measured: wall clock")
    latency_title = f"{title}\nlatency {basis}"
    written = [_latency_cdf(report, out / "latency_cdf.png", latency_title),
               _latency_over_time(report, out / "latency_over_time.png", latency_title)]
    if traj is not None:
        for k, (ix, leg) in enumerate(traj.approaches):
            name = traj.net.intersections[ix].spec.id
            written.append(_time_space(traj, k, out / f"time_space_{name}_{leg}.png", f"{title}: intersection {name}, {leg} approach"))
    return written


def _hops(table: Mapping[str, Any]) -> list[str]:
    return sorted(table, key=lambda h: (HOP_ORDER.index(h) if h in HOP_ORDER else len(HOP_ORDER), h))


def _latency_cdf(report: Mapping[str, Any], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    hists = report.get("latency_hist_us", {})
    for k, hop in enumerate(_hops(hists)):
        h = Histogram.from_json(hists[hop])
        if h.n == 0:
            continue
        idx = sorted(h.counts)
        x = np.array([min(bucket_range(i)[1], h.max) for i in idx], dtype=float) / 1e3
        y = np.cumsum([h.counts[i] for i in idx]) / h.n
        # hops with the same link model lie on top of each other: each its own dash, width and markers, so all show
        style = CDF_STYLES[k % len(CDF_STYLES)]
        ax.step(np.maximum(x, 1e-3), y, where="post", linestyle=style[0], linewidth=style[1], marker=style[2], markevery=(0.016 * k, 0.08),
                markersize=5, fillstyle="none", label=f"{hop} (n={h.n:,}, p50 {h.quantile_us(0.5) / 1e3:.2f} ms, p99 "
                f"{h.quantile_us(0.99) / 1e3:.2f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("latency, generation to receipt [ms] (log scale)")
    ax.set_ylabel("share of messages delivered")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"Latency CDF per hop: {title}", fontsize=10)
    if hists:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no latency measured", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _latency_over_time(report: Mapping[str, Any], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    series = report.get("latency_over_time", {})
    hops = _hops(series)
    fig, axes = plt.subplots(max(len(hops), 1), 1, figsize=(9, 1.9 * max(len(hops), 1) + 0.8), dpi=110, sharex=True, squeeze=False)
    for ax, hop in zip(axes[:, 0], hops, strict=False):
        rows = np.array(series[hop]["rows"], dtype=float).reshape(-1, 4)
        w = series[hop]["window_s"]
        ax.plot(rows[:, 0], rows[:, 2], lw=1.2, label="p50")
        ax.plot(rows[:, 0], rows[:, 3], lw=1.0, label="p99", alpha=0.8)
        ax.set_ylabel("ms")
        ax.set_title(f"{hop} (per {w:g} s window)", fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("sim time [s] (when the message was generated)")
    fig.suptitle(f"Latency over time: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _time_space(traj: Trajectories, k: int, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    t, pos, vid = traj.of(k)
    if len(t):
        cuts = np.flatnonzero(np.diff(vid) != 0) + 1
        lines = [np.column_stack((tt, pp)) for tt, pp in zip(np.split(t, cuts), np.split(pos, cuts), strict=True) if len(tt) > 1]
        ax.add_collection(LineCollection(lines, colors="#1f3a93", linewidths=0.6, alpha=0.8))
    st = np.array(traj.signal_t)
    if len(st):
        lights = np.array([row[k] for row in traj.signal])
        # the bar: one span per run of the same light
        edges = np.flatnonzero(np.diff(lights) != 0) + 1
        starts = np.concatenate(([0], edges))
        ends = np.concatenate((edges, [len(st)]))
        for a, b in zip(starts, ends, strict=True):
            t1 = st[b] if b < len(st) else st[-1] + SAMPLE_S
            ax.fill_between([st[a], t1], -2.5, 2.5, color=LIGHT_COLOURS[Light(int(lights[a]))], linewidth=0)
        ax.set_xlim(st[0], st[-1] + SAMPLE_S)
    obs = [(t0, p, lane) for t0, a, p, lane in traj.obstacles if a == k]
    for lane in sorted({lane for _, _, lane in obs}):
        ts = np.array([t0 for t0, _, ln in obs if ln == lane])
        ps = np.array([p for _, p, ln in obs if ln == lane])
        ax.scatter(ts, ps, s=4, color="black", marker="s", zorder=3)
        ax.annotate(f"stalled vehicle, lane {lane}", (ts[0], ps[0]), xytext=(4, 6), textcoords="offset points", fontsize=7)
    low = float(pos.min()) if len(pos) else -100.0
    ax.set_ylim(low - 5.0, PAST_LINE_M + 5.0)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlabel("sim time [s]")
    ax.set_ylabel("distance to the stop line [m] (negative: upstream)")
    ax.set_title(title, fontsize=10)
    handles: list[Artist] = [Line2D([0], [0], color="#1f3a93", lw=1, label="vehicle trajectory")]
    if obs:
        handles.append(Line2D([0], [0], color="black", lw=3, label="stalled vehicle"))
    for light, name in [(Light.GREEN, "green"), (Light.YELLOW, "yellow"), (Light.RED, "red"), (Light.UNKNOWN, "no SPaT")]:
        handles.append(Rectangle((0, 0), 1, 1, color=LIGHT_COLOURS[light], label=f"signal (heard): {name}"))
    ax.legend(handles=handles, fontsize=7, loc="lower left", ncol=3)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
