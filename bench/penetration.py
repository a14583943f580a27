"""The KPIs against the penetration rate (issue #26): GLOSA's stop reduction, hazard warning coverage, the cloud's picture.

    python -m bench.penetration                 # 6 penetrations x 3 seeds, 180 s each (about 15 min on 2 cores)
    python -m bench.penetration --quick         # 0, 0.5, 1 x 1 seed, 120 s each (about 2 min)

Two `v2x sweep`s (fast mode, `--jobs` runs at once):

  - four_way, `fleet.penetration` x `fleet.glosa=false,true`: stops and delay over ALL vehicles, GLOSA's stop
    reduction (stops per vehicle with GLOSA off minus on, on the same seed), RLVW and FCW warnings (GLOSA on);
  - hazard with a radar on its RSU (`SENSOR`) and the car stalling at 10 s, `fleet.penetration`: of the equipped vehicles that came to the
    stalled car while it stood, the share warned (HLW, by RSI) before arriving, and how many equipped and unequipped
    vehicles came to it; the cloud picture's completeness (the share of the true road users it holds, from BSMs
    alone and fused with the radar's RSM, over the area and within the radar's coverage).

Each figure is the median across seeds, with its range (min-max). The acceptance lines are checked and printed:
(a) GLOSA's stop reduction grows with penetration across 0, 0.25, 0.5 and 1 (median); (b) at every penetration above
0, every seed warned at least 95% of the equipped vehicles that came to the hazard. Exit status 1 if one fails.
The plot goes to --plot (default docs/img/penetration.png), the sweeps' CSVs and reports to --out.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from v2x.core.scenario import resolve

PENETRATIONS = ("0", "0.1", "0.25", "0.5", "0.75", "1")
GROWS_ACROSS = ("0", "0.25", "0.5", "1")  # acceptance (a)
COVERAGE_AT_LEAST = 0.95  # acceptance (b)

# one radar on the RSU: 200 m all round covers most of each 250 m approach
SENSOR = """
[[sensors]]
rsu = "RSU-J1"
type = "radar"
"""

# the car stalls at 10 s rather than 60 s: more of each run has vehicles coming to it
HAZARD_FROM, HAZARD_TO = "start_s = 60.0", "start_s = 10.0"

Row = dict[str, str]


def sweep(scenario: Path, axes: list[str], seeds: int, duration: float, jobs: int, out: Path, again: bool) -> list[Row]:
    """Run `v2x sweep` (again: only read its CSV from an earlier run), its progress on stderr; its CSV's rows (an
    error in any run stops the bench)."""
    cmd = [sys.executable, "-m", "v2x", "sweep", str(scenario), *(x for a in axes for x in ("--set", a)),
           "--seeds", str(seeds), "--duration", f"{duration:g}", "--jobs", str(jobs), "--out", str(out)]
    done = subprocess.run(["true"] if again else cmd, stdout=sys.stderr)
    rows = list(csv.DictReader((out / "sweep.csv").open())) if (out / "sweep.csv").exists() else []
    failed = [r for r in rows if r.get("error")]
    if done.returncode != 0 or failed or not rows:
        raise SystemExit(f"{' '.join(cmd[1:])} failed: {failed[0]['error'] if failed else f'exit {done.returncode}'}")
    return rows


def _num(v: str | None) -> float | None:
    return None if v in (None, "") else float(v)


def col(rows: list[Row], c: str) -> Stat:
    return Stat([_num(r[c]) for r in rows])


class Stat:
    """The median of a figure across seeds, and its min and max; None where no seed measured it."""

    def __init__(self, values: list[float | None]) -> None:
        got = [v for v in values if v is not None]
        self.values = got
        self.median: float | None = statistics.median(got) if got else None
        self.lo: float | None = min(got) if got else None
        self.hi: float | None = max(got) if got else None

    def text(self, fmt: str) -> str:
        if self.median is None:
            return "-"
        return f"{self.median:{fmt}} ({self.lo:{fmt}}-{self.hi:{fmt}})" if len(self.values) > 1 else f"{self.median:{fmt}}"


def table(four_way: list[Row], hazard: list[Row], pens: tuple[str, ...]) -> dict[str, dict[str, Stat]]:
    """Per penetration: each figure across seeds."""
    out: dict[str, dict[str, Stat]] = {}
    for p in pens:
        fw = [r for r in four_way if r["fleet.penetration"] == p]
        off = {r["seed"]: r for r in fw if r["fleet.glosa"] == "false"}
        on = {r["seed"]: r for r in fw if r["fleet.glosa"] == "true"}
        hz = [r for r in hazard if r["fleet.penetration"] == p]

        pairs = [(_num(off[s]["stops_per_vehicle"]), _num(on[s]["stops_per_vehicle"])) for s in sorted(off.keys() & on.keys())]

        def paired(f: Callable[[float, float], float], pairs: list[tuple[float | None, float | None]] = pairs) -> Stat:
            return Stat([f(a, b) for a, b in pairs if a is not None and b is not None])

        rows_on = list(on.values())
        out[p] = {
            "stops_off": col(list(off.values()), "stops_per_vehicle"), "stops_on": col(rows_on, "stops_per_vehicle"),
            "reduction": paired(lambda a, b: a - b), "relative": paired(lambda a, b: (a - b) / a if a else 0.0),
            "delay_off": col(list(off.values()), "mean_delay_s"), "delay_on": col(rows_on, "mean_delay_s"),
            "rlvw": col(rows_on, "rlvw_warnings"), "fcw": col(rows_on, "fcw_warnings"),
            "picture_bsm": col(hz, "picture_bsm_only"), "picture_fused": col(hz, "picture_fused"),
            "cov_bsm": col(hz, "picture_bsm_only_in_coverage"), "cov_fused": col(hz, "picture_fused_in_coverage"),
            "hazard_coverage": col(hz, "hazard_coverage"), "hazard_cloud": col(hz, "hazard_coverage_cloud"),
            "came_equipped": col(hz, "hazard_reached_equipped"), "came_unequipped": col(hz, "hazard_reached_unequipped"),
        }
    return out


COLUMNS = [  # (heading, figure, format)
    ("stops/veh GLOSA off", "stops_off", ".3f"), ("stops/veh GLOSA on", "stops_on", ".3f"),
    ("GLOSA stop reduction", "reduction", ".3f"), ("relative", "relative", ".1%"),
    ("delay off [s]", "delay_off", ".1f"), ("delay on [s]", "delay_on", ".1f"),
    ("RLVW", "rlvw", ".0f"), ("FCW", "fcw", ".0f"),
    ("picture BSM only", "picture_bsm", ".3f"), ("picture fused", "picture_fused", ".3f"),
    ("in coverage: BSM only", "cov_bsm", ".3f"), ("in coverage: fused", "cov_fused", ".3f"),
    ("hazard coverage", "hazard_coverage", ".3f"), ("of which by cloud", "hazard_cloud", ".3f"),
    ("came to hazard: equipped", "came_equipped", ".0f"), ("unequipped", "came_unequipped", ".0f"),
]


def markdown(t: dict[str, dict[str, Stat]]) -> str:
    lines = ["| `fleet.penetration` | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {p} | " + " | ".join(t[p][k].text(f) for _, k, f in COLUMNS) + " |" for p in t]
    return "\n".join(lines)


def acceptance(t: dict[str, dict[str, Stat]]) -> list[tuple[bool, str]]:
    """(holds, what) for acceptance lines (a) and (b), on the penetrations this run has."""
    checks: list[tuple[bool, str]] = []
    grow = [p for p in GROWS_ACROSS if p in t]
    med = [t[p]["reduction"].median for p in grow]
    if len(grow) >= 2 and all(m is not None for m in med):
        ok = all(b is not None and a is not None and b > a for a, b in itertools.pairwise(med))
        checks.append((ok, "(a) GLOSA's stop reduction grows with penetration across "
                       + ", ".join(f"{p}: {t[p]['reduction'].text('.3f')}" for p in grow)))
    for p in t:
        if float(p) <= 0:
            continue
        cov = t[p]["hazard_coverage"]
        ok = cov.lo is not None and cov.lo >= COVERAGE_AT_LEAST
        came = t[p]["came_equipped"].values
        checks.append((ok, f"(b) penetration {p}: hazard warning coverage of the equipped >= {COVERAGE_AT_LEAST:.0%} in every "
                       f"seed: {cov.text('.3f')} ({len(cov.values)} of {len(came)} seeds had equipped vehicles come to it, "
                       f"{sum(came):.0f} in all)"))
    return checks


def plot(t: dict[str, dict[str, Stat]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(p) for p in t]
    panels: list[tuple[str, list[tuple[str | None, str]]]] = [
        ("stops per vehicle (all vehicles)", [("GLOSA off", "stops_off"), ("GLOSA on", "stops_on")]),
        ("GLOSA's stop reduction (off - on, same seed)", [(None, "reduction")]),
        ("mean delay [s] (all vehicles)", [("GLOSA off", "delay_off"), ("GLOSA on", "delay_on")]),
        ("hazard warning coverage of the equipped (hazard)", [("all paths", "hazard_coverage"), ("cloud (cellular)", "hazard_cloud")]),
        ("RLVW and FCW warnings (four_way, GLOSA on)", [("RLVW", "rlvw"), ("FCW", "fcw")]),
        ("cloud picture (hazard): share of true road users held", [
            ("BSM only", "picture_bsm"), ("fused with RSM", "picture_fused"),
            ("BSM only, in radar coverage", "cov_bsm"), ("fused, in radar coverage", "cov_fused")]),
    ]
    fig, axs = plt.subplots(3, 2, figsize=(11, 10), dpi=100)
    for ax, (name, lines) in zip(axs.flat, panels, strict=True):
        for label, key in lines:
            st = [t[p][key] for p in t]
            pts = [(x, s) for x, s in zip(xs, st, strict=True) if s.median is not None]
            if not pts:
                continue
            line = ax.plot([x for x, _ in pts], [s.median for _, s in pts], marker="o", label=label)[0]
            ax.fill_between([x for x, _ in pts], [s.lo for _, s in pts], [s.hi for _, s in pts], color=line.get_color(), alpha=0.2)
        if "share" in name or "coverage" in name:
            ax.set_ylim(-0.03, 1.05)  # a share: its whole range, so that 1.0 reads as 1.0
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("fleet.penetration", fontsize=8)
        ax.grid(True, alpha=0.3)
        if any(lab for lab, _ in lines):
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}\nline: median across seeds; band: min to max", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.penetration", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="penetration 0, 0.5, 1, one seed, 120 s each")
    p.add_argument("--seeds", type=int, default=None, help="seeds per point (default 3; --quick 1)")
    p.add_argument("--duration", type=float, default=None, help="sim seconds per run (default 180; --quick 120)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--out", type=Path, default=None, help="folder for the sweeps (default: a temporary one)")
    p.add_argument("--again", action="store_true", help="no runs: the table and plot again from the sweeps in --out")
    p.add_argument("--plot", type=Path, default=Path("docs/img/penetration.png"), help="the plot (default docs/img/penetration.png)")
    args = p.parse_args(argv)
    pens = ("0", "0.5", "1") if args.quick else PENETRATIONS
    seeds = args.seeds or (1 if args.quick else 3)
    duration = args.duration or (120.0 if args.quick else 180.0)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-penetration-"))
    out.mkdir(parents=True, exist_ok=True)
    hazard_radar = out / "hazard_radar.toml"
    text = resolve("hazard").read_text()
    if HAZARD_FROM not in text:
        raise SystemExit(f"{resolve('hazard')}: no {HAZARD_FROM!r} to move the stalled car's start")
    hazard_radar.write_text(text.replace(HAZARD_FROM, HAZARD_TO) + SENSOR)
    axis = "fleet.penetration=" + ",".join(pens)
    print(f"penetration {', '.join(pens)} x {seeds} seed(s), {duration:g} s each, fast mode, {args.jobs} job(s); out {out}",
          flush=True)
    four_way = sweep(resolve("four_way"), [axis, "fleet.glosa=false,true"], seeds, duration, args.jobs, out / "four_way", args.again)
    hazard = sweep(hazard_radar, [axis], seeds, duration, args.jobs, out / "hazard", args.again)
    t = table(four_way, hazard, pens)
    spread = "median (min-max) of " if seeds > 1 else ""
    print(f"\nfour_way (stops, delay, RLVW, FCW) and hazard with a radar on RSU-J1 (hazard coverage, cloud picture), "
          f"{duration:g} s each, fast mode; {spread}{seeds} seed(s)\n")
    print(markdown(t))
    print("\nHazard warnings (RSI) reach a vehicle only from the cloud over cellular: no RSU rebroadcasts RSI on the "
          "sidelink and no vehicle relays it over V2V, so those paths are not simulated (no column).")
    checks = acceptance(t)
    for ok, what in checks:
        print(f"{'holds' if ok else 'FAILS'}: {what}")
    plot(t, args.plot, f"four_way (stops, delay, RLVW, FCW); hazard with a radar (coverage, picture): {duration:g} s, {seeds} seed(s)")
    print(f"plot: {args.plot}")
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
