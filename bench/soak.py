"""Soak: does every process of a long real-time run level off in memory?

    python -m bench.soak                          # four_way, 600 s of real time (about 11 minutes)
    python -m bench.soak --duration 1200 --scenario hazard --every 2 --out soak-results

Starts the project's own Mosquitto and `v2x run SCENARIO --headless` against it, and samples the resident
memory (RSS, from /proc) of every process of the run every `--every` seconds: the broker, `v2x run` itself
(where the fleet runs), the roadside and the cloud processes. Printed per process: RSS at the start, half way
and the end; the slope of a least-squares line over the first half and over the last half (MB per minute)
and their ratio; and the verdict against issue #24's acceptance: the slope over the last half is under 5%
of the slope over the first half (a process that keeps what every passing vehicle left behind grows in a
straight line, and its two slopes are alike). The first half holds the ramp from an empty road to steady
traffic, so a process that levels off has a last slope near zero.

Writes `soak.csv` (seconds, process, pid, RSS MB) and `soak.png` (RSS against time, one line per process)
into `--out` (default: a new temporary folder), and the run's report `report.json`. Time 0 is SETTLE_S
after the tiers' processes appear: their imports and connections are not what is judged.

`--tracemalloc` has each tier process trace its Python allocations (V2X_TRACEMALLOC, v2x.net.options) and
write, when it ends, the allocation sites that grew most between a snapshot at half time and the end:
where the memory of a process that does not level off goes.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import apply_scheduling
from v2x.net.broker import MosquittoBroker
from v2x.net.options import TRACEMALLOC_ENV, add_scheduling_option

FLAT_SHARE = 0.05  # issue #24: the slope over the last half under 5% of the first half's
# [s] not measured after the tiers' processes appear: they import numpy and numba and connect (a tier grows by
# some 20 MB in its first seconds), and sim time 0 comes START_DELAY_S after launch; steady running is what is judged
SETTLE_S = 10.0
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb(pid: int) -> float | None:
    """A process's resident memory [MB] (/proc/PID/statm), None when it has gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> dict[int, list[str]]:
    """The processes whose parent is `pid`, with their command lines."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)
        if ppid == pid:
            out[int(d.name)] = argv
    return out


def tier_name(argv: list[str]) -> str:
    """What a child of `v2x run` is: "roadside", "cloud", "fleet i/n", or its command line."""
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        if module == "v2x" and "fleet" in argv:
            return f"fleet {argv[argv.index('--shard') + 1]}" if "--shard" in argv else "fleet"
        return module
    return " ".join(argv)[:40]


@dataclass
class Track:
    """One process's RSS samples: (seconds since the tiers started + SETTLE_S, MB)."""

    name: str
    pid: int
    t_s: list[float] = field(default_factory=list)
    mb: list[float] = field(default_factory=list)

    def at(self, t: float) -> float:
        """RSS at the sample nearest time t [MB]."""
        i = int(np.argmin(np.abs(np.array(self.t_s) - t)))
        return self.mb[i]

    def slope_mb_per_min(self, t0: float, t1: float) -> float:
        """Least-squares slope of RSS over [t0, t1] [MB/min] (NaN with fewer than 3 samples there)."""
        t, y = np.array(self.t_s), np.array(self.mb)
        sel = (t >= t0) & (t <= t1)
        if sel.sum() < 3:
            return float("nan")
        return float(np.polyfit(t[sel], y[sel], 1)[0] * 60.0)


def verdict(first: float, last: float) -> str:
    """Against the acceptance: the last half's slope under FLAT_SHARE of the first half's."""
    if np.isnan(first) or np.isnan(last):
        return "too few samples"
    if last <= 0.0:
        return "levels off (no growth in the last half)"
    if first <= 0.0:
        return "GROWS (only in the last half)"
    ratio = last / first
    return f"levels off ({ratio:.1%} < {FLAT_SHARE:.0%})" if ratio < FLAT_SHARE else f"DOES NOT level off ({ratio:.1%} >= {FLAT_SHARE:.0%})"


