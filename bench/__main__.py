"""Scale benchmark: how close the whole simulator comes to the broker's own limit, and to the MQTT traffic alone.

    python -m bench                                   # everything (about an hour on 2 cores)
    python -m bench --only capacity --quick           # a quick look: short runs, one refinement
    python -m bench --only capacity,cpu --modes shared --copies 16,32,64
    python -m bench --only ceiling,fast               # parts: ceiling | capacity | cpu | profile | fast | memory | cluster

Every figure is measured in this run, each beside its reference:
  - ceiling: the broker's C-client ceiling, mosquitto_pub -> Mosquitto -> mosquitto_sub at
    QoS 0 with BSM-sized payloads (messages delivered per second, median of 3), on a
    Mosquitto configured as every run's (`set_tcp_nodelay true`);
  - capacity: the real-time capacity of the stack and of the messaging floor, in each connection
    mode (--modes: `--obu-connections per-vehicle`, one MQTT connection per OBU, and `shared`,
    one per fleet process), under the same criteria: the fleet's 100 ms tick holds (at most 1%
    of its steps start a whole step late) and vehicle->cloud p99 is at most 50 ms.
    The stack: real-time runs of four_way tiled into a district (`v2x run four_way --copies K
    --workers W --warmup ... --obu-connections MODE`), K rising (--copies) until one fails, then
    K between the largest that held and the smallest that failed (--refine); its capacity is the
    steady vehicle count (mean, 10 Hz BSMs each) of the largest K that holds. The floor
    (bench/floor.py: the same message pattern on gmqtt clients, nothing simulated, no decoding)
    is searched the same way, in junctions of the stack's measured vehicles per junction, from
    the stack's capacity up. A size that fails is run once more before it counts as failed
    (scheduling noise trips single runs); the output says when a repeat was needed. Beside each:
    the broker's own count of the messages it delivered ($SYS/broker/publish/messages/sent) per
    second of the steady state, as a share of the C-client ceiling;
  - the message pattern, from the stack's run at its capacity in each mode: deliveries per
    vehicle-second by message type and path, as the receiving tiers measured them, beside the
    broker's count (bench/pattern.py); the floor's vehicles per junction and share of vehicles
    hearing SPaT are taken from it;
  - cpu: CPU per vehicle-second of each process (fleet, roadside, cloud, Mosquitto) for the
    stack and for the floor at the same size, and their ratio, in each mode (bench/tiers.py);
    at the stack's capacity in that mode unless --cpu-copies;
  - fast: `v2x run --fast` (every tier in one process, lockstep through the broker) on the
    districts: simulated seconds per wall second, and the vehicles at the end;
  - profile: one more run (per-vehicle connections) at the first district that fails, each
    process's CPU use and, with py-spy installed, its busiest functions
    (`python -m bench.cloud_replay` measures the cloud's own work alone, on a recording, and
    `python -m bench.codec` the codec's per message, each way);
  - memory: the fleet processes' peak RSS against the vehicles they held, over the per-vehicle
    capacity runs: the slope (MB per vehicle) of a least-squares line, and its intercept;
  - cluster: a 3-node NATS cluster (`v2x cluster`): a QoS 1 burst from node C to a subscriber
    on node A, and a retained message through C reaching a later wildcard subscriber on A.
Progress goes to stdout as each run ends; the tables come last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench import apply_scheduling, counts, floor, tiers
from bench.capacity import LATE_SHARE, P99_MS, Search, doubling, holds, search
from bench.pattern import Pattern
from bench.tiers import descendants, role
from bench.transport import Deliveries, c_client_throughput, cpu_s
from v2x.net.broker import MosquittoBroker
from v2x.net.options import add_scheduling_option

TARGET_VEHICLES = 2000  # the real-time target
PARTS = ("ceiling", "capacity", "cpu", "profile", "fast", "memory", "cluster")
MODES = floor.MODES  # --obu-connections
_SCHEDULING: list[str] = []  # --scheduling, as each `v2x run` started here gets it


@dataclass
class RunResult:
    copies: int
    mode: str
    vehicles: float
    late_share: float
    lag_max_ms: float
    v2c_p99_ms: float
    delivered_per_s: float
    published_per_s: float
    rss_mb: float
    vehicles_max: int
    pattern: Pattern
    error: str = ""  # why the run did not finish (it counts as failed)

    @property
    def ok(self) -> bool:
        return not self.error and holds(self.late_share, self.v2c_p99_ms)

    @classmethod
    def crashed(cls, copies: int, mode: str, error: str) -> RunResult:
        nan = math.nan
        return cls(copies, mode, nan, 1.0, nan, nan, nan, nan, nan, 0, Pattern(copies, mode, 0.0, [], nan), error)


@dataclass
class FloorRun:
    copies: int  # junctions
    result: floor.FloorResult | None  # None: it did not finish (it counts as failed)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and holds(self.result.late_share, self.result.p("vehicle->cloud", 99))

    def __str__(self) -> str:
        return f"{self.result.vehicles:,}" if self.result else "did not finish"


def ceiling(n: int = 200_000, repeat: int = 3) -> float:
    with MosquittoBroker() as broker:
        port = int(broker.url.rsplit(":", 1)[1])
        runs = [c_client_throughput(port, n, 0) for _ in range(repeat)]
    print(f"  C clients, QoS 0, {n:,} x 60 B: " + ", ".join(f"{r:,.0f}" for r in runs) + " msgs/s", flush=True)
    return statistics.median(runs)


def _v2x_run(extra: list[str], report: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--report", str(report), *_SCHEDULING, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(report.read_text())
    return out


def realtime(copies: int, workers: int, clouds: int, seconds: float, warmup: float, tmp: Path, mode: str = MODES[0]) -> RunResult:
    """One real-time run on a broker of ours, whose own count of messages delivered ($SYS, every second) gives the
    stack's throughput in the same unit as the C-client ceiling: every delivery to every client (the V2V and
    shard-wide radios included), in the steady seconds."""
    print(f"  four_way x {copies} ({mode}): running, {seconds:g} s ...", flush=True)
    with MosquittoBroker(extra_config="sys_interval 1") as broker:
        counter = Deliveries(broker)
        try:
            r = _v2x_run(["--broker", broker.url, "--copies", str(copies), "--workers", str(workers), "--clouds", str(clouds),
                          "--duration", f"{seconds:g}", "--warmup", f"{warmup:g}", "--obu-connections", mode],
                         tmp / f"rt-{copies}-{workers}-{clouds}-{mode}.json")
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # a size that breaks the run has failed, and says why
            print(f"  four_way x {copies:3d} ({mode}): FAILS, the run did not finish: {e}", flush=True)
            return RunResult.crashed(copies, mode, str(e).splitlines()[0])
        finally:
            counter.stop()
    steady = r["steady"]
    tick = steady["tick"]
    v2c = steady["latency_ms"].get("vehicle->cloud", {})
    epoch = r["epoch_utc_s"]
    delivered = counter.rate(epoch + warmup, epoch + seconds)
    # published: every message a tier sent, in the steady seconds (their share of the run's, by the cloud's BSMs)
    share = v2c.get("count", 0) / max(r["messages"].get("bsm", {}).get("received_by", {}).get("cloud", 1), 1)
    sent = sum(t["sent"] for t in r["messages"].values())
    late = tick["late_share"] if tick["late_share"] is not None else 1.0
    res = RunResult(
        copies, mode, tick["vehicles_mean"] or 0.0, late, tick["lag_ms_max"] or 0.0, v2c.get("p99", math.nan), delivered,
        sent * share / (seconds - warmup), float(r.get("fleet_peak_rss_mb") or 0.0), tick["vehicles_max"] or 0,
        Pattern.of(r, delivered, copies, mode),
    )
    print(
        f"  four_way x {copies:3d} ({mode}): {res.vehicles:7.0f} vehicles  steps late {late:6.1%} (max lag {res.lag_max_ms:6.0f} ms)  "
        f"vehicle->cloud p99 {res.v2c_p99_ms:7.1f} ms  "
        f"delivered {res.delivered_per_s:9,.0f}/s  published {res.published_per_s:8,.0f}/s  fleet RSS {res.rss_mb:6.0f} MB  "
        f"{'holds' if res.ok else 'FAILS'}",
        flush=True,
    )
    return res


def floor_run(junctions: int, pattern: Pattern | None, seconds: float, workers: int, mode: str) -> FloorRun:
    """The floor at `junctions` of the stack's measured pattern (vehicles per junction, share hearing SPaT)."""
    per = max(round(pattern.per_junction), 1) if pattern else floor.PER_JUNCTION
    share = pattern.spat_share if pattern else floor.SPAT_SHARE
    print(f"  floor, {junctions} junctions x {per} vehicles ({mode}): running, {seconds:g} s ...", flush=True)
    try:
        res = FloorRun(junctions, floor.run(junctions * per, seconds, workers, per, share, shared=mode == "shared"))
    except (RuntimeError, EOFError, OSError) as e:  # a process that cannot connect its clients, died or did not report: failed
        why = f"{type(e).__name__}: {e}"
        print(f"      FAILS, the floor did not finish: {why}", flush=True)
        return FloorRun(junctions, None, why)
    assert res.result is not None
    floor.report(res.result)
    print(f"      {'holds' if res.ok else 'FAILS'}", flush=True)
    return res


