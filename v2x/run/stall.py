"""A run's watch on its broker: a broker that stops answering ends the run, instead of hanging it.

Every second a thread of its own sends the broker an MQTT CONNECT on a connection of its own (the same probe as
`v2x.net.broker.mqtt_ping`). Any answer counts, a refused login too: the broker is working through its sockets.
No answer within `timeout_s`, while the broker's port still accepts connections, is a stall: a broker process that
is stopped (SIGSTOP), deadlocked, or blocked writing its own log, as the embedded amqtt was when its output went to
a pipe nobody read (issue #28). The watch then calls `on_stall` once (`v2x run` stops the run, as Ctrl-C does, and
writes the partial report).

A port that refuses connections is an outage, not a stall: the broker is down and may come back, and every tier's
connection reconnects with backoff on its own (docs/faults-security.md), so the watch waits for it.

Its own connection, not the run's: the probe then needs no subscription and no topic, and sends no message that a
tier or a watcher would receive; on a secured broker the CONNECT carries no login and is refused, which is an answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from v2x.net.broker import mqtt_connack
from v2x.net.transport import BrokerUrl

PROBE_EVERY_S = 1.0  # [s] between probes
DEFAULT_STALL_S = 10.0  # [s] without an answer: a stall


class StallWatch:
    """`with StallWatch(url, timeout_s, on_stall):` probes the broker at `url` until the block ends; `stalled` says
    why it called `on_stall` (None while the broker answers)."""

    def __init__(self, url: str, timeout_s: float, on_stall: Callable[[], None]) -> None:
        self.url = BrokerUrl.parse(url)
        self.timeout_s = timeout_s
        self.on_stall = on_stall
        self.stalled: str | None = None
        self.gone = threading.Event()  # set before `on_stall` is called
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="broker-stall-watch", daemon=True)

    def _watch(self) -> None:
        answered = time.monotonic()
        while not self._done.wait(PROBE_EVERY_S):
            try:
                mqtt_connack(self.url.host, self.url.port, min(self.timeout_s, 1.0), tls=self.url.tls)
            except TimeoutError:  # the port takes the connection, nothing answers on it
                pass
            except OSError:  # nothing listens: an outage, which the tiers ride out by reconnecting
                answered = time.monotonic()
                continue
            else:
                answered = time.monotonic()
                continue
            silent_s = time.monotonic() - answered
            if silent_s >= self.timeout_s:
                self.stalled = (f"the broker at {self.url} stopped answering: no reply to an MQTT CONNECT for {silent_s:.0f} s "
                                f"while its port still takes connections (--stall-timeout {self.timeout_s:g})")
                self.gone.set()
                self.on_stall()
                return

    def __enter__(self) -> StallWatch:
        if self.timeout_s > 0:
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
