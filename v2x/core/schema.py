"""Typed, validated data from TOML: the machinery under `v2x.core.scenario`.

A schema is a tree of frozen dataclasses whose fields carry their constraints
(`spec(ge=..., le=...)`). `load(cls, text, filename)` reads TOML with tomllib, converts it
into the dataclasses, and reports *every* problem as one line

    FILE:LINE: field.path: what is wrong (expected ...)

Line numbers come from `Locator`, a small scanner that maps each key and array element
of the (already syntax-checked) TOML text to the line it starts on. `dump` writes a
dataclass tree back to TOML, so files round-trip.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import json
import math
import operator
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from v2x.core.errors import ScenarioError

T = TypeVar("T")
Path = tuple[str | int, ...]


def spec(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_len: int | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with range constraints (for numbers) or a minimum length (arrays)."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "min_len": min_len, "doc": doc}
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple or a default_factory for container defaults")
    return dataclasses.field(default=default, metadata=meta)


def format_path(path: Path) -> str:
    """('a', 0, 'b') -> 'a[0].b'."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top level)"


# ---------------------------------------------------------------------------
# Locating keys in TOML text
# ---------------------------------------------------------------------------

_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class Locator:
    """Maps key paths of a TOML document to the line (1-based) where each is defined.

    Assumes the text is valid TOML (tomllib has already parsed it). Handles tables,
    arrays of tables, dotted keys, inline tables and arrays spanning lines, strings of
    every kind, and comments.
    """

    def __init__(self, text: str) -> None:
        self._s = text
        self._i = 0
        self._starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.lines: dict[Path, int] = {}
        self._aot: dict[Path, int] = {}
        self._scan()

    def line_of(self, path: Path) -> int:
        """The line of `path`, or of its nearest defined ancestor (1 if none)."""
        for n in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return 1

    # -- scanning ----------------------------------------------------------

    def _line(self) -> int:
        return bisect.bisect_right(self._starts, self._i)

    def _peek(self, k: int = 0) -> str:
        j = self._i + k
        return self._s[j] if j < len(self._s) else ""

    def _skip(self, newlines: bool) -> None:
        s = self._s
        while self._i < len(s):
            c = s[self._i]
            if c in " \t\r" or (newlines and c == "\n"):
                self._i += 1
            elif c == "#":
                while self._i < len(s) and s[self._i] != "\n":
                    self._i += 1
            else:
                return

    def _string(self) -> str:
        s = self._s
        q = s[self._i]
        if s.startswith(q * 3, self._i):
            end = s.find(q * 3, self._i + 3)
            while q == '"' and end > 0 and _escaped(s, end):
                end = s.find(q * 3, end + 1)
            end = len(s) if end < 0 else end + 3
            while end < len(s) and s[end] == q:  # up to two quotes may close the string
                end += 1
            raw = s[self._i + 3 : end - 3]
            self._i = end
            return raw
        j = self._i + 1
        while j < len(s) and s[j] != q:
            j += 2 if (q == '"' and s[j] == "\\") else 1
        raw = s[self._i + 1 : j]
        self._i = j + 1
        return json.loads(f'"{raw}"') if q == '"' else raw

    def _key(self) -> list[str]:
        parts = []
        while True:
            self._skip(False)
            if self._peek() in "\"'":
                parts.append(self._string())
            else:
                j = self._i
                while self._peek() in _BARE and self._peek():
                    self._i += 1
                parts.append(self._s[j : self._i])
            self._skip(False)
            if self._peek() != ".":
                return parts
            self._i += 1

    def _value(self, path: Path) -> None:
        c = self._peek()
        if c == "{":
            self._i += 1
            while True:
                self._skip(True)
                if self._peek() in ("}", ""):
                    self._i += 1
                    return
                if self._peek() == ",":
                    self._i += 1
                    continue
                line = self._line()
                sub = (*path, *self._key())
                self.lines.setdefault(sub, line)
                self._skip(False)
                self._i += 1  # '='
                self._skip(False)
                self._value(sub)
        elif c == "[":
            self._i += 1
            idx = 0
            while True:
                self._skip(True)
                if self._peek() in ("]", ""):
                    self._i += 1
                    return
                if self._peek() == ",":
                    self._i += 1
                    continue
                self.lines.setdefault((*path, idx), self._line())
                self._value((*path, idx))
                idx += 1
        elif c in "\"'":
            self._string()
        else:
            while self._peek() and self._peek() not in ",]}\n#":
                self._i += 1

    def _resolve(self, parts: list[str]) -> list[str | int]:
        path: list[str | int] = []
        for p in parts:
            path.append(p)
            n = self._aot.get(tuple(path))
            if n is not None:
                path.append(n - 1)
        return path

    def _scan(self) -> None:
        table: list[str | int] = []
        while True:
            self._skip(True)
            if self._i >= len(self._s):
                return
            line = self._line()
            if self._s.startswith("[[", self._i):
                self._i += 2
                parts = self._key()
                self._i += 2
                base = (*self._resolve(parts[:-1]), parts[-1])
                n = self._aot.get(base, 0)
                self._aot[base] = n + 1
                self.lines.setdefault(base, line)
                table = [*base, n]
                self.lines.setdefault(tuple(table), line)
            elif self._peek() == "[":
                self._i += 1
                table = self._resolve(self._key())
                self._i += 1
                self.lines.setdefault(tuple(table), line)
            else:
                full = (*table, *self._key())
                self.lines.setdefault(full, line)
                self._skip(False)
                self._i += 1  # '='
                self._skip(False)
                self._value(full)


