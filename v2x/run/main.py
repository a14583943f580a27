"""`v2x run SCENARIO`: every tier of a scenario at once, and a report.

Real-time mode (default): the RSUs and the cloud run as their own processes (`python -m
roadside`, `python -m cloud`), the fleet runs here; all share one UTC epoch, so their sim
times agree. Fast mode (--fast): every tier runs here, each client with its own connection,
in lockstep (v2x.fast); deterministic for a given scenario and seed.
Without --broker a private broker is started: Mosquitto when it is installed, else the
embedded amqtt, and the output and the report say which. Ctrl-C stops every tier cleanly
and still writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.text import Text

from v2x.core import scenario
from v2x.core.errors import BrokerError
from v2x.core.jsonview import add_up
from v2x.core.metrics import Counts, Histogram, Series, merge_json, series_after, series_table
from v2x.core.network import Network
from v2x.core.topics import DEFAULT_ROOT, Topics
from v2x.core.traffic import load_kernels
from v2x.core.trajectories import Trajectories
from v2x.net.broker import EmbeddedBroker, MosquittoBroker, broker_for_run, find_mosquitto
from v2x.net.impair import Impairment
from v2x.net.options import add_credentials_option, add_scenario_options, credentials, load
from v2x.net.security import Credentials, write_config
from v2x.net.signing import CA
from v2x.net.station import Clock
from v2x.net.transport import merge_spans
from v2x.run.fast import FastRun
from v2x.run.plots import write_plots
from v2x.vehicle.cli import merge_summaries, summary
from v2x.vehicle.fleet import Fleet
from v2x.watch.viz import display_available

MAX_WINDOWS = 600  # latency over time: at most this many points per hop in the report
START_DELAY_S = 3.0  # [s] between launching the tiers and sim time 0, for them to start (each imports numba) and connect


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="v2x run",
        description="Run a scenario: vehicles, RSUs and the cloud exchanging V2X messages through an MQTT broker.",
    )
    p.add_argument("scenario", help="scenario file, or the name of a bundled one (e.g. four_way)")
    p.add_argument(
        "--broker", default=None,
        help="broker URL, or 'embedded' for the built-in amqtt (default: start Mosquitto if installed, else amqtt)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--realtime", action="store_true", help="pace every tier on the wall clock (default)")
    mode.add_argument(
        "--fast", action="store_true",
        help="every tier in this process, stepping in lockstep through the broker as fast as it carries the "
        "messages; deterministic for a given seed",
    )
    p.add_argument("--duration", type=float, default=None, help="sim seconds to run (default: the scenario's)")
    p.add_argument(
        "--headless", action="store_true",
        help="no window (default: open the visualiser when a display is available; it stays open after the run "
        "until closed)",
    )
    p.add_argument(
        "--snapshot", type=Path, default=None, metavar="PATH.png",
        help="write the visualiser's final frame as a PNG (works headless: rendered offscreen)",
    )
    p.add_argument(
        "--record", type=Path, default=None, metavar="PATH.mcap",
        help="record every message of the run to MCAP (protobuf schemas; `v2x replay` plays it, Foxglove opens it)",
    )
    p.add_argument("--report", type=Path, default=None, help="write the run's report as JSON here")
    p.add_argument(
        "--plots", type=Path, default=None, metavar="DIR",
        help="write PNGs here: latency CDF per hop, latency over time, a time-space diagram per approach",
    )
    p.add_argument("--mqtt", choices=["auto", "5", "3.1.1"], default="auto", help="MQTT version of the fleet's clients")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    p.add_argument(
        "--secure", action="store_true",
        help="start Mosquitto locked (as `v2x broker-config` writes it): every station logs in as itself and may "
        "publish only its own topics",
    )
    p.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="real time: run the fleet as N processes (`v2x fleet --shard`), by area when the scenario has at least "
        "N independent sites (see --copies), else by vehicle; default 1 (the fleet in this process)",
    )
    p.add_argument(
        "--clouds", type=int, default=1, metavar="N",
        help="real time: run the cloud as N instances (`v2x cloud --instance I/N --share v2x-cloud`): each owns "
        "whole sites (needs at least N, see --copies); the SPaT relay goes through an MQTT 5 shared "
        "subscription; default 1",
    )
    p.add_argument(
        "--warmup", type=float, default=None, metavar="S",
        help="also report the steady state from sim second S on (latency per hop; real time: the fleet's tick lag "
        "and vehicles present), leaving out the network filling up",
    )
    add_credentials_option(p)
    p.add_argument(
        "--sign", action="store_true",
        help="sign every message (ECDSA P-256, a pseudonym certificate per station from a CA made for the run); "
        "receivers verify and reject forged, replayed, stale or unsigned messages",
    )
    add_scenario_options(p)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    loaded = load(args.scenario, args.set, args.seed, args.copies)
    if loaded is None:
        return 2
    sc = loaded
    duration = args.duration if args.duration is not None else sc.duration_s
    if (args.workers > 1 or args.clouds > 1) and args.fast:
        console.print("v2x run: --workers and --clouds run tiers as processes in real time; fast mode runs every tier in "
                      "this process (leave out --fast, or the two options)", style="red")
        return 2
    net = Network(sc)
    sites = len(net.components)
    args.shard_by = "area" if sites >= args.workers else "vehicle"  # how --workers splits the fleet
    if args.clouds > sites or args.workers < 1 or args.clouds < 1:
        console.print(f"v2x run: --clouds {args.clouds} --workers {args.workers}: {sc.name} has {sites} independent site(s); "
                      "each cloud instance needs at least one (use --copies), and both counts must be at least 1", style="red")
        return 2
    # compile the core's loops here, once, if numba's cache is empty (the first run after install): real-time
    # tiers each compiling at once, on the clock, would start late
    t0 = time.perf_counter()
    load_kernels()
    if time.perf_counter() - t0 > 2.0:
        console.print(f"v2x run: compiled the traffic core in {time.perf_counter() - t0:.0f} s (first run after install; cached now)")

    broker: MosquittoBroker | None = None
    url = args.broker
    kind = "external"
    args.creds = credentials(args, "v2x run")
    if args.secure:
        if url is not None or find_mosquitto() is None:
            console.print("v2x run: --secure starts its own locked Mosquitto (it must be installed, and --broker "
                          "not given); to use your own secured broker, give --broker and --credentials", style="red")
            return 2
        secure_dir = Path(tempfile.mkdtemp(prefix="v2x-secure-"))
        args.creds = Credentials.new()
        paths = write_config(sc, secure_dir, args.root, 0, args.creds, duration)
        args.credentials = paths["credentials.json"]
        broker = MosquittoBroker(secure=(paths["passwd"], paths["acl"]))
        kind = "mosquitto (secured: a login per station, ACLs)"
    if broker is not None or url is None or url == "embedded":
        if broker is None:
            broker = EmbeddedBroker() if url == "embedded" else broker_for_run()
        try:
            broker.start()
        except BrokerError as e:
            console.print(f"v2x run: {e}", style="red")
            return 1
        url = broker.url
        kind = kind if args.secure else broker.kind
    console.print(f"broker: {kind} at {url}")
    if isinstance(broker, EmbeddedBroker):
        console.print(
            "note: the embedded amqtt broker adds tens of milliseconds of latency; install Mosquitto "
            "(apt-get install mosquitto) for figures worth reporting",
            style="yellow",
        )
    interrupted = False
    t0 = time.monotonic()
    watchers = Watchers(url, args.root, f"{kind} at {url}", args)
    try:
        watchers.start()
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            progress = _progress(live, duration)
            if args.fast:
                parts = _fast(sc, url, args, duration, progress)
            else:
                parts = _realtime(sc, url, args, duration, progress)
    except KeyboardInterrupt:
        interrupted = True
        console.print("interrupted: stopping every tier and writing the report")
        parts = _PARTS.pop() if _PARTS else {}
    except BrokerError as e:
        console.print(f"v2x run: {e}", style="red")
        return 1
    finally:
        watched = watchers.run_ended()  # before the broker goes: they take in the last messages
        if broker is not None:
            broker.close()
        if args.secure:
            shutil.rmtree(secure_dir, ignore_errors=True)  # the run's logins die with its broker
    report = _report(sc, args, kind, url, duration, parts, interrupted, time.monotonic() - t0)
    report.update(watched)
    _print_summary(console, report)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {args.report}")
    if args.plots is not None:
        written = write_plots(report, args.plots, parts.get("trajectories"))
        console.print(f"plots: {len(written)} PNGs in {args.plots}")
    if "recording" in watched:
        rec = watched["recording"]
        console.print(f"recording: {rec.get('path')} ({rec.get('messages', 0)} messages)")
    if args.snapshot is not None and "visualiser" in watched:
        console.print(f"snapshot: {args.snapshot}")
    watchers.wait_window(console)
    return 130 if interrupted else 0


class Watchers:
    """The visualiser and the recorder: plain subscribers in their own processes, subscribed before the tiers start."""

    READY_S = 30.0  # [s] for a watcher to connect and subscribe

    def __init__(self, url: str, root: str, broker_label: str, args: argparse.Namespace) -> None:
        self.commands: dict[str, list[str]] = {}
        base = [sys.executable, "-m", "v2x"]
        login = [] if args.credentials is None else ["--credentials", str(args.credentials)]
        if args.record is not None:
            self.commands["recording"] = [*base, "record", str(args.record), "--broker", url, "--root", root, *login]
        self.window = not args.headless and display_available()
        if self.window or args.snapshot is not None:
            self.commands["visualiser"] = [
                *base, "viz", "--broker", url, "--root", root, "--broker-label", broker_label, *login,
                *([] if args.snapshot is None else ["--snapshot", str(args.snapshot)]),
                *([] if self.window else ["--headless"]),
            ]
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        for name, cmd in self.commands.items():
            self.procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], self.READY_S)
            line = proc.stdout.readline() if ready else ""
            if '"ready"' not in line:
                self.run_ended()
                raise BrokerError(f"the {name} process did not start (exit code {proc.poll()}): {line.strip()[:300]}")

    def run_ended(self) -> dict[str, Any]:
        """Tell them the run is over (the recorder closes its file, the visualiser writes its snapshot); their summaries."""
        out: dict[str, Any] = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1 if name == "visualiser" else signal.SIGINT)
            if name == "visualiser" and self.window:
                continue  # it stays open; its summary is not needed
            try:
                text, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                text, _ = proc.communicate()
            summary = next((json.loads(x) for x in text.splitlines() if '"summary"' in x), None)
            if summary is None:
                print(f"v2x run: the {name} process ended with {proc.returncode} and no summary", file=sys.stderr)
            else:
                summary.pop("event", None)
                out[name] = summary
        return out

    def wait_window(self, console: Console) -> None:
        proc = self.procs.get("visualiser")
        if proc is not None and self.window and proc.poll() is None:
            console.print("the visualiser shows the run's last state: close its window to exit")
            try:
                proc.wait()
            except KeyboardInterrupt:
                proc.terminate()


Parts = dict[str, Any]  # what each tier reported: fleet, cloud, rsus (and lockstep in fast mode)
_PARTS: list[Parts] = []  # the parts of a run cut short by Ctrl-C


def _impairment(sc: scenario.Scenario, args: argparse.Namespace) -> Impairment | None:
    return Impairment(sc.links, sc.seed) if args.impair else None


def _progress(live: Live, duration: float) -> Callable[[Fleet], None]:
    last = [time.monotonic(), 0]

    def progress(f: Fleet) -> None:
        now = time.monotonic()
        sent = sum(f.counters.sent.values()) + sum(f.counters.received.values())
        rate = (sent - last[1]) / max(now - last[0], 1e-6)
        last[0], last[1] = now, sent
        live.update(Text(f"sim {f.traffic.t:7.1f} / {duration:g} s   vehicles {f.traffic.n:4d}   "
                         f"finished {f.traffic.stats.finished:5d}   fleet msgs/s {rate:8.0f}"))

    return progress


def _fast(sc: scenario.Scenario, url: str, args: argparse.Namespace, duration: float, progress: Callable[[Fleet], None]) -> Parts:
    run = FastRun(sc, url, args.root, version=args.mqtt, impairment=_impairment(sc, args), credentials=args.creds,
                  ca=CA() if args.sign else None)
    if args.plots is not None:
        run.fleet.trajectories = Trajectories(run.fleet.net)

    def parts() -> Parts:
        return {
            "mode": "fast",
            "trajectories": run.fleet.trajectories,
            "fleet": summary(run.fleet),
            "cloud": run.cloud.summary(),
            "rsus": [r.summary() for r in run.rsus],
            "cloud_events": run.cloud.event_log,
            "lockstep": dataclasses.asdict(run.hub.stats),
        }

    try:
        asyncio.run(run.run(duration, progress))
    except KeyboardInterrupt:
        _PARTS.append(parts())
        raise
    return parts()


def _realtime(sc: scenario.Scenario, url: str, args: argparse.Namespace, duration: float, progress: Callable[[Fleet], None]) -> Parts:
    # the tiers run exactly this scenario (--set and --seed applied): hand it over as a file
    with tempfile.NamedTemporaryFile("w", prefix=f"v2x-{sc.name}-", suffix=".toml", delete=False) as f:
        f.write(scenario.dumps(sc))
    scenario_path = Path(f.name)
    try:
        return _realtime_tiers(sc, scenario_path, url, args, duration, progress)
    finally:
        scenario_path.unlink(missing_ok=True)
        scenario_path.with_suffix(".ca.pem").unlink(missing_ok=True)


def _realtime_tiers(
    sc: scenario.Scenario, scenario_path: Path, url: str, args: argparse.Namespace, duration: float,
    progress: Callable[[Fleet], None],
) -> Parts:
    epoch = time.time() + START_DELAY_S
    common = ["--broker", url, "--epoch", f"{epoch:.3f}", "--root", args.root, *([] if args.impair else ["--no-impairment"]),
              *([] if args.credentials is None else ["--credentials", str(args.credentials)])]
    ca = CA() if args.sign else None
    if ca is not None:  # one CA for the run: the tiers get its key, as enrolment would give each its pseudonyms
        ca.save(scenario_path.with_suffix(".ca.pem"))
        common += ["--signing-ca", str(scenario_path.with_suffix(".ca.pem"))]
    # the RSUs outlive the fleet by a second, the cloud outlives the RSUs (to see them stop)
    tiers = {
        "roadside": subprocess.Popen(
            [sys.executable, "-m", "roadside", str(scenario_path), *common, "--duration", f"{duration + 1.0:g}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ),
    }
    n = args.clouds
    for i in range(n):  # several instances: each owns whole sites, and they share the SPaT relay ($share)
        tiers["cloud" if n == 1 else f"cloud {i}/{n}"] = subprocess.Popen(
            [sys.executable, "-m", "cloud", str(scenario_path), *common, "--duration", f"{duration + 2.5:g}",
             *([] if n == 1 else ["--instance", f"{i}/{n}", "--share", "v2x-cloud"])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    if args.workers > 1:
        return {**_fleet_workers(scenario_path, common, tiers, args, duration, epoch), "epoch_utc_s": epoch}
    fleet = Fleet(sc, url, Topics(args.root), Clock(epoch), version=args.mqtt, impairment=_impairment(sc, args), credentials=args.creds)
    if ca is not None:
        fleet.sign_with(ca)
    if args.plots is not None:
        fleet.trajectories = Trajectories(fleet.net)

    def parts(outputs: dict[str, str]) -> Parts:
        return {**_tier_parts(outputs), "trajectories": fleet.trajectories, "fleet": summary(fleet)}

    try:
        asyncio.run(fleet.run(duration, progress))
    except KeyboardInterrupt:
        _PARTS.append(parts(_stop(tiers)))
        raise
    return {**parts(_stop(tiers)), "epoch_utc_s": epoch}


def _fleet_workers(
    scenario_path: Path, common: list[str], tiers: dict[str, subprocess.Popen[str]], args: argparse.Namespace,
    duration: float, epoch: float,
) -> Parts:
    """The fleet as `args.workers` processes; their summaries merged (`merge_summaries`), their measurements kept apart."""
    n, by = args.workers, args.shard_by
    workers = {
        f"fleet {i}/{n}": subprocess.Popen(
            [sys.executable, "-m", "v2x", "fleet", str(scenario_path), *common, "--duration", f"{duration:g}",
             "--shard", f"{i}/{n}", "--by", by, "--mqtt", args.mqtt],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(n)
    }
    print(f"fleet: {n} processes, sharded by {by}; they report at the end (about {epoch + duration - time.time():.0f} s "
          "from now)", file=sys.stderr)
    try:
        outputs = _stop(workers, until=epoch + duration + 30.0)  # they end at the run's end
    except KeyboardInterrupt:
        _PARTS.append(_tier_parts(_stop({**workers, **tiers})))
        raise
    return _tier_parts({**outputs, **_stop(tiers)})


def _tier_parts(outputs: dict[str, str]) -> Parts:
    """What the tiers' processes printed (JSON lines): the RSUs', the cloud's and any fleet workers' summaries."""
    def lines(name: str) -> list[dict[str, Any]]:
        out = []
        for x in outputs.get(name, "").splitlines():
            try:
                out.append(json.loads(x))
            except json.JSONDecodeError:
                print(f"v2x run: the {name} tier printed a line that is not JSON: {x[:200]!r}", file=sys.stderr)
        return out

    fleets = [e for name in outputs if name.startswith("fleet ") for e in lines(name) if e.get("event") == "summary"]
    cloud = [e for name in outputs if name.startswith("cloud") for e in lines(name)]
    clouds = [e for e in cloud if e.get("event") == "summary"]
    return {
        "mode": "realtime",
        "trajectories": None,
        "fleet": merge_summaries(fleets) if fleets else {},
        "fleets": fleets,
        "cloud": add_up(clouds, skip=("measurements",)) if len(clouds) > 1 else next(iter(clouds), {}),
        "clouds": clouds,
        "rsus": [e for e in lines("roadside") if e.get("event") == "summary"],
        "cloud_events": [e for e in cloud if e.get("event") != "summary"],
    }


def _stop(tiers: dict[str, subprocess.Popen[str]], until: float | None = None) -> dict[str, str]:
    """Let each tier end on its own (a moment after the fleet, or by `until` on the wall clock), else ask it
    (SIGINT); collect what it printed.

    Output is read while waiting: a summary larger than the pipe's buffer must not block its writer.
    """
    outputs = {}
    for name, proc in tiers.items():
        try:
            out, err = proc.communicate(timeout=8.0 if until is None else max(until - time.time(), 8.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        if proc.returncode not in (0, 130, -signal.SIGINT):
            print(f"v2x run: the {name} tier exited with {proc.returncode}:\n{(err or '')[-2000:]}", file=sys.stderr)
        outputs[name] = out or ""
    return outputs


def _sum(counters: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(total)


def _report(
    sc: scenario.Scenario, args: argparse.Namespace, kind: str, url: str, duration: float, parts: Parts,
    interrupted: bool, wall_s: float,
) -> dict[str, Any]:
    fs = parts.get("fleet", {})
    cloud = parts.get("cloud", {})
    rsus = parts.get("rsus", [])
    fleet_rx = fs.get("messages", {}).get("received", {})
    fleet_rx_by_type = _sum([{k.split("/")[0]: v} for k, v in fleet_rx.items()])
    sent = _sum([fs.get("messages", {}).get("sent", {}), cloud.get("sent", {}), *(r.get("sent", {}) for r in rsus)])
    by_receiver = {"vehicles": fleet_rx_by_type, "cloud": cloud.get("received", {}), "rsus": _sum([r.get("received", {}) for r in rsus])}
    latency, counts, series = merge_json(
        p.get("measurements", {}) for p in [*(parts.get("fleets") or [fs]), *(parts.get("clouds") or [cloud]), *rsus]
    )
    by_type_counts: dict[str, Counts] = {}
    by_hop_counts: dict[str, Counts] = {}
    for (t, hop), c in counts.items():
        by_type_counts.setdefault(t, Counts()).add(c)
        by_hop_counts.setdefault(hop, Counts()).add(c)
    messages: dict[str, Any] = {}
    for t in sorted(set(sent) | {k for c in by_receiver.values() for k in c}):
        measured = by_type_counts.get(t, Counts())
        messages[t] = {
            "sent": sent.get(t, 0),
            "received": sum(c.get(t, 0) for c in by_receiver.values()),
            "lost": measured.lost,
            "duplicates": measured.duplicates,
            "received_by": {who: c[t] for who, c in by_receiver.items() if c.get(t)},
        }
    window = max(math.ceil(duration / MAX_WINDOWS), 1)
    by_hop: dict[str, Histogram] = {}
    by_type: dict[str, dict[str, Any]] = {}
    for (t, hop), h in sorted(latency.items()):
        by_hop.setdefault(hop, Histogram()).merge(h)
        by_type.setdefault(t, {})[hop] = h.summary_ms()
    if "spat" in messages:
        messages["spat"]["received_by_vehicles_by_path"] = {
            "rsu": fleet_rx.get("spat/rsu", 0), "cloud": fleet_rx.get("spat/cloud", 0)
        }
        messages["spat"]["relayed_by_cloud"] = cloud.get("relayed_spat", 0)
    report: dict[str, Any] = {
        "scenario": sc.name,
        "mode": parts.get("mode", "fast" if args.fast else "realtime"),
        "seed": sc.seed,
        "duration_s": duration,
        "wall_s": round(wall_s, 1),
        "epoch_utc_s": parts.get("epoch_utc_s"),  # real time: the UTC time [s] of sim second 0 (every tier's)
        "interrupted": interrupted,
        "broker": {"kind": kind, "url": url, "mqtt": args.mqtt},
        "impairment": dataclasses.asdict(sc.links) if args.impair else None,
        "settings": args.set,
        "messages": messages,
        "latency_ms": {hop: h.summary_ms() for hop, h in sorted(by_hop.items())},
        "latency_ms_by_type": by_type,
        # for plots: each hop's merged histogram (bucket index -> count, as in v2x.metrics), and p50/p99 over time
        "latency_hist_us": {hop: h.to_json() for hop, h in sorted(by_hop.items())},
        "latency_over_time": {
            hop: {"window_s": window, "columns": ["t_s", "count", "p50_ms", "p99_ms"],
                  "rows": series_table(per, window)}
            for hop, per in sorted(series.items())
        },
        "fleet_peak_rss_mb": fs.get("peak_rss_mb"),  # the fleet's process (or processes, added up)
        # real time, per sim second: [second, most a step started late (ms), most vehicles present, steps, late steps]
        "fleet_tick": fs.get("tick", []),
        "steady": None if args.warmup is None else _steady(args.warmup, series, fs.get("tick", [])),
        "loss_by_hop": {
            hop: {**vars(c), "loss": round(c.lost / max(c.received + c.lost, 1), 4)} for hop, c in sorted(by_hop_counts.items())
        },
        "vehicles": fs.get("vehicles", {}),
        "traffic": fs.get("traffic", {}),
        "events": {
            "hazard_warning_ms": fs.get("hazard_warning_ms", {"first": None, "last": None, "per_hazard": []}),
            "plan_apply_ms": _plan_latency([p for r in rsus for p in r.get("plans", [])]),
            "detected_hazards": cloud.get("detected_hazards", []),  # raised by the cloud from BSMs, source "detection"
        },
        "apps": fs.get("apps", {}),
        "app_events": fs.get("app_events", {}),
        # emergency vehicles' travel times, their priority requests, and what each RSU did with them
        "emergency": {
            **fs.get("emergency", {"vehicles": [], "still_driving": [], "crossings": [], "priority_events": []}),
            "priority_policy": sc.control.priority,
            "rsu_log": [e for r in rsus for e in r.get("priority", [])],
        },
        "spat_coverage": fs.get("spat", {}),
        "cloud": {
            "vehicles_seen": cloud.get("vehicles_seen", 0),
            "max_queue_by_approach": cloud.get("max_queue_by_approach", {}),
            "events": parts.get("cloud_events", []),
        },
        "bad_input": {"fleet": fs.get("bad_input", {}), "cloud": cloud.get("bad_input", {}), "rsus": _sum([r.get("bad_input", {}) for r in rsus])},
        "dropped": {"fleet": fs.get("dropped", {})},
        "connection": _connection(fs, cloud, rsus),
        "misbehaviour": _misbehaviour(fs.get("attackers", {}), cloud.get("misbehaviour", {})),
        # messages the impaired links lost (also in the sequence-number loss), or still carried at the end
        "link_drops": {"fleet": fs.get("link_drops", {}), "cloud": cloud.get("link_drops", {}), "rsus": [r.get("link_drops", {}) for r in rsus]},
    }
    if "lockstep" in parts:
        report["lockstep"] = parts["lockstep"]
    return report


MIN_BSMS_JUDGED = 10  # a sender the cloud heard fewer BSMs from is not scored


def _steady(from_s: float, series: Series, tick: list[list[float]]) -> dict[str, Any]:
    """The run from sim second `from_s` on: latency per hop; the fleet's tick (real time) and vehicles present."""
    rows = [r for r in tick if r[0] >= from_s]
    steps = sum(r[3] for r in rows)
    return {
        "from_s": from_s,
        "latency_ms": {hop: series_after(per, from_s) for hop, per in sorted(series.items())},
        "tick": {
            "seconds": len(rows),
            "steps": steps,
            # steps that started a whole step (or more) behind the wall clock (with several fleet processes, a
            # step of any): the fleet holds its tick while these are at most 1% (its p99 lag is under one step)
            "late_steps": sum(r[4] for r in rows),
            "late_share": round(sum(r[4] for r in rows) / steps, 4) if steps else None,
            "lag_ms_max": max((r[1] for r in rows), default=None),
            "vehicles_mean": round(sum(r[2] for r in rows) / len(rows), 1) if rows else None,
            "vehicles_max": max((r[2] for r in rows), default=None),
        },
    }


