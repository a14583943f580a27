"""CPU per vehicle-second of each tier, the stack's against the messaging floor's, in one run.

    python -m bench.tiers                           # four_way x 14, 2 fleet workers, and the floor at that size
    python -m bench.tiers --copies 8 --no-floor

One real-time run of `v2x run four_way --copies K` on its own Mosquitto: after the warm-up every
process's CPU (user + system, from /proc) is read over `--sample` seconds and divided by the
vehicle-seconds the fleet simulated in that window (from the report's fleet tick: per sim second,
the vehicles and the steps, and how late the steps were, which places each sim second in wall
time). The fleet workers are summed into one "fleet" row. Then, unless `--no-floor`,
`bench.floor` at the same vehicle count gives the same tiers' CPU for the MQTT traffic alone
(bench/floor.py).

CPU time depends little on the machine's load, and so does this denominator: a fleet that falls
behind the wall clock on a busy machine simulates fewer vehicle-seconds in the window, and is
charged for those only. What it does not cover: the RSUs' and the cloud's SPaT, paced by the wall
clock, then weigh more per vehicle-second. The share of late steps is printed, flagged over 1%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import apply_scheduling, floor
from bench.capacity import LATE_SHARE
from bench.pattern import Pattern
from bench.transport import cpu_s
from v2x.core import scenario
from v2x.net.options import add_scheduling_option

TIERS = ("fleet", "roadside", "cloud", "mosquitto")


def descendants(pid: int) -> dict[int, str]:
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


def role(cmd: str) -> str:
    """A process's role in a run, from its command line ("fleet 0/2", "cloud", "mosquitto", ...)."""
    for key, name in (("mosquitto", "mosquitto"), (" fleet ", "fleet"), ("-m roadside", "roadside"), ("-m cloud", "cloud")):
        if key in cmd:
            return name + (f" {cmd.split('--shard ')[1].split()[0]}" if "--shard" in cmd else "")
    return cmd[:40]


@dataclass
class TierCpu:
    """One measured window: cores busy per tier, vehicles (vehicle-seconds simulated per wall second), and the fleet's
    share of late steps."""

    cores: dict[str, float]
    vehicles: float
    late_share: float
    spat_share: float = floor.SPAT_SHARE  # vehicles hearing SPaT (the stack's: bench.pattern)

    def ms_per_veh_s(self, tier: str) -> float:
        return self.cores.get(tier, 0.0) / self.vehicles * 1e3 if self.vehicles else math.nan


def _tier(role: str) -> str:
    """A process's tier: fleet workers ("fleet 0/2") are the fleet; `v2x run` itself hosts the fleet with one worker."""
    return role.split()[0] if role.split()[0] in TIERS else "run"


