"""A run's claim on its topic root (`v2x run`): one run per root on a broker, and nothing an earlier run left.

The run holds a retained marker at `{root}/run` (v2x.core.topics: a Status frame whose sender id is the run id) for
as long as it runs, from a connection of its own (login `run`) whose Last Will clears it: a run that crashes frees
its root. It clears the marker when it stops, and announces it again after each reconnect (a broker restarted
without persistence forgets it).

Before claiming, it looks at what the broker retains under the root. Another run's marker: two runs under one root
would hear each other's messages, so this one refuses to start (`RootInUse`). No marker: anything the owners of
retained messages (MAP, RSI, statuses) left there is from a run that has gone, one that crashed or was killed before
it could clear it, and no receiver of this run must act on it (a hazard retained by an earlier run would warn this
run's vehicles): the claim clears it before any tier starts, and counts it by kind (`leftovers_cleared` in the
report). A retained message of another kind (a retained SPaT) is no run's state: it is left to the receivers'
checks (v2x.core.trust).

Once its marker is up, it reads it back through a wildcard (`{root}/+`): whether the broker delivers retained
messages to wildcard subscriptions (RabbitMQ's MQTT plugin does not, rabbitmq-server#8096), as vehicles take MAP and
hazards through one. That, and the MQTT version the broker speaks, is what `abilities` says (v2x.run.gaps).

Why at the root, not in every message: the tiers' receivers then need no run id in each frame (no change to the one
codec, no bytes added to every BSM), and a run cannot be told apart by what a forger could copy anyway. Two runs
starting within the same fraction of a second under one root can both find it free: the claim is a check, not a
lock.

The connection lives in a thread with its own event loop: the run's tiers come and go in loops of their own
(`asyncio.run` per mode), and the marker must stay up across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from types import TracebackType

from v2x import __version__
from v2x.core import codec
from v2x.core import messages as m
from v2x.core.errors import BrokerError, DecodeError
from v2x.core.topics import RETAINED_KINDS, kind_of
from v2x.net.connection import Connection
from v2x.net.security import RUN
from v2x.net.station import Clock, Station
from v2x.net.transport import MQTT5, Message, MqttTransport, Will
from v2x.run.gaps import Abilities

log = logging.getLogger(__name__)

QUIET_S = 0.5  # [s] retained messages come right after the SUBACK: this long without one, they have all come
LOOK_S = 5.0  # [s] the longest it looks
CLAIM_S = 30.0  # [s] the longest claiming may take (connecting included)
READ_BACK_S = 1.0  # [s] for the marker to come back through a wildcard (Mosquitto: about a millisecond)


class RootInUse(BrokerError):
    """Another run holds the topic root."""


class RootClaim:
    """`with RootClaim(conn):` the run's claim on `conn`'s topic root; `leftovers` what it cleared, by kind."""

    def __init__(self, conn: Connection, clock: Clock | None = None, broker_gone: threading.Event | None = None) -> None:
        """`clock`: the run's (a fast run's sim clock, at sim time 0: its marker is dated on the run's own time, as a
        recording of it logs it); default the wall clock. `broker_gone`: set when the broker stopped answering
        (v2x.run.stall): the marker is then left to the Last Will, not cleared and waited for."""
        self.conn = conn
        self.broker_gone = broker_gone or threading.Event()
        self.clock = clock or Clock()
        self.topic = conn.topics.run_marker()
        self.cleared: Counter[str] = Counter()  # what the claim's station sent: `<kind>_cleared`, and its markers
        self.abilities = Abilities()  # what the broker was found to do, once claimed
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def leftovers(self) -> dict[str, int]:
        """What an earlier run left retained under the root and the claim cleared, by kind."""
        cleared = ((k.removesuffix("_cleared"), n) for k, n in self.cleared.items() if k.endswith("_cleared"))
        return {k: n for k, n in sorted(cleared) if k in RETAINED_KINDS}  # not its own marker's

    def __enter__(self) -> RootClaim:
        self._thread = threading.Thread(target=self._main, name=f"root-claim-{self.conn.run_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(CLAIM_S):
            self._error = BrokerError(f"{self.conn.url}: no claim on topic root {self.conn.root!r} within {CLAIM_S:g} s")
        if self._error is not None:
            self.__exit__(None, None, None)
            raise self._error
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Clear the marker and disconnect."""
        if self._thread is not None and self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15.0)
            self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(self._hold())
        except BaseException as e:  # handed to the caller's thread
            self._error = e
        finally:
            self._ready.set()

    async def _hold(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        transport = self.conn.transport(RUN, will=Will(self.topic, b"", qos=1, retain=True))
        station = Station(self.conn.run_id, m.SenderKind.UNSPECIFIED, self.clock, transport, self.cleared)
        marker = m.Status(m.ServiceState.ONLINE, __version__, f"run {self.conn.run_id}")
        await transport.start()
        try:
            looked = [self.topic, *(f"{self.conn.topics.root}/{kind}/#" for kind in sorted(RETAINED_KINDS))]
            for topic_filter in looked:  # each as the ACL has it (v2x.net.security: the `run` login)
                await transport.subscribe(topic_filter, qos=1)
            retained = await self._retained(transport)
            held = retained.pop(self.topic, None)
            holder = _sender(held) if held is not None and held.payload else None
            if holder is not None and holder != self.conn.run_id:
                raise RootInUse(
                    f"topic root {self.conn.root!r} is held by run {holder} (its marker {self.topic} is retained on the "
                    "broker): two runs under one root would hear each other's messages; give this run another --root, "
                    "or let that one end (a run that crashed frees its root through its Last Will)"
                )
            for topic_filter in looked:
                await transport.unsubscribe(topic_filter)
            for topic, msg in sorted(retained.items()):
                if msg.payload and kind_of(topic) in RETAINED_KINDS:
                    log.warning("run %s: cleared %s, retained under %s by a run that has gone", self.conn.run_id, topic, self.conn.root)
                    station.clear(topic)
            station.publish(self.topic, marker, qos=1, retain=True)
            if not await transport.drain(10.0):
                raise BrokerError(f"{self.conn.url}: the claim on topic root {self.conn.root!r} was not acknowledged")
            self.abilities = Abilities(await self._read_back(transport), transport.protocol_version == MQTT5)
            self._ready.set()
            reconnects = transport.stats.reconnects
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
                if transport.stats.reconnects != reconnects:  # the Will cleared it, or a restarted broker forgot it
                    reconnects = transport.stats.reconnects
                    station.publish(self.topic, marker, qos=1, retain=True)
            if not self.broker_gone.is_set():
                station.clear(self.topic)
                await transport.drain(5.0)
        finally:
            await transport.close()

    async def _read_back(self, transport: MqttTransport) -> bool:
        """Whether the marker, retained, comes back through a wildcard subscription."""
        wildcard = f"{self.conn.topics.root}/+"
        await transport.subscribe(wildcard, qos=1)
        end = time.monotonic() + READ_BACK_S
        back = False
        while not back and time.monotonic() < end and await transport.wait(end - time.monotonic()):
            back = any(msg.topic == self.topic and msg.retain for msg in transport.receive())
        await transport.unsubscribe(wildcard)
        return back

    async def _retained(self, transport: MqttTransport) -> dict[str, Message]:
        """The retained messages under the root, by topic, as the broker hands them out on subscribing."""
        out: dict[str, Message] = {}
        end = time.monotonic() + LOOK_S
        while time.monotonic() < end and await transport.wait(QUIET_S):
            out.update((msg.topic, msg) for msg in transport.receive() if msg.retain)
        return out


def _sender(msg: Message) -> str:
    """Who a marker says holds the root (its sender id), or "(unreadable)"."""
    try:
        return codec.decode(msg.payload).header.sender_id
    except DecodeError:
        return "(unreadable)"
