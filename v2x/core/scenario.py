"""Scenario files: typed, validated, round-trippable TOML.

A scenario is laid out in local metres (x east, y north) around a WGS-84 origin. See
`scenarios/four_way.toml` for an annotated example and docs/user-guide.md ("Scenarios") for the format.
`load(path)` returns a `Scenario` or raises `ScenarioError` whose lines read
`FILE:LINE: field.path: what is wrong (expected ...)`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Literal, get_args
from xml.etree import ElementTree

from v2x.core import schema
from v2x.core.errors import ScenarioError
from v2x.core.schema import Path, spec
from v2x.core.sensors import Sensor

Leg = Literal["north", "east", "south", "west"]
Turn = Literal["left", "through", "right"]
Policy = Literal["fixed", "actuated", "adaptive"]
VehicleKind = Literal["car", "truck", "bus", "emergency"]
HazardKindName = Literal["stalled_vehicle", "road_works", "accident", "obstacle"]
MobilityName = Literal["native", "sumo"]

LEGS: tuple[Leg, ...] = get_args(Leg)
TURNS: tuple[Turn, ...] = get_args(Turn)
#: Compass bearing [deg] from the junction centre out along each leg.
LEG_BEARING_DEG: dict[str, float] = {"north": 0.0, "east": 90.0, "south": 180.0, "west": 270.0}
DEFAULT_TURN_SHARES: dict[str, float] = {"left": 0.15, "through": 0.7, "right": 0.15}

_SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Origin:
    """The geographic point that local (0, 0) maps to."""

    lat_deg: float = spec(ge=-85.0, le=85.0)
    lon_deg: float = spec(ge=-180.0, le=180.0)
    elevation_m: float = spec(0.0, ge=-400.0, le=6000.0)


@dataclass(frozen=True)
class Approach:
    """One leg of an intersection: its inbound (approach) and outbound (exit) lanes."""

    leg: Leg
    lanes: int = spec(2, ge=1, le=6, doc="inbound lanes")
    exit_lanes: int | None = spec(None, ge=1, le=6, doc="outbound lanes; default: as many as inbound")
    lane_width_m: float = spec(3.5, ge=2.5, le=5.0)
    speed_limit_kmh: float = spec(50.0, ge=5.0, le=130.0)
    length_m: float = spec(250.0, ge=30.0, le=5000.0, doc="from the stop line to the network edge")
    turns: tuple[Turn, ...] = spec(("left", "through", "right"), min_len=1)
    lane_turns: tuple[tuple[Turn, ...], ...] | None = spec(
        None, doc="turns allowed per lane, from the median out; default derived from `turns`"
    )

    def check(self) -> Iterator[tuple[Path, str]]:
        if len(set(self.turns)) != len(self.turns):
            yield ("turns",), "lists a turn twice (expected each of left, through, right at most once)"
        if self.lane_turns is not None:
            if len(self.lane_turns) != self.lanes:
                yield ("lane_turns",), f"has {len(self.lane_turns)} entries (expected one per lane: {self.lanes})"
            for i, lt in enumerate(self.lane_turns):
                bad = sorted(set(lt) - set(self.turns))
                if bad or not lt:
                    yield ("lane_turns", i), f"allows {bad or 'nothing'} (expected a non-empty subset of turns {list(self.turns)})"
            covered = {t for lt in self.lane_turns for t in lt}
            missing = sorted(set(self.turns) - covered)
            if missing:
                yield ("lane_turns",), f"no lane serves {missing} (expected every allowed turn on some lane)"

    @property
    def n_exit_lanes(self) -> int:
        return self.lanes if self.exit_lanes is None else self.exit_lanes

    def turns_by_lane(self) -> tuple[tuple[Turn, ...], ...]:
        """Turns allowed from each inbound lane, median lane first."""
        if self.lane_turns is not None:
            return self.lane_turns
        if self.lanes == 1:
            return (self.turns,)
        left = tuple(t for t in ("left", "through") if t in self.turns) or self.turns
        right = tuple(t for t in ("through", "right") if t in self.turns) or self.turns
        middle = ("through",) if "through" in self.turns else self.turns
        return (left, *([middle] * (self.lanes - 2)), right)


@dataclass(frozen=True)
class Phase:
    """One signal phase: the movements ("leg.turn") that have green in it, and its times."""

    movements: tuple[str, ...] = spec(min_len=1)
    green_s: float = spec(ge=1.0, le=300.0, doc="fixed-time green, and the initial green when adaptive")
    yellow_s: float = spec(3.0, ge=2.0, le=8.0)
    all_red_s: float = spec(2.0, ge=0.0, le=10.0)
    min_green_s: float = spec(5.0, ge=1.0, le=120.0)
    max_green_s: float = spec(60.0, ge=1.0, le=300.0)

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.min_green_s > self.max_green_s:
            yield ("min_green_s",), f"{self.min_green_s:g} exceeds max_green_s {self.max_green_s:g} (expected min <= max)"
        elif not self.min_green_s <= self.green_s <= self.max_green_s:
            yield ("green_s",), f"{self.green_s:g} is outside min/max green (expected {self.min_green_s:g}..{self.max_green_s:g})"
        for i, mv in enumerate(self.movements):
            leg, _, turn = mv.partition(".")
            if leg not in LEGS or turn not in TURNS:
                yield ("movements", i), f'"{mv}" is not a movement (expected "leg.turn", e.g. "north.left")'

    @property
    def duration_s(self) -> float:
        return self.green_s + self.yellow_s + self.all_red_s


@dataclass(frozen=True)
class Signal:
    """The intersection's signal plan. Which controller runs it is `control.policy`."""

    phases: tuple[Phase, ...] = spec(min_len=2)
    offset_s: float = spec(0.0, ge=0.0, le=600.0, doc="start of phase 1 after sim time 0, for coordination")
    cycle_s: float | None = spec(None, ge=10.0, le=600.0, doc="if given, must equal the sum of phase times")
    passage_s: float = spec(3.0, ge=0.5, le=10.0, doc="actuated: gap that ends a green (gap-out)")

    def check(self) -> Iterator[tuple[Path, str]]:
        total = sum(p.duration_s for p in self.phases)
        if self.cycle_s is not None and abs(total - self.cycle_s) > 1e-6:
            yield ("cycle_s",), f"{self.cycle_s:g} differs from the phases' total {total:g} s (expected them equal)"


