"""`v2x run` in real time: the RSUs and the cloud as their own processes (`python -m roadside`, `python -m
cloud`), the fleet in this process or in `--workers` processes of its own (`v2x fleet --shard`); every tier on
one UTC epoch, so their sim times agree. Each process prints its summary as a JSON line at the end; they are
read back as typed summaries (`Results`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cloud.service import CloudSummary
from roadside.service import RsuSummary
from v2x.core import messages as m
from v2x.core import scenario
from v2x.core.errors import BrokerError
from v2x.core.trajectories import Trajectories
from v2x.net.broker import die_with_parent
from v2x.net.connection import Connection
from v2x.net.options import traced_allocations
from v2x.net.security import TIER_ROLES
from v2x.run.results import Results
from v2x.vehicle.fleet import Fleet
from v2x.vehicle.summary import FleetSummary

R = TypeVar("R")
START_DELAY_S = 3.0  # [s] between launching the tiers and sim time 0, for them to start (each imports numba) and connect


@dataclass(frozen=True)
class Layout:
    """How a real-time run lays its tiers out in processes."""

    workers: int = 1  # fleet processes (1: the fleet runs in `v2x run`'s own)
    clouds: int = 1  # cloud instances, each owning whole sites, sharing the SPaT relay
    shard_by: str = "vehicle"  # how the workers split the fleet: "vehicle" or "area"
    trajectories: bool = False  # record the fleet's trajectories (--plots; only when the fleet runs here)
    shared_obus: bool = False  # each fleet process's OBUs share one broker connection (--obu-connections shared)


def run_realtime(
    sc: scenario.Scenario, conn: Connection, duration_s: float, layout: Layout, progress: Callable[[Fleet], None],
    broker_gone: threading.Event | None = None,
) -> Results:
    """Run every tier until sim time `duration_s`; Ctrl-C stops them all and still returns what they reported.
    `broker_gone`: set when the broker stopped answering (v2x.run.stall): the tiers are then stopped at once."""
    # the tiers run exactly this scenario (--set and --seed applied): hand it over as a file
    with tempfile.NamedTemporaryFile("w", prefix=f"v2x-{sc.name}-", suffix=".toml", delete=False) as f:
        f.write(scenario.dumps(sc))
    path = Path(f.name)
    try:
        return _run(sc, path, conn, duration_s, layout, progress, broker_gone or threading.Event())
    finally:
        for p in (path, *(path.with_suffix(f".{tier}.json") for tier in TIER_ROLES),
                  *(path.with_suffix(f".{tier}.authority.json") for tier in TIER_ROLES)):
            p.unlink(missing_ok=True)


def _run(
    sc: scenario.Scenario, path: Path, conn: Connection, duration_s: float, layout: Layout,
    progress: Callable[[Fleet], None], broker_gone: threading.Event,
) -> Results:
    epoch = time.time() + START_DELAY_S
    conn = dataclasses.replace(conn, epoch_s=epoch)

    def argv(tier: str, kind: m.SenderKind, intersections: list[str] | None = None) -> list[str]:
        """A tier process's connection options: on a secured broker a file with its own role's secrets only; when
        signing, the file of the authority made for that tier (the run's root CA stays here: a tier can issue only
        what its own stations may send, as enrolment would give)."""
        credentials_file = authority_file = None
        if conn.credentials is not None:
            credentials_file = path.with_suffix(f".{tier}.json")
            conn.credentials.only(TIER_ROLES[tier]).save(credentials_file)
        authority = conn.authority(tier, kind, conn.clock(), intersections or [])
        if authority is not None:
            authority.save(authority_file := path.with_suffix(f".{tier}.authority.json"))
        return conn.argv(credentials_file, authority_file)

    # the RSUs outlive the fleet by a second, the cloud outlives the RSUs (to see them stop)
    tiers: dict[str, _Tier] = {}
    try:
        rsu_argv = argv("roadside", m.SenderKind.RSU, list(sc.sites))
        tiers["roadside"] = _Tier(["-m", "roadside", str(path), *rsu_argv, "--duration", f"{duration_s + 1.0:g}"])
        n = layout.clouds
        for i in range(n):  # several instances: each owns whole sites, and they share the SPaT relay ($share)
            tiers["cloud" if n == 1 else f"cloud {i}/{n}"] = _Tier(
                ["-m", "cloud", str(path), *argv("cloud", m.SenderKind.CLOUD), "--duration", f"{duration_s + 2.5:g}",
                 *([] if n == 1 else ["--instance", f"{i}/{n}", "--share", "v2x-cloud"])],
            )
        if layout.workers > 1:
            res = _fleet_workers(path, argv("fleet", m.SenderKind.VEHICLE), tiers, layout, duration_s, epoch, broker_gone)
        else:
            fleet = Fleet(sc, conn, conn.clock(), shared=Fleet.shared_connection(conn) if layout.shared_obus else None)
            if layout.trajectories:
                fleet.trajectories = Trajectories(fleet.net)
            interrupted = False
            failure: BrokerError | None = None
            try:
                with traced_allocations("v2x fleet"):
                    asyncio.run(fleet.run(duration_s, progress))
            except KeyboardInterrupt:
                interrupted = True
            except BrokerError as e:  # an OBU's client id taken over: the other tiers are still stopped and heard
                failure = e
            res = _results(_stop(tiers, now=interrupted or broker_gone.is_set()))
            res.fleet, res.trajectories, res.interrupted = FleetSummary.of(fleet), fleet.trajectories, interrupted
            if failure is not None:
                res.tiers_failed.append({"tier": "fleet", "exit_code": 1, "error": str(failure)})
    except BaseException:  # whatever cut the run short before its tiers were stopped: they end with it
        _end(tiers)
        raise
    res.epoch_utc_s = epoch
    return res


class _Tier(subprocess.Popen[str]):
    """A tier's process, in a process group of its own: a Ctrl-C in the terminal reaches `v2x run` alone, which
    stops each tier once (`_stop`), as it does on SIGTERM, SIGHUP or a SIGINT sent to its PID alone.

    What it prints goes to files, read once it has ended: a pipe read only then would block the tier as soon as it
    had printed more than the pipe holds (64 KiB: a long run's cloud events, a flood of warnings)."""

    def __init__(self, args: list[str]) -> None:
        # closed by output(), or with the object when a run is cut short (_end)
        self.out_file, self.err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115
        super().__init__([sys.executable, *args], stdout=self.out_file, stderr=self.err_file, text=True, process_group=0,
                         preexec_fn=die_with_parent(signal.SIGINT))  # killed, `v2x run` cannot stop its tiers

    def output(self) -> tuple[str, str]:
        """What it printed (standard output, error output); once, when it has ended."""
        texts = []
        for f in (self.out_file, self.err_file):
            f.seek(0)
            texts.append(f.read())
            f.close()
        return texts[0], texts[1]


def _fleet_workers(
    path: Path, common: list[str], tiers: dict[str, _Tier], layout: Layout, duration_s: float, epoch: float,
    broker_gone: threading.Event,
) -> Results:
    """The fleet as `layout.workers` processes; their summaries merged, their measurements kept apart."""
    n, by = layout.workers, layout.shard_by
    workers = {
        f"fleet {i}/{n}": _Tier(["-m", "v2x", "fleet", str(path), *common, "--duration", f"{duration_s:g}", "--shard", f"{i}/{n}", "--by", by,
                                   *(["--obu-connections", "shared"] if layout.shared_obus else [])])
        for i in range(n)
    }
    print(f"fleet: {n} processes, sharded by {by}; they report at the end (about {epoch + duration_s - time.time():.0f} s "
          "from now)", file=sys.stderr)
    try:
        done = _stop(workers, until=epoch + duration_s + 30.0)  # they end at the run's end
    except KeyboardInterrupt:
        res = _results(_stop({**workers, **tiers}, now=True))
        res.interrupted = True
        return res
    return _results({**done, **_stop(tiers)})


def _end(tiers: dict[str, _Tier]) -> None:
    """Stop the tier processes still running (SIGINT, SIGKILL after 5 s), not waiting for what they print."""
    running = [p for p in tiers.values() if p.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGINT)
    for proc in running:
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Ended:
    """How a tier's process ended: what it printed, its exit code, the end of its error output."""

    out: str
    code: int
    err: str

    @property
    def failed(self) -> bool:
        return self.code not in (0, 130, -signal.SIGINT)


def _results(ended: dict[str, Ended]) -> Results:
    """What the tiers' processes printed (JSON lines): the RSUs', the cloud's and any fleet workers' summaries, and
    the cloud's events; and the tiers that failed. A line that is not JSON, or a summary this version cannot read,
    is reported and left out."""
    outputs = {name: e.out for name, e in ended.items()}

    def lines(name: str) -> list[dict[str, Any]]:
        out = []
        for x in outputs.get(name, "").splitlines():
            try:
                out.append(json.loads(x))
            except json.JSONDecodeError:
                print(f"v2x run: the {name} tier printed a line that is not JSON: {x[:200]!r}", file=sys.stderr)
        return out

    printed = {name: lines(name) for name in outputs}

    def summaries(name: str, read: Callable[[dict[str, Any]], R]) -> list[R]:
        out: list[R] = []
        for e in printed.get(name, []):
            if e.get("event") == "summary":
                try:
                    out.append(read({k: v for k, v in e.items() if k != "event"}))
                except (ValueError, TypeError) as err:
                    print(f"v2x run: the {name} tier's summary cannot be read: {err}", file=sys.stderr)
        return out

    fleets = [s for name in outputs if name.startswith("fleet ") for s in summaries(name, FleetSummary.from_json)]
    clouds = [s for name in outputs if name.startswith("cloud") for s in summaries(name, CloudSummary.from_json)]
    return Results(
        mode="realtime",
        fleet=FleetSummary.merge(fleets) if fleets else None,
        fleets=fleets,
        cloud=CloudSummary.merge(clouds) if clouds else None,
        clouds=clouds,
        rsus=summaries("roadside", RsuSummary.from_json),
        cloud_events=[e for name in outputs if name.startswith("cloud") for e in printed[name] if e.get("event") != "summary"],
        tiers_failed=[
            {"tier": name, "exit_code": e.code, "error": _last_line(e.err)} for name, e in ended.items() if e.failed
        ],
    )


def _last_line(err: str) -> str:
    """The last non-empty line of a tier's error output (a traceback's: the exception), or what killed it."""
    return next((x.strip() for x in reversed(err.splitlines()) if x.strip()), "")


def _stop(tiers: dict[str, _Tier], until: float | None = None, now: bool = False) -> dict[str, Ended]:
    """Let each tier end on its own (a moment after the fleet, or by `until` on the wall clock), else ask it
    (SIGINT; `now`: at once, without waiting: the run was interrupted, or its broker is gone); collect what it printed
    and how it ended. A tier that failed is reported here, by name.

    Output is read from the tier's files once it has ended (`_Tier`): nothing it prints can block it.
    """
    ended = {}
    for proc in tiers.values() if now else ():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for name, proc in tiers.items():
        try:
            proc.wait(timeout=8.0 if until is None else max(until - time.time(), 8.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out, err = proc.output()
        ended[name] = Ended(out, proc.returncode, err[-2000:])
        if ended[name].failed:
            what = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
            print(f"v2x run: the {name} tier {what}:\n{ended[name].err}", file=sys.stderr)
    return ended
