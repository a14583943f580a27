"""Domain messages as JSON-ready values: enums by name, bit sets as sorted name lists."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from v2x.core import messages as m


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, frozenset):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    return value


def frame_record(topic: str, frame: m.Frame, rx_ns: int | None = None) -> dict[str, Any]:
    """One line of `v2x tap`: topic, type, header, body (and the receive time when known)."""
    out: dict[str, Any] = {
        "topic": topic,
        "type": m.message_type(frame.body).value,
        "header": to_jsonable(frame.header),
        "body": to_jsonable(frame.body),
    }
    if rx_ns is not None:
        out["rx_time_us"] = rx_ns // 1000
        out["latency_ms"] = round((rx_ns / 1000 - frame.header.gen_time_us) / 1000, 3)
    return out


def add_up(parts: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Summaries of several processes as one: numbers added, lists joined, dicts merged key by key,
    anything else (text, flags) taken from the first that has it; top-level keys in `skip` left out."""

    def add(a: Any, b: Any) -> Any:
        if a is None or b is None or isinstance(a, (bool, str)):
            return a if a is not None else b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a + b
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: add(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in a | b}
        return a

    out: dict[str, Any] = {}
    for p in parts:
        out = add(out, {k: v for k, v in p.items() if k not in skip})
    return out
