"""`v2x import-sumo` and `v2x import-osm`: a SUMO network (or an OpenStreetMap file through netconvert) in, a
scenario that references it out (docs/sumo.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import libsumo
import sumo

from v2x.core import scenario
from v2x.core.errors import ScenarioError
from v2x.core.geo import LocalFrame
from v2x.sumo.netfile import NetSummary, TrafficLight, check_scenario_files, read_traffic_lights
from v2x.sumo.signals import program_plan

#: where a network without a projection is laid out (its metres around this point): the project's pilot zone, Wuxi
DEFAULT_ORIGIN = (31.4912, 120.3119)
#: netconvert's options for OpenStreetMap: the signals mapped around a junction become its traffic light (and busy
#: unsignalled junctions get one), the nodes of one junction and the lights of one junction are joined, lights at
#: junctions without conflicts dropped, roundabouts and ramps recognised, and only roads cars may use kept. The road
#: geometry is kept as mapped (no --geometry.remove), for the lanes' shapes in MAP. Fixed-time programs: the RSU's
#: controller runs the lights (docs/sumo.md). A light's id names its junction's topics, so no "#" in it: netconvert
#: abbreviates the id of a light joining more than --max-join-ids nodes as "..._#2more" unless told not to.
NETCONVERT_OSM = [
    "--tls.guess-signals", "--tls.guess", "--tls.join", "--tls.discard-simple", "--junctions.join", "--roundabouts.guess",
    "--ramps.guess", "--keep-edges.by-vclass", "passenger", "--tls.default-type", "static", "--no-turnarounds.tls",
    "--max-join-ids", "100",
]


@dataclass(frozen=True)
class Imported:
    path: Path  # the scenario written
    scenario: scenario.Scenario
    network: NetSummary


def _tool(name: str) -> tuple[str, dict[str, str]]:
    """A SUMO tool from the eclipse-sumo package, and an environment in which it finds its data (PROJ's database)."""
    home = Path(sumo.SUMO_HOME)
    return str(home / "bin" / name), {**os.environ, "SUMO_HOME": str(home), "PROJ_LIB": str(home / "data" / "proj")}


def netconvert_osm(osm: Path, net: Path) -> None:
    """OpenStreetMap -> a SUMO network; ScenarioError with netconvert's own words when it cannot."""
    if not osm.is_file():
        raise ScenarioError([f"{osm}: no such file (expected an OpenStreetMap file, .osm)"])
    tool, env = _tool("netconvert")
    res = subprocess.run([tool, "--osm-files", str(osm), "--output-file", str(net), *NETCONVERT_OSM],
                         capture_output=True, text=True, env=env)
    errors = [x.strip() for x in (res.stdout + res.stderr).splitlines() if x.strip().startswith("Error") or "line/column" in x]
    if res.returncode != 0 or errors or not net.is_file():
        said = "; ".join(errors) or f"netconvert exited with {res.returncode}"
        raise ScenarioError([f"{osm}: netconvert cannot read it: {said} (expected an OpenStreetMap file with roads)"])


def random_trips(net: Path, out: Path, period_s: float, seed: int = 1) -> Path:
    """SUMO's randomTrips.py: a trip every `period_s` for an hour, mostly from the network's edge to its edge
    (fringe factor 10), each checked routable (--validate); written to `out`."""
    home = Path(sumo.SUMO_HOME)
    _, env = _tool("duarouter")
    with tempfile.TemporaryDirectory() as scratch:  # --validate routes the trips, writing files into the working folder
        res = subprocess.run(
            [sys.executable, str(home / "tools" / "randomTrips.py"), "--net-file", str(net.resolve()),
             "--output-trip-file", str(out.resolve()), "--period", f"{period_s:g}", "--end", "3600", "--fringe-factor", "10",
             "--seed", str(seed), "--validate"],
            capture_output=True, text=True, env=env, cwd=scratch,
        )
    if res.returncode != 0 or not out.is_file():
        said = (res.stderr.strip().splitlines() or [f"exited with {res.returncode}"])[-1]
        raise ScenarioError([f"{net}: randomTrips.py cannot make trips on it: {said} (expected a network with routable edges)"])
    return out


def _place(
    net: Path, summary: NetSummary, origin: tuple[float, float] | None, lights: list[TrafficLight],
) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    """Local (0, 0) (for a georeferenced network the centre of its extent, in its own projection; else `origin`),
    and each light's junction in local metres: its WGS-84 point by the network's projection, on our local plane
    around that origin (a network without a projection is already metres around the origin)."""
    if not summary.location.georeferenced:
        return origin or DEFAULT_ORIGIN, [tl.xy for tl in lights]
    x0, y0, x1, y1 = summary.location.boundary
    libsumo.start(["sumo", "--net-file", str(net), "--no-step-log", "true", "--no-warnings", "true"])
    try:
        lon, lat = libsumo.simulation.convertGeo((x0 + x1) / 2, (y0 + y1) / 2)
        frame = LocalFrame(lat, lon)
        xy = [frame.to_local(*libsumo.simulation.convertGeo(*tl.xy)[::-1]) for tl in lights]
    finally:
        libsumo.close()
    return (lat, lon), xy


def import_sumo(
    net: Path, routes: list[Path], out: Path, origin: tuple[float, float] | None = None, trips_s: float | None = None,
    what: str = "",
) -> Imported:
    """Write scenario `out` referencing `net` and `routes` (by paths relative to it), after checking them; with
    `trips_s`, random trips every that many seconds too (`random_trips`, into `<out>.trips.rou.xml`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = check_scenario_files(net, routes)
    if trips_s is not None:
        routes = [*routes, random_trips(net, out.with_suffix(".trips.rou.xml"), trips_s)]
    lights, unfit = [], []
    for tl in read_traffic_lights(net):
        if any(c in tl.id for c in "/+#"):  # it names the junction's topics: left out, as an unfit program is
            unfit.append(f'# No RSU: traffic light {tl.id}: its id cannot be an MQTT topic level (expected no "/", "+" or "#")')
            continue
        try:
            program_plan(tl)
            lights.append(tl)
        except ScenarioError as e:  # an RSU could not run it: left out, and the scenario says why
            unfit.append(f"# No RSU: {e.problems[0]}")
    (lat, lon), junction_xy = _place(net, summary, origin, lights)
    folder = out.resolve().parent

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), folder)

    n_lights = len(summary.traffic_lights)
    placed = "with its own projection" if summary.location.georeferenced else "as metres around the origin (it has no projection)"
    text = "\n".join([
        f"# {what or f'Imported by v2x import-sumo from {net.name}'}: {summary.junctions} junctions, {n_lights} with traffic lights.",
        f"# SUMO moves the vehicles (docs/sumo.md); positions go on the wire converted {placed}.",
        f"name = {_quote(out.stem)}",
        f"description = {_quote(f'SUMO network {net.name}: {summary.junctions} junctions, {n_lights} signalised')}",
        "duration_s = 3600.0",
        "seed = 1",
        "step_s = 0.1",
        'mobility = "sumo"',
        "",
        "[origin]                # WGS-84 point at local (0, 0)" + (": the network's centre" if summary.location.georeferenced else ""),
        f"lat_deg = {lat:.7f}",
        f"lon_deg = {lon:.7f}",
        "",
        "[sumo]",
        f"net = {_quote(rel(net))}",
        f"routes = [{', '.join(_quote(rel(r)) for r in routes)}]",
        "",
        *(["# One RSU per signalised junction: its traffic light's id and its centre in local metres [m] (east, north)."]
          if lights else ["# No traffic lights that an RSU can run: no RSUs."]),
        *unfit,
        *(line for tl, (x, y) in zip(lights, junction_xy, strict=True)
          for line in ("[[sumo.junctions]]", f"id = {_quote(tl.id)}", f"x_m = {x:.2f}", f"y_m = {y:.2f}", "")),
    ])
    out.write_text(text, encoding="utf-8")
    return Imported(out, scenario.load(out), summary)


def import_osm(osm: Path, out: Path, routes: list[Path] | None = None, trips_s: float | None = None) -> Imported:
    """netconvert `osm` into `<out>.net.xml` beside the scenario, then `import_sumo` it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    net = out.with_suffix(".net.xml")
    netconvert_osm(osm, net)
    what = f"Imported by v2x import-osm from {osm.name} (netconvert {' '.join(NETCONVERT_OSM)})"
    return import_sumo(net, routes or [], out, trips_s=trips_s, what=what)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
