"""Who carries an OBU (the scenario's `fleet.penetration`), and what the others see of the signals.

Each vehicle is equipped with the probability its class is given (`fleet.penetration_by_class`, else
`fleet.penetration`), drawn from the run's seed and its own id alone: no other random draw moves when the
penetration changes, and at 1 every vehicle is equipped, exactly as without the setting. An unequipped vehicle
has no OBU: no connection, no BSM, nothing received, no applications. Its driver looks at the signal head:
the light the RSU's controller really shows, taken in `fleet.reaction_s` after it shows it (a driver's
perception-reaction time, as ITE's 1 s), with no countdown. The fleet learns the heads from the RSUs' own SPaT
on one listen-only connection (`fleet-heads-<i>-of-<n>`, not an OBU, not impaired and not measured): the
physical world, carried by the broker because the controllers live in the RSU processes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from v2x.core import scenario
from v2x.core.jsonview import JsonRecord, add_counts
from v2x.core.mobility import Mobility
from v2x.core.traffic import VEHICLE_TYPES, Stats, Traffic
from v2x.core.truth import stalled
from v2x.vehicle.belief import SignalBelief

KIND_NAMES = tuple(VEHICLE_TYPES)  # a vehicle's `kind` indexes this


class Equipment:
    """The fleet's draw of who is equipped, and its own vehicles found without an OBU."""

    def __init__(self, fleet: scenario.Fleet, seed: int, mine: Callable[[int], bool]) -> None:
        """`mine`: whether a vehicle is this fleet's (its shard's), to be counted here."""
        self.fleet = fleet
        self.seed = seed
        self.mine = mine
        self._by_class: dict[str, float] = {str(k): v for k, v in fleet.penetration_by_class.items()}
        self.everyone = all(self.share(k) >= 1.0 for k in KIND_NAMES)  # the default: nothing changes
        self.unequipped: dict[int, str] = {}  # this fleet's vehicles without an OBU so far -> their class
        self._drawn: dict[int, bool] = {}  # vehicle -> equipped

    def share(self, kind: str) -> float:
        """The equipped share of a vehicle class."""
        return self._by_class.get(kind, self.fleet.penetration)

    def has_obu(self, vid: int, kind: int) -> bool:
        """Whether vehicle `vid` (of kind index `kind`) carries an OBU: a draw from the seed and its id alone."""
        got = self._drawn.get(vid)
        if got is None:
            name = KIND_NAMES[kind]
            got = self._drawn[vid] = self._draw(str(vid), self.share(name))
            if not got and self.mine(vid):
                self.unequipped[vid] = name
        return got

    def stalled_has_obu(self, event: int) -> bool:
        """Whether the stalled car of hazard event `event` (from 1) carries an OBU: a car like the others."""
        return self._draw(f"stalled-{event}", self.share("car"))

    def _draw(self, key: str, share: float) -> bool:
        digest = hashlib.sha256(f"{self.seed}/equipped/{key}".encode()).digest()
        return share >= 1.0 or int.from_bytes(digest[:8], "big") / 2.0**64 < share

    def without_obu(self, traffic: Mobility) -> set[int]:
        """The vehicles present that have no OBU."""
        if self.everyone:
            return set()
        return {v for v, k in zip(traffic.ids.tolist(), traffic.kind.tolist(), strict=True) if not self.has_obu(v, k)}

    def mask(self, traffic: Traffic) -> np.ndarray | None:
        """Which road users carry an OBU, in `RoadUsers.of`'s order: the vehicles present, then the stalled cars
        standing (None: every one). The sensors' truth."""
        if self.everyone:
            return None
        vehicles = [self.has_obu(v, k) for v, k in zip(traffic.ids.tolist(), traffic.kind.tolist(), strict=True)]
        return np.array(vehicles + [self.stalled_has_obu(k) for k in stalled(traffic)], dtype=bool)

    def heads(self) -> SignalBelief:
        """What an unequipped driver makes of the signal heads: the state shown, reacted to after `reaction_s`."""
        return SignalBelief(self.fleet.spat_stale_s, countdown=False, reaction_s=self.fleet.reaction_s)


@dataclass
class Group(JsonRecord):
    """The traffic figures of one group of vehicles (the equipped, or the others)."""

    vehicles: int = 0  # seen (entered the network)
    finished: int | None = 0  # None: not known per vehicle (SUMO's mobility keeps no log of them)
    mean_delay_s: float | None = None  # of those that finished (None: none did, or not known)
    stops_per_vehicle: float | None = None
    red_light_violations: int | None = None  # counted in process only (fast mode), as the run's own


@dataclass
class Penetration(JsonRecord):
    """Who was equipped, and the traffic figures of each group (the run's own stay over all vehicles)."""

    share: float = 1.0  # fleet.penetration, as set
    by_class: dict[str, float] = field(default_factory=dict)  # fleet.penetration_by_class, as set
    unequipped_by_class: dict[str, int] = field(default_factory=dict)
    equipped: Group = field(default_factory=Group)
    unequipped: Group = field(default_factory=Group)

    @classmethod
    def of(cls, eq: Equipment, obus: int, stats: Stats, red_light_counted: bool) -> Penetration:
        """From a fleet's draw, its OBUs so far (the equipped of its own vehicles) and its traffic's statistics."""
        groups = []
        logged = len(stats.finished_log) == stats.finished
        for without in (False, True):
            # a shard by vehicle simulates every vehicle: its groups are its own vehicles
            done = [f for f in stats.finished_log if eq.mine(f.vid) and (f.vid in eq.unequipped) is without]
            red = sum(eq.mine(vid) and (vid in eq.unequipped) is without for _, vid, *_ in stats.red_light_log)
            groups.append(Group(
                len(eq.unequipped) if without else obus, len(done) if logged else None,
                round(sum(f.delay_s for f in done) / len(done), 2) if done else None,
                round(sum(f.stops for f in done) / len(done), 3) if done else None,
                red if red_light_counted else None,
            ))
        return cls(eq.fleet.penetration, {str(k): v for k, v in eq.fleet.penetration_by_class.items()},
                   dict(sorted(Counter(eq.unequipped.values()).items())), *groups)

    @classmethod
    def merge(cls, parts: list[Penetration]) -> Penetration:
        """The shards of a run: counts added, means weighted by the vehicles finished."""
        def group(gs: list[Group]) -> Group:
            finished = [g.finished for g in gs]
            done = None if None in finished else sum(n for n in finished if n is not None)
            rl = [g.red_light_violations for g in gs]
            return Group(
                sum(g.vehicles for g in gs), done,
                round(sum((g.mean_delay_s or 0.0) * (g.finished or 0) for g in gs) / done, 2) if done else None,
                round(sum((g.stops_per_vehicle or 0.0) * (g.finished or 0) for g in gs) / done, 3) if done else None,
                None if None in rl else sum(x for x in rl if x is not None),
            )
        return cls(parts[0].share, parts[0].by_class, add_counts(p.unequipped_by_class for p in parts),
                   group([p.equipped for p in parts]), group([p.unequipped for p in parts]))