@dataclass(frozen=True)
class Intersection:
    id: str
    signal: Signal
    approaches: tuple[Approach, ...] = spec(min_len=2)
    x_m: float = spec(0.0, ge=-100_000.0, le=100_000.0)
    y_m: float = spec(0.0, ge=-100_000.0, le=100_000.0)

    def check(self) -> Iterator[tuple[Path, str]]:
        legs: dict[str, int] = {}
        for i, a in enumerate(self.approaches):
            if a.leg in legs:
                yield ("approaches", i, "leg"), f'"{a.leg}" repeats approaches[{legs[a.leg]}] (expected one approach per leg)'
            legs[a.leg] = i
        served: set[str] = set()
        for i, p in enumerate(self.signal.phases):
            for j, mv in enumerate(p.movements):
                leg, _, turn = mv.partition(".")
                if leg not in LEGS or turn not in TURNS:
                    continue  # reported by Phase.check
                ap = self.approach(leg)
                if ap is None:
                    yield ("signal", "phases", i, "movements", j), f'"{mv}": this intersection has no {leg} approach (expected one of {sorted(legs)})'
                elif turn not in ap.turns:
                    yield ("signal", "phases", i, "movements", j), f'"{mv}": the {leg} approach does not allow {turn} (expected one of {list(ap.turns)})'
                served.add(mv)
        for a in self.approaches:
            for t in a.turns:
                if f"{a.leg}.{t}" not in served:
                    yield ("signal", "phases"), f'no phase gives green to "{a.leg}.{t}" (expected every allowed movement in some phase)'

    def approach(self, leg: str) -> Approach | None:
        return next((a for a in self.approaches if a.leg == leg), None)


@dataclass(frozen=True)
class Road:
    """A road linking two intersections' legs (a corridor link); its length follows from their positions."""

    ends: tuple[str, ...] = spec(min_len=2, doc='two "INTERSECTION.leg" ends, e.g. ["J1.east", "J2.west"]')

    def check(self) -> Iterator[tuple[Path, str]]:
        if len(self.ends) != 2:
            yield ("ends",), f"has {len(self.ends)} entries (expected exactly 2)"


@dataclass(frozen=True)
class Rsu:
    id: str
    intersection: str
    range_m: float = spec(300.0, gt=0.0, le=2000.0, doc="sidelink radio range")
    dx_m: float = spec(0.0, ge=-500.0, le=500.0, doc="east offset from the intersection centre")
    dy_m: float = spec(0.0, ge=-500.0, le=500.0, doc="north offset from the intersection centre")


@dataclass(frozen=True)
class Demand:
    """Poisson arrivals entering at one approach."""

    intersection: str
    approach: Leg
    vph: float = spec(ge=0.0, le=3600.0, doc="vehicles per hour, all lanes")
    turns: dict[Turn, float] | None = spec(None, doc="turning shares; default 0.15/0.70/0.15 over the allowed turns")
    mix: dict[VehicleKind, float] = field(default_factory=lambda: {"car": 1.0})
    start_s: float = spec(0.0, ge=0.0)
    end_s: float = spec(math.inf, ge=0.0)

    def check(self) -> Iterator[tuple[Path, str]]:
        for name, shares in (("turns", self.turns), ("mix", self.mix)):
            if shares is None:
                continue
            for k, v in shares.items():
                if not 0.0 <= v <= 1.0:
                    yield (name, k), f"{v:g} is out of range (expected a share 0..1)"
            total = sum(shares.values())
            if abs(total - 1.0) > _SHARE_TOLERANCE:
                yield (name,), f"shares sum to {total:g} (expected 1)"
        if self.end_s <= self.start_s:
            yield ("end_s",), f"{self.end_s:g} is not after start_s {self.start_s:g} (expected end_s > start_s)"

    def turn_shares(self, allowed: tuple[str, ...]) -> dict[str, float]:
        if self.turns is not None:
            return {str(k): v for k, v in self.turns.items()}
        raw = {t: DEFAULT_TURN_SHARES[t] for t in allowed}
        total = sum(raw.values())
        return {t: v / total for t, v in raw.items()}


