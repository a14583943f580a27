"""Draw a recording's Foxglove scene channels with matplotlib, as Foxglove's Map, 3D and Plot panels would show them.

Foxglove's app does not run on the machines we build on, so the docs' picture of the scene comes from this script.
It reads only the scene channels (`/scene/...`, `/latency/...`; v2x.watch.foxglove), decoded with the stock `mcap`
reader and `foxglove-schemas-protobuf`, exactly the bytes Foxglove would get:

    python scripts/scene_picture.py run.mcap --at 60 -o scene.png

- Map: lanes (GeoJSON LineStrings), hazard zones (GeoJSON polygons) and vehicles (LocationFixes), in degrees.
- 3D, from above: lanes and stop lines (SceneUpdate lines), signal lights (spheres), vehicles (boxes, with their
  ids), hazard zones (cylinders), in the `site` frame's metres.
- Plot: the latency channels' p50 and p99 per sender kind against time (a real-time run's recording only).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from foxglove_schemas_protobuf.GeoJSON_pb2 import GeoJSON
from foxglove_schemas_protobuf.LocationFixes_pb2 import LocationFixes
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from matplotlib.patches import Circle, Polygon
from mcap.reader import make_reader


def _scene(path: Path) -> Iterator[tuple[str, int, bytes]]:
    with open(path, "rb") as f:
        for _schema, channel, msg in make_reader(f).iter_messages(log_time_order=True):
            if channel.metadata.get("v2x") == "scene":
                yield channel.topic, msg.log_time, bytes(msg.data)


def _rgb(c: Any) -> tuple[float, float, float, float]:
    return (c.r, c.g, c.b, c.a)


def _yaw(q: Any) -> float:
    return 2 * math.atan2(q.z, q.w)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recording", type=Path)
    p.add_argument("--at", type=float, default=None, metavar="S", help="seconds into the recording (default: its end)")
    p.add_argument("--radius", type=float, default=120.0, metavar="M", help="metres the 3D view shows around the junctions (default 120)")
    p.add_argument("-o", "--out", type=Path, default=Path("scene.png"))
    args = p.parse_args()

    latest: dict[str, bytes] = {}
    hazards_at: dict[str, bytes] = {}  # the hazard channels' latest message with a hazard in it
    latency: dict[str, list[tuple[float, float, float]]] = {}
    t0: int | None = None
    for topic, log_ns, data in _scene(args.recording):
        t0 = log_ns if t0 is None else t0
        t = (log_ns - t0) / 1e9
        if topic.startswith("/latency/"):
            doc = json.loads(data)
            latency.setdefault(topic.removeprefix("/latency/"), []).append((t, doc["p50_ms"], doc["p99_ms"]))
            continue
        if args.at is not None and t > args.at:
            continue
        latest[topic] = data
        if (topic == "/scene/hazards" and SceneUpdate.FromString(data).entities) or (
                topic == "/scene/hazards/geojson" and json.loads(GeoJSON.FromString(data).geojson)["features"]):
            hazards_at[topic] = data  # the hazard as last shown (the run clears it as it stops)

    fig = plt.figure(figsize=(15, 5.6), layout="constrained")
    ax_map, ax_3d, ax_plot = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.9]})

    # Map panel: degrees
    lanes = json.loads(GeoJSON.FromString(latest["/scene/lanes/geojson"]).geojson)["features"]
    for ft in lanes:
        xs, ys = zip(*ft["geometry"]["coordinates"], strict=True)
        ax_map.plot(xs, ys, color="#555", lw=1.2, solid_capstyle="butt")
    if "/scene/hazards/geojson" in hazards_at:
        for ft in json.loads(GeoJSON.FromString(hazards_at["/scene/hazards/geojson"]).geojson)["features"]:
            ax_map.add_patch(Polygon(ft["geometry"]["coordinates"][0], closed=True, fc=(0.84, 0.1, 0.1, 0.3), ec="#d61a1a"))
    fixes = LocationFixes.FromString(latest["/scene/vehicles/fixes"]).fixes
    ax_map.scatter([f.longitude for f in fixes], [f.latitude for f in fixes], s=14, c=[_rgb(f.color) for f in fixes], zorder=3)
    ax_map.set_title(f"Map: /scene/lanes/geojson, /scene/hazards/geojson,\n/scene/vehicles/fixes ({len(fixes)} fixes)", fontsize=9)
    ax_map.set_xlabel("longitude [deg]")
    ax_map.set_ylabel("latitude [deg]")
    ax_map.set_aspect(1 / math.cos(math.radians(fixes[0].latitude if fixes else 30.0)))
    ax_map.ticklabel_format(useOffset=False)
    ax_map.tick_params(labelsize=7)

    # 3D panel, from above: the site frame's metres, around the junctions
    road = SceneUpdate.FromString(latest["/scene/lanes"]).entities
    centres = [(t.pose.position.x, t.pose.position.y) for e in road for t in e.texts]
    (cx0, cy0), (cx1, cy1) = (min(c[0] for c in centres), min(c[1] for c in centres)), (max(c[0] for c in centres), max(c[1] for c in centres))
    ax_3d.set_xlim(cx0 - args.radius, cx1 + args.radius)
    ax_3d.set_ylim(cy0 - args.radius, cy1 + args.radius)
    ax_3d.set_aspect("equal")
    fig.canvas.draw()  # the axes' size on the page: a line's width in points from its thickness in metres
    pt_per_m = ax_3d.get_window_extent().width * 72 / fig.dpi / (ax_3d.get_xlim()[1] - ax_3d.get_xlim()[0])
    for e in road:
        for ln in e.lines:
            pts = [(q.x, q.y) for q in ln.points]
            if ln.type == ln.LINE_LIST:
                for a, b in zip(pts[::2], pts[1::2], strict=True):
                    ax_3d.plot([a[0], b[0]], [a[1], b[1]], color=_rgb(ln.color), lw=ln.thickness * pt_per_m, zorder=2)
            else:
                xs, ys = zip(*pts, strict=True)
                ax_3d.plot(xs, ys, color=_rgb(ln.color), lw=ln.thickness * pt_per_m, solid_capstyle="butt", zorder=1)
    if "/scene/hazards" in hazards_at:
        for e in SceneUpdate.FromString(hazards_at["/scene/hazards"]).entities:
            for cyl in e.cylinders:
                ax_3d.add_patch(Circle((cyl.pose.position.x, cyl.pose.position.y), cyl.size.x / 2, fc=_rgb(cyl.color), ec="#d61a1a", zorder=3))
            for tx in e.texts:
                ax_3d.annotate(tx.text, (tx.pose.position.x, tx.pose.position.y), color="#d61a1a", fontsize=8, xytext=(8, 8),
                               textcoords="offset points")
    if "/scene/signals" in latest:
        for e in SceneUpdate.FromString(latest["/scene/signals"]).entities:
            for sph in e.spheres:
                ax_3d.add_patch(Circle((sph.pose.position.x, sph.pose.position.y), sph.size.x * 0.8, fc=_rgb(sph.color), ec="k", lw=0.4, zorder=4))
    boxes = SceneUpdate.FromString(latest["/scene/vehicles"]).entities
    for e in boxes:
        for cube in e.cubes:
            x, y, yaw = cube.pose.position.x, cube.pose.position.y, _yaw(cube.pose.orientation)
            hl, hw = cube.size.x / 2, cube.size.y / 2
            c, s = math.cos(yaw), math.sin(yaw)
            corners = [(x + c * dx - s * dy, y + s * dx + c * dy) for dx, dy in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))]
            ax_3d.add_patch(Polygon(corners, closed=True, fc=_rgb(cube.color), ec="k", lw=0.3, zorder=5))
    ax_3d.set_title(f"3D (top view, frame site): /scene/lanes, /scene/signals,\n/scene/hazards, /scene/vehicles ({len(boxes)} boxes)", fontsize=9)
    ax_3d.set_xlabel("east [m]")
    ax_3d.set_ylabel("north [m]")
    ax_3d.tick_params(labelsize=7)

    # Plot panel: latency
    if latency:
        for i, (hop, rows) in enumerate(sorted(latency.items())):
            t, p50, p99 = zip(*rows, strict=True)
            colour = f"C{i}"
            ax_plot.plot(t, p50, color=colour, lw=1.2, label=f"{hop} p50")
            ax_plot.plot(t, p99, color=colour, lw=1.0, ls="--", label=f"{hop} p99")
        ax_plot.set_ylim(bottom=0)
        ax_plot.legend(fontsize=7)
        ax_plot.set_xlabel("time into the recording [s]")
        ax_plot.set_ylabel("latency, measured on the wall clock [ms]")
        ax_plot.set_title("Plot: /latency/<kind>->observer  .p50_ms, .p99_ms", fontsize=9)
    else:
        ax_plot.text(0.5, 0.5, "no latency channels\n(a fast run's messages carry sim time)", ha="center", va="center")
        ax_plot.set_axis_off()
    ax_plot.grid(alpha=0.3)
    ax_plot.tick_params(labelsize=7)
    fig.suptitle(f"{args.recording.name}: Foxglove scene channels" + (f" at {args.at:g} s" if args.at is not None else ""), fontsize=10)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
