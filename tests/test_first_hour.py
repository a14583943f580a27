"""docs/first-hour.md: every command in its `sh` blocks runs, in order, in a fresh folder, and leaves what the page
says it leaves (#28 item 8)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "first-hour.md"


def commands() -> list[str]:
    return [line.strip() for block in re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.S)
            for line in block.splitlines() if line.strip()]


@pytest.mark.integration
def test_every_command_of_the_first_hour_runs(tmp_path: Path) -> None:
    cmds = commands()
    assert [c.split()[1] if c.startswith("v2x") else c.split()[0] for c in cmds] == [
        "scenarios", "run", "plot", "python", "run", "replay", "sweep"]
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}  # no desktop: the runs go without a window
    env["SDL_VIDEODRIVER"] = "dummy"
    for cmd in cmds:
        argv = shlex.split(cmd)
        argv = [sys.executable, "-m", "v2x", *argv[1:]] if argv[0] == "v2x" else [sys.executable, *argv[1:]]
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stderr[-3000:]}"
    report = json.loads((tmp_path / "first.json").read_text())
    assert report["messages"]["bsm"]["sent"] > 0
    assert (tmp_path / "plots" / "latency_cdf.png").stat().st_size > 10_000
    assert (tmp_path / "hazard.mcap").stat().st_size > 10_000
    assert (tmp_path / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3  # a header and two runs
    assert (tmp_path / "sweep" / "sweep.png").exists()
