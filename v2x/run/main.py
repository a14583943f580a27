"""`v2x run SCENARIO`: every tier of a scenario at once, and a report.

Real-time mode (default): the RSUs and the cloud run as their own processes (`python -m
roadside`, `python -m cloud`), the fleet runs here; all share one UTC epoch, so their sim
times agree. Fast mode (--fast): every tier runs here, each client with its own connection,
in lockstep (v2x.run.fast); deterministic for a given scenario and seed.
Without --broker a private broker is started: Mosquitto when it is installed, else the
embedded amqtt, and the output and the report say which. Ctrl-C, SIGTERM and SIGHUP stop every
tier, watcher and the broker the run started, and the report is still written.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from v2x.core.errors import BrokerError, ScenarioError
from v2x.core.network import Network
from v2x.core.scenario import Scenario
from v2x.core.topics import DEFAULT_ROOT
from v2x.core.traffic import load_kernels
from v2x.net.broker import EmbeddedBroker, MosquittoBroker, broker_for_run, broker_problem, find_mosquitto
from v2x.net.connection import Connection, new_run_id
from v2x.net.options import (
    add_credentials_option,
    add_mqtt_option,
    add_obu_connections_option,
    add_run_id_option,
    add_scenario_options,
    add_scheduling_option,
    credentials,
    load,
    long_running,
    positive_seconds,
    scheduling,
    seconds_from_zero,
    setup_logging,
)
from v2x.net.security import ROLES, Credentials, write_config
from v2x.net.signing import CA
from v2x.net.station import StepClock
from v2x.net.transport import BrokerUrl, masked
from v2x.run.claim import RootClaim
from v2x.run.fast import FAST_EPOCH_S, run_fast
from v2x.run.gaps import costs, missing
from v2x.run.plots import write_plots
from v2x.run.realtime import Layout, run_realtime
from v2x.run.results import SHARED_NOTE, Results, RunInfo, build_report, print_summary
from v2x.run.stall import DEFAULT_STALL_S, StallWatch
from v2x.run.watchers import Watchers
from v2x.vehicle.fleet import Fleet
from v2x.watch.viz import display_available


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
    p.add_argument("--duration", type=positive_seconds, default=None, help="sim seconds to run (default: the scenario's)")
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
    add_mqtt_option(p)
    add_obu_connections_option(p)
    add_run_id_option(p, "and every tier of it")
    add_scheduling_option(p, "this run's processes and the broker it starts (not one given with --broker)")
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
        "--warmup", type=seconds_from_zero, default=None, metavar="S",
        help="also report the steady state from sim second S on (latency per hop; real time: the fleet's tick lag "
        "and vehicles present), leaving out the network filling up",
    )
    p.add_argument(
        "--stall-timeout", type=float, default=DEFAULT_STALL_S, metavar="S",
        help=f"end the run, with the partial report, when the broker answers nothing for S seconds while its port still "
        f"takes connections (a stopped or stuck broker); 0: never (default {DEFAULT_STALL_S:g})",
    )
    add_credentials_option(p)
    p.add_argument(
        "--sign", action="store_true",
        help="sign every message (ECDSA P-256, a pseudonym certificate per station from a CA made for the run); "
        "receivers verify and reject forged, replayed, stale or unsigned messages",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="log more: every library message (gmqtt's), tracebacks whole, and the fleet's INFO lines (default: "
        "warnings only, each kind once per sender)",
    )
    add_scenario_options(p)
    return p


@dataclass
class BrokerForRun:
    """The broker a run talks through: given (--broker URL) or started for it, and the logins it needs."""

    url: str
    kind: str  # what the output and the report call it
    started: MosquittoBroker | None = None  # started by this run: stopped at its end
    credentials: Credentials | None = None  # a secured broker: each station logs in as itself
    credentials_file: Path | None = None  # ... from this file, which the tiers and watchers get
    secure_dir: Path | None = None  # --secure: the locked config, removed with the broker


def _broker(args: argparse.Namespace, sc: Scenario, duration_s: float, console: Console) -> BrokerForRun | int:
    """Start the run's broker, or take the one given; else the exit code, after saying why (2: bad options)."""
    given = credentials(args, "v2x run", ROLES)  # read (and refused with a clear error) even when --secure makes its own
    if args.secure:
        if args.broker is not None or find_mosquitto() is None:
            console.print("v2x run: --secure starts its own locked Mosquitto (it must be installed, and --broker "
                          "not given); to use your own secured broker, give --broker and --credentials", style="red")
            return 2
        secure_dir = Path(tempfile.mkdtemp(prefix="v2x-secure-"))
        creds = Credentials.new()
        try:
            paths = write_config(sc, secure_dir, args.root, 0, creds, duration_s, workers=args.workers, clouds=args.clouds)
        except ValueError as e:
            console.print(f"v2x run: {e}", style="red")
            shutil.rmtree(secure_dir, ignore_errors=True)
            return 2
        broker = MosquittoBroker(secure=(paths["passwd"], paths["acl"]))
        out = BrokerForRun("", "mosquitto (secured: a login per station, ACLs)", broker, creds, paths["credentials.json"], secure_dir)
    elif args.broker is None or args.broker == "embedded":
        broker = EmbeddedBroker() if args.broker == "embedded" else broker_for_run()
        out = BrokerForRun("", broker.kind, broker, given, args.credentials)
    else:
        try:  # a broker that cannot serve the run is one line, at once, not a flood from every client that tries
            u = BrokerUrl.parse(args.broker)
            problem = broker_problem(u.host, u.port, u.tls, u.username, u.password, any_login=given is not None)
        except BrokerError as e:
            problem = e
        if problem is not None:
            console.print(f"v2x run: cannot use the broker at {masked(args.broker)}: {problem}", style="red", soft_wrap=True)
            return 1
        return BrokerForRun(args.broker, "external", None, given, args.credentials)
    try:
        broker.start()
    except BrokerError as e:
        console.print(f"v2x run: {e}", style="red")
        if out.secure_dir is not None:
            shutil.rmtree(out.secure_dir, ignore_errors=True)
        return 1
    return dataclasses.replace(out, url=broker.url)


