"""Misbehaviour detection in the cloud: plausibility checks on every BSM, after F2MD (Kamel et al.).

Per sender, each BSM is checked on its own and against the sender's previous one:

    speed               reported speed above MAX_SPEED_MPS
    off_road            farther than a lane's half width + ROAD_MARGIN_M from every lane and turning path
    heading             on the road, but no lane there runs within HEADING_TOL_DEG of its heading (moving)
    position_speed      distance from the previous position disagrees with the speeds reported (F2MD's
                        position-speed consistency): |d - mean speed x dt| > MOVE_TOL_M + MOVE_TOL_SHARE x d
    acceleration        speed change over dt beyond MAX_ACCEL_MPS2 (no car brakes harder: flagged at once)
    heading_change      heading turned more than MAX_TURN_DEG between beacons at speed
    frequency           two beacons closer than MIN_INTERVAL_S
    sudden_appearance   the first BSM of a sender comes from farther than APPEAR_M from every entry to
                        the network (vehicles enter at the network's edge)
    overlap             its position is within OVERLAP_M of another vehicle's at the same time (F2MD's
                        intersection check): a standing vehicle a moving one drives through is flagged;
                        otherwise whoever has overlapped OVERLAP_DISTINCT others
    twin                two senders closer than TWIN_M moving in lockstep (same speed and heading, constant
                        distance) for TWIN_S: one OBU speaking for two (Sybil)
    sudden_disappearance  it stops sending while standing, while others still send (honest vehicles leave at
                        the network's edge, moving; a stalled vehicle cleared from the road would count too)

Positions come from GNSS, and a BSM may say how accurate its position is (J2735 PositionalAccuracy: one
sigma). The position checks allow for it, the stated accuracy counted up to ACCURACY_CAP_M (a sender that
claims to know nothing cannot switch them off): off_road and heading widen the road by OFF_ROAD_SIGMAS
sigmas, sudden_appearance its distance as much; position_speed widens its tolerance by MOVE_SIGMAS times the
two fixes' combined sigma; overlap asks the two positions to be within OVERLAP_M by OVERLAP_SIGMAS combined
sigmas more, so with standard receivers (metres) it does not judge at all, with RTK (centimetres) as before.
twin needs no allowance: independent errors only make honest pairs look less alike.

A sender is flagged as misbehaving once its strikes reach FLAG_STRIKES (a sudden appearance or
disappearance counts FLAG_STRIKES at once: no honest vehicle does either). Thresholds start
from F2MD's defaults, set for this simulator's urban roads (speeds to 40 m/s, braking to 9 m/s2).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from v2x.core.jit import BoolArray, FloatArray, IntArray, kernel
from v2x.core.jsonview import JsonRecord
from v2x.core.network import LinkKind, Network

MAX_SPEED_MPS = 40.0
ROAD_MARGIN_M = 2.0
HEADING_TOL_DEG = 45.0
MOVE_TOL_M = 2.0
MOVE_TOL_SHARE = 0.2
MAX_ACCEL_MPS2 = 12.0
MAX_TURN_DEG = 45.0
MIN_INTERVAL_S = 0.05
APPEAR_M = 60.0
OVERLAP_M = 2.0
OVERLAP_DISTINCT = 2
GONE_S = 2.0  # [s] without a BSM while others send: it has stopped sending
MAX_DT_S = 1.5  # [s] beacons further apart are not compared
FLAG_STRIKES = 3
TWIN_M = 9.5  # [m] closer than any honest follower keeps above TWIN_SPEED_MPS (2 m + 1 s headway + a length); > OVERLAP_M
TWIN_SPEED_MPS = 5.0
TWIN_S = 3.0  # [s] in lockstep this long: two identities of one OBU
STANDING_MPS = 0.5
CREDIBLE_BSMS = 10
MOVING_MPS = 3.0
EDGE_SLACK_M = 15.0  # [m] each lane is taken as this much longer at both ends
LANE_GRID_M = 25.0  # [m] grid squares of the on-road check
SWEEP_EVERY_S = 0.1  # [s] how often senders that went quiet are looked for
GRID_M = 10.0  # [m] grid squares for the neighbour checks: at least TWIN_M
ACCURACY_CAP_M = 3.0  # [m] a stated accuracy (one sigma) is counted up to this: worse buys no more allowance
OFF_ROAD_SIGMAS = 3.5  # lateral error allowed beyond the road's margin, in sigmas (one-sided 3.5 sigma: 0.02%)
MOVE_SIGMAS = 2.0  # position-speed tolerance added, in sigmas of the difference of two fixes
OVERLAP_SIGMAS = 2.0  # two positions overlap when closer than OVERLAP_M by this many combined sigmas
_TAU = 2 * math.pi
_MAX_TURN_RAD = math.radians(MAX_TURN_DEG)


@dataclass
class Track:
    t: float
    x: float
    y: float
    speed: float
    heading: float
    first_s: float
    n: int = 1
    strikes: Counter[str] = field(default_factory=Counter)
    overlapped: set[str] = field(default_factory=set)
    flagged_s: float | None = None
    cell: tuple[int, int] = (0, 0)  # its square of the grid the neighbour checks look in
    acc: float = 0.0  # [m] its latest stated accuracy (one sigma), capped at ACCURACY_CAP_M


def _credible(tr: Track) -> bool:
    """Heard for a second or more with no strike: its word counts against another's."""
    return tr.n >= CREDIBLE_BSMS and not tr.strikes