def profile(copies: int, workers: int, clouds: int, seconds: float, warmup: float, tmp: Path, sample_s: float = 20.0) -> tuple[float, float]:
    """One real-time run with every process measured in its steady state: CPU seconds per wall second
    (from /proc), and py-spy's busiest functions (self time) per process. Returns (cores busy, vehicles)."""
    report = tmp / f"profile-{copies}.json"
    cmd = [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--report", str(report),
           "--copies", str(copies), "--workers", str(workers), "--clouds", str(clouds), "--duration", f"{seconds:g}",
           "--warmup", f"{warmup:g}", *_SCHEDULING]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(warmup + 5.0)
    procs = {p: role(c) for p, c in descendants(run.pid).items() if "py-spy" not in c}
    procs[run.pid] = "v2x run (fleet)" if workers == 1 else "v2x run"
    t0, cpu0 = time.monotonic(), {p: cpu_s(p) for p in procs}
    spies = {p: subprocess.Popen(["py-spy", "record", "-p", str(p), "-d", f"{sample_s:g}", "-r", "50", "-f", "raw", "-o",
                                  str(tmp / f"spy-{p}.txt"), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p, role in procs.items() if role != "mosquitto"} if shutil.which("py-spy") else {}
    time.sleep(sample_s)
    wall = time.monotonic() - t0
    cpu = {p: (cpu_s(p) - cpu0[p]) / wall for p in procs if Path(f"/proc/{p}").exists()}
    for spy in spies.values():
        spy.wait()
    run.wait()
    vehicles = float(json.loads(report.read_text())["steady"]["tick"]["vehicles_mean"] or 0.0)
    print(f"  profile at four_way x {copies} ({sample_s:g} s of the steady state; py-spy at 50 Hz slows each process a little):")
    print(f"  CPU use: {sum(cpu.values()):.2f} cores of {os.cpu_count()}, {vehicles:.0f} vehicles: "
          f"{sum(cpu.values()) / vehicles * 1e3:.2f} ms of CPU per vehicle-second")
    for p, share in sorted(cpu.items(), key=lambda kv: -kv[1]):  # per tier: the figure bench.floor gives its own tiers
        print(f"    {procs[p]:<18} {share:5.2f} cores  {share / vehicles * 1e3:5.2f} ms of CPU per vehicle-second")
        raw = tmp / f"spy-{p}.txt"
        if not raw.exists():
            continue
        own: dict[str, int] = {}
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.split(";")[-1]
            total += int(count)
            own[leaf] = own.get(leaf, 0) + int(count)
        for leaf, n in sorted(own.items(), key=lambda kv: -kv[1])[:6]:
            print(f"        {n / max(total, 1):6.1%}  {leaf[:110]}")
    return sum(cpu.values()), vehicles


def cluster_qos1(n: int = 5000) -> tuple[float, int, bool] | None:
    """The clustered broker: a QoS 1 burst from node C to a subscriber on node A (C clients, MQTT 3.1.1), and a
    retained message published through C reaching a later wildcard subscriber on A."""
    from v2x.net.broker import NatsCluster, find_nats

    if find_nats() is None:
        print("  nats-server is not installed (apt-get install nats-server)")
        return None
    rates, delivered = [], 0
    with NatsCluster(3) as c:
        a_port, c_port = c.mqtt_ports[0], c.mqtt_ports[2]
        v = ["-V", "mqttv311", "-h", "127.0.0.1"]
        for run in range(3):
            sub = subprocess.Popen(["mosquitto_sub", *v, "-p", str(a_port), "-t", "burst/#", "-q", "1", "-C", str(n), "-W", "60",
                                    "-i", f"bench-sub-{run}"], stdout=subprocess.PIPE)
            time.sleep(1.0)
            t0 = time.perf_counter()
            pub = subprocess.Popen(["mosquitto_pub", *v, "-p", str(c_port), "-t", "burst/rsi", "-q", "1", "-l", "-i", f"bench-pub-{run}"],
                                   stdin=subprocess.PIPE)
            assert pub.stdin is not None
            pub.stdin.write((("x" * 60 + "\n") * n).encode())
            pub.stdin.close()
            out, _ = sub.communicate(timeout=90)
            wall = time.perf_counter() - t0
            pub.wait(30)
            got = len(out.split())
            rates.append(got / wall)
            delivered += got
            print(f"  QoS 1 burst node C -> node A: {got:,} of {n:,} delivered in {wall:.2f} s ({got / wall:,.0f} msgs/s)", flush=True)
        subprocess.run(["mosquitto_pub", *v, "-p", str(c_port), "-t", "hazard/tile/1", "-m", "rsi", "-q", "1", "-r"], check=True)
        retained = subprocess.run(["mosquitto_sub", *v, "-p", str(a_port), "-t", "hazard/#", "-q", "1", "-C", "1", "-W", "10"],
                                  capture_output=True, text=True).stdout.strip()
        print(f"  retained through node C, wildcard subscriber on node A after it: {'received' if retained == 'rsi' else 'NOT received'}")
    return statistics.median(rates), delivered, retained == "rsi"


def fast(copies: int, seconds: float, tmp: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = _v2x_run(["--copies", str(copies), "--fast", "--duration", f"{seconds:g}"], tmp / f"fast-{copies}.json")
    wall = time.perf_counter() - t0
    veh = r["vehicles"]["in_network"]
    print(f"  copies {copies:3d}: {seconds:g} sim s in {wall:.1f} s wall: {seconds / wall:5.2f} sim s per wall s "
          f"({veh} vehicles at the end)", flush=True)
    return seconds / wall, veh


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(text.split(","))
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: no mode {', '.join(unknown)} (expected some of {', '.join(MODES)})")
    return modes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS), help=f"parts to run, comma-separated: {', '.join(PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="a quick look, not figures to quote: 20 s runs steady from 10 s, "
                   "one refinement, the floor measured 5 s, districts 2,4 (each unless given), a shorter ceiling")
    p.add_argument("--modes", type=_modes, default=MODES, help="connection modes for capacity and cpu, comma-separated "
                   "(default: per-vehicle,shared)")
    p.add_argument("--copies", type=counts, default=None, help="district sizes to try, rising (copies of four_way; default "
                   "8,16,32,64,128: doubling until one fails, then --refine halves the gap)")
    p.add_argument("--refine", type=int, default=None, help="runs that halve the gap between the largest size that holds "
                   "and the smallest that fails (default 3; --quick 1)")
    p.add_argument("--floor-copies", type=counts, default=None, help="the floor's sizes to try, in junctions (default: "
                   "doubling from the stack's capacity in the same mode, up to 16 times it; --quick 4)")
    p.add_argument("--floor-seconds", type=float, default=None, help="seconds the floor measures per size (default 20; --quick 5)")
    p.add_argument("--cpu-copies", type=int, default=None, help="district size for cpu (default: the stack's capacity in "
                   "each mode, else 14)")
    p.add_argument("--profile-copies", type=int, default=None, help="district size to profile (default: the first that fails)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="fleet processes (default: the cores)")
    p.add_argument("--clouds", type=int, default=1, help="cloud instances (default 1)")
    p.add_argument("--seconds", type=float, default=None, help="sim seconds per real-time run (default 60; --quick 20)")
    p.add_argument("--warmup", type=float, default=None, help="sim seconds left out while the district fills (default 30; "
                   "--quick 10)")
    p.add_argument("--fast-copies", type=counts, default=(1, 8, 16), help="district sizes for fast mode (default 1,8,16)")
    p.add_argument("--fast-seconds", type=float, default=60.0, help="sim seconds per fast run (default 60)")
    add_scheduling_option(p, "every process of the benchmark (the stack's, the floor's, the brokers and the C clients)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    parts = set(args.only.split(","))
    unknown = sorted(parts - set(PARTS))
    if unknown:
        hint = " (the floor is now part of capacity and cpu)" if "floor" in unknown else ""
        p.error(f"--only: no part {', '.join(unknown)} (expected some of {', '.join(PARTS)}){hint}")
    q = args.quick
    seconds = args.seconds if args.seconds is not None else 20.0 if q else 60.0
    warmup = args.warmup if args.warmup is not None else 10.0 if q else 30.0
    refine = args.refine if args.refine is not None else 1 if q else 3
    floor_s = args.floor_seconds if args.floor_seconds is not None else 5.0 if q else 20.0
    sizes = args.copies or ((2, 4) if q else tuple(doubling(8, 128)))
    small = [k for k in (*sizes, args.cpu_copies or args.workers, args.profile_copies or args.workers) if k < args.workers]
    if small:
        # fewer sites than workers: the fleet shards by vehicle, each worker simulates all the traffic, and the report's
        # vehicles present (the fleet's tick, summed over workers) count each vehicle once per worker
        p.error(f"district x {min(small)} is smaller than --workers {args.workers}: a district needs a site per fleet "
                "worker for its vehicle count to be right")
    if warmup + 5 > seconds:
        p.error(f"--warmup {warmup:g} and --seconds {seconds:g}: leave at least 5 steady seconds")
    if floor_s < 5:
        p.error(f"--floor-seconds {floor_s:g}: at least 5 (the broker's count of deliveries arrives every second or two)")
    tmp = Path(tempfile.mkdtemp(prefix="v2x-bench-"))
    print(f"python -m bench: {os.cpu_count()} cores; reports in {tmp}", flush=True)
    _SCHEDULING[:] = apply_scheduling(args)
    ceil = math.nan
    if parts & {"ceiling", "capacity"}:
        print("ceiling: mosquitto_pub -> Mosquitto -> mosquitto_sub", flush=True)
        ceil = ceiling(50_000, 1) if q else ceiling()
    stacks: dict[str, Search[RunResult]] = {}
    floors: dict[str, Search[FloorRun]] = {}
    want_runs = parts & {"capacity", "memory"}
    modes = args.modes if "capacity" in parts else (MODES[0],) if want_runs else ()
    for mode in modes:
        print(f"capacity, the stack ({mode}): four_way x K, {args.workers} fleet workers, {args.clouds} cloud instance(s), "
              f"{seconds:g} s each, steady from {warmup:g} s", flush=True)
        stacks[mode] = search(sizes, partial(realtime, workers=args.workers, clouds=args.clouds, seconds=seconds, warmup=warmup,
                                             tmp=tmp, mode=mode), refine)
        if "capacity" not in parts:
            continue
        held = stacks[mode].held
        pattern = held[1].pattern if held else None
        start = held[0] if held else sizes[0]
        print(f"capacity, the floor ({mode}): " + (
            f"{max(round(pattern.per_junction), 1)} vehicles per junction, {pattern.spat_share:.0%} hearing SPaT (the stack's, at "
            f"four_way x {pattern.copies})" if pattern else f"no stack size held: bench.floor's own pattern, {floor.PER_JUNCTION} "
            f"vehicles per junction, {floor.SPAT_SHARE:.0%} hearing SPaT") + f"; {floor_s:g} s measured each", flush=True)
        floors[mode] = search(args.floor_copies or doubling(start, (4 if q else 16) * start),
                              partial(floor_run, pattern=pattern, seconds=floor_s, workers=args.workers, mode=mode),
                              refine)
    cpu_rows: dict[str, tuple[int, tiers.TierCpu, tiers.TierCpu]] = {}
    if "cpu" in parts:
        sample = max(min(seconds - warmup - 2.0, 15.0), 3.0)
        for mode in args.modes:
            held = stacks[mode].held if mode in stacks else None
            k = args.cpu_copies or (held[0] if held else 14)
            print(f"cpu ({mode}): four_way x {k}, each process's CPU over {sample:g} s of the steady state, then the floor "
                  "at the same size", flush=True)
            st = tiers.stack(k, args.workers, seconds, warmup, sample, tmp, mode, _SCHEDULING)
            fl = tiers.floor_tiers(st, k, args.workers, sample, mode == "shared")
            print(f"  stack {st.vehicles:.0f} vehicles, {st.late_share:.1%} of its steps late; floor {fl.vehicles:.0f} vehicles, "
                  f"{fl.late_share:.1%} late", flush=True)
            cpu_rows[mode] = (k, st, fl)
    per_vehicle = stacks.get(MODES[0])
    first_fail = per_vehicle.failed if per_vehicle else None
    if "profile" in parts:
        profile_k = args.profile_copies or (first_fail[0] if first_fail else 16)
        print(f"profile: where the time goes at four_way x {profile_k} (per-vehicle connections)", flush=True)
        profile(profile_k, args.workers, args.clouds, seconds, warmup, tmp)
    if "fast" in parts:
        print("fast mode: every tier in one process, lockstep through Mosquitto", flush=True)
        fast_rows = [(k, *fast(k, args.fast_seconds, tmp)) for k in args.fast_copies]
    if "cluster" in parts:
        print("cluster: 3 nats-server nodes (MQTT 3.1.1, JetStream)", flush=True)
        clustered = cluster_qos1()
    print()
    if "capacity" in parts:
        print("\n".join(capacity_table(stacks, floors, ceil)))
        print()
        for s in stacks.values():
            held = s.held
            if held:
                print("\n".join(held[1].pattern.table()))
                print()
    for mode, (k, st, fl) in cpu_rows.items():
        print(f"CPU per vehicle-second, {mode}: the stack at four_way x {k} ({st.vehicles:.0f} vehicles, {st.late_share:.1%} of "
              f"steps late), the floor at {fl.vehicles:.0f} ({fl.late_share:.1%} late)")
        print()
        print("\n".join(tiers.table(st, fl)))
        print()
    print("| figure | measured | reference (same run) | ratio |")
    print("|---|---:|---:|---:|")
    if parts & {"ceiling", "capacity"}:
        print(f"| C-client ceiling, QoS 0 | {ceil:,.0f} msgs/s | | |")
    if "fast" in parts:
        for k, speed, veh in fast_rows:
            print(f"| fast mode, four_way x {k} ({veh} vehicles at the end) | {speed:.2f} sim s per wall s | 1.0 (real time) | {speed:.2f} |")
    if "cluster" in parts and clustered is not None:
        rate, got, retained = clustered
        print(f"| 3-node NATS cluster, QoS 1 burst node C -> node A (C clients, median of 3) | {rate:,.0f} msgs/s, {got:,} of "
              f"{3 * 5000:,} delivered; retained via C reached a wildcard subscriber on A: {'yes' if retained else 'no'} | | |")
    runs = [a.result for a in per_vehicle.attempts if not a.result.error] if per_vehicle else []
    if "memory" in parts and len(runs) >= 2:
        x = np.array([r.vehicles_max for r in runs], dtype=float)
        y = np.array([r.rss_mb for r in runs])
        slope, icpt = np.polyfit(x, y, 1)
        print(f"| fleet memory per vehicle (peak RSS of {args.workers} workers against vehicles held, {len(runs)} runs) | "
              f"{slope * 1024:.0f} kB per vehicle | {icpt:.0f} MB with none | |")
    return 0


def _repeated(s: Search[Any]) -> str:
    """What the repeats of a search came to, for the table."""
    if not s.repeats:
        return "none"
    return "; ".join(f"x {a.size} {'held' if a.result.ok else 'failed'}" for a in s.repeats)


def capacity_table(stacks: dict[str, Search[RunResult]], floors: dict[str, Search[FloorRun]], ceil: float) -> list[str]:
    """Markdown: per mode, the stack's and the floor's capacity, their ratio, the broker's deliveries at each beside the
    C-client ceiling, the smallest sizes that failed, and which sizes needed a repeat."""
    out = [f"real-time capacity: the fleet's 10 Hz tick held (at most {LATE_SHARE:.0%} of steps a step late) and "
           f"vehicle->cloud p99 <= {P99_MS:g} ms (\">=\": no size tried failed, a lower bound; \"?\": neither search found a "
           "size that fails, so the ratio of two lower bounds)",
           "",
           "| connections | stack: vehicles | floor: vehicles | stack / floor | broker deliveries at capacity, stack / floor "
           "| C-client ceiling | share of the ceiling, stack / floor | first that fails, stack / floor | repeats, stack / floor |",
           "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for mode, s in stacks.items():
        f = floors.get(mode)
        sh, sf = s.held, s.failed
        fh, ff = (f.held, f.failed) if f else (None, None)
        fr = fh[1].result if fh else None  # a size that held has a result
        sv, fv = (sh[1].vehicles if sh else 0.0), (float(fr.vehicles) if fr else math.nan)
        sd, fd = (sh[1].delivered_per_s if sh else math.nan), (fr.delivered_per_s if fr else math.nan)
        stack_cell = (f"{'' if sf else '>= '}{sv:,.0f} (x {sh[0]}, p99 {sh[1].v2c_p99_ms:.1f} ms, {sh[1].late_share:.1%} late)"
                      if sh else "none held")
        floor_cell = (f"{'' if ff else '>= '}{fv:,.0f} ({fh[0] if fh else 0} junctions, p99 {fr.p('vehicle->cloud', 99):.1f} ms, "
                      f"{fr.late_share:.1%} late)" if fr else "none held" if f else "not run")
        fails = (f"x {sf[0]} ({sf[1].error or f'{sf[1].vehicles:,.0f}'})" if sf else "none") + " / " + (
            f"{ff[0]} junctions ({ff[1]})" if ff else "none")
        # a capacity no failure bounded is a lower bound, and so the ratio is bounded on that side
        bound = {(True, True): "", (False, True): ">= ", (True, False): "<= "}.get((sf is not None, ff is not None), "? ")
        ratio = f"{bound}{sv / fv:.2f}" if sh and math.isfinite(fv) and fv else "n/a"
        out.append(f"| {mode} | {stack_cell} | {floor_cell} | {ratio} | {sd:,.0f} / {fd:,.0f} msgs/s | {ceil:,.0f} msgs/s "
                   f"| {sd / ceil:.2f} / {fd / ceil:.2f} | {fails} | {_repeated(s)} / {_repeated(f) if f else 'n/a'} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