def sumo_problems(sc: Scenario) -> list[str]:
    """What is wrong with a SUMO scenario's network and routes, before any tier starts (docs/sumo.md)."""
    try:
        from v2x.sumo.netfile import check_scenario_files
    except ImportError as e:
        return [f"v2x run: {sc.name} runs on SUMO, which needs the sumo extra ({e.name} is missing): pip install -e '.[sumo]'"]
    assert sc.sumo is not None  # validated: mobility = "sumo" has its table
    try:
        check_scenario_files(Path(sc.sumo.net), [Path(r) for r in sc.sumo.routes], list(sc.sites))
    except ScenarioError as e:
        return e.problems
    return []


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    # through the console: a log line goes above the progress bar, never into it
    setup_logging(logging.INFO if args.verbose else logging.WARNING, args.verbose,
                  RichHandler(console=console, show_time=False, show_path=False, markup=False, rich_tracebacks=False))
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    duration = args.duration if args.duration is not None else sc.duration_s
    shared_obus = args.obu_connections == "shared"
    if shared_obus and (args.secure or args.credentials is not None):
        console.print("v2x run: --obu-connections shared gives up the OBUs' own logins and ACLs (one connection carries "
                      "them all): it cannot run on a secured broker; leave out --secure/--credentials, or the option",
                      style="red")
        return 2
    if (args.workers > 1 or args.clouds > 1) and args.fast:
        console.print("v2x run: --workers and --clouds run tiers as processes in real time; fast mode runs every tier in "
                      "this process (leave out --fast, or the two options)", style="red")
        return 2
    if sc.mobility == "sumo":
        problems = sumo_problems(sc)
        if problems:
            for line in problems:
                console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)  # one line each
            return 2
    if sc.mobility == "sumo" and (args.workers > 1 or args.clouds > 1):
        console.print(f"v2x run: {sc.name} runs on SUMO, one simulation in one process: --workers and --clouds need "
                      'mobility = "native"', style="red")
        return 2
    net = Network(sc)
    sites = len(net.components) if sc.mobility == "native" else 1  # a SUMO network is one site
    if args.clouds > sites or args.workers < 1 or args.clouds < 1:
        console.print(f"v2x run: --clouds {args.clouds} --workers {args.workers}: {sc.name} has {sites} independent site(s); "
                      "each cloud instance needs at least one (use --copies), and both counts must be at least 1", style="red")
        return 2
    # compile the core's loops here, once, if numba's cache is empty (the first run after install): real-time
    # tiers each compiling at once, on the clock, would start late
    t0 = time.perf_counter()
    if load_kernels():  # said only when numba compiled: loading from its cache can take seconds on a busy machine
        console.print(f"v2x run: compiled the traffic core in {time.perf_counter() - t0:.0f} s (first run after install; cached now)")
    long_running()  # this process runs every tier in fast mode, the fleet in real time with one worker
    scheduled, refused = scheduling(args.scheduling)  # before the broker and the tiers start: they inherit it
    if refused is not None:
        console.print(f"v2x run: {refused}; the run's processes are under {scheduled}", style="yellow", soft_wrap=True)

    with _signals_stop_the_run() as (hold_signals, release_signals):
        broker = _broker(args, sc, duration, console)
        if isinstance(broker, int):
            return broker
        try:
            return _run(args, sc, duration, sites, broker, console, (hold_signals, release_signals), scheduled)
        finally:
            hold_signals()
            _stop_broker(broker)


