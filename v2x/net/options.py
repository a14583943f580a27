"""Command-line options every tier shares (`v2x roadside`, `v2x cloud`, `v2x fleet`)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import sys
import threading
import tracemalloc
import typing
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from v2x.core import scenario
from v2x.core.errors import BrokerError, ScenarioError, V2xError, broker_error_in
from v2x.core.topics import DEFAULT_ROOT
from v2x.net.broker import end_if_orphaned, watch_tasks
from v2x.net.connection import Connection, checked_run_id, new_run_id
from v2x.net.security import Credentials
from v2x.net.service import Service
from v2x.net.signing import Authority
from v2x.net.transport import MqttVersion

T = TypeVar("T")
# "DIR:SECONDS": a tier traces its Python allocations and, when it ends, writes to DIR the sites that grew most
# between SECONDS after it started and its end (bench.soak --tracemalloc: where a process that keeps growing keeps it)
TRACEMALLOC_ENV = "V2X_TRACEMALLOC"
TRACEMALLOC_TOP = 25  # allocation sites written


@contextlib.contextmanager
def traced_allocations(prog: str) -> Iterator[None]:
    """With TRACEMALLOC_ENV set, trace this process's allocations while the block runs (see TRACEMALLOC_ENV)."""
    setting = os.environ.get(TRACEMALLOC_ENV)
    if not setting:
        yield
        return
    where, _, after = setting.rpartition(":")
    tracemalloc.start(1)  # the allocating line only: deeper tracebacks slow the fleet below real time
    taken: list[tracemalloc.Snapshot] = []
    done = threading.Event()

    def snapshot_later() -> None:
        if not done.wait(float(after)):
            taken.append(tracemalloc.take_snapshot())

    threading.Thread(target=snapshot_later, name="tracemalloc-snapshot", daemon=True).start()
    try:
        yield
    finally:
        done.set()
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lines = [f"{prog} (pid {os.getpid()}): allocation sites that grew most from {after} s to the end"]
        if taken:
            grew = sorted(end.compare_to(taken[0], "traceback"), key=lambda d: d.size_diff, reverse=True)
            stats = [(f"+{d.size_diff / 1024:.1f} KiB (now {d.size / 1024:.1f} KiB, {d.count_diff:+d} blocks)", d.traceback) for d in grew]
        else:
            lines.append(f"(ended before {after} s: the largest sites at the end)")
            stats = [(f"{st.size / 1024:.1f} KiB ({st.count} blocks)", st.traceback) for st in end.statistics("traceback")]
        for what, tb in stats[:TRACEMALLOC_TOP]:
            lines += [what, *tb.format()]
        Path(where, f"{prog.replace(' ', '-')}-{os.getpid()}.txt").write_text("\n".join(lines) + "\n")


def add_common(
    parser: argparse.ArgumentParser,
    keepalive_help: str = "MQTT keepalive [s]",
    duration_help: str = "sim seconds since the epoch to run (default: until Ctrl-C)",
    keepalive_s: int = 5,
) -> None:
    """The options every tier shares: the scenario, the run's duration, and its `Connection` (see `connection`)."""
    parser.add_argument("scenario", help="scenario file, or the name of a bundled one")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--duration", type=positive_seconds, default=None, help=duration_help)
    parser.add_argument("--epoch", type=float, default=None, help="UTC seconds of sim time 0, shared by every tier of a run (default: now)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    parser.add_argument("--keepalive", type=int, default=keepalive_s, help=f"{keepalive_help} (default {keepalive_s})")
    add_mqtt_option(parser)
    add_run_id_option(parser)
    add_credentials_option(parser)
    parser.add_argument(
        "--signing-ca", type=Path, default=None, metavar="AUTHORITY.json",
        help="sign every message with a pseudonym certificate this tier's signing authority issues (permitted only "
        "what this tier sends), and accept only messages signed under the same root CA (`v2x run --sign` writes one "
        "per tier)",
    )
    add_scenario_options(parser)


def positive_seconds(text: str) -> float:
    """An option's duration [s]: a finite number above 0."""
    return _seconds(text, "above 0", lambda x: 0 < x < math.inf)


def seconds_from_zero(text: str) -> float:
    """An option's sim time [s]: a finite number, 0 or more."""
    return _seconds(text, "0 or more", lambda x: 0 <= x < math.inf)


def _seconds(text: str, expected: str, ok: Callable[[float], bool]) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not ok(x):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds, {expected}")
    return x


def add_mqtt_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mqtt", choices=typing.get_args(MqttVersion), default="auto",
        help="MQTT version of every client (default auto: 5, falling back to 3.1.1 when the broker speaks only that)",
    )