def stack(copies: int, workers: int, seconds: float, warmup: float, sample_s: float, tmp: Path,
          obu_connections: str = "per-vehicle", sched: Sequence[str] = ()) -> TierCpu:
    """One real-time run of four_way x `copies`, each tier's CPU over `sample_s` seconds of its steady state."""
    report = tmp / f"tiers-{copies}-{obu_connections}.json"
    cmd = [sys.executable, "-m", "v2x", "run", "four_way", "--headless", "--no-impairment", "--report", str(report),
           "--copies", str(copies), "--workers", str(workers), "--duration", f"{seconds:g}", "--warmup", f"{warmup:g}",
           "--obu-connections", obu_connections, *sched]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t_start = time.monotonic()
    tree: dict[int, str] = {}
    # with one worker `v2x run` hosts the fleet itself: no process of its own to wait for
    tiers = {"roadside", "cloud"} | ({"fleet"} if workers > 1 else set())
    while not tiers <= {_tier(role(c)) for c in tree.values()}:
        if run.poll() is not None or time.monotonic() - t_start > 120.0:
            run.kill()
            raise RuntimeError(f"{' '.join(cmd)}: its tiers' processes did not all start")
        time.sleep(0.5)
        tree = descendants(run.pid)
    # sim time 0 is the run's epoch, which `v2x run` hands each tier (--epoch): the window starts `warmup` after it
    epoch = next(float(c.split("--epoch ")[1].split()[0]) for c in tree.values() if "--epoch " in c)
    time.sleep(max(epoch + warmup - time.time(), 0.0))
    procs = {p: _tier(role(c)) for p, c in descendants(run.pid).items()}
    procs[run.pid] = "fleet" if workers == 1 else "run"
    w0, t0, cpu0 = time.time(), time.monotonic(), {p: cpu_s(p) for p in procs}
    time.sleep(sample_s)
    wall, w1 = time.monotonic() - t0, time.time()
    cores: dict[str, float] = {}
    for p, tier in procs.items():
        if Path(f"/proc/{p}").exists():
            cores[tier] = cores.get(tier, 0.0) + (cpu_s(p) - cpu0[p]) / wall
    _, err = run.communicate()
    if run.returncode != 0 or not report.exists():
        raise RuntimeError(f"{' '.join(cmd)} exited {run.returncode}:\n{err[-3000:]}")
    r = json.loads(report.read_text())
    step_s = scenario.load(scenario.resolve("four_way")).step_s
    # each sim second's row: [second, most lag [ms], vehicles (summed over workers), steps (summed), late steps]; it was
    # simulated at about epoch + second + lag on the wall clock
    rows = [row for row in r["fleet_tick"] if w0 <= r["epoch_utc_s"] + row[0] + row[1] / 1e3 < w1]
    vehicle_s = sum(n * k / workers * step_s for _, _, n, k, _ in rows)
    steps = sum(row[3] for row in rows)
    late = sum(row[4] for row in rows) / steps if steps else 1.0
    return TierCpu(cores, vehicle_s / wall, late, Pattern.of(r, math.nan, copies, obu_connections).spat_share)


def floor_tiers(s: TierCpu, copies: int, workers: int, seconds: float, shared: bool = False) -> TierCpu:
    """The messaging floor at the size of the stack's window `s` (its vehicles over `copies` junctions, its share of
    vehicles hearing SPaT): the same tiers' CPU for the stack's MQTT traffic alone (`shared`: in the shared-connection
    pattern)."""
    per = max(round(s.vehicles / copies), 1)
    r = floor.run(copies * per, seconds, workers, per, s.spat_share, shared=shared)
    cores: dict[str, float] = {"mosquitto": r.broker_cores}
    for part in r.parts:
        if part.wall_s:
            tier = part.role.split()[0]
            cores[tier] = cores.get(tier, 0.0) + part.cpu_s / part.wall_s
    return TierCpu(cores, float(r.vehicles), r.late_share)


