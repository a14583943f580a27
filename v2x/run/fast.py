"""`v2x run --fast`: the whole scenario in one process, in lockstep, through the real broker.

Every vehicle, every RSU and the cloud has its own MQTT connection; the lockstep driver
(`v2x.net.lockstep`) moves them all one sim step at a time. In each step:

  1. new vehicles connect, departed ones disconnect; vehicles follow their intersection
     ahead and their tile with (un)subscriptions, each acknowledged by the broker;
  2. the RSUs step their controllers and publish SPaT and RSM when due; the cloud ticks;
  3. rounds: wait until everything published has arrived where it should, let every client
     handle what it got (the cloud relays SPaT in round 1, vehicles hear it in round 2...),
     until a round publishes nothing;
  4. the traffic moves on what each vehicle believes; vehicles that just entered connect;
     every vehicle publishes its BSM.

Timestamps are sim time on a fixed UTC epoch, so the same scenario and seed give the same
messages, byte for byte, and the same traffic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable

import numpy as np

from cloud.service import CLOUD_ID, CloudService
from roadside.service import RsuService, rsu_id
from v2x.core import messages as m
from v2x.core.network import Network
from v2x.core.scenario import Scenario
from v2x.core.traffic import Light, light_of
from v2x.core.trajectories import Trajectories
from v2x.core.truth import RoadUsers
from v2x.net.connection import Connection
from v2x.net.lockstep import Hub
from v2x.net.signing import role_permissions
from v2x.net.station import StepClock
from v2x.net.transport import MqttTransport, Transport
from v2x.run.picture import PictureScore
from v2x.run.results import Results
from v2x.vehicle.fleet import Fleet
from v2x.vehicle.summary import FleetSummary

FAST_EPOCH_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z: sim time 0 of every fast run


class FastRun:
    def __init__(
        self,
        sc: Scenario,
        conn: Connection,
        *,
        timeout_s: float = 5.0,
        shared_obus: bool = False,
        broker_gone: threading.Event | None = None,
        retained_to_wildcard: bool = True,
    ) -> None:
        """`conn`: the broker, its logins, the MQTT version, the topic root, signing and impairment; its epoch is
        not used (every fast run starts at FAST_EPOCH_S). `shared_obus`: the OBUs share one connection.
        `broker_gone`: set when the broker stopped answering (v2x.run.stall); the run then ends without goodbyes that
        nothing would carry. `retained_to_wildcard`: whether the broker delivers retained messages to wildcard
        subscriptions (v2x.run.gaps; the barrier expects them only then)."""
        self.sc = sc
        self.broker_gone = broker_gone or threading.Event()
        self.clock = StepClock(FAST_EPOCH_S)
        self.topics = conn.topics
        self.hub = Hub(self.topics.root, timeout_s, retained_to_wildcard)
        net = Network(sc)
        impairment = conn.impairment(sc)  # one for every tier: each draw depends only on the seed, receiver and bytes

        def mqtt(sid: str) -> MqttTransport:  # an RSU's or the cloud's: its writes of a turn in one system call, as in real time
            return conn.transport(sid, inbox=100_000, outbox=100_000, coalesce_writes=True)

        shared = Fleet.shared_connection(conn) if shared_obus else None

        def obu(sid: str) -> Transport:
            return self.hub.wrap(shared.transport(sid) if shared is not None else conn.transport(sid, inbox=1000, outbox=1000))

        self.fleet = Fleet(sc, conn, self.clock, transport_factory=obu, shared=shared)  # signs with conn.ca, if any
        self.fleet.truth = self._truth
        self.rsus = [
            RsuService(net, i, self.hub.wrap(mqtt(rsu_id(sc, i))), self.topics, self.clock, impairment)
            for i in range(len(sc.sites))
        ]
        cloud_transport = mqtt(CLOUD_ID)
        self.cloud = CloudService(net, self.hub.wrap(cloud_transport), self.topics, self.clock, events=None, impairment=impairment)
        cloud_transport.will = self.cloud.will  # made at connect time, after sign_with: signed like its other messages
        # signed messages: every station signs with its own pseudonym, from its tier's authority; every receiver verifies
        ids = list(sc.sites)
        roadside, cloud = (conn.authority("roadside", m.SenderKind.RSU, self.clock, ids),
                           conn.authority("cloud", m.SenderKind.CLOUD, self.clock))
        if roadside is not None and cloud is not None:
            for rsu, iid in zip(self.rsus, ids, strict=True):
                rsu.sign_with(roadside, role_permissions(m.SenderKind.RSU, [iid]))
            self.cloud.sign_with(cloud)
        self._groups = self.fleet.net.groups
        self.picture = PictureScore(self.cloud, self.rsus)  # the cloud's picture against the truth (v2x.run.picture)
        if self.fleet.sumo is not None:  # SUMO's lights show what the RSUs' controllers show, at every step (docs/sumo.md)
            self.fleet.sumo.follow({r.iid: r.ctl for r in self.rsus})

    def _truth(self, group: np.ndarray) -> np.ndarray:
        """What each vehicle's next signal really shows (for counting red-light entries)."""
        out = np.full(len(group), Light.NONE, dtype=np.int64)
        for i in np.flatnonzero(group >= 0):
            sg = self._groups[int(group[i])]
            out[i] = light_of(self.rsus[sg.intersection].ctl.state(sg.group_id))
        return out

    def _sense(self) -> None:
        """The RSUs' sensors see the road users' ground truth, handed over in process (as the true lights are to the
        fleet): it is no V2X message (docs/perception.md)."""
        sensing = [r.perception for r in self.rsus if r.perception is not None]
        core = self.fleet.core
        if core is not None and (sensing or self.picture.due(core.t)):
            truth = RoadUsers.of(core, self.fleet.equipment.mask(core))
            if self.picture.due(core.t):  # the cloud's picture as it stands, before this step's RSMs
                self.picture.sample(truth)
            for p in sensing:
                p.sense(truth)

    async def _rounds(self) -> None:
        """Deliver and handle until a round publishes nothing."""
        while True:
            before = self.hub.published
            await self.hub.settle()
            for rsu in self.rsus:
                rsu.receive()
            self.cloud.receive()
            self.fleet.receive()
            if self.hub.published == before:
                return

    async def _deliver_in_flight(self, limit_s: float = 60.0) -> None:
        """After the last step: let sim time run on, traffic standing still, until what the links delayed arrives."""
        receptions = [self.cloud.reception, *(r.reception for r in self.rsus), self.fleet.reception]
        await self._rounds()  # what the last step sent arrives in that step, as every step's does
        end = self.clock.t + limit_s
        while any(r.holding for r in receptions) and self.clock.t < end:
            self.clock.t += self.sc.step_s
            await self._rounds()

    async def run(self, duration_s: float, progress: Callable[[Fleet], None] | None = None) -> None:
        services = [self.cloud.transport, *(r.transport for r in self.rsus)]
        await asyncio.gather(*(t.start() for t in services))
        traffic = self.fleet.traffic
        try:
            await self.cloud.start()
            for rsu in self.rsus:
                await rsu.start()
            await self.fleet.start_v2v()
            await self.fleet.start_heads()
            await self._rounds()
            k = 0
            while traffic.t < duration_s - 1e-9:
                self.clock.t = traffic.t
                await asyncio.gather(*self.fleet.radio_work())
                await asyncio.gather(*self.fleet.subscription_work())
                self._sense()
                for rsu in self.rsus:
                    rsu.tick(traffic.t)
                self.cloud.tick(traffic.t)
                await self._rounds()
                self.fleet.move()
                self.clock.t = traffic.t  # BSMs are generated after the move
                await asyncio.gather(*self.fleet.radio_work())  # new vehicles' OBUs, before their first BSM
                self.fleet.publish_bsms()
                if progress is not None and k % 10 == 0:
                    progress(self.fleet)
                k += 1
            await self._deliver_in_flight()
        finally:
            await self.fleet.close()
            if not self.broker_gone.is_set():  # a stalled broker would hold each round and drain to its timeout
                await self._goodbyes(services)
            for t in services:
                await t.close()

    async def _goodbyes(self, services: list[Transport]) -> None:
        """The RSUs, then the cloud, say they are going (retained statuses), and what they sent is acknowledged."""
        for rsu in self.rsus:
            rsu.stopping()
        await self._rounds()
        self.cloud.stopping()
        await self._rounds()
        for t in services:
            await t.drain(2.0)


