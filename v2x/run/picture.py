"""The report's `cloud_picture`: how complete the cloud's picture of the area is, against the ground truth (fast mode).

Once a sim second, every true road user (every vehicle the traffic core moves and the scenario's stalled cars, equipped
or not: v2x.core.truth.RoadUsers) is looked up in what the cloud holds at that moment:

  bsm     the vehicles whose BSM the cloud holds fresh (at most cloud.service.FRESH_S old): the picture without sensors;
  fused   those, and the road users the cloud knows from RSU detections alone (cloud.fusion's unmatched objects,
          fresh), each traced to the vehicle behind it by the sensors' labels (never sent; roadside.perception).

A road user counts once however many ways the cloud holds it, so a ghost (an equipped vehicle also held as an
unmatched detection) adds nothing. The shares are over every road user in the area and, with sensors, over those in
some sensor's coverage at that moment. Only fast mode has the truth and the picture in one process: real time has
no `cloud_picture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud.fusion import FRESH_S as DETECTION_FRESH_S
from cloud.service import FRESH_S as BSM_FRESH_S
from cloud.service import CloudService
from roadside.service import RsuService
from v2x.core.truth import RoadUsers

EVERY_S = 1.0  # [s] between samples


@dataclass
class Held:
    """Road users counted over the samples, and how many of them the picture held."""

    users: int = 0
    bsm: int = 0
    fused: int = 0

    def add(self, ids: np.ndarray, by_bsm: set[int | None], fused: set[int | None]) -> None:
        self.users += len(ids)
        self.bsm += sum(1 for v in ids.tolist() if v in by_bsm)
        self.fused += sum(1 for v in ids.tolist() if v in fused)

    def to_json(self) -> dict[str, Any]:
        return {
            "road_users": self.users, "held_by_bsm": self.bsm, "held_fused": self.fused,
            "bsm_only": round(self.bsm / self.users, 4) if self.users else None,
            "fused": round(self.fused / self.users, 4) if self.users else None,
        }


def _road_user(sender: str) -> int | None:
    """The truth's id of a BSM's sender: veh-<id>, or -k for the stalled car of event k (stalled-k)."""
    kind, _, n = sender.rpartition("-")
    if not n.isdigit():
        return None
    return int(n) if kind == "veh" else -int(n) if kind == "stalled" else None


class PictureScore:
    """Samples the cloud's picture against the truth, once every EVERY_S of sim time."""

    def __init__(self, cloud: CloudService, rsus: Sequence[RsuService]) -> None:
        self.cloud = cloud
        self.sensing = {r.id: r.perception for r in rsus if r.perception is not None}
        self.samples = 0
        self.area = Held()
        self.coverage = Held()
        self._next_s = 0.0

    def due(self, now: float) -> bool:
        return now + 1e-9 >= self._next_s

    def sample(self, truth: RoadUsers) -> None:
        """Look every road user of `truth` up in the cloud's picture as it is now."""
        now = truth.t
        self._next_s = now + EVERY_S
        self.samples += 1
        by_bsm: set[int | None] = {_road_user(sid) for sid, (_, at) in self.cloud.vehicles.items() if now - at <= BSM_FRESH_S}
        fused = set(by_bsm)
        fusion = self.cloud.fusion
        if fusion is not None:
            for key, d in fusion.detected.items():
                rsu, _, ptc = key.rpartition("/")
                p = self.sensing.get(rsu)
                label = None if p is None or not ptc.isdigit() else p.labels.get(int(ptc))
                if label is not None and now - d.t <= DETECTION_FRESH_S:
                    fused.add(int(label[0]))
        self.area.add(truth.ids, by_bsm, fused)
        if self.sensing:
            inside = np.zeros(len(truth.ids), dtype=bool)
            for p in self.sensing.values():
                inside |= p.covered(truth)
            self.coverage.add(truth.ids[inside], by_bsm, fused)

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "every_s": EVERY_S, "area": self.area.to_json(),
                "in_sensor_coverage": self.coverage.to_json() if self.sensing else None}