def soak(args: argparse.Namespace, out: Path) -> list[Track]:
    """Run the scenario in real time against a private Mosquitto, sampling every process's RSS."""
    env = dict(os.environ)
    if args.tracemalloc:
        env[TRACEMALLOC_ENV] = f"{out / 'tracemalloc'}:{args.duration / 2 + 5:g}"  # from half time (+ the tiers' start)
        (out / "tracemalloc").mkdir(parents=True, exist_ok=True)
    tracks: dict[int, Track] = {}
    with MosquittoBroker() as broker:
        assert broker.pid is not None
        cmd = [sys.executable, "-m", "v2x", "run", args.scenario, "--headless", "--duration", f"{args.duration:g}",
               "--broker", broker.url, "--report", str(out / "report.json"), *args.sched]
        print(f"soak: {' '.join(cmd[1:])}", flush=True)
        run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        tracks[broker.pid] = Track("mosquitto", broker.pid)
        tracks[run.pid] = Track("v2x run (fleet)", run.pid)
        t0: float | None = None
        next_print = 0.0
        while run.poll() is None:
            for pid, argv in children(run.pid).items():
                if pid not in tracks:
                    tracks[pid] = Track(tier_name(argv), pid)
            if t0 is None and len(tracks) >= 4:  # the broker, v2x run, the roadside and the cloud: the tiers started
                t0 = time.monotonic() + SETTLE_S
                print(f"  the tiers started; measuring from {SETTLE_S:g} s on", flush=True)
            if t0 is not None and time.monotonic() >= t0:
                now = time.monotonic() - t0
                for tr in tracks.values():
                    mb = rss_mb(tr.pid)
                    if mb is not None and now <= args.duration:
                        tr.t_s.append(now)
                        tr.mb.append(mb)
                if now >= next_print:
                    next_print = now + args.progress
                    print(f"  {now:5.0f} s  " + "  ".join(f"{tr.name} {tr.mb[-1]:.0f} MB" for tr in tracks.values() if tr.mb),
                          flush=True)
            time.sleep(args.every)
        _, err = run.communicate()
    if run.returncode != 0:
        print(f"soak: v2x run exited {run.returncode}:\n{err[-3000:]}", file=sys.stderr)
    return [tr for tr in tracks.values() if len(tr.t_s) >= 3]


def report(tracks: list[Track], duration_s: float, out: Path) -> None:
    """Print the table, write the CSV and the plot."""
    half = duration_s / 2
    print(f"\nRSS per process over {duration_s:g} s (MB; slopes MB/min, least squares over each half)")
    print(f"{'process':18} {'start':>7} {f'{half:g} s':>7} {'end':>7} {'slope 1st':>10} {'slope 2nd':>10} {'ratio':>8}  verdict")
    for tr in tracks:
        first, last = tr.slope_mb_per_min(0.0, half), tr.slope_mb_per_min(half, duration_s)
        ratio = last / first if first > 0 else float("nan")
        print(f"{tr.name:18} {tr.mb[0]:7.1f} {tr.at(half):7.1f} {tr.mb[-1]:7.1f} {first:10.3f} {last:10.3f} {ratio:8.1%}  "
              f"{verdict(first, last)}")
    with (out / "soak.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "process", "pid", "rss_mb"])
        for tr in tracks:
            w.writerows([round(t, 2), tr.name, tr.pid, round(mb, 2)] for t, mb in zip(tr.t_s, tr.mb, strict=True))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for tr in tracks:
        ax.plot(tr.t_s, tr.mb, label=tr.name)
    ax.axvline(half, color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel(f"seconds since the tiers started + {SETTLE_S:g} s")
    ax.set_ylabel("RSS [MB]")
    ax.set_title(f"RSS of every process, {duration_s:g} s real time")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=100)
    plt.close(fig)
    print(f"\nwrote {out / 'soak.csv'}, {out / 'soak.png'}, {out / 'report.json'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of real time to run (default 600)")
    p.add_argument("--scenario", default="four_way", help="a bundled scenario's name or a scenario file (default four_way)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between RSS samples (default 2)")
    p.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines (default 30)")
    p.add_argument("--out", type=Path, default=None, help="folder for soak.csv, soak.png and the report (default: a new temporary one)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="each tier traces its allocations and writes the sites that grew most in the last half (slower)")
    add_scheduling_option(p, "the run's processes and its broker")
    args = p.parse_args(argv)
    args.sched = apply_scheduling(args)  # the run gets the policy this process has, and its broker
    if args.duration < 60:
        p.error("--duration: at least 60 s (the slopes are over each half of the run)")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    tracks = soak(args, out)
    if not tracks:
        print("soak: no process was sampled", file=sys.stderr)
        return 1
    report(tracks, args.duration, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
