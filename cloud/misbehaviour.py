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

The checks run compiled (`_check_kernel`), BSM by BSM in the order heard, each sender's state a row of columns;
a BSM's neighbours are visited in a fixed order (the latest filed in a grid square first), so that a crowd's
verdicts do not depend on the process (they did while they were Python sets of sender ids, whose order follows
string hashing).

A sender is flagged as misbehaving once its strikes reach FLAG_STRIKES (a sudden appearance or
disappearance counts FLAG_STRIKES at once: no honest vehicle does either). Thresholds start
from F2MD's defaults, set for this simulator's urban roads (speeds to 40 m/s, braking to 9 m/s2).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from v2x.core.jit import BoolArray, FloatArray, FloatMatrix, IntArray, IntMatrix, helper, kernel
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


# The checks, in the order a BSM's own strikes are counted (a sender's strikes are reported in the order each check
# first struck it); overlap and twin strike as a pair is judged, sudden_disappearance when the sweep finds it gone.
CHECKS = ("sudden_appearance", "frequency", "position_speed", "acceleration", "heading_change", "speed", "off_road",
          "heading", "overlap", "twin", "sudden_disappearance")
(SUDDEN_APPEARANCE, FREQUENCY, POSITION_SPEED, ACCELERATION, HEADING_CHANGE, SPEED, OFF_ROAD, HEADING, OVERLAP, TWIN,
 SUDDEN_DISAPPEARANCE) = range(len(CHECKS))
