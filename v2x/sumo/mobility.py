"""SUMO stepped in process through libsumo: the fleet's mobility when a scenario says `mobility = "sumo"`.

libsumo is one simulation per process: a `SumoTraffic` owns it from construction to `close()`, and the fleet
process owns the `SumoTraffic`. The lights of the junctions with RSUs show what the RSUs' controllers show (the
controllers themselves in fast mode; in real time each RSU's own SPaT, `hear`, and deterministic copies of the
controllers until it comes: docs/sumo.md); SUMO's drivers see those lights. What the vehicles' applications make of what their OBUs received (GLOSA's advised speed, a hazard
warning's slowing down and lane change) reaches SUMO's drivers through TraCI: `advise`, `keep_off`.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

import libsumo
import numpy as np

from v2x.core.errors import ScenarioError
from v2x.core.geo import LocalFrame
from v2x.core.kernels import MOVING_MPS, STOPPED_MPS
from v2x.core.messages import ExteriorLight, LightState
from v2x.core.mobility import BoolArray, FloatArray, IntArray, VehicleStates
from v2x.core.scenario import Scenario
from v2x.core.signal.controller import SignalController
from v2x.core.traffic import KIND_INDEX, Stats
from v2x.sumo.netfile import Location, check_scenario_files
from v2x.sumo.signals import sumo_state
from v2x.sumo.site import sumo_sites

# bits of libsumo.vehicle.getSignals (SUMO's TraCI "VehicleSignals")
SIGNAL_BRAKELIGHT = 1 << 3
#: the other signal bits that are exterior lights, as BSMs carry them
LIGHT_OF_SIGNAL = {
    1 << 0: ExteriorLight.RIGHT_TURN_SIGNAL, 1 << 1: ExteriorLight.LEFT_TURN_SIGNAL, 1 << 2: ExteriorLight.HAZARD_SIGNAL,
    1 << 4: ExteriorLight.LOW_BEAM, 1 << 5: ExteriorLight.FOG, 1 << 6: ExteriorLight.HIGH_BEAM,
}
_VARS = (libsumo.constants.VAR_POSITION, libsumo.constants.VAR_SPEED, libsumo.constants.VAR_ANGLE,
         libsumo.constants.VAR_ACCELERATION, libsumo.constants.VAR_SIGNALS, libsumo.constants.VAR_TIMELOSS)
_LIGHT_BITS = sum(LIGHT_OF_SIGNAL)
#: SUMO vehicle classes -> our kinds (the rest are cars)
HEARD_FRESH_S = 1.0  # [s] a light follows its RSU's SPaT while the latest is this fresh (the RSU's SPaT expiry)
HEARD_KEPT = 100  # SPaT kept per light until its time comes: 10 s of a 10 Hz SPaT, far more than a fleet may lag
_KIND = {"truck": "truck", "trailer": "truck", "delivery": "truck", "bus": "bus", "coach": "bus", "emergency": "emergency"}


class SumoTraffic:
    """The vehicles of a SUMO network, each known by an id of ours (0, 1, ... in order of insertion)."""

    def __init__(self, sc: Scenario, seed: int | None = None) -> None:
        if sc.sumo is None:
            raise ValueError(f'{sc.name}: mobility = "sumo" needs a [sumo] table')
        self.location: Location = check_scenario_files(
            Path(sc.sumo.net), [Path(r) for r in sc.sumo.routes], list(sc.sites),
        ).location
        self._frame = LocalFrame(sc.origin.lat_deg, sc.origin.lon_deg, sc.origin.elevation_m)
        self._elevation_m = sc.origin.elevation_m
        args = [
            "sumo", "--net-file", sc.sumo.net, "--step-length", f"{sc.step_s:g}", "--seed", str(sc.seed if seed is None else seed),
            "--no-step-log", "true", "--no-warnings", "true", "--collision.action", "warn",
        ]
        if sc.sumo.routes:
            args += ["--route-files", ",".join(sc.sumo.routes)]
        try:
            libsumo.start(args)
        except libsumo.TraCIException as e:  # SUMO has printed why; say which files it was given
            files = ", ".join([sc.sumo.net, *sc.sumo.routes])
            raise ScenarioError([f"{sc.name}: SUMO cannot load {files}: {e} (expected a valid network and route files)"]) from None
        self._closed = False
        self.t = 0.0
        self.stats = Stats()
        self.crossings: list[tuple[float, int, int]] | None = None  # a list: log stop-line crossings (`line_crossings`)
        # stop-line crossings at RSU junctions, when `crossings` is a list: (sim time [s], vehicle, junction, signal group)
        self.line_crossings: list[tuple[float, int, str, int]] = []
        self.obstacles: dict[int, tuple[int, float, float]] = {}
        self._vid: dict[str, int] = {}  # SUMO's id -> ours, while present
        self._static: dict[str, tuple[float, float, int]] = {}  # SUMO's id -> (length [m], width [m], kind)
        # SUMO's id -> [stops so far, stopped now, time lost so far [s]]: stops by the core's rule (below STOPPED_MPS,
        # moving again above MOVING_MPS), delay as SUMO's timeLoss (time lost against the desired speed)
        self._trip: dict[str, list[Any]] = {}
        self._state: dict[str, dict[int, Any]] = {}  # the subscribed variables after the last step
        self._lights: dict[int, frozenset[ExteriorLight]] = {}  # signal bits -> the exterior lights they are
        self._ids = np.zeros(0, dtype=np.int64)
        self._kind = np.zeros(0, dtype=np.int64)
        # the lights of the scenario's RSU junctions, driven by a controller each (docs/sumo.md): the RSUs' own when
        # they run in this process (`follow`, fast mode), else copies made from the scenario, stepped here, which the
        # RSUs' SPaT heard overrides (`hear`, real time)
        sites = sumo_sites(sc)
        self._links = {site.id: len(site.light.phases[0].state) for site in sites}
        self.heads: dict[str, SignalController] = {site.id: SignalController(site.plan, 0.0) for site in sites}
        self._own_heads = True
        self._site = {site.id: site.index for site in sites}  # junction -> its index in the scenario's sites
        self._tls = [site.id for site in sites]  # and back
        self._shown: dict[str, str] = {}  # what each light was last told to show
        # real time (`hear`): junction -> the SPaT heard from its RSU and not yet shown, oldest first, as (its sim time
        # [s], state string); and the one shown now
        self._heard: dict[str, deque[tuple[float, str]]] = {}
        self._showing: dict[str, tuple[float, str]] = {}
        self.heard_dropped = 0  # SPaT heard and never shown: more than HEARD_KEPT waiting for their time
        self.on_copy_steps = 0  # steps x junctions a light ran on the copy after its SPaT went stale (`hear`)
        self._sid: dict[int, str] = {}  # ours -> SUMO's id, while present
        self._advised: dict[str, float] = {}  # SUMO's id -> the speed [m/s] it was told to drive at (GLOSA)
        self._ahead: tuple[float, tuple[IntArray, IntArray, FloatArray]] | None = None  # (t, signals_ahead()) of a step

    # -- the Mobility interface --------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self._vid)

    @property
    def ids(self) -> IntArray:
        return self._ids

    @property
    def kind(self) -> IntArray:
        return self._kind

    def signal_view(self) -> tuple[IntArray, FloatArray]:
        """No signal groups yet (RSUs from the network's traffic lights: #25 item 3): -1 for every vehicle."""
        return np.full(self.n, -1, dtype=np.int64), np.full(self.n, np.inf)

    def step(
        self, dt: float, believed: IntArray | None = None, truth: IntArray | None = None, warned: BoolArray | None = None,
        advice: FloatArray | None = None, make_way: BoolArray | None = None,
    ) -> None:
        """One SUMO step of `dt` (the scenario's step, SUMO's --step-length), its RSU junctions' lights showing what
        their controllers show at the step's start (`drive_lights`); SUMO's drivers see those lights. Each vehicle
        crossing an RSU junction's stop line in the step is counted a red-light entry when its link's light was red
        (`stats.red_light_entries`), and logged when `crossings` is a list."""
        before = (self._ids, self.signals_ahead()) if self._site else None
        self.drive_lights()
        libsumo.simulationStep()
        self.t += dt
        for sid in libsumo.simulation.getArrivedIDList():
            if (vid := self._vid.pop(sid, None)) is not None:
                del self._sid[vid]
                self._static.pop(sid)
                stops, _, lost_s = self._trip.pop(sid)
                self.stats.finished += 1
                self.stats.stops_sum += stops
                self.stats.delay_sum_s += lost_s
        for sid in libsumo.simulation.getDepartedIDList():
            self._vid[sid] = self.stats.spawned
            self._sid[self.stats.spawned] = sid
            self.stats.spawned += 1
            vclass = libsumo.vehicle.getVehicleClass(sid)
            self._static[sid] = (libsumo.vehicle.getLength(sid), libsumo.vehicle.getWidth(sid), KIND_INDEX[_KIND.get(vclass, "car")])
            libsumo.vehicle.subscribe(sid, _VARS)
            self._trip[sid] = [0, False, 0.0]
        self.stats.collisions += libsumo.simulation.getCollidingVehiclesNumber()
        self._state = libsumo.vehicle.getAllSubscriptionResults()
        c = libsumo.constants
        for sid, trip in self._trip.items():
            r = self._state.get(sid)
            if r is None:
                continue
            v = float(r[c.VAR_SPEED])
            stopped = v < MOVING_MPS if trip[1] else v < STOPPED_MPS
            trip[0] += stopped and not trip[1]
            trip[1], trip[2] = stopped, float(r[c.VAR_TIMELOSS])
        self._ids = np.fromiter(self._vid.values(), dtype=np.int64, count=len(self._vid))
        self._kind = np.fromiter((self._static[s][2] for s in self._vid), dtype=np.int64, count=len(self._vid))
        if before is not None:
            self._crossed(*before)

    def _crossed(self, ids: IntArray, ahead: tuple[IntArray, IntArray, FloatArray]) -> None:
        """Count and log the stop lines crossed in the step just made, from the lights ahead (`signals_ahead`) at its
        start (`ids`, `ahead`) and now: a vehicle crossed the one it had ahead when it has another light ahead now (or
        none), or is farther from the same one (its next pass). The light it crossed on is the one its link showed
        through the step."""
        site, _, dist = self.signals_ahead()
        now = {int(v): k for k, v in enumerate(self._ids)}
        for k in np.flatnonzero(ahead[0] >= 0):
            j = now.get(int(ids[k]))
            if j is None or (site[j] == ahead[0][k] and dist[j] <= ahead[2][k] + 1.0):
                continue  # left the network (not through a junction), or still approaching that light
            tls, g = self._tls[int(ahead[0][k])], int(ahead[1][k])
            self.stats.red_light_entries += self._shown.get(tls, "")[g - 1 : g] == "r"
            if self.crossings is not None:
                self.line_crossings.append((self.t, int(ids[k]), tls, g))

    def ahead(self) -> IntArray:
        """Each present vehicle's next RSU junction on its route (its index in the scenario's sites), -1 for none:
        the first traffic light ahead (SUMO's next TLS) when it is one with an RSU."""
        return self.signals_ahead()[0]

    def signals_ahead(self) -> tuple[IntArray, IntArray, FloatArray]:
        """Per present vehicle, the first traffic light ahead on its route when it has an RSU: the junction (its index
        in the scenario's sites, -1 for none), the signal group (MAP's: SUMO's link index + 1) and the distance to
        its stop line [m]. Read once per step."""
        if self._ahead is not None and self._ahead[0] == self.t:
            return self._ahead[1]
        site = np.full(self.n, -1, dtype=np.int64)
        group = np.zeros(self.n, dtype=np.int64)
        dist = np.full(self.n, np.inf)
        if self._site:
            for i, sid in enumerate(self._vid):
                nxt = libsumo.vehicle.getNextTLS(sid)  # (tls, link index, distance [m], state) per light ahead
                if nxt:
                    site[i] = self._site.get(nxt[0][0], -1)
                    group[i], dist[i] = nxt[0][1] + 1, nxt[0][2]
        self._ahead = (self.t, (site, group, dist))
        return site, group, dist

    def allowed_speed(self, vid: int) -> float:
        """[m/s] the speed limit for a present vehicle of ours where it is (its lane's, for its type)."""
        return float(libsumo.vehicle.getAllowedSpeed(self._sid[vid]))

    def road_at(self, lat_deg: float, lon_deg: float) -> tuple[str, float, int] | None:
        """(edge, position along it [m], lane index) of the lane nearest a WGS-84 point (the inverse of `to_geo`);
        None off the network. What a vehicle makes of a position it received, on its own map (SUMO's network)."""
        try:
            if self.location.georeferenced:
                edge, pos, lane = libsumo.simulation.convertRoad(lon_deg, lat_deg, True)
            else:
                edge, pos, lane = libsumo.simulation.convertRoad(*self._frame.to_local(lat_deg, lon_deg))
        except libsumo.TraCIException:
            return None
        return (str(edge), float(pos), int(lane)) if edge and not str(edge).startswith(":") else None

    def distance_to(self, vid: int, edge: str, pos_m: float) -> float | None:
        """[m] along a present vehicle's route to `pos_m` on `edge`; None if it is not ahead on its route (passed,
        or not on its way) or the vehicle is not present."""
        sid = self._sid.get(vid)
        if sid is None:
            return None
        d = float(libsumo.vehicle.getDrivingDistance(sid, edge, pos_m))
        return d if d >= 0.0 else None  # SUMO's INVALID_DOUBLE_VALUE, -2^30: not ahead

    def speed(self, vid: int) -> float:
        """[m/s] a present vehicle's speed after the last step."""
        return float(self._state[self._sid[vid]][libsumo.constants.VAR_SPEED])

    def present(self, vid: int) -> bool:
        return vid in self._sid

    def keep_off(self, vid: int, edge: str, lane: int, for_s: float) -> None:
        """Keep a present vehicle out of lane `lane` of `edge` while it is on that edge, for `for_s` [s] at a time:
        from that lane to the next one (towards the middle when it can), elsewhere staying where it is (TraCI's
        changeLane: SUMO's driver changes when the gap allows)."""
        sid = self._sid[vid]
        if libsumo.vehicle.getRoadID(sid) != edge:
            return
        lanes = int(libsumo.edge.getLaneNumber(edge))
        now = int(libsumo.vehicle.getLaneIndex(sid))
        if now != lane:
            libsumo.vehicle.changeLane(sid, now, for_s)
        elif lanes > 1:
            libsumo.vehicle.changeLane(sid, lane + 1 if lane + 1 < lanes else lane - 1, for_s)

    def advise(self, speeds: dict[int, float]) -> None:
        """Drive the vehicles of ours in `speeds` towards those speeds [m/s] (TraCI's setSpeed: SUMO's driver still
        keeps a safe gap and stops for the real light); the others advised before are given back to SUMO's driver."""
        for vid, v in speeds.items():
            sid = self._sid[vid]
            if abs(self._advised.get(sid, -1.0) - v) > 0.05:
                libsumo.vehicle.setSpeed(sid, v)
                self._advised[sid] = v
        for sid in [s for s in self._advised if self._vid.get(s) not in speeds]:
            if sid in self._vid:
                libsumo.vehicle.setSpeed(sid, -1.0)  # SUMO's own control again
            del self._advised[sid]

    # -- what the OBUs report ---------------------------------------------------------------

    def to_geo(self, x: float, y: float) -> tuple[float, float]:
        """(lat, lon) [deg] of a network position [m]: the network's own projection when it has one, else metres
        around the scenario's origin."""
        if self.location.georeferenced:
            lon, lat = libsumo.simulation.convertGeo(x, y)
            return lat, lon
        p = self._frame.to_geo(x, y)
        return p.lat_deg, p.lon_deg

    def states(self) -> VehicleStates:
        """Every present vehicle's state; the position is the body's centre, half a length behind SUMO's front bumper."""
        c = libsumo.constants
        cols: dict[str, list[float]] = {k: [] for k in ("lat", "lon", "v", "h", "a", "len", "w")}
        kinds: list[int] = []
        brake: list[bool] = []
        lights: list[frozenset[ExteriorLight]] = []
        for sid in self._vid:
            r = self._state[sid]
            x, y = r[c.VAR_POSITION]
            angle = float(r[c.VAR_ANGLE])  # [deg] clockwise from north, as a BSM's heading
            length, width, kind = self._static[sid]
            lat, lon = self.to_geo(x - length / 2 * math.sin(math.radians(angle)), y - length / 2 * math.cos(math.radians(angle)))
            signals = int(r[c.VAR_SIGNALS])
            for k, v in (("lat", lat), ("lon", lon), ("v", r[c.VAR_SPEED]), ("h", angle % 360.0), ("a", r[c.VAR_ACCELERATION]),
                         ("len", length), ("w", width)):
                cols[k].append(float(v))
            kinds.append(kind)
            brake.append(bool(signals & SIGNAL_BRAKELIGHT))
            lights.append(self._lights.get(signals & _LIGHT_BITS) or self._light_set(signals & _LIGHT_BITS))
        return VehicleStates(
            list(self._vid.values()), cols["lat"], cols["lon"], self._elevation_m, cols["v"], cols["h"], cols["a"],
            cols["len"], cols["w"], kinds, brake, lights,
        )

    def _light_set(self, bits: int) -> frozenset[ExteriorLight]:
        """The lights of a signal bit set, kept: a handful of sets serve every vehicle."""
        lights = self._lights[bits] = frozenset(light for bit, light in LIGHT_OF_SIGNAL.items() if bits & bit)
        return lights

    # -- the lights --------------------------------------------------------------------------

    def follow(self, controllers: dict[str, SignalController]) -> None:
        """Drive the lights from these controllers (the RSUs', by junction id), stepped by their owner, from now on."""
        missing = sorted(set(self.heads) - set(controllers))
        if missing:
            raise ValueError(f"no controller for the lights {missing}")
        self.heads, self._own_heads = {tls: controllers[tls] for tls in self.heads}, False

    @property
    def driven_by_controllers(self) -> bool:
        """Whether its lights are the RSUs' controllers themselves (`follow`: fast mode), so that what it counts of
        them (red-light entries) is true of the RSUs' lights; else copies and SPaT heard, which may lag them."""
        return not self._own_heads

    def drive_lights(self) -> None:
        """Set each RSU junction's light to its controller's state at the current time (SUMO is told only changes)."""
        for tls, ctl in self.heads.items():
            if self._own_heads:
                ctl.step(max(self.t, ctl.t))
            heard, showing = self._heard.get(tls), self._showing.get(tls)
            while heard and heard[0][0] <= self.t + 1e-6:  # the RSU's latest state by this step's time, never a later one
                showing = self._showing[tls] = heard.popleft()
            if showing is not None and self.t - showing[0] <= HEARD_FRESH_S:
                state = showing[1]
            else:
                state = sumo_state(ctl.states(), self._links[tls])
                self.on_copy_steps += showing is not None
            if self._shown.get(tls) != state:
                self.show(tls, state)
                self._shown[tls] = state

    def has_light(self, tls: str) -> bool:
        """Whether `tls` is the traffic light of one of the scenario's RSU junctions."""
        return tls in self._links

    def hear(self, tls: str, states: dict[int, LightState], at_s: float) -> None:
        """Real time: light `tls` shows `states` (by signal group), what its RSU's SPaT of sim time `at_s` [s] says
        (v2x.vehicle.heads), from the first step that starts at `at_s` or later (a fleet running late never shows
        a light before its time), in place of the copy of its controller while that SPaT is at most HEARD_FRESH_S
        old. SPaT must be heard in order."""
        heard = self._heard.setdefault(tls, deque(maxlen=HEARD_KEPT))
        self.heard_dropped += len(heard) == HEARD_KEPT  # the oldest goes unshown: the fleet is far behind its clock
        heard.append((at_s, sumo_state(states, self._links[tls])))

    def show(self, tls: str, state: str) -> None:
        """Make traffic light `tls` show `state` (SUMO's characters, one per link index) from now until told
        otherwise: its own program no longer runs (the RSU's controller drives it: docs/sumo.md)."""
        libsumo.trafficlight.setRedYellowGreenState(tls, state)

    def shown(self, tls: str) -> str:
        """What traffic light `tls` shows now, one character per link index."""
        return str(libsumo.trafficlight.getRedYellowGreenState(tls))

    def sumo_id(self, vid: int) -> str | None:
        """SUMO's id of a present vehicle of ours."""
        return self._sid.get(vid)

    def stops(self) -> tuple[int, int]:
        """(stops so far, vehicles so far): of every vehicle inserted, those still present too (the core's rule)."""
        return self.stats.stops_sum + sum(trip[0] for trip in self._trip.values()), self.stats.spawned

    def close(self) -> None:
        """End the simulation (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            libsumo.close()