@dataclass(frozen=True)
class ScheduledVehicle:
    """One vehicle entering at a set time (an emergency run, a probe car)."""

    kind: VehicleKind
    intersection: str
    approach: Leg
    turn: Turn = "through"
    depart_s: float = spec(0.0, ge=0.0)
    lane: int = spec(0, ge=0, le=5, doc="inbound lane, 0 = the median lane")
    priority: bool = spec(True, doc="request signal priority (emergency vehicles)")


@dataclass(frozen=True)
class HazardEvent:
    """A scheduled hazard on an approach lane."""

    kind: HazardKindName
    intersection: str
    approach: Leg
    lane: int = spec(0, ge=0, le=5, doc="0 = the median lane")
    distance_m: float = spec(100.0, ge=0.0, le=5000.0, doc="upstream of the stop line")
    start_s: float = spec(0.0, ge=0.0)
    duration_s: float = spec(math.inf, gt=0.0)
    reported: bool = spec(True, doc="the cloud learns of it (a report from police, road works); false: only if it detects it from BSMs")


AttackKind = Literal["constant_position", "constant_offset", "random_position", "random_offset", "eventual_stop", "sybil"]


@dataclass(frozen=True)
class Attack:
    """Misbehaving OBUs (the VeReMi attack types, and a Sybil ghost): a share of the vehicles lie in their BSMs."""

    kind: AttackKind
    share: float = spec(0.1, ge=0.0, le=1.0, doc="share of the vehicles that attack (chosen with the seed)")
    start_s: float = spec(0.0, ge=0.0, doc="sim time the attackers begin to lie")
    offset_m: float = spec(250.0, ge=1.0, le=5000.0, doc="constant_offset: the offset east (and 0.6x south); random kinds: the largest offset")


@dataclass(frozen=True)
class Sidelink:
    """PC5: vehicle<->RSU and vehicle<->vehicle radio."""

    latency_ms: float = spec(0.0, ge=0.0, le=10_000.0, doc="one-way latency")
    jitter_ms: float = spec(0.0, ge=0.0, le=10_000.0, doc="latency varies uniformly by up to this, either way")
    loss: float = spec(0.0, ge=0.0, le=1.0, doc="loss probability close to the sender")
    edge_loss: float = spec(0.0, ge=0.0, le=1.0, doc="loss probability at range_m; it rises with distance squared in between")
    range_m: float = spec(300.0, gt=0.0, le=5000.0, doc="nothing is received beyond this")


@dataclass(frozen=True)
class Cellular:
    """Uu: anything <-> the cloud."""

    latency_ms: float = spec(0.0, ge=0.0, le=60_000.0, doc="typical (median) one-way latency")
    p99_ms: float | None = spec(None, ge=0.0, le=60_000.0, doc="99th percentile; with it latency is lognormal")
    jitter_ms: float = spec(0.0, ge=0.0, le=10_000.0, doc="latency varies uniformly by up to this, either way")
    loss: float = spec(0.0, ge=0.0, le=1.0)

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.p99_ms is not None and self.p99_ms < self.latency_ms:
            yield ("p99_ms",), f"{self.p99_ms:g} is below latency_ms {self.latency_ms:g} (expected p99 >= the median)"


@dataclass(frozen=True)
class Links:
    sidelink: Sidelink = field(default_factory=Sidelink)
    cellular: Cellular = field(default_factory=Cellular)


@dataclass(frozen=True)
class Driver:
    """Intelligent Driver Model parameters (Treiber & Kesting, urban defaults)."""

    time_headway_s: float = spec(1.0, ge=0.5, le=3.0)
    min_gap_m: float = spec(2.0, ge=0.5, le=10.0)
    max_accel_mps2: float = spec(1.5, ge=0.3, le=4.0)
    comfort_decel_mps2: float = spec(2.0, ge=0.5, le=5.0)
    delta: float = spec(4.0, ge=1.0, le=8.0)


GnssClass = Literal["off", "standard", "rtk"]


@dataclass(frozen=True)
class Receiver:
    """One GNSS receiver class's horizontal error, per axis (east, north): a slowly varying bias (first-order
    Gauss-Markov) plus white noise on each fix. Defaults and their sources: docs/faults-security.md ("GNSS error")."""

    sigma_m: float = spec(ge=0.0, le=100.0, doc="standard deviation of the bias, per axis")
    tau_s: float = spec(gt=0.0, le=86_400.0, doc="correlation time of the bias")
    noise_m: float = spec(ge=0.0, le=100.0, doc="standard deviation of the noise on each fix, per axis")


