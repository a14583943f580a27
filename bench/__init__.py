"""Benchmarks: each prints measured figures, with ratios against a reference measured in the same run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def counts(text: str) -> tuple[int, ...]:
    """argparse type: whole numbers of at least 1, comma-separated ("400,1000,2000")."""
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers, comma-separated (e.g. 16,32,64)") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be at least 1")
    return values


def apply_scheduling(args: argparse.Namespace) -> list[str]:
    """Put this benchmark's process under `--scheduling` (`add_scheduling_option`), as everything it starts inherits it
    (its brokers, the floor's and the C clients' processes), and say so; the option for each `v2x run` it starts, so
    that the stack and its reference run under the same policy."""
    from v2x.net.options import scheduling

    now, refused = scheduling(args.scheduling)
    print(f"scheduling: {now} (every process of this benchmark){f'; {refused}' if refused else ''}", flush=True)
    return ["--scheduling", args.scheduling]


def in_tree(script: str, tree: Path, args: list[str]) -> dict[str, Any]:
    """Run a benchmark script (`script`: its file) with another source tree (a git worktree) first on the path, and
    return the one JSON line it prints last (its `--json` output): a figure of that tree's code, in its own process.
    Run as a script, its own folder (not a `bench` package) comes first on the path, then the tree."""
    cmd = [sys.executable, script, *args]
    out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(tree.resolve())}, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
