"""The fleet: every vehicle an OBU with its own MQTT identity, driving on what it received.

Real-time mode: the traffic core steps on the wall clock (sim time is seconds since the
run's shared UTC epoch). Each vehicle, while it is in the network:
  - connects as client `veh-<id>` and subscribes to SPaT from both paths (RSU sidelink and
    cloud cellular) on the tile of the intersection ahead, re-subscribing when that changes;
  - publishes a BSM at the scenario's rate (QoS 0, 1 s expiry) on the tile it is in;
  - feeds the SPaT it received, never the controller's state, into the core (`v2x.belief`).
Bad payloads are counted per kind and never stop the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from v2x import messages as m
from v2x.belief import SignalBelief
from v2x.bsm import build_bsms
from v2x.errors import BrokerError
from v2x.inputs import BadInput
from v2x.network import Network
from v2x.scenario import Scenario
from v2x.station import Clock, Station
from v2x.topics import Topics, quadkey
from v2x.traffic import Light, Traffic
from v2x.transport import MqttTransport

log = logging.getLogger(__name__)

BSM_EXPIRY_S = 1  # [s]


@dataclass
class Radio:
    """One vehicle's OBU: its connection, its header stamping and what it believes."""

    vid: int
    station: Station
    transport: MqttTransport
    belief: SignalBelief
    spat_filter: str | None = None
    ready: bool = False


@dataclass
class FleetCounters:
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)  # by type, SPaT also by path ("spat/rsu")
    connect_failures: int = 0
    # never silent: BSMs not sent because the vehicle's connection was not up yet, and the
    # transports' own drops (full outbox, QoS 0 while disconnected, full inbox), summed over vehicles
    bsm_not_connected: int = 0
    dropped_out: int = 0
    dropped_in: int = 0
    vehicles_with_spat: set[int] = field(default_factory=set)  # vehicles that heard SPaT at least once
    vehicles_approaching: set[int] = field(default_factory=set)  # vehicles that had a stop line ahead