@dataclass(frozen=True)
class Gnss:
    """Where the OBUs think they are: GNSS error by receiver class (off: every OBU knows its position exactly)."""

    receiver: GnssClass = spec("off", doc='the OBUs\' receiver class: "off" (exact positions), "standard" or "rtk"')
    rtk_share: float = spec(0.0, ge=0.0, le=1.0, doc="share of the OBUs with an RTK receiver instead (drawn from the seed)")
    # single-frequency code receiver, open sky: about 2.5 m CEP (2.1 m per axis)
    standard: Receiver = field(default_factory=lambda: Receiver(sigma_m=2.0, tau_s=300.0, noise_m=0.3))
    # RTK fixed: about 1 cm + 1 ppm CEP
    rtk: Receiver = field(default_factory=lambda: Receiver(sigma_m=0.015, tau_s=60.0, noise_m=0.01))

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.receiver == "off" and self.rtk_share > 0:
            yield ("rtk_share",), f'{self.rtk_share:g} with receiver = "off" (expected a receiver class, or no rtk_share)'


@dataclass(frozen=True)
class Fleet:
    bsm_hz: float = spec(10.0, ge=1.0, le=50.0)
    spat_stale_s: float = spec(1.0, gt=0.0, le=30.0, doc="SPaT older than this counts as unknown (and arrives expired)")
    spat_countdown: bool = spec(
        True, doc="OBUs follow SPaT's countdown (likely end) between messages; false: they act on the last state heard"
    )
    glosa: bool = spec(False, doc="OBUs run GLOSA: approaching a red, they slow to arrive as it turns green")
    reaction_s: float = spec(
        1.0, ge=0.0, le=5.0, doc="perception-reaction time (ITE: 1 s) to a signal change heard without the countdown, or seen on the head (unequipped)"
    )
    gnss: Gnss = field(default_factory=Gnss)
    penetration: float = spec(
        1.0, ge=0.0, le=1.0, doc="the share of vehicles with an OBU (drawn per vehicle from the seed); the others drive on the signal heads"
    )
    # per vehicle kind, instead of `penetration` (not hashed: a SUMO scenario, which has no dict elsewhere, is a cache key)
    penetration_by_class: dict[VehicleKind, float] = field(default_factory=dict, hash=False)

    def check(self) -> Iterator[tuple[Path, str]]:
        for kind, share in self.penetration_by_class.items():
            if not 0.0 <= share <= 1.0:
                yield ("penetration_by_class", kind), f"{share:g} is out of range (expected a share 0..1)"


@dataclass(frozen=True)
class Trust:
    """What every receiver holds a message to before it acts on it or measures it (v2x.core.trust)."""

    clock_skew_s: float = spec(
        0.5, ge=0.0, le=10.0,
        doc="a message generated (or a SPaT timed) more than this ahead of the receiver's clock is refused as from the future",
    )


@dataclass(frozen=True)
class Control:
    policy: Policy = "fixed"
    priority: bool = spec(True, doc="RSUs grant signal priority (early or extended green) to emergency vehicles that request it")


@dataclass(frozen=True)
class SumoJunction:
    """A signalised junction of a SUMO network that has an RSU: what every tier knows of it without reading the
    network (`v2x import-sumo` writes one per traffic light). Only the RSU (MAP, the plan) and the fleet (the
    lights) read the network itself."""

    id: str = spec(doc="the traffic light's id (tlLogic): the intersection's name in MAP, SPaT and topics")
    x_m: float = spec(doc="east of the origin: the junction's centre, from the network's projection")
    y_m: float = spec(doc="north of the origin")
    range_m: float = spec(300.0, gt=0.0, le=2000.0, doc="the RSU's sidelink radio range")


@dataclass(frozen=True)
class SumoHazard:
    """A scheduled hazard on a lane of a SUMO edge: the cloud announces it (RSI), as it does a reported hazard of
    `events` on our junctions. SUMO's road is not blocked: the warned vehicles slow down and change lane."""

    kind: HazardKindName
    edge: str = spec(doc="the SUMO edge it is on (an edge id of the network)")
    lane: int = spec(0, ge=0, le=15, doc="the lane's index on the edge, SUMO's: 0 = the rightmost")
    distance_m: float = spec(50.0, ge=0.0, le=5000.0, doc="upstream of the edge's end")
    start_s: float = spec(0.0, ge=0.0)
    duration_s: float = spec(math.inf, gt=0.0)