def add_obu_connections_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--obu-connections", choices=["per-vehicle", "shared"], default="per-vehicle",
        help="per-vehicle (default): each OBU is its own MQTT client, with its own client id, login and ACL, as "
        "deployed; shared: each fleet process carries all its OBUs' messages on one connection and subscribes to "
        "each filter once (v2x.net.shared), and in real time sends a step's BSMs in 10 ms slices instead of 1 ms, for "
        "scale: it gives up per-vehicle client ids, Wills, logins and ACLs, and about 0.3 ms of median BSM latency",
    )


def add_run_id_option(parser: argparse.ArgumentParser, what: str = "this tier") -> None:
    parser.add_argument(
        "--run-id", type=run_id_arg, default=None, metavar="ID",
        help=f"the run {what} belongs to: every MQTT client id starts with it, so that runs sharing a broker never take "
        "over each other's connections (`v2x run` passes its own; default: a new random one)",
    )


def run_id_arg(text: str) -> str:
    try:
        return checked_run_id(text)
    except V2xError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def connection(args: argparse.Namespace, prog: str, roles: tuple[str, ...] = ()) -> Connection:
    """The `Connection` the options of `add_common` describe; exits with a clear message when the credentials or
    the signing CA cannot be read, or the credentials hold no secret of one of `roles` (the tier's logins)."""
    return Connection(
        args.broker, credentials(args, prog, roles), args.mqtt, args.keepalive, args.root, signing_ca(args, prog),
        args.impair, args.epoch, args.run_id or new_run_id(),
    )


def add_credentials_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--credentials", type=Path, default=None, metavar="FILE",
        help="log in to a secured broker with the credentials.json that `v2x broker-config` wrote",
    )


def signing_ca(args: argparse.Namespace, prog: str) -> Authority | None:
    """The --signing-ca authority, loaded; exits with a clear message when it cannot be read."""
    return _loaded(args.signing_ca, Authority.load, prog)


def credentials(args: argparse.Namespace, prog: str, roles: tuple[str, ...] = ()) -> Credentials | None:
    """The --credentials file, loaded; exits with a clear message when it cannot be read, or holds no secret of one of
    `roles` (v2x.net.security: each role's logins have their own)."""
    creds = _loaded(args.credentials, Credentials.load, prog)
    missing = [] if creds is None else creds.missing(roles)
    if missing:
        print(f"{prog}: {args.credentials}: no {missing[0]} secret, and this command logs in with it (`v2x broker-config` "
              f"writes each tier's credentials-<tier>.json, and credentials.json with every secret)", file=sys.stderr)
        raise SystemExit(2)
    return creds


def _loaded(path: Path | None, loader: Callable[[Path], T], prog: str) -> T | None:
    if path is None:
        return None
    try:
        return loader(path)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    """--set, --seed and --no-impairment: what changes the scenario a tier runs."""
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scenario setting, e.g. links.cellular.latency_ms=100 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    parser.add_argument(
        "--copies", type=int, default=1, metavar="K",
        help="run K independent copies of the scenario's site side by side on a grid (a district for scale runs: "
        "J1 becomes J1, J1-1, J1-2, ...); default 1",
    )
    parser.add_argument(
        "--policy", choices=["fixed", "actuated", "adaptive"], dest="set", action=_PolicyAction,
        help="signal control: fixed time, actuated, or adaptive (the cloud retimes the signals); "
        "default: the scenario's control.policy",
    )
    parser.add_argument(
        "--no-impairment", dest="impair", action="store_false",
        help="ignore the scenario's link latency and loss: latencies are the broker's own",
    )


class _PolicyAction(argparse.Action):
    """--policy X is --set control.policy=X."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        namespace.set = [*(namespace.set or []), f"control.policy={values}"]


class OncePerKind(logging.Filter):
    """One line per kind of message per sender: the first record of each (sender, message template) passes, with a
    traceback cut to its last line; the rest are counted in `seen`. The sender is a record's `sender` (an MQTT
    client's id: `MqttTransport` hands gmqtt a logger that adds it), else its logger's name."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        sender = getattr(record, "sender", None)
        key = (sender or record.name, str(record.msg))
        self.seen[key] += 1
        if self.seen[key] > 1:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None or sender:
            record.msg = f"{f'{sender}: ' if sender else ''}{record.getMessage()}{f' ({type(exc).__name__}: {exc})' if exc else ''}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def setup_logging(level: int = logging.INFO, verbose: bool = False, handler: logging.Handler | None = None) -> None:
    """Log to stderr (or to `handler`); library messages (gmqtt's) too, at WARNING and above, each kind once per sender
    (`OncePerKind`) unless `verbose`, which shows every record, tracebacks whole, and gmqtt's at `level`."""
    if handler is None:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr, force=True)
    else:
        logging.basicConfig(level=level, handlers=[handler], format="%(name)s: %(message)s", force=True)
    logging.getLogger("gmqtt").setLevel(level if verbose else max(level, logging.WARNING))
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(OncePerKind())


