"""Trajectories of a run, for its time-space diagrams (`v2x run --plots DIR`, drawn by `v2x.run.plots`).

Where each vehicle is relative to its approach's stop line, sampled every `SAMPLE_S` of sim time, and the
signal each approach showed as the vehicles heard it. Memory grows with vehicles x time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from v2x.core.network import LinkKind, Network, SignalGroup
from v2x.core.traffic import Light, Traffic

SAMPLE_S = 0.5  # [s] sim time between trajectory samples
PAST_LINE_M = 40.0  # [m] drawn past the stop line


class Trajectories:
    """Where each vehicle is relative to its approach's stop line, over time; and each approach's signal."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.approaches: list[tuple[int, str]] = [(ig.index, a.leg) for ig in net.intersections for a in ig.spec.approaches]
        index = {k: i for i, k in enumerate(self.approaches)}
        # per link: the approach it belongs to (IN lanes and the turning paths from them), or -1
        self._approach_of = np.array(
            [index.get((lk.intersection, lk.leg), -1) if lk.kind != LinkKind.OUT else -1 for lk in net.links], dtype=np.int64
        )
        self._is_in = np.array([lk.kind == LinkKind.IN for lk in net.links])
        self._through: list[SignalGroup | None] = []
        for ix, leg in self.approaches:
            groups = [g for g in net.groups if g.intersection == ix and g.leg == leg]
            self._through.append(next((g for g in groups if g.turn == "through"), groups[0] if groups else None))
        self._next = 0.0
        self.t: list[np.ndarray] = []
        self.approach: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.vid: list[np.ndarray] = []
        self.signal_t: list[float] = []
        self.signal: list[list[int]] = []  # per sample, per approach: Light
        self.obstacles: list[tuple[float, int, float, int]] = []  # (t, approach, front position, lane) of stalled vehicles

    def sample(self, traffic: Traffic, light: Callable[[SignalGroup, float], Light]) -> None:
        """Record the traffic now, if a sample is due; `light` says what a group showed, as heard."""
        if traffic.t + 1e-9 < self._next:
            return
        self._next = traffic.t + SAMPLE_S
        self.signal_t.append(traffic.t)
        self.signal.append([int(light(g, traffic.t)) if g is not None else int(Light.NONE) for g in self._through])
        for lid, front, _ in traffic.obstacles.values():
            lk = self.net.links[lid]
            self.obstacles.append((traffic.t, int(self._approach_of[lid]), front - float(self.net.link_length[lid]), lk.lane))
        if traffic.n == 0:
            return
        link = traffic.current_link()
        s = traffic.s_on_link()
        pos = np.where(self._is_in[link], s - self.net.link_length[link], s)
        a = self._approach_of[link]
        keep = (a >= 0) & (pos <= PAST_LINE_M)
        self.t.append(np.full(int(keep.sum()), traffic.t))
        self.approach.append(a[keep])
        self.pos.append(pos[keep])
        self.vid.append(traffic.ids[keep].astype(np.int64))

    def of(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(time, position, vehicle id) of approach k, sorted by vehicle then time."""
        if not self.t:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
        a = np.concatenate(self.approach)
        sel = a == k
        t, pos, vid = np.concatenate(self.t)[sel], np.concatenate(self.pos)[sel], np.concatenate(self.vid)[sel]
        order = np.lexsort((t, vid))
        return t[order], pos[order], vid[order]
