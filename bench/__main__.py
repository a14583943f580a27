"""Scale benchmark: how close the whole simulator comes to the broker's own limit on this machine.

    python -m bench                         # everything (about 20 minutes on 2 cores)
    python -m bench --only ceiling,fast     # parts: ceiling | capacity | profile | floor | fast | memory | cluster
    python -m bench --copies 8,16,32 --workers 2 --seconds 60

Every figure is measured in this run, each beside its reference:
  - ceiling: the broker's C-client ceiling, mosquitto_pub -> Mosquitto -> mosquitto_sub at
    QoS 0 with BSM-sized payloads (messages delivered per second, median of 3), on a
    Mosquitto configured as every run's (`set_tcp_nodelay true`);
  - capacity: real-time runs of four_way tiled into a district (`v2x run four_way --copies K
    --workers W --warmup ...`), K rising until the fleet no longer holds its 100 ms tick
    (more than 1% of its steps start a whole step late) or vehicle->cloud p99 exceeds
    50 ms, then K between the last that held and the first that failed (--refine); the
    capacity is the steady vehicle count (mean, 10 Hz BSMs each) of the largest K that
    holds both. Beside it: the stack's throughput there, as a share of the C-client
    ceiling and in the same unit: the broker's own count of messages it delivered
    ($SYS/broker/publish/messages/sent) per second of the steady state (and the messages
    the tiers published per second);
  - fast: `v2x run --fast` (every tier in one process, lockstep through the broker) on the
    districts: simulated seconds per wall second, and the vehicles at the end;
  - profile: one more run at the first district that fails, each process's CPU use (cores, from
    /proc, and ms of CPU per vehicle-second: per tier, beside bench.floor's same tiers) and, with
    py-spy installed, its busiest functions (`python -m bench.cloud_replay` measures the cloud's own
    work alone, on a recording, against another source tree);
  - floor: the stack's MQTT traffic alone (bench/floor.py): one gmqtt client per vehicle publishing
    BSMs at 10 Hz, RSUs publishing SPaT, the cloud hearing every BSM and relaying SPaT, nothing
    simulated; at the 2,000-vehicle target, and at the profiled district to set the stack's CPU
    per vehicle-second beside the floor's;
  - memory: the fleet processes' peak RSS against the vehicles they held, over the capacity
    runs: the slope (MB per vehicle) of a least-squares line, and its intercept;
  - cluster: a 3-node NATS cluster (`v2x cluster`): a QoS 1 burst from node C to a subscriber
    on node A, and a retained message through C reaching a later wildcard subscriber on A.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import floor
from bench.transport import Deliveries, c_client_throughput, cpu_s
from v2x.net.broker import MosquittoBroker

LATE_SHARE = 0.01  # steps that may start a whole step (100 ms) late: the fleet's p99 lag stays under its tick
P99_MS = 50.0  # vehicle->cloud target
TARGET_VEHICLES = 2000  # the real-time target
PARTS = ("ceiling", "capacity", "profile", "floor", "fast", "memory", "cluster")


@dataclass
class RunResult:
    copies: int
    vehicles: float
    late_share: float
    lag_max_ms: float
    v2c_p99_ms: float
    delivered_per_s: float
    published_per_s: float
    rss_mb: float
    vehicles_max: int
    ok: bool


def ceiling(n: int = 200_000, repeat: int = 3) -> float:
    with MosquittoBroker() as broker:
        port = int(broker.url.rsplit(":", 1)[1])
        runs = [c_client_throughput(port, n, 0) for _ in range(repeat)]
    print(f"  C clients, QoS 0, {n:,} x 60 B: " + ", ".join(f"{r:,.0f}" for r in runs) + " msgs/s", flush=True)
    return statistics.median(runs)


def _v2x_run(extra: list[str], report: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--report", str(report), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(report.read_text())
    return out


def realtime(copies: int, workers: int, clouds: int, seconds: float, warmup: float, tmp: Path) -> RunResult:
    """One real-time run on a broker of ours, whose own count of messages delivered ($SYS, every second) gives the
    stack's throughput in the same unit as the C-client ceiling: every delivery to every client (the V2V and
    shard-wide radios included), in the steady seconds."""
    with MosquittoBroker(extra_config="sys_interval 1") as broker:
        counter = Deliveries(broker)
        try:
            r = _v2x_run(["--broker", broker.url, "--copies", str(copies), "--workers", str(workers), "--clouds", str(clouds),
                          "--duration", f"{seconds:g}", "--warmup", f"{warmup:g}"], tmp / f"rt-{copies}-{workers}-{clouds}.json")
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
    p99 = v2c.get("p99", float("inf"))
    res = RunResult(
        copies, tick["vehicles_mean"] or 0.0, late, tick["lag_ms_max"] or 0.0, p99, delivered, sent * share / (seconds - warmup),
        float(r.get("fleet_peak_rss_mb") or 0.0), tick["vehicles_max"] or 0, late <= LATE_SHARE and p99 <= P99_MS,
    )
    print(
        f"  copies {copies:3d}: {res.vehicles:7.0f} vehicles  steps late {late:6.1%} (max lag {res.lag_max_ms:6.0f} ms)  "
        f"vehicle->cloud p99 {p99:7.1f} ms  "
        f"delivered {res.delivered_per_s:9,.0f}/s  published {res.published_per_s:8,.0f}/s  fleet RSS {res.rss_mb:6.0f} MB  "
        f"{'holds' if res.ok else 'FAILS'}",
        flush=True,
    )
    return res


def _tree(pid: int) -> dict[int, str]:
    """A process's descendants: pid -> command line."""
    children: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                cmd[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = cmd.get(c, "?")
            todo.append(c)
    return out


def _role(cmd: str) -> str:
    for key, role in (("mosquitto", "mosquitto"), (" fleet ", "fleet"), ("-m roadside", "roadside"), ("-m cloud", "cloud")):
        if key in cmd:
            return role + (f" {cmd.split('--shard ')[1].split()[0]}" if "--shard" in cmd else "")
    return cmd[:40]


def profile(copies: int, workers: int, clouds: int, seconds: float, warmup: float, tmp: Path, sample_s: float = 20.0) -> tuple[float, float]:
    """One real-time run with every process measured in its steady state: CPU seconds per wall second
    (from /proc), and py-spy's busiest functions (self time) per process. Returns (cores busy, vehicles)."""
    report = tmp / f"profile-{copies}.json"
    cmd = [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--report", str(report),
           "--copies", str(copies), "--workers", str(workers), "--clouds", str(clouds), "--duration", f"{seconds:g}",
           "--warmup", f"{warmup:g}"]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(warmup + 5.0)
    procs = {p: _role(c) for p, c in _tree(run.pid).items() if "py-spy" not in c}
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS), help="parts to run, comma-separated (default: all)")
    p.add_argument("--profile-copies", type=int, default=None, help="district size to profile (default: the first that fails)")
    p.add_argument("--copies", default="8,12,16,20,24,28,32", help="district sizes to try, rising (copies of four_way)")
    p.add_argument("--refine", type=int, default=2, help="runs that halve the gap between the last district that holds and the "
                   "first that fails (default 2)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="fleet processes (default: the cores)")
    p.add_argument("--clouds", type=int, default=1, help="cloud instances (default 1)")
    p.add_argument("--seconds", type=float, default=60.0, help="sim seconds per real-time run")
    p.add_argument("--warmup", type=float, default=30.0, help="sim seconds left out while the district fills")
    p.add_argument("--fast-copies", default="1,8,16", help="district sizes for fast mode")
    p.add_argument("--fast-seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    parts = set(args.only.split(","))
    unknown = sorted(parts - set(PARTS))
    if unknown:
        p.error(f"--only: no part {', '.join(unknown)} (expected some of {', '.join(PARTS)})")
    tmp = Path(tempfile.mkdtemp(prefix="v2x-bench-"))
    print(f"python -m bench: {os.cpu_count()} cores; reports in {tmp}", flush=True)
    ceil = float("nan")
    if "ceiling" in parts or "capacity" in parts:
        print("ceiling: mosquitto_pub -> Mosquitto -> mosquitto_sub", flush=True)
        ceil = ceiling()
    runs: list[RunResult] = []
    if "capacity" in parts or "memory" in parts:
        print(f"capacity: four_way x K, {args.workers} fleet workers, {args.clouds} cloud instance(s), {args.seconds:g} s each, steady from {args.warmup:g} s", flush=True)
        for k in (int(x) for x in args.copies.split(",")):
            res = realtime(k, args.workers, args.clouds, args.seconds, args.warmup, tmp)
            runs.append(res)
            if not res.ok:
                break
        # between the largest district that held and the first that failed: halve the interval, --refine times
        for _ in range(args.refine):
            lo = max((r.copies for r in runs if r.ok), default=0)
            hi = min((r.copies for r in runs if not r.ok), default=0)
            if not lo or hi - lo < 2:
                break
            print(f"  between x {lo} (holds) and x {hi} (fails):", flush=True)
            runs.append(realtime((lo + hi) // 2, args.workers, args.clouds, args.seconds, args.warmup, tmp))
    failed = [r for r in runs if not r.ok]
    first_fail = min(failed, key=lambda r: r.copies) if failed else None
    if "profile" in parts:
        profile_k = args.profile_copies or (first_fail.copies if first_fail else runs[-1].copies if runs else 16)
        print(f"profile: where the time goes at four_way x {profile_k}", flush=True)
        profiled = profile(profile_k, args.workers, args.clouds, args.seconds, args.warmup, tmp)
    if "floor" in parts:
        print("floor: the stack's MQTT traffic alone, one gmqtt client per vehicle (python -m bench.floor)", flush=True)
        sizes = floor.message_sizes()
        floors = [floor.run(v, 20.0, args.workers, sizes=sizes) for v in (TARGET_VEHICLES, *([round(profiled[1])] if "profile" in parts else []))]
        for f in floors:
            floor.report(f)
    if "fast" in parts:
        print("fast mode: every tier in one process, lockstep through Mosquitto", flush=True)
        fast_rows = [(k, *fast(k, args.fast_seconds, tmp)) for k in (int(x) for x in args.fast_copies.split(","))]
    if "cluster" in parts:
        print("cluster: 3 nats-server nodes (MQTT 3.1.1, JetStream)", flush=True)
        clustered = cluster_qos1()
    print()
    print("| figure | measured | reference (same run) | ratio |")
    print("|---|---:|---:|---:|")
    if "ceiling" in parts or "capacity" in parts:
        print(f"| C-client ceiling, QoS 0 | {ceil:,.0f} msgs/s | | |")
    held = [r for r in runs if r.ok]
    if "capacity" in parts:
        if held:
            best = max(held, key=lambda r: r.vehicles)
            print(f"| real-time capacity (10 Hz BSM, tick held, vehicle->cloud p99 <= {P99_MS:g} ms) | {best.vehicles:,.0f} vehicles "
                  f"(four_way x {best.copies}; p99 {best.v2c_p99_ms:.1f} ms, steps late {best.late_share:.1%}) | {TARGET_VEHICLES:,} target | "
                  f"{best.vehicles / TARGET_VEHICLES:.2f} |")
            print(f"| full-stack throughput there, messages the broker delivered | {best.delivered_per_s:,.0f} msgs/s "
                  f"(published {best.published_per_s:,.0f}/s) | {ceil:,.0f} msgs/s C clients | {best.delivered_per_s / ceil:.2f} |")
        else:
            print("| real-time capacity | not held at the smallest district | | |")
        if first_fail is not None:
            r = first_fail
            print(f"| first district that fails | four_way x {r.copies}: {r.vehicles:,.0f} vehicles, vehicle->cloud p99 {r.v2c_p99_ms:.1f} ms, "
                  f"steps late {r.late_share:.1%} | | |")
    if "floor" in parts:
        f = floors[0]
        print(f"| messaging floor at the target: {f.vehicles:,} vehicles, MQTT traffic only, one gmqtt client each (no simulation) | "
              f"{f.cores:.2f} cores busy; vehicle->cloud p99 {f.p('vehicle->cloud', 99):.1f} ms; steps late {f.late_share:.1%}; "
              f"broker delivered {f.delivered_per_s:,.0f} msgs/s | {os.cpu_count()} cores; {ceil:,.0f} msgs/s C clients | "
              f"{f.cores / (os.cpu_count() or 1):.2f}; {f.delivered_per_s / ceil:.2f} |")
        if "profile" in parts:
            g, (cores, veh) = floors[1], profiled
            print(f"| CPU per vehicle-second, whole stack at four_way x {profile_k} ({veh:.0f} vehicles) | {cores / veh * 1e3:.2f} ms | "
                  f"{g.cores / g.vehicles * 1e3:.2f} ms, messaging floor at {g.vehicles} vehicles | {cores / veh / (g.cores / g.vehicles):.1f} |")
    if "fast" in parts:
        for k, speed, veh in fast_rows:
            print(f"| fast mode, four_way x {k} ({veh} vehicles at the end) | {speed:.2f} sim s per wall s | 1.0 (real time) | {speed:.2f} |")
    if "cluster" in parts and clustered is not None:
        rate, got, retained = clustered
        print(f"| 3-node NATS cluster, QoS 1 burst node C -> node A (C clients, median of 3) | {rate:,.0f} msgs/s, {got:,} of "
              f"{3 * 5000:,} delivered; retained via C reached a wildcard subscriber on A: {'yes' if retained else 'no'} | | |")
    if "memory" in parts and len(runs) >= 2:
        x = np.array([r.vehicles_max for r in runs], dtype=float)
        y = np.array([r.rss_mb for r in runs])
        slope, icpt = np.polyfit(x, y, 1)
        print(f"| fleet memory per vehicle (peak RSS of {args.workers} workers against vehicles held, {len(runs)} runs) | "
              f"{slope * 1024:.0f} kB per vehicle | {icpt:.0f} MB with none | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