def load(arg: str, settings: list[str] | None = None, seed: int | None = None, copies: int = 1) -> scenario.Scenario | None:
    """The scenario with --set, --seed and --copies applied, or None after printing every problem (exit 2)."""
    try:
        sc = scenario.override(scenario.load(scenario.resolve(arg)), settings) if settings else scenario.load(scenario.resolve(arg))
        sc = scenario.tile(sc, copies)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return None
    return sc if seed is None else dataclasses.replace(sc, seed=seed)


GC_YOUNG = 10_000  # allocations between collections of the garbage collector's youngest generation (CPython: 700)


def long_running() -> None:
    """Set the garbage collector for a tier's process as it is about to run: what is there now (every module, class
    and function imported; the fleet's traffic too, which `v2x fleet` builds first) is moved out of the collector's
    reach (`gc.freeze`), and its young generation is collected every GC_YOUNG allocations instead of 700. What the
    services build after it stays within reach.

    A tier allocates a few objects per message and keeps most only briefly (freed as they go, not by the collector);
    with CPython's defaults, the collections, each full one walking every module, class and function imported, took
    a fifth of each tier's CPU at four_way x 40 (docs/scale.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


SCHEDULING = ("batch", "normal")


def add_scheduling_option(parser: argparse.ArgumentParser, what: str = "this run's processes") -> None:
    parser.add_argument(
        "--scheduling", choices=SCHEDULING, default="batch",
        help=f"how Linux schedules {what}. batch (default): SCHED_BATCH, a process woken by a message waits for a "
        "free core instead of preempting the one running; at scale a tenth or more less CPU for the same traffic, and "
        "about 0.05 ms more median latency at 200 vehicles (docs/scale.md). normal: Linux's default (SCHED_OTHER). "
        "Linux only: elsewhere the system's own scheduling, unchanged",
    )


_POLICY_NAMES = {"SCHED_OTHER": "normal", "SCHED_BATCH": "batch", "SCHED_IDLE": "idle", "SCHED_FIFO": "fifo", "SCHED_RR": "rr"}


def scheduling(policy: str) -> tuple[str, str | None]:
    """Put this process under Linux's `policy` ("batch": SCHED_BATCH; "normal": SCHED_OTHER), as every process it
    starts from now on inherits it. Returns the policy it has then, for the report ("n/a" where there are no such
    policies: macOS, Windows), and why not the one asked for when the system refused it (else None).

    A broker and the tiers wake for every message: under the default policy each wake-up preempts whatever runs
    on that core, so one BSM on a vehicle's own connection makes the vehicle's process give way to the broker,
    the broker to the cloud and the RSU. SCHED_BATCH only stops a woken process from preempting: it runs at
    once on an idle core, and otherwise when the running one sleeps or its slice ends (docs/scale.md)."""
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_BATCH"):
        return "n/a", None
    why = None
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        why = f"--scheduling {policy}: the system refused it ({e})"
    now = os.sched_getscheduler(0)
    return next((name for attr, name in _POLICY_NAMES.items() if getattr(os, attr, None) == now), str(now)), why


async def _watched(main: Coroutine[Any, Any, object]) -> object:
    """`main`, its loop's tasks written out with its threads' should the process outlive its run (`end_if_orphaned`)."""
    watch_tasks(asyncio.get_running_loop())
    return await main


def run_service(prog: str, main: Coroutine[Any, Any, object], started: Sequence[Service]) -> int:
    """Run a tier's services until done or Ctrl-C (exit 130), then print each one's JSON summary line."""
    code = 0
    end_if_orphaned()  # started by a run that was killed: ends, even if its loop does not
    long_running()
    try:
        with traced_allocations(prog):
            asyncio.run(_watched(main))
    except KeyboardInterrupt:
        code = 130  # still print the summary of what was done
    except (BrokerError, BaseExceptionGroup) as e:  # a TaskGroup's services raise in a group
        err = broker_error_in(e)
        if err is None:
            raise
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    for svc in started:
        print(json.dumps({"event": "summary", **svc.summary().to_json()}), flush=True)
    return code


def shard_arg(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 0/2)") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= I < N")
    return i, n
