"""`Kept`, the self-emptying cache of recent results (v2x/core/kept.py)."""

from __future__ import annotations

from v2x.core.kept import Kept


def test_kept_holds_at_most_its_size_and_empties_when_a_new_entry_would_exceed_it() -> None:
    kept: Kept[int, str] = Kept(3)
    assert [kept.keep(k, str(k)) for k in range(3)] == ["0", "1", "2"]  # keep returns what it stored
    assert kept == {0: "0", 1: "1", 2: "2"}
    kept.keep(3, "3")  # full: emptied first
    assert kept == {3: "3"}
    kept.keep(7, "7")
    assert kept == {3: "3", 7: "7"}
    assert kept.get(9) is None
