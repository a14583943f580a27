"""`v2x viz` and `v2x replay`: the Pygame window, fed live from a broker or from a recording.

The visualiser is nothing but a subscriber: it needs no scenario file. Messages go into a
`Scene` (v2x.watch.scene), a `Renderer` (v2x.watch.render) draws it. Live, it subscribes to
`<root>/#`; from a recording, it plays the messages at their recorded pace (`--speed`).

Keys: drag to pan, mouse wheel to zoom, click a vehicle for its panel (or an RSU for its
radio range), `c` colours by speed or by state, `f` the message-flow overlay, `w` every
RSU's radio range, space pauses (the picture holds still; clicks, pan and zoom still
work), `s` saves a screenshot, `r` fits the view, `q` or Esc quits. The window is resizable.

`--snapshot PATH.png` writes the final frame: on a machine with no display it renders
offscreen (SDL's dummy driver), so it works on CI. When `v2x run` starts the visualiser,
it sends SIGUSR1 when the run ends: the visualiser takes in what is still arriving, writes
the snapshot, and exits if it has no window (a window stays open until closed).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2x.core.errors import BrokerError
from v2x.core.topics import DEFAULT_ROOT
from v2x.net.connection import new_run_id
from v2x.net.options import add_credentials_option, add_run_id_option, credentials
from v2x.net.security import VIZ_LOGIN, login
from v2x.net.transport import MqttTransport
from v2x.watch.record import Recorded, RecordingError, drain, read, replay_broker_main, stop_event
from v2x.watch.scene import Scene

FPS = 60  # frames per second drawn in a window
DEFAULT_SIZE = (1280, 800)


def display_available() -> bool:
    """Whether a window can open here (an X11 or Wayland display, or a non-Linux desktop)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1280x800") from None
    if not (320 <= w <= 7680 and 240 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"{text!r}: size out of range (320x240 .. 7680x4320)")
    return w, h


