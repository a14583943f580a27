"""JSON views: domain messages as JSON-ready values (enums by name, bit sets as sorted name lists), and
`JsonRecord`, the typed summaries a tier prints and a run reads back."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Self

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


def add_counts(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Counts by name, added up (a summary's `sent`, `received`, `bad_input`...)."""
    out: Counter[str] = Counter()
    for c in counters:
        out.update(c)
    return dict(out)


class JsonRecord:
    """A dataclass that goes to JSON and back: `to_json()` gives plain values (nested records, and records in
    lists and dicts, by their own `to_json`); `from_json()` builds it again from its field types, and names any
    key it does not know. Fields missing from the JSON take their defaults."""

    def to_json(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {f.name: _out(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> Self:
        """Built from `data`; a ValueError names the first field (as a path from `where`) that is not what its type
        says (a record, list or dict of the wrong shape, a number that is text, null where a value is needed)."""
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        at = where or cls.__name__
        if not isinstance(data, Mapping):
            raise ValueError(f"{at}: expected an object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{at}: unknown field(s) {unknown} (expected some of {sorted(fields)})")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _in(hints[k], v, f"{at}.{k}") for k, v in data.items()})


def _out(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _out(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_out(v) for v in value]
    return value


_SCALARS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _in(tp: Any, value: Any, at: str) -> Any:
    """`value` from JSON as type `tp` (records, also in lists, dict values and `X | None`, built); a ValueError
    names the path `at` of a value that is not of its type."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        return _in(args[0], value, at) if len(args) == 1 else value
    if tp is Any:
        return value
    if value is None:
        raise ValueError(f"{at}: null where a value is needed")
    if isinstance(tp, type) and issubclass(tp, JsonRecord):
        return tp.from_json(value, at)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{at}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_in(item, v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{at}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {k: _in(item, v, f"{at}.{k}") for k, v in value.items()}
    ok = _SCALARS.get(tp)
    if ok is not None and (not isinstance(value, ok) or (tp is not bool and isinstance(value, bool))):
        raise ValueError(f"{at}: expected {tp.__name__}, got {value!r}")
    return value
