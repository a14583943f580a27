"""`Kept`: a cache of recent results that empties itself when full."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Kept(dict[K, V]):
    """A dict of at most `size` entries, emptied when a new one would exceed that: for results worth keeping for the
    next asker of the same key (a payload's decode, a sender's verdict, a rendered label), where keeping them in order
    or evicting one at a time would cost more than the occasional miss after a clear."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: K, value: V) -> V:
        """Store `value` under `key`, first emptying the cache if it is full; returns `value`."""
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
