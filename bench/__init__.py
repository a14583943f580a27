"""Benchmarks: each prints measured figures, with ratios against a reference measured in the same run."""

from __future__ import annotations

import argparse


def counts(text: str) -> tuple[int, ...]:
    """argparse type: whole numbers of at least 1, comma-separated ("400,1000,2000")."""
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers, comma-separated (e.g. 16,32,64)") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be at least 1")
    return values
