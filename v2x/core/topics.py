"""MQTT topics: versioned and geo-addressed.

Every topic starts with a root (`v2x/v1` by default; tests and parallel runs prepend
their own prefix). Geo-addressed topics carry the quadkey of the tile the message
concerns, one topic level per zoom level (as Orange's its-client does), so a receiver
subscribes to an area of any size with one wildcard:

    v2x/v1/bsm/1/3/2/0/.../3/veh-17      a BSM from veh-17 in tile 1320...3 (zoom 17)
    v2x/v1/bsm/1/3/2/0/#                 every BSM in a zoom-4 tile

Tiles are Bing-Maps quadkeys at zoom `TILE_ZOOM` (17: about 260 m square at 31 deg N).
`python -m v2x.core.topics` prints the topic table that docs/protocol.md carries.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from v2x.core.messages import MessageType

DEFAULT_ROOT = "v2x/v1"
TILE_ZOOM = 17
_MAX_LAT = 85.05112878
EARTH_RADIUS_M = 6_371_008.8  # [m] mean radius


def quadkey(lat_deg: float, lon_deg: float, zoom: int = TILE_ZOOM) -> str:
    """The Bing-Maps quadkey of the tile holding a WGS-84 point."""
    lat = min(max(lat_deg, -_MAX_LAT), _MAX_LAT)
    n = 1 << zoom
    x = int((lon_deg + 180.0) / 360.0 * n)
    s = math.sin(math.radians(lat))
    y = int((0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n)
    return _key(min(max(x, 0), n - 1), min(max(y, 0), n - 1), zoom)


@functools.lru_cache(maxsize=4096)
def _key(x: int, y: int, zoom: int) -> str:
    """The quadkey of tile (x, y): kept, as every BSM asks for one and vehicles stay in a few tiles a while."""
    digits = []
    for i in range(zoom, 0, -1):
        mask = 1 << (i - 1)
        digits.append(str((1 if x & mask else 0) + (2 if y & mask else 0)))
    return "".join(digits)


def tile_bounds(key: str) -> tuple[float, float, float, float]:
    """(south, west, north, east) in degrees of a quadkey's tile."""
    x, y = _xy(key)
    n = 1 << len(key)

    def lat(yy: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * yy / n))))

    return lat(y + 1), x / n * 360.0 - 180.0, lat(y), (x + 1) / n * 360.0 - 180.0


_INSIDE_DEG = 1e-7  # [deg] about a centimetre: the rounding of `quadkey`'s formulas moves a point some 1e-11 of a tile


@functools.lru_cache(maxsize=4096)
def tile_inside(key: str) -> tuple[float, float, float, float]:
    """(south, west, north, east) [deg] of a tile's bounds, each moved _INSIDE_DEG inward: every point strictly
    inside has the tile's quadkey, so a vehicle's tile need be worked out again only near one of its edges."""
    south, west, north, east = tile_bounds(key)
    return south + _INSIDE_DEG, west + _INSIDE_DEG, north - _INSIDE_DEG, east - _INSIDE_DEG


def neighbours(key: str) -> list[str]:
    """The tile and its eight neighbours at the same zoom (fewer at the map's edge)."""
    x, y = _xy(key)
    n = 1 << len(key)
    out = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            xx, yy = (x + dx) % n, y + dy
            if 0 <= yy < n:
                out.append(_key_of(xx, yy, len(key)))
    return out


