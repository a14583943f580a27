"""The RSU service: one process per intersection (or several), on a broker.

It runs the intersection's signal controller in sim time and is its radio:
  - MAP, retained (QoS 1), on start;
  - SPaT at 10 Hz (QoS 0, 1 s expiry) on the sidelink path topic;
  - a retained online status, with a Last Will of offline;
  - SignalPlans from the cloud (QoS 1, persistent session), applied at the next phase boundary.
Bad payloads are counted per kind and never stop the service.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from roadside.plans import controllers
from roadside.signal import Mode, PhaseTiming, Plan, SignalController
from roadside.spat import intersection_state
from v2x import __version__
from v2x import messages as m
from v2x.inputs import BadInput
from v2x.network import Network
from v2x.scenario import Scenario
from v2x.station import Clock, Station
from v2x.topics import Topics, quadkey
from v2x.transport import MqttTransport, Transport, Will
from v2x.v2xmap import build_map

SPAT_PERIOD_S = 0.1  # [s] 10 Hz
SPAT_EXPIRY_S = 1  # [s] MQTT 5 message expiry for SPaT
LOST = "connection lost"  # the offline status's detail in the Will, published by the broker
STOPPED = "stopped"  # the detail of a clean shutdown


def rsu_id(sc: Scenario, index: int) -> str:
    iid = sc.intersections[index].id
    return next((r.id for r in sc.rsus if r.intersection == iid), f"rsu-{iid}")


def status_frame(station: Station, state: m.ServiceState, detail: str) -> bytes:
    return station.encode(m.Status(state, __version__, detail))


@dataclass
class RsuCounters:
    spat_sent: int = 0
    plans_applied: int = 0


class RsuService:
    """One RSU: the controller of intersection `index` and its radio."""

    def __init__(self, net: Network, index: int, transport: Transport, topics: Topics, clock: Clock) -> None:
        self.net = net
        self.index = index
        self.transport = transport
        self.topics = topics
        self.clock = clock
        self.spec = net.intersections[index].spec
        self.id = rsu_id(net.scenario, index)
        self.station = Station(self.id, m.SenderKind.RSU, clock)
        self.ctl: SignalController = controllers(net)[index]
        cx, cy = net.intersections[index].center
        center = net.frame.to_geo(cx, cy)
        self.tile = quadkey(center.lat_deg, center.lon_deg)
        self.counters = RsuCounters()
        self.bad = BadInput(self.id)
        self._group_ids = {g.group_id for g in net.groups if g.intersection == index}

    async def run(self, duration_s: float | None = None) -> None:
        """Announce, publish MAP, then SPaT at 10 Hz until `duration_s` of sim time (None: until cancelled)."""
        t = self.transport
        t.publish(self.topics.status("rsu", self.id), status_frame(self.station, m.ServiceState.ONLINE, self.spec.id), qos=1, retain=True)
        t.publish(self.topics.map(self.tile, self.spec.id), self.station.encode(m.MapData((build_map(self.net, self.index),))), qos=1, retain=True)
        await t.subscribe(self.topics.plan(self.spec.id), qos=1)
        async with asyncio.TaskGroup() as tg:
            plans = tg.create_task(self._plans(), name=f"{self.id}-plans")
            await self._radio(duration_s)
            plans.cancel()

    async def _radio(self, duration_s: float | None) -> None:
        start = self.clock.sim_s()
        k = 0
        while duration_s is None or self.clock.sim_s() < duration_s:
            now = self.clock.sim_s()
            self.ctl.step(max(now, self.ctl.t))
            state = intersection_state(self.net, self.index, self.ctl, self.clock.utc_us() // 1000, revision=k)
            self.transport.publish(
                self.topics.spat("rsu", self.tile, self.spec.id), self.station.encode(m.Spat((state,)), now), expiry_s=SPAT_EXPIRY_S
            )
            self.counters.spat_sent += 1
            k += 1
            await asyncio.sleep(max(start + k * SPAT_PERIOD_S - self.clock.sim_s(), 0.0))

    async def _plans(self) -> None:
        async for msg in self.transport.messages():
            frame = self.bad.decode(msg.topic, msg.payload)
            if frame is None:
                continue
            body = frame.body
            if not isinstance(body, m.SignalPlan):
                self.bad.record("wrong_type", msg.topic, m.message_type(body).value, frame.header.sender_id)
                continue
            plan = plan_from_message(body)
            unknown = {g for p in plan.phases for g in p.groups} - self._group_ids
            if unknown:
                self.bad.record("bad_plan", msg.topic, f"plan {body.plan_id} names unknown groups {sorted(unknown)}", frame.header.sender_id)
                continue
            self.ctl.command(plan)
            self.counters.plans_applied += 1


def plan_from_message(p: m.SignalPlan) -> Plan:
    mode = Mode.ACTUATED if p.mode is m.ControlMode.ACTUATED else Mode.FIXED
    phases = tuple(
        PhaseTiming(
            frozenset(ph.signal_groups), ph.green_s, ph.yellow_s, ph.all_red_s, ph.min_green_s, ph.max_green_s,
            phase_id=ph.phase_id,
        )
        for ph in p.phases
    )
    return Plan(p.plan_id, mode, phases, offset_s=p.offset_s)


def rsu_will(topics: Topics, sid: str, clock: Clock, detail: str) -> Will:
    """The Will fixed at connect time: a retained offline status."""
    return Will(topics.status("rsu", sid), status_frame(Station(sid, m.SenderKind.RSU, clock), m.ServiceState.OFFLINE, LOST))


async def serve(
    sc: Scenario, url: str, indices: list[int], duration_s: float | None, root: str, keepalive_s: int = 5,
    epoch_s: float | None = None,
) -> None:
    """Run RSUs for the given intersections, each with its own connection, until `duration_s`."""
    net = Network(sc)
    clock = Clock(epoch_s)
    topics = Topics(root)
    services: list[RsuService] = []
    transports: list[MqttTransport] = []
    for i in indices:
        sid = rsu_id(sc, i)
        transport = MqttTransport(
            url, sid, will=rsu_will(topics, sid, clock, sc.intersections[i].id), clean_start=False,
            session_expiry_s=3600, keepalive_s=keepalive_s,
        )
        transports.append(transport)
        services.append(RsuService(net, i, transport, topics, clock))
    for tr in transports:
        await tr.start()
    try:
        async with asyncio.TaskGroup() as tg:
            for svc in services:
                tg.create_task(svc.run(duration_s), name=svc.id)
    finally:
        for svc, tr in zip(services, transports, strict=True):
            tr.publish(topics.status("rsu", svc.id), status_frame(svc.station, m.ServiceState.OFFLINE, STOPPED), qos=1, retain=True)
            await tr.drain(2.0)
            await tr.close()
