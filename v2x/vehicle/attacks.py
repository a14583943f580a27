"""Misbehaving OBUs: the scenario's `[[attacks]]` applied to what attacker vehicles say in their BSMs.

The VeReMi attack types (van der Heijden et al., 2018), on the BSM's position and speed:

    constant_position  always the same position (a point in the area, fixed per attacker)
    constant_offset    the true position shifted by a fixed offset (offset_m east, 0.6 x offset_m south)
    random_position    a new random point in the area in every BSM
    random_offset      the true position shifted by a new random offset (up to offset_m each way) every BSM
    eventual_stop      from a random moment 1-20 s into its trip, the position where it was then, speed 0
    sybil              honest BSMs, plus a ghost vehicle (its own id) 8 m ahead of it

Which vehicles attack is drawn from the seed, per vehicle: the same in every run of the
scenario. The truth goes into the fleet's summary, for the report to score the detector.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random

from v2x.core import messages as m
from v2x.core.network import Network
from v2x.core.scenario import Attack, Scenario

GHOST_AHEAD_M = 8.0  # [m] where a Sybil attacker puts its ghost
STOP_WITHIN_S = 20.0  # [s] an eventual-stop attacker stops within this after it starts lying


class Attacks:
    def __init__(self, sc: Scenario, net: Network) -> None:
        self.attacks = sc.attacks
        self.seed = sc.seed
        self.frame = net.frame
        self.bounds = net.bounds()  # where the position attacks draw their points
        self.assigned: dict[str, str] = {}  # sender id -> attack kind, for every attacker that sent a BSM
        self._state: dict[int, tuple[float, float, float] | None] = {}  # per attacker: its fixed or frozen point
        self._first: dict[int, float] = {}  # eventual stop: when each attacker first lied (or could have)

    def _rng(self, vid: int, salt: str = "") -> random.Random:
        digest = hashlib.sha256(f"{self.seed}/{vid}/{salt}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def attack_of(self, vid: int) -> Attack | None:
        if not self.attacks:
            return None
        u = self._rng(vid).random()
        acc = 0.0
        for a in self.attacks:
            acc += a.share
            if u < acc:
                return a
        return None

    def apply(self, vid: int, bsm: m.Bsm, t: float) -> list[tuple[str, m.Bsm]]:
        """What vehicle `vid` sends at sim time `t`: (sender id, BSM), its own (true or false), and a ghost's."""
        sid = f"veh-{vid}"
        a = self.attack_of(vid)
        if a is None or t < a.start_s:
            return [(sid, bsm)]
        if a.kind != "eventual_stop":  # that one lies only once it has stopped
            self.assigned[sid] = a.kind
        x, y = self.frame.to_local(bsm.position.lat_deg, bsm.position.lon_deg)
        rng = self._rng(vid, f"{t:.1f}")
        if a.kind == "sybil":
            h = math.radians(bsm.heading_deg)
            gx, gy = x + GHOST_AHEAD_M * math.sin(h), y + GHOST_AHEAD_M * math.cos(h)
            ghost = f"veh-{vid}-g"
            self.assigned[ghost] = "sybil"
            return [(sid, bsm), (ghost, self._at(bsm, gx, gy))]
        if a.kind == "constant_position":
            if vid not in self._state:
                r = self._rng(vid, "point")
                x0, y0, x1, y1 = self.bounds
                self._state[vid] = (r.uniform(x0, x1), r.uniform(y0, y1), 0.0)
            px, py, _ = self._state[vid] or (x, y, 0.0)
            return [(sid, self._at(bsm, px, py))]
        if a.kind == "constant_offset":
            return [(sid, self._at(bsm, x + a.offset_m, y - 0.6 * a.offset_m))]
        if a.kind == "random_position":
            x0, y0, x1, y1 = self.bounds
            return [(sid, self._at(bsm, rng.uniform(x0, x1), rng.uniform(y0, y1)))]
        if a.kind == "random_offset":
            return [(sid, self._at(bsm, x + rng.uniform(-a.offset_m, a.offset_m), y + rng.uniform(-a.offset_m, a.offset_m)))]
        # eventual_stop: honest until its moment, then frozen where it was, standing still
        if vid not in self._state:
            self._state[vid] = None
        held = self._state[vid]
        if held is None:
            stop_at = self._first.setdefault(vid, t) + self._rng(vid, "stop").uniform(1.0, STOP_WITHIN_S)
            if t < stop_at:
                return [(sid, bsm)]
            held = self._state[vid] = (x, y, bsm.heading_deg)
            self.assigned[sid] = a.kind
        return [(sid, dataclasses.replace(self._at(bsm, held[0], held[1]), speed_mps=0.0, heading_deg=held[2], accel_mps2=0.0))]

    def _at(self, bsm: m.Bsm, x: float, y: float) -> m.Bsm:
        p = self.frame.to_geo(x, y)
        return dataclasses.replace(bsm, position=m.GeoPoint(p.lat_deg, p.lon_deg, bsm.position.elevation_m))