class Fleet:
    def __init__(
        self,
        sc: Scenario,
        url: str,
        topics: Topics,
        clock: Clock,
        *,
        version: Literal["auto", "5", "3.1.1"] = "auto",
        keepalive_s: int = 10,
        seed: int | None = None,
    ) -> None:
        self.sc = sc
        self.url = url
        self.topics = topics
        self.clock = clock
        self.version = version
        self.keepalive_s = keepalive_s
        self.net = Network(sc)
        self.traffic = Traffic(self.net, sc, seed)
        self.radios: dict[int, Radio] = {}
        self.counters = FleetCounters()
        self.bad = BadInput("fleet")
        self._tasks: set[asyncio.Task[None]] = set()
        # the SPaT filter (both paths) on the tile of each intersection
        self._spat_filter = []
        for ig in self.net.intersections:
            g = self.net.frame.to_geo(*ig.center)
            self._spat_filter.append(topics.spat_area(quadkey(g.lat_deg, g.lon_deg)))

    # -- radios --------------------------------------------------------------------

    def _spawn(self, tg: asyncio.TaskGroup, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, radio: Radio) -> None:
        try:
            await radio.transport.start()
        except BrokerError as e:
            self.counters.connect_failures += 1
            log.warning("veh-%d: %s", radio.vid, e)
            return
        radio.ready = True

    async def _close(self, radio: Radio) -> None:
        self.counters.dropped_out += radio.transport.stats.dropped_out
        self.counters.dropped_in += radio.transport.stats.dropped_in
        with contextlib.suppress(Exception):
            await radio.transport.close()

    def _sync_radios(self, tg: asyncio.TaskGroup) -> None:
        """Give new vehicles an OBU; let departed vehicles' OBUs go."""
        present = set(int(v) for v in self.traffic.ids)
        for vid in present - self.radios.keys():
            sid = f"veh-{vid}"
            transport = MqttTransport(
                self.url, sid, version=self.version, keepalive_s=self.keepalive_s, inbox=1000, outbox=1000
            )
            radio = Radio(vid, Station(sid, m.SenderKind.VEHICLE, self.clock), transport, SignalBelief(self.sc.fleet.spat_stale_s))
            self.radios[vid] = radio
            self._spawn(tg, self._connect(radio), f"{sid}-connect")
        for vid in self.radios.keys() - present:
            self._spawn(tg, self._close(self.radios.pop(vid)), f"veh-{vid}-close")

    # -- receiving ---------------------------------------------------------------------

    def _receive(self, tg: asyncio.TaskGroup, group: np.ndarray) -> None:
        for i, vid in enumerate(self.traffic.ids):
            radio = self.radios.get(int(vid))
            if radio is None or not radio.ready:
                continue
            # SPaT for the intersection ahead, from both paths
            g = int(group[i])
            if g >= 0:
                self.counters.vehicles_approaching.add(int(vid))
                wanted = self._spat_filter[self.net.groups[g].intersection]
                if radio.spat_filter != wanted:
                    old, radio.spat_filter = radio.spat_filter, wanted
                    self._spawn(tg, self._resubscribe(radio, old, wanted), f"veh-{vid}-sub")
            for msg in radio.transport.poll():
                self._handle(radio, msg.topic, msg.payload)

    async def _resubscribe(self, radio: Radio, old: str | None, new: str) -> None:
        if old is not None:
            await radio.transport.unsubscribe(old)
        await radio.transport.subscribe(new)

    def _handle(self, radio: Radio, topic: str, payload: bytes) -> None:
        frame = self.bad.decode(topic, payload)
        if frame is None:
            return
        body = frame.body
        kind = m.message_type(body).value
        if isinstance(body, m.Spat):
            path = "cloud" if frame.header.sender_kind is m.SenderKind.CLOUD else "rsu"
            self.counters.received[f"spat/{path}"] += 1
            for st in body.intersections:
                radio.belief.receive(st, self.clock.sim_of_utc_ms(st.timestamp_ms), path)
            self.counters.vehicles_with_spat.add(radio.vid)
        else:
            self.counters.received[kind] += 1

    # -- the loop ---------------------------------------------------------------------------

    def beliefs(self, group: np.ndarray) -> np.ndarray:
        """The light each vehicle believes its next signal shows."""
        lights = np.full(self.traffic.n, Light.NONE, dtype=np.int64)
        now = self.traffic.t
        for i in np.flatnonzero(group >= 0):
            radio = self.radios.get(int(self.traffic.ids[i]))
            sg = self.net.groups[int(group[i])]
            lights[i] = Light.UNKNOWN if radio is None else radio.belief.light(sg.intersection + 1, sg.group_id, now)
        return lights

    def _publish_bsms(self) -> None:
        for vid, bsm in build_bsms(self.traffic, self.net.frame):
            radio = self.radios.get(vid)
            if radio is None or not radio.ready:
                self.counters.bsm_not_connected += 1
                continue
            tile = quadkey(bsm.position.lat_deg, bsm.position.lon_deg)
            radio.transport.publish(
                self.topics.bsm(tile, radio.station.sender_id), radio.station.encode(bsm, self.traffic.t), expiry_s=BSM_EXPIRY_S
            )
            self.counters.sent["bsm"] += 1

    async def run(self, duration_s: float, progress: Callable[[Fleet], None] | None = None) -> None:
        """Drive in real time until sim time `duration_s` (since the epoch)."""
        dt = self.sc.step_s
        bsm_every = max(round(1.0 / self.sc.fleet.bsm_hz / dt), 1)
        self.traffic.t = max(round(self.clock.sim_s() / dt) * dt, 0.0)
        k = 0
        async with asyncio.TaskGroup() as tg:
            try:
                while self.traffic.t < duration_s:
                    self._sync_radios(tg)
                    group, _ = self.traffic.signal_view()
                    self._receive(tg, group)
                    self.traffic.step(dt, self.beliefs(group))
                    if k % bsm_every == 0:
                        self._publish_bsms()
                    if progress is not None and k % 10 == 0:
                        progress(self)
                    k += 1
                    await asyncio.sleep(max(self.traffic.t - self.clock.sim_s(), 0.0))
            finally:
                for radio in list(self.radios.values()):
                    self._spawn(tg, self._close(radio), f"veh-{radio.vid}-close")
                self.radios.clear()