def _escaped(s: str, i: int) -> bool:
    n = 0
    while i - 1 - n >= 0 and s[i - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


# ---------------------------------------------------------------------------
# Converting parsed TOML into dataclasses
# ---------------------------------------------------------------------------

_INVALID: Any = object()
_BOUNDS: tuple[tuple[str, Callable[[float, float], bool], str], ...] = (
    ("ge", operator.ge, ">="),
    ("gt", operator.gt, ">"),
    ("le", operator.le, "<="),
    ("lt", operator.lt, "<"),
)


def describe(tp: Any) -> str:
    """A type as a user reads it, for 'expected ...' messages."""
    origin = get_origin(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"an array of {describe(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        k, v = get_args(tp)
        return f"a table of {describe(v).removeprefix('a ').removeprefix('an ')}s keyed by {describe(k)}"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


class _Converter:
    def __init__(self) -> None:
        self.problems: list[tuple[Path, str]] = []

    def fail(self, path: Path, message: str) -> Any:
        self.problems.append((path, message))
        return _INVALID

    def convert(self, tp: Any, value: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            arms = [a for a in get_args(tp) if a is not type(None)]
            return self.convert(arms[0], value, path, meta) if len(arms) == 1 else self._union(arms, value, path)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                return self.fail(path, f"{_show(value)} is not a table (expected {describe(tp)})")
            return self.dataclass(tp, value, path)  # type: ignore[arg-type]
        if origin is Literal:
            if value not in get_args(tp) or isinstance(value, bool):
                hint = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
                more = f"; did you mean {json.dumps(hint[0])}?" if hint else ""
                return self.fail(path, f"{_show(value)} is not allowed (expected {describe(tp)}){more}")
            return value
        if origin in (tuple, list):
            if not isinstance(value, list):
                return self.fail(path, f"{_show(value)} is not an array (expected {describe(tp)})")
            min_len = meta.get("min_len")
            if min_len is not None and len(value) < min_len:
                return self.fail(path, f"has {len(value)} entries (expected at least {min_len})")
            item = get_args(tp)[0]
            out = [self.convert(item, v, (*path, i), {}) for i, v in enumerate(value)]
            return _INVALID if any(o is _INVALID for o in out) else tuple(out)
        if origin is dict:
            if not isinstance(value, dict):
                return self.fail(path, f"{_show(value)} is not a table (expected {describe(tp)})")
            kt, vt = get_args(tp)
            keys = {k: self.convert(kt, k, (*path, k), {}) for k in value}
            vals = {k: self.convert(vt, v, (*path, k), meta) for k, v in value.items()}
            if any(v is _INVALID for v in (*keys.values(), *vals.values())):
                return _INVALID
            return dict(vals)
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return self.fail(path, f"{_show(value)} is not a number (expected {describe(tp)})")
            return self._range(float(value), path, meta, "a number")
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return self.fail(path, f"{_show(value)} is not an integer (expected {describe(tp)})")
            return self._range(value, path, meta, "an integer")
        if tp in (str, bool):
            if not isinstance(value, tp):
                return self.fail(path, f"{_show(value)} is not {describe(tp)} (expected {describe(tp)})")
            return value
        raise TypeError(f"unsupported schema type {tp!r} at {format_path(path)}")

    def _union(self, arms: list[Any], value: Any, path: Path) -> Any:
        for arm in arms:
            sub = _Converter()
            out = sub.convert(arm, value, path, {})
            if out is not _INVALID:
                return out
        return self.fail(path, f"{_show(value)} is not valid (expected {' or '.join(describe(a) for a in arms)})")

    def _range(self, v: float, path: Path, meta: Mapping[str, Any], what: str) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return self.fail(path, f"nan is not allowed (expected {what})")
        for key, ok, sym in _BOUNDS:
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                return self.fail(path, f"{_show(v)} is out of range (expected {what} {sym} {bound:g})")
        return v

    def dataclass(self, cls: type[T], data: dict[str, Any], path: Path) -> T:
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        ok = True
        for key, value in data.items():
            f = fields.get(key)
            if f is None:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                more = f"; did you mean {json.dumps(hint[0])}?" if hint else ""
                self.fail((*path, key), f"unknown key (expected one of: {', '.join(fields)}){more}")
                ok = False
                continue
            out = self.convert(hints[key], value, (*path, key), f.metadata)
            ok = ok and out is not _INVALID
            kwargs[key] = out
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in data:
                self.fail(path, f"missing key {json.dumps(name)} (expected {describe(hints[name])})")
                ok = False
        if not ok:
            return _INVALID  # type: ignore[no-any-return]
        obj = cls(**kwargs)
        check: Callable[[], Iterable[tuple[Path, str]]] | None = getattr(obj, "check", None)
        if check is not None:
            for sub, message in check():
                self.fail((*path, *sub), message)
        return obj


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "an array"
    return json.dumps(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def read(cls: type[T], text: str, filename: str, extra: Callable[[T], Iterable[tuple[Path, str]]] | None = None) -> T:
    """Parse and validate TOML `text` into `cls`; raise ScenarioError listing every problem.

    `extra` runs checks that span the whole document (references between tables) once
    the tree has been built.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None) or _line_from_message(str(e))
        raise ScenarioError([f"{filename}:{line}: (syntax): {e} (expected valid TOML)"]) from None
    loc = Locator(text)
    return read_data(cls, data, lambda p: f"{filename}:{loc.line_of(p)}", extra)


def read_data(
    cls: type[T], data: dict[str, Any], where: Callable[[Path], str], extra: Callable[[T], Iterable[tuple[Path, str]]] | None = None
) -> T:
    """Validate already-parsed TOML data into `cls`; `where(path)` says where a problem is (file:line)."""
    conv = _Converter()
    obj = conv.dataclass(cls, data, ())
    if obj is not _INVALID and extra is not None:
        conv.problems.extend(extra(obj))
    if conv.problems:
        raise ScenarioError([f"{where(p)}: {format_path(p)}: {msg}" for p, msg in conv.problems])
    return obj


def _line_from_message(message: str) -> int:
    # Python 3.11's TOMLDecodeError says "... (at line 3, column 7)".
    marker = "at line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0].rstrip(")")
        if digits.isdigit():
            return int(digits)
    return 1


# ---------------------------------------------------------------------------
# Writing dataclasses as TOML
# ---------------------------------------------------------------------------


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _key(k: str) -> str:
    return k if k and set(k) <= _BARE else json.dumps(k)


def dump(obj: Any) -> str:
    """Write a dataclass tree as TOML that `read` turns back into an equal tree."""
    out: list[str] = []
    _dump_table(obj, [], out)
    return "\n".join(out).strip() + "\n"


def _is_table_array(v: Any) -> bool:
    return isinstance(v, tuple) and bool(v) and all(dataclasses.is_dataclass(x) for x in v)


def _dump_table(obj: Any, prefix: list[str], out: list[str]) -> None:
    items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    for name, v in items:
        if v is not None and not dataclasses.is_dataclass(v) and not _is_table_array(v):
            out.append(f"{_key(name)} = {_scalar(v)}")
    for name, v in items:
        if dataclasses.is_dataclass(v):
            out.append("")
            out.append(f"[{'.'.join(_key(p) for p in [*prefix, name])}]")
            _dump_table(v, [*prefix, name], out)
    for name, v in items:
        if _is_table_array(v):
            for x in v:
                out.append("")
                out.append(f"[[{'.'.join(_key(p) for p in [*prefix, name])}]]")
                _dump_table(x, [*prefix, name], out)
