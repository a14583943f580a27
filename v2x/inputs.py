"""Decoding what arrives, counting what is bad: one place for every service.

A bad payload never stops a service: it is counted per kind (DecodeError kinds, plus
"wrong_type" and the like that services add) and logged once per kind and sender.
"""

from __future__ import annotations

import logging
from collections import Counter

from v2x import codec
from v2x import messages as m
from v2x.errors import DecodeError

log = logging.getLogger(__name__)


class BadInput:
    """Counts rejected input per kind; logs the first of each kind from each sender."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def record(self, kind: str, topic: str, detail: str, sender: str = "?") -> None:
        self.counts[kind] += 1
        if (kind, sender) not in self._logged:
            self._logged.add((kind, sender))
            log.warning("%s: bad input (%s) on %s from %s: %s", self.owner, kind, topic, sender, detail)

    def decode(self, topic: str, payload: bytes) -> m.Frame | None:
        """The frame, or None after counting why not."""
        try:
            return codec.decode(payload)
        except DecodeError as e:
            self.record(e.kind, topic, str(e), sender=topic.rsplit("/", 1)[-1])
            return None