@dataclass(frozen=True)
class Sumo:
    """A SUMO network and its demand, for `mobility = "sumo"` (docs/sumo.md). Paths are relative to the scenario file."""

    net: str = spec(doc="the network, a .net.xml file")
    routes: tuple[str, ...] = spec((), doc="SUMO route files: routes, trips or flows")
    junctions: tuple[SumoJunction, ...] = spec((), doc="the signalised junctions with an RSU (none: no RSUs)")
    hazards: tuple[SumoHazard, ...] = spec((), doc="hazards on the network's edges, announced by the cloud")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    origin: Origin
    intersections: tuple[Intersection, ...] = spec((), doc="schematic junctions (mobility = \"native\")")
    mobility: MobilityName = spec("native", doc='what moves the vehicles: "native" (the numba core) or "sumo" (libsumo)')
    sumo: Sumo | None = None
    duration_s: float = spec(3600.0, gt=0.0, le=7 * 86400.0)
    seed: int = spec(1, ge=0, le=2**63 - 1)
    step_s: float = spec(0.1, ge=0.01, le=1.0)
    roads: tuple[Road, ...] = ()
    rsus: tuple[Rsu, ...] = ()
    demand: tuple[Demand, ...] = ()
    vehicles: tuple[ScheduledVehicle, ...] = ()
    events: tuple[HazardEvent, ...] = ()
    attacks: tuple[Attack, ...] = ()
    sensors: tuple[Sensor, ...] = spec((), doc="roadside sensors, each on an RSU (v2x.core.sensors, docs/perception.md)")
    links: Links = field(default_factory=Links)
    driver: Driver = field(default_factory=Driver)
    fleet: Fleet = field(default_factory=Fleet)
    control: Control = field(default_factory=Control)
    trust: Trust = field(default_factory=Trust)

    def intersection(self, iid: str) -> Intersection | None:
        return next((i for i in self.intersections if i.id == iid), None)

    @property
    def sites(self) -> tuple[str, ...]:
        """The ids of the intersections that have an RSU, in wire order (MAP's intersection id is the index + 1):
        the schematic intersections, or a SUMO scenario's signalised junctions."""
        if self.mobility == "sumo" and self.sumo is not None:
            return tuple(j.id for j in self.sumo.junctions)
        return tuple(x.id for x in self.intersections)

    def rsu_of(self, index: int) -> Rsu:
        """The RSU of the `index`-th intersection (of `sites`): the one listed, else a default one at its centre."""
        if self.mobility == "sumo" and self.sumo is not None:
            j = self.sumo.junctions[index]
            return Rsu(f"rsu-{j.id}", j.id, j.range_m)
        iid = self.intersections[index].id
        return next((r for r in self.rsus if r.intersection == iid), Rsu(f"rsu-{iid}", iid))


# ---------------------------------------------------------------------------
# Checks across tables
# ---------------------------------------------------------------------------


