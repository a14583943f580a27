"""Ground truth of the road users, as roadside sensors see it: every vehicle the traffic core moves, equipped or not.

The fleet owns it (it moves the vehicles); an RSU's sensor model (roadside.perception) turns it into detections.
It is never a V2X message: in fast mode the driver hands it to the RSUs in process (v2x.run.fast), as it hands the
true lights to the fleet; in real time the fleet process publishes it on an internal topic (`TruthFeed`) that the
RSU process reads (docs/perception.md).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from v2x.core.mobility import BoolArray, FloatArray, IntArray
from v2x.core.network import Network
from v2x.core.topics import Topics
from v2x.core.traffic import VEHICLE_TYPES, Traffic


@dataclass(frozen=True)
class RoadUsers:
    """Every road user at sim time `t`, one row per vehicle; positions are body centres in local metres."""

    t: float  # [s]
    ids: IntArray
    x_m: FloatArray  # east
    y_m: FloatArray  # north
    speed_mps: FloatArray
    heading_deg: FloatArray  # clockwise from north
    length_m: FloatArray
    width_m: FloatArray
    equipped: BoolArray  # carries an OBU (sends BSMs as `veh-<id>`)

    @classmethod
    def of(cls, traffic: Traffic, equipped: BoolArray | None = None) -> RoadUsers:
        """The core's vehicles now, then the scenario's stalled cars standing now (`stalled`: id -k for event k);
        `equipped`: which carry an OBU, in that order (default: every one)."""
        x, y, heading = traffic.bodies()
        ks = stalled(traffic)
        ids, speed, length, width = traffic.ids.copy(), np.clip(traffic.v, 0.0, None), traffic.length.copy(), traffic.width.copy()
        if ks:  # a stalled car is an obstacle of the core, not one of its vehicles: a road user all the same
            lid, front, size = (np.array(col) for col in zip(*(traffic.obstacles[k] for k in ks), strict=True))
            sx, sy, sh = traffic.net.xy_heading(lid.astype(np.int64), front - size / 2)
            x, y, heading = np.concatenate([x, sx]), np.concatenate([y, sy]), np.concatenate([heading, sh])
            ids = np.concatenate([ids, -np.array(ks, dtype=np.int64)])
            speed, length = np.concatenate([speed, np.zeros(len(ks))]), np.concatenate([length, size])
            width = np.concatenate([width, np.full(len(ks), VEHICLE_TYPES["car"].width_m)])
        return cls(
            traffic.t, ids, x, y, speed, heading % 360.0, length, width,
            np.ones(len(ids), dtype=bool) if equipped is None else equipped,
        )


def stalled(traffic: Traffic) -> list[int]:
    """The scenario's stalled cars standing now: their hazard events (from 1), in the order `RoadUsers.of` adds them."""
    return [k for k in traffic.obstacles if traffic.scenario.events[k - 1].kind == "stalled_vehicle"]


# Real time: the fleet process publishes the truth in each sensor-equipped RSU's coverage on an internal topic
# (`Topics.truth`), never a V2X message: not in the topic table, not counted or measured, not impaired.
_HEAD = struct.Struct("<5sdI")  # magic, sim time [s], rows
_MAGIC = b"V2XT1"
_ROW_BYTES = 8 + 6 * 4 + 1  # id (int64), six float32 columns, equipped (uint8)
_FLOATS = ("x_m", "y_m", "speed_mps", "heading_deg", "length_m", "width_m")


def encode(users: RoadUsers, rows: np.ndarray | None = None) -> bytes:
    """The rows `rows` (default: all) of `users` as bytes: a header, then column after column."""
    idx = np.arange(len(users.ids)) if rows is None else rows
    parts = [_HEAD.pack(_MAGIC, users.t, len(idx)), users.ids[idx].astype("<i8").tobytes()]
    parts += [getattr(users, name)[idx].astype("<f4").tobytes() for name in _FLOATS]
    parts.append(users.equipped[idx].astype(np.uint8).tobytes())
    return b"".join(parts)


def decode(payload: bytes) -> RoadUsers:
    """Bytes from `encode`, checked: ValueError says what is wrong."""
    if len(payload) < _HEAD.size:
        raise ValueError(f"{len(payload)} bytes, shorter than the {_HEAD.size}-byte header")
    magic, t, n = _HEAD.unpack_from(payload)
    if magic != _MAGIC:
        raise ValueError(f"starts with {magic!r} (expected {_MAGIC!r})")
    if len(payload) != _HEAD.size + n * _ROW_BYTES:
        raise ValueError(f"{len(payload)} bytes for {n} road users (expected {_HEAD.size + n * _ROW_BYTES})")
    at = _HEAD.size
    ids = np.frombuffer(payload, "<i8", n, at).astype(np.int64)
    at += 8 * n
    cols: dict[str, FloatArray] = {}
    for name in _FLOATS:
        col = np.frombuffer(payload, "<f4", n, at).astype(np.float64)
        if not np.all(np.isfinite(col)):
            raise ValueError(f"{name} is not finite")
        cols[name] = col
        at += 4 * n
    equipped = np.frombuffer(payload, np.uint8, n, at) != 0
    if not math.isfinite(t):
        raise ValueError(f"sim time {t} is not finite")
    return RoadUsers(t=t, ids=ids, equipped=equipped, **cols)


class TruthFeed:
    """What the fleet publishes for the RSUs' sensors: at the fastest rate of each RSU's sensors, the road users
    within the longest range of them."""

    def __init__(self, net: Network, topics: Topics, sites: Iterable[int] | None = None) -> None:
        sc = net.scenario
        self.feeds: list[tuple[str, tuple[float, float], float, float]] = []  # topic, RSU position, reach [m], period [s]
        for i in range(len(sc.sites)) if sites is None else sites:
            rid = sc.rsu_of(i).id
            models = [s.model() for s in sc.sensors if s.rsu == rid]
            if models:
                self.feeds.append((topics.truth(rid), net.rsu_xy[rid], max(md.range_m for md in models),
                                   1.0 / max(md.rate_hz for md in models)))
        self._next = [-math.inf] * len(self.feeds)

    def due(self, traffic: Traffic, equipped: Callable[[], BoolArray | None] = lambda: None) -> list[tuple[str, bytes]]:
        """(topic, payload) of each feed due at the traffic's sim time; `equipped()`: which vehicles carry an OBU,
        asked only when a feed is due (not every step)."""
        out: list[tuple[str, bytes]] = []
        users: RoadUsers | None = None
        for k, (topic, (x, y), reach, period) in enumerate(self.feeds):
            if traffic.t + 1e-9 < self._next[k]:
                continue
            self._next[k] = max(self._next[k] + period, traffic.t)
            users = users or RoadUsers.of(traffic, equipped())
            near = np.flatnonzero(np.hypot(users.x_m - x, users.y_m - y) <= reach)
            out.append((topic, encode(users, near)))
        return out