def _misbehaviour(attackers: dict[str, str], detector: dict[str, Any]) -> dict[str, Any]:
    """The cloud's misbehaviour detection scored against the fleet's truth: detection rate per attack,
    false-positive rate over honest vehicles (senders heard at least MIN_BSMS_JUDGED times)."""
    if not detector:
        return {}
    flagged = detector.get("flagged", {})
    judged = {s for s, n in detector.get("senders", {}).items() if n >= MIN_BSMS_JUDGED}
    by_attack: dict[str, dict[str, Any]] = {}
    for sid, kind in attackers.items():
        if sid not in judged or (kind == "sybil" and not sid.endswith("-g")):
            continue  # a Sybil host tells the truth about itself: its ghost is the lie
        e = by_attack.setdefault(kind, {"attackers": 0, "detected": 0})
        e["attackers"] += 1
        e["detected"] += sid in flagged
    for e in by_attack.values():
        e["rate"] = round(e["detected"] / e["attackers"], 4)
    honest = sorted(s for s in judged if s not in attackers)
    false = [s for s in honest if s in flagged]
    return {
        "by_attack": dict(sorted(by_attack.items())),
        "honest": {"vehicles": len(honest), "false_positives": len(false), "rate": round(len(false) / max(len(honest), 1), 4),
                   "listed": {s: flagged[s] for s in false[:20]}},
    }


