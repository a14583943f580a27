"""Reading SUMO network files: what an import and the backend need before SUMO runs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

from v2x.core.errors import ScenarioError


@dataclass(frozen=True)
class Location:
    """A network's `location` element: how its metres relate to the Earth."""

    net_offset: tuple[float, float]  # [m] added to projected coordinates
    boundary: tuple[float, float, float, float]  # [m] the network's extent (convBoundary): x0, y0, x1, y1
    projection: str  # proj.4 parameters; "!" when the network is not georeferenced

    @property
    def georeferenced(self) -> bool:
        return self.projection not in ("", "!")


def read_location(net: Path) -> Location:
    """The `location` of a .net.xml; ScenarioError naming the file when it is missing, not XML or not a network."""
    try:
        for _, el in ET.iterparse(net, events=("start",)):
            if el.tag == "location":
                ox, oy = (float(v) for v in el.get("netOffset", "0,0").split(","))
                x0, y0, x1, y1 = (float(v) for v in el.get("convBoundary", "0,0,0,0").split(","))
                return Location((ox, oy), (x0, y0, x1, y1), el.get("projParameter", "!"))
            if el.tag != "net":
                break
    except OSError as e:
        raise ScenarioError([f"{net}: cannot read: {e.strerror or e} (expected a SUMO network, .net.xml)"]) from None
    except ET.ParseError as e:
        raise ScenarioError([f"{net}:{e.position[0]}: not well-formed XML: {e} (expected a SUMO network, .net.xml)"]) from None
    except ValueError as e:
        raise ScenarioError([f"{net}: a location element that cannot be read: {e} (expected numbers)"]) from None
    raise ScenarioError([f"{net}: no <net> with a <location> element (expected a SUMO network, .net.xml, as netconvert writes)"])


@dataclass(frozen=True)
class NetSummary:
    """What an import says about a network: its extent and projection, its edges, its junctions with traffic lights."""

    location: Location
    edges: frozenset[str]  # normal edges (not the internal ones through junctions)
    junctions: int  # real junctions (not internal, not dead ends)
    traffic_lights: tuple[str, ...]  # tlLogic ids


def read_network(net: Path) -> NetSummary:
    """Read a .net.xml through once; ScenarioError naming the file (and the line) when it cannot be read as a network."""
    location = read_location(net)
    edges: set[str] = set()
    junctions, lights = 0, []
    try:
        for _, el in ET.iterparse(net, events=("end",)):
            if el.tag == "edge" and el.get("function") != "internal":
                edges.add(el.get("id", ""))
            elif el.tag == "junction" and el.get("type") not in ("internal", "dead_end"):
                junctions += 1
            elif el.tag == "tlLogic":
                lights.append(el.get("id", ""))
            if el.tag in ("edge", "junction", "tlLogic", "connection"):
                el.clear()  # a city's network: keep no element once it is counted
    except ET.ParseError as e:
        raise ScenarioError([f"{net}:{e.position[0]}: not well-formed XML: {e} (expected a SUMO network, .net.xml)"]) from None
    if not edges:
        raise ScenarioError([f"{net}: no edges (expected a SUMO network with roads)"])
    return NetSummary(location, frozenset(edges), junctions, tuple(dict.fromkeys(lights)))


#: attributes of route-file elements that name edges (SUMO's routes, trips and flows)
_EDGE_ATTRS = {"edges": True, "from": False, "to": False, "via": True}


def check_routes(routes: list[Path], edges: frozenset[str], net: Path) -> list[str]:
    """Problems with route files against a network's edges, each `FILE:LINE: ...` (none: they fit)."""
    problems = []
    for path in routes:
        parser = expat.ParserCreate()

        def start(tag: str, attrs: dict[str, str], path: Path = path, parser: expat.XMLParserType = parser) -> None:
            if tag not in ("route", "trip", "flow", "vehicle"):
                return
            for attr, many in _EDGE_ATTRS.items():
                for edge in (attrs.get(attr, "").split() if many else [attrs.get(attr, "")]):
                    if edge and edge not in edges:
                        problems.append(f'{path}:{parser.CurrentLineNumber}: <{tag}> {attr}: edge "{edge}" is not in {net.name} '
                                        f"(expected an edge of the network)")

        parser.StartElementHandler = start
        try:
            with path.open("rb") as f:
                parser.ParseFile(f)
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror or e} (expected a SUMO route file, .rou.xml)")
        except expat.ExpatError as e:
            problems.append(f"{path}:{e.lineno}: not well-formed XML: {expat.errors.messages[e.code]} (expected a SUMO route file)")
    return problems


def check_junctions(junctions: list[str], summary: NetSummary, net: Path) -> list[str]:
    """Problems with the junctions a scenario asks RSUs for, against the network's traffic lights (none: they fit)."""
    if junctions and not summary.traffic_lights:
        return [f"{net}: the network has no traffic lights, and the scenario asks for RSUs at {', '.join(junctions)} "
                f"(expected a network with signalised junctions, or no [[sumo.junctions]])"]
    return [f'{net}: no traffic light "{j}" (expected one of {", ".join(summary.traffic_lights)})'
            for j in junctions if j not in summary.traffic_lights]


