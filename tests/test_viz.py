"""The visualiser, recording and replay: headless frames drawn from a fixed recording, MCAP, round trips."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pygame
import pytest

from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.mapdata import build_map
from v2x.core.network import Network
from v2x.core.topics import Topics, quadkey
from v2x.net.broker import MosquittoBroker
from v2x.net.station import Station, StepClock
from v2x.watch.record import Recorder, read
from v2x.watch.render import BACKGROUND, HAZARD_COLOUR, LIGHT_GREEN, LIGHT_RED, SPEED_COLOURS, Renderer, View
from v2x.watch.scene import Flag, Scene
from v2x.watch.viz import _summary, replay_into

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # read when the display starts: headless frames

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SCALE = 3.0  # [px/m] of the test view
W, H = 1280, 800


def _frames(tmp_path: Path) -> tuple[Path, dict[str, tuple[float, float]]]:
    """A fixed recording of four_way: MAP; SPaT with the north approach red and the rest green; a stopped
    vehicle 40 m up the east approach; a stalled-vehicle hazard 80 m up the south approach.
    Returns the file and the world positions (local metres) the test expects things at."""
    sc = scenario.load(scenario.resolve("four_way"))
    net = Network(sc)
    clock = StepClock(EPOCH)
    clock.t = 10.0
    topics = Topics()
    geo = net.intersections[0]
    cx, cy = geo.center
    tile = quadkey(net.frame.to_geo(cx, cy).lat_deg, net.frame.to_geo(cx, cy).lon_deg)
    rsu, cloud = Station("rsu-J1", m.SenderKind.RSU, clock), Station("cloud", m.SenderKind.CLOUD, clock)
    car = Station("veh-7", m.SenderKind.VEHICLE, clock)
    mp = build_map(net, 0)
    north_groups = {c.signal_group for ln in mp.lanes if ln.name.startswith("north.in") for c in ln.connections}
    all_groups = {c.signal_group for ln in mp.lanes for c in ln.connections if c.signal_group}
    assert north_groups
    assert all_groups - north_groups
    utc_ms = clock.utc_us() // 1000
    states = tuple(
        m.MovementState(g, (m.MovementEvent(
            m.LightState.RED if g in north_groups else m.LightState.PROTECTED_GREEN,
            m.TimeChange(0.0, 5.0, 30.0, 12.0),
        ),))
        for g in sorted(all_groups)
    )
    spat = m.Spat((m.IntersectionState(
        ref=mp.ref, name="J1", revision=1, status=frozenset(), timestamp_ms=utc_ms, plan_id=0, states=states,
    ),))
    # the east approach's inbound lane 0 (westbound, north of the centre line), 40 m before its stop line
    _, _, vx, vy = net.lane_point("J1", "east", 0, 40.0)
    _, _, hx, hy = net.lane_point("J1", "south", 0, 80.0)
    bsm = m.Bsm(position=net.frame.to_geo(vx, vy), speed_mps=0.0, heading_deg=270.0)
    hazard = m.Rsi(net.frame.to_geo(hx, hy), (m.RoadTrafficEvent(
        event_id=3, kind=m.HazardKind.STALLED_VEHICLE, source=m.EventSource.POLICE, status=m.EventStatus.ACTIVE,
        position=net.frame.to_geo(hx, hy), radius_m=15.0,
    ),))
    path = tmp_path / "fixed.mcap"
    rec = Recorder(path)
    rx_ns = int((EPOCH + 10.0) * 1e9)
    for topic, payload in [
        (topics.map(tile, "J1"), rsu.encode(m.MapData((mp,)), stream="map")),
        (topics.spat("rsu", tile, "J1"), rsu.encode(spat, stream="spat")),
        (topics.bsm(tile, "veh-7"), car.encode(bsm, stream="bsm")),
        (topics.rsi(tile, "cloud", 3), cloud.encode(hazard, stream="rsi")),
    ]:
        rec.write(topic, payload, rx_ns)
        rx_ns += 1_000_000
    rec.close()
    return path, {"centre": (cx, cy), "vehicle": (vx, vy), "hazard": (hx, hy)}


def _px(world: tuple[float, float], centre: tuple[float, float]) -> tuple[int, int]:
    """Where the test view puts a world point: centre of the window, SCALE px per metre, north up."""
    return round(W / 2 + (world[0] - centre[0]) * SCALE), round(H / 2 - (world[1] - centre[1]) * SCALE)


def _draw(scene: Scene, centre: tuple[float, float], **kw: object) -> pygame.Surface:
    pygame.display.init()
    pygame.font.init()
    surf = pygame.Surface((W, H))
    r = Renderer(scene, View(W, H, centre[0], centre[1], SCALE), **kw)  # type: ignore[arg-type]
    r._fitted = True  # the test's own view, not the automatic fit
    r.draw(surf)
    return surf


def _colours_near(surf: pygame.Surface, at: tuple[int, int], radius: int) -> Counter[tuple[int, int, int]]:
    out: Counter[tuple[int, int, int]] = Counter()
    for x in range(at[0] - radius, at[0] + radius + 1):
        for y in range(at[1] - radius, at[1] + radius + 1):
            if 0 <= x < W and 0 <= y < H:
                c = surf.get_at((x, y))
                out[(c.r, c.g, c.b)] += 1
    return out


def test_a_frame_from_a_fixed_recording_shows_signals_vehicle_and_hazard(tmp_path: Path) -> None:
    path, where = _frames(tmp_path)
    scene = Scene()
    assert replay_into(scene, read(path)) == 4
    assert scene.errors == Counter()
    centre = where["centre"]
    surf = _draw(scene, centre)

    # The north approach's head is red, on its kerb side (west of the north leg) just upstream of the junction;
    # the south approach's is green, east of the south leg. Nothing red where the south head is, and vice versa.
    cx, cy = _px(centre, centre)
    north_head = (cx - 45, cy - 60)  # upper left of the junction (about 15 m west, 20 m north)
    south_head = (cx + 45, cy + 60)
    near_north = _colours_near(surf, north_head, 35)
    near_south = _colours_near(surf, south_head, 35)
    assert near_north[LIGHT_RED] > 100, near_north.most_common(6)
    assert near_north[LIGHT_GREEN] == 0, near_north.most_common(6)
    assert near_south[LIGHT_GREEN] > 100, near_south.most_common(6)
    assert near_south[LIGHT_RED] == 0, near_south.most_common(6)

    # The stopped vehicle is drawn in the "stopped" colour at its place (4.5 m x 1.8 m: about 13 x 5 px).
    vehicle = _colours_near(surf, _px(where["vehicle"], centre), 3)
    assert vehicle[SPEED_COLOURS[0]] >= 20, vehicle.most_common(4)
    assert _colours_near(surf, _px(where["vehicle"], centre), 3)[SPEED_COLOURS[-1]] == 0

    # The hazard marker: a yellow triangle with a red rim at the hazard, and its zone's circle.
    hz = _colours_near(surf, _px(where["hazard"], centre), 12)
    assert hz[(255, 235, 0)] > 30, hz.most_common(6)
    assert hz[HAZARD_COLOUR] > 20, hz.most_common(6)

    # Coloured by state, the vehicle 40 m up the east approach is not warned (the hazard is behind it, south).
    scene.tick()
    assert scene.vehicles.flags[0] & Flag.WARNED == 0


def test_the_hud_says_its_latency_is_measured_here_through_the_broker_and_the_summary_keeps_the_same(tmp_path: Path) -> None:
    """The HUD's hop (sender -> visualiser, no link model) is not the report's (sender -> receiver, link model
    included): it says so, and the summary that goes into the report holds the same figures under the same names."""
    path, _ = _frames(tmp_path)
    scene = Scene()
    replay_into(scene, read(path))
    pygame.display.init()
    pygame.font.init()
    line = next(x for x in Renderer(scene, View(W, H)).hud_lines() if x.startswith("latency"))
    assert line.startswith("latency p50/p99 ms, measured here through the broker (no link model)")
    summary = _summary(scene)["latency_ms"]
    assert set(summary) == {"cloud->viz", "rsu->viz", "vehicle->viz"}
    for hop, v in summary.items():
        assert f"{hop} {v['p50']:.1f}/{v['p99']:.1f}" in line


def test_clearing_the_hazard_takes_its_marker_off(tmp_path: Path) -> None:
    path, where = _frames(tmp_path)
    scene = Scene()
    replay_into(scene, read(path))
    topic = next(r.topic for r in read(path) if "/rsi/" in r.topic)
    scene.ingest(topic, b"", 0)  # the retained RSI cleared
    assert not scene.hazards
    hz = _colours_near(_draw(scene, where["centre"]), _px(where["hazard"], where["centre"]), 12)
    assert hz[(255, 235, 0)] == 0


def test_bad_payloads_are_counted_per_kind_and_never_raise(tmp_path: Path) -> None:
    path, _ = _frames(tmp_path)
    scene = Scene()
    replay_into(scene, read(path))
    before = dict(scene.received)
    scene.ingest("v2x/v1/bsm/1/veh-9", b"\xff\x00garbage", 0)
    scene.ingest("v2x/v1/bsm/1/veh-9", b"x" * 70_000, 0)
    scene.ingest("v2x/v1/bsm/1/veh-9", codec.encode(m.Frame(
        m.Header("veh-9", m.SenderKind.VEHICLE, 1, 0, 0), m.Status(m.ServiceState.ONLINE))), 0)  # a status on a BSM topic
    assert dict(scene.errors) == {"malformed": 1, "oversize": 1, "wrong_type": 1}
    assert scene.vehicles.n == 1
    assert dict(scene.received) == before


def test_vehicles_that_stop_sending_leave_the_picture() -> None:
    scene = Scene()
    clock = StepClock(EPOCH)
    for k, vid in enumerate(["a", "b", "c"]):
        st = Station(vid, m.SenderKind.VEHICLE, clock)
        clock.t = 1.0 + k
        scene.ingest(f"v2x/v1/bsm/1/{vid}", st.encode(m.Bsm(position=m.GeoPoint(31.0, 121.0 + k * 1e-4), speed_mps=5.0, heading_deg=90.0), stream="bsm"), 0)
    scene.tick()  # now = 3 s: "a" was last heard at 1 s, over STALE_S ago
    assert sorted(scene.vehicles.ids) == ["b", "c"]
    i = scene.vehicles.index["c"]
    assert scene.vehicles.xy[i, 0] == pytest.approx(2 * 1e-4 * 95_300, rel=0.02)  # ~95.3 km per degree of longitude at 31 N


def test_mcap_keeps_undecodable_payloads_on_a_schemaless_channel(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    path = tmp_path / "bad.mcap"
    rec = Recorder(path)
    rec.write("v2x/v1/bsm/1/x", b"\xff\xfe not protobuf", 5)
    summary = rec.close()
    assert summary["undecodable"] == 1
    assert summary["messages"] == 1
    with open(path, "rb") as f:
        (schema, channel, message), = make_reader(f).iter_messages()
    assert schema is None
    assert channel.message_encoding == "application/octet-stream"
    assert message.data == b"\xff\xfe not protobuf"


def _record(url: str, root: str, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "v2x", "record", str(out), "--broker", url, "--root", root],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert '"ready"' in proc.stdout.readline(), proc.stderr.read() if proc.stderr else ""
    return proc


HAZARD_ROOT = f"hazard-{os.getpid()}/v2x/v1"  # the topic root of the recorded hazard run


@pytest.fixture(scope="module")
def hazard_run(mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """hazard, 25 s in fast mode with its stalled vehicle from 5 s, recorded and snapshotted: the recording, the
    snapshot and the run's report (topic root HAZARD_ROOT)."""
    import json

    out = tmp_path_factory.mktemp("hazard")
    first, png = out / "first.mcap", out / "final.png"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", "hazard", "--fast", "--headless", "--duration", "25", "--set", "events.0.start_s=5",
         "--broker", mosquitto.url, "--root", HAZARD_ROOT, "--record", str(first), "--snapshot", str(png), "--report", str(out / "r.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return first, png, json.loads((out / "r.json").read_text())


@pytest.mark.xdist_group("hazard_run")  # one worker runs its module fixture once
def test_run_records_and_snapshots_then_replay_and_record_again_holds_the_same_messages(
    hazard_run: tuple[Path, Path, dict[str, Any]], broker_factory: object, tmp_path: Path,
) -> None:
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    first, png, report = hazard_run
    second, root = tmp_path / "second.mcap", HAZARD_ROOT
    sent = {t: c["sent"] for t, c in report["messages"].items()}
    # the recorder files retained messages cleared (empty payloads) under "cleared"; it also holds the run's marker
    # on its root, a Status (v2x.run.claim), retained before the recorder subscribed
    recorded: Counter[str] = Counter({"status": 1})
    for t, n in sent.items():
        recorded["cleared" if t.endswith("_cleared") else t] += n
    assert report["recording"]["messages"] == sum(sent.values()) + 1
    assert report["recording"]["undecodable"] == 0
    assert report["recording"]["by_type"] == recorded  # every message the tiers sent is in the recording
    assert report["visualiser"]["received"]["bsm"] == sent["bsm"]

    # the snapshot: a real PNG of the window's size, drawn headless
    img = pygame.image.load(str(png))
    assert img.get_size() == (1280, 800)

    # MCAP: the mcap reader opens it, and every message off the wire decodes with its protobuf schema
    decoded = 0
    with open(first, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, _msg, proto in reader.iter_decoded_messages():
            if channel.metadata.get("v2x") == "scene":  # Foxglove's scene, derived from them (the next test)
                continue
            assert schema is not None
            assert schema.name == "v2x.v1.MessageFrame"
            assert channel.message_encoding == "protobuf"
            assert proto.header.sender_id or proto.ByteSize() == 0  # empty: a retained message cleared
            decoded += 1
    assert decoded == report["recording"]["messages"]

    # replay onto a fresh broker while recording it again: the same messages, topic and bytes
    other = broker_factory()  # type: ignore[operator]
    rec = _record(other.url, root, second)
    replay = subprocess.run(
        [sys.executable, "-m", "v2x", "replay", str(first), "--to-broker", other.url, "--speed", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    rec.send_signal(2)
    _out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err[-2000:]
    a = Counter((r.topic, r.payload) for r in read(first))
    b = Counter((r.topic, r.payload) for r in read(second))
    assert sum(a.values()) == decoded
    assert a == b


@pytest.mark.xdist_group("hazard_run")  # one worker runs its module fixture once
def test_a_recording_holds_foxglove_scene_channels_derived_from_its_messages(hazard_run: tuple[Path, Path, dict[str, Any]]) -> None:
    """#29 item 3: the stock mcap reader and foxglove-schemas-protobuf decode the scene channels. Per step, one fix per
    vehicle of that step's BSMs, at the BSM's position, and a SceneUpdate with one entity per vehicle present; one
    GeoJSON LineString per MAP lane; the hazard's zone, at the RSI's position with its radius."""
    import json

    from foxglove_schemas_protobuf.GeoJSON_pb2 import GeoJSON
    from foxglove_schemas_protobuf.LocationFixes_pb2 import LocationFixes
    from foxglove_schemas_protobuf.SceneEntityDeletion_pb2 import SceneEntityDeletion
    from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
    from mcap.reader import make_reader

    from v2x.core.geo import LocalFrame

    first, _png, report = hazard_run
    bsms: dict[int, dict[str, m.GeoPoint]] = {}  # generation time [ns] -> sender -> position: the steps' BSMs
    lanes = 0
    rsi: list[m.RoadTrafficEvent] = []
    scene: dict[str, list[Any]] = {}
    schemas = {}
    with open(first, "rb") as f:
        reader = make_reader(f)
        for schema, channel, msg in reader.iter_messages(log_time_order=False):
            if channel.metadata.get("v2x") == "scene":
                assert schema is not None
                schemas[channel.topic] = schema.name
                scene.setdefault(channel.topic, []).append(msg.data)
            elif msg.data:
                frame = codec.decode(msg.data)
                if isinstance(frame.body, m.Bsm):
                    bsms.setdefault(frame.header.gen_time_us * 1000, {})[frame.header.sender_id] = frame.body.position
                elif isinstance(frame.body, m.MapData):
                    lanes = sum(len(ig.lanes) for ig in frame.body.intersections)
                elif isinstance(frame.body, m.Rsi):
                    rsi.extend(frame.body.events)
    assert schemas["/scene/vehicles/fixes"] == "foxglove.LocationFixes"
    assert schemas["/scene/vehicles"] == schemas["/scene/hazards"] == schemas["/scene/lanes"] == "foxglove.SceneUpdate"
    assert schemas["/scene/lanes/geojson"] == schemas["/scene/hazards/geojson"] == "foxglove.GeoJSON"

    # vehicles: every step of BSMs, each vehicle once, where its BSM put it
    fixes = [LocationFixes.FromString(d) for d in scene["/scene/vehicles/fixes"]]
    updates = [SceneUpdate.FromString(d) for d in scene["/scene/vehicles"]]
    assert len(fixes) == len(updates) == len(bsms) > 200
    for fx, up, (t_ns, step) in zip(fixes, updates, sorted(bsms.items()), strict=True):
        assert {f.timestamp.ToNanoseconds() for f in fx.fixes} == {t_ns}
        assert [f.frame_id for f in fx.fixes] == sorted(step, key=[f.frame_id for f in fx.fixes].index)  # each once
        assert {f.frame_id: (round(f.latitude, 7), round(f.longitude, 7)) for f in fx.fixes} == {
            vid: (round(p.lat_deg, 7), round(p.lon_deg, 7)) for vid, p in step.items()}
        assert {e.id for e in up.entities} == set(step)  # one entity per vehicle present, and no other
        assert len(up.entities) == len(step)
        assert [d.type for d in up.deletions] == [SceneEntityDeletion.ALL]  # replacing the step before
        for e in up.entities:
            (cube,) = e.cubes
            assert e.frame_id == "site"
            assert 3.0 < cube.size.x < 20.0
            assert 1.0 < cube.size.y < 3.0
    assert max(len(fx.fixes) for fx in fixes) >= 5

    # lanes: one LineString per MAP lane
    assert lanes > 0
    (lane_geo, *_) = [json.loads(GeoJSON.FromString(d).geojson) for d in scene["/scene/lanes/geojson"]]
    assert [ft["geometry"]["type"] for ft in lane_geo["features"]] == ["LineString"] * lanes
    road = SceneUpdate.FromString(scene["/scene/lanes"][0])
    assert sum(len(ln.points) > 1 for e in road.entities for ln in e.lines if ln.type == ln.LINE_STRIP) == lanes

    # the hazard: its zone on the map and in 3D, where the RSI put it, as big as its radius
    assert rsi
    ev = rsi[0]
    zones = [json.loads(GeoJSON.FromString(d).geojson)["features"] for d in scene["/scene/hazards/geojson"]]
    shown = [ft for fts in zones for ft in fts if ft["properties"]["event_id"] == ev.event_id]
    assert shown
    ring = shown[0]["geometry"]["coordinates"][0]
    assert shown[0]["geometry"]["type"] == "Polygon"
    assert ring[0] == ring[-1]
    local = LocalFrame(ev.position.lat_deg, ev.position.lon_deg)
    radii = [math.hypot(*local.to_local(lat, lon)) for lon, lat in ring]
    assert min(radii) == pytest.approx(ev.radius_m, abs=0.5)
    assert max(radii) == pytest.approx(ev.radius_m, abs=0.5)
    cylinders = [c for d in scene["/scene/hazards"] for e in SceneUpdate.FromString(d).entities for c in e.cylinders]
    assert cylinders
    assert cylinders[0].size.x == pytest.approx(2 * ev.radius_m)
    assert json.loads(GeoJSON.FromString(scene["/scene/hazards/geojson"][-1]).geojson)["features"] == []  # cleared at the end
    assert report["recording"]["scene"]["late_bsm"] == 0
    assert report["recording"]["scene"]["errors"] == 0
    assert report["recording"]["scene"]["messages"]["/scene/signals"] > 0


@pytest.mark.xdist_group("hazard_run")  # one worker runs its module fixture once
def test_the_docs_scene_picture_script_draws_a_recording(hazard_run: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    """scripts/scene_picture.py, which draws the docs' picture of the Foxglove channels, runs on a recording."""
    out = tmp_path / "scene.png"
    script = Path(__file__).parent.parent / "scripts" / "scene_picture.py"
    res = subprocess.run([sys.executable, str(script), str(hazard_run[0]), "--at", "20", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    img = pygame.image.load(str(out))
    assert img.get_width() > 1000


def test_foxglove_live_serves_the_scene_of_a_running_simulation(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> None:
    """#29 item 4: a WebSocket client speaking Foxglove's protocol (the `websockets` package, subprotocol
    foxglove.sdk.v1 as foxglove-sdk's server speaks it) connects to `v2x viz --foxglove` and gets the channels'
    advertisements, then, once a run starts, its vehicles: LocationFixes at four_way's site, SceneUpdates with boxes."""
    import asyncio
    import json
    import signal
    import struct

    import websockets
    from foxglove_schemas_protobuf.LocationFixes_pb2 import LocationFixes
    from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate

    root = f"{topic_prefix}/v2x/v1"
    viz = subprocess.Popen(
        [sys.executable, "-m", "v2x", "viz", "--foxglove", "0", "--broker", mosquitto.url, "--root", root, "--exit-after", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    run: subprocess.Popen[str] | None = None
    try:
        assert viz.stdout is not None
        ready = json.loads(viz.stdout.readline() or "{}")
        assert ready.get("event") == "ready", viz.stderr.read() if viz.stderr else ""

        async def watch() -> tuple[set[str], list[LocationFixes], list[SceneUpdate]]:
            nonlocal run
            fixes: list[LocationFixes] = []
            updates: list[SceneUpdate] = []
            async with websockets.connect(ready["foxglove"], subprotocols=["foxglove.sdk.v1"]) as ws:  # type: ignore[list-item]
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["op"] == "serverInfo"
                advertised = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert advertised["op"] == "advertise"
                topics = {c["topic"]: c for c in advertised["channels"]}
                wanted = {1: topics["/scene/vehicles/fixes"], 2: topics["/scene/vehicles"]}
                await ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": k, "channelId": c["id"]} for k, c in wanted.items()]}))
                run = await asyncio.to_thread(  # the run starts once the viewer is watching
                    subprocess.Popen,
                    [sys.executable, "-m", "v2x", "run", "four_way", "--fast", "--headless", "--duration", "20", "--broker", mosquitto.url,
                     "--root", root, "--report", str(tmp_path / "r.json")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )
                while len(fixes) < 20 or len(updates) < 20:
                    data = await asyncio.wait_for(ws.recv(), 60)
                    if isinstance(data, str):
                        continue  # more advertisements (latency channels), status
                    opcode, sub, _log_time = struct.unpack_from("<BIQ", data)
                    assert opcode == 1  # message data
                    payload = bytes(data[13:])
                    if sub == 1:
                        fixes.append(LocationFixes.FromString(payload))
                    elif sub == 2:
                        updates.append(SceneUpdate.FromString(payload))
            return set(topics), fixes, updates

        advertised, fixes, updates = asyncio.run(watch())
        assert {"/scene/vehicles/fixes", "/scene/vehicles", "/scene/lanes", "/scene/lanes/geojson", "/scene/signals",
                "/scene/hazards", "/scene/hazards/geojson"} <= advertised
        sc = scenario.load(scenario.resolve("four_way"))
        positions = [(f.latitude, f.longitude) for fx in fixes for f in fx.fixes]
        assert positions
        assert all(abs(lat - sc.origin.lat_deg) < 0.01 and abs(lon - sc.origin.lon_deg) < 0.01 for lat, lon in positions)
        assert all(f.frame_id.startswith("veh-") for fx in fixes for f in fx.fixes)
        assert any(len(u.entities) > 0 for u in updates)
        assert all(len(e.cubes) == 1 for u in updates for e in u.entities)
        assert run is not None
        assert run.wait(timeout=300) == 0, run.stderr.read()[-2000:] if run.stderr else ""
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        viz.send_signal(signal.SIGINT)
        out, err = viz.communicate(timeout=30)
    assert viz.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary"
    assert summary["scene_messages"]["/scene/vehicles/fixes"] >= 20
    assert summary["late_bsm"] == 0


def test_the_window_pans_zooms_selects_pauses_toggles_and_saves_screenshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from v2x.watch.viz import Window

    path, where = _frames(tmp_path)
    scene = Scene()
    replay_into(scene, read(path))
    monkeypatch.chdir(tmp_path)
    win = Window(scene, headless=False, size=(W, H))  # a display window (SDL's dummy driver here)
    win.open()
    try:
        r = win._renderer
        win.frame()
        assert win.frames == 1
        # click the vehicle: its panel opens
        at = r.view.point(*where["vehicle"])
        for ev in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            pygame.event.post(pygame.event.Event(ev, button=1, pos=at))
        win.frame()
        assert r.selected == "veh-7"
        assert scene.describe("veh-7")[0].startswith("veh-7")
        # a drag pans (and selects nothing), the wheel zooms
        cx, scale = r.view.cx, r.view.scale
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=(100, 100)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(160, 100), rel=(60, 0), buttons=(1, 0, 0)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, button=1, pos=(160, 100)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=1, flipped=False, precise_x=0.0, precise_y=1.0))
        win.frame()
        assert r.view.cx < cx
        assert r.view.scale == pytest.approx(scale * 1.2)
        assert r.selected == "veh-7"
        # keys: colours by state, flows on, screenshot, pause
        for key in (pygame.K_c, pygame.K_f, pygame.K_s, pygame.K_SPACE):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
        win.frame()
        assert r.colour_mode == "state"
        assert r.show_flows
        assert win.paused
        shots = list(tmp_path.glob("v2x-viz-*.png"))
        assert len(shots) == 1
        assert pygame.image.load(str(shots[0])).get_size() == (W, H)
        frames = win.frames
        win.frame()
        assert win.frames == frames  # paused: nothing drawn
        # the window is resizable: the view follows the surface
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE, mod=0, unicode=" ", scancode=0))
        pygame.display.set_mode((800, 600), pygame.RESIZABLE)
        win.frame()
        assert (r.view.width, r.view.height) == (800, 600)
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        win.frame()
        assert win.closed
    finally:
        win.close()


@pytest.mark.integration
def test_replay_of_a_file_that_is_not_a_recording_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mcap"
    bad.write_bytes(b"not an mcap file\n")
    res = subprocess.run([sys.executable, "-m", "v2x", "replay", str(bad), "--headless", "--snapshot", str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert f"{bad}: not a readable MCAP recording" in res.stderr


def test_a_fast_recording_keeps_sim_time_and_replays_at_its_pace(mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path) -> None:
    """A fast run's recording is logged in sim time (each message's generation time from the fixed epoch): its MCAP
    statistics span the run's 120 sim s, though the run took a few wall seconds, and a replay at --speed 20 takes
    120 / 20 wall seconds (before, about 12 times too fast)."""
    import time

    from mcap.reader import make_reader

    rec, root = tmp_path / "run.mcap", f"{topic_prefix}/v2x/v1"
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", "four_way", "--fast", "--headless", "--duration", "120", "--broker", mosquitto.url,
         "--root", root, "--record", str(rec)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with open(rec, "rb") as f:
        stats = make_reader(f).get_summary().statistics  # type: ignore[union-attr]
    assert stats is not None
    span_s = (stats.message_end_time - stats.message_start_time) / 1e9
    assert 115.0 <= span_s <= 125.0, span_s
    t0 = time.monotonic()
    replay = subprocess.run(
        [sys.executable, "-m", "v2x", "replay", str(rec), "--to-broker", mosquitto.url, "--speed", "20"],
        capture_output=True, text=True, timeout=120,
    )
    took = time.monotonic() - t0
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert took >= span_s / 20
    # the pace, from its first message to its last (the process's start, which a loaded machine slows, apart)
    import json

    paced_s = json.loads(replay.stdout.strip().splitlines()[-1])["wall_ms"] / 1000
    assert span_s / 20 - 0.1 <= paced_s <= span_s / 20 + 1.0, paced_s


# -- the window at every scale (#29, item 1) ---------------------------------------------------------------------


def _run_length(surf: pygame.Surface, at: tuple[float, float], heading_rad: float, colour: tuple[int, int, int]) -> int:
    """How many pixels long the run of `colour` through `at` is, along a heading (clockwise from north, y down)."""
    w, h = surf.get_size()
    ux, uy = math.sin(heading_rad), -math.cos(heading_rad)
    n = 0
    for sign in (1, -1):
        t = 0 if sign == 1 else 1
        while True:
            x, y = round(at[0] + sign * t * ux), round(at[1] + sign * t * uy)
            if not (0 <= x < w and 0 <= y < h) or tuple(surf.get_at((x, y)))[:3] != colour:
                break
            n, t = n + 1, t + 1
    return n


def _boxes(surf: pygame.Surface, colour: tuple[int, int, int], min_px: int) -> list[pygame.Rect]:
    """Bounding boxes of the connected areas of exactly `colour` (at least `min_px` pixels), largest first."""
    mask = pygame.mask.from_threshold(surf, colour, (1, 1, 1, 255))
    return sorted((r for r in mask.get_bounding_rects() if mask.overlap_area(
        pygame.Mask(r.size, fill=True), r.topleft) >= min_px), key=lambda r: -r.w * r.h)


CORRIDOR = f"corridor-{os.getpid()}/v2x/v1"  # the topic root of the corridor run


@pytest.fixture(scope="module")
def corridor_run(mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """corridor, 300 s in fast mode, recorded and snapshotted; the recording and the run's report (topic root CORRIDOR)."""
    import json

    out = tmp_path_factory.mktemp("corridor")
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", "corridor", "--fast", "--headless", "--duration", "300", "--broker", mosquitto.url,
         "--root", CORRIDOR, "--record", str(out / "corridor.mcap"), "--snapshot", str(out / "corridor.png"),
         "--report", str(out / "r.json")],
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "corridor.mcap", json.loads((out / "r.json").read_text())


@pytest.mark.integration
@pytest.mark.xdist_group("corridor")  # one worker runs its module fixture once
def test_corridor_at_the_default_fit_shows_every_vehicle_and_keeps_heads_and_labels_off_the_road(
    corridor_run: tuple[Path, dict[str, object]],
) -> None:
    """The acceptance snapshot: corridor at 300 s (fast mode), drawn headless at the default fit. Every vehicle is at
    least 6 px long (its own colour along its heading, read from the pixels: nothing hides it); each signal head is
    smaller than a junction box (pixels of the heads' and the junction's colours); no head or label covers a lane or a
    vehicle (the renderer's layout against the road's pixels and the vehicles' outlines)."""
    from v2x.watch.render import JUNCTION

    scene = Scene(CORRIDOR)
    replay_into(scene, read(corridor_run[0]))
    assert scene.now_ms >= 299_000
    pygame.display.init()
    pygame.font.init()
    surf = pygame.Surface((W, H))
    r = Renderer(scene, View(W, H))
    r.draw(surf)
    assert r.view.scale < 2.0  # the three junctions fit: the scale at which the corridor was unreadable

    v = scene.vehicles
    centres = r.view.to_screen(v.xy[: v.n])
    colours = r.vehicle_colours()
    lengths = {v.ids[i]: _run_length(surf, (centres[i, 0], centres[i, 1]), v.heading[i], colours[i]) for i in range(v.n)
               if 10 <= centres[i, 0] < W - 10 and 10 <= centres[i, 1] < H - 10}
    assert len(lengths) >= 30, len(lengths)
    short = {vid: n for vid, n in lengths.items() if n < 6}
    assert not short, f"{len(short)} of {len(lengths)} vehicles under 6 px long: {sorted(short.items())[:10]}"

    junctions = _boxes(surf, JUNCTION, 50)[:3]
    heads = _boxes(surf, (20, 20, 22), 10)
    assert len(junctions) == 3
    assert len(heads) >= 12, heads
    smallest = min(min(j.w, j.h) for j in junctions)
    assert max(max(h.w, h.h) for h in heads) < smallest, (heads, junctions)

    road = r._road_surface()
    placed = r.layout["heads"] + r.layout["labels"]
    assert len(r.layout["labels"]) == 3  # the three RSUs' names
    outlines = r.vehicle_outlines()
    bodies = [pygame.Rect(*o.min(axis=0), *(o.max(axis=0) - o.min(axis=0))) for o in outlines]
    for box in placed:
        on_road = [(x, y) for x in range(box.left, box.right) for y in range(box.top, box.bottom)
                   if 0 <= x < W and 0 <= y < H and tuple(road.get_at((x, y)))[:3] != BACKGROUND]
        assert not on_road, (box, on_road[:5])
        assert box.collidelist(bodies) == -1, (box, v.ids[box.collidelist(bodies)])


@pytest.mark.integration
@pytest.mark.xdist_group("corridor")  # one worker runs its module fixture once
def test_the_title_says_what_is_shown(corridor_run: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    """The snapshot `v2x run` takes when the run is over says so (not "live"); a headless replay says which file and
    the sim time it was drawn at (not a playback speed it never played at)."""
    import json

    viz = corridor_run[1]["visualiser"]
    assert isinstance(viz, dict)
    assert viz["title"] == "v2x viz · live · run ended at sim 300 s", viz["title"]
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "replay", str(corridor_run[0]), "--root", CORRIDOR, "--headless", "--until", "120", "--snapshot", str(tmp_path / "r.png")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["title"] == "v2x viz · replay corridor.mcap at sim 120 s", summary["title"]


def test_a_paused_window_says_so_and_still_answers_a_click(tmp_path: Path) -> None:
    """Space pauses: the frame shows a paused badge at once; a click on a vehicle while paused redraws, with the vehicle
    picked out; BSMs that arrive meanwhile do not move the paused picture."""
    from v2x.watch.viz import Window

    path, where = _frames(tmp_path)
    scene = Scene()
    replay_into(scene, read(path))
    win = Window(scene, headless=False, size=(W, H))
    win.open()
    try:
        r = win._renderer
        win.frame()
        before = pygame.display.get_surface().copy()
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE, mod=0, unicode=" ", scancode=0))
        win.frame()
        assert win.paused
        shown = pygame.display.get_surface()
        changed = pygame.mask.from_threshold(shown, (0, 0, 0), (1, 1, 1, 255), before, 1)  # pixels that differ
        changed.invert()
        badge = changed.get_bounding_rects()
        assert badge, "pausing changed nothing on screen"
        assert all(b.top < 60 and abs(b.centerx - W // 2) < 250 for b in badge), badge  # one badge, top centre
        at = r.view.point(*where["vehicle"])
        assert _colours_near(shown, at, 14)[(0, 0, 0)] == 0
        frames = win.frames
        win.frame()
        assert win.frames == frames  # paused and no input: nothing redrawn
        # a newer BSM moves the vehicle 30 m while paused: the picture holds still
        car = Station("veh-7", m.SenderKind.VEHICLE, StepClock(EPOCH + 11.0))
        geo = next(iter(scene.intersections.values()))
        assert scene.frame is not None
        moved = scene.frame.to_geo(where["vehicle"][0] + 30.0, where["vehicle"][1])
        scene.ingest("v2x/v1/bsm/0/veh-7", car.encode(m.Bsm(position=moved, speed_mps=0.0, heading_deg=270.0), stream="bsm"), 0)
        assert geo.name
        for ev in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            pygame.event.post(pygame.event.Event(ev, button=1, pos=at))
        win.frame()
        assert win.frames == frames + 1
        assert r.selected == "veh-7"
        ring = _colours_near(pygame.display.get_surface(), at, 14)[(0, 0, 0)]
        assert ring > 20, ring  # the selection outline and ring, where the paused picture shows the vehicle
    finally:
        win.close()


def test_the_hazard_label_stays_whole_inside_the_window(tmp_path: Path) -> None:
    """The hazard's mark, zone and name draw the same pixels whether the hazard is in the middle of the window or
    near its right or left edge: the name moves to the side where it fits, never clipped, and off its zone."""
    path, where = _frames(tmp_path)
    scene = Scene()
    replay_into(scene, read(path))
    counts = {}
    hx, hy = where["hazard"]
    for name, px in (("middle", W // 2), ("right edge", W - 55), ("left edge", 55)):
        centre = (hx - (px - W / 2) / SCALE, hy)
        counts[name] = pygame.mask.from_threshold(_draw(scene, centre), HAZARD_COLOUR, (1, 1, 1, 255)).count()
    assert counts["middle"] > 100, counts
    assert counts["right edge"] == counts["middle"] == counts["left edge"], counts