@dataclass
class Window:
    """The pygame side: a window (or an offscreen surface), input, frames, screenshots."""

    scene: Scene
    headless: bool
    size: tuple[int, int] = DEFAULT_SIZE
    mode_label: str = "live"
    broker_label: str = ""
    colour_mode: str = "speed"
    flows: bool = False
    paused: bool = False
    closed: bool = False
    frames: int = 0
    _drag: tuple[int, int] | None = None
    _moved: bool = False
    _dirty: bool = False  # paused: an input changed what the frame shows
    _renderer: Any = None
    _surface: Any = None
    _events: list[str] = field(default_factory=list)

    def open(self) -> None:
        if self.headless:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        from v2x.watch.render import Renderer, View

        pygame.display.init()
        pygame.font.init()
        if self.headless:
            self._surface = pygame.Surface(self.size)
        else:
            self._surface = pygame.display.set_mode(self.size, pygame.RESIZABLE)
            pygame.display.set_caption("v2x viz")
        self._renderer = Renderer(self.scene, View(*self.size), self.mode_label, self.broker_label, self.colour_mode, self.flows)

    def close(self) -> None:
        import pygame

        pygame.quit()

    def label(self, mode: str) -> None:
        """Say what the window shows (the HUD's title): live, a replay, and whether it ended."""
        if mode != self._renderer.mode_label:
            self._renderer.mode_label = mode
            self._renderer.invalidate_hud()
            self._dirty = True

    @property
    def title(self) -> str:
        return str(self._renderer.title())

    def frame(self) -> None:
        """Handle input, then draw and show: every frame, or when paused, only after an input that changes it."""
        if self.headless:
            return
        import pygame

        for ev in pygame.event.get():
            self._handle(ev)
        if not self.paused:
            self.scene.tick()
        elif not self._dirty:
            return
        self._dirty = False
        self._surface = pygame.display.get_surface()
        self._renderer.draw(self._surface)
        pygame.display.flip()
        self.frames += 1

    def pause(self, paused: bool) -> None:
        """Paused, the renderer draws a copy of the scene as it was, while messages keep arriving in the live one."""
        self.paused = self._dirty = paused
        self._renderer.paused = paused
        self._renderer.scene = copy.deepcopy(self.scene) if paused else self.scene
        self._renderer.invalidate_hud()
        self._events.append("pause" if paused else "resume")

    def _handle(self, ev: Any) -> None:
        import pygame

        r = self._renderer
        self._dirty = self._dirty or ev.type not in (pygame.MOUSEMOTION, pygame.MOUSEBUTTONDOWN)
        if ev.type == pygame.QUIT:
            self.closed = True
        elif ev.type == pygame.KEYDOWN:
            if ev.key in (pygame.K_q, pygame.K_ESCAPE):
                self.closed = True
            elif ev.key == pygame.K_SPACE:
                self.pause(not self.paused)
            elif ev.key == pygame.K_c:
                r.colour_mode = "state" if r.colour_mode == "speed" else "speed"
            elif ev.key == pygame.K_f:
                r.show_flows = not r.show_flows
            elif ev.key == pygame.K_w:
                r.show_ranges = not r.show_ranges
            elif ev.key == pygame.K_r:
                r.fit()
            elif ev.key == pygame.K_s:
                path = Path(time.strftime("v2x-viz-%Y%m%d-%H%M%S.png"))
                pygame.image.save(self._surface, str(path))
                print(f"screenshot: {path}", file=sys.stderr)
        elif ev.type == pygame.MOUSEBUTTONDOWN and ev.button == 1:
            self._drag, self._moved = ev.pos, False
        elif ev.type == pygame.MOUSEMOTION and self._drag is not None:
            dx, dy = ev.pos[0] - self._drag[0], ev.pos[1] - self._drag[1]
            if self._moved or abs(dx) + abs(dy) > 3:
                r.view.pan(dx, dy)
                self._drag, self._moved, self._dirty = ev.pos, True, True
        elif ev.type == pygame.MOUSEMOTION:
            hovered = r.pick_rsu(*ev.pos)
            self._dirty = self._dirty or hovered != r.hovered_rsu
            r.hovered_rsu = hovered
        elif ev.type == pygame.MOUSEBUTTONUP and ev.button == 1:
            if not self._moved:
                r.selected = r.pick(*ev.pos)
                r.selected_rsu = None if r.selected else r.pick_rsu(*ev.pos)
            self._drag = None
        elif ev.type == pygame.MOUSEWHEEL:
            r.view.zoom(1.2 ** ev.y, pygame.mouse.get_pos())

    def snapshot(self, path: Path) -> None:
        """Draw the current state and write it as a PNG."""
        import pygame

        self.scene.tick()
        self._renderer.draw(self._surface)
        path.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(self._surface, str(path))


def _summary(scene: Scene, **extra: Any) -> dict[str, Any]:
    return {
        "event": "summary", "received": dict(sorted(scene.received.items())), "errors": dict(scene.errors),
        "vehicles": scene.vehicles.n, "intersections": sorted(scene.intersections), "hazards": len(scene.hazards),
        "sim_s": scene.now_ms / 1000,
        # as the HUD shows it: measured here on the wall clock, through the broker (no link model), the last messages per hop
        "latency_ms": {hop: {"p50": round(v[0], 2), "p99": round(v[1], 2)} for hop, v in scene.latency_ms().items() if v is not None},
        **extra,
    }


# -- live -----------------------------------------------------------------------------------------


