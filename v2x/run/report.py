"""A run's report (`v2x run --report r.json`) as an object, for tests and scripts.

    report = Report.load("r.json")
    assert report.latency("cloud->vehicle").p99 < 100          # ms, every message type (report["latency_basis"]:
                                                               # measured through the broker, or modelled in fast mode)
    assert report.latency("rsu->vehicle", "spat").p50 < 10     # ms, SPaT only
    assert report.messages("bsm").lost == 0
    assert report.traffic["collisions"] == 0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Latency:
    """One hop's latency [ms]."""

    count: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float


@dataclass(frozen=True)
class MessageCounts:
    sent: int
    received: int
    lost: int
    duplicates: int


class MissingKey(KeyError):
    """A hop or message type the report does not have; its message lists those it has (a KeyError's str() would
    show the message quoted, as a key)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Report:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls(json.loads(Path(path).read_text()))

    def latency(self, hop: str, mtype: str | None = None) -> Latency:
        """Latency on a hop ("vehicle->cloud", "cloud->vehicle", ...), of every message type or of one ("bsm", "spat",
        ...; any case). Measured on the wall clock through the broker in real time, the link model's delays in sim
        time in fast mode: `self["latency_basis"]` says which. A hop or type the report lacks raises `MissingKey`,
        which lists what it has."""
        if mtype is None:
            table = self.data["latency_ms"]
            if hop not in table:
                raise MissingKey(f"no latency on hop {hop!r} in this report (hops measured: {sorted(table)})")
            return Latency(**table[hop])
        by_type = self.data["latency_ms_by_type"]
        table = by_type.get(mtype.lower())
        if table is None:
            raise MissingKey(f"no latency for {mtype!r} messages in this report (message types measured: {sorted(by_type)})")
        if hop not in table:
            raise MissingKey(f"no latency for {mtype.lower()!r} on hop {hop!r} in this report (hops measured for "
                             f"{mtype.lower()!r}: {sorted(table)})")
        return Latency(**table[hop])

    def messages(self, mtype: str) -> MessageCounts:
        m = self.data["messages"].get(mtype.lower())
        if m is None:
            raise MissingKey(f"no {mtype!r} messages in this report (types: {sorted(self.data['messages'])})")
        return MessageCounts(m["sent"], m["received"], m["lost"], m["duplicates"])

    @property
    def traffic(self) -> dict[str, Any]:
        return dict(self.data["traffic"])

    @property
    def broker_kind(self) -> str:
        return str(self.data["broker"]["kind"])

    def __getitem__(self, key: str) -> Any:
        return self.data[key]
