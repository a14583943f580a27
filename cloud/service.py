"""The cloud-control service on a broker: the area picture, the SPaT relay, RSU liveness.

  - subscribes to BSMs, RSU SPaT and every service's status in its region (one wildcard each);
  - keeps a live picture: the latest BSM per vehicle, each RSU's liveness;
  - relays each intersection's SPaT, as the RSU reported it, on the cellular-path topic, so a
    vehicle out of RSU range (or without sidelink) still gets it;
  - reports an RSU lost when its status turns offline (its Last Will, published by the broker).
Policies (signal plans, hazards) plug in here; bad payloads are counted per kind, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from v2x import __version__
from v2x import messages as m
from v2x.inputs import BadInput
from v2x.network import Network
from v2x.station import Clock, Station
from v2x.topics import Topics, quadkey
from v2x.transport import MqttTransport, Transport, Will

CLOUD_ID = "cloud"


@dataclass
class RsuLiveness:
    online: bool
    since_s: float  # [s] sim time of the last change


@dataclass
class CloudCounters:
    received: Counter[str] = field(default_factory=Counter)
    relayed_spat: int = 0


class CloudService:
    def __init__(self, net: Network, transport: Transport, topics: Topics, clock: Clock, events: TextIO = sys.stdout) -> None:
        self.net = net
        self.transport = transport
        self.topics = topics
        self.clock = clock
        self.station = Station(CLOUD_ID, m.SenderKind.CLOUD, clock)
        self.vehicles: dict[str, tuple[m.Bsm, float]] = {}  # sender id -> (latest BSM, sim time)
        self.rsus: dict[str, RsuLiveness] = {}
        self.counters = CloudCounters()
        self.bad = BadInput("cloud")
        self.events = events
        self._tile_of = {}
        for i, ig in enumerate(net.intersections):
            g = net.frame.to_geo(*ig.center)
            self._tile_of[ig.spec.id] = quadkey(g.lat_deg, g.lon_deg)
            self._tile_of[str(i + 1)] = self._tile_of[ig.spec.id]

    async def run(self, duration_s: float | None = None) -> None:
        t = self.transport
        t.publish(self.topics.status("cloud", CLOUD_ID), self.station.encode(m.Status(m.ServiceState.ONLINE, __version__, "")), qos=1, retain=True)
        await t.subscribe(self.topics.area("bsm", ""), qos=0)
        await t.subscribe(f"{self.topics.root}/spat/rsu/#", qos=0)
        await t.subscribe(f"{self.topics.root}/status/#", qos=1)
        # run until `duration_s` of sim time since the run's epoch, as every tier does
        timeout = None if duration_s is None else max(duration_s - self.clock.sim_s(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listen(), timeout=timeout)

    async def _listen(self) -> None:
        async for msg in self.transport.messages():
            frame = self.bad.decode(msg.topic, msg.payload)
            if frame is not None:
                self.handle(msg.topic, frame)

    def handle(self, topic: str, frame: m.Frame) -> None:
        body = frame.body
        kind = m.message_type(body).value
        self.counters.received[kind] += 1
        now = self.clock.sim_s()
        if isinstance(body, m.Bsm):
            self.vehicles[frame.header.sender_id] = (body, now)
        elif isinstance(body, m.Spat) and frame.header.sender_kind is m.SenderKind.RSU:
            for st in body.intersections:
                tile = self._tile_of.get(st.name) or self._tile_of.get(str(st.ref.id))
                if tile is None:
                    self.bad.record("unknown_intersection", topic, f"SPaT for {st.name!r}", frame.header.sender_id)
                    continue
                self.transport.publish(
                    self.topics.spat("cloud", tile, st.name), self.station.encode(m.Spat((st,)), now), expiry_s=1
                )
                self.counters.relayed_spat += 1
        elif isinstance(body, m.Status) and frame.header.sender_kind is m.SenderKind.RSU:
            sid = frame.header.sender_id
            online = body.state is m.ServiceState.ONLINE
            before = self.rsus.get(sid)
            if before is None or before.online != online:
                self.rsus[sid] = RsuLiveness(online, now)
                # the Will says the connection was lost; a clean shutdown says it stopped
                name = "rsu-online" if online else ("rsu-stopped" if body.detail == "stopped" else "rsu-lost")
                self._event(name, rsu=sid, sim_s=round(now, 3))
        elif not isinstance(body, (m.Spat, m.Status)):
            self.bad.record("wrong_type", topic, kind, frame.header.sender_id)

    def _event(self, name: str, **fields: object) -> None:
        self.events.write(json.dumps({"event": name, **fields}) + "\n")
        self.events.flush()


def cloud_will(topics: Topics, clock: Clock) -> Will:
    offline = Station(CLOUD_ID, m.SenderKind.CLOUD, clock).encode(m.Status(m.ServiceState.OFFLINE, __version__, ""))
    return Will(topics.status("cloud", CLOUD_ID), offline)


async def serve(
    net: Network, url: str, duration_s: float | None, root: str, keepalive_s: int = 5, epoch_s: float | None = None,
    started: list[CloudService] | None = None,
) -> CloudService:
    """Run the cloud service; `started` receives it as soon as it exists (for a summary after Ctrl-C)."""
    clock = Clock(epoch_s)
    topics = Topics(root)
    transport = MqttTransport(url, CLOUD_ID, will=cloud_will(topics, clock), keepalive_s=keepalive_s)
    await transport.start()
    svc = CloudService(net, transport, topics, clock)
    if started is not None:
        started.append(svc)
    try:
        await svc.run(duration_s)
    finally:
        transport.publish(topics.status("cloud", CLOUD_ID), svc.station.encode(m.Status(m.ServiceState.OFFLINE, __version__, "")), qos=1, retain=True)
        await transport.drain(2.0)
        await transport.close()
    return svc