async def live(args: argparse.Namespace) -> int:
    root = args.root.strip("/")
    scene = Scene(root)
    win = Window(scene, args.headless, args.size, "live", args.broker_label or args.broker, args.colour, args.flows)
    win.open()
    stop = stop_event()
    ended = stop_event(signal.SIGUSR1)  # `v2x run`: the run is over
    logging.getLogger("gmqtt").setLevel(logging.ERROR)  # reconnect chatter once the run's broker is gone
    try:
        url = login(credentials(args, "v2x viz", ("observer",)), args.broker, VIZ_LOGIN)
        async with MqttTransport(url, f"{args.run_id or new_run_id()}-viz", inbox=1_000_000) as t:
            await t.subscribe(f"{root}/#", qos=1)
            await t.subscribe("$SYS/broker/version", qos=0)
            print(json.dumps({"event": "ready"}), flush=True)
            deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
            period = 1.0 / FPS
            while not (stop.is_set() or win.closed or ended.is_set()):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                t_frame = time.monotonic()
                for msg in t.receive(100_000):
                    scene.ingest(msg.topic, msg.payload, msg.rx_ns)
                if not t.connected:
                    win.label("live · broker disconnected")
                win.frame()
                await asyncio.sleep(max(period - (time.monotonic() - t_frame), 0.001) if not win.headless else 0.05)
            if not win.closed:  # the run ended (or a signal): take in what is still on its way for the last frame
                await drain(t, scene.ingest)
            dropped = t.stats.dropped_in
        if ended.is_set():  # the picture is the run's last state: not live any more
            win.label(f"live · run ended at sim {scene.now_ms / 1000:.0f} s")
        if args.snapshot is not None:
            win.snapshot(args.snapshot)
            print(f"snapshot: {args.snapshot}", file=sys.stderr)
        print(json.dumps(_summary(scene, dropped=dropped, frames=win.frames, title=win.title)), flush=True)
        if ended.is_set() and not win.headless:  # the run is over: keep showing its last state
            win.label(f"live · run ended at sim {scene.now_ms / 1000:.0f} s · close the window to exit")
            while not (stop.is_set() or win.closed):
                win.frame()
                await asyncio.sleep(1.0 / 30)
    finally:
        win.close()
    return 0


# -- replay ---------------------------------------------------------------------------------------


def replay_into(scene: Scene, messages: Iterator[Recorded], until_s: float | None = None) -> int:
    """Ingest a recording at once (for snapshots and tests), up to sim time `until_s`; how many messages."""
    n = 0
    for r in messages:
        scene.ingest(r.topic, r.payload, r.log_time_ns)
        n += 1
        if until_s is not None and scene.now_ms > until_s * 1000:
            break
    scene.tick()
    return n


async def replay_window(args: argparse.Namespace) -> int:
    scene = Scene(args.root.strip("/"))
    win = Window(scene, args.headless, args.size, f"replay {args.recording.name} ×{args.speed:g}", "", args.colour, args.flows)
    win.open()
    try:
        if args.headless:
            n = replay_into(scene, read(args.recording), args.until)
            win.label(f"replay {args.recording.name} at sim {scene.now_ms / 1000:.0f} s")
        else:
            n = await _paced(win, scene, args.recording, args.speed)
        if args.snapshot is not None:
            win.snapshot(args.snapshot)
            print(f"snapshot: {args.snapshot}", file=sys.stderr)
        print(json.dumps(_summary(scene, messages=n, title=win.title)), flush=True)
    finally:
        win.close()
    return 0


async def _paced(win: Window, scene: Scene, path: Path, speed: float) -> int:
    messages = read(path)
    nxt = next(messages, None)
    if nxt is None:
        return 0
    t_log = nxt.log_time_ns
    last = time.monotonic()
    n = 0
    stop = stop_event()
    while not (win.closed or stop.is_set()):
        now = time.monotonic()
        if not win.paused:
            t_log += int((now - last) * speed * 1e9)
        last = now
        while nxt is not None and nxt.log_time_ns <= t_log:
            scene.ingest(nxt.topic, nxt.payload, nxt.log_time_ns)
            n += 1
            nxt = next(messages, None)
        if nxt is None:
            win.label(f"replay {path.name}: ended at sim {scene.now_ms / 1000:.0f} s · close the window to exit")
        win.frame()
        await asyncio.sleep(1.0 / FPS)
    return n


# -- command lines --------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    p.add_argument("--snapshot", type=Path, default=None, metavar="PATH.png", help="write the final frame as a PNG")
    p.add_argument("--headless", action="store_true", help="no window (with --snapshot: render offscreen)")
    p.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="WxH", help="window size (default 1280x800)")
    p.add_argument("--colour", choices=["speed", "state"], default="speed", help="colour vehicles by speed (default) or state")
    p.add_argument("--flows", action="store_true", help="start with the message-flow overlay on")