@dataclass
class MisbehaviourSummary(JsonRecord):
    """BSMs checked per sender, and the senders flagged: when, and how many strikes of each check."""

    senders: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, dict[str, Any]] = field(default_factory=dict)  # sender -> {"at_s": ..., "strikes": {check: n}}


class Misbehaviour:
    """The cloud's misbehaviour detector over the BSMs it hears."""

    def __init__(self, net: Network) -> None:
        self.net = net
        segs = []
        for lk in net.links:
            p = lk.points.copy()
            # vehicles are still reported for a body length past the network's edge (entering and leaving)
            for end, inner in ((0, 1), (-1, -2)):
                d = p[end] - p[inner]
                p[end] = p[end] + d / max(float(np.hypot(*d)), 1e-9) * EDGE_SLACK_M
            approach = net.intersections[lk.intersection].spec.approach(lk.leg)
            width = approach.lane_width_m if approach is not None else 3.5
            for a, b in itertools.pairwise(p):
                segs.append((a[0], a[1], b[0], b[1], width))
        # a network without lanes here (a SUMO scenario's: docs/sumo.md) is checked on motion alone, not on the road
        self.roads = bool(segs)
        s = np.array(segs, dtype=np.float64).reshape(-1, 5)
        seg_a, seg_b, hw = s[:, 0:2], s[:, 2:4], s[:, 4] / 2
        d = seg_b - seg_a
        len2 = np.maximum((d**2).sum(axis=1), 1e-9)
        heading = np.arctan2(d[:, 0], d[:, 1])  # compass heading of each segment
        # the segments that can be within ROAD_MARGIN_M of a point, per LANE_GRID_M square
        reach = hw + ROAD_MARGIN_M + OFF_ROAD_SIGMAS * ACCURACY_CAP_M
        lo = np.floor((np.minimum(seg_a, seg_b) - reach[:, None]) / LANE_GRID_M).astype(int)
        hi = np.floor((np.maximum(seg_a, seg_b) + reach[:, None]) / LANE_GRID_M).astype(int)
        cells: dict[tuple[int, int], list[int]] = {}
        for k in range(len(segs)):
            for cx in range(lo[k, 0], hi[k, 0] + 1):
                for cy in range(lo[k, 1], hi[k, 1] + 1):
                    cells.setdefault((cx, cy), []).append(k)
        # every segment as columns (start, direction vector, length^2, half width, compass heading), for the compiled
        # check (`_on_road_kernel`); each square's segments as a run of `_square_segs`, from `_square_start[c]` to
        # `_square_start[c + 1]`, and the squares as a dense grid over their bounding box: each square's number (-1: no
        # segment within reach), so that a batch is looked up without a dict lookup per BSM
        self._segs = (np.ascontiguousarray(seg_a[:, 0]), np.ascontiguousarray(seg_a[:, 1]), np.ascontiguousarray(d[:, 0]),
                      np.ascontiguousarray(d[:, 1]), np.ascontiguousarray(len2), np.ascontiguousarray(hw), np.ascontiguousarray(heading))
        squares = np.array(list(cells) or [(0, 0)], dtype=np.int64).reshape(-1, 2)
        self._grid_lo = squares.min(axis=0)
        self._grid = np.full(tuple(squares.max(axis=0) - self._grid_lo + 1), -1, dtype=np.int64)
        self._square_start = np.zeros(len(cells) + 1, dtype=np.int64)
        self._square_segs = np.array([k for ks in cells.values() for k in ks], dtype=np.int64)
        for c, ((cx, cy), ks) in enumerate(cells.items()):
            self._grid[cx - self._grid_lo[0], cy - self._grid_lo[1]] = c
            self._square_start[c + 1] = self._square_start[c] + len(ks)
        none = np.empty(0)
        self._on_road(none, none, none, none, none)  # the compiled check loaded now (numba's disk cache), not mid-run
        targets = {lk.target for lk in net.links if lk.kind == LinkKind.CONN}
        entries = [lk.points[0] for lk in net.links if lk.kind == LinkKind.IN and lk.id not in targets]
        self._entries = np.array(entries)
        self.tracks: dict[str, Track] = {}
        # senders that stopped sending: BSMs checked, and when and why it was flagged (None: not flagged); kept for the
        # summary, without the track (a departed vehicle's check state is not kept: memory grows with the senders
        # heard lately, and with only this pair per sender ever heard)
        self.gone: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self._twins: dict[tuple[str, str], tuple[float, float]] = {}  # pair moving in lockstep -> (since, distance)
        self._cells: dict[tuple[int, int], set[str]] = {}  # grid square -> senders whose latest position is in it
        self.latest_t = 0.0
        self._next_sweep_s = -math.inf
        # BSMs heard and not yet checked (`check`): senders, and (t, x, y, speed, heading, accuracy) of each
        self._senders: list[str] = []
        self._pending: list[tuple[float, float, float, float, float, float]] = []

    def _on_road(self, x: np.ndarray, y: np.ndarray, speed: np.ndarray, h: np.ndarray,
                 margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per BSM of a batch: whether it is off the road (farther than `margin` [m] beyond the nearest lane's half
        width), and whether, on it and moving, no lane within `margin` runs within HEADING_TOL_DEG of heading `h`
        [rad]. Only the segments of the point's grid square are looked at: they hold every segment that can be
        within the widest margin, so beyond that the distance may be overstated (it is then off road anyway)."""
        gx = np.floor(x / LANE_GRID_M) - self._grid_lo[0]
        gy = np.floor(y / LANE_GRID_M) - self._grid_lo[1]
        inside = (gx >= 0) & (gx < self._grid.shape[0]) & (gy >= 0) & (gy < self._grid.shape[1])  # NaN: outside
        ix, iy = np.where(inside, gx, 0).astype(np.int64), np.where(inside, gy, 0).astype(np.int64)
        square = np.require(np.where(inside, self._grid[ix, iy], -1), np.int64, ["C", "W"])
        # C-contiguous and writeable, float64: the one signature the kernel is compiled for
        return _on_road_kernel(*self._segs, self._square_start, self._square_segs, square,
                               *(np.require(v, np.float64, ["C", "W"]) for v in (x, y, speed, h, margin)))

    def bsm(
        self, sender: str, t: float, x: float, y: float, speed: float, heading_deg: float, accuracy_m: float = 0.0
    ) -> None:
        """One BSM: `t` its generation time [s], position in local metres, `accuracy_m` the position's stated
        accuracy (one sigma, the error ellipse's semi-major axis; 0: not stated, taken as exact).

        Checked with the others heard since, as one batch, before anything reads the verdicts (`check`)."""
        self._senders.append(sender)
        self._pending.append((t, x, y, speed, heading_deg, accuracy_m))

    def check(self) -> None:
        """The BSMs heard since the last call, in the order they were heard: the same verdicts as checking each on
        arrival, the on-road checks (which need no sender's history) for all of them at once."""
        if not self._senders:
            return
        senders, pending = self._senders, np.array(self._pending, dtype=np.float64)
        self._senders, self._pending = [], []
        _, x, y, speed, heading_deg, accuracy_m = pending.T
        margin = ROAD_MARGIN_M + OFF_ROAD_SIGMAS * np.minimum(accuracy_m, ACCURACY_CAP_M)
        if self.roads:
            off, wrong_way = self._on_road(x, y, speed, np.radians(heading_deg), margin)
        else:  # no lanes (a SUMO network): motion alone
            off = wrong_way = np.zeros(len(senders), dtype=bool)
        for (t, px, py, v, heading, acc), sender, o, w in zip(pending.tolist(), senders, off.tolist(), wrong_way.tolist(), strict=True):
            self._check(sender, t, px, py, v, heading, acc, o, w)

    def _check(self, sender: str, t: float, x: float, y: float, speed: float, heading_deg: float, accuracy_m: float,
               off_road: bool, wrong_way: bool) -> None:
        """One BSM's checks against its sender's history and its neighbours; `off_road`, `wrong_way`: `_on_road`'s."""
        if t > self.latest_t:
            self.latest_t = t
        h = math.radians(heading_deg)
        acc = accuracy_m if accuracy_m < ACCURACY_CAP_M else ACCURACY_CAP_M
        tr = self.tracks.get(sender)
        strikes: dict[str, int] = {}  # this BSM's strikes by check, each check at most once
        if tr is None:
            tr = self.tracks[sender] = Track(t, x, y, speed, h, t, acc=acc)
            if self.roads and float(np.hypot(*(self._entries - (x, y)).T).min()) > APPEAR_M + OFF_ROAD_SIGMAS * acc:
                strikes["sudden_appearance"] = FLAG_STRIKES
        else:
            dt = t - tr.t
            if 0 < dt < MIN_INTERVAL_S:
                strikes["frequency"] = 1
            if 0 < dt <= MAX_DT_S:
                d = math.hypot(x - tr.x, y - tr.y)
                allowance = MOVE_SIGMAS * math.hypot(tr.acc, acc)  # both fixes' errors, at worst independent
                if abs(d - (tr.speed + speed) / 2 * dt) > MOVE_TOL_M + MOVE_TOL_SHARE * d + allowance:
                    strikes["position_speed"] = 1
                if abs(speed - tr.speed) / dt > MAX_ACCEL_MPS2:  # beyond what any car can do: one is enough
                    strikes["acceleration"] = FLAG_STRIKES
                turn = abs((h - tr.heading + math.pi) % _TAU - math.pi)
                if dt <= 0.5 and speed > 2.0 and turn > _MAX_TURN_RAD:
                    strikes["heading_change"] = 1
            tr.t, tr.x, tr.y, tr.speed, tr.heading, tr.acc = t, x, y, speed, h, acc
            tr.n += 1
        if speed > MAX_SPEED_MPS:
            strikes["speed"] = 1
        if off_road:
            strikes["off_road"] = 1
        elif wrong_way:
            strikes["heading"] = 1
        self._move(sender, tr)
        cx, cy = tr.cell
        cells, tracks = self._cells, self.tracks
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                square = cells.get((cx + dx, cy + dy))
                if not square:
                    continue
                for other in square:
                    o = tracks[other]
                    if other == sender or abs(o.t - t) > 0.15 or o.flagged_s is not None:
                        continue  # compare with others heard at the same moment and not already known to lie
                    d = math.hypot(o.x - x, o.y - y)
                    if d >= TWIN_M:  # too far for either check (OVERLAP_M < TWIN_M)
                        continue
                    if d < OVERLAP_M and d + OVERLAP_SIGMAS * math.hypot(acc, o.acc) < OVERLAP_M:  # surely within OVERLAP_M, errors allowed for
                        self._overlap(tr, sender, o, other, t)
                    if abs(o.t - t) < 0.01:  # two identities of one OBU send at the same instant
                        lateral = abs((o.x - x) * math.cos(h) - (o.y - y) * math.sin(h))
                        if lateral < 1.0:  # one ahead of the other in the same lane, not in the next lane
                            self._twin(tr, sender, o, other, d, t)
                        else:  # out of line breaks the lockstep: with GNSS error, side by side may look in line now and then
                            self._twins.pop((sender, other) if sender < other else (other, sender), None)
        if strikes:
            self._strike(tr, strikes, t)

    def _move(self, sender: str, tr: Track) -> None:
        """File a sender under the grid square of its latest position (squares of GRID_M: the checks need neighbours
        within TWIN_M only, so a BSM looks at 9 squares, not at every vehicle)."""
        cell = (math.floor(tr.x / GRID_M), math.floor(tr.y / GRID_M))
        if cell != tr.cell or sender not in self._cells.get(cell, ()):
            self._cells.get(tr.cell, set()).discard(sender)
            self._cells.setdefault(cell, set()).add(sender)
            tr.cell = cell

    def _overlap(self, tr: Track, sender: str, o: Track, other: str, t: float) -> None:
        """Two bodies in one place. A standing vehicle that a moving one drives through is not there; else
        whoever overlaps OVERLAP_DISTINCT others is."""
        for a, b in ((tr, o), (o, tr)):
            if a.speed < STANDING_MPS and b.speed > MOVING_MPS and _credible(b):
                a.strikes["overlap"] += FLAG_STRIKES
                self._flag(a, t)
                return
        for a, partner, name in ((tr, o, other), (o, tr, sender)):
            if not _credible(partner):
                continue  # a newcomer, or one with strikes, does not count against another
            a.overlapped.add(name)
            if len(a.overlapped) == OVERLAP_DISTINCT:
                a.strikes["overlap"] += FLAG_STRIKES
                self._flag(a, t)

    def _twin(self, tr: Track, sender: str, o: Track, other: str, d: float, t: float) -> None:
        """Two senders closer than any honest follower at speed, moving in lockstep (one OBU, two identities)."""
        key = (sender, other) if sender < other else (other, sender)
        turn = abs((tr.heading - o.heading + math.pi) % (2 * math.pi) - math.pi)
        held = self._twins.get(key)
        if tr.speed > TWIN_SPEED_MPS and abs(tr.speed - o.speed) < 0.05 and turn < math.radians(1.0) and (held is None or abs(held[1] - d) < 0.2):
            since = t if held is None else held[0]
            self._twins[key] = (since, d)
            if t - since >= TWIN_S:
                for a in (tr, o):
                    if not a.strikes["twin"]:
                        a.strikes["twin"] += FLAG_STRIKES
                        self._flag(a, t)
        else:
            self._twins.pop(key, None)

    def sweep(self, now: float) -> None:
        """Senders that stopped sending while others still send: gone where no vehicle leaves the road?

        Looks at most every SWEEP_EVERY_S (the cloud calls it after every batch of messages)."""
        if now < self._next_sweep_s:
            return
        self.check()
        self._next_sweep_s = now + SWEEP_EVERY_S
        for sender, tr in list(self.tracks.items()):
            if tr.t < self.latest_t - GONE_S and now - self.latest_t < GONE_S:
                del self.tracks[sender]
                self._cells[tr.cell].discard(sender)
                if tr.speed < STANDING_MPS:  # honest vehicles leave the network moving, at its edge
                    self._strike(tr, Counter(sudden_disappearance=FLAG_STRIKES), tr.t)
                self.gone[sender] = (tr.n, _flag_of(tr))
                for pair in [k for k in self._twins if sender in k]:
                    del self._twins[pair]

    def _strike(self, tr: Track, strikes: Mapping[str, int], t: float) -> None:
        if strikes:
            tr.strikes.update(strikes)
            self._flag(tr, t)

    def _flag(self, tr: Track, t: float) -> None:
        if tr.flagged_s is None and sum(tr.strikes.values()) >= FLAG_STRIKES:
            tr.flagged_s = t

    def summary(self) -> MisbehaviourSummary:
        self.check()
        every = {**self.gone, **{s: (tr.n, _flag_of(tr)) for s, tr in self.tracks.items()}}
        return MisbehaviourSummary(
            {s: n for s, (n, _) in sorted(every.items())},
            {s: flag for s, (_, flag) in sorted(every.items()) if flag is not None},
        )


@kernel
def _on_road_kernel(
    ax: FloatArray, ay: FloatArray, dx: FloatArray, dy: FloatArray, len2: FloatArray, hw: FloatArray, heading: FloatArray,
    square_start: IntArray, square_segs: IntArray, square: IntArray,
    x: FloatArray, y: FloatArray, speed: FloatArray, h: FloatArray, margin: FloatArray,
) -> tuple[BoolArray, BoolArray]:
    """`Misbehaviour._on_road` for points in squares `square` (-1: none within reach, off road): per point, the
    distance beyond its half width to each segment of its square (the nearest point of the segment), and the
    smallest turn from its heading to the segments within its margin; the arithmetic of the numpy version it
    replaced, in the same order."""
    n = len(x)
    off, wrong_way = np.ones(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)
    tol = math.radians(HEADING_TOL_DEG)
    for i in range(n):
        c = square[i]
        if c < 0:
            continue
        px, py, mg = x[i], y[i], margin[i]
        nearest, turn_min, near = np.inf, np.inf, False
        for p in range(square_start[c], square_start[c + 1]):
            k = square_segs[p]
            u = ((px - ax[k]) * dx[k] + (py - ay[k]) * dy[k]) / len2[k]
            u = min(max(u, 0.0), 1.0)
            dist = math.hypot(ax[k] + dx[k] * u - px, ay[k] + dy[k] * u - py) - hw[k]
            nearest = min(nearest, dist)
            if dist <= mg:
                near = True
                turn = abs((heading[k] - h[i] + math.pi) % (2 * math.pi) - math.pi)
                if turn < turn_min or turn != turn:  # a NaN heading stays NaN (no wrong way), as numpy's min
                    turn_min = turn if turn_min == turn_min else turn_min
        off[i] = nearest > mg
        wrong_way[i] = not off[i] and speed[i] > 1.0 and near and turn_min > tol
    return off, wrong_way


def _flag_of(tr: Track) -> dict[str, Any] | None:
    """When a sender was flagged and its strikes by check, for the summary (None: not flagged)."""
    return None if tr.flagged_s is None else {"at_s": round(tr.flagged_s, 2), "strikes": dict(tr.strikes)}