def run_fast(
    sc: Scenario, conn: Connection, duration_s: float, progress: Callable[[Fleet], None] | None = None,
    trajectories: bool = False, shared_obus: bool = False, broker_gone: threading.Event | None = None,
    retained_to_wildcard: bool = True,
) -> Results:
    """Run every tier here in lockstep until sim time `duration_s`; Ctrl-C stops it and still returns what the
    tiers reported. `trajectories`: record the fleet's (for `--plots`); `shared_obus`: the OBUs share one connection;
    `broker_gone`, `retained_to_wildcard`: see `FastRun`."""
    run = FastRun(sc, conn, shared_obus=shared_obus, broker_gone=broker_gone, retained_to_wildcard=retained_to_wildcard)
    if trajectories:
        run.fleet.trajectories = Trajectories(run.fleet.net)
    interrupted = False
    try:
        asyncio.run(run.run(duration_s, progress))
    except KeyboardInterrupt:
        interrupted = True
    return Results(
        mode="fast", fleet=FleetSummary.of(run.fleet), cloud=run.cloud.summary(), rsus=[r.summary() for r in run.rsus],
        cloud_events=run.cloud.event_log, lockstep=dataclasses.asdict(run.hub.stats), trajectories=run.fleet.trajectories,
        interrupted=interrupted, cloud_picture=run.picture.to_json() if run.picture.samples else None,
    )