def _references(s: Scenario) -> Iterator[tuple[Path, str]]:
    if s.mobility == "sumo":
        yield from _sumo_references(s)
    elif not s.intersections:
        yield ("intersections",), "has 0 entries (expected at least 1)"
    if s.sumo is not None and s.mobility != "sumo":
        yield ("sumo",), 'is given but mobility is "native" (expected mobility = "sumo" with a [sumo] table)'
    ids = [i.id for i in s.intersections]
    seen: dict[str, int] = {}
    for n, iid in enumerate(ids):
        if iid in seen:
            yield ("intersections", n, "id"), f'"{iid}" repeats intersections[{seen[iid]}] (expected unique ids)'
        seen.setdefault(iid, n)

    linked: dict[tuple[str, str], int] = {}
    for n, road in enumerate(s.roads):
        if len(road.ends) != 2:
            continue
        legs = []
        for k, end in enumerate(road.ends):
            iid, _, leg = end.rpartition(".")
            path: Path = ("roads", n, "ends", k)
            inter = s.intersection(iid)
            if inter is None:
                yield path, f'"{end}": no intersection "{iid}" (expected "INTERSECTION.leg" with one of {ids})'
            elif inter.approach(leg) is None:
                yield path, f'"{end}": {iid} has no {leg} approach (expected one of {[a.leg for a in inter.approaches]})'
            elif (iid, leg) in linked:
                yield path, f'"{end}" is already linked by roads[{linked[(iid, leg)]}] (expected each leg in one road)'
            else:
                linked[(iid, leg)] = n
                legs.append((inter, leg))
        if len(legs) == 2:
            (ia, la), (ib, lb) = legs
            dx, dy = ib.x_m - ia.x_m, ib.y_m - ia.y_m
            if math.hypot(dx, dy) < 1.0:
                yield ("roads", n, "ends"), f"{ia.id} and {ib.id} are at the same place (expected distinct positions)"
                continue
            bearing = math.degrees(math.atan2(dx, dy)) % 360.0
            if _angle_diff(bearing, LEG_BEARING_DEG[la]) > 10 or _angle_diff(bearing + 180.0, LEG_BEARING_DEG[lb]) > 10:
                yield ("roads", n, "ends"), (
                    f"{ia.id}.{la} and {ib.id}.{lb} do not face each other: {ib.id} lies at bearing {bearing:.0f} deg "
                    f"from {ia.id} (expected the {la} leg of {ia.id} to point at {ib.id})"
                )

    rsu_ids: dict[str, int] = {}
    for n, rsu in enumerate(s.rsus):
        if rsu.id in rsu_ids:
            yield ("rsus", n, "id"), f'"{rsu.id}" repeats rsus[{rsu_ids[rsu.id]}] (expected unique ids)'
        rsu_ids.setdefault(rsu.id, n)
        if s.intersection(rsu.intersection) is None:
            yield ("rsus", n, "intersection"), f'"{rsu.intersection}" is not an intersection of this scenario (expected one of {ids})'

    yield from _sensor_references(s)

    def place(table: str, n: int, iid: str, leg: str) -> tuple[Intersection, Approach] | list[tuple[Path, str]]:
        """The intersection and approach a table entry names, or the problem with them."""
        inter = s.intersection(iid)
        if inter is None:
            return [((table, n, "intersection"), f'"{iid}" is not an intersection of this scenario (expected one of {ids})')]
        a = inter.approach(leg)
        if a is None:
            return [((table, n, "approach"), f"{iid} has no {leg} approach (expected one of {[x.leg for x in inter.approaches]})")]
        if table != "events" and (iid, leg) in linked:
            return [((table, n, "approach"), f"{iid}.{leg} is fed by roads[{linked[(iid, leg)]}] (expected an approach at the network edge)")]
        return inter, a

    for n, d in enumerate(s.demand):
        found = place("demand", n, d.intersection, d.approach)
        if isinstance(found, list):
            yield from found
            continue
        inter, a = found
        for t in d.turns or {}:
            if t not in a.turns:
                yield ("demand", n, "turns", t), f"{inter.id}.{a.leg} does not allow {t} (expected one of {list(a.turns)})"
    for n, v in enumerate(s.vehicles):
        found = place("vehicles", n, v.intersection, v.approach)
        if isinstance(found, list):
            yield from found
            continue
        inter, a = found
        if v.turn not in a.turns:
            yield ("vehicles", n, "turn"), f"{inter.id}.{a.leg} does not allow {v.turn} (expected one of {list(a.turns)})"
        elif v.lane >= a.lanes or v.turn not in a.turns_by_lane()[v.lane]:
            yield ("vehicles", n, "lane"), f"lane {v.lane} of {inter.id}.{a.leg} does not serve {v.turn} (expected a lane that does)"
    for n, ev in enumerate(s.events):
        found = place("events", n, ev.intersection, ev.approach)
        if isinstance(found, list):
            yield from found
            continue
        inter, a = found
        if ev.lane >= a.lanes:
            yield ("events", n, "lane"), f"{ev.lane} is out of range (expected 0..{a.lanes - 1} for {inter.id}.{a.leg})"
        if ev.distance_m >= a.length_m:
            yield ("events", n, "distance_m"), f"{ev.distance_m:g} is beyond the approach (expected < {a.length_m:g})"

    bsm_period = 1.0 / s.fleet.bsm_hz
    if abs(round(bsm_period / s.step_s) * s.step_s - bsm_period) > 1e-9:
        yield ("fleet", "bsm_hz"), f"a BSM every {bsm_period:g} s is not a whole number of {s.step_s:g} s steps (expected 1/bsm_hz to be a multiple of step_s)"


def _sensor_references(s: Scenario) -> Iterator[tuple[Path, str]]:
    """Each sensor is on an RSU of the scenario, and watches legs its intersection has."""
    if s.sensors and s.mobility == "sumo":
        yield ("sensors",), 'are given with mobility = "sumo" (expected none: roadside sensors run on the native core only, for now)'
        return
    rsus = {s.rsu_of(i).id: i for i in range(len(s.sites))}
    for n, sensor in enumerate(s.sensors):
        i = rsus.get(sensor.rsu)
        if i is None:
            yield ("sensors", n, "rsu"), f'"{sensor.rsu}" is not an RSU of this scenario (expected one of {sorted(rsus)})'
        elif sensor.approaches:
            legs = [a.leg for a in s.intersections[i].approaches]
            for k, leg in enumerate(sensor.approaches):
                if leg not in legs:
                    yield ("sensors", n, "approaches", k), f'{s.sites[i]} has no {leg} approach (expected one of {legs})'


def _sumo_references(s: Scenario) -> Iterator[tuple[Path, str]]:
    if s.sumo is None:
        yield ("mobility",), 'is "sumo" but there is no [sumo] table (expected [sumo] with net = "FILE.net.xml")'
    for table in ("intersections", "roads", "rsus", "demand", "vehicles", "events"):
        if getattr(s, table):
            yield (table,), 'is given with mobility = "sumo" (expected none: the junctions, roads and demand are the SUMO network\'s)'
    seen: set[str] = set()
    for i, j in enumerate(s.sumo.junctions if s.sumo is not None else ()):
        if j.id in seen:
            yield ("sumo", "junctions", i, "id"), f'"{j.id}" is listed twice (expected one RSU per junction)'
        if not j.id or any(c in j.id for c in "/+#"):
            yield ("sumo", "junctions", i, "id"), f'"{j.id}" cannot be a topic level (expected no "/", "+" or "#")'
        seen.add(j.id)


