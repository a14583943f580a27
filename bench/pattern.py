"""The stack's message pattern, from a real-time run's report: deliveries per vehicle-second by message type and path.

Every receiver measures what it receives, per message type and hop (vehicle->cloud, rsu->vehicle, ...), and the report
gives those counts for the whole run by type and hop, and for the steady seconds (after --warmup) by hop. A (type, hop)
count is taken into the steady seconds by its hop's steady share (exact where a hop carries one type; the RSU->cloud
hop carries SPaT and RSM, both per junction at a fixed rate), and divided by the vehicle-seconds of the steady seconds
(the fleet's tick: vehicles present, per second). Beside it, the broker's own count of what it delivered in the same
seconds: in the default mode what it delivered beyond the tiers' measured receipts is what no tier measures (the
fleet's V2V radio above all, which hears every BSM of its area; MAP, status); in the shared mode a SPaT reaches the
fleet's connection once and is handed on to each vehicle, so the broker delivers fewer than the vehicles receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SPAT_HZ = 10.0  # an RSU's SPaT rate: what a vehicle hears per second on one path while it listens


@dataclass
class Pattern:
    """Deliveries per vehicle-second in a run's steady seconds."""

    copies: int
    mode: str  # --obu-connections
    vehicles: float  # present, mean over the steady seconds
    rows: list[tuple[str, str, float]]  # (message type, hop, receipts per vehicle-second)
    broker: float  # the broker's deliveries per vehicle-second

    @classmethod
    def of(cls, report: dict[str, Any], delivered_per_s: float, copies: int, mode: str) -> Pattern:
        steady, whole = report["steady"], report["latency_ms"]
        tick = steady["tick"]
        vehicles = float(tick["vehicles_mean"] or 0.0)
        vehicle_s = vehicles * float(tick["seconds"] or 0)
        rows = []
        for mtype, hops in sorted(report["latency_ms_by_type"].items()):
            for hop, h in sorted(hops.items()):
                share = steady["latency_ms"].get(hop, {}).get("count", 0) / max(whole[hop]["count"], 1)
                rows.append((mtype, hop, h["count"] * share / vehicle_s if vehicle_s else 0.0))
        return cls(copies, mode, vehicles, rows, delivered_per_s / vehicles if vehicles else 0.0)

    def per(self, mtype: str, hop: str) -> float:
        return sum(x for t, h, x in self.rows if (t, h) == (mtype, hop))

    @property
    def measured(self) -> float:
        return sum(x for *_, x in self.rows)

    @property
    def per_junction(self) -> float:
        """Vehicles present per copy of the site."""
        return self.vehicles / self.copies if self.copies else 0.0

    @property
    def spat_share(self) -> float:
        """The share of vehicles hearing SPaT: RSU SPaT receipts per vehicle-second over the SPaT rate."""
        return min(self.per("spat", "rsu->vehicle") / SPAT_HZ, 1.0)

    def table(self) -> list[str]:
        """Markdown rows: one per (type, hop), the measured total, and the broker's count beside it."""
        out = [f"message pattern, four_way x {self.copies} ({self.mode}, {self.vehicles:.0f} vehicles present): "
               "deliveries per vehicle-second",
               "", "| message | path | per vehicle-second |", "|---|---|---:|"]
        out += [f"| {t.upper()} | {h} | {x:.3f} |" for t, h, x in self.rows]
        out.append(f"| all | measured by the receiving tiers | {self.measured:.2f} |")
        out.append(f"| all | delivered by the broker ($SYS count) | {self.broker:.2f} |")
        out.append(f"| all | the broker's less the measured (per-vehicle: what no tier measures, the fleet's V2V radio above "
                   f"all; shared: less the SPaT a fleet's connection hands on to each vehicle) | {self.broker - self.measured:+.2f} |")
        return out
