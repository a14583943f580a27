"""How fast the visualiser draws: frames per second with 2,000 vehicles and the HUD, at 1280x800.

    python -m bench.viz                 # headless, and in a real X window when Xvfb is installed
    python -m bench.viz --vehicles 500 --frames 300

Each measurement runs in its own process (SDL picks its video driver once per process):

- headless: SDL's dummy driver, a 1280x800 display surface, flipped every frame;
- window: a real X11 window on an Xvfb server (`apt-get install xvfb`), flipped every frame.

The scene is built from real encoded messages: corridor's MAP (three junctions), SPaT per
junction, 2,000 BSMs spread over its lanes. Every frame moves every vehicle (new positions
and headings in the scene's arrays), then draws the full frame: road (cached), RSU markers,
vehicles, signal heads with countdowns, HUD, legend. Its reference, in the same process:
2,000 plain polygons drawn and flipped the same way, with no scene. It also times the
ingest of BSMs (decode + scene update), which bounds how many messages per second the
window keeps up with.

Then the recorder (v2x.watch.record): BSMs per second written to MCAP (to memory) with the
Foxglove scene channels derived from them (v2x.watch.foxglove), against the raw messages
alone, in the same process; 2,000 vehicles x 20 steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

SIZE = (1280, 800)


def _scene(n: int) -> tuple[Any, list[tuple[str, bytes]]]:
    import numpy as np

    from v2x.core import messages as m
    from v2x.core import scenario
    from v2x.core.mapdata import build_map
    from v2x.core.network import LinkKind, Network
    from v2x.core.topics import Topics
    from v2x.net.station import Station, StepClock
    from v2x.watch.scene import Scene

    sc = scenario.load(scenario.resolve("corridor"))
    net = Network(sc)
    clock = StepClock(1_767_225_600.0)
    clock.t = 5.0
    topics = Topics()
    scene = Scene()
    for i, _ in enumerate(net.intersections):
        rsu = Station(f"rsu-{i}", m.SenderKind.RSU, clock)
        geo = build_map(net, i)
        scene.ingest(topics.map("0", geo.name), rsu.encode(m.MapData((geo,)), stream="map"), 0)
        groups = sorted({c.signal_group for ln in geo.lanes for c in ln.connections if c.signal_group})
        states = tuple(m.MovementState(g, (m.MovementEvent(
            (m.LightState.RED, m.LightState.PROTECTED_GREEN, m.LightState.YELLOW)[g % 3], m.TimeChange(0.0, 2.0, 40.0, 9.0 + g),
        ),)) for g in groups)
        state = m.IntersectionState(ref=geo.ref, name=geo.name, revision=1, status=frozenset(),
                                    timestamp_ms=clock.utc_us() // 1000, plan_id=0, states=states)
        scene.ingest(topics.spat("rsu", "0", geo.name), rsu.encode(m.Spat((state,)), stream="spat"), 0)
    links = [lk for lk in net.links if lk.kind != LinkKind.CONN]
    rng = np.random.default_rng(1)
    bsms = []
    for k in range(n):
        lk = links[k % len(links)]
        s = rng.uniform(0, lk.length)
        x, y, hd = net.xy_heading(np.array([lk.id]), np.array([s]))
        st = Station(f"veh-{k}", m.SenderKind.VEHICLE, clock)
        body = m.Bsm(position=net.frame.to_geo(float(x[0]), float(y[0])), speed_mps=float(rng.uniform(0, 15)),
                     heading_deg=float(np.degrees(hd[0])) % 360.0)
        bsms.append((topics.bsm("0", f"veh-{k}"), st.encode(body, stream="bsm")))
    for topic, payload in bsms:
        scene.ingest(topic, payload, time.time_ns())
    scene.tick()
    return scene, bsms


def _measure(frames: int, n: int) -> dict[str, Any]:
    """In this process: FPS of the visualiser's frame and of the plain-polygon reference; ingest rate."""
    import numpy as np
    import pygame

    from v2x.watch.render import Renderer, View

    pygame.display.init()
    pygame.font.init()
    screen = pygame.display.set_mode(SIZE)
    scene, bsms = _scene(n)

    t0 = time.perf_counter()
    for topic, payload in bsms:
        scene.ingest(topic, payload, time.time_ns())
    ingest_rate = len(bsms) / (time.perf_counter() - t0)

    r = Renderer(scene, View(*SIZE), "bench", "none")
    r.view.width, r.view.height = SIZE
    r.fit()
    b = scene.bounds()
    assert b is not None
    r.view.fit(b)  # everything on screen: no vehicle culled
    v = scene.vehicles
    rng = np.random.default_rng(2)
    r.draw(screen)
    t0 = time.perf_counter()
    for _ in range(frames):
        v.xy[: v.n] += rng.normal(0, 0.3, (v.n, 2))
        v.heading[: v.n] += 0.01
        pygame.event.pump()
        r.draw(screen)
        pygame.display.flip()
    viz_fps = frames / (time.perf_counter() - t0)
    on_screen = int(((r.view.to_screen(v.xy[: v.n]) >= 0).all(axis=1)
                     & (r.view.to_screen(v.xy[: v.n])[:, 0] < SIZE[0]) & (r.view.to_screen(v.xy[: v.n])[:, 1] < SIZE[1])).sum())

    # the reference: n plain polygons of the same size, no scene, no HUD
    pts = rng.uniform((0, 0), SIZE, (n, 2))
    quad = np.array([[-6, -3], [6, -3], [6, 3], [-6, 3]])
    t0 = time.perf_counter()
    for _ in range(frames):
        screen.fill((228, 226, 216))
        pts += rng.normal(0, 0.5, (n, 2))
        gc.disable()  # as the visualiser's frame does (v2x.watch.render.Renderer.draw): no collection mid-frame
        for p in (pts[:, None, :] + quad).tolist():
            pygame.draw.polygon(screen, (70, 110, 190), p)
        gc.enable()
        pygame.event.pump()
        pygame.display.flip()
    ref_fps = frames / (time.perf_counter() - t0)
    driver = pygame.display.get_driver()
    pygame.quit()
    return {"driver": driver, "viz_fps": viz_fps, "ref_fps": ref_fps, "vehicles": v.n, "on_screen": on_screen,
            "ingest_msgs_per_s": ingest_rate}