def _sumo_files(s: Scenario, base: FsPath) -> Iterator[tuple[Path, str]]:
    """A SUMO scenario's files exist (relative to the scenario file's folder `base`)."""
    if s.sumo is None or s.mobility != "sumo":
        return
    for path, name, expected in [(("sumo", "net"), s.sumo.net, "a SUMO network (.net.xml)")] + [
        (("sumo", "routes", i), r, "a SUMO route file (.rou.xml)") for i, r in enumerate(s.sumo.routes)
    ]:
        if not (base / name).is_file():
            yield path, f'"{name}": no such file in {base} (expected {expected})'
    if s.sumo.hazards and (base / s.sumo.net).is_file():
        edges = _sumo_edges(base / s.sumo.net)
        for i, hz in enumerate(s.sumo.hazards):
            lanes = edges.get(hz.edge)
            if lanes is None:
                yield ("sumo", "hazards", i, "edge"), f'"{hz.edge}" is not an edge of {s.sumo.net} (expected a non-internal edge id)'
            elif hz.lane >= len(lanes):
                yield ("sumo", "hazards", i, "lane"), f"{hz.lane} is out of range (expected 0..{len(lanes) - 1} for edge {hz.edge})"
            elif hz.distance_m >= lanes[hz.lane]:
                yield ("sumo", "hazards", i, "distance_m"), (
                    f"{hz.distance_m:g} is beyond lane {hz.lane} of edge {hz.edge} (expected < its length, {lanes[hz.lane]:g})")


def _sumo_edges(net: FsPath) -> dict[str, list[float]]:
    """A SUMO network's edges (not its internal ones): each lane's length [m], by index; {} when it cannot be read
    (the network is checked, with its own errors, before any tier starts: v2x.sumo.netfile)."""
    out: dict[str, list[float]] = {}
    try:
        for _, el in ElementTree.iterparse(net, events=("end",)):
            if el.tag == "edge":
                if el.get("function", "normal") != "internal":
                    out[el.get("id", "")] = [float(ln.get("length", "0")) for ln in el.iter("lane")]
                el.clear()
    except (ElementTree.ParseError, ValueError):
        return {}
    return out


def _resolved(s: Scenario, base: FsPath) -> Scenario:
    """The scenario with its SUMO files' paths made absolute, so that a copy written elsewhere (a real-time run's
    tiers read one from a temporary file) names the same files."""
    if s.sumo is None:
        return s
    absolute = dataclasses.replace(
        s.sumo, net=str((base / s.sumo.net).resolve()), routes=tuple(str((base / r).resolve()) for r in s.sumo.routes),
    )
    return dataclasses.replace(s, sumo=absolute)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------


def parse(text: str, filename: str = "<scenario>", base: FsPath | None = None) -> Scenario:
    """Validate scenario TOML text. `base`: the folder its relative paths (a SUMO network) start from; with it,
    those files must exist, and the scenario names them by absolute paths."""
    if base is None:
        return schema.read(Scenario, text, filename, _references)
    s = schema.read(Scenario, text, filename, lambda s: [*_references(s), *_sumo_files(s, base)])
    return _resolved(s, base)


