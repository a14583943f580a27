"""GNSS error: where each OBU thinks it is, and how accurate it says that is (the scenario's `[fleet.gnss]`).

Each OBU carries a receiver of a class (standard single-frequency or RTK, drawn from the seed per vehicle).
Its horizontal error, per axis (east, north), is a bias that varies slowly, a first-order Gauss-Markov
process of standard deviation `sigma_m` and correlation time `tau_s`, plus white noise of `noise_m` on each
fix. The bias starts drawn from its steady state, so a vehicle is as wrong on entering as later on. The BSM
says so in J2735's PositionalAccuracy: a circle of the receiver's one-sigma error per axis. Speed and
heading are the vehicle's own (wheel odometry and the like), not GNSS-derived, and are left exact.

Sources of the default figures and their caveats: docs/faults-security.md ("GNSS error").
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random

from v2x.core import messages as m
from v2x.core.geo import LocalFrame
from v2x.core.scenario import Gnss, Receiver


@dataclasses.dataclass
class _State:
    receiver: Receiver
    t: float  # [s] time of the last fix
    bias: tuple[float, float]  # [m] east, north
    rng: random.Random


class GnssError:
    """The fleet's receivers: `apply` turns each true BSM into what its OBU's receiver makes of it."""

    def __init__(self, gnss: Gnss, seed: int, frame: LocalFrame) -> None:
        self.gnss = gnss
        self.seed = seed
        self.frame = frame
        self._states: dict[int, _State] = {}
        self._accuracy = {name: _accuracy(r) for name, r in (("standard", gnss.standard), ("rtk", gnss.rtk))}

    def receiver_of(self, vid: int) -> str:
        """The class of vehicle `vid`'s receiver ("standard" or "rtk"), drawn from the seed."""
        if self.gnss.rtk_share > 0 and self._rng(vid, "class").random() < self.gnss.rtk_share:
            return "rtk"
        return self.gnss.receiver

    def _rng(self, vid: int, salt: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}/gnss/{vid}/{salt}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def apply(self, bsms: list[tuple[int, m.Bsm]], t: float) -> list[tuple[int, m.Bsm]]:
        """The BSMs of the vehicles present at sim time `t` [s], each position as its receiver measures it."""
        states: dict[int, _State] = {}
        out = []
        for vid, bsm in bsms:
            st = self._states.get(vid)
            if st is None:
                cls = self.receiver_of(vid)
                r = self.gnss.rtk if cls == "rtk" else self.gnss.standard
                rng = self._rng(vid, "walk")
                st = _State(r, t, (rng.gauss(0.0, r.sigma_m), rng.gauss(0.0, r.sigma_m)), rng)
            else:  # the bias's Gauss-Markov step over the time since its last fix: its spread stays sigma
                r, rng = st.receiver, st.rng
                phi = math.exp(-max(t - st.t, 0.0) / r.tau_s)
                q = r.sigma_m * math.sqrt(1.0 - phi * phi)
                st.bias = (phi * st.bias[0] + q * rng.gauss(0.0, 1.0), phi * st.bias[1] + q * rng.gauss(0.0, 1.0))
                st.t = t
            states[vid] = st
            ex = st.bias[0] + r.noise_m * rng.gauss(0.0, 1.0)
            ny = st.bias[1] + r.noise_m * rng.gauss(0.0, 1.0)
            x, y = self.frame.to_local(bsm.position.lat_deg, bsm.position.lon_deg)
            p = self.frame.to_geo(x + ex, y + ny)
            accuracy = self._accuracy["rtk" if r is self.gnss.rtk else "standard"]
            out.append((vid, dataclasses.replace(
                bsm, position=m.GeoPoint(p.lat_deg, p.lon_deg, bsm.position.elevation_m), accuracy=accuracy)))
        self._states = states  # vehicles gone from the road are forgotten
        return out


def _accuracy(r: Receiver) -> m.PositionalAccuracy:
    """The receiver's stated accuracy: its one-sigma error per axis, the same every way (a circle)."""
    one_sigma = math.hypot(r.sigma_m, r.noise_m)
    return m.PositionalAccuracy(one_sigma, one_sigma, 0.0)