def _recorder(n: int, steps: int = 20, repeat: int = 3) -> tuple[float, float]:
    """BSMs per second through the recorder: (raw only, with the scene channels), medians of `repeat`."""
    import io

    from v2x.core import codec
    from v2x.core import messages as m
    from v2x.net.station import Station, StepClock
    from v2x.watch.record import Recorder

    _, bsms = _scene(n)
    frames = [(topic, codec.decode(payload)) for topic, payload in bsms]
    stepped = []
    for k in range(steps):  # one BSM per vehicle per 100 ms step
        clock = StepClock(1_767_225_600.0)
        clock.t = 5.0 + 0.1 * k
        stepped += [(topic, Station(f.header.sender_id, m.SenderKind.VEHICLE, clock).encode(f.body, stream="bsm"))
                    for topic, f in frames]
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):
        for scene in (False, True):
            rec = Recorder(io.BytesIO(), "sent", scene=scene)
            t0 = time.perf_counter()
            for topic, payload in stepped:
                rec.write(topic, payload, 0)
            rec.close()
            rates[scene].append(len(stepped) / (time.perf_counter() - t0))
    return statistics.median(rates[False]), statistics.median(rates[True])


def _child(mode: str, frames: int, n: int) -> dict[str, Any] | None:
    env = dict(os.environ, PYGAME_HIDE_SUPPORT_PROMPT="1")
    cmd = [sys.executable, "-m", "bench.viz", "--child", "--frames", str(frames), "--vehicles", str(n)]
    if mode == "headless":
        env["SDL_VIDEODRIVER"] = "dummy"
    else:
        env["SDL_VIDEODRIVER"] = "x11"
        cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {SIZE[0]}x{SIZE[1]}x24", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        print(f"{mode}: failed: {res.stderr[-1500:]}", file=sys.stderr)
        return None
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.viz", description=__doc__.split("\n\n")[0])
    p.add_argument("--vehicles", type=int, default=2000, help="vehicles on screen (default 2000)")
    p.add_argument("--frames", type=int, default=600, help="frames per measurement (default 600)")
    p.add_argument("--repeat", type=int, default=3, help="measurements per mode; medians are printed (default 3)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.frames, args.vehicles)))
        return 0
    modes = ["headless"] + (["window"] if shutil.which("xvfb-run") else [])
    if "window" not in modes:
        print("window: skipped, Xvfb is not installed (apt-get install xvfb)")
    print(f"{args.vehicles} vehicles, {SIZE[0]}x{SIZE[1]}, {args.frames} frames x {args.repeat} per mode")
    print(f"{'mode':9} {'driver':8} {'viz FPS':>9} {'reference FPS':>14} {'ratio':>6}  {'runs (viz FPS)':28} ingest msgs/s")
    for mode in modes:
        runs = [r for r in (_child(mode, args.frames, args.vehicles) for _ in range(args.repeat)) if r is not None]
        if not runs:
            continue
        assert all(r["on_screen"] == r["vehicles"] == args.vehicles for r in runs), runs
        viz = statistics.median(r["viz_fps"] for r in runs)
        ref = statistics.median(r["ref_fps"] for r in runs)
        ingest = statistics.median(r["ingest_msgs_per_s"] for r in runs)
        each = ", ".join(f"{r['viz_fps']:.0f}" for r in runs)
        print(f"{mode:9} {runs[0]['driver']:8} {viz:9.0f} {ref:14.0f} {viz / ref:6.2f}  {each:28} {ingest:,.0f}")
    raw, scene = _recorder(args.vehicles)
    print(f"recorder, BSMs/s to MCAP: raw only {raw:,.0f}, with the Foxglove scene {scene:,.0f} ({scene / raw:.2f}); "
          f"{args.vehicles} vehicles at 10 Hz send {args.vehicles * 10:,}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