def _run(
    args: argparse.Namespace, sc: Scenario, duration: float, sites: int, broker: BrokerForRun, console: Console,
    signals: tuple[Callable[[], None], Callable[[], None]], scheduled: str,
) -> int:
    """The run on its broker: the tiers, the watchers, the summary and the report; the exit code."""
    hold_signals, release_signals = signals
    shared_obus = args.obu_connections == "shared"
    console.print(f"broker: {broker.kind} at {masked(broker.url)}")
    if isinstance(broker.started, EmbeddedBroker):
        console.print(
            "note: the embedded amqtt broker (MQTT 3.1.1) adds tens of milliseconds of latency; install Mosquitto "
            "(apt-get install mosquitto) for figures worth reporting",
            style="yellow",
        )
    run_id = args.run_id or new_run_id()
    console.print(f"run id: {run_id}")
    if shared_obus:
        console.print(f"OBUs: {SHARED_NOTE}")
    conn = Connection(broker.url, broker.credentials, args.mqtt, root=args.root, ca=CA() if args.sign else None,
                      impair=args.impair, run_id=run_id)
    t0 = time.monotonic()
    watch = StallWatch(broker.url, args.stall_timeout, _thread.interrupt_main)  # stops the run as Ctrl-C does
    claim = RootClaim(conn, StepClock(FAST_EPOCH_S) if args.fast else None, watch.gone)  # one run per root; what an earlier run left retained there, cleared
    try:
        claim.__enter__()
    except BrokerError as e:
        console.print(f"v2x run: {e}", style="red", soft_wrap=True)  # one line, whatever the terminal's width
        return 1
    except KeyboardInterrupt:  # nothing ran yet: no report
        return 130
    if args.clouds > 1 and not claim.abilities.mqtt5:  # the instances would share no SPaT relay, silently
        fix = ("leave out --mqtt 3.1.1" if args.mqtt == "3.1.1" else "install Mosquitto: apt-get install mosquitto"
               if isinstance(broker.started, EmbeddedBroker) else "use an MQTT 5 broker such as Mosquitto")
        console.print(f"v2x run: --clouds {args.clouds} shares the SPaT relay through an MQTT 5 shared subscription, and "
                      f"{broker.kind} at {masked(broker.url)} was reached over MQTT 3.1.1 only: {fix}, or run one cloud", style="red",
                      soft_wrap=True)
        claim.__exit__(None, None, None)
        _stop_broker(broker)
        return 2
    gaps = missing(claim.abilities, args.mqtt)
    known = {"mqtt5"} if isinstance(broker.started, EmbeddedBroker) else set()  # the note above says it
    for ability, gap in gaps.items():
        if ability not in known:
            console.print(f"broker gap: {gap}", style="yellow", soft_wrap=True)
    if claim.leftovers:
        console.print(f"cleared what an earlier run left retained under {args.root}: "
                      f"{', '.join(f'{k} {n}' for k, n in claim.leftovers.items())}", style="yellow")
    watchers = Watchers(
        broker.url, args.root, f"{broker.kind} at {masked(broker.url)}", run_id, credentials_file=broker.credentials_file, record=args.record,
        window=not args.headless and display_available(), snapshot=args.snapshot, fast=args.fast,
    )
    try:
        watchers.start()
        with watch, _progress_bar(console) as bar:
            progress = _progress(bar, duration)
            if args.fast:
                res = run_fast(sc, conn, duration, progress, trajectories=args.plots is not None, shared_obus=shared_obus,
                               broker_gone=watch.gone, retained_to_wildcard=claim.abilities.retained_to_wildcard)
            else:
                # --workers splits the fleet by area when the scenario has enough independent sites, else by vehicle
                layout = Layout(args.workers, args.clouds, "area" if sites >= args.workers else "vehicle",
                                trajectories=args.plots is not None, shared_obus=shared_obus)
                res = run_realtime(sc, conn, duration, layout, progress, watch.gone)
    except KeyboardInterrupt:  # before the tiers started, or while they were being stopped
        res = Results(mode="fast" if args.fast else "realtime", interrupted=True)
    except BrokerError as e:
        console.print(f"v2x run: {e}", style="red", soft_wrap=True)
        return 1
    finally:
        hold_signals()  # from here on the run only ends: a second signal must not cut that short
        watched = watchers.run_ended()  # before the broker goes: they take in the last messages
        claim.__exit__(None, None, None)
        _stop_broker(broker)
    if watch.stalled is not None:
        console.print(f"v2x run: {watch.stalled}; every tier stopped, the report is partial", style="red", soft_wrap=True)
    elif res.interrupted:
        console.print("interrupted: every tier stopped; writing the report")
    info = RunInfo(sc, duration, broker.kind, masked(broker.url), args.mqtt, args.impair, args.set, args.warmup, time.monotonic() - t0,
                   run_id, claim.leftovers, scheduled)
    report = build_report(info, res)
    report.update(watched)
    if watch.stalled is not None:
        report["broker_stalled"] = watch.stalled
    report["broker_gaps"] = {"missing": gaps, "cost": costs(report, bool(gaps))}
    print_summary(console, report)
    if report["broker_gaps"]["cost"]:
        console.print(f"broker gaps cost: {'; '.join(report['broker_gaps']['cost'])}", style="yellow", soft_wrap=True)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {args.report}", soft_wrap=True, highlight=False)
    if args.plots is not None:
        written = write_plots(report, args.plots, res.trajectories)
        # on SUMO the fleet keeps no trajectories of the native core's approaches: say so, not leave them out unsaid
        none = "; no time-space diagrams (n/a on SUMO: not drawn for its roads yet)" if sc.mobility == "sumo" else ""
        console.print(f"plots: {len(written)} PNGs in {args.plots}{none}", soft_wrap=True, highlight=False)
    if "recording" in watched:
        rec = watched["recording"]
        console.print(f"recording: {rec.get('path')} ({rec.get('messages', 0)} messages)", soft_wrap=True, highlight=False)
    if args.snapshot is not None and "visualiser" in watched:
        console.print(f"snapshot: {args.snapshot}", soft_wrap=True, highlight=False)
    for t in res.tiers_failed:
        console.print(f"v2x run: the {t['tier']} tier failed (exit code {t['exit_code']}): {t['error'] or 'no error output'}", style="red")
    release_signals()  # Ctrl-C closes the window
    watchers.wait_window(console)
    return 1 if watch.stalled is not None or res.tiers_failed else 130 if res.interrupted else 0