# Each sender heard lately has a slot: a row of these columns. Floats: its latest BSM's generation time [s], position
# [m], speed [m/s] and heading [rad]; its latest stated accuracy [m], capped at ACCURACY_CAP_M; when it was flagged [s]
# (read when FLAG is set).
T, X, Y, V, HEAD, ACC, FLAGGED = range(7)
# Integers: BSMs checked; its grid square (the neighbour checks look in the 9 around it) and whether it is filed
# there, with the next and previous sender of that square; the senders it overlapped (the first two, by their
# permanent numbers, and how many, up to 3); its permanent number (one per sender id, never reused: the overlap and
# twin checks know a sender that comes back); its strikes in all; whether it is flagged.
N, CX, CY, FILED, NEXT, PREV, OV1, OV2, OVN, PID, TOTAL, FLAG = range(12)
# the kernel's counters (`_meta`): grid squares in use, lockstep pairs held, strikes counted (their order)
SQUARES, PAIRS, STRUCK = range(3)
_EMPTY = -(2**63)  # a free place of the grid's hash table
# grid squares are clipped to +-_CELL_MAX (a NaN position to -_CELL_MAX): two points within TWIN_M stay in neighbouring
# squares. Positions from the codec (latitude and longitude in range) are within some 2e7 m, far inside.
_CELL_MAX = 2**30


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
        self._entry_x = np.array([p[0] for p in entries], dtype=np.float64)
        self._entry_y = np.array([p[1] for p in entries], dtype=np.float64)
        self.tracks: dict[str, int] = {}  # sender heard lately -> its slot (a row of the columns below)
        self._rows = 0  # slots given so far
        self._free: list[int] = []  # slots of senders gone, to give again
        self._pids: dict[str, int] = {}  # sender id -> its permanent number (one per sender ever heard)
        # senders that stopped sending: BSMs checked, and when and why it was flagged (None: not flagged); kept for the
        # summary, without the track (a departed vehicle's check state is not kept: memory grows with the senders
        # heard lately, and with only this pair per sender ever heard)
        self.gone: dict[str, tuple[int, dict[str, Any] | None]] = {}
        # each slot's state as columns (T.. and N..: see above), its strikes by check, and the order each check first
        # struck it (-1: not yet); grown as more senders are heard at once
        self._f = np.zeros((64, FLAGGED + 1), dtype=np.float64)
        self._i = np.zeros((64, FLAG + 1), dtype=np.int64)
        self._strikes = np.zeros((64, len(CHECKS)), dtype=np.int64)
        self._order = np.full((64, len(CHECKS)), -1, dtype=np.int64)
        # every grid square a sender was filed in: a hash table of squares (open addressing; a square stays once
        # used) and the first sender filed in each now (-1: none; the others follow by NEXT)
        self._grid_keys = np.full(1024, _EMPTY, dtype=np.int64)
        self._grid_heads = np.full(1024, -1, dtype=np.int64)
        # pairs moving in lockstep: (lower, higher permanent number) and (since [s], distance [m])
        self._pair_ids = np.zeros((64, 2), dtype=np.int64)
        self._pair_vals = np.zeros((64, 2), dtype=np.float64)
        self._meta = np.zeros(3, dtype=np.int64)
        self._latest = np.zeros(1, dtype=np.float64)  # the latest generation time heard [s]
        self._next_sweep_s = -math.inf
        # BSMs heard and not yet checked (`check`): senders, and (t, x, y, speed, heading, accuracy) of each
        self._senders: list[str] = []
        self._pending: list[Sequence[float]] = []  # (t, x, y, speed, heading_deg, accuracy_m) of each
        self._check_batch([], np.zeros((0, 6)), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))  # loaded now, not mid-run

    @property
    def latest_t(self) -> float:
        """The latest generation time heard [s]."""
        return float(self._latest[0])

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

    def bsms(self, senders: list[str], columns: FloatMatrix) -> None:
        """`bsm` of each of many BSMs, in order: a row of `columns` each, (t, x, y, speed, heading_deg, accuracy_m)."""
        self._senders += senders
        self._pending += columns.tolist()

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
        self._check_batch(senders, pending, off, wrong_way)

    def _check_batch(self, senders: list[str], pending: np.ndarray, off: np.ndarray, wrong_way: np.ndarray) -> None:
        """Each BSM's checks against its sender's history and its neighbours (`_check_kernel`), in order; `off`,
        `wrong_way`: `_on_road`'s."""
        n = len(senders)
        slot, pid, new = np.empty(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for k, sender in enumerate(senders):
            s = self.tracks.get(sender)
            if s is None:  # a new track (its first BSM, or its first since it was let go)
                s = self.tracks[sender] = self._slot()
                pid[k] = self._pids.setdefault(sender, len(self._pids))
                new[k] = 1
            slot[k] = s
        t, x, y, speed, heading_deg, accuracy_m = (np.ascontiguousarray(c) for c in pending.T)
        start = 0
        while True:  # the kernel stops where the grid's table or the pairs' would be too full: grown, then on
            start = _check_kernel(
                self._f, self._i, self._strikes, self._order, self._grid_keys, self._grid_heads, self._pair_ids,
                self._pair_vals, self._meta, self._latest, slot, pid, new, t, x, y, speed, heading_deg, accuracy_m,
                off, wrong_way, self._entry_x, self._entry_y, int(self.roads), len(self.tracks), start,
            )
            if start >= n:
                return
            if (self._meta[SQUARES] + 1) * 2 > len(self._grid_keys):
                size = 2 * len(self._grid_keys)
                keys, heads = np.full(size, _EMPTY, dtype=np.int64), np.full(size, -1, dtype=np.int64)
                _regrid(self._grid_keys, self._grid_heads, keys, heads)
                self._grid_keys, self._grid_heads = keys, heads
            if self._meta[PAIRS] + len(self.tracks) > len(self._pair_ids):
                size = 2 * (len(self._pair_ids) + len(self.tracks))
                self._pair_ids = _grown(self._pair_ids, size, 0)
                self._pair_vals = _grown(self._pair_vals, size, 0.0)

    def _slot(self) -> int:
        """A slot for a new track: one a departed sender left, or a new row."""
        if self._free:
            return self._free.pop()
        s, self._rows = self._rows, self._rows + 1
        if s == len(self._f):
            size = 2 * s
            self._f, self._i = _grown(self._f, size, 0.0), _grown(self._i, size, 0)
            self._strikes, self._order = _grown(self._strikes, size, 0), _grown(self._order, size, -1)
        return s

    def sweep(self, now: float) -> None:
        """Senders that stopped sending while others still send: gone where no vehicle leaves the road?

        Looks at most every SWEEP_EVERY_S (the cloud calls it after every batch of messages)."""
        if now < self._next_sweep_s:
            return
        self.check()
        self._next_sweep_s = now + SWEEP_EVERY_S
        latest = self.latest_t
        if not now - latest < GONE_S:
            return
        names = list(self.tracks)
        slots = np.fromiter(self.tracks.values(), dtype=np.int64, count=len(names))
        for k in np.flatnonzero(self._f[slots, T] < latest - GONE_S).tolist():
            sender, s = names[k], int(slots[k])
            del self.tracks[sender]
            _leave(self._i, self._grid_keys, self._grid_heads, s)
            if self._f[s, V] < STANDING_MPS:  # honest vehicles leave the network moving, at its edge
                self._strike(s, SUDDEN_DISAPPEARANCE, FLAG_STRIKES, float(self._f[s, T]))
            self.gone[sender] = (int(self._i[s, N]), self._flag_of(s))
            pairs = self._pair_ids[: self._meta[PAIRS]]  # its lockstep pairs forgotten
            kept = (pairs != self._i[s, PID]).all(axis=1)
            held = int(kept.sum())
            self._pair_vals[:held] = self._pair_vals[: len(pairs)][kept]
            self._pair_ids[:held] = pairs[kept]
            self._meta[PAIRS] = held
            self._free.append(s)

    def _strike(self, s: int, check: int, n: int, t: float) -> None:
        """`n` strikes of one check for slot `s`, flagged at `t` if they make FLAG_STRIKES (`_struck`, in Python)."""
        if self._strikes[s, check] == 0:
            self._order[s, check] = self._meta[STRUCK]
            self._meta[STRUCK] += 1
        self._strikes[s, check] += n
        self._i[s, TOTAL] += n
        if not self._i[s, FLAG] and self._i[s, TOTAL] >= FLAG_STRIKES:
            self._f[s, FLAGGED], self._i[s, FLAG] = t, 1

    def _flag_of(self, s: int) -> dict[str, Any] | None:
        """When slot `s`'s sender was flagged and its strikes by check, in the order each first struck (None: not
        flagged), for the summary."""
        if not self._i[s, FLAG]:
            return None
        at = float(self._f[s, FLAGGED])
        struck = sorted((int(self._order[s, k]), CHECKS[k], int(self._strikes[s, k])) for k in range(len(CHECKS)) if self._strikes[s, k])
        return {"at_s": round(at, 2), "strikes": {name: n for _, name, n in struck}}

    def summary(self) -> MisbehaviourSummary:
        self.check()
        every = {**self.gone, **{sender: (int(self._i[s, N]), self._flag_of(s)) for sender, s in self.tracks.items()}}
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


def _grown(a: np.ndarray, rows: int, fill: float) -> np.ndarray:
    """`a` with `rows` rows, the new ones `fill`."""
    out = np.full((rows, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


@helper
def _square(v: float) -> int:
    """The grid square a coordinate [m] is in, clipped to +-_CELL_MAX (NaN: -_CELL_MAX), with no float out of the
    integers' range cast."""
    q = v / GRID_M
    if not q > -_CELL_MAX:
        return -_CELL_MAX
    if q > _CELL_MAX:
        return _CELL_MAX
    return math.floor(q)


@helper
def _key(cx: int, cy: int) -> int:
    """Grid square (cx, cy) as one number (each within +-_CELL_MAX)."""
    return (cx << 32) | (cy & 0xFFFFFFFF)


@helper
def _place(keys: IntArray, key: int) -> int:
    """Where a grid square (`_key`) is in the hash table `keys`, or the free place it would take (linear probing)."""
    i = ((key * -7046029254386353131) >> 32) & (len(keys) - 1)  # multiplicative hashing (the product wraps)
    while keys[i] != _EMPTY and keys[i] != key:
        i = (i + 1) & (len(keys) - 1)
    return i


@helper
def _file(iv: IntMatrix, keys: IntArray, heads: IntArray, meta: IntArray, s: int, cx: int, cy: int) -> None:
    """File slot `s` under grid square (cx, cy), first of its senders."""
    key = _key(cx, cy)
    i = _place(keys, key)
    if keys[i] == _EMPTY:
        keys[i] = key
        heads[i] = -1
        meta[SQUARES] += 1
    first = heads[i]
    iv[s, NEXT], iv[s, PREV] = first, -1
    if first >= 0:
        iv[first, PREV] = s
    heads[i] = s
    iv[s, CX], iv[s, CY], iv[s, FILED] = cx, cy, 1


@helper
def _unfile(iv: IntMatrix, keys: IntArray, heads: IntArray, s: int) -> None:
    """Take slot `s` out of its grid square's senders."""
    before, after = iv[s, PREV], iv[s, NEXT]
    if before >= 0:
        iv[before, NEXT] = after
    else:
        heads[_place(keys, _key(iv[s, CX], iv[s, CY]))] = after
    if after >= 0:
        iv[after, PREV] = before
    iv[s, FILED] = 0


@kernel
def _leave(iv: IntMatrix, keys: IntArray, heads: IntArray, s: int) -> None:
    """A sender let go (`Misbehaviour.sweep`): out of the grid."""
    if iv[s, FILED]:
        _unfile(iv, keys, heads, s)


@kernel
def _regrid(keys: IntArray, heads: IntArray, new_keys: IntArray, new_heads: IntArray) -> None:
    """The grid's squares moved to a larger hash table (their senders stay as they are linked)."""
    for i in range(len(keys)):
        if keys[i] != _EMPTY:
            j = _place(new_keys, keys[i])
            new_keys[j], new_heads[j] = keys[i], heads[i]


@helper
def _struck(f: FloatMatrix, iv: IntMatrix, strikes: IntMatrix, order: IntMatrix, meta: IntArray, s: int, check: int,
            n: int, t: float) -> None:
    """`n` strikes of `check` for slot `s` (its order noted the first time that check strikes it), flagged at `t` once
    its strikes make FLAG_STRIKES."""
    if strikes[s, check] == 0:
        order[s, check] = meta[STRUCK]
        meta[STRUCK] += 1
    strikes[s, check] += n
    iv[s, TOTAL] += n
    if not iv[s, FLAG] and iv[s, TOTAL] >= FLAG_STRIKES:
        f[s, FLAGGED], iv[s, FLAG] = t, 1


@helper
def _credible(iv: IntMatrix, s: int) -> bool:
    """Heard for a second or more with no strike: its word counts against another's."""
    return bool(iv[s, N] >= CREDIBLE_BSMS and iv[s, TOTAL] == 0)


@helper
def _overlap(f: FloatMatrix, iv: IntMatrix, strikes: IntMatrix, order: IntMatrix, meta: IntArray, s: int, o: int,
             t: float) -> None:
    """Two bodies in one place. A standing vehicle that a moving one drives through is not there; else whoever
    overlaps OVERLAP_DISTINCT others is."""
    for a, b in ((s, o), (o, s)):
        if f[a, V] < STANDING_MPS and f[b, V] > MOVING_MPS and _credible(iv, b):
            _struck(f, iv, strikes, order, meta, a, OVERLAP, FLAG_STRIKES, t)
            return
    for a, partner in ((s, o), (o, s)):
        if not _credible(iv, partner):
            continue  # a newcomer, or one with strikes, does not count against another
        p = iv[partner, PID]
        # the distinct senders it overlapped: the first two kept, and how many (3: more than two)
        if not ((iv[a, OVN] >= 1 and iv[a, OV1] == p) or (iv[a, OVN] >= 2 and iv[a, OV2] == p)):
            if iv[a, OVN] == 0:
                iv[a, OV1] = p
            elif iv[a, OVN] == 1:
                iv[a, OV2] = p
            iv[a, OVN] = min(iv[a, OVN] + 1, 3)
        if iv[a, OVN] == OVERLAP_DISTINCT:
            _struck(f, iv, strikes, order, meta, a, OVERLAP, FLAG_STRIKES, t)


@helper
def _twin(f: FloatMatrix, iv: IntMatrix, strikes: IntMatrix, order: IntMatrix, meta: IntArray, pair_ids: IntMatrix,
          pair_vals: FloatMatrix, s: int, o: int, d: float, t: float, in_line: bool) -> None:
    """Two senders closer than any honest follower at speed, moving in lockstep (one OBU, two identities); `in_line`
    False: out of line, which breaks the lockstep."""
    lo, hi = min(iv[s, PID], iv[o, PID]), max(iv[s, PID], iv[o, PID])
    k = -1
    for j in range(meta[PAIRS]):
        if pair_ids[j, 0] == lo and pair_ids[j, 1] == hi:
            k = j
            break
    turn = abs((f[s, HEAD] - f[o, HEAD] + math.pi) % (2 * math.pi) - math.pi)
    if (in_line and f[s, V] > TWIN_SPEED_MPS and abs(f[s, V] - f[o, V]) < 0.05 and turn < math.radians(1.0)
            and (k < 0 or abs(pair_vals[k, 1] - d) < 0.2)):
        since = t if k < 0 else pair_vals[k, 0]
        if k < 0:
            k = meta[PAIRS]
            meta[PAIRS] += 1
            pair_ids[k, 0], pair_ids[k, 1] = lo, hi
        pair_vals[k, 0], pair_vals[k, 1] = since, d
        if t - since >= TWIN_S:
            for a in (s, o):
                if strikes[a, TWIN] == 0:
                    _struck(f, iv, strikes, order, meta, a, TWIN, FLAG_STRIKES, t)
    elif k >= 0:  # no longer in lockstep: forgotten (the last pair takes its place)
        last = meta[PAIRS] - 1
        pair_ids[k, 0], pair_ids[k, 1] = pair_ids[last, 0], pair_ids[last, 1]
        pair_vals[k, 0], pair_vals[k, 1] = pair_vals[last, 0], pair_vals[last, 1]
        meta[PAIRS] = last


@kernel
def _check_kernel(
    f: FloatMatrix, iv: IntMatrix, strikes: IntMatrix, order: IntMatrix, keys: IntArray, heads: IntArray,
    pair_ids: IntMatrix, pair_vals: FloatMatrix, meta: IntArray, latest: FloatArray,
    slot: IntArray, pid: IntArray, new: IntArray, t: FloatArray, x: FloatArray, y: FloatArray, speed: FloatArray,
    heading_deg: FloatArray, accuracy_m: FloatArray, off_road: BoolArray, wrong_way: BoolArray,
    entry_x: FloatArray, entry_y: FloatArray, roads: int, senders: int, start: int,
) -> int:
    """Each BSM's checks from `start` on, in order, against its sender's history (slot `slot[i]`, new when `new[i]`,
    then numbered `pid[i]`) and its neighbours; `off_road`, `wrong_way`: `_on_road`'s. Returns where it stopped: at
    the end, or at a BSM for which the grid's hash table or the lockstep pairs might have no room (`senders`: the
    senders heard lately, the most pairs one BSM can add), to be grown and called again from there.

    The arithmetic is the Python checks' (tests/test_cloud_batch.py holds the verdicts to theirs), but for distances:
    numba's hypot is the C library's, CPython's `math.hypot` its own, one unit in the last place apart for about
    0.5% of pairs, so a distance that lands exactly on a threshold may fall the other way."""
    own = np.zeros(len(CHECKS), dtype=np.int64)  # this BSM's own strikes by check, each check at most once
    for i in range(start, len(slot)):
        if (meta[SQUARES] + 1) * 2 > len(keys) or meta[PAIRS] + senders > len(pair_ids):
            return i
        ti, xi, yi, v = t[i], x[i], y[i], speed[i]
        if ti > latest[0]:
            latest[0] = ti
        h = heading_deg[i] * (math.pi / 180.0)  # math.radians
        acc = accuracy_m[i] if accuracy_m[i] < ACCURACY_CAP_M else ACCURACY_CAP_M
        s = slot[i]
        own[:] = 0
        if new[i]:
            f[s, T], f[s, X], f[s, Y], f[s, V], f[s, HEAD], f[s, ACC], f[s, FLAGGED] = ti, xi, yi, v, h, acc, 0.0
            iv[s, :] = 0
            iv[s, N], iv[s, PID] = 1, pid[i]
            strikes[s, :] = 0
            order[s, :] = -1
            if roads:
                nearest = np.inf
                for k in range(len(entry_x)):
                    nearest = min(nearest, math.hypot(entry_x[k] - xi, entry_y[k] - yi))
                if nearest > APPEAR_M + OFF_ROAD_SIGMAS * acc:
                    own[SUDDEN_APPEARANCE] = FLAG_STRIKES
        else:
            dt = ti - f[s, T]
            if 0 < dt < MIN_INTERVAL_S:
                own[FREQUENCY] = 1
            if 0 < dt <= MAX_DT_S:
                d = math.hypot(xi - f[s, X], yi - f[s, Y])
                allowance = MOVE_SIGMAS * math.hypot(f[s, ACC], acc)  # both fixes' errors, at worst independent
                if abs(d - (f[s, V] + v) / 2 * dt) > MOVE_TOL_M + MOVE_TOL_SHARE * d + allowance:
                    own[POSITION_SPEED] = 1
                if abs(v - f[s, V]) / dt > MAX_ACCEL_MPS2:  # beyond what any car can do: one is enough
                    own[ACCELERATION] = FLAG_STRIKES
                turn = abs((h - f[s, HEAD] + math.pi) % _TAU - math.pi)
                if dt <= 0.5 and v > 2.0 and turn > _MAX_TURN_RAD:
                    own[HEADING_CHANGE] = 1
            f[s, T], f[s, X], f[s, Y], f[s, V], f[s, HEAD], f[s, ACC] = ti, xi, yi, v, h, acc
            iv[s, N] += 1
        if v > MAX_SPEED_MPS:
            own[SPEED] = 1
        if off_road[i]:
            own[OFF_ROAD] = 1
        elif wrong_way[i]:
            own[HEADING] = 1
        # filed under the grid square of its latest position (squares of GRID_M: the checks need neighbours within
        # TWIN_M only, so a BSM looks at 9 squares, not at every vehicle)
        cx, cy = _square(xi), _square(yi)
        if not iv[s, FILED] or cx != iv[s, CX] or cy != iv[s, CY]:
            if iv[s, FILED]:
                _unfile(iv, keys, heads, s)
            _file(iv, keys, heads, meta, s, cx, cy)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                j = _place(keys, _key(cx + dx, cy + dy))
                o = heads[j] if keys[j] != _EMPTY else -1
                while o >= 0:
                    # compare with others heard at the same moment and not already known to lie
                    if o != s and abs(f[o, T] - ti) <= 0.15 and not iv[o, FLAG]:
                        d = math.hypot(f[o, X] - xi, f[o, Y] - yi)
                        if d < TWIN_M:  # else too far for either check (OVERLAP_M < TWIN_M)
                            # surely within OVERLAP_M, errors allowed for
                            if d < OVERLAP_M and d + OVERLAP_SIGMAS * math.hypot(acc, f[o, ACC]) < OVERLAP_M:
                                _overlap(f, iv, strikes, order, meta, s, o, ti)
                            if abs(f[o, T] - ti) < 0.01:  # two identities of one OBU send at the same instant
                                # one ahead of the other in the same lane, not in the next lane; out of line breaks
                                # the lockstep: with GNSS error, side by side may look in line now and then
                                lateral = abs((f[o, X] - xi) * math.cos(h) - (f[o, Y] - yi) * math.sin(h))
                                _twin(f, iv, strikes, order, meta, pair_ids, pair_vals, s, o, d, ti, lateral < 1.0)
                    o = iv[o, NEXT]
        for k in range(len(CHECKS)):
            if own[k]:
                _struck(f, iv, strikes, order, meta, s, k, own[k], ti)
    return len(slot)
