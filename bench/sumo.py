"""SUMO benchmark: what the V2X stack costs on top of SUMO itself, on the bundled grid (docs/sumo.md).

    python -m bench.sumo                       # 3 demand levels, 120 sim s each, then a profile (a few minutes)
    python -m bench.sumo --scales 1 --seconds 30 --profile-seconds 0    # a quick look

Every figure is measured here, in this run, on the same network and demand (the grid's flows scaled by each
demand level, written to a route file beside a copy of the scenario):
  - SUMO alone: libsumo stepped at the scenario's step with SUMO's own light programs, no V2X;
  - the full V2X stack: `v2x run --fast` in this process (every vehicle an OBU with its own MQTT connection, an RSU
    per junction whose controller drives SUMO's light, the cloud), in lockstep through a private Mosquitto;
  - vehicle-steps per second of both (the vehicles present, summed over the steps, per wall second of the loop),
    and the overhead: SUMO alone's rate over the stack's;
  - where the stack's time goes: one more run of the highest demand under cProfile (slower than unprofiled; the
    shares, not the seconds, are the figure), its own time by part (SUMO, fleet, RSUs, cloud, plumbing, codec,
    event loop and sockets) and its busiest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import pstats
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

from v2x.core import scenario
from v2x.net.broker import MosquittoBroker
from v2x.net.connection import Connection

GRID = scenario.bundled_dir() / "grid.toml"
#: where a profiled function's file lies -> the part of the stack it is, first match wins
PARTS: tuple[tuple[str, str], ...] = (
    ("SUMO (libsumo, v2x/sumo)", r"libsumo|/v2x/sumo/"),
    ("fleet (v2x/vehicle)", r"/v2x/vehicle/"),
    ("RSUs (roadside)", r"/roadside/"),
    ("cloud (cloud)", r"/cloud/"),
    ("codec and protobuf", r"/v2x/core/codec|protobuf|_pb2|upb"),
    ("signal model and core (v2x/core)", r"/v2x/core/"),
    ("plumbing (v2x/net)", r"/v2x/net/"),
    ("MQTT client (gmqtt)", r"gmqtt"),
    ("event loop and sockets (asyncio)", r"asyncio|selectors|socket|<built-in method select"),
    ("numpy", r"numpy"),
)


@dataclasses.dataclass
class Rate:
    vehicle_steps: int
    wall_s: float
    spawned: int

    @property
    def per_s(self) -> float:
        return self.vehicle_steps / self.wall_s


def scaled(sc: scenario.Scenario, scale: float, folder: Path) -> scenario.Scenario:
    """The scenario with every flow's rate (SUMO's `period="exp(RATE)"`) times `scale`."""
    assert sc.sumo is not None
    routes = []
    for k, r in enumerate(sc.sumo.routes):
        text = re.sub(r'period="exp\(([0-9.eE+-]+)\)"', lambda mt: f'period="exp({float(mt.group(1)) * scale:.6g})"',
                      Path(r).read_text())
        out = folder / f"x{scale:g}-{k}.rou.xml"
        out.write_text(text)
        routes.append(str(out))
    return dataclasses.replace(sc, sumo=dataclasses.replace(sc.sumo, routes=tuple(routes)))


def sumo_alone(sc: scenario.Scenario, seconds: float) -> Rate:
    """libsumo on the scenario's network and demand, its own programs, nothing else."""
    import libsumo

    assert sc.sumo is not None
    libsumo.start(["sumo", "--net-file", sc.sumo.net, "--route-files", ",".join(sc.sumo.routes), "--step-length",
                   f"{sc.step_s:g}", "--seed", str(sc.seed), "--no-step-log", "true", "--no-warnings", "true"])
    try:
        vs, departed = 0, 0
        t0 = time.perf_counter()
        for _ in range(round(seconds / sc.step_s)):
            libsumo.simulationStep()
            vs += libsumo.vehicle.getIDCount()
            departed += libsumo.simulation.getDepartedNumber()
        return Rate(vs, time.perf_counter() - t0, departed)
    finally:
        libsumo.close()


def stack(sc: scenario.Scenario, seconds: float, url: str, profile: cProfile.Profile | None = None) -> Rate:
    """The full stack in fast mode, in this process: vehicle-steps over the wall time of the run (start to close)."""
    from v2x.run.fast import FastRun

    run = FastRun(sc, Connection(url, root=f"bench/sumo-{uuid.uuid4().hex[:8]}/v2x/v1"))
    count = [0]
    move = run.fleet.move

    def counted() -> None:
        move()
        count[0] += run.fleet.traffic.n

    run.fleet.move = counted  # type: ignore[method-assign]
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        asyncio.run(run.run(seconds))
    finally:
        if profile is not None:
            profile.disable()
    return Rate(count[0], time.perf_counter() - t0, run.fleet.traffic.stats.spawned)