def ops(repeat: int = 5) -> dict[str, float]:
    """CPU [us] of the roadside's and the fleet's per-message work in this process, on real messages of four_way after
    60 s (no broker, no socket: what the code costs, whatever the machine's load): the best of `repeat` rounds."""
    import asyncio

    from roadside.service import RsuService
    from v2x.core import messages as m
    from v2x.core.network import Network
    from v2x.core.signal.plans import controllers
    from v2x.core.signal.spat import intersection_state
    from v2x.core.topics import Topics, quadkey
    from v2x.core.trust import TrustRules
    from v2x.net.connection import Connection
    from v2x.net.reception import Reception
    from v2x.net.station import Clock, Station
    from v2x.net.transport import MemoryBroker, MemoryTransport, Message
    from v2x.run.offline import OfflineRun
    from v2x.vehicle.bsm import build_bsms
    from v2x.vehicle.fleet import Fleet, Radio

    sc = scenario.load(scenario.resolve("four_way"))
    run = OfflineRun(sc)
    for _ in range(round(60.0 / sc.step_s)):
        run.step()
    net, clock, topics, mem = Network(sc), Clock(), Topics(), MemoryBroker()
    # each car alone on a broker of its own: what it publishes is routed nowhere (no one else's cost in its figure)
    cars = {vid: Station(f"veh-{vid}", m.SenderKind.VEHICLE, clock, MemoryTransport(MemoryBroker(), f"veh-{vid}"))
            for vid in run.traffic.ids.tolist()}
    for st in cars.values():
        asyncio.run(st.transport.start())  # type: ignore[union-attr]
    rsu = RsuService(net, 0, MemoryTransport(mem, "rsu"), topics, clock)
    asyncio.run(rsu.transport.start())
    fleet = Fleet(sc, Connection("mqtt://127.0.0.1:1", impair=False), clock, transport_factory=lambda sid: MemoryTransport(mem, sid))
    for vid, st in cars.items():
        fleet.radios[vid] = fleet._by_sid[st.sender_id] = Radio(vid, st, fleet._belief(), ready=True)
    rsu_st, cloud_st, ctl = Station(rsu.id, m.SenderKind.RSU, clock), Station("cloud", m.SenderKind.CLOUD, clock), controllers(net)[0]
    spat_topics = (topics.spat("rsu", rsu.tile, rsu.iid), topics.spat("cloud", rsu.tile, rsu.iid))
    out: dict[str, float] = {}

    def best(name: str, per: int, work: Callable[[int], None]) -> None:
        """`work(i)` for rounds i = 0.. `repeat` - 1, each on messages of its own (a repeat would be a duplicate)."""
        times = []
        for i in range(repeat):
            t0 = time.process_time()
            work(i)
            times.append((time.process_time() - t0) / per * 1e6)
        out[name] = min(times)

    def publish_bsms() -> None:
        for vid, bsm in build_bsms(run.traffic, net.frame):
            cars[vid].publish(topics.bsm(quadkey(bsm.position.lat_deg, bsm.position.lon_deg), cars[vid].sender_id), bsm, expiry_s=1)

    rounds = 20

    def bsm_rounds(_: int) -> None:
        for _ in range(rounds):
            publish_bsms()
    best("fleet: build, encode and publish a BSM", rounds * len(cars), bsm_rounds)

    def bsm_batches() -> list[list[Message]]:
        """`repeat` batches of `rounds` rounds of BSMs, as a receiver hears them."""
        out = []
        for _ in range(repeat):
            batch = []
            for _ in range(rounds):
                for vid, bsm in build_bsms(run.traffic, net.frame):
                    topic = topics.bsm(quadkey(bsm.position.lat_deg, bsm.position.lon_deg), cars[vid].sender_id)
                    batch.append(Message(topic, cars[vid].encode(bsm, None, topic), 0, False, time.time_ns()))
            out.append(batch)
        return out

    heard = bsm_batches()

    def receive_bsms(i: int) -> None:
        for msg in heard[i]:
            rsu.accept(msg)
    best("roadside: receive a BSM (decode, check, measure, handle)", len(heard[0]), receive_bsms)
    cloud, heard = Reception("cloud", m.SenderKind.CLOUD, clock, trust=TrustRules(sc)), bsm_batches()

    def cloud_bsms(i: int) -> None:
        for msg in heard[i]:
            cloud.accept(msg)
    best("cloud: receive a BSM (decode, check, measure; the cloud's handling not included)", len(heard[0]), cloud_bsms)

    def ticks(_: int) -> None:
        for _ in range(rounds):
            rsu._next_s = None
            rsu.tick(clock.sim_s())
    best(f"roadside: one tick (SPaT, and RSM of {len(rsu.heard)} road users: built, encoded, published)", rounds, ticks)

    def spat_deliveries(_: int) -> None:
        for k in range(rounds):
            state = m.Spat((intersection_state(net, 0, ctl, clock.utc_us() // 1000, revision=k % 128),))
            for station, topic in ((rsu_st, spat_topics[0]), (cloud_st, spat_topics[1])):
                payload = station.encode(state, None, topic)
                for radio in fleet.radios.values():  # each vehicle its own copy of the bytes, as off its own socket
                    fleet._handle(radio, Message(topic, bytes(bytearray(payload)), 0, False, time.time_ns()))
    best("fleet: a SPaT delivered to a vehicle (both paths; building the SPaT included)", 2 * rounds * len(cars), spat_deliveries)
    spats = []  # more rounds of SPaT, both paths, each vehicle its own copy of the bytes
    for i in range(repeat):
        batch = []
        for k in range(rounds):
            state = m.Spat((intersection_state(net, 0, ctl, clock.utc_us() // 1000, revision=(k + i * rounds) % 128),))
            for station, topic in ((rsu_st, spat_topics[0]), (cloud_st, spat_topics[1])):
                payload = station.encode(state, None, topic)
                batch += [(radio, Message(topic, bytes(bytearray(payload)), 0, False, time.time_ns())) for radio in fleet.radios.values()]
        spats.append(batch)

    def spat_receptions(i: int) -> None:
        for radio, msg in spats[i]:
            fleet._handle(radio, msg)
    best("fleet: a SPaT taken by a vehicle (both paths; decoded once for all, checked, measured, believed)", len(spats[0]), spat_receptions)
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def table(s: TierCpu, f: TierCpu | None) -> list[str]:
    """Markdown: per process, the stack's cores and CPU per vehicle-second beside the floor's, and their ratio (without
    a floor, `--no-floor`: the stack's columns alone)."""
    out = ["| process | stack (cores) | stack (ms CPU per vehicle-second) |" + (" floor (ms per vehicle-second) | ratio |" if f is not None else ""),
           "|---|---:|---:|" + ("---:|---:|" if f is not None else "")]

    def row(name: str, cores: float, ms: float, ref: float) -> str:
        return f"| {name} | {cores:.3f} | {ms:.2f} |" + (f" {ref:.2f} | {_ratio(ms, ref):.1f} |" if f is not None else "")

    for tier in (*TIERS, "run"):
        if tier not in s.cores:
            continue
        ms = s.ms_per_veh_s(tier)
        out.append(row(tier, s.cores[tier], ms, f.ms_per_veh_s(tier) if f is not None and tier in f.cores else math.nan))
    total = sum(s.cores.values())
    ms = total / s.vehicles * 1e3 if s.vehicles else math.nan
    out.append(row("all", total, ms, sum(f.cores.values()) / f.vehicles * 1e3 if f is not None and f.vehicles else math.nan))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tiers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=14, help="copies of four_way (default 14)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="fleet processes (default: the cores)")
    p.add_argument("--seconds", type=float, default=50.0, help="sim seconds of the run")
    p.add_argument("--warmup", type=float, default=30.0, help="sim seconds before the window, while the district fills")
    p.add_argument("--sample", type=float, default=15.0, help="seconds measured, from --warmup on")
    p.add_argument("--no-floor", action="store_true", help="skip the messaging floor at the same size")
    p.add_argument("--obu-connections", choices=floor.MODES, default=floor.MODES[0], help="as `v2x run`'s; the floor "
                   "follows the same pattern")
    add_scheduling_option(p, "every process of the benchmark (the stack's, the floor's, the brokers)")
    p.add_argument("--ops", action="store_true", help="instead: CPU of the roadside's and the fleet's per-message work, in "
                   "this process on real messages (no broker, no socket), which the machine's load hardly moves")
    args = p.parse_args(argv)
    if args.ops:
        for name, us in ops().items():
            print(f"  {us:8.1f} us  {name}")
        return 0
    if args.copies < args.workers:  # sharded by vehicle: every worker simulates all the traffic, and counts it
        p.error(f"--copies {args.copies} is smaller than --workers {args.workers}: a site per fleet worker, for the vehicle count")
    if args.warmup + args.sample > args.seconds:
        p.error("--warmup + --sample must fit in --seconds")
    tmp = Path(tempfile.mkdtemp(prefix="v2x-tiers-"))
    sched = apply_scheduling(args)
    s = stack(args.copies, args.workers, args.seconds, args.warmup, args.sample, tmp, args.obu_connections, sched)
    shared = args.obu_connections == "shared"
    f = None if args.no_floor else floor_tiers(s, args.copies, args.workers, args.sample, shared)
    flag = "" if s.late_share <= LATE_SHARE else "  (behind real time: the RSUs' and the cloud's wall-clock work then weighs more per vehicle-second)"
    print(f"four_way x {args.copies}, {args.obu_connections}, {args.workers} fleet worker{'s' if args.workers != 1 else ''}: {s.vehicles:.0f} vehicles, {s.late_share:.1%} of fleet steps late{flag}")
    if f is not None:
        print(f"floor at {f.vehicles:.0f} vehicles: {f.late_share:.1%} of its steps late")
    print()
    print("\n".join(table(s, f)))
    return 0 if s.vehicles else 1


if __name__ == "__main__":
    sys.exit(main())
