"""Draws a `Scene` with pygame. It only reads the scene: every pixel comes from a message.

`View` maps local metres to pixels (pan and zoom); `Renderer.draw(surface)` paints one
frame: the road from MAP (cached until the view changes), RSU radio ranges, hazards,
vehicles (by speed or by state), signal heads with countdowns, the optional message-flow
overlay, the HUD, the legend with a scale bar, and the panel of the selected vehicle.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pygame

from v2x.core import messages as m
from v2x.watch.scene import FLOW_S, Flag, IntersectionView, LaneView, Scene

Colour = tuple[int, int, int]

BACKGROUND: Colour = (228, 226, 216)
ROAD: Colour = (78, 80, 84)
JUNCTION: Colour = (88, 90, 94)
LANE_EDGE: Colour = (170, 170, 165)
STOP_LINE: Colour = (250, 250, 250)
TEXT: Colour = (25, 25, 30)
PANEL: tuple[int, int, int, int] = (255, 255, 255, 215)

LIGHT_RED: Colour = (222, 32, 32)
LIGHT_YELLOW: Colour = (250, 196, 0)
LIGHT_GREEN: Colour = (24, 186, 72)
LIGHT_DARK: Colour = (110, 110, 110)

_LIGHTS: dict[m.LightState, Colour] = {
    m.LightState.RED: LIGHT_RED,
    m.LightState.FLASHING_RED: LIGHT_RED,
    m.LightState.PERMISSIVE_GREEN: LIGHT_GREEN,
    m.LightState.PROTECTED_GREEN: LIGHT_GREEN,
    m.LightState.FLASHING_GREEN: LIGHT_GREEN,
    m.LightState.YELLOW: LIGHT_YELLOW,
    m.LightState.FLASHING_YELLOW: LIGHT_YELLOW,
}

#: speed colours, 0 .. 14+ m/s in 2 m/s steps: stopped is red, free flow green
SPEED_STEP_MPS = 2.0
SPEED_COLOURS: list[Colour] = [
    (200, 30, 30), (225, 85, 30), (240, 140, 30), (240, 190, 40),
    (200, 205, 50), (140, 195, 60), (70, 175, 70), (30, 150, 90),
]
#: state colours, in order of precedence (the first flag a vehicle has wins)
STATE_COLOURS: list[tuple[int, Colour, str]] = [
    (Flag.EMERGENCY, (210, 20, 40), "emergency vehicle"),
    (Flag.PRIORITY, (170, 40, 200), "signal priority requested"),
    (Flag.HAZARD_LIGHTS, (20, 20, 20), "hazard lights / disabled"),
    (Flag.WARNED, (255, 130, 0), "warned (hazard ahead / advisory)"),
    (Flag.BRAKING, (240, 210, 0), "hard braking"),
]
STATE_NORMAL: Colour = (70, 110, 190)
RSU_COLOUR: Colour = (40, 90, 200)
HAZARD_COLOUR: Colour = (215, 25, 25)
CLOUD_COLOUR: Colour = (90, 90, 200)
_RSU_STATE_COLOURS: dict[str, Colour] = {"online": RSU_COLOUR, "lost": HAZARD_COLOUR}  # else grey (stopped)
FLOW_COLOURS: dict[str, Colour] = {"bsm": (60, 120, 255), "prq": (190, 40, 210)}

FIT_APPROACH_M = 150.0  # [m] of each approach the initial view shows around the junctions
HEAD_H = 38  # [px] height of a signal head
MIN_VEHICLE_PX = 3.0  # a vehicle is never drawn smaller than this
HUD_REFRESH_S = 0.25  # [s] wall time between HUD text updates


@dataclass
class View:
    """Local metres (x east, y north) <-> pixels; `scale` in pixels per metre."""

    width: int
    height: int
    cx: float = 0.0
    cy: float = 0.0
    scale: float = 2.0

    def fit(self, bounds: tuple[float, float, float, float], margin_px: int = 30) -> None:
        x0, y0, x1, y1 = bounds
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2
        w = max(x1 - x0, 10.0)
        h = max(y1 - y0, 10.0)
        self.scale = max(min((self.width - 2 * margin_px) / w, (self.height - 2 * margin_px) / h), 0.05)

    def to_screen(self, xy: np.ndarray) -> np.ndarray:
        out = np.empty_like(xy, dtype=np.float64)
        out[..., 0] = self.width / 2 + (xy[..., 0] - self.cx) * self.scale
        out[..., 1] = self.height / 2 - (xy[..., 1] - self.cy) * self.scale
        return out

    def point(self, x: float, y: float) -> tuple[int, int]:
        return round(self.width / 2 + (x - self.cx) * self.scale), round(self.height / 2 - (y - self.cy) * self.scale)

    def to_world(self, px: float, py: float) -> tuple[float, float]:
        return self.cx + (px - self.width / 2) / self.scale, self.cy - (py - self.height / 2) / self.scale

    def zoom(self, factor: float, at: tuple[float, float]) -> None:
        """Zoom by `factor`, keeping the world point under the pixel `at` where it is."""
        wx, wy = self.to_world(*at)
        self.scale = min(max(self.scale * factor, 0.05), 200.0)
        self.cx = wx - (at[0] - self.width / 2) / self.scale
        self.cy = wy + (at[1] - self.height / 2) / self.scale

    def pan(self, dx_px: float, dy_px: float) -> None:
        self.cx -= dx_px / self.scale
        self.cy += dy_px / self.scale

    def key(self) -> tuple[int, int, float, float, float]:
        return self.width, self.height, round(self.cx, 3), round(self.cy, 3), round(self.scale, 5)


def light_colour(state: m.LightState) -> Colour:
    return _LIGHTS.get(state, LIGHT_DARK)


def _nice_length(metres: float) -> float:
    """The largest 1/2/5 x 10^k not above `metres`."""
    k = 10.0 ** math.floor(math.log10(max(metres, 1e-9)))
    return float(max(f * k for f in (1, 2, 5) if f * k <= metres))


@dataclass
class Renderer:
    scene: Scene
    view: View
    mode_label: str = "live"
    broker_label: str = ""
    colour_mode: str = "speed"  # or "state"
    show_flows: bool = False
    selected: str | None = None
    _fonts: dict[int, pygame.font.Font] = field(default_factory=dict)
    _text: dict[tuple[str, int, Colour], pygame.Surface] = field(default_factory=dict)
    _road: pygame.Surface | None = None
    _road_key: tuple[object, ...] = ()
    _hud: pygame.Surface | None = None
    _hud_at: float = 0.0
    _fitted: bool = False

    # -- text --------------------------------------------------------------------------

    def font(self, size: int) -> pygame.font.Font:
        f = self._fonts.get(size)
        if f is None:
            if not pygame.font.get_init():
                pygame.font.init()
            f = self._fonts[size] = pygame.font.Font(None, size)
        return f

    def text(self, s: str, size: int = 18, colour: Colour = TEXT) -> pygame.Surface:
        key = (s, size, colour)
        surf = self._text.get(key)
        if surf is None:
            if len(self._text) > 2000:
                self._text.clear()
            surf = self._text[key] = self.font(size).render(s, True, colour)
        return surf

    # -- frame -------------------------------------------------------------------------

    def draw(self, surf: pygame.Surface) -> None:
        w, h = surf.get_size()
        if (w, h) != (self.view.width, self.view.height):
            self.view.width, self.view.height = w, h
        if not self._fitted:
            self.fit()
        surf.blit(self._road_surface(), (0, 0))
        self._draw_rsus(surf)
        self._draw_hazards(surf)
        if self.show_flows:
            self._draw_flows(surf)
        self._draw_vehicles(surf)
        self._draw_signals(surf)
        self._draw_rsu_labels(surf)
        self._draw_hud(surf)
        self._draw_legend(surf)
        if self.selected is not None:
            self._draw_panel(surf)

    def fit(self) -> None:
        """Fit the view to the junctions and the first FIT_APPROACH_M of their approaches (else to what is known)."""
        b = self.scene.bounds()
        if b is None:
            return
        centres = [iv.center for iv in self.scene.intersections.values()]
        if centres:
            xs, ys = [c[0] for c in centres], [c[1] for c in centres]
            b = (max(b[0], min(xs) - FIT_APPROACH_M), max(b[1], min(ys) - FIT_APPROACH_M),
                 min(b[2], max(xs) + FIT_APPROACH_M), min(b[3], max(ys) + FIT_APPROACH_M))
        self.view.fit(b)
        self._fitted = True

    def invalidate_hud(self) -> None:
        self._hud_at = 0.0

    # -- road (cached) -------------------------------------------------------------------

    def _road_surface(self) -> pygame.Surface:
        maps = tuple((iv.name, iv.revision, iv.sender) for iv in self.scene.intersections.values())
        key = (self.view.key(), maps)
        if self._road is None or key != self._road_key:
            self._road = pygame.Surface((self.view.width, self.view.height))
            self._road.fill(BACKGROUND)
            for iv in self.scene.intersections.values():
                self._draw_road(self._road, iv)
            for iv in self.scene.intersections.values():
                self._draw_markings(self._road, iv)
            self._road_key = key
        return self._road

    def _lane_quads(self, lane: LaneView) -> list[np.ndarray]:
        pts = lane.points
        quads = []
        for a, b in itertools.pairwise(pts):
            d = b - a
            n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9) * lane.width_m / 2
            quads.append(self.view.to_screen(np.array([a + n, b + n, b - n, a - n])))
        return quads

    def _draw_road(self, surf: pygame.Surface, iv: IntersectionView) -> None:
        # the junction box: the hull of where the lanes meet it
        ends = np.array([lane.points[0] for lane in iv.lanes])
        if len(ends) >= 3:
            hull = _hull(ends)
            pygame.draw.polygon(surf, JUNCTION, self.view.to_screen(hull).tolist())
        for lane in iv.lanes:
            for q in self._lane_quads(lane):
                pygame.draw.polygon(surf, ROAD, q.tolist())

    def _draw_markings(self, surf: pygame.Surface, iv: IntersectionView) -> None:
        for lane in iv.lanes:
            for q in self._lane_quads(lane):
                pygame.draw.line(surf, LANE_EDGE, q[0], q[1], 1)
                pygame.draw.line(surf, LANE_EDGE, q[2], q[3], 1)
            if lane.ingress:
                a, b = lane.points[0], lane.points[1]
                d = (a - b) / max(float(np.hypot(*(a - b))), 1e-9)
                n = np.array([-d[1], d[0]]) * lane.width_m / 2
                line = self.view.to_screen(np.array([a + n, a - n]))
                pygame.draw.line(surf, STOP_LINE, line[0], line[1], max(2, round(0.5 * self.view.scale)))

    # -- RSUs, hazards, flows ----------------------------------------------------------------

    def _draw_rsus(self, surf: pygame.Surface) -> None:
        for rsu in self.scene.rsus.values():
            if rsu.xy is None:
                continue
            c = self.view.point(*rsu.xy)
            r = round(rsu.range_m * self.view.scale)
            colour = _RSU_STATE_COLOURS.get(rsu.state, LIGHT_DARK)
            if r < 4000:
                pygame.draw.circle(surf, colour, c, r, 1)
            pygame.draw.rect(surf, colour, (c[0] - 6, c[1] - 6, 12, 12))
            pygame.draw.rect(surf, (255, 255, 255), (c[0] - 6, c[1] - 6, 12, 12), 1)

    def _draw_rsu_labels(self, surf: pygame.Surface) -> None:
        for rsu in self.scene.rsus.values():
            if rsu.xy is None:
                continue
            c = self.view.point(*rsu.xy)
            colour = _RSU_STATE_COLOURS.get(rsu.state, LIGHT_DARK)
            label = self.text(rsu.sender + ("" if rsu.state == "online" else f" ({rsu.state})"), 15, colour)
            pygame.draw.rect(surf, BACKGROUND, (c[0] + 8, c[1] - 16, label.get_width() + 4, label.get_height() + 1))
            surf.blit(label, (c[0] + 10, c[1] - 15))

    def _draw_hazards(self, surf: pygame.Surface) -> None:
        for hz in self.scene.hazards.values():
            x, y = self.view.point(*hz.xy)
            r = max(round(hz.event.radius_m * self.view.scale), 3)
            pygame.draw.circle(surf, HAZARD_COLOUR, (x, y), r, 2)
            tri = [(x, y - 13), (x - 11, y + 7), (x + 11, y + 7)]
            pygame.draw.polygon(surf, (255, 235, 0), tri)
            pygame.draw.polygon(surf, HAZARD_COLOUR, tri, 3)
            mark = self.text("!", 20, TEXT)
            surf.blit(mark, (x - mark.get_width() // 2, y - 8))
            label = f"{hz.event.kind.name.lower().replace('_', ' ')} #{hz.event.event_id}"
            surf.blit(self.text(label, 16, HAZARD_COLOUR), (x + 13, y - 6))

    def _cloud_point(self) -> tuple[int, int]:
        return self.view.width - 70, 28

    def _draw_flows(self, surf: pygame.Surface) -> None:
        layer = pygame.Surface((self.view.width, self.view.height), pygame.SRCALPHA)
        now = self.scene.now_ms
        rsu_px = {f"rsu:{r.sender}": self.view.point(*r.xy) for r in self.scene.rsus.values() if r.xy is not None}
        cloud = self._cloud_point()
        for f in self.scene.flow_lines():
            alpha = 1.0 - (now - f.sim_ms) / (FLOW_S * 1000)
            if alpha <= 0:
                continue
            dst = cloud if f.dst == "cloud" else rsu_px.get(f.dst)
            if dst is None:
                continue
            r, g, b = FLOW_COLOURS.get(f.kind, (60, 120, 255))
            pygame.draw.line(layer, (r, g, b, int(150 * alpha)), self.view.point(*f.src), dst, 1)
        surf.blit(layer, (0, 0))
        pygame.draw.circle(surf, CLOUD_COLOUR, cloud, 14)
        label = self.text("cloud", 16, (255, 255, 255))
        surf.blit(label, (cloud[0] - label.get_width() // 2, cloud[1] - 6))

    # -- vehicles ------------------------------------------------------------------------

    def vehicle_colours(self) -> list[Colour]:
        v = self.scene.vehicles
        n = v.n
        if self.colour_mode == "speed":
            idx = np.minimum((v.speed[:n] / SPEED_STEP_MPS).astype(np.int64), len(SPEED_COLOURS) - 1)
            return [SPEED_COLOURS[i] for i in idx.tolist()]
        out = []
        for flags in v.flags[:n].tolist():
            colour = STATE_NORMAL
            for bit, c, _ in STATE_COLOURS:
                if flags & bit:
                    colour = c
                    break
            out.append(colour)
        return out

    def vehicle_corners(self) -> np.ndarray:
        """(n, 4, 2) screen corners of each vehicle's body (at least MIN_VEHICLE_PX on each side)."""
        v = self.scene.vehicles
        n = v.n
        hd = v.heading[:n]
        fwd = np.stack([np.sin(hd), np.cos(hd)], axis=1)
        right = np.stack([np.cos(hd), -np.sin(hd)], axis=1)
        floor = MIN_VEHICLE_PX / self.view.scale / 2
        half_l = np.maximum(v.length[:n] / 2, floor)[:, None]
        half_w = np.maximum(v.width[:n] / 2, floor)[:, None]
        c = v.xy[:n]
        corners = np.stack([
            c + fwd * half_l + right * half_w, c + fwd * half_l - right * half_w,
            c - fwd * half_l - right * half_w, c - fwd * half_l + right * half_w,
        ], axis=1)
        return self.view.to_screen(corners)

    def _draw_vehicles(self, surf: pygame.Surface) -> None:
        n = self.scene.vehicles.n
        if n == 0:
            return
        corners = self.vehicle_corners()
        lo, hi = corners.min(axis=1), corners.max(axis=1)
        visible = (hi[:, 0] >= 0) & (lo[:, 0] < self.view.width) & (hi[:, 1] >= 0) & (lo[:, 1] < self.view.height)
        colours = self.vehicle_colours()
        polygon = pygame.draw.polygon
        pts = corners.tolist()
        for i in np.flatnonzero(visible).tolist():
            polygon(surf, colours[i], pts[i])
        sel = self.scene.vehicles.index.get(self.selected) if self.selected else None
        if sel is not None:
            pygame.draw.polygon(surf, (0, 0, 0), pts[sel], 2)
            x, y = corners[sel].mean(axis=0)
            pygame.draw.circle(surf, (0, 0, 0), (round(x), round(y)), 12, 2)

    def pick(self, px: float, py: float, radius_px: float = 10.0) -> str | None:
        """The vehicle under (or nearest within `radius_px` of) a pixel."""
        v = self.scene.vehicles
        if v.n == 0:
            return None
        centres = self.view.to_screen(v.xy[: v.n])
        d = np.hypot(centres[:, 0] - px, centres[:, 1] - py)
        i = int(np.argmin(d))
        return v.ids[i] if d[i] <= radius_px else None

    # -- signals ---------------------------------------------------------------------------

    def signal_heads(self) -> list[tuple[str, tuple[int, int], list[tuple[int, str]]]]:
        """(intersection, box centre in pixels, [(group, turn)]) per approach: where heads are drawn."""
        out = []
        for iv in self.scene.intersections.values():
            approaches: dict[int, list[LaneView]] = {}
            for lane in iv.lanes:
                if lane.ingress and lane.movements:
                    approaches.setdefault(lane.approach, []).append(lane)
            for lanes in approaches.values():
                a0, a1 = lanes[0].points[0], lanes[0].points[1]
                inward = (a0 - a1) / max(float(np.hypot(*(a0 - a1))), 1e-9)
                right = np.array([inward[1], -inward[0]])  # the kerb side (traffic on the right)
                outer = max(lanes, key=lambda ln: float(np.dot(ln.points[0], right)))
                anchor = outer.points[0] + right * (outer.width_m / 2) - inward * 1.0
                px = self.view.to_screen(anchor)
                by_group: dict[int, str] = {}
                for g, t in sorted({mv for ln in lanes for mv in ln.movements}, key=lambda gm: "LUTR".index(gm[1])):
                    by_group.setdefault(g, t)
                uniq = list(by_group.items())
                box_w = 20 * len(uniq) + 6
                # outside the road on the kerb side, and upstream of the stop line: clear of the junction
                off = np.array([right[0], -right[1]]) * (box_w / 2 + 14) - np.array([inward[0], -inward[1]]) * (HEAD_H / 2 + 6)
                out.append((iv.name, (round(px[0] + off[0]), round(px[1] + off[1])), uniq))
        return out

    def _draw_signals(self, surf: pygame.Surface) -> None:
        heads = self.signal_heads()
        states: dict[str, dict[int, m.MovementEvent]] = {}
        spats: dict[str, m.IntersectionState] = {}
        for name in {h[0] for h in heads}:
            got = self.scene.signal(name)
            if got is not None:
                spats[name] = got[2]
                states[name] = {ms.signal_group: ms.events[0] for ms in got[2].states if ms.events}
        for name, (cx, cy), moves in heads:
            box = pygame.Rect(0, 0, 20 * len(moves) + 6, HEAD_H)
            box.center = (cx, cy)
            pygame.draw.rect(surf, (20, 20, 22), box, border_radius=4)
            for k, (group, turn) in enumerate(moves):
                ev = states.get(name, {}).get(group)
                colour = light_colour(ev.state) if ev is not None else LIGHT_DARK
                dot = (box.left + 13 + 20 * k, box.top + 11)
                pygame.draw.circle(surf, colour, dot, 8)
                glyph = self.text(turn, 14, (255, 255, 255) if colour != LIGHT_YELLOW else TEXT)
                surf.blit(glyph, (dot[0] - glyph.get_width() // 2, dot[1] - glyph.get_height() // 2 + 1))
                left = self.scene.countdown_s(spats[name], ev) if ev is not None else None
                if left is not None:
                    num = self.text(f"{max(left, 0.0):.0f}", 15, colour)
                    surf.blit(num, (dot[0] - num.get_width() // 2, box.top + 23))

    # -- HUD, legend, panel ------------------------------------------------------------------

    def _panel(self, lines: list[tuple[str, Colour]], size: int = 18) -> pygame.Surface:
        rendered = [self.text(s, size, c) for s, c in lines]
        w = max((r.get_width() for r in rendered), default=0) + 16
        h = sum(r.get_height() + 2 for r in rendered) + 12
        panel = pygame.Surface((w, h), pygame.SRCALPHA)
        panel.fill(PANEL)
        y = 6
        for r in rendered:
            panel.blit(r, (8, y))
            y += r.get_height() + 2
        return panel

    def hud_lines(self) -> list[str]:
        sc = self.scene
        rsus = list(sc.rsus.values())
        states = Counter(r.state for r in rsus)
        lines = [
            f"v2x viz · {self.mode_label}" + (f" · broker {self.broker_label}" if self.broker_label else "")
            + (f" ({sc.broker_version})" if sc.broker_version else ""),
            f"sim {sc.now_ms / 1000:7.1f} s   vehicles {sc.vehicles.n}   "
            f"RSUs {', '.join(f'{n} {k}' for k, n in sorted(states.items())) or 'not heard'}   cloud {sc.cloud_state}   "
            f"hazards {len(sc.hazards)}",
        ]
        rates = sc.rates()
        lines.append("msgs/s  " + ("  ".join(f"{k} {v}" for k, v in sorted(rates.items())) if rates else "-"))
        lat = sc.latency_ms()
        if lat and all(v is None for v in lat.values()):
            lines.append("latency: n/a (senders run on a sim clock: fast mode)")
        elif lat:
            lines.append("latency p50/p99 ms  " + "  ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}" for k, v in lat.items() if v))
        for pc in list(sc.plans)[-3:]:
            greens = "/".join(f"{g:.0f}" for g in pc.greens)
            lines.append(f"plan {pc.plan_id} -> {pc.intersection} at {pc.sim_s:.0f} s: cycle {pc.cycle_s:.0f} s, greens {greens}")
        bad = sum(sc.errors.values())
        if bad:
            lines.append("bad payloads " + ", ".join(f"{k} {v}" for k, v in sorted(sc.errors.items())))
        return lines

    def _draw_hud(self, surf: pygame.Surface) -> None:
        now = time.monotonic()
        if self._hud is None or now - self._hud_at >= HUD_REFRESH_S:
            self._hud = self._panel([(s, TEXT) for s in self.hud_lines()])
            self._hud_at = now
        surf.blit(self._hud, (10, 10))
        for name, until in self.scene.plan_flash.items():  # a plan change: the junction flashes
            iv = self.scene.intersections.get(name)
            if iv is not None and self.scene.now_ms < until:
                pygame.draw.circle(surf, (170, 40, 200), self.view.point(*iv.center), max(round(30 * self.view.scale), 20), 3)

    def legend_entries(self) -> list[tuple[Colour, str]]:
        if self.colour_mode == "speed":
            return [(SPEED_COLOURS[0], f"0-{SPEED_STEP_MPS:g} m/s: stopped, queued"),
                    (SPEED_COLOURS[-1], f"{SPEED_STEP_MPS * (len(SPEED_COLOURS) - 1):g}+ m/s: free flow")]
        return [(c, label) for _, c, label in STATE_COLOURS] + [(STATE_NORMAL, "other vehicle")]

    def _draw_legend(self, surf: pygame.Surface) -> None:
        row_h, icon_w = 19, 52
        rows: list[tuple[str, str, object]] = [("title", f"vehicles by {self.colour_mode} (key c)", None)]
        rows += [("swatch", label, c) for c, label in self.legend_entries()]
        if self.colour_mode == "speed":
            rows.insert(1, ("ramp", f"speed, {SPEED_STEP_MPS:g} m/s per shade", None))
        rows += [("lights", "signal head: movement L/T/R, s left", None), ("rsu", "RSU and its radio range", None),
                 ("hazard", "hazard (RSI) and its zone", None)]
        texts = [self.text(label, 16) for _, label, _ in rows]
        w = icon_w + max(t.get_width() for t in texts) + 12
        h = row_h * len(rows) + 10
        x0, y0 = 10, self.view.height - h - 44
        panel = pygame.Surface((w, h), pygame.SRCALPHA)
        panel.fill(PANEL)
        surf.blit(panel, (x0, y0))
        for k, ((kind, _, arg), t) in enumerate(zip(rows, texts, strict=True)):
            y = y0 + 5 + row_h * k + row_h // 2
            tx = x0 + 8 if kind == "title" else x0 + icon_w
            surf.blit(t, (tx, y - t.get_height() // 2))
            if kind == "swatch":
                assert isinstance(arg, tuple)
                pygame.draw.rect(surf, arg, (x0 + 14, y - 4, 24, 9))
            elif kind == "ramp":
                for j, c in enumerate(SPEED_COLOURS):
                    pygame.draw.rect(surf, c, (x0 + 8 + 5 * j, y - 4, 5, 9))
            elif kind == "lights":
                for j, c in enumerate((LIGHT_RED, LIGHT_YELLOW, LIGHT_GREEN)):
                    pygame.draw.circle(surf, c, (x0 + 14 + 12 * j, y), 5)
            elif kind == "rsu":
                pygame.draw.circle(surf, RSU_COLOUR, (x0 + 26, y), 9, 1)
                pygame.draw.rect(surf, RSU_COLOUR, (x0 + 22, y - 4, 8, 8))
            elif kind == "hazard":
                tri = [(x0 + 26, y - 7), (x0 + 19, y + 6), (x0 + 33, y + 6)]
                pygame.draw.polygon(surf, (255, 235, 0), tri)
                pygame.draw.polygon(surf, HAZARD_COLOUR, tri, 2)
        # scale bar: a round length of about 120 px
        metres = _nice_length(120 / self.view.scale)
        px = round(metres * self.view.scale)
        sy = self.view.height - 22
        label = self.text(f"{metres:g} m", 18)
        bar = pygame.Surface((px + label.get_width() + 30, 30), pygame.SRCALPHA)
        bar.fill(PANEL)
        surf.blit(bar, (10, sy - 15))
        pygame.draw.line(surf, TEXT, (18, sy), (18 + px, sy), 3)
        for x in (18, 18 + px):
            pygame.draw.line(surf, TEXT, (x, sy - 6), (x, sy + 6), 2)
        surf.blit(label, (26 + px, sy - label.get_height() // 2))
        keys = "drag: pan · wheel: zoom · click: vehicle · c: colours · f: flows · space: pause · s: screenshot · r: fit · q: quit"
        t = self.text(keys, 15, TEXT)
        surf.blit(t, (self.view.width - t.get_width() - 10, self.view.height - t.get_height() - 8))

    def _draw_panel(self, surf: pygame.Surface) -> None:
        assert self.selected is not None
        panel = self._panel([(s, TEXT) for s in self.scene.describe(self.selected)], 17)
        surf.blit(panel, (self.view.width - panel.get_width() - 10, 60))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of 2-D points."""
    pts = sorted(map(tuple, points.tolist()))
    if len(pts) < 3:
        return np.array(pts)

    def cross(o: tuple[float, ...], a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, ...]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, ...]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])