def check_scenario_files(net: Path, routes: list[Path], junctions: list[str] | None = None) -> NetSummary:
    """A SUMO scenario's network, routes and RSU junctions, read and checked before SUMO runs; ScenarioError listing
    every problem."""
    summary = read_network(net)
    problems = check_junctions(junctions or [], summary, net) + check_routes(routes, summary.edges, net)
    if problems:
        raise ScenarioError(problems)
    return summary


@dataclass(frozen=True)
class TlsLink:
    """One link a traffic light controls (a SUMO connection with a `linkIndex`): MAP's movement, SPaT's signal group."""

    index: int  # linkIndex: the position of its state in the program's state strings
    from_lane: str  # "<edge>_<lane>"
    to_lane: str
    direction: str  # SUMO's dir: s (straight), l, r, L, R (partly), t (turn around)


@dataclass(frozen=True)
class TlsPhase:
    duration_s: float
    state: str  # one character per link index: G, g, y, r, u, o, O, s
    min_dur_s: float | None = None  # actuated programs
    max_dur_s: float | None = None


@dataclass(frozen=True)
class TrafficLight:
    """A traffic light of the network: the junction(s) it controls, its links and its program."""

    id: str
    xy: tuple[float, float]  # [m] the centre of its junctions, in the network's coordinates
    kind: str  # SUMO's tlLogic type: static, actuated, ...
    offset_s: float
    phases: tuple[TlsPhase, ...]
    links: tuple[TlsLink, ...]


def read_traffic_lights(net: Path) -> list[TrafficLight]:
    """Every traffic light of a network with its program (the first one listed for it) and links."""
    programs: dict[str, tuple[str, float, list[TlsPhase]]] = {}
    links: dict[str, list[TlsLink]] = {}
    edge_to: dict[str, str] = {}  # edge -> the junction it ends at
    junction_xy: dict[str, tuple[float, float]] = {}
    current: list[TlsPhase] | None = None
    try:
        for event, el in ET.iterparse(net, events=("start", "end")):
            if event == "start":
                if el.tag == "tlLogic" and el.get("id", "") not in programs:
                    current = []
                    programs[el.get("id", "")] = (el.get("type", "static"), float(el.get("offset", "0")), current)
                continue
            if el.tag == "phase" and current is not None:
                opt = {k: float(v) for k in ("minDur", "maxDur") if (v := el.get(k)) is not None}
                current.append(TlsPhase(float(el.get("duration", "0")), el.get("state", ""), opt.get("minDur"), opt.get("maxDur")))
            elif el.tag == "tlLogic":
                current = None
            elif el.tag == "edge" and el.get("function") != "internal":
                edge_to[el.get("id", "")] = el.get("to", "")
            elif el.tag == "junction":
                junction_xy[el.get("id", "")] = (float(el.get("x", "0")), float(el.get("y", "0")))
            elif el.tag == "connection" and el.get("tl") is not None:
                links.setdefault(el.get("tl", ""), []).append(TlsLink(
                    int(el.get("linkIndex", "-1")), f"{el.get('from')}_{el.get('fromLane')}", f"{el.get('to')}_{el.get('toLane')}",
                    el.get("dir", "s"),
                ))
            if el.tag in ("edge", "junction", "connection", "tlLogic"):
                el.clear()
    except ET.ParseError as e:
        raise ScenarioError([f"{net}:{e.position[0]}: not well-formed XML: {e} (expected a SUMO network, .net.xml)"]) from None
    out = []
    for tls, (kind, offset, phases) in programs.items():
        own = sorted(links.get(tls, []), key=lambda lk: lk.index)
        ends = sorted({edge_to[lk.from_lane.rsplit("_", 1)[0]] for lk in own if lk.from_lane.rsplit("_", 1)[0] in edge_to})
        pts = [junction_xy[j] for j in ends if j in junction_xy] or [(0.0, 0.0)]
        xy = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
        out.append(TrafficLight(tls, xy, kind, offset, tuple(phases), tuple(own)))
    return out


@dataclass(frozen=True)
class Lane:
    """A lane of the network: its centre line and what MAP says of it."""

    id: str  # "<edge>_<index>"
    shape: tuple[tuple[float, float], ...]  # [m] the network's coordinates, in the direction of travel
    width_m: float
    speed_mps: float


DEFAULT_LANE_WIDTH_M = 3.2  # [m] SUMO's, for a lane that does not say


def read_lanes(net: Path, wanted: set[str] | None) -> dict[str, Lane]:
    """The lanes `wanted` (ids; None: every lane but the junctions' internal ones), with their shapes; ScenarioError
    naming the file when it cannot be read."""
    out: dict[str, Lane] = {}
    try:
        for _, el in ET.iterparse(net, events=("end",)):
            if el.tag == "lane" and (el.get("id", "") in wanted if wanted is not None else not el.get("id", ":").startswith(":")):
                pts = tuple((float(x), float(y)) for x, y in (p.split(",")[:2] for p in el.get("shape", "").split()))
                out[el.get("id", "")] = Lane(el.get("id", ""), pts, float(el.get("width", DEFAULT_LANE_WIDTH_M)), float(el.get("speed", "13.89")))
            elif el.tag in ("edge", "junction", "connection", "tlLogic"):
                el.clear()
    except ET.ParseError as e:
        raise ScenarioError([f"{net}:{e.position[0]}: not well-formed XML: {e} (expected a SUMO network, .net.xml)"]) from None
    except ValueError as e:
        raise ScenarioError([f"{net}: a lane shape that cannot be read: {e} (expected x,y pairs)"]) from None
    return out
