"""The visualiser and the recorder of a run (`v2x run`, `--record`, `--snapshot`): plain subscribers in their own
processes (`v2x viz`, `v2x record`), started and subscribed before the tiers, told when the run ends."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from v2x.core.errors import BrokerError
from v2x.net.broker import die_with_parent


class Watchers:
    """The visualiser and the recorder: plain subscribers in their own processes, subscribed before the tiers start."""

    READY_S = 30.0  # [s] for a watcher to connect and subscribe

    def __init__(
        self, url: str, root: str, broker_label: str, run_id: str, *, credentials_file: Path | None = None, record: Path | None = None,
        window: bool = False, snapshot: Path | None = None, fast: bool = False,
    ) -> None:
        """`record`: the MCAP file to record to; `window`: show the visualiser's window; `snapshot`: the PNG of its
        last frame (rendered offscreen without a window); `run_id`: the run's, in their client ids too; `fast`: a fast
        run (the recording's log time is sim time, each message's generation time)."""
        self.commands: dict[str, list[str]] = {}
        base = [sys.executable, "-m", "v2x"]
        login = ["--run-id", run_id, *([] if credentials_file is None else ["--credentials", str(credentials_file)])]
        if record is not None:
            self.commands["recording"] = [
                *base, "record", str(record), "--broker", url, "--root", root, *login, *(["--log-time", "sent"] if fast else []),
            ]
        self.window = window
        if window or snapshot is not None:
            self.commands["visualiser"] = [
                *base, "viz", "--broker", url, "--root", root, "--broker-label", broker_label, *login,
                *([] if snapshot is None else ["--snapshot", str(snapshot)]),
                *([] if window else ["--headless"]),
            ]
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        for name, cmd in self.commands.items():
            # a process group of its own: a Ctrl-C in the terminal reaches `v2x run` alone, which tells them (run_ended)
            self.procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, process_group=0,
                                               preexec_fn=die_with_parent(signal.SIGINT))  # and a killed run's end
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], self.READY_S)
            line = proc.stdout.readline() if ready else ""
            if '"ready"' not in line:
                self.run_ended()
                raise BrokerError(f"the {name} process did not start (exit code {proc.poll()}): {line.strip()[:300]}")

    def run_ended(self) -> dict[str, Any]:
        """Tell them the run is over (the recorder closes its file, the visualiser writes its snapshot); their summaries."""
        out: dict[str, Any] = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1 if name == "visualiser" else signal.SIGINT)
            if name == "visualiser" and self.window:
                continue  # it stays open; its summary is not needed
            try:
                text, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                text, _ = proc.communicate()
            summary = next((json.loads(x) for x in text.splitlines() if '"summary"' in x), None)
            if summary is None:
                print(f"v2x run: the {name} process ended with {proc.returncode} and no summary", file=sys.stderr)
            else:
                summary.pop("event", None)
                out[name] = summary
        return out

    def wait_window(self, console: Console) -> None:
        proc = self.procs.get("visualiser")
        if proc is not None and self.window and proc.poll() is None:
            console.print("the visualiser shows the run's last state: close its window to exit")
            try:
                proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