def load(path: str | FsPath) -> Scenario:
    """Read and validate a scenario file."""
    p = FsPath(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        near = near_names(p) if isinstance(e, FileNotFoundError) else []
        hint = f"; did you mean {' or '.join(repr(x) for x in near)}?" if near else ""
        raise ScenarioError([f"{p}:1: (file): cannot read: {e.strerror or e} (expected a readable TOML file, or the name of a "
                             f"bundled scenario: {', '.join(f.stem for f in bundled())}){hint}"]) from None
    except UnicodeDecodeError as e:
        raise ScenarioError([f"{p}:1: (file): not UTF-8 text: {e.reason} (expected a UTF-8 TOML file)"]) from None
    return parse(text, str(p), p.parent)


def near_names(p: FsPath) -> list[str]:
    """Scenarios named like `p`, a file or name that does not exist: bundled names, and TOML files in its folder."""
    if p.parent == FsPath(".") and p.suffix != ".toml":  # a bare name: a bundled scenario's, or a file here
        candidates = {f.stem: f.stem for f in bundled()} | {f.stem: f.name for f in FsPath(".").glob("*.toml")}
    else:
        candidates = {f.stem: f.stem for f in bundled()}
        candidates |= {f.stem: str(f) for f in p.parent.glob("*.toml")} if p.parent.is_dir() else {}
    return [candidates[n] for n in difflib.get_close_matches(p.stem, candidates, n=2, cutoff=0.6)]


def dumps(s: Scenario) -> str:
    """Scenario -> TOML text that `parse` reads back into an equal Scenario."""
    return schema.dump(s)


def override(s: Scenario, settings: Iterable[str]) -> Scenario:
    """The scenario with `key.path=value` settings applied (`--set links.cellular.latency_ms=100`).

    Keys are TOML paths (a number picks an array element: `intersections.0.signal.cycle_s`);
    values are TOML values (a bare word is a string). The result is validated as a file is.
    Setting the cellular mean latency alone scales its p99 with it: the distribution keeps its shape.
    """
    data = tomllib.loads(dumps(s))
    settings = list(settings)
    keys = {x.partition("=")[0].strip() for x in settings}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key.strip():
            raise ScenarioError([f"--set {setting}: expected KEY=VALUE (e.g. links.cellular.latency_ms=100)"])
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else (
                node.setdefault(part, {}) if isinstance(node, dict) else None
            )
            if not isinstance(nxt, (dict, list)):
                raise ScenarioError([f"--set {setting}: {'.'.join(parts[: i + 1])} is not a table (expected a path to a setting)"])
            node = nxt
        if isinstance(node, list):
            raise ScenarioError([f"--set {setting}: {key} names an array, not a setting"])
        node[parts[-1]] = value
    cell = s.links.cellular
    if "links.cellular.latency_ms" in keys and "links.cellular.p99_ms" not in keys and cell.p99_ms is not None and cell.latency_ms > 0:
        new = data["links"]["cellular"]["latency_ms"]
        if isinstance(new, (int, float)):
            data["links"]["cellular"]["p99_ms"] = cell.p99_ms * float(new) / cell.latency_ms
    return schema.read_data(Scenario, data, lambda p: "--set", _references)


def bundled_dir() -> FsPath:
    """The folder of scenarios shipped with the package (or the repository's `scenarios/`)."""
    package = FsPath(__file__).resolve().parents[1]  # v2x/
    packaged = package / "_scenarios"
    return packaged if packaged.is_dir() else package.parent / "scenarios"


def bundled() -> list[FsPath]:
    """The bundled scenario files, sorted by name."""
    return sorted(bundled_dir().glob("*.toml"))


def resolve(arg: str) -> FsPath:
    """A scenario given as a path, or as the name of a bundled one ("four_way")."""
    p = FsPath(arg)
    if p.exists() or p.suffix == ".toml":
        return p
    named = bundled_dir() / f"{arg}.toml"
    return named if named.exists() else p


def tile(s: Scenario, copies: int, spacing_m: float | None = None) -> Scenario:
    """A district of `copies` independent copies of a scenario's site, on a square grid.

    Copy k (from 0) keeps copy 0's names with `-k` appended (J1 -> J1-3, RSU-J1 -> RSU-J1-3)
    and is shifted east and north by whole grid cells; the cells are `spacing_m` apart
    (default: the site's extent plus 200 m, so no approach of one copy reaches another's).
    Copies share no road: traffic, signals and RSUs of one copy never meet another's, which
    is what lets `v2x run --workers N` give each worker whole copies (sharding by area).
    Scheduled vehicles, hazards and attacks are copied with their site.
    """
    if copies < 1:
        raise ScenarioError([f"copies: {copies} (expected at least 1)"])
    if copies > 1 and s.mobility == "sumo":
        raise ScenarioError([f'copies: {s.name} runs on a SUMO network, which is not copied (expected 1, or mobility = "native")'])
    if copies == 1:
        return s
    if spacing_m is None:
        xs = [i.x_m for i in s.intersections]
        ys = [i.y_m for i in s.intersections]
        reach = max(a.length_m for i in s.intersections for a in i.approaches)
        spacing_m = max(max(xs) - min(xs), max(ys) - min(ys)) + 2 * reach + 200.0
    cols = math.ceil(math.sqrt(copies))
    data = tomllib.loads(dumps(s))
    out: dict[str, list[Any]] = {k: [] for k in ("intersections", "roads", "rsus", "demand", "vehicles", "events", "sensors")}
    for k in range(copies):
        dx, dy = (k % cols) * spacing_m, (k // cols) * spacing_m

        def name(iid: str, k: int = k) -> str:
            return iid if k == 0 else f"{iid}-{k}"

        for ix in data.get("intersections", []):
            out["intersections"].append({**ix, "id": name(ix["id"]), "x_m": ix.get("x_m", 0.0) + dx, "y_m": ix.get("y_m", 0.0) + dy})
        for road in data.get("roads", []):
            out["roads"].append({**road, "ends": [name(iid) + "." + leg for iid, _, leg in (e.rpartition(".") for e in road["ends"])]})
        for rsu in data.get("rsus", []):
            out["rsus"].append({**rsu, "id": name(rsu["id"]), "intersection": name(rsu["intersection"])})
        for table in ("demand", "vehicles", "events"):
            out[table] += [{**row, "intersection": name(row["intersection"])} for row in data.get(table, [])]
        out["sensors"] += [{**row, "rsu": name(row["rsu"])} for row in data.get("sensors", [])]
    data.update({k: v for k, v in out.items() if v})
    data["name"] = f"{s.name}_x{copies}"
    data["description"] = f"{copies} copies of {s.name} on a {cols}-column grid {spacing_m:g} m apart: {s.description}"
    return schema.read_data(Scenario, data, lambda p: f"tile({s.name}, {copies})", _references)