def build_viz_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="v2x viz",
        description="Watch a broker's V2X traffic in a window: lanes from MAP, vehicles from BSMs, signal heads "
        "from SPaT, hazards from RSI, RSUs and their range, cloud plan changes; a HUD with rates and latency. "
        "No scenario file needed. " + __doc__.split("Keys:", 1)[1].split("\n\n", 1)[0].replace("\n", " "),
    )
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    p.add_argument("--broker-label", default="", help=argparse.SUPPRESS)  # `v2x run` says which broker it started
    p.add_argument("--exit-after", type=float, default=None, metavar="S", help="quit after S wall seconds (with --snapshot)")
    p.add_argument(
        "--foxglove", type=int, nargs="?", const=8765, default=None, metavar="PORT",
        help="instead of the window, serve the scene to Foxglove over its WebSocket protocol on PORT (default 8765; 0: any free "
        "port): vehicles on the Map and 3D panels, lanes, signals, hazards, latency; in Foxglove, open a Foxglove WebSocket "
        "connection to ws://HOST:PORT",
    )
    p.add_argument("--foxglove-host", default="127.0.0.1", metavar="HOST",
                   help="the address the Foxglove server listens on (default 127.0.0.1; 0.0.0.0: every interface)")
    add_credentials_option(p)
    add_run_id_option(p, "it watches")
    _common(p)
    return p


def build_replay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="v2x replay",
        description="Play an MCAP recording (v2x run --record, v2x record) into the visualiser, or back onto a broker.",
    )
    p.add_argument("recording", type=Path, help="the .mcap file")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (default 1.0; with --to-broker, 0 = as fast as possible)")
    p.add_argument("--to-broker", default=None, metavar="URL", help="publish onto this broker instead of showing it")
    p.add_argument("--until", type=float, default=None, metavar="S", help="with --headless: stop at sim time S (the snapshot shows it)")
    _common(p)
    return p


def _window_ok(args: argparse.Namespace, prog: str) -> bool:
    """Whether there is somewhere to draw: a display, or --snapshot (then offscreen); says why not."""
    if not args.headless and not display_available():
        if args.snapshot is None:
            print(f"{prog}: no display here (DISPLAY is not set): use --snapshot PATH.png, or run under Xvfb", file=sys.stderr)
            return False
        args.headless = True
    return True


def viz_main(argv: list[str]) -> int:
    args = build_viz_parser().parse_args(argv)
    if args.foxglove is not None:
        if not 0 <= args.foxglove <= 65535:
            print(f"v2x viz: --foxglove {args.foxglove}: expected a TCP port, 0 to 65535", file=sys.stderr)
            return 2
        from v2x.watch.foxglove_live import serve as watch  # foxglove-sdk loads only when asked for
    elif not _window_ok(args, "v2x viz"):
        return 2
    else:
        watch = live
    try:
        return asyncio.run(watch(args))
    except BrokerError as e:
        print(f"v2x viz: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # the Foxglove server cannot listen there (port taken, address not ours)
        if args.foxglove is None:
            raise
        print(f"v2x viz: Foxglove server on {args.foxglove_host}:{args.foxglove}: {e}", file=sys.stderr)
        return 1


def replay_main(argv: list[str]) -> int:
    args = build_replay_parser().parse_args(argv)
    if not args.recording.is_file():
        print(f"v2x replay: {args.recording}: no such file", file=sys.stderr)
        return 2
    if args.speed < 0 or (args.speed == 0 and args.to_broker is None):
        print(f"v2x replay: --speed {args.speed:g}: expected a positive factor (0 only with --to-broker)", file=sys.stderr)
        return 2
    if args.to_broker is not None:
        return replay_broker_main(args.recording, args.to_broker, args.speed)
    if not _window_ok(args, "v2x replay"):
        return 2
    try:
        return asyncio.run(replay_window(args))
    except RecordingError as e:
        print(f"v2x replay: {e}", file=sys.stderr)
        return 2