def _connection(fleet: dict[str, Any], cloud: dict[str, Any], rsus: list[dict[str, Any]]) -> dict[str, Any]:
    """Each tier's lost connections, and the broker outages: when any tier was down (merged, sim seconds)."""
    tiers = {"fleet": fleet.get("connection", {}), "cloud": cloud.get("connection", {})}
    tiers.update({str(r.get("rsu", k)): r.get("connection", {}) for k, r in enumerate(rsus)})
    return {"tiers": tiers, "outages_s": merge_spans(span for t in tiers.values() for span in t.get("down_s", []))}


def _plan_latency(plans: list[dict[str, Any]]) -> dict[str, Any]:
    """From a plan being issued by the cloud to its RSU applying it at a phase boundary [ms]."""
    done = [round((p["applied_s"] - p["issued_s"]) * 1000.0, 1) for p in plans if p.get("applied_s") is not None]
    return {
        "issued": len(plans), "applied": len(done),
        "p50": float(np.median(done)) if done else None, "max": max(done) if done else None, "plans": plans,
    }


def _print_summary(console: Console, r: dict[str, Any]) -> None:
    from rich.table import Table

    msgs = r["messages"]

    def count(t: str, what: str) -> int:
        return int(msgs.get(t, {}).get(what, 0))

    t = Table(title=f"{r['scenario']}: {r['duration_s']:g} s {r['mode']} in {r['wall_s']:g} s wall, broker {r['broker']['kind']}")
    t.add_column("what")
    t.add_column("value", justify="right")
    if r["vehicles"]:
        t.add_row("vehicles spawned / finished", f"{r['vehicles']['spawned']} / {r['vehicles']['finished']}")
    for name in msgs:
        t.add_row(f"{name}: sent / received / lost / dup",
                  f"{count(name, 'sent')} / {count(name, 'received')} / {count(name, 'lost')} / {count(name, 'duplicates')}")
    for hop, lat in r["latency_ms"].items():
        t.add_row(f"latency {hop} p50 / p99 / max (ms)", f"{lat['p50']:g} / {lat['p99']:g} / {lat['max']:g}  (n={lat['count']})")
    by_path = msgs.get("spat", {}).get("received_by_vehicles_by_path", {})
    t.add_row("SPaT to vehicles (RSU path / cloud path)", f"{by_path.get('rsu', 0)} / {by_path.get('cloud', 0)}")
    if r["spat_coverage"]:
        t.add_row("approaching vehicles without SPaT", str(len(r["spat_coverage"]["approaching_without_spat"])))
    if r["traffic"]:
        t.add_row("mean delay (s) / stops per vehicle", f"{r['traffic']['mean_delay_s']} / {r['traffic']['stops_per_vehicle']}")
        t.add_row("collisions / red-light violations", f"{r['traffic']['collisions']} / {r['traffic']['red_light_violations']}")
    for app, a in r.get("apps", {}).items():
        if a["warnings"]:
            t.add_row(f"{app.upper()} warnings / vehicles / lead p50 (s)", f"{a['warnings']} / {a['vehicles']} / {a['lead_time_s_p50']}")
    for h in r.get("events", {}).get("hazard_warning_ms", {}).get("per_hazard", []):
        t.add_row(f"hazard {h['event_id']}: warned first / last (ms); reached unwarned",
                  f"{h['first_ms']} / {h['last_ms']}; {h['reached_unwarned']} of {h['reached']}")
    for d in r.get("events", {}).get("detected_hazards", []):
        t.add_row(f"detected by the cloud: {d['kind'].replace('_', ' ')}",
                  f"{d['intersection']}.{d['approach']} lane {d['lane']}, {d['to_line_m']} m before the line, at {d['sim_s']} s")
    for x in r.get("emergency", {}).get("crossings", []):
        t.add_row(f"{x['vehicle']} (emergency) request to crossing {x['intersection']} (s)", str(x["seconds"]))
    plans = r.get("events", {}).get("plan_apply_ms", {})
    if plans.get("issued"):
        t.add_row("signal plans issued / applied; issue to apply p50 (ms)", f"{plans['issued']} / {plans['applied']}; {plans['p50']}")
    for a, b in r.get("connection", {}).get("outages_s", []):
        tiers = r["connection"]["tiers"]
        back = ", ".join(f"{k} {v.get('reconnects', 0)}" for k, v in tiers.items() if v.get("disconnects"))
        t.add_row(f"broker outage {a:g} to {'end' if b is None else f'{b:g}'} s (sim); reconnects",
                  f"{back}; BSMs not sent {r['dropped']['fleet'].get('bsm_not_sent', 0)}")
    if "lockstep" in r:
        ls = r["lockstep"]
        t.add_row("lockstep rounds / lost / unexpected", f"{ls['rounds']} / {ls['lost']} / {ls['unexpected']}")
    console.print(t)