def shares(profile: cProfile.Profile, top: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(own time by part of the stack, the `top` functions by own time), each as a share of the whole."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    parts: dict[str, float] = {}
    funcs = []
    def part_of(file: str, name: str) -> str:
        return next((p for p, pat in PARTS if re.search(pat, f"{file}:{name}")), "other")

    for (file, line, name), v in stats.items():
        own_part = part_of(file, name)
        callers = v[4]
        if file == "~" and own_part == "other" and callers:  # a builtin (dict.get, round): its callers' parts, by their share
            by_caller = sum(c[2] for c in callers.values()) or 1.0
            for (cf, _, cn), c in callers.items():
                part = part_of(cf, cn)
                parts[part] = parts.get(part, 0.0) + v[2] * c[2] / by_caller / total
        else:
            parts[own_part] = parts.get(own_part, 0.0) + v[2] / total
        short = re.sub(r".*/(site-packages|wt-[^/]+|main)/", "", file)
        funcs.append((f"{short}:{line}({name})", v[2] / total))
    funcs.sort(key=lambda f: -f[1])
    return sorted(parts.items(), key=lambda p: -p[1]), funcs[:top]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sumo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="0.5,1,2", help="demand levels: the grid's flows times each (default 0.5,1,2)")
    p.add_argument("--seconds", type=float, default=120.0, help="sim seconds per run (default 120)")
    p.add_argument("--profile-seconds", type=float, default=60.0, help="sim seconds of the profiled run (0: none)")
    p.add_argument("--top", type=int, default=15, help="functions listed in the profile")
    args = p.parse_args(argv)
    try:
        import libsumo  # noqa: F401
    except ImportError:
        print("python -m bench.sumo: SUMO is not installed: pip install -e '.[sumo]'")
        return 1
    scales = [float(x) for x in args.scales.split(",")]
    base = scenario.load(GRID)
    print(f"python -m bench.sumo: {os.cpu_count()} cores; the grid (6 junctions), {args.seconds:g} sim s per run, "
          f"step {base.step_s:g} s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="v2x-bench-sumo-") as tmp, MosquittoBroker() as broker:
        for scale in scales:
            sc = scaled(base, scale, Path(tmp))
            alone = sumo_alone(sc, args.seconds)
            full = stack(sc, args.seconds, broker.url)
            rows.append((scale, alone, full))
            print(f"  demand x {scale:g}: SUMO alone {alone.per_s:,.0f} vehicle-steps/s ({alone.vehicle_steps:,} in "
                  f"{alone.wall_s:.1f} s), full stack {full.per_s:,.0f} ({full.vehicle_steps:,} in {full.wall_s:.1f} s; "
                  f"{full.spawned} vehicles)", flush=True)
        if args.profile_seconds > 0:
            scale = max(scales)
            print(f"profile: the full stack at demand x {scale:g}, {args.profile_seconds:g} sim s under cProfile", flush=True)
            prof = cProfile.Profile()
            profiled = stack(scaled(base, scale, Path(tmp)), args.profile_seconds, broker.url, prof)
            by_part, funcs = shares(prof, args.top)
    print()
    print("| demand (x the grid's flows) | vehicles inserted (stack) | full stack, vehicle-steps/s | SUMO alone (same run), "
          "vehicle-steps/s | overhead (SUMO alone / stack) |")
    print("|---:|---:|---:|---:|---:|")
    for scale, alone, full in rows:
        print(f"| {scale:g} | {full.spawned} | {full.per_s:,.0f} | {alone.per_s:,.0f} | {alone.per_s / full.per_s:.1f} |")
    if args.profile_seconds > 0:
        print()
        print(f"Where the stack's time goes (cProfile, own time, demand x {max(scales):g}, {profiled.spawned} vehicles, "
              f"{profiled.wall_s:.1f} s wall profiled):")
        print()
        print("| part | share |")
        print("|---|---:|")
        for part, share in by_part:
            print(f"| {part} | {share:.1%} |")
        print()
        print("| function | own time share |")
        print("|---|---:|")
        for name, share in funcs:
            print(f"| `{name}` | {share:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
