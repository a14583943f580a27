"""SUMO stepped in process through libsumo: the fleet's mobility when a scenario says `mobility = "sumo"`.

libsumo is one simulation per process: a `SumoTraffic` owns it from construction to `close()`, and the fleet
process owns the `SumoTraffic`. The lights of the junctions with RSUs show what the RSUs' controllers show (the
controllers themselves in fast mode, deterministic copies of them elsewhere: docs/sumo.md); SUMO's drivers see
those lights. What they believe from V2X does not move them yet (#25 item 4: the applications through TraCI).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import libsumo
import numpy as np

from v2x.core.errors import ScenarioError
from v2x.core.geo import LocalFrame
from v2x.core.kernels import MOVING_MPS, STOPPED_MPS
from v2x.core.messages import ExteriorLight
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
        self.crossings: list[tuple[float, int, int]] | None = None
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
        # they run in this process (`follow`, fast mode), else copies made from the scenario, stepped here
        sites = sumo_sites(sc)
        self._links = {site.id: len(site.light.phases[0].state) for site in sites}
        self.heads: dict[str, SignalController] = {site.id: SignalController(site.plan, 0.0) for site in sites}
        self._own_heads = True
        self._site = {site.id: site.index for site in sites}  # junction -> its index in the scenario's sites
        self._shown: dict[str, str] = {}  # what each light was last told to show

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
        their controllers show at the step's start (`drive_lights`); SUMO's drivers see those lights."""
        self.drive_lights()
        libsumo.simulationStep()
        self.t += dt
        for sid in libsumo.simulation.getArrivedIDList():
            if self._vid.pop(sid, None) is not None:
                self._static.pop(sid)
                stops, _, lost_s = self._trip.pop(sid)
                self.stats.finished += 1
                self.stats.stops_sum += stops
                self.stats.delay_sum_s += lost_s
        for sid in libsumo.simulation.getDepartedIDList():
            self._vid[sid] = self.stats.spawned
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

    def ahead(self) -> IntArray:
        """Each present vehicle's next RSU junction on its route (its index in the scenario's sites), -1 for none:
        the first traffic light ahead (SUMO's next TLS) when it is one with an RSU."""
        out = np.full(self.n, -1, dtype=np.int64)
        if not self._site:
            return out
        for i, sid in enumerate(self._vid):
            nxt = libsumo.vehicle.getNextTLS(sid)  # (tls, link index, distance [m], state) per light ahead
            if nxt:
                out[i] = self._site.get(nxt[0][0], -1)
        return out

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

    def drive_lights(self) -> None:
        """Set each RSU junction's light to its controller's state at the current time (SUMO is told only changes)."""
        for tls, ctl in self.heads.items():
            if self._own_heads:
                ctl.step(max(self.t, ctl.t))
            state = sumo_state(ctl.states(), self._links[tls])
            if self._shown.get(tls) != state:
                self.show(tls, state)
                self._shown[tls] = state

    def show(self, tls: str, state: str) -> None:
        """Make traffic light `tls` show `state` (SUMO's characters, one per link index) from now until told
        otherwise: its own program no longer runs (the RSU's controller drives it: docs/sumo.md)."""
        libsumo.trafficlight.setRedYellowGreenState(tls, state)

    def shown(self, tls: str) -> str:
        """What traffic light `tls` shows now, one character per link index."""
        return str(libsumo.trafficlight.getRedYellowGreenState(tls))

    def sumo_id(self, vid: int) -> str | None:
        """SUMO's id of a present vehicle of ours (a search: for tests and tools, not for every step)."""
        return next((s for s, v in self._vid.items() if v == vid), None)

    def close(self) -> None:
        """End the simulation (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            libsumo.close()
