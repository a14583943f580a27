"""Draws a `Scene` with pygame. It only reads the scene: every pixel comes from a message.

`View` maps local metres to pixels (pan and zoom); `Renderer.draw(surface)` paints one
frame: the road from MAP (cached until the view changes), the radio range of the RSU
selected or hovered (or of all, key `w`), hazards, vehicles (by speed or by state, never
smaller than MIN_VEHICLE_PX, with a pointed nose along their heading), signal heads with
countdowns, the optional message-flow overlay, the HUD, the legend with a scale bar, the
panel of the selected vehicle and the paused badge.

Signal heads and labels scale with the zoom (within bounds) and are placed off the road:
each goes to the first of its candidate spots that covers no road pixel, nothing placed
before it and no panel, inside the window. `layout` keeps where they went in the last frame.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pygame

from v2x.core import messages as m
from v2x.core.kept import Kept
from v2x.watch.palette import (
    HAZARD_COLOUR,
    LIGHT_DARK,
    LIGHT_GREEN,
    LIGHT_RED,
    LIGHT_YELLOW,
    SPEED_COLOURS,
    SPEED_STEP_MPS,
    STATE_COLOURS,
    STATE_NORMAL,
    Colour,
    light_colour,
    state_colour,
)
from v2x.watch.scene import FLOW_S, IntersectionView, LaneView, Scene

BACKGROUND: Colour = (228, 226, 216)
ROAD: Colour = (78, 80, 84)
JUNCTION: Colour = (88, 90, 94)
LANE_EDGE: Colour = (170, 170, 165)
STOP_LINE: Colour = (250, 250, 250)
TEXT: Colour = (25, 25, 30)
PANEL: tuple[int, int, int, int] = (255, 255, 255, 215)

HEAD_BODY: Colour = (20, 20, 22)
PAUSED_BADGE: Colour = (40, 40, 48)

RSU_COLOUR: Colour = (40, 90, 200)
CLOUD_COLOUR: Colour = (90, 90, 200)
_RSU_STATE_COLOURS: dict[str, Colour] = {"online": RSU_COLOUR, "lost": HAZARD_COLOUR}  # else grey (stopped)
FLOW_COLOURS: dict[str, Colour] = {"bsm": (60, 120, 255), "prq": (190, 40, 210)}

FIT_APPROACH_M = 150.0  # [m] of each approach the initial view shows around the junctions
HEAD_PITCH_OF_BOX = 0.24  # a head's pitch per light, as a share of its junction box: heads stay smaller than it ...
HEAD_PITCH_PX = (5.0, 22.0)  # [px] ... within these bounds
HEAD_DETAIL_PX = 12.0  # [px] from this pitch on, a head shows its turn letters and countdowns
LABEL_FONT_PX = (10, 14)  # [px] font size of labels on the map: 10 + the zoom [px/m], within these bounds
MIN_VEHICLE_PX = (7.0, 3.0)  # [px] length, width: a vehicle is never drawn smaller (sumo-gui's "exaggerate")
RANGE_ALPHA = (20, 120)  # opacity of a shown RSU radio range: its area, its rim
HUD_REFRESH_S = 0.25  # [s] wall time between HUD text updates
TEXTS_KEPT = 2000  # rendered text surfaces kept for the next frame's same labels
#: clean sans-serif faces, the first installed wins; pygame's own freesansbold spaces small sizes unevenly
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf", "/System/Library/Fonts/Supplemental/Arial.ttf", "C:/Windows/Fonts/arial.ttf",
)
KEYS = ("drag: pan · wheel: zoom · click: vehicle or RSU · c: colours · f: flows · w: radio ranges · "
        "space: pause · s: screenshot · r: fit · q: quit")


@dataclass
class View:
    """Local metres (x east, y north) <-> pixels; `scale` in pixels per metre."""

    width: int
    height: int
    cx: float = 0.0
    cy: float = 0.0
    scale: float = 2.0

    def fit(self, bounds: tuple[float, float, float, float], margin_px: int = 30, top_px: int = 0) -> None:
        """Show `bounds` (local metres) whole, `margin_px` in from the edges and below the top `top_px` (the HUD)."""
        x0, y0, x1, y1 = bounds
        w = max(x1 - x0, 10.0)
        h = max(y1 - y0, 10.0)
        self.scale = max(min((self.width - 2 * margin_px) / w, (self.height - 2 * margin_px - top_px) / h), 0.05)
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2 + top_px / 2 / self.scale

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


@functools.cache
def font_file() -> str | None:
    """The first of FONT_FILES installed here, else a system sans face, else None (pygame's default)."""
    found = next((f for f in FONT_FILES if os.path.isfile(f)), None)
    return found or pygame.font.match_font("dejavusans,liberationsans,arial,helvetica")


def _nice_length(metres: float) -> float:
    """The largest 1/2/5 x 10^k not above `metres`."""
    k = 10.0 ** math.floor(math.log10(max(metres, 1e-9)))
    return float(max(f * k for f in (1, 2, 5) if f * k <= metres))


Head = tuple[str, pygame.Rect, list[tuple[int, str]]]  # intersection, where its head is drawn [px], (group, turn) per light


@dataclass
class Renderer:
    scene: Scene
    view: View
    mode_label: str = "live"
    broker_label: str = ""
    colour_mode: str = "speed"  # or "state"
    show_flows: bool = False
    selected: str | None = None  # a vehicle, for its panel
    selected_rsu: str | None = None  # an RSU, for its radio range
    hovered_rsu: str | None = None
    show_ranges: bool = False  # every RSU's radio range (key w)
    paused: bool = False
    #: where the last frame put things [px]: "heads", "labels" (RSUs, hazards), "panels" (HUD, legend, ...)
    layout: dict[str, list[pygame.Rect]] = field(default_factory=dict)
    _fonts: dict[int, pygame.font.Font] = field(default_factory=dict)
    _text: Kept[tuple[str, int, Colour], pygame.Surface] = field(default_factory=lambda: Kept(TEXTS_KEPT))
    _road: pygame.Surface | None = None
    _road_mask: pygame.Mask | None = None  # the road's pixels, which heads and labels keep off
    _road_key: tuple[object, ...] = ()
    _heads: list[Head] = field(default_factory=list)
    _heads_key: tuple[object, ...] = ()
    _hud: pygame.Surface | None = None
    _hud_at: float = 0.0
    _legend: pygame.Surface | None = None
    _legend_key: tuple[object, ...] = ()
    _bar: tuple[tuple[float, float], pygame.Surface] | None = None  # the scale bar, per zoom
    _labels: tuple[tuple[object, ...], list[pygame.Rect | None]] = ((), [])  # where the labels went, per layout
    _fitted: bool = False

    # -- text --------------------------------------------------------------------------

    def font(self, size: int) -> pygame.font.Font:
        f = self._fonts.get(size)
        if f is None:
            if not pygame.font.get_init():
                pygame.font.init()
            f = self._fonts[size] = pygame.font.Font(font_file(), size)
        return f

    def text(self, s: str, size: int = 13, colour: Colour = TEXT) -> pygame.Surface:
        key = (s, size, colour)
        surf = self._text.get(key)
        if surf is None:
            surf = self._text.keep(key, self.font(size).render(s, True, colour))
        return surf

    def label_size(self) -> int:
        """Font size [px] of labels on the map: it grows with the zoom, within LABEL_FONT_PX."""
        lo, hi = LABEL_FONT_PX
        return round(min(max(lo + self.view.scale, lo), hi))

    # -- frame -------------------------------------------------------------------------

    def draw(self, surf: pygame.Surface) -> None:
        """One frame. The cyclic garbage collector waits until it is drawn: a frame makes some 12,000 short-lived
        lists at 2,000 vehicles (the polygons' points), freed by reference counting, which would otherwise set off a
        dozen collections over the whole scene per frame (at 2,000 vehicles the frame took 2.5 times as long)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._draw(surf)
        finally:
            if collecting:
                gc.enable()

    def _draw(self, surf: pygame.Surface) -> None:
        w, h = surf.get_size()
        if (w, h) != (self.view.width, self.view.height):
            self.view.width, self.view.height = w, h
        if not self._fitted:
            self._panels()  # the HUD, whose height the fit leaves clear
            self.fit()
        panels = self._panels()  # the scale bar at the fitted scale
        taken = [r for _, r in panels]
        surf.blit(self._road_surface(), (0, 0))
        self._draw_rsus(surf)
        self._draw_hazards(surf)
        if self.show_flows:
            self._draw_flows(surf)
        self._draw_vehicles(surf)
        heads = self._draw_signals(surf)
        labels = self._draw_labels(surf, taken + heads)
        self._draw_plan_flash(surf)
        for panel, at in panels:
            surf.blit(panel, at)
        self.layout = {"heads": heads, "labels": labels, "panels": taken}

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
        self.view.fit(b, top_px=self._hud.get_height() if self._hud is not None else 0)  # nothing under the HUD
        self._fitted = True

    def invalidate_hud(self) -> None:
        self._hud_at = 0.0

    # -- placing heads and labels --------------------------------------------------------

    def _cost(self, r: pygame.Rect, taken: list[pygame.Rect]) -> int:
        """Pixels of `r` outside the window, on the road, or on what is `taken`: 0 is a clean spot."""
        inside = r.clip(0, 0, self.view.width, self.view.height)
        cost = r.w * r.h - inside.w * inside.h
        if inside.w and inside.h and self._road_mask is not None:
            cost += self._road_mask.overlap_area(pygame.Mask(inside.size, fill=True), inside.topleft)
        for t in taken:
            c = r.clip(t)
            cost += c.w * c.h
        return cost

    def _place(self, size: tuple[int, int], spots: Iterable[tuple[int, int]], taken: list[pygame.Rect]) -> tuple[pygame.Rect, int]:
        """The first of `spots` (top-left corners) where a `size` rectangle is clean, else the least covered one."""
        best: tuple[int, pygame.Rect] | None = None
        for xy in spots:
            r = pygame.Rect(xy, size)
            cost = self._cost(r, taken)
            if cost == 0:
                return r, 0
            if best is None or cost < best[0]:
                best = (cost, r)
        assert best is not None, "no spots"
        return best[1], best[0]

    @staticmethod
    def _beside(box: pygame.Rect, size: tuple[int, int], rings: int = 6) -> list[tuple[int, int]]:
        """Top-left corners of a `size` rectangle beside `box`: right, left, above, below, then the corners, ever
        further out (gaps of 3 px, then 1, 3, 7, ... text heights: out of a large junction box when zoomed in)."""
        w, h = size
        out = []
        for k in range(rings):
            g = 3 + (2**k - 1) * h
            left, right, top, bottom = box.left - g - w, box.right + g, box.top - g - h, box.bottom + g
            mx, my = box.centerx - w // 2, box.centery - h // 2
            out += [(right, my), (left, my), (mx, top), (mx, bottom), (right, top), (left, top), (right, bottom), (left, bottom)]
        return out

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
            self._road_mask = pygame.mask.from_threshold(self._road, BACKGROUND, (1, 1, 1, 255))
            self._road_mask.invert()
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

    def junction_box(self, iv: IntersectionView) -> pygame.Rect:
        """The screen rectangle around the junction box: the hull of where the lanes meet it."""
        ends = self.view.to_screen(_junction_ends(iv))
        lo, hi = ends.min(axis=0), ends.max(axis=0)
        return pygame.Rect(round(lo[0]), round(lo[1]), round(hi[0] - lo[0]), round(hi[1] - lo[1]))

    def _draw_road(self, surf: pygame.Surface, iv: IntersectionView) -> None:
        # the junction box: the hull of where the lanes meet it
        ends = _junction_ends(iv)
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

    def _rsu_marker(self, xy: tuple[float, float]) -> pygame.Rect:
        side = round(min(max(4 * self.view.scale, 7), 12))
        r = pygame.Rect(0, 0, side, side)
        r.center = self.view.point(*xy)
        return r

    def pick_rsu(self, px: float, py: float, radius_px: float = 8.0) -> str | None:
        """The RSU whose marker is at (or within `radius_px` of) a pixel."""
        for rsu in self.scene.rsus.values():
            if rsu.xy is not None and self._rsu_marker(rsu.xy).inflate(2 * radius_px, 2 * radius_px).collidepoint(px, py):
                return rsu.sender
        return None

    def _draw_rsus(self, surf: pygame.Surface) -> None:
        """The RSUs' markers and, faintly, the radio range of the selected and the hovered RSU, or of all (key w)."""
        for rsu in self.scene.rsus.values():
            if rsu.xy is None:
                continue
            colour = _RSU_STATE_COLOURS.get(rsu.state, LIGHT_DARK)
            marker = self._rsu_marker(rsu.xy)
            pygame.draw.rect(surf, colour, marker)
            pygame.draw.rect(surf, (255, 255, 255), marker, 1)
            if not (self.show_ranges or rsu.sender in (self.selected_rsu, self.hovered_rsu)):
                continue
            c = self.view.point(*rsu.xy)
            r = round(rsu.range_m * self.view.scale)
            area = pygame.Rect(c[0] - r, c[1] - r, 2 * r, 2 * r).clip(surf.get_rect())
            if r < 2 or area.w == 0 or area.h == 0:
                continue
            red, green, blue = colour
            layer = pygame.Surface(area.size, pygame.SRCALPHA)
            centre = (c[0] - area.x, c[1] - area.y)
            corners = max(math.dist(c, p) for p in (area.topleft, area.topright, area.bottomleft, area.bottomright))
            if corners < r:  # the window lies inside the range: no rim to draw
                layer.fill((red, green, blue, RANGE_ALPHA[0]))
            else:
                pygame.draw.circle(layer, (red, green, blue, RANGE_ALPHA[0]), centre, r)
                pygame.draw.circle(layer, (red, green, blue, RANGE_ALPHA[1]), centre, r, 2)
            surf.blit(layer, area)

    def _hazard_marker(self, xy: tuple[int, int]) -> tuple[list[tuple[int, int]], int]:
        """The warning triangle's corners [px] and its height, which grows with the zoom (14 to 24 px)."""
        x, y = xy
        s = round(min(max(6 * self.view.scale, 14), 24))
        return [(x, y - s * 2 // 3), (x - s // 2, y + s // 3), (x + s // 2, y + s // 3)], s

    def _draw_hazards(self, surf: pygame.Surface) -> None:
        for hz in self.scene.hazards.values():
            x, y = self.view.point(*hz.xy)
            r = max(round(hz.event.radius_m * self.view.scale), 3)
            pygame.draw.circle(surf, HAZARD_COLOUR, (x, y), r, 2)
            tri, s = self._hazard_marker((x, y))
            pygame.draw.polygon(surf, (255, 235, 0), tri)
            pygame.draw.polygon(surf, HAZARD_COLOUR, tri, max(2, s // 8))
            mark = self.text("!", s * 2 // 3, TEXT)
            surf.blit(mark, (x - mark.get_width() // 2, y - s // 6 - mark.get_height() // 2))

    def _draw_labels(self, surf: pygame.Surface, taken: list[pygame.Rect]) -> list[pygame.Rect]:
        """The RSUs' markers and names, and the hazards' names, each beside its mark and off the road, inside the
        window. A hazard's name is always drawn; an RSU's when it finds a clean spot (or is selected or hovered)."""
        placed = []
        font_px = self.label_size()
        items: list[tuple[pygame.Rect, str, int, Colour, bool]] = []
        for hz in self.scene.hazards.values():
            c = self.view.point(*hz.xy)
            r = max(round(hz.event.radius_m * self.view.scale), 3)
            _, s = self._hazard_marker(c)
            mark = pygame.Rect(c[0] - r, c[1] - r, 2 * r + 1, 2 * r + 1).union((c[0] - s // 2, c[1] - s * 2 // 3, s, s))
            name = f"{hz.event.kind.name.lower().replace('_', ' ')} #{hz.event.event_id}"
            items.append((mark, name, font_px + 1, HAZARD_COLOUR, True))
        for rsu in self.scene.rsus.values():
            if rsu.xy is None:
                continue
            colour = _RSU_STATE_COLOURS.get(rsu.state, LIGHT_DARK)
            name = rsu.sender + ("" if rsu.state == "online" else f" ({rsu.state})")
            items.append((self._rsu_marker(rsu.xy), name, font_px, colour, rsu.sender in (self.selected_rsu, self.hovered_rsu)))
        key = (self._road_key, tuple((tuple(it[0]), *it[1:]) for it in items), tuple(tuple(t) for t in taken))
        boxes = self._labels[1] if key == self._labels[0] else self._place_labels(items, taken)
        self._labels = (key, boxes)
        for (mark, name, px, colour, _), box in zip(items, boxes, strict=True):
            if box is None:
                continue
            label = self.text(name, px, colour)
            if not box.inflate(8, 8).colliderect(mark):  # a leader line: the name is not next to its mark
                pygame.draw.line(surf, LIGHT_DARK, mark.center, (min(max(mark.centerx, box.left), box.right),
                                                                 min(max(mark.centery, box.top), box.bottom)), 1)
            pygame.draw.rect(surf, BACKGROUND, box)
            surf.blit(label, (box.x + 2, box.y))
            placed.append(box)
        return placed

    def _place_labels(self, items: list[tuple[pygame.Rect, str, int, Colour, bool]], taken: list[pygame.Rect]) -> list[pygame.Rect | None]:
        """Where each label goes (None: not drawn), in order, each clear of those before it."""
        taken = list(taken)
        window = pygame.Rect(0, 0, self.view.width, self.view.height)
        out: list[pygame.Rect | None] = []
        for mark, name, font_px, _, always in items:
            label = self.font(font_px).size(name)
            size = (label[0] + 4, label[1])
            box, cost = self._place(size, self._beside(mark, size), taken)
            if not window.colliderect(mark) or (cost and not always):
                out.append(None)  # its mark is off screen, or no clean spot for a name that can wait
                continue
            box.clamp_ip(window)
            taken.append(box)
            out.append(box)
        return out

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
        label = self.text("cloud", 12, (255, 255, 255))
        surf.blit(label, (cloud[0] - label.get_width() // 2, cloud[1] - label.get_height() // 2))

    # -- vehicles ------------------------------------------------------------------------

    def vehicle_colours(self) -> list[Colour]:
        v = self.scene.vehicles
        n = v.n
        if self.colour_mode == "speed":
            idx = np.minimum((v.speed[:n] / SPEED_STEP_MPS).astype(np.int64), len(SPEED_COLOURS) - 1)
            return [SPEED_COLOURS[i] for i in idx.tolist()]
        return [state_colour(flags) for flags in v.flags[:n].tolist()]

    def vehicle_outlines(self) -> np.ndarray:
        """(n, 5, 2) screen points of each vehicle: its body along its heading, the nose pointed over half its
        width, at least MIN_VEHICLE_PX long and wide."""
        v = self.scene.vehicles
        n = v.n
        hd = v.heading[:n]
        fwd = np.stack([np.sin(hd), np.cos(hd)], axis=1)
        right = np.stack([np.cos(hd), -np.sin(hd)], axis=1)
        half_l = np.maximum(v.length[:n], MIN_VEHICLE_PX[0] / self.view.scale)[:, None] / 2
        half_w = np.maximum(v.width[:n], MIN_VEHICLE_PX[1] / self.view.scale)[:, None] / 2
        shoulder = fwd * (half_l - np.minimum(half_w, half_l))
        c = v.xy[:n]
        outline = np.stack([
            c + fwd * half_l, c + shoulder + right * half_w, c - fwd * half_l + right * half_w,
            c - fwd * half_l - right * half_w, c + shoulder - right * half_w,
        ], axis=1)
        return self.view.to_screen(outline)

    def _draw_vehicles(self, surf: pygame.Surface) -> None:
        n = self.scene.vehicles.n
        if n == 0:
            return
        outlines = self.vehicle_outlines()
        # on screen: its nose (point 0) or its tail's middle within reach; a vehicle reaches no further than its length
        # from either (a reduction over each outline's points costs as much as drawing them)
        v = self.scene.vehicles
        reach = max(float(v.length[:n].max()) * self.view.scale, MIN_VEHICLE_PX[0])
        mid = (outlines[:, 2] + outlines[:, 3]) * 0.5
        visible = np.zeros(n, dtype=bool)
        for p in (outlines[:, 0], mid):
            visible |= (p[:, 0] >= -reach) & (p[:, 0] < self.view.width + reach) & (p[:, 1] >= -reach) & (p[:, 1] < self.view.height + reach)
        colours = self.vehicle_colours()
        polygon = pygame.draw.polygon
        pts = outlines.tolist()
        for i in np.flatnonzero(visible).tolist():
            polygon(surf, colours[i], pts[i])
        sel = self.scene.vehicles.index.get(self.selected) if self.selected else None
        if sel is not None:
            pygame.draw.polygon(surf, (0, 0, 0), pts[sel], 2)
            x, y = outlines[sel].mean(axis=0)
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

    def head_pitch(self, iv: IntersectionView) -> float:
        """[px] per light of this junction's heads: a share of its junction box, within HEAD_PITCH_PX."""
        box = self.junction_box(iv)
        lo, hi = HEAD_PITCH_PX
        return min(max(HEAD_PITCH_OF_BOX * min(box.w, box.h), lo), hi)

    def signal_heads(self) -> list[Head]:
        """Per approach: (intersection, where its head is drawn [px], [(group, turn)]). A head sits on the kerb side
        upstream of the stop line, stepped further out until it covers no road and no other head; cached with the
        road."""
        self._road_surface()
        if self._heads_key == self._road_key:
            return self._heads
        out: list[Head] = []
        for iv in self.scene.intersections.values():
            approaches: dict[int, list[LaneView]] = {}
            for lane in iv.lanes:
                if lane.ingress and lane.movements:
                    approaches.setdefault(lane.approach, []).append(lane)
            p = self.head_pitch(iv)
            for lanes in approaches.values():
                a0, a1 = lanes[0].points[0], lanes[0].points[1]
                inward = (a0 - a1) / max(float(np.hypot(*(a0 - a1))), 1e-9)
                right = np.array([inward[1], -inward[0]])  # the kerb side (traffic on the right)
                outer = max(lanes, key=lambda ln: float(np.dot(ln.points[0], right)))
                anchor = self.view.to_screen(outer.points[0] + right * (outer.width_m / 2))
                by_group: dict[int, str] = {}
                for g, t in sorted({mv for ln in lanes for mv in ln.movements}, key=lambda gm: "LUTR".index(gm[1])):
                    by_group.setdefault(g, t)
                uniq = list(by_group.items())
                w, h = round(p * (len(uniq) + 0.3)), round(p * (1.9 if p >= HEAD_DETAIL_PX else 1.3))
                side, up = np.array([right[0], -right[1]]), -np.array([inward[0], -inward[1]])  # on screen (y down)
                reach_side = abs(side[0]) * w / 2 + abs(side[1]) * h / 2 + 2  # centre to edge, across and along
                reach_up = abs(up[0]) * w / 2 + abs(up[1]) * h / 2 + 2
                spots = []
                for k, j in sorted(itertools.product(range(8), range(3)), key=sum):
                    c = anchor + side * (reach_side + k * p / 2) + up * (reach_up + j * p / 2)
                    spots.append((round(c[0] - w / 2), round(c[1] - h / 2)))
                box, _ = self._place((w, h), spots, [hd[1] for hd in out])
                out.append((iv.name, box, uniq))
        self._heads, self._heads_key = out, self._road_key
        return out

    def _draw_signals(self, surf: pygame.Surface) -> list[pygame.Rect]:
        heads = self.signal_heads()
        states: dict[str, dict[int, m.MovementEvent]] = {}
        spats: dict[str, m.IntersectionState] = {}
        for name in {h[0] for h in heads}:
            got = self.scene.signal(name)
            if got is not None:
                spats[name] = got[2]
                states[name] = {ms.signal_group: ms.events[0] for ms in got[2].states if ms.events}
        for name, box, moves in heads:
            p = box.w / (len(moves) + 0.3)
            pygame.draw.rect(surf, HEAD_BODY, box, border_radius=max(1, round(p / 5)))
            for k, (group, turn) in enumerate(moves):
                ev = states.get(name, {}).get(group)
                colour = light_colour(ev.state) if ev is not None else LIGHT_DARK
                dot = (box.left + round(p * (k + 0.65)), box.top + round(p * 0.65))
                pygame.draw.circle(surf, colour, dot, max(round(p * 0.4), 2))
                if p < HEAD_DETAIL_PX:
                    continue
                glyph = self.text(turn, round(p * 0.55), (255, 255, 255) if colour != LIGHT_YELLOW else TEXT)
                surf.blit(glyph, (dot[0] - glyph.get_width() // 2, dot[1] - glyph.get_height() // 2))
                left = self.scene.countdown_s(spats[name], ev) if ev is not None else None
                if left is not None:
                    num = self.text(f"{max(left, 0.0):.0f}", round(p * 0.6), colour)
                    surf.blit(num, (dot[0] - num.get_width() // 2, box.top + round(p * 1.25)))
        return [h[1] for h in heads]

    def _draw_plan_flash(self, surf: pygame.Surface) -> None:
        for name, until in self.scene.plan_flash.items():  # a plan change: the junction flashes
            iv = self.scene.intersections.get(name)
            if iv is not None and self.scene.now_ms < until:
                pygame.draw.circle(surf, (170, 40, 200), self.view.point(*iv.center), max(round(30 * self.view.scale), 20), 3)

    # -- HUD, legend, panels -----------------------------------------------------------------

    def _panel(self, lines: list[tuple[str, Colour]], size: int = 13) -> pygame.Surface:
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

    def title(self) -> str:
        """The HUD's first line: what is shown (live or a replay, and whether it ended)."""
        return f"v2x viz · {self.mode_label}"

    def hud_lines(self) -> list[str]:
        sc = self.scene
        rsus = list(sc.rsus.values())
        states = Counter(r.state for r in rsus)
        broker = (f"broker {self.broker_label}" if self.broker_label else "") + (f" ({sc.broker_version})" if sc.broker_version else "")
        lines = [
            self.title(),
            *([broker.strip()] if broker else []),
            f"sim {sc.now_ms / 1000:7.1f} s   vehicles {sc.vehicles.n}   "
            f"RSUs {', '.join(f'{n} {k}' for k, n in sorted(states.items())) or 'not heard'}   cloud {sc.cloud_state}   "
            f"hazards {len(sc.hazards)}",
        ]
        rates = sc.rates()
        lines.append("msgs/s  " + ("  ".join(f"{k} {v}" for k, v in sorted(rates.items())) if rates else "-"))
        lat = sc.latency_ms()
        if lat and all(v is None for v in lat.values()):
            lines.append("latency: n/a here (fast mode: senders run on a sim clock; the report gives the modelled link delays)")
        elif lat:
            lines.append("latency p50/p99 ms, measured here through the broker (no link model)  " + "  ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}" for k, v in lat.items() if v))
        for pc in list(sc.plans)[-3:]:
            greens = "/".join(f"{g:.0f}" for g in pc.greens)
            lines.append(f"plan {pc.plan_id} -> {pc.intersection} at {pc.sim_s:.0f} s: cycle {pc.cycle_s:.0f} s, greens {greens}")
        bad = sum(sc.errors.values())
        if bad:
            lines.append("bad payloads " + ", ".join(f"{k} {v}" for k, v in sorted(sc.errors.items())))
        return lines

    def legend_entries(self) -> list[tuple[Colour, str]]:
        if self.colour_mode == "speed":
            return [(SPEED_COLOURS[0], f"0-{SPEED_STEP_MPS:g} m/s: stopped, queued"),
                    (SPEED_COLOURS[-1], f"{SPEED_STEP_MPS * (len(SPEED_COLOURS) - 1):g}+ m/s: free flow")]
        return [(c, label) for _, c, label in STATE_COLOURS] + [(STATE_NORMAL, "other vehicle")]

    def _legend_surface(self) -> pygame.Surface:
        """The legend of colours and marks (cached per colour mode)."""
        if self._legend is not None and self._legend_key == (self.colour_mode,):
            return self._legend
        row_h, icon_w = 19, 52
        rows: list[tuple[str, str, object]] = [("title", f"vehicles by {self.colour_mode} (key c)", None)]
        rows += [("swatch", label, c) for c, label in self.legend_entries()]
        if self.colour_mode == "speed":
            rows.insert(1, ("ramp", f"speed, {SPEED_STEP_MPS:g} m/s per shade", None))
        rows += [("lights", "signal head: movement L/T/R, s left", None), ("rsu", "RSU and its radio range (key w)", None),
                 ("hazard", "hazard (RSI) and its zone", None)]
        texts = [self.text(label, 12) for _, label, _ in rows]
        panel = pygame.Surface((icon_w + max(t.get_width() for t in texts) + 12, row_h * len(rows) + 10), pygame.SRCALPHA)
        panel.fill(PANEL)
        for k, ((kind, _, arg), t) in enumerate(zip(rows, texts, strict=True)):
            y = 5 + row_h * k + row_h // 2
            panel.blit(t, (8 if kind == "title" else icon_w, y - t.get_height() // 2))
            if kind == "swatch":
                assert isinstance(arg, tuple)
                pygame.draw.rect(panel, arg, (14, y - 4, 24, 9))
            elif kind == "ramp":
                for j, c in enumerate(SPEED_COLOURS):
                    pygame.draw.rect(panel, c, (8 + 5 * j, y - 4, 5, 9))
            elif kind == "lights":
                for j, c in enumerate((LIGHT_RED, LIGHT_YELLOW, LIGHT_GREEN)):
                    pygame.draw.circle(panel, c, (14 + 12 * j, y), 5)
            elif kind == "rsu":
                pygame.draw.circle(panel, RSU_COLOUR, (26, y), 9, 1)
                pygame.draw.rect(panel, RSU_COLOUR, (22, y - 4, 8, 8))
            elif kind == "hazard":
                tri = [(26, y - 7), (19, y + 6), (33, y + 6)]
                pygame.draw.polygon(panel, (255, 235, 0), tri)
                pygame.draw.polygon(panel, HAZARD_COLOUR, tri, 2)
        self._legend, self._legend_key = panel, (self.colour_mode,)
        return panel

    def _scale_bar(self) -> pygame.Surface:
        """A round length of about 120 px, and how long it is (cached per zoom)."""
        metres = _nice_length(120 / self.view.scale)
        px = round(metres * self.view.scale)
        if self._bar is not None and self._bar[0] == (metres, px):
            return self._bar[1]
        label = self.text(f"{metres:g} m", 13)
        bar = pygame.Surface((px + label.get_width() + 30, 30), pygame.SRCALPHA)
        bar.fill(PANEL)
        pygame.draw.line(bar, TEXT, (8, 15), (8 + px, 15), 3)
        for x in (8, 8 + px):
            pygame.draw.line(bar, TEXT, (x, 9), (x, 21), 2)
        bar.blit(label, (16 + px, 15 - label.get_height() // 2))
        self._bar = ((metres, px), bar)
        return bar

    def _panels(self) -> list[tuple[pygame.Surface, pygame.Rect]]:
        """What is drawn over the map, and where: the HUD, the legend, the scale bar, the keys, the selected vehicle's
        panel and, when paused, the paused badge."""
        now = time.monotonic()
        if self._hud is None or now - self._hud_at >= HUD_REFRESH_S:
            self._hud = self._panel([(s, TEXT) for s in self.hud_lines()])
            self._hud_at = now
        w, h = self.view.width, self.view.height
        legend, bar, keys = self._legend_surface(), self._scale_bar(), self.text(KEYS, 11)
        out = [(self._hud, self._hud.get_rect(topleft=(10, 10))),
               (legend, legend.get_rect(bottomleft=(10, h - 44))),
               (bar, bar.get_rect(bottomleft=(10, h - 7))),
               (keys, keys.get_rect(bottomright=(w - 10, h - 8)))]
        if self.selected is not None:
            panel = self._panel([(s, TEXT) for s in self.scene.describe(self.selected)], 12)
            out.append((panel, panel.get_rect(topright=(w - 10, 60))))
        if self.paused:
            badge = self.text("paused · space to resume · click to inspect", 14, (255, 255, 255))
            back = pygame.Surface((badge.get_width() + 20, badge.get_height() + 10))
            back.fill(PAUSED_BADGE)
            back.blit(badge, (10, 5))
            out.append((back, back.get_rect(midtop=(w // 2, 10))))
        return out


def _junction_ends(iv: IntersectionView) -> np.ndarray:
    """Where the junction's approach lanes meet it: their first nodes (the rest of the road a MAP may carry, lanes
    of no approach, is not at the junction)."""
    return np.array([lane.points[0] for lane in iv.lanes if lane.approach] or [lane.points[0] for lane in iv.lanes])


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
