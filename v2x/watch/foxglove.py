"""Foxglove scene channels: what the messages say, in Foxglove's own schemas, for its Map, 3D and Plot panels.

`SceneChannels.feed(topic, payload, log_ns)` takes one MQTT message as it came over the wire, as the
visualiser's `Scene` does (it keeps one), and returns the scene messages it gives rise to:

| channel | schema | from | what |
|---|---|---|---|
| `/scene/vehicles/fixes` | foxglove.LocationFixes | BSM | one fix per vehicle of a step's BSMs (Map panel) |
| `/scene/vehicles` | foxglove.SceneUpdate | BSM | one box per vehicle of the step, sized from its BSM, coloured by speed, with its id (3D panel) |
| `/scene/lanes` | foxglove.SceneUpdate | MAP | lanes as lines as wide as the lane, stop lines (3D) |
| `/scene/lanes/geojson` | foxglove.GeoJSON | MAP | one LineString per MAP lane (Map) |
| `/scene/signals` | foxglove.SceneUpdate | SPaT | a light per movement at each stop line, in its colour (3D) |
| `/scene/hazards` | foxglove.SceneUpdate | RSI | each active hazard's zone and name (3D) |
| `/scene/hazards/geojson` | foxglove.GeoJSON | RSI | each active hazard's zone as a polygon (Map) |
| `/latency/<kind>->observer` | JSON | every message | per second: p50, p99 and max [ms] from its sender to here |

The 3D channels are in frame `site`: local metres east, north and up around the first position heard.
A step's BSMs (those of one sim time) go out together once a BSM `STEP_HOLD_MS` of sim time newer arrives, so
BSMs of a step that arrive out of order still join it; one later than that is counted (`late_bsm`), not shown.
Latency is measured only when the log time is the receive time and the senders' clock is the wall clock (a
real-time run, live or recorded); a fast run's messages carry sim time, so there is nothing to measure and no
latency channel.

Everything comes from the messages, never from the simulation's ground truth.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from foxglove_schemas_protobuf.Color_pb2 import Color
from foxglove_schemas_protobuf.CylinderPrimitive_pb2 import CylinderPrimitive
from foxglove_schemas_protobuf.GeoJSON_pb2 import GeoJSON
from foxglove_schemas_protobuf.KeyValuePair_pb2 import KeyValuePair
from foxglove_schemas_protobuf.LinePrimitive_pb2 import LinePrimitive
from foxglove_schemas_protobuf.LocationFixes_pb2 import LocationFixes
from foxglove_schemas_protobuf.Point3_pb2 import Point3
from foxglove_schemas_protobuf.Pose_pb2 import Pose
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.SceneEntity_pb2 import SceneEntity
from foxglove_schemas_protobuf.SceneEntityDeletion_pb2 import SceneEntityDeletion
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from foxglove_schemas_protobuf.SpherePrimitive_pb2 import SpherePrimitive
from foxglove_schemas_protobuf.TextPrimitive_pb2 import TextPrimitive
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from v2x.core import messages as m
from v2x.core.topics import DEFAULT_ROOT, kind_of
from v2x.watch.palette import HAZARD_COLOUR, Colour, light_colour, speed_colour, state_colour
from v2x.watch.scene import SANE_LATENCY_S, SPAT_STALE_S, IntersectionView, Scene

FRAME = "site"  # the 3D channels' frame: local metres, x east, y north, z up
FIXES = "/scene/vehicles/fixes"
VEHICLES = "/scene/vehicles"
LANES = "/scene/lanes"
LANES_GEOJSON = "/scene/lanes/geojson"
SIGNALS = "/scene/signals"
HAZARDS = "/scene/hazards"
HAZARDS_GEOJSON = "/scene/hazards/geojson"
LATENCY_PREFIX = "/latency/"
#: the protobuf scene channels and their schemas
SCHEMAS: dict[str, type[Message]] = {
    FIXES: LocationFixes, VEHICLES: SceneUpdate, LANES: SceneUpdate, LANES_GEOJSON: GeoJSON,
    SIGNALS: SceneUpdate, HAZARDS: SceneUpdate, HAZARDS_GEOJSON: GeoJSON,
}
#: the JSON schema of a latency channel's messages
LATENCY_SCHEMA = {
    "type": "object",
    "title": "v2x.Latency",
    "description": "Latency from senders of one kind to this observer over one second, measured on the wall clock [ms]",
    "properties": {
        "p50_ms": {"type": "number"}, "p99_ms": {"type": "number"}, "max_ms": {"type": "number"},
        "messages": {"type": "integer"}, "second": {"type": "integer", "description": "UTC second of the receive times"},
    },
}
STEP_HOLD_MS = 300  # [ms] of sim time a step's BSMs wait for stragglers before they go out
VEHICLE_HEIGHT_M = 1.5  # [m] a box's height when the BSM does not say
HEAD_RADIUS_M = 0.9  # [m] a signal light's size in the 3D scene
HEAD_GAP_M = 2.0  # [m] between the lights of one lane's movements
ROAD_RGBA = (0.31, 0.31, 0.33, 1.0)
STOP_LINE_RGBA = (0.98, 0.98, 0.98, 1.0)
HAZARD_ALPHA = 0.3
CIRCLE_POINTS = 32  # a hazard zone's polygon on the map


@dataclass(frozen=True, slots=True)
class Out:
    """One scene message: its channel, its serialized bytes (protobuf, or JSON for latency) and its log time."""

    channel: str
    data: bytes
    log_time_ns: int


def _stamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _rgba(c: Colour, alpha: float = 1.0) -> Color:
    return Color(r=c[0] / 255, g=c[1] / 255, b=c[2] / 255, a=alpha)


@functools.cache
def _colour(c: Colour) -> Color:
    """An opaque colour, made once (the palette has a few dozen)."""
    return _rgba(c)


def _yaw(heading_deg: float) -> Quaternion:
    """The orientation of a heading (clockwise from north) in ENU: a yaw counter-clockwise from east."""
    yaw = math.pi / 2 - math.radians(heading_deg)
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def _pose(x: float, y: float, z: float, heading_deg: float | None = None) -> Pose:
    return Pose(position=Vector3(x=x, y=y, z=z), orientation=_yaw(heading_deg) if heading_deg is not None else Quaternion(w=1.0))


def _feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


class SceneChannels:
    """Turns the wire's messages into Foxglove scene messages (see the module's table)."""

    def __init__(self, root: str = DEFAULT_ROOT, *, measure_latency: bool = True) -> None:
        self.scene = Scene(root)
        self.measure_latency = measure_latency
        self.sent: Counter[str] = Counter()  # scene messages per channel
        self.late_bsm = 0  # BSMs that came after their step went out
        self._steps: dict[int, list[tuple[str, m.Header, m.Bsm]]] = {}  # sim ms -> the step's BSMs
        self._step_log_ns: dict[int, int] = {}
        self._flushed_ms = -1  # newest step sent
        self._newest_ms = -1
        self._latency: dict[str, list[float]] = {}  # kind -> latencies [ms] of the current second
        self._latency_second: int | None = None
        self._hazard_keys: frozenset[tuple[str, int]] = frozenset()

    # -- in ---------------------------------------------------------------------------------------

    def feed(self, topic: str, payload: bytes, log_ns: int) -> list[Out]:
        """One message from the wire (its log time: when it arrived, or when it was sent); the scene messages now due."""
        out: list[Out] = []
        frame = self.scene.ingest(topic, payload, log_ns)
        if kind_of(topic) == "rsi":  # a hazard raised, ended or cleared (an empty retained payload decodes to nothing)
            keys = frozenset(self.scene.hazards)
            if keys != self._hazard_keys or (frame is not None and isinstance(frame.body, m.Rsi)):
                self._hazard_keys = keys
                out += self.hazards(log_ns)
        if frame is None:
            return out
        h, body = frame.header, frame.body
        if self.measure_latency:
            out += self._measure(h, log_ns)
        if isinstance(body, m.Bsm):
            out += self._bsm(h, body, log_ns)
        elif isinstance(body, m.MapData):
            out += self.lanes(log_ns)
        elif isinstance(body, m.Spat):
            out += self._signals(h, body, log_ns)
        return out

    def flush(self, log_ns: int | None = None) -> list[Out]:
        """What is still held: the last steps' vehicles and the current second's latency (at the end of a recording)."""
        out = self._steps_due(None)
        if self._latency_second is not None:
            out += self._latency_out((self._latency_second + 1) * 1_000_000_000 if log_ns is None else log_ns)
        return out

    # -- vehicles ---------------------------------------------------------------------------------

    def _bsm(self, h: m.Header, bsm: m.Bsm, log_ns: int) -> list[Out]:
        t = h.sim_time_ms
        if t <= self._flushed_ms:
            self.late_bsm += 1
            return []
        self._steps.setdefault(t, []).append((h.sender_id, h, bsm))
        self._step_log_ns[t] = max(self._step_log_ns.get(t, 0), log_ns)
        self._newest_ms = max(self._newest_ms, t)
        return self._steps_due(self._newest_ms - STEP_HOLD_MS)

    def _steps_due(self, until_ms: int | None) -> list[Out]:
        out: list[Out] = []
        for t in sorted(s for s in self._steps if until_ms is None or s <= until_ms):
            group = self._steps.pop(t)
            log_ns = self._step_log_ns.pop(t)
            self._flushed_ms = max(self._flushed_ms, t)
            out += self._vehicles(group, log_ns)
        return out

    def _vehicles(self, group: list[tuple[str, m.Header, m.Bsm]], log_ns: int) -> list[Out]:
        """The step's fixes and boxes. Built field by field (`add()`, then set): at 2,000 vehicles a step, building
        nested messages from keyword arguments cost three times as much."""
        scene = self.scene
        scene.tick()  # the vehicles' state flags (warned, priority, ...)
        frame = scene.frame
        assert frame is not None  # a BSM was taken in
        fixes = LocationFixes()
        update = SceneUpdate(deletions=[SceneEntityDeletion(timestamp=_stamp(log_ns), type=SceneEntityDeletion.ALL)])
        v = scene.vehicles
        for vid, h, b in group:
            sec, nanos = divmod(h.gen_time_us * 1000, 1_000_000_000)
            colour = _colour(speed_colour(b.speed_mps))
            rad = math.radians(b.heading_deg)
            lat, lon = b.position.lat_deg, b.position.lon_deg
            fix = fixes.fixes.add(frame_id=vid, latitude=lat, longitude=lon, altitude=b.position.elevation_m or 0.0, heading=rad)
            fix.timestamp.seconds, fix.timestamp.nanos = sec, nanos
            vel = fix.velocity
            vel.x, vel.y = b.speed_mps * math.sin(rad), b.speed_mps * math.cos(rad)  # east, north
            fix.color.CopyFrom(colour)

            x, y = frame.to_local(lat, lon)
            height = b.height_m or VEHICLE_HEIGHT_M
            yaw = math.pi / 2 - rad  # ENU: counter-clockwise from east
            e = update.entities.add(frame_id=FRAME, id=vid)
            e.timestamp.seconds, e.timestamp.nanos = sec, nanos
            cube = e.cubes.add()
            pos, q, size = cube.pose.position, cube.pose.orientation, cube.size
            pos.x, pos.y, pos.z = x, y, height / 2
            q.z, q.w = math.sin(yaw / 2), math.cos(yaw / 2)
            size.x, size.y, size.z = b.length_m, b.width_m, height
            cube.color.CopyFrom(colour)
            i = v.index.get(vid)
            text = e.texts.add(billboard=True, font_size=12.0, scale_invariant=True, text=vid)
            pos = text.pose.position
            pos.x, pos.y, pos.z = x, y, height + 1.0
            text.pose.orientation.w = 1.0
            text.color.CopyFrom(_colour(state_colour(int(v.flags[i]) if i is not None else 0)))
        return [self._out(FIXES, fixes, log_ns), self._out(VEHICLES, update, log_ns)]

    # -- the road -----------------------------------------------------------------------------------

    def lanes(self, log_ns: int) -> list[Out]:
        """Every intersection's lanes as heard in MAP: the 3D scene's lines and the map's GeoJSON (also re-sent to
        a live viewer that connects late)."""
        scene = self.scene
        if scene.frame is None or not scene.intersections:
            return []
        update = SceneUpdate(entities=[self._road(iv, log_ns) for iv in scene.intersections.values()])
        features = []
        for iv in scene.intersections.values():
            for lane in iv.lanes:
                lat, lon = scene.frame.to_geo_arrays(lane.points[:, 0], lane.points[:, 1])
                features.append(_feature(
                    {"type": "LineString", "coordinates": [[round(a, 8), round(b, 8)] for a, b in zip(lon.tolist(), lat.tolist(), strict=True)]},
                    intersection=iv.name, lane_id=lane.lane_id, name=lane.name, ingress=lane.ingress,
                    approach=lane.approach, width_m=lane.width_m,
                ))
        geo = GeoJSON(geojson=json.dumps({"type": "FeatureCollection", "features": features}))
        return [self._out(LANES, update, log_ns), self._out(LANES_GEOJSON, geo, log_ns)]

    @staticmethod
    def _road(iv: IntersectionView, log_ns: int) -> SceneEntity:
        lines = []
        stops: list[Point3] = []
        for lane in iv.lanes:
            lines.append(LinePrimitive(
                type=LinePrimitive.LINE_STRIP, pose=_pose(0.0, 0.0, 0.0), thickness=lane.width_m * 0.92, scale_invariant=False,
                points=[Point3(x=float(x), y=float(y), z=0.0) for x, y in lane.points.tolist()], color=Color(
                    r=ROAD_RGBA[0], g=ROAD_RGBA[1], b=ROAD_RGBA[2], a=ROAD_RGBA[3]),
            ))
            if lane.ingress:  # its first node is the stop line: a bar across the lane
                (x0, y0), (x1, y1) = lane.points[0], lane.points[1]
                d = math.hypot(x1 - x0, y1 - y0) or 1.0
                nx, ny = -(y1 - y0) / d * lane.width_m / 2, (x1 - x0) / d * lane.width_m / 2
                stops += [Point3(x=float(x0 + nx), y=float(y0 + ny), z=0.02), Point3(x=float(x0 - nx), y=float(y0 - ny), z=0.02)]
        if stops:
            lines.append(LinePrimitive(
                type=LinePrimitive.LINE_LIST, pose=_pose(0.0, 0.0, 0.0), thickness=0.4, scale_invariant=False, points=stops,
                color=Color(r=STOP_LINE_RGBA[0], g=STOP_LINE_RGBA[1], b=STOP_LINE_RGBA[2], a=STOP_LINE_RGBA[3]),
            ))
        cx, cy = iv.center
        return SceneEntity(
            timestamp=_stamp(log_ns), frame_id=FRAME, id=f"intersection/{iv.name}", frame_locked=True, lines=lines,
            texts=[TextPrimitive(pose=_pose(cx, cy, 6.0), billboard=True, font_size=14.0, scale_invariant=True,
                                 color=Color(r=0.1, g=0.1, b=0.12, a=1.0), text=f"{iv.name} ({iv.sender})")],
        )

    # -- signals ------------------------------------------------------------------------------------

    def _signals(self, h: m.Header, spat: m.Spat, log_ns: int) -> list[Out]:
        """The lights of the intersections this SPaT shows, when it is the SPaT the picture uses (the RSU's, else the
        cloud's); each light lasts as long as SPaT stays fresh."""
        entities = []
        for st in spat.intersections:
            shown = self.scene.signal(st.name)
            iv = self.scene.intersections.get(st.name)
            if shown is None or shown[1] is not h or iv is None:
                continue
            state = {ms.signal_group: ms.events[0].state for ms in st.states if ms.events}
            spheres = []
            for lane in iv.lanes:
                if not lane.ingress or not lane.movements:
                    continue
                (x0, y0), (x1, y1) = lane.points[0], lane.points[1]
                d = math.hypot(x1 - x0, y1 - y0) or 1.0
                ux, uy = (x0 - x1) / d, (y0 - y1) / d  # towards the junction
                for k, (group, _turn) in enumerate(lane.movements):
                    back = HEAD_GAP_M * k  # one light per movement, lined up behind the stop line
                    spheres.append(SpherePrimitive(
                        pose=_pose(float(x0 - ux * back), float(y0 - uy * back), 3.0),
                        size=Vector3(x=HEAD_RADIUS_M, y=HEAD_RADIUS_M, z=HEAD_RADIUS_M),
                        color=_rgba(light_colour(state.get(group, m.LightState.UNAVAILABLE))),
                    ))
            entities.append(SceneEntity(
                timestamp=_stamp(h.gen_time_us * 1000), frame_id=FRAME, id=f"signals/{st.name}",
                lifetime=Duration(seconds=int(SPAT_STALE_S), nanos=int(SPAT_STALE_S % 1 * 1e9)), spheres=spheres,
                metadata=[KeyValuePair(key="plan_id", value=str(st.plan_id)), KeyValuePair(key="path", value=shown[0])],
            ))
        return [self._out(SIGNALS, SceneUpdate(entities=entities), log_ns)] if entities else []

    # -- hazards ------------------------------------------------------------------------------------

    def hazards(self, log_ns: int) -> list[Out]:
        """Every active hazard, replacing what was shown: zones in 3D and as polygons on the map (also re-sent to a live
        viewer that connects late)."""
        scene = self.scene
        update = SceneUpdate(deletions=[SceneEntityDeletion(timestamp=_stamp(log_ns), type=SceneEntityDeletion.ALL)])
        features = []
        for (sender, event_id), hz in sorted(scene.hazards.items()):
            ev = hz.event
            x, y = hz.xy
            r = max(ev.radius_m, 1.0)
            label = f"{ev.kind.name.lower().replace('_', ' ')} #{event_id}"
            update.entities.append(SceneEntity(
                timestamp=_stamp(log_ns), frame_id=FRAME, id=f"hazard/{sender}/{event_id}", frame_locked=True,
                cylinders=[CylinderPrimitive(pose=_pose(x, y, 0.5), size=Vector3(x=2 * r, y=2 * r, z=1.0), bottom_scale=1.0,
                                             top_scale=1.0, color=_rgba(HAZARD_COLOUR, HAZARD_ALPHA))],
                texts=[TextPrimitive(pose=_pose(x, y, 4.0), billboard=True, font_size=13.0, scale_invariant=True,
                                     color=_rgba(HAZARD_COLOUR), text=label)],
                metadata=[KeyValuePair(key="sender", value=sender), KeyValuePair(key="radius_m", value=f"{ev.radius_m:g}")],
            ))
            assert scene.frame is not None
            angles = np.linspace(0.0, 2 * math.pi, CIRCLE_POINTS + 1)
            lat, lon = scene.frame.to_geo_arrays(x + r * np.cos(angles), y + r * np.sin(angles))
            ring = [[round(a, 8), round(b, 8)] for a, b in zip(lon.tolist(), lat.tolist(), strict=True)]
            ring[-1] = ring[0]  # a closed ring, exactly
            features.append(_feature(
                {"type": "Polygon", "coordinates": [ring]}, sender=sender, event_id=event_id, kind=ev.kind.name.lower(),
                radius_m=ev.radius_m, description=ev.description,
            ))
        geo = GeoJSON(geojson=json.dumps({"type": "FeatureCollection", "features": features}))
        return [self._out(HAZARDS, update, log_ns), self._out(HAZARDS_GEOJSON, geo, log_ns)]

    # -- latency ------------------------------------------------------------------------------------

    def _measure(self, h: m.Header, log_ns: int) -> list[Out]:
        second = log_ns // 1_000_000_000
        out: list[Out] = []
        if self._latency_second is not None and second > self._latency_second:
            out = self._latency_out(log_ns)
        self._latency_second = second if self._latency_second is None else max(self._latency_second, second)
        latency_ms = (log_ns - h.gen_time_us * 1000) / 1e6
        if abs(latency_ms) <= SANE_LATENCY_S * 1000:  # else the sender's clock is a sim clock (a fast run): nothing to measure
            self._latency.setdefault(h.sender_kind.name.lower(), []).append(latency_ms)
        return out

    def _latency_out(self, log_ns: int) -> list[Out]:
        out = []
        for kind, values in sorted(self._latency.items()):
            if values:
                a = np.asarray(values)
                p50, p99 = np.percentile(a, [50, 99]).tolist()
                doc = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "max_ms": round(float(a.max()), 3),
                       "messages": len(values), "second": self._latency_second}
                channel = f"{LATENCY_PREFIX}{kind}->observer"
                self.sent[channel] += 1
                out.append(Out(channel, json.dumps(doc).encode(), log_ns))
        self._latency = {}
        return out

    def _out(self, channel: str, msg: Message, log_ns: int) -> Out:
        self.sent[channel] += 1
        return Out(channel, msg.SerializeToString(), log_ns)
