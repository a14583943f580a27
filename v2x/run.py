"""`v2x run SCENARIO`: every tier of a scenario at once, and a report.

Real-time mode: the RSUs and the cloud run as their own processes (`python -m roadside`,
`python -m cloud`), the fleet runs here; all share one UTC epoch, so their sim times agree.
Without --broker a private broker is started: Mosquitto when it is installed, else the
embedded amqtt, and the output and the report say which. Ctrl-C stops every tier cleanly
and still writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from v2x import scenario
from v2x.broker import EmbeddedBroker, MosquittoBroker, broker_for_run
from v2x.errors import BrokerError, ScenarioError
from v2x.fleet import Fleet
from v2x.fleet_cli import summary
from v2x.station import Clock
from v2x.topics import DEFAULT_ROOT, Topics

START_DELAY_S = 2.0  # [s] between launching the tiers and sim time 0, for them to connect


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
    mode.add_argument("--fast", action="store_true", help="lockstep steps as fast as possible (not available yet)")
    p.add_argument("--duration", type=float, default=None, help="sim seconds to run (default: the scenario's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--headless", action="store_true", help="no window (the visualiser is not built yet: always headless)")
    p.add_argument("--report", type=Path, default=None, help="write the run's report as JSON here")
    p.add_argument("--mqtt", choices=["auto", "5", "3.1.1"], default="auto", help="MQTT version of the fleet's clients")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    scenario_path = scenario.resolve(args.scenario)
    console = Console(stderr=True)
    if args.fast:
        console.print("v2x run: --fast (lockstep mode) is not implemented yet; run with --realtime", style="red")
        return 2
    try:
        sc = scenario.load(scenario_path)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    if args.seed is not None:
        sc = dataclasses.replace(sc, seed=args.seed)
    duration = args.duration if args.duration is not None else sc.duration_s

    broker: MosquittoBroker | None = None
    url = args.broker
    kind = "external"
    if url is None or url == "embedded":
        broker = EmbeddedBroker() if url == "embedded" else broker_for_run()
        try:
            broker.start()
        except BrokerError as e:
            console.print(f"v2x run: {e}", style="red")
            return 1
        url = broker.url
        kind = broker.kind
    console.print(f"broker: {kind} at {url}")
    if isinstance(broker, EmbeddedBroker):
        console.print(
            "note: the embedded amqtt broker adds tens of milliseconds of latency; install Mosquitto "
            "(apt-get install mosquitto) for figures worth reporting",
            style="yellow",
        )
    epoch = time.time() + START_DELAY_S
    common = ["--broker", url, "--epoch", f"{epoch:.3f}", "--root", args.root]
    # the RSUs outlive the fleet by a second, the cloud outlives the RSUs (to see them stop)
    tiers = {
        "roadside": subprocess.Popen(
            [sys.executable, "-m", "roadside", str(scenario_path), *common, "--duration", f"{duration + 1.0:g}"],
            stderr=subprocess.PIPE, text=True,
        ),
        "cloud": subprocess.Popen(
            [sys.executable, "-m", "cloud", str(scenario_path), *common, "--duration", f"{duration + 2.5:g}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ),
    }
    fleet = Fleet(sc, url, Topics(args.root), Clock(epoch), version=args.mqtt)
    interrupted = False
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            last = [time.monotonic(), 0]

            def progress(f: Fleet) -> None:
                now = time.monotonic()
                sent = sum(f.counters.sent.values()) + sum(f.counters.received.values())
                rate = (sent - last[1]) / max(now - last[0], 1e-6)
                last[0], last[1] = now, sent
                live.update(Text(f"sim {f.traffic.t:7.1f} / {duration:g} s   vehicles {f.traffic.n:4d}   "
                                 f"finished {f.traffic.stats.finished:5d}   fleet msgs/s {rate:8.0f}"))

            asyncio.run(fleet.run(duration, progress))
    except KeyboardInterrupt:
        interrupted = True
        console.print("interrupted: stopping every tier and writing the report")
    finally:
        outputs = _stop(tiers)
        if broker is not None:
            broker.close()
    report = _report(sc, args, kind, url, duration, fleet, outputs, interrupted)
    _print_summary(console, report)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {args.report}")
    return 130 if interrupted else 0


def _stop(tiers: dict[str, subprocess.Popen[str]]) -> dict[str, str]:
    """Ask each tier to stop (SIGINT), then collect what it printed."""
    outputs = {}
    for proc in tiers.values():
        try:
            proc.wait(timeout=5.0)  # each tier ends on its own a moment after the fleet
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
    for name, proc in tiers.items():
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode not in (0, 130, -signal.SIGINT):
            print(f"v2x run: the {name} tier exited with {proc.returncode}:\n{(err or '')[-2000:]}", file=sys.stderr)
        outputs[name] = out or ""
    return outputs


def _report(
    sc: scenario.Scenario, args: argparse.Namespace, kind: str, url: str, duration: float, fleet: Fleet,
    outputs: dict[str, str], interrupted: bool,
) -> dict[str, Any]:
    events = [json.loads(line) for line in outputs.get("cloud", "").splitlines() if line.startswith("{")]
    cloud: dict[str, Any] = next((e for e in events if e.get("event") == "summary"), {})
    fs = summary(fleet)
    sent = fs["messages"]["sent"]
    received_by_cloud = cloud.get("received", {})
    messages = {
        "bsm": {"sent": sent.get("bsm", 0), "received_by_cloud": received_by_cloud.get("bsm", 0)},
        "spat": {
            "received_by_cloud": received_by_cloud.get("spat", 0),
            "relayed_by_cloud": cloud.get("relayed_spat", 0),
            "received_by_vehicles_rsu_path": fs["messages"]["received"].get("spat/rsu", 0),
            "received_by_vehicles_cloud_path": fs["messages"]["received"].get("spat/cloud", 0),
        },
        "status": {"received_by_cloud": received_by_cloud.get("status", 0)},
    }
    return {
        "scenario": sc.name,
        "mode": "realtime",
        "seed": sc.seed,
        "duration_s": duration,
        "interrupted": interrupted,
        "broker": {"kind": kind, "url": url, "mqtt": args.mqtt},
        "messages": messages,
        "vehicles": fs["vehicles"],
        "traffic": fs["traffic"],
        "spat_coverage": fs["spat"],
        "cloud": {"vehicles_seen": cloud.get("vehicles_seen", 0), "events": [e for e in events if e.get("event") != "summary"]},
        "bad_input": {"fleet": fs["bad_input"], "cloud": cloud.get("bad_input", {})},
        "dropped": {"fleet": fs["dropped"]},
    }


def _print_summary(console: Console, r: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"{r['scenario']}: {r['duration_s']:g} s, broker {r['broker']['kind']}")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("vehicles spawned / finished", f"{r['vehicles']['spawned']} / {r['vehicles']['finished']}")
    t.add_row("BSM sent / heard by the cloud", f"{r['messages']['bsm']['sent']} / {r['messages']['bsm']['received_by_cloud']}")
    t.add_row("SPaT to vehicles (RSU path / cloud path)",
              f"{r['messages']['spat']['received_by_vehicles_rsu_path']} / {r['messages']['spat']['received_by_vehicles_cloud_path']}")
    t.add_row("approaching vehicles without SPaT", str(len(r["spat_coverage"]["approaching_without_spat"])))
    t.add_row("mean delay (s) / stops per vehicle", f"{r['traffic']['mean_delay_s']} / {r['traffic']['stops_per_vehicle']}")
    t.add_row("collisions", str(r["traffic"]["collisions"]))
    console.print(t)
