"""`v2x run` stopped by a signal mid-run, as CI runners, `timeout` and process managers stop it: every process it
started (tiers, broker, watchers) ends with it, and the partial report is still written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")


def _children(pid: int) -> set[int]:
    """The processes below `pid`, from /proc (each process's parent is the 4th field of its stat)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        out |= kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: only its exit status waits for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _started(tmp_path: Path, *extra: str, background: bool = False) -> tuple[subprocess.Popen[str], set[int]]:
    """`v2x run` in real time, once its tiers are past their start (sim time running); with what it started.
    `background`: as a shell starts a background job, with SIGINT ignored."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "v2x", "run", SHORT, "--headless", "--duration", "60", "--report", str(tmp_path / "r.json"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None,
    )
    kids: set[int] = set()
    deadline = time.monotonic() + 40
    while len(kids) < 3 and time.monotonic() < deadline and proc.poll() is None:  # the broker and both tiers
        kids |= _children(proc.pid)
        time.sleep(0.2)
    time.sleep(6.0)  # the tiers started, connected and a few sim seconds in
    kids |= _children(proc.pid)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    assert len(kids) >= 3, f"expected a broker and two tier processes, found {kids}"
    return proc, kids


def _stopped(proc: subprocess.Popen[str], kids: set[int], sig: int, within_s: float) -> tuple[float, str]:
    t0 = time.monotonic()
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    left = {p for p in kids if _alive(p)}
    assert not left, f"still running after the run ended: {left}"
    assert took <= within_s, f"took {took:.1f} s to stop"
    return took, err


@pytest.mark.integration
@pytest.mark.parametrize(("broker", "sig", "background"), [
    ("embedded", signal.SIGTERM, False),
    ("mosquitto", signal.SIGTERM, True),  # started as a shell's background job: SIGINT ignored, SIGTERM still stops it
    ("mosquitto", signal.SIGHUP, False),
])
def test_a_signal_stops_every_process_of_the_run_and_the_report_is_written(tmp_path: Path, broker: str, sig: int, background: bool) -> None:
    proc, kids = _started(tmp_path, *(["--broker", "embedded"] if broker == "embedded" else []), background=background)
    # about 2 s on an idle machine; once 10.7 s (the embedded broker) under CI's four workers on two cores
    _, err = _stopped(proc, kids, sig, 15.0)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True, err[-2000:]
    assert report["broker"]["kind"].startswith("amqtt" if broker == "embedded" else "mosquitto")
    assert 0 < report["duration_s"] < 60


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_a_killed_run_leaves_no_process_behind(tmp_path: Path, broker: str) -> None:
    """SIGKILL cannot be handled: the broker and the tiers learn of `v2x run`'s death from the kernel (PDEATHSIG)."""
    proc, kids = _started(tmp_path, *(["--broker", "embedded"] if broker == "embedded" else []))
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10.0
    while {p for p in kids if _alive(p)} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {p for p in kids if _alive(p)}, "still running 10 s after the run was killed"


_STUCK = """
import asyncio, time
from v2x.net.broker import end_if_orphaned, watch_tasks
assert end_if_orphaned(grace_s=2.0) is not None


async def stubborn():  # a task that does not end when cancelled: asyncio.run's cleanup waits for it for good
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass


async def main():
    watch_tasks(asyncio.get_running_loop())
    asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
    print("armed", flush=True)
    await asyncio.sleep(120)


asyncio.run(main())  # its parent's death sends SIGINT: main is cancelled, then every task, and one does not end
"""
_PARENT = """
import signal, subprocess, sys, time
from v2x.net.broker import die_with_parent
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stderr=open(sys.argv[2], "w"), preexec_fn=die_with_parent(signal.SIGINT))
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.integration
def test_a_process_started_to_die_with_its_run_ends_even_when_the_signal_does_not_end_it(tmp_path: Path) -> None:
    """A tier whose asyncio loop did not finish once outlived a killed run by 20 minutes (its parent-death signal
    taken, its cleanup waiting on a task): `end_if_orphaned` ends such a process a grace time after its parent's
    death, and writes where each of its threads and tasks was. The child here is stuck as that tier was."""
    err = tmp_path / "stuck.err"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _STUCK, str(err)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "armed"
    parent.kill()
    parent.wait(timeout=30)  # (not its output: the child holds the pipe till it ends)
    time.sleep(0.5)
    assert _alive(child), "ended on the signal: nothing here shows the watch at work"
    deadline = time.monotonic() + 10.0
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "still running 10 s after its parent died"
    parent.stdout.close()
    said = err.read_text()
    assert "still running 2 s after the process that started it" in said
    dump = Path(said.rsplit("where each thread was: ", 1)[1].split(")")[0])
    where = dump.read_text()
    dump.unlink()
    assert dump.name == f"v2x-orphan-{child}.txt"
    assert "in run_until_complete" in where, where  # its main thread: in asyncio.run's cleanup
    assert "name='stubborn'" in where, where  # the task that did not end, and where it waits
    assert ', line 10, in stubborn' in where, where


def test_a_process_started_by_hand_is_not_watched() -> None:
    from v2x.net.broker import end_if_orphaned

    assert end_if_orphaned() is None  # pytest's own process: no parent-death signal armed


@pytest.mark.integration
def test_sigint_to_the_pid_stops_the_run_within_2_s(tmp_path: Path) -> None:
    proc, kids = _started(tmp_path)
    _stopped(proc, kids, signal.SIGINT, 2.0)
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] is True


@pytest.mark.integration
def test_a_tier_that_prints_more_than_a_pipe_holds_is_not_blocked_before_the_run_reads_it() -> None:
    """The fleet runs in `v2x run`'s own process and reads the other tiers' output only at the end: a tier that printed
    more than a pipe holds (64 KiB: a long run's cloud events) would block there, mid-run, until then."""
    from v2x.run.realtime import _stop, _Tier

    line = '{"event": "plan-sent", "rsu": "rsu-1", "padding": "' + "x" * 180 + '"}'
    tier = _Tier(["-c", f"import sys\nfor _ in range(2000): print({line!r})\nprint('warned', file=sys.stderr)"])
    deadline = time.monotonic() + 20.0
    while tier.poll() is None and time.monotonic() < deadline:  # nobody reads its output meanwhile
        time.sleep(0.05)
    assert tier.poll() == 0, "the tier blocked on its output"
    ended = _stop({"cloud": tier})["cloud"]
    assert ended.out.splitlines() == [line] * 2000
    assert (ended.err, ended.code) == ("warned\n", 0)
