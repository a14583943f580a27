"""A tier's own CPU per vehicle-second, on recorded traffic, and what it published: the cloud, or the roadside.

    python -m v2x run four_way --copies 14 --fast --duration 60 --headless --record x14.mcap
    python -m bench.replay x14.mcap                                  # this tree's cloud
    python -m bench.replay x14.mcap --against /tmp/base              # and another tree's (a `git worktree`), same run
    python -m bench.replay x14.mcap --tier roadside                  # the RSUs of every intersection instead

A fast run's recording (its log times are sim time on the fast epoch) is played into the tier's services over an
in-process transport, step by step as the fast driver does it (`receive`, then `tick`): each step's messages are
those each service subscribes to, logged in that step. For the cloud that is one CloudService; for the roadside,
one RsuService per intersection, each on its own transport, as the roadside process runs them. What is measured is
the tier's own work per message (decode, checks, what it keeps, its periodic work: the cloud's picture, misbehaviour
checks and SPaT relay; an RSU's signal controller, SPaT and RSM), without sockets: process CPU time
(`time.process_time`, so other load on the machine matters little) over the vehicle-seconds the BSMs say were
driven (the distinct BSM senders of each step, times the step). Played `--repeat` times, the trees in turn
(each play in a new process); the least CPU of each is kept.

Beside the figure, a fingerprint of the tier's behaviour: a hash of every message it published (topic and bytes,
per topic in order) and of its summaries (and the cloud's event log). Two trees that behave alike print the same
fingerprint. With `--against`, each tree runs in its own process (its tree first on the path) and the two are
printed together. (`python -m bench.cloud_replay` is the cloud's form of this, kept for the commands in the docs.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


async def _start(pairs: list[tuple[Any, Any]]) -> None:
    """Each service connects and subscribes as it does on a broker."""
    for transport, svc in pairs:
        await transport.start()
        await svc.start()


def measure(recording: Path, scenario: str, copies: int, step_s: float, repeat: int, tier: str = "cloud") -> dict[str, object]:
    """Play `recording` into the tier's services `repeat` times: the least CPU [s], vehicle-seconds, and the
    fingerprint."""
    from v2x.core import scenario as sc
    from v2x.core.network import Network
    from v2x.core.topics import kind_of
    from v2x.net.transport import Message
    from v2x.run.fast import FAST_EPOCH_S
    from v2x.watch.record import read

    net = Network(sc.tile(sc.load(sc.resolve(scenario)), copies))
    epoch_ns = round(FAST_EPOCH_S * 1e9)
    step_ns = round(step_s * 1e9)
    steps: dict[int, list[Message]] = defaultdict(list)
    senders: dict[int, set[str]] = defaultdict(set)
    for rec in read(recording):
        k = -(-(rec.log_time_ns - epoch_ns) // step_ns)  # the step whose receive takes it (fast mode: logged at its end)
        steps[k].append(Message(rec.topic, rec.payload, 0, False, rec.log_time_ns))
        if kind_of(rec.topic) == "bsm":
            senders[k].add(rec.topic.rsplit("/", 1)[-1])
    vehicle_s = sum(len(s) for s in senders.values()) * step_s
    if not vehicle_s:
        raise SystemExit(f"{recording}: no BSM in it (expected the recording of a fast run: `v2x run ... --fast --record`)")
    # the garbage collector as the tier's process sets it (`long_running`, where the tree has it), after the recording
    # is read: no part of the tier's state, its hundreds of thousands of messages are kept out of full collections;
    # the caller's collector as it was afterwards (a test calls this in its own process)
    thresholds = gc.get_threshold()
    try:
        from v2x.net.options import long_running
    except ImportError:  # a tree from before it: CPython's defaults
        gc.collect()
        gc.freeze()
    else:
        long_running()
    try:
        return _play(net, steps, step_s, repeat, tier, vehicle_s)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _play(net: Any, steps: dict[int, list[Any]], step_s: float, repeat: int, tier: str, vehicle_s: float) -> dict[str, object]:
    """`measure`'s plays of the recording's steps."""
    from cloud.service import CloudService
    from roadside.service import RsuService
    from v2x.core.topics import Topics
    from v2x.net.station import StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport
    from v2x.run.fast import FAST_EPOCH_S


    class Kept(MemoryTransport):
        """A service's transport: what it publishes is kept, in order, and goes nowhere (no broker's routing is
        measured, and the recording alone reaches the services)."""

        def __init__(self, broker: MemoryBroker, client_id: str) -> None:
            super().__init__(broker, client_id)
            self.out: list[tuple[str, bytes]] = []

        def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: int | None = None) -> bool:
            self.stats.published += 1
            self.stats.sent += 1
            self.out.append((topic, payload))
            return True

    best = float("inf")
    fingerprint = ""
    published: dict[str, list[bytes]] = defaultdict(list)
    for _ in range(repeat):
        broker = MemoryBroker()
        clock = StepClock(FAST_EPOCH_S)
        services: list[CloudService | RsuService] = []
        pairs = []
        if tier == "cloud":
            transport = Kept(broker, "cloud")
            services.append(CloudService(net, transport, Topics(), clock, events=None))
            pairs.append((transport, services[-1]))
        else:
            for i in range(len(net.scenario.sites)):
                transport = Kept(broker, net.scenario.rsu_of(i).id)
                services.append(RsuService(net, i, transport, Topics(), clock))
                pairs.append((transport, services[-1]))
        asyncio.run(_start(pairs))
        cpu = 0.0
        for k in range(max(steps) + 1):
            clock.t = k * step_s
            for msg in steps.get(k, ()):
                for transport, _ in pairs:
                    transport.deliver(msg)  # only what each service subscribes to
            t0 = time.process_time()
            for svc in services:
                svc.receive()
            for svc in services:
                svc.tick(clock.t)
            cpu += time.process_time() - t0
        best = min(best, cpu)
        published = defaultdict(list)
        for transport, _ in pairs:
            for topic, payload in transport.out:
                published[topic].append(payload)
        h = hashlib.sha256()
        for topic in sorted(published):
            h.update(topic.encode())
            for payload in published[topic]:
                h.update(payload)
        for svc in services:
            summary = svc.summary().to_json()
            summary.pop("measurements", None)  # latency figures: the same inputs, but the summary's shape is not behaviour
            h.update(json.dumps(summary, sort_keys=True, default=str).encode())
            if isinstance(svc, CloudService):
                h.update(json.dumps(svc.event_log, sort_keys=True, default=str).encode())
        fingerprint = h.hexdigest()[:16]
    return {"cpu_s": best, "vehicle_s": vehicle_s, "ms_per_vehicle_s": best / vehicle_s * 1e3, "fingerprint": fingerprint,
            "published": sum(len(v) for v in published.values())}


def _at_least_one(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return n


def main(argv: list[str] | None = None, tier: str = "cloud") -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recording", type=Path, help="MCAP of a fast run (`v2x run ... --fast --record PATH`)")
    ap.add_argument("--tier", choices=["cloud", "roadside"], default=tier,
                    help=f"the tier played: one cloud, or an RSU per intersection (default {tier})")
    ap.add_argument("--scenario", default="four_way", help="the recorded run's scenario (default four_way)")
    ap.add_argument("--copies", type=int, default=14, help="the recorded run's --copies (default 14)")
    ap.add_argument("--step", type=float, default=0.1, help="the recorded run's step [s] (default 0.1)")
    ap.add_argument("--repeat", type=_at_least_one, default=3, help="plays of the recording; the least CPU is kept (default 3)")
    ap.add_argument("--against", type=Path, action="append", default=[], metavar="TREE",
                    help="also measure the tier of this source tree (a git worktree), in its own process")
    ap.add_argument("--json", action="store_true", help="print one JSON line (what --against reads)")
    args = ap.parse_args(argv)
    if not args.recording.is_file():
        ap.error(f"{args.recording}: no such recording")
    if args.json:
        print(json.dumps(measure(args.recording, args.scenario, args.copies, args.step, args.repeat, args.tier)))
        return 0
    from bench import in_tree  # here, not at the top: a --json run may have another tree's `bench` on its path

    trees = [HERE.parent.parent, *args.against]
    for tree in trees:
        if not (tree / "cloud" / "service.py").is_file():
            ap.error(f"--against {tree}: no cloud/service.py there (expected a source tree of this project)")
    best: dict[Path, dict[str, Any]] = {}
    for _ in range(args.repeat):  # the trees in turn, once a round: both see the machine's load alike
        for tree in trees:
            r = in_tree(str(HERE), tree, [str(args.recording), "--scenario", args.scenario, "--copies", str(args.copies),
                                          "--step", str(args.step), "--repeat", "1", "--tier", args.tier, "--json"])
            if tree in best and r["fingerprint"] != best[tree]["fingerprint"]:
                raise SystemExit(f"{tree}: two plays of one recording behaved differently (the {args.tier} is not deterministic)")
            if tree not in best or r["cpu_s"] < best[tree]["cpu_s"]:
                best[tree] = r
    rows = list(best.items())
    print(f"{args.tier} replay of {args.recording} ({args.scenario} x {args.copies}), least CPU of {args.repeat}:")
    for tree, r in rows:
        print(f"  {tree!s:<40} {r['ms_per_vehicle_s']:6.3f} ms CPU per vehicle-second ({r['cpu_s']:.2f} s over "
              f"{r['vehicle_s']:,.0f} vehicle-s); published {r['published']:,}; fingerprint {r['fingerprint']}")
    if len(rows) > 1:
        base = rows[0][1]
        for tree, r in rows[1:]:
            same = "same behaviour" if r["fingerprint"] == base["fingerprint"] else "BEHAVIOUR DIFFERS"
            print(f"  {tree} / this tree: {r['ms_per_vehicle_s'] / base['ms_per_vehicle_s']:.2f}x the CPU; {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