def tiles_covering(lat_deg: float, lon_deg: float, radius_m: float, zoom: int = TILE_ZOOM) -> list[str]:
    """The tiles at `zoom` that a circle of `radius_m` around a point touches (its bounding box's tiles)."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlon = dlat / max(math.cos(math.radians(lat_deg)), 1e-6)
    corners = [quadkey(lat_deg + sy * dlat, lon_deg + sx * dlon, zoom) for sy in (1, -1) for sx in (-1, 1)]
    (x0, y0), (x1, y1) = _xy(corners[0]), _xy(corners[3])  # north-west, south-east
    n = 1 << zoom
    return [_key_of(x % n, y, zoom) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)]


def _xy(key: str) -> tuple[int, int]:
    x = y = 0
    for ch in key:
        x, y = x * 2 + (int(ch) & 1), y * 2 + (int(ch) >> 1)
    return x, y


def _key_of(x: int, y: int, zoom: int) -> str:
    return "".join(
        str((1 if x & (1 << (i - 1)) else 0) + (2 if y & (1 << (i - 1)) else 0)) for i in range(zoom, 0, -1)
    )


def tile_path(key: str) -> str:
    """A quadkey as topic levels: '1320' -> '1/3/2/0'."""
    return "/".join(key)


@dataclass(frozen=True)
class TopicSpec:
    """One row of the topic table."""

    mtype: MessageType
    pattern: str  # under the root; {tile} is the quadkey as levels
    direction: str
    qos: int
    retained: str
    rate: str
    note: str = ""


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(MessageType.BSM, "bsm/{tile}/{vehicle}", "vehicle -> RSU, cloud, vehicles", 0, "no", "10 Hz per vehicle", "expires after 1 s"),
    TopicSpec(MessageType.SPAT, "spat/rsu/{tile}/{intersection}", "RSU -> vehicles (sidelink path)", 0, "no", "10 Hz per intersection", "expires after 1 s"),
    TopicSpec(MessageType.SPAT, "spat/cloud/{tile}/{intersection}", "cloud -> vehicles (cellular path)", 0, "no", "10 Hz per intersection", "the RSU's SPaT relayed; expires after 1 s"),
    TopicSpec(MessageType.MAP, "map/{tile}/{intersection}", "RSU -> vehicles, cloud", 1, "yes", "on start and on change", ""),
    TopicSpec(MessageType.RSM, "rsm/{tile}/{rsu}", "RSU -> cloud, vehicles", 0, "no", "10 Hz per RSU", "road users the RSU detects"),
    TopicSpec(MessageType.RSI, "rsi/{tile}/{sender}/{event}", "cloud -> vehicles", 1, "per event", "on change", "retained while active; cleared when it ends"),
    TopicSpec(MessageType.SIGNAL_PLAN, "plan/{intersection}", "cloud -> RSU", 1, "no", "on change", "persistent session"),
    TopicSpec(MessageType.ADVISORY, "advisory/{tile}/{vehicle}", "cloud -> vehicle", 1, "no", "on change", "{vehicle} = all for every vehicle in the tile"),
    TopicSpec(MessageType.PRIORITY_REQUEST, "prq/{intersection}/{vehicle}", "vehicle -> RSU, cloud", 1, "no", "1 Hz while requesting", ""),
    TopicSpec(MessageType.PRIORITY_STATUS, "prs/{intersection}/{vehicle}", "RSU -> vehicle", 1, "no", "on change", ""),
    TopicSpec(MessageType.STATUS, "status/{kind}/{id}", "every service -> all", 1, "yes", "on start and stop", "the Last Will sets it offline"),
)


KINDS = frozenset(s.pattern.split("/", 1)[0] for s in SPECS)  # the topic level naming a message kind
RETAINED_KINDS = frozenset(s.pattern.split("/", 1)[0] for s in SPECS if s.retained != "no")  # map, rsi, status


@functools.lru_cache(maxsize=4096)  # asked of every message received, twice (its service, the type check)
def kind_of(topic: str) -> str | None:
    """The message kind a topic carries ("bsm", "spat", ...): its first level that names one; None if none does.

    Kinds equal `MessageType` values, so a frame of another type on the topic is the wrong type."""
    for level in topic.split("/"):
        if level in KINDS:
            return level
    return None


def spec_of(topic: str) -> TopicSpec | None:
    """The topic table's row for a topic (the first for its kind: SPaT's two paths share QoS and retain)."""
    kind = kind_of(topic)
    return next((s for s in SPECS if s.pattern.split("/", 1)[0] == kind), None)


class Topics:
    """Builds topic names and filters under one root."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root.strip("/")

    def bsm(self, tile: str, vehicle: str) -> str:
        return f"{self.root}/bsm/{tile_path(tile)}/{vehicle}"

    def spat(self, path: str, tile: str, intersection: str) -> str:
        """`path` is "rsu" (sidelink) or "cloud" (cellular)."""
        return f"{self.root}/spat/{path}/{tile_path(tile)}/{intersection}"

    def map(self, tile: str, intersection: str) -> str:
        return f"{self.root}/map/{tile_path(tile)}/{intersection}"

    def rsm(self, tile: str, rsu: str) -> str:
        return f"{self.root}/rsm/{tile_path(tile)}/{rsu}"

    def rsi(self, tile: str, sender: str, event_id: int) -> str:
        return f"{self.root}/rsi/{tile_path(tile)}/{sender}/{event_id}"

    def plan(self, intersection: str) -> str:
        return f"{self.root}/plan/{intersection}"

    def advisory(self, tile: str, vehicle: str = "all") -> str:
        return f"{self.root}/advisory/{tile_path(tile)}/{vehicle}"

    def priority_request(self, intersection: str, vehicle: str) -> str:
        return f"{self.root}/prq/{intersection}/{vehicle}"

    def priority_status(self, intersection: str, vehicle: str) -> str:
        return f"{self.root}/prs/{intersection}/{vehicle}"

    def status(self, kind: str, sid: str) -> str:
        return f"{self.root}/status/{kind}/{sid}"

    def run_marker(self) -> str:
        """The retained marker of the run that holds this root (a Status frame from the run's id; v2x.run.claim):
        not a kind of message of the topic table, so no receiver but a watcher of the whole root hears it."""
        return f"{self.root}/run"

    def truth(self, rsu: str) -> str:
        """Real time: the road users' ground truth in the coverage of an RSU's sensors, from the fleet (v2x.core.truth).
        Not a message of the topic table: no V2X station sends it, nothing counts or measures it."""
        return f"{self.root}/truth/{rsu}"

    def area(self, kind: str, tile_prefix: str) -> str:
        """Filter for every `kind` message ("bsm", "map", "rsm", "rsi", "advisory") in a tile of any zoom."""
        return f"{self.root}/{kind}/{tile_path(tile_prefix)}/#" if tile_prefix else f"{self.root}/{kind}/#"

    def spat_area(self, tile_prefix: str) -> str:
        """Filter for SPaT from both paths in a tile."""
        return f"{self.root}/spat/+/{tile_path(tile_prefix)}/#" if tile_prefix else f"{self.root}/spat/#"


def markdown_table() -> str:
    """The topic table as Markdown, for docs/protocol.md."""
    rows = [
        "| message | topic (under `v2x/v1/`) | direction | QoS | retained | rate | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SPECS:
        rows.append(
            f"| {s.mtype.name} | `{s.pattern}` | {s.direction} | {s.qos} | {s.retained} | {s.rate} | {s.note} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
