"""The report's `perception` section: the RSUs' sensors and the cloud's fusion scored against the fleet's truth.

The truth comes from the sensor model (roadside.perception): the vehicle behind each RSM track, which it kept for
this score and never sent. The cloud's fusion says which BSM it matched each detection to (cloud.fusion); here the
two meet:

  matched share        detections the cloud matched to a BSM, of all it received;
  equipped match rate  detections of equipped vehicles matched to that vehicle's own BSM;
  wrong matches        detections matched to another vehicle's BSM;
  ghosts               detections of equipped vehicles left unmatched: the vehicle is in the picture twice (by its
                       BSM, and as a road user without an OBU);
  misses               unequipped road users in coverage that a sensor update did not detect (an equipped one is
                       still in the picture by its BSMs);
  position error       of each reported detection against the truth at the RSM's time [m].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def _percentile(hist: Counter[int], q: float) -> float | None:
    """The q-quantile of a histogram of centimetres, in metres."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for cm in sorted(hist):
        seen += hist[cm]
        if seen >= q * total:
            return round(cm / 100.0, 2)
    return None


def perception_report(rsus: Sequence[tuple[str, dict[str, Any]]], fusion: dict[str, Any]) -> dict[str, Any]:
    """`rsus`: (RSU id, its perception summary); `fusion`: the cloud's. {} when no RSU has sensors."""
    rsus = [(rid, p) for rid, p in rsus if p]
    if not rsus:
        return {}
    errors: Counter[int] = Counter()
    sensors: dict[str, Any] = {}
    labels: dict[str, list[Any]] = {}
    for rid, p in rsus:
        errors.update({int(k): n for k, n in p["error_cm"].items()})
        sensors[rid] = {k: p[k] for k in ("sensors", "truth_updates", "in_coverage", "detected", "missed", "missed_unequipped", "reported")}
        sensors[rid]["detection_rate"] = round(p["detected"] / p["in_coverage"], 4) if p["in_coverage"] else None
        labels |= {f"{rid}/{ptc}": lab for ptc, lab in p["labels"].items()}
    equipped = Counter[str]()
    unequipped = Counter[str]()
    for key, matched in fusion.get("assoc", {}).items():
        lab = labels.get(key)
        if lab is None:
            equipped["unlabelled"] += sum(matched.values())
            continue
        own = f"veh-{lab[0]}" if lab[0] >= 0 else f"stalled-{-lab[0]}"  # a stalled car is -k, its OBU stalled-k
        side = equipped if lab[1] else unequipped
        for who, n in matched.items():
            side["detections"] += n
            side["unmatched" if not who else "correct" if who == own else "wrong"] += n
    detections = fusion.get("detections", 0)
    return {
        "sensors": sensors,
        "position_error_m": {"p50": _percentile(errors, 0.5), "p95": _percentile(errors, 0.95), "count": sum(errors.values())},
        "fusion": {
            "detections": detections, "matched": fusion.get("matched", 0),
            "matched_share": round(fusion.get("matched", 0) / detections, 4) if detections else None,
            "equipped": {
                "detections": equipped["detections"], "matched_to_own_bsm": equipped["correct"], "wrong": equipped["wrong"],
                "unmatched": equipped["unmatched"],
                "match_rate": round(equipped["correct"] / equipped["detections"], 4) if equipped["detections"] else None,
            },
            "unequipped": {"detections": unequipped["detections"], "matched_to_a_bsm": unequipped["correct"] + unequipped["wrong"]},
            "ghosts": equipped["unmatched"],
            "misses": sum(p["missed_unequipped"] for _, p in rsus),
        },
    }
