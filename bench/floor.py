"""The messaging floor: the stack's MQTT traffic and nothing else, on Python clients, on this machine.

    python -m bench.floor                           # 2,000 vehicles (the scale target), 30 s
    python -m bench.floor --vehicles 400,1000,2000 --seconds 30
    python -m bench.floor --obu-connections shared --vehicles 2000,4000

Each vehicle is its own gmqtt client (its OBU's MQTT identity, as in the fleet): it publishes a
BSM-sized frame at 10 Hz on its junction's BSM topic, and a share of the vehicles (those
approaching a junction, in the stack) subscribe to their junction's SPaT, which the junction's
RSU publishes at 10 Hz and the cloud relays (both paths reach the vehicle, as in the stack).
Each fleet process has one more client that hears every BSM of its junctions (the V2V radio);
each RSU hears its junction's BSMs and publishes an RSM (its road users) with each SPaT, both
written at once as the stack's RSU coalesces its writes; the cloud hears every BSM, every RSU
SPaT and RSM, and relays the SPaT. Sizes are the stack's: a BSM, a four_way SPaT and an RSM
of a junction's vehicles, encoded by v2x's own codec.

With `--obu-connections shared` the pattern is the shared-connection fleet's (`v2x run --obu-connections
shared`): each fleet process carries all its vehicles' BSMs and its V2V radio on one client, whose writes go out
once per turn of the event loop, and subscribes to each of its junctions' SPaT once; a SPaT that arrives counts as
received by every vehicle hearing it (the stack hands it on in process).

The clients do nothing else: no traffic, no decoding, no measurement but a send time in each
message. MAP, status and hazard messages (a few per run) are left out. So this costs less than
the stack's real mix, never more: what a Python stack with one MQTT connection per vehicle needs
at the least, before it simulates anything.

Printed per vehicle count: CPU of every process (cores over the measured seconds; the clients'
own CPU clocks, Mosquitto's from /proc), the fleet processes' 10 Hz tick (steps started a whole
step late), vehicle->cloud and SPaT RSU->vehicle latency, and the broker's own count of messages
delivered against what the topology offers.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from bench import apply_scheduling, counts
from bench.transport import HOST, Deliveries, cpu_s
from v2x.net.broker import MosquittoBroker
from v2x.net.options import add_scheduling_option

STEP_S = 0.1  # every sender's period: BSM and SPaT at 10 Hz
PER_JUNCTION = 19  # vehicles per junction: four_way's steady count per copy in `python -m bench` capacity runs
SPAT_SHARE = 0.74  # vehicles subscribed to SPaT: the stack's SPaT receipts per vehicle-second / 20 at capacity
CONNECT_BATCH = 100  # clients connecting at once
MODES = ("per-vehicle", "shared")  # as `v2x run --obu-connections`


def message_sizes(participants: int = PER_JUNCTION) -> tuple[int, int, int]:
    """The bytes of a BSM, of a four_way SPaT and of an RSM listing `participants` road users (an RSU lists the
    vehicles it heard), as the stack's codec encodes them."""
    from v2x.core import messages as m
    from v2x.core import scenario
    from v2x.core.network import Network
    from v2x.core.signal.plans import controllers
    from v2x.core.signal.spat import intersection_state
    from v2x.net.station import Clock, Station

    net = Network(scenario.load(scenario.resolve("four_way")))
    clock = Clock(time.time())
    ctl = controllers(net)[0]
    pos = net.frame.to_geo(*net.intersections[0].center)
    bsm = Station("veh-123", m.SenderKind.VEHICLE, clock).encode(m.Bsm(position=pos, speed_mps=12.3, heading_deg=181.0))
    rsu = Station("rsu-J1", m.SenderKind.RSU, clock)
    spat = rsu.encode(m.Spat((intersection_state(net, 0, ctl, clock.utc_us() // 1000),)))
    users = tuple(m.Participant(type=m.ParticipantType.MOTOR, ptc_id=k + 1, source=m.SourceType.V2X, vehicle_id=f"veh-{100 + k}",
                                position=pos, speed_mps=12.3, heading_deg=181.0, width_m=1.8, length_m=4.5)
                  for k in range(participants))
    rsm = rsu.encode(m.Rsm(pos, users))
    return len(bsm), len(spat), len(rsm)


@dataclass
class Part:
    """What one process did in the measured seconds."""

    role: str
    cpu_s: float = 0.0
    wall_s: float = 0.0
    received: int = 0
    published: int = 0
    steps: int = 0
    late_steps: int = 0
    lag_ms_max: float = 0.0
    latency_ms: dict[str, list[float]] = field(default_factory=dict)


def _stamped(size: int) -> bytes:
    return struct.pack("<d", time.time()) + b"\0" * (size - 8)


async def _connect(clients: list[Any], port: int) -> None:
    for k in range(0, len(clients), CONNECT_BATCH):
        await asyncio.gather(*(c.connect(HOST, port) for c in clients[k:k + CONNECT_BATCH]))


class _Window:
    """The measured seconds: from `start` (UTC) to `end`; counts and CPU between them."""

    def __init__(self, part: Part, start: float, end: float) -> None:
        self.part, self.start, self.end = part, start, end
        self._cpu0 = self._t0 = 0.0
        self._rx0 = 0
        self.received = 0  # every message this process received, since connecting

    def open(self) -> None:
        self._cpu0, self._t0, self._rx0 = time.process_time(), time.time(), self.received

    def close(self) -> None:
        self.part.cpu_s = time.process_time() - self._cpu0
        self.part.wall_s = time.time() - self._t0
        self.part.received = self.received - self._rx0


async def _ticks(win: _Window, send: Any, tick: bool = True) -> None:
    """Call send() every STEP_S from five seconds before win.start; once measuring, count what it sent and, with
    `tick` (the fleet's, the one that must hold), the steps and those that start a whole step late."""
    part, due = win.part, win.start - 5.0  # five seconds of sending before the measured window
    measuring = False
    while due < win.end:
        now = time.time()
        if now < due:
            await asyncio.sleep(due - now)
            continue
        if not measuring and due >= win.start:
            measuring = True
            win.open()
        if measuring and tick:
            lag = now - due
            part.steps += 1
            part.late_steps += lag >= STEP_S
            part.lag_ms_max = max(part.lag_ms_max, lag * 1e3)
        sent = send()
        if measuring:
            part.published += sent
        due += STEP_S
    win.close()


def _go(conn: Connection) -> tuple[float, float]:
    conn.send("ready")
    start, end = conn.recv()
    return float(start), float(end)


def fleet(port: int, shard: int, shards: int, junctions: int, per_junction: int, spat_share: float, bsm_bytes: int,
          shared: bool, conn: Connection) -> None:
    """One fleet process: an OBU client per vehicle of its junctions, and a V2V radio hearing their BSMs. `shared`: as
    `--obu-connections shared` does it, one client carries every OBU's BSMs (its writes coalesced per turn of the event
    loop) and the V2V radio, and subscribes to each junction's SPaT once for the vehicles that hear it."""
    async def main() -> None:
        import gmqtt

        from v2x.net.transport import MqttTransport

        part = Part(f"fleet {shard}/{shards}")
        win = _Window(part, 0.0, 0.0)
        spat_lat: list[float] = []
        mine = range(shard, junctions, shards)
        listening = round(spat_share * per_junction)

        def obu_message(_c: object, _t: str, payload: bytes, _q: int, _p: object) -> int:
            win.received += 1
            if win.part.steps:
                spat_lat.append(time.time() - struct.unpack_from("<d", payload)[0])
            return 0

        def v2v_message(_c: object, _t: str, _payload: bytes, _q: int, _p: object) -> int:
            win.received += 1
            return 0

        def shared_message(_c: object, topic: str, payload: bytes, _q: int, _p: object) -> int:
            if "/spat/" in topic:  # handed to each vehicle that hears it, as the shared connection does
                win.received += listening
                if win.part.steps:
                    spat_lat.append(time.time() - struct.unpack_from("<d", payload)[0])
            else:
                win.received += 1
            return 0

        v2v = gmqtt.Client(f"floor-{'obus' if shared else 'v2v'}-{shard}")
        v2v.on_message = shared_message if shared else v2v_message
        obus: list[tuple[Any, str, int, bool]] = []
        for j in mine:
            for k in range(per_junction):
                c = v2v
                if not shared:
                    c = gmqtt.Client(f"floor-veh-{j}-{k}")
                    c.on_message = obu_message
                obus.append((c, f"floor/bsm/{j}/veh-{j}-{k}", j, k < listening))
        clients = [v2v] if shared else [c for c, *_ in obus] + [v2v]
        await _connect(clients, port)
        if shared:
            MqttTransport._coalesce(v2v)  # the shared fleet connection's writes: one system call per turn of the loop
            v2v.subscribe([gmqtt.Subscription(f"floor/spat/{j}/#", qos=0) for j in mine if listening])
        else:
            for c, _, j, listens in obus:
                if listens:
                    c.subscribe(f"floor/spat/{j}/#", qos=0)
        v2v.subscribe([gmqtt.Subscription(f"floor/bsm/{j}/#", qos=0) for j in mine])  # one packet: ids are few
        await asyncio.sleep(1.0)
        win.start, win.end = await asyncio.get_running_loop().run_in_executor(None, _go, conn)

        def send() -> int:
            for c, topic, _, _ in obus:
                c.publish(topic, _stamped(bsm_bytes), qos=0)
            return len(obus)

        await _ticks(win, send)
        part.latency_ms["spat rsu/cloud->vehicle"] = [x * 1e3 for x in spat_lat]
        conn.send(part)
        if shared:  # what is held goes out before the DISCONNECT, as MqttTransport.close does
            v2v._connection._protocol._v2x_uncork()
        await asyncio.gather(*(c.disconnect() for c in clients))

    asyncio.run(main())


def roadside(port: int, junctions: int, spat_bytes: int, rsm_bytes: int, conn: Connection) -> None:
    """The RSUs, one client each (as in `python -m roadside`): SPaT and RSM out (written together, as an RSU's
    connection coalesces its writes), their junction's BSMs in."""
    async def main() -> None:
        import gmqtt

        from v2x.net.transport import MqttTransport

        part = Part("roadside")
        win = _Window(part, 0.0, 0.0)

        def on_message(_c: object, _t: str, _payload: bytes, _q: int, _p: object) -> int:
            win.received += 1
            return 0

        rsus = []
        for j in range(junctions):
            c = gmqtt.Client(f"floor-rsu-{j}")
            c.on_message = on_message
            rsus.append(c)
        await _connect(rsus, port)
        for j, c in enumerate(rsus):
            MqttTransport._coalesce(c)
            c.subscribe(f"floor/bsm/{j}/#", qos=0)
        await asyncio.sleep(1.0)
        win.start, win.end = await asyncio.get_running_loop().run_in_executor(None, _go, conn)

        def send() -> int:
            for j, c in enumerate(rsus):
                c.publish(f"floor/spat/{j}/rsu", _stamped(spat_bytes), qos=0)
                c.publish(f"floor/rsm/{j}", _stamped(rsm_bytes), qos=0)
            return 2 * len(rsus)

        await _ticks(win, send, tick=False)
        conn.send(part)
        for c in rsus:  # what is held goes out before the DISCONNECT
            c._connection._protocol._v2x_uncork()
        await asyncio.gather(*(c.disconnect() for c in rsus))

    asyncio.run(main())


def cloud(port: int, conn: Connection) -> None:
    """The cloud: every BSM in (latency measured), every RSU SPaT in and relayed, every RSM in."""
    async def main() -> None:
        import gmqtt

        part = Part("cloud")
        win = _Window(part, 0.0, 0.0)
        lat: list[float] = []
        measuring = [False]
        c = gmqtt.Client("floor-cloud")

        def on_message(_c: object, topic: str, payload: bytes, _q: int, _p: object) -> int:
            win.received += 1
            if topic.endswith("/rsu"):
                c.publish(topic[:-3] + "cloud", payload, qos=0)
                part.published += 1
            elif measuring[0] and topic.startswith("floor/bsm/"):
                lat.append(time.time() - struct.unpack_from("<d", payload)[0])
            return 0

        c.on_message = on_message
        await c.connect(HOST, port)
        c.subscribe("floor/bsm/#", qos=0)
        c.subscribe("floor/spat/+/rsu", qos=0)
        c.subscribe("floor/rsm/#", qos=0)
        await asyncio.sleep(1.0)
        win.start, win.end = await asyncio.get_running_loop().run_in_executor(None, _go, conn)
        await asyncio.sleep(max(win.start - time.time(), 0.0))
        measuring[0] = True
        win.open()
        part.published = 0
        await asyncio.sleep(max(win.end - time.time(), 0.0))
        win.close()
        measuring[0] = False
        part.latency_ms["vehicle->cloud"] = [x * 1e3 for x in lat]
        conn.send(part)
        await c.disconnect()

    asyncio.run(main())


@dataclass
class FloorResult:
    vehicles: int
    junctions: int
    parts: list[Part]
    broker_cores: float
    delivered_per_s: float
    offered_per_s: float
    shared: bool = False  # one connection per fleet process (else one per vehicle)

    @property
    def mode(self) -> str:
        return MODES[self.shared]

    @property
    def cores(self) -> float:
        return sum(p.cpu_s / p.wall_s for p in self.parts if p.wall_s) + self.broker_cores

    @property
    def late_share(self) -> float:
        steps = sum(p.steps for p in self.parts)
        return sum(p.late_steps for p in self.parts) / steps if steps else 1.0

    def p(self, hop: str, q: float) -> float:
        xs = [x for p in self.parts for x in p.latency_ms.get(hop, [])]
        return float(np.percentile(xs, q)) if xs else math.nan


def run(vehicles: int, seconds: float, workers: int = 2, per_junction: int = PER_JUNCTION, spat_share: float = SPAT_SHARE,
        sizes: tuple[int, int, int] | None = None, shared: bool = False) -> FloorResult:
    """The floor at `vehicles`: every process connected, five seconds of traffic, then `seconds` measured. `shared`:
    each fleet process carries its vehicles on one connection (`--obu-connections shared`'s pattern)."""
    bsm_bytes, spat_bytes, rsm_bytes = sizes or message_sizes(per_junction)
    junctions = max(math.ceil(vehicles / per_junction), workers)
    per = per_junction
    ctx = mp.get_context("spawn")
    with MosquittoBroker(extra_config="sys_interval 1") as broker:
        port = broker.port or 0
        pipes, procs = [], []
        specs: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
            (cloud, (port,)),
            (roadside, (port, junctions, spat_bytes, rsm_bytes)),
            *[(fleet, (port, i, workers, junctions, per, spat_share, bsm_bytes, shared)) for i in range(workers)],
        ]
        for target, args in specs:
            here, there = ctx.Pipe()
            proc = ctx.Process(target=target, args=(*args, there))
            proc.start()
            pipes.append(here)
            procs.append(proc)
        try:
            for here in pipes:
                if not here.poll(300):
                    raise RuntimeError("a floor process did not connect its clients in 300 s")
                here.recv()
            start = time.time() + 6.0  # five seconds of traffic first (see _ticks), then measure
            end = start + seconds
            counter = Deliveries(broker)
            for here in pipes:
                here.send((start, end))
            time.sleep(max(start - time.time(), 0.0))
            b0 = cpu_s(broker.pid or 0)
            time.sleep(max(end - time.time(), 0.0))
            broker_cores = (cpu_s(broker.pid or 0) - b0) / seconds
            parts: list[Part] = []
            for here in pipes:
                if not here.poll(60 + seconds):
                    raise RuntimeError("a floor process did not report")
                parts.append(here.recv())
            counter.stop()
        finally:
            for proc in procs:
                proc.join(20)
                if proc.is_alive():
                    proc.kill()
    n = junctions * per
    listening = junctions * round(spat_share * per)
    # per second: BSMs to the cloud, the RSU and the V2V radio; SPaT (both paths) to listening vehicles (shared: to their
    # fleet process's connection, once); RSU SPaT and RSM to the cloud
    spat = 2 * (junctions if listening else 0) if shared else 2 * listening
    offered = (3 * n + spat + 2 * junctions) / STEP_S
    return FloorResult(n, junctions, parts, broker_cores, counter.rate(start, end), offered, shared)


def report(r: FloorResult) -> None:
    print(f"  {r.vehicles:,} vehicles ({r.junctions} junctions, {r.mode}): {r.cores:.2f} cores busy of {os.cpu_count()} "
          f"(" + ", ".join(f"{p.role} {p.cpu_s / p.wall_s:.2f}" for p in r.parts if p.wall_s) + f", mosquitto {r.broker_cores:.2f})", flush=True)
    print(f"      fleet steps late {r.late_share:.1%} (max lag {max(p.lag_ms_max for p in r.parts):.0f} ms); "
          f"vehicle->cloud p50 {r.p('vehicle->cloud', 50):.1f} ms, p99 {r.p('vehicle->cloud', 99):.1f} ms; "
          f"SPaT ->vehicle p99 {r.p('spat rsu/cloud->vehicle', 99):.1f} ms; "
          f"broker delivered {r.delivered_per_s:,.0f}/s of {r.offered_per_s:,.0f}/s offered", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vehicles", type=counts, default=(2000,), help="vehicle counts, comma-separated (default 2000)")
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per count (default 30)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="fleet processes (default: the cores)")
    p.add_argument("--obu-connections", choices=MODES, default=MODES[0], help="one MQTT connection per vehicle (the "
                   "default, as `v2x run`), or one per fleet process, as `v2x run --obu-connections shared`")
    add_scheduling_option(p, "the floor's processes and its broker")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.seconds < 5:
        p.error(f"--seconds {args.seconds:g}: at least 5 (the broker's count of deliveries arrives every second or two)")
    apply_scheduling(args)
    sizes = bsm_bytes, spat_bytes, rsm_bytes = message_sizes()
    print(f"messaging floor: gmqtt clients through Mosquitto; BSM {bsm_bytes} B, SPaT {spat_bytes} B, RSM {rsm_bytes} B; "
          f"{PER_JUNCTION} vehicles per junction, {SPAT_SHARE:.0%} of them hearing SPaT", flush=True)
    for v in args.vehicles:
        report(run(v, args.seconds, args.workers, sizes=sizes, shared=args.obu_connections == "shared"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