@contextlib.contextmanager
def _signals_stop_the_run() -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (`timeout`, CI runners and process managers send the first, a
    closed terminal the second): every tier and the broker stopped, the partial report written. Yields `hold()`: from
    then on these signals and Ctrl-C are ignored while the run ends (each step of which is bounded in time), so that a
    second one cannot leave the broker or a tier behind; and `release()`, which makes them stop things again."""
    def as_ctrl_c(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)  # whoever handles Ctrl-C now: asyncio.run's handler, or KeyboardInterrupt

    before = {k: signal.getsignal(k) for k in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    # a shell starts a background job with SIGINT ignored, and the tiers would inherit that: they are stopped by SIGINT
    ctrl_c = before[signal.SIGINT] if callable(before[signal.SIGINT]) else signal.default_int_handler

    def release() -> None:
        signal.signal(signal.SIGINT, ctrl_c)
        signal.signal(signal.SIGTERM, as_ctrl_c)
        signal.signal(signal.SIGHUP, as_ctrl_c)

    def hold() -> None:
        for k in before:
            signal.signal(k, signal.SIG_IGN)

    release()
    try:
        yield hold, release
    finally:
        for k, h in before.items():
            signal.signal(k, h)


def _stop_broker(broker: BrokerForRun) -> None:
    """Stop the broker the run started, if it did; remove its locked configuration (the run's logins die with it)."""
    if broker.started is not None:
        broker.started.close()
    if broker.secure_dir is not None:
        shutil.rmtree(broker.secure_dir, ignore_errors=True)


def _progress_bar(console: Console) -> Progress:
    """The run's progress: sim seconds done, a bar, the time left (an estimate from the pace so far), the fleet."""
    return Progress(
        TextColumn("sim {task.completed:6.1f}/{task.total:g} s"), BarColumn(bar_width=16), TaskProgressColumn(),
        TextColumn("ETA"), TimeRemainingColumn(compact=True), TextColumn("{task.fields[fleet]}"),
        console=console, refresh_per_second=4,
    )


def _progress(bar: Progress, duration: float) -> Callable[[Fleet], None]:
    last = [time.monotonic(), 0]
    task = bar.add_task("run", total=duration, fleet="")

    def progress(f: Fleet) -> None:
        now = time.monotonic()
        sent = sum(f.counters.sent.values()) + sum(f.counters.received.values())
        rate = (sent - last[1]) / max(now - last[0], 1e-6)
        last[0], last[1] = now, sent
        bar.update(task, completed=min(f.traffic.t, duration),
                   fleet=f"{f.traffic.n} vehicles, {f.traffic.stats.finished} done, {rate:.0f} msg/s")

    return progress
