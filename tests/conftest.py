"""Shared by every test module."""

from __future__ import annotations

import pytest

from v2x.core.traffic import load_kernels


@pytest.fixture(scope="session", autouse=True)
def compiled_core() -> None:
    """numba's loops compiled before any test starts processes on the clock: in a clean clone the cache is
    empty, and tiers that each compiled (several seconds) would start late."""
    load_kernels()
