"""CPU per message of the one codec (v2x/core/codec.py), each way, on real four_way messages.

    python -m bench.codec                         # this tree
    python -m bench.codec --against /tmp/base     # and another tree's (a `git worktree`), alternated

The messages: four_way x `--copies` driven offline for `--warmup` sim seconds, then, every 0.1 s step, each vehicle's
BSM, each RSU's SPaT (from its controller) and RSM (the BSMs it heard in range, by the RSU's own code), each under
a header as its station stamps it. What is timed is `codec.encode` of each frame and `codec.decode` of its bytes, in
process CPU time (`time.process_time`, which the machine's load hardly moves), per message: each of `--repeat`
rounds on messages of its own (a codec may keep what repeats, as a receiver's does over time, but not the very
message), the best round kept. "spat, again" is a SPaT body heard a second time under another header (the cloud's
relay of the RSU's, or one more vehicle near the junction): its decoding only (the relay sends the body's bytes on).

Beside the figures, two fingerprints: of every frame's bytes (the encoder's output) and of every decoded frame (its
repr: every value, floats exactly). Two trees whose codecs behave alike print the same two. With `--against`, each
tree runs in its own process (its tree first on the path), `--rounds` times in turn; the median of each is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
KINDS = ("bsm", "spat", "rsm")
CHUNK = 64  # messages timed at once


def corpus(copies: int, warmup_s: float, steps: int) -> dict[str, list[Any]]:
    """Frames of four_way x `copies` after `warmup_s`, over `steps` steps, by kind; "spat, again" holds the same SPaT
    bodies as "spat" under the cloud's header."""
    from roadside.service import RsuService
    from v2x.core import messages as m
    from v2x.core import scenario
    from v2x.core.signal.spat import intersection_state
    from v2x.core.topics import Topics
    from v2x.net.station import StepClock
    from v2x.net.transport import MemoryBroker, MemoryTransport
    from v2x.run.fast import FAST_EPOCH_S
    from v2x.run.offline import OfflineRun
    from v2x.vehicle.bsm import build_bsms

    sc = scenario.tile(scenario.load(scenario.resolve("four_way")), copies)
    run = OfflineRun(sc)
    clock = StepClock(FAST_EPOCH_S)
    rsus = [RsuService(run.net, i, MemoryTransport(MemoryBroker(), f"rsu-{i}"), Topics(), clock) for i in range(copies)]
    for _ in range(round(warmup_s / sc.step_s)):
        run.step()
    out: dict[str, list[Any]] = {k: [] for k in (*KINDS, "spat, again")}
    for k in range(steps):
        run.step()
        clock.t = run.traffic.t
        utc_us, sim_ms, seq = clock.utc_us(), round(clock.t * 1000), k + 1
        for vid, bsm in build_bsms(run.traffic, run.net.frame):
            frame = m.Frame(m.Header(f"veh-{vid}", m.SenderKind.VEHICLE, seq, utc_us, sim_ms), bsm)
            out["bsm"].append(frame)
            for rsu in rsus:
                rsu.handle("bsm", frame)
        for i, rsu in enumerate(rsus):
            spat = m.Spat((intersection_state(run.net, i, run.controllers[i], utc_us // 1000, revision=k, name=rsu.iid),))
            out["spat"].append(m.Frame(m.Header(rsu.id, m.SenderKind.RSU, seq, utc_us, sim_ms), spat))
            out["spat, again"].append(m.Frame(m.Header("cloud", m.SenderKind.CLOUD, seq, utc_us + 1, sim_ms), spat))
            out["rsm"].append(m.Frame(m.Header(rsu.id, m.SenderKind.RSU, seq, utc_us, sim_ms), rsu.rsm(clock.t)))
    return out


def measure(copies: int, warmup_s: float, steps: int, repeat: int) -> dict[str, Any]:
    """Per kind: the best round's CPU [us] per message to encode and to decode; the fingerprints; the sizes."""
    from v2x.core import codec

    frames = corpus(copies, warmup_s, steps * repeat)
    us: dict[str, dict[str, float]] = {}
    wire: dict[str, list[bytes]] = {}
    decoded: dict[str, list[Any]] = {}
    for kind, fs in frames.items():  # "spat" before "spat, again"
        per = len(fs) // repeat
        enc, dec = [], []
        for r in range(repeat):
            t_enc = t_dec = 0.0
            for at in range(r * per, (r + 1) * per, CHUNK):  # in chunks: a SPaT heard again is heard soon after
                end = min(at + CHUNK, (r + 1) * per)
                if kind == "spat, again":  # heard first on the RSU's path
                    for data in wire["spat"][at:end]:
                        codec.decode(data)
                t0 = time.process_time()
                out = [codec.encode(f) for f in fs[at:end]]  # each frame's first encoding, as its sender makes it
                t1 = time.process_time()
                back = [codec.decode(data) for data in out]
                t2 = time.process_time()
                t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
                wire.setdefault(kind, []).extend(out)
                decoded.setdefault(kind, []).extend(back)
            enc.append(t_enc / per * 1e6)
            dec.append(t_dec / per * 1e6)
        us[kind] = {"encode": min(enc), "decode": min(dec), "messages": per,
                    "bytes": round(sum(map(len, wire[kind])) / len(wire[kind]))}
    h_wire, h_back = hashlib.sha256(), hashlib.sha256()
    for kind in frames:
        for data in wire[kind]:
            h_wire.update(data)
        for back in decoded[kind]:
            h_back.update(repr(back).encode())
    return {"us": us, "wire": h_wire.hexdigest()[:16], "decoded": h_back.hexdigest()[:16]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4, help="copies of four_way (default 4)")
    ap.add_argument("--warmup", type=float, default=60.0, help="sim seconds driven before the messages (default 60)")
    ap.add_argument("--steps", type=int, default=100, help="steps of messages per round (default 100)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds in a process; the best is kept (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="with --against: processes per tree, in turn (default 3)")
    ap.add_argument("--against", type=Path, action="append", default=[], metavar="TREE",
                    help="also measure the codec of this source tree (a git worktree), in its own process")
    ap.add_argument("--json", action="store_true", help="print one JSON line (what --against reads)")
    args = ap.parse_args(argv)
    if min(args.copies, args.steps, args.repeat, args.rounds) < 1:
        ap.error("--copies, --steps, --repeat and --rounds must be at least 1")
    if args.json:
        print(json.dumps(measure(args.copies, args.warmup, args.steps, args.repeat)))
        return 0
    from bench import in_tree  # here, not at the top: a --json run may have another tree's `bench` on its path

    trees = [HERE.parent.parent, *args.against]
    for tree in trees:
        if not (tree / "v2x" / "core" / "codec.py").is_file():
            ap.error(f"--against {tree}: no v2x/core/codec.py there (expected a source tree of this project)")
    runs: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in trees}
    for _ in range(args.rounds if args.against else 1):  # the trees in turn: both see the machine's load alike
        for tree in trees:
            runs[tree].append(in_tree(str(HERE), tree, ["--copies", str(args.copies), "--warmup", str(args.warmup),
                                                        "--steps", str(args.steps), "--repeat", str(args.repeat), "--json"]))
    n = len(runs[trees[0]])
    print(f"four_way x {args.copies}, codec CPU per message [us], median of {n} process(es), each the best of "
          f"{args.repeat} rounds of {args.steps} steps:")
    head = "| message | way | " + " | ".join(str(t) for t in trees) + (" | ratio |" if len(trees) > 1 else " |")
    print(head)
    print("|---|---|" + "---:|" * (len(trees) + (len(trees) > 1)))
    ref = runs[trees[0]][0]["us"]
    for kind in ref:
        for way in ("encode", "decode") if kind != "spat, again" else ("decode",):
            med = [statistics.median(r["us"][kind][way] for r in runs[t]) for t in trees]
            ratio = f" {med[0] / med[1]:.2f} |" if len(med) > 1 and med[1] else ""
            cells = " | ".join(f"{v:.2f}" for v in med)
            print(f"| {kind} ({ref[kind]['bytes']} B, {ref[kind]['messages']:,} a round) | {way} | {cells} |{ratio}")
    for tree in trees:
        prints = {(r["wire"], r["decoded"]) for r in runs[tree]}
        print(f"  {tree}: fingerprints (bytes, decoded) {', '.join(f'{w} {d}' for w, d in sorted(prints))}")
    if len(trees) > 1:
        same = all({(r["wire"], r["decoded"]) for r in runs[t]} == {(r["wire"], r["decoded"]) for r in runs[trees[0]]}
                   for t in trees)
        print("ratio: this tree / the other (first --against); " + ("same bytes and values" if same else "BEHAVIOUR DIFFERS"))
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
