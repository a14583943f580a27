"""Who may send what, on which topic: what a receiver checks of a message's sender before it acts on it or
measures it (v2x.net.reception applies it, after decoding and any signature check).

A message is a claim. Its header names a sender and a sender kind; its topic names the station or the
intersection it is about. They must agree, and the sender must be one that sends this message type:

    bsm/{tile}/{vehicle}           a vehicle, the one the topic names
    spat/rsu/{tile}/{intersection} the RSU of that intersection, about that intersection only
    spat/cloud/{tile}/{intersection}  a cloud instance relaying it, about that intersection only
    map/{tile}/{intersection}      the RSU of that intersection
    rsm/{tile}/{rsu}               that RSU
    rsi/{tile}/{sender}/{event}    a cloud instance, the one the topic names
    plan/{intersection}            a cloud instance
    advisory/{tile}/{vehicle}      a cloud instance
    prq/{intersection}/{vehicle}   a vehicle, the one the topic names
    prs/{intersection}/{vehicle}   the RSU of that intersection
    status/{kind}/{id}             the service the topic names, of that kind

Plain functions of the scenario (which RSU serves which intersection); no I/O.
"""

from __future__ import annotations

from v2x.core import messages as m
from v2x.core.kept import Kept
from v2x.core.scenario import Scenario
from v2x.core.topics import KINDS

_VEHICLE, _RSU, _CLOUD = m.SenderKind.VEHICLE, m.SenderKind.RSU, m.SenderKind.CLOUD
_UNJUDGED = "?"  # not yet among the verdicts kept (a verdict is None or a reason)
JUDGED_KEPT = 4096  # verdicts kept, one per sender and topic: a district's vehicles, each on a tile or two


class TrustRules:
    """A scenario's rules of who sends what (see the module docstring), and the clock skew receivers allow."""

    def __init__(self, sc: Scenario) -> None:
        self.rsu_of = {iid: sc.rsu_of(i).id for i, iid in enumerate(sc.sites)}  # intersection -> its RSU
        self.clock_skew_us = round(sc.trust.clock_skew_s * 1e6)  # [us] how far ahead of the receiver a message may be
        # (topic, sender, sender kind, a SPaT's intersections) -> `sender_problem`'s verdict, recent
        self._judged: Kept[tuple[str, str, m.SenderKind, tuple[str, ...]], str | None] = Kept(JUDGED_KEPT)

    def judged(self, topic: str, frame: m.Frame, names: tuple[str, ...] | None = None) -> str | None:
        """`sender_problem`, worked out once for what alone it depends on: the topic, the sender and its kind, and a
        SPaT's intersections (`names`, if the caller has them); a fleet's vehicles hear the same SPaT, and every
        vehicle sends 10 BSMs a second."""
        h, body = frame.header, frame.body
        if names is None:
            names = spat_names(body)
        key = (topic, h.sender_id, h.sender_kind, names)
        why = self._judged.get(key, _UNJUDGED)
        if why is _UNJUDGED:
            why = self._judged.keep(key, self.sender_problem(topic, frame))
        return why

    def sender_problem(self, topic: str, frame: m.Frame) -> str | None:
        """Why this sender may not send this message on this topic, or None if it may."""
        levels = topic.split("/")
        k = next((i for i, level in enumerate(levels) if level in KINDS), None)
        if k is None:
            return None  # not one of the topic table's: the type check has already judged it
        kind, rest = levels[k], levels[k + 1 :]
        h = frame.header
        sender, sk = h.sender_id, h.sender_kind
        named = rest[-1] if rest else ""

        def must(kinds: tuple[m.SenderKind, ...], who: str | None = None) -> str | None:
            if sk not in kinds:
                return f"a {kind} from a {sk.name.lower()} (expected from a {' or '.join(x.name.lower() for x in kinds)})"
            if who is not None and sender != who:
                return f"a {kind} from {sender!r} on a topic of {who!r}"
            return None

        if kind == "bsm":
            return must((_VEHICLE,), named)
        if kind == "spat":
            path = rest[0] if rest else ""
            rsu = self.rsu_of.get(named)
            if rsu is None:
                return f"a SPaT for {named!r}, no intersection of this scenario"
            names = spat_names(frame.body)
            if any(name != named for name in names):
                return f"a SPaT on the topic of {named!r} about {sorted(set(names))}"
            if path == "rsu":
                return must((_RSU,), rsu)
            if path == "cloud":
                return must((_CLOUD,))
            return f"a SPaT on path {path!r} (expected rsu or cloud)"
        if kind == "map":
            rsu = self.rsu_of.get(named)
            return f"a MAP for {named!r}, no intersection of this scenario" if rsu is None else must((_RSU,), rsu)
        if kind == "rsm":
            return must((_RSU,), named)
        if kind == "rsi":
            return must((_CLOUD,), rest[-2] if len(rest) >= 2 else "")
        if kind in ("plan", "advisory"):
            return must((_CLOUD,))
        if kind == "prq":
            return must((_VEHICLE,), named)
        if kind == "prs":
            rsu = self.rsu_of.get(rest[0] if rest else "")
            return f"a priority status for {rest[:1]}, no intersection of this scenario" if rsu is None else must((_RSU,), rsu)
        if kind == "status" and len(rest) >= 2:
            expected = {"rsu": _RSU, "cloud": _CLOUD, "vehicle": _VEHICLE}.get(rest[0])
            return f"a status of an unknown kind of service {rest[0]!r}" if expected is None else must((expected,), rest[1])
        return None

    def ahead_us(self, frame: m.Frame, now_us: int) -> int:
        """How far [us] the message, or a SPaT's timing, is ahead of the receiver's clock `now_us` (<= 0: not)."""
        return latest_us(frame) - now_us


def spat_names(body: m.Body) -> tuple[str, ...]:
    """The intersections a SPaT is about, by name (none for any other message)."""
    if isinstance(body, m.Spat):
        return tuple(st.name for st in body.intersections)
    return (body.name,) if isinstance(body, m.CheckedSpat) else ()


def latest_us(frame: m.Frame) -> int:
    """The latest time [us UTC] a message claims: its generation, or a SPaT's timing if later (what a receiver holds
    against its clock, as `TrustRules.ahead_us`)."""
    body = frame.body
    if isinstance(body, m.Spat):
        return max([frame.header.gen_time_us, *(st.timestamp_ms * 1000 for st in body.intersections)])
    if isinstance(body, m.CheckedSpat):
        return max(frame.header.gen_time_us, body.timestamp_ms * 1000)
    return frame.header.gen_time_us
