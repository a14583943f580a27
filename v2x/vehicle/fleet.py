"""The fleet: every vehicle an OBU with its own MQTT identity, driving on what it received.

Real-time mode: the traffic core steps on the wall clock (sim time is seconds since the
run's shared UTC epoch). Each vehicle, while it is in the network:
  - connects as station `veh-<id>` (client id `<run id>-veh-<id>`) and subscribes to SPaT from both paths (RSU sidelink and
    cloud cellular) and to MAP on the tile of the intersection ahead, and to hazards (RSI)
    and advisories on its own tile, re-subscribing when either changes;
  - publishes a BSM at the scenario's rate (QoS 0, 1 s expiry) on the tile it is in;
  - feeds the SPaT it received, never the controller's state, into the core (`v2x.vehicle.belief`).
A stalled vehicle of the scenario (a hazard event of kind stalled_vehicle) is a connected car
too: while it stands, its OBU (`stalled-<event>`) sends BSMs, speed 0, hazard lights on.
The fleet also has one V2V radio: a single subscription to every BSM in the area, each kept
as its sender's latest and decoded when an application first needs it; what each vehicle
heard of it over the sidelink (range, loss) is decided then (`v2x.vehicle.sidelink`).
Bad payloads are counted per kind and never stop the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.errors import BrokerError
from v2x.core.kept import Kept
from v2x.core.mobility import Mobility
from v2x.core.network import Network
from v2x.core.scenario import Scenario
from v2x.core.topics import RETAINED_KINDS, kind_of, quadkey, tile_inside
from v2x.core.traffic import HAZARD_SLOW_M, HAZARD_SPEED_MPS, KIND_INDEX, Light, Traffic
from v2x.core.trajectories import Trajectories
from v2x.core.trust import TrustRules
from v2x.core.truth import TruthFeed
from v2x.net.connection import Connection
from v2x.net.reception import Reception
from v2x.net.shared import SharedConnection
from v2x.net.signing import Authority, valid_from_ms
from v2x.net.station import Clock, Station
from v2x.net.transport import ConnectionSummary, Message, MqttTransport, Transport, TransportStats, outage_summary
from v2x.vehicle.apps import GLOSA_RANGE_M, HLW_RANGE_M, Apps, HazardWatch, Warning
from v2x.vehicle.attacks import Attacks
from v2x.vehicle.belief import Received, SignalBelief
from v2x.vehicle.bsm import DueBsm, bsms_of, build_bsm_wires, build_bsms
from v2x.vehicle.emergency import PriorityRequests
from v2x.vehicle.equipment import Equipment
from v2x.vehicle.gnss import GnssError
from v2x.vehicle.sidelink import Neighbours

if TYPE_CHECKING:
    from v2x.sumo.mobility import SumoTraffic
    from v2x.vehicle.heads import SpatHeads

log = logging.getLogger(__name__)

BSM_EXPIRY_S = 1  # [s]
# [1/s] the most QoS 0 messages (SPaT, RSM, MAP, BSM) an OBU takes in: ten times what one hears among several
# intersections. A flood beyond it is dropped as it comes off the socket and counted (v2x.net.transport)
OBU_QOS0_PER_S = 500.0
# Real time: a step's BSMs go out spread evenly over the step, as unsynchronised OBUs send them,
# in slices of at least SLICE_S (the event loop's timer resolution is 1 ms). Bursts cost more
# than the same rate spread out: between bursts the processes idle and wake slowly (on the
# reference machine a message after 100 ms idle takes ~0.7 ms, after 2 ms ~0.2 ms).
SLICE_S = 0.001  # [s]
# With one connection for all of a fleet process's OBUs (--obu-connections shared) a slice's BSMs leave in one write,
# and every slice wakes the broker and each receiver once: ten slices a step instead of a hundred cost a sixth less
# CPU in all (four_way x 40, docs/scale.md) for about a quarter of a millisecond more vehicle->cloud latency at the median
SHARED_SLICE_S = 0.01  # [s]
RECEIVE_EVERY_S = 0.01  # [s] how often the vehicles act on what they received, within a step
SPATS_KEPT = 256  # SPaT frames whose states the vehicles share, kept (a district's SPaT of a step or two, both paths)
HAZARD_KEEP_OFF_S = 1.0  # [s] on SUMO, a warned vehicle is kept out of the hazard's lane this long at a time (renewed each step)


@dataclass(eq=False)
class Radio:
    """One vehicle's OBU: its station (identity, header stamping and connection) and what it believes. Each is
    itself alone (compared and hashed by identity)."""

    vid: int
    station: Station
    belief: SignalBelief
    filters: frozenset[str] = frozenset()  # what it is subscribed to
    place: tuple[str | None, int] | None = None  # (tile, intersection ahead) the filters were made for
    hazards: dict[str, m.RoadTrafficEvent] = field(default_factory=dict)  # active, by "<sender>/<event id>"
    tile: str | None = None  # the tile of its latest BSM
    xy: tuple[float, float] | None = None  # [m] where its latest BSM said it was
    ready: bool = False
    order: int = 0  # the how-manieth OBU its fleet made: `Fleet.radios`'s order
    bsm_topic: str | None = None  # where its BSMs go, in its tile
    tile_box: tuple[float, float, float, float] = (math.inf, math.inf, -math.inf, -math.inf)  # `tile_inside(tile)`

    @property
    def transport(self) -> Transport:
        if self.station.transport is None:
            raise RuntimeError(f"{self.station.sender_id}: an OBU without a connection")
        return self.station.transport


@dataclass
class FleetCounters:
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)  # by type, SPaT also by path ("spat/rsu")
    connect_failures: int = 0
    resubscriptions: int = 0
    arrived_after_leaving: int = 0  # delayed by the link until after its vehicle had left
    subscribe_failures: int = 0  # (un)subscriptions the broker did not acknowledge in time (retried)
    # never silent: BSMs not sent because the vehicle's connection was not up yet, and the
    # transports' own drops (full outbox, QoS 0 while disconnected, full inbox), summed over vehicles
    bsm_not_connected: int = 0
    bsm_not_sent: int = 0  # generated (a sequence number taken) but not sent: the connection was down
    dropped_out: int = 0
    dropped_in: int = 0
    not_subscribed: int = 0  # retained messages on topics the vehicle never subscribed to (TransportStats.not_subscribed)
    vehicles_with_spat: set[int] = field(default_factory=set)  # vehicles that heard SPaT at least once
    vehicles_with_map: set[int] = field(default_factory=set)  # vehicles that received a MAP at least once
    vehicles_approaching: set[int] = field(default_factory=set)  # vehicles that had a stop line ahead


TransportFactory = Callable[[str], Transport]


_order = attrgetter("order")  # a Radio's place in `Fleet.radios`


def _hazard_key(rsi_topic: str) -> str:
    """`<sender>/<event id>`: the last two levels of an RSI topic name one hazard."""
    return "/".join(rsi_topic.rsplit("/", 2)[-2:])


class Fleet:
    """The vehicles of a scenario (or of one shard of it), each with its own broker connection.

    Synchronous at heart, with its I/O returned as coroutines: `radio_work()` (connect new
    OBUs, let departed ones go) and `subscription_work()` (follow the intersection ahead and
    the tile) return what to await; `receive()` handles what arrived; `step()` moves the
    traffic on what each vehicle believes and publishes BSMs when due. `run()` paces them in
    real time, spawning the coroutines; the lockstep driver awaits them (fast mode).
    """

    def __init__(
        self,
        sc: Scenario,
        conn: Connection,
        clock: Clock,
        *,
        seed: int | None = None,
        shard: tuple[int, int] = (0, 1),
        by_area: bool = False,
        transport_factory: TransportFactory | None = None,
        shared: SharedConnection | None = None,
    ) -> None:
        """`conn`: how the OBUs reach the broker (and sign, and whether links are impaired); `clock`: sim time
        (the wall clock from the run's epoch in real time, the lockstep's in fast mode). `shared`: the OBUs share
        this one connection (`--obu-connections shared`; v2x.net.shared); with no `transport_factory`, each OBU's
        transport is made on it."""
        self.sc = sc
        self.conn = conn
        self.topics = conn.topics
        self.clock = clock
        self.shard = shard
        self.net = Network(sc)
        # sharded by area: whole sites (v2x.core.network components) dealt round-robin; else by vehicle id
        self.area: frozenset[int] | None = None
        if by_area:
            sites = len(self.net.components)
            if sites < shard[1]:
                raise ValueError(f"{sc.name} has {sites} independent site(s): too few to shard by area {shard[1]} ways (use --copies)")
            self.area = self.net.shard_area(*shard)
        # what moves the vehicles (docs/sumo.md): the numba core, on which the applications act, or SUMO
        self.core: Traffic | None = None
        self.sumo: SumoTraffic | None = None
        self.traffic: Mobility
        if sc.mobility == "sumo":
            if shard != (0, 1):
                raise ValueError(f"{sc.name} runs on SUMO, one simulation per process: it cannot be sharded (run one fleet)")
            from v2x.sumo.mobility import SumoTraffic  # the sumo extra: only a SUMO scenario needs it

            self.traffic = self.sumo = SumoTraffic(sc, seed)
        else:
            self.traffic = self.core = Traffic(self.net, sc, seed, area=self.area, shard=shard if by_area else (0, 1))
        self.radios: dict[int, Radio] = {}
        # transports of OBUs that have gone, for the outage summary: those that lost their connection (the others have
        # nothing to say there, and are not kept: one per vehicle that ever passed)
        self.closed_stats: list[TransportStats] = []
        self.counters = FleetCounters()
        impairment = conn.impairment(sc)
        self.reception = Reception(
            "fleet", m.SenderKind.VEHICLE, clock, impairment, self._distance, max_age_s={"spat": sc.fleet.spat_stale_s},
            trust=TrustRules(sc),
        )
        self._by_sid: dict[str, Radio] = {}
        self._rsu_xy = self.net.rsu_xy
        self.bad = self.reception.bad
        self.truth: Callable[[np.ndarray], np.ndarray] | None = None  # the true lights (fast mode: red-light count)
        self.heard = SignalBelief(sc.fleet.spat_stale_s)  # the freshest SPaT any vehicle heard, per intersection
        # by id of a SPaT frame (Reception decodes the bytes every vehicle hears once): the frame, what each vehicle
        # takes from it, and its count's name; worked out for the first vehicle, shared by the others
        self._spats: Kept[int, tuple[m.Frame, tuple[Received, ...], str]] = Kept(SPATS_KEPT)
        self.trajectories: Trajectories | None = None  # set to record them (`--plots`)
        self.neighbours = Neighbours(sc.links.sidelink.range_m, impairment, bad=self.bad)
        self.neighbours.trust, self.neighbours.utc_us = self.reception.trust, clock.utc_us  # V2V: the same checks
        self.v2v: Radio | None = None
        self.sumo_lights: SpatHeads | None = None  # SUMO in real time: its lights follow the RSUs' SPaT (start_sumo_lights)
        self.stalled: dict[int, Radio] = {}  # hazard event -> the stalled vehicle's OBU
        self.apps = Apps(self.net, glosa=sc.fleet.glosa, neighbours=self.neighbours)  # the vehicles' applications
        self.hazard_watch = HazardWatch(self.net, sc.events)  # ground truth for the hazard measurements
        self.priority = PriorityRequests(self.net)  # emergency vehicles' signal priority requests
        # HLW on SUMO: each RSI's (edge, position [m], lane) on the network; the warnings awaiting arrival there
        self._hazard_road: dict[str, tuple[str, float, int] | None] = {}
        self._hlw_pending: list[tuple[Warning, str, float]] = []
        self.ca: Authority | None = None  # signed messages: the authority that issues each OBU its pseudonym (sign_with)
        self.attacks = Attacks(sc, self.net) if sc.attacks else None  # misbehaving OBUs
        # where the OBUs think they are (None: exactly where they are)
        self.gnss = GnssError(sc.fleet.gnss, sc.seed if seed is None else seed, self.net.frame) if sc.fleet.gnss.receiver != "off" else None
        self.ghosts: dict[str, Station] = {}  # Sybil attackers' ghost identities
        # who has an OBU (`fleet.penetration`); the signal heads the others see, when there are others (start_heads)
        self.equipment = Equipment(sc.fleet, sc.seed if seed is None else seed, self.mine)
        self.hazard_watch.has_obu = None if self.equipment.everyone else self.equipment.has_obu  # the unequipped apart
        self.heads: Radio | None = None
        self.shared = shared
        self._factory = transport_factory or (shared.transport if shared is not None else self._mqtt)
        # the OBUs' transports are the shared connection's own (real time): it hands over each message once, with the
        # OBUs it is for (`_fanned`), and the fleet takes it for all of them at once
        self._fanned = shared if shared is not None and transport_factory is None else None
        if self._fanned is not None:
            self._fanned.fanned = []
        # one connection per OBU, its own (real time): the OBUs whose inbox got something since the fleet last looked,
        # each connection saying so on arrival; the fleet looks at these alone (most OBUs get nothing in 10 ms)
        self._arrivals: dict[Radio, None] | None = {} if transport_factory is None and shared is None else None
        self._bsm_every = max(round(1.0 / sc.fleet.bsm_hz / sc.step_s), 1)
        # a sharded fleet simulates every vehicle but is the OBU of its own only; the others
        # drive on what one shard-wide radio hears, so that every shard's traffic stays alike
        self.shadow: Radio | None = None
        self.obus = 0  # OBUs this fleet has been (its shard's vehicles so far)
        self._k = 0
        # real time, per sim second: the most a step's start lagged the wall clock [ms], the most vehicles
        # present, steps, and steps that started a whole step (or more) late
        self.tick: dict[int, list[float]] = {}
        authority = conn.authority("fleet", m.SenderKind.VEHICLE, clock)
        if authority is not None:
            self.sign_with(authority)
        # real time: the ground truth for the RSUs' sensors (docs/perception.md), from one fleet process per site
        self.truth_feed = TruthFeed(self.net, self.topics, self.area) if sc.sensors and (self.area or shard[0] == 0) else None

    def sign_with(self, authority: Authority) -> None:
        """Sign every OBU's messages with a pseudonym the fleet's authority issues it; verify what they receive."""
        self.ca = authority
        self.reception.verifier = authority.verifier()
        self.neighbours.verifier = self.reception.verifier  # V2V BSMs too

    def _station(self, sid: str, transport: Transport) -> Station:
        """A vehicle's station on `transport`: what it sends is counted with the fleet's; signed when signing."""
        station = Station(sid, m.SenderKind.VEHICLE, self.clock, transport, self.counters.sent)
        if self.ca is not None:
            station.signer = self.ca.issue(sid, valid_from_ms(self.clock))
        return station

    @staticmethod
    def shared_connection(conn: Connection, shard: tuple[int, int] = (0, 1)) -> SharedConnection:
        """The one connection the OBUs of a fleet process share (client id `<run id>-fleet-obus-<i>-of-<n>`)."""
        i, n = shard
        return SharedConnection(conn.transport(f"fleet-obus-{i}-of-{n}", inbox=1_000_000, outbox=1_000_000, coalesce_writes=True))

    def _mqtt(self, sid: str) -> Transport:
        # an OBU takes QoS 0 at most at its rate; the listen-only radios, which hear a whole area, at any rate
        obu = sid.startswith(("veh-", "stalled-"))
        return self.conn.transport(sid, inbox=1000, outbox=1000, qos0_per_s=OBU_QOS0_PER_S if obu else None)

    def _belief(self) -> SignalBelief:
        f = self.sc.fleet
        return SignalBelief(f.spat_stale_s, f.spat_countdown, f.reaction_s)

    def mine(self, vid: int) -> bool:
        """Whether a vehicle belongs to this fleet's shard (`v2x fleet --shard i/n`): by area, every one it simulates."""
        i, n = self.shard
        return self.area is not None or vid % n == i

    # -- radios: I/O as coroutines ------------------------------------------------------

    async def _connect(self, radio: Radio) -> None:
        try:
            await radio.transport.start()
        except BrokerError as e:
            self.counters.connect_failures += 1
            log.warning("veh-%d: %s", radio.vid, e)
            return
        radio.ready = True

    async def _close(self, radio: Radio) -> None:
        if self._by_sid.get(radio.station.sender_id) is radio:  # (not a radio made since for the same vehicle)
            del self._by_sid[radio.station.sender_id]
        self.neighbours.forget(radio.station.sender_id)
        self.reception.measure.forget(radio.station.sender_id)
        self.counters.dropped_out += radio.transport.stats.dropped_out
        self.counters.dropped_in += radio.transport.stats.dropped_in
        self.counters.not_subscribed += radio.transport.stats.not_subscribed
        with contextlib.suppress(Exception):
            await radio.transport.close()
        st = radio.transport.stats
        if st.outages or st.disconnects or st.reconnects:
            self.closed_stats.append(st)

    def radio_work(self) -> list[Coroutine[Any, Any, None]]:
        """Give new vehicles of this shard an OBU; let departed vehicles' OBUs go."""
        present = {int(v) for v in self.traffic.ids if self.mine(int(v))} - self.equipment.without_obu(self.traffic)
        work = []
        for vid in sorted(present - self.radios.keys()):
            sid = f"veh-{vid}"
            belief = self._belief()
            transport = self._factory(sid) if self._fanned is None else self._fanned.transport(sid, fanned=True)
            radio = self.radios[vid] = self._by_sid[sid] = Radio(vid, self._station(sid, transport), belief, order=self.obus)
            if self._arrivals is not None:  # (its own connection: `_mqtt`'s)
                cast("MqttTransport", transport).on_arrival(functools.partial(self._arrivals.__setitem__, radio, None))
            self.obus += 1
            work.append(self._connect(radio))
        for vid in sorted(self.radios.keys() - present):
            work.append(self._close(self.radios.pop(vid)))
        standing = {k for k in self.traffic.obstacles if self.sc.events[k - 1].kind == "stalled_vehicle" and self._owns_event(k)
                    and self.equipment.stalled_has_obu(k)}
        for k in sorted(standing - self.stalled.keys()):
            sid = f"stalled-{k}"
            radio = self.stalled[k] = Radio(-k, self._station(sid, self._factory(sid)), self._belief())
            work.append(self._connect(radio))
        for k in sorted(self.stalled.keys() - standing):
            work.append(self._close(self.stalled.pop(k)))
        return work

    def _owns_event(self, k: int) -> bool:
        """Whether this shard runs hazard event k's stalled vehicle: by area, the shard of its site; else shard 0."""
        if self.area is None:
            return self.shard[0] == 0
        return self.net.index_of(self.sc.events[k - 1].intersection) in self.area

    def subscription_work(self) -> list[Coroutine[Any, Any, None]]:
        """Follow each vehicle's intersection ahead (SPaT, MAP) and its tile (hazards, advisories)."""
        group, _ = self.traffic.signal_view()
        ahead = self.sumo.ahead() if self.sumo is not None else None  # SUMO: the next junction with an RSU
        work = []
        for i, vid in enumerate(self.traffic.ids):
            radio = self.radios.get(int(vid))
            if radio is None or not radio.ready or radio.tile is None:
                continue
            if ahead is not None:
                ix = int(ahead[i])
            else:
                g = int(group[i])
                ix = self.net.groups[g].intersection if g >= 0 else -1
            if ix >= 0:
                self.counters.vehicles_approaching.add(int(vid))
            if (radio.tile, ix) == radio.place:
                continue  # same tile, same intersection ahead: same filters
            radio.place = (radio.tile, ix)
            t = self.topics
            wanted = {t.area("rsi", radio.tile), t.advisory(radio.tile), t.advisory(radio.tile, radio.station.sender_id)}
            if ix >= 0:
                wanted |= {t.spat_area(self.net.site_tiles[ix]), t.area("map", self.net.site_tiles[ix])}
                # an emergency vehicle hears the RSU's replies: the core's priority vehicles, SUMO's emergency class
                emergency = self.core.priority[i] if self.core is not None else self.traffic.kind[i] == KIND_INDEX["emergency"]
                if emergency:
                    wanted.add(t.priority_status(self.sc.sites[ix], radio.station.sender_id))
            if wanted != radio.filters:
                old, radio.filters = radio.filters, frozenset(wanted)
                work.append(self._resubscribe(radio, old, radio.filters))
        return work

    async def _resubscribe(self, radio: Radio, old: frozenset[str], new: frozenset[str]) -> None:
        if old:
            self.counters.resubscriptions += 1
        try:
            for f in sorted(old - new):
                await radio.transport.unsubscribe(f)
            for f in sorted(new - old):
                await radio.transport.subscribe(f, qos=1 if "/rsi/" in f or "/advisory/" in f or "/prs/" in f else 0)
        except BrokerError as e:  # no acknowledgement: try again next step, never stop the fleet
            self.counters.subscribe_failures += 1
            log.warning("veh-%d: %s", radio.vid, e)
            radio.filters, radio.place = frozenset(), None

    # -- receiving ---------------------------------------------------------------------

    async def start_shadow(self) -> None:
        """The shard-wide radio: SPaT for every intersection, for the vehicles of other shards."""
        i, n = self.shard
        sid = f"fleet-shard-{i}-of-{n}"
        radio = Radio(-1, Station(sid, m.SenderKind.VEHICLE, self.clock, self._factory(sid)), self._belief())
        await radio.transport.start()
        for tile in sorted(set(self.net.tiles)):
            await radio.transport.subscribe(self.topics.spat_area(tile))
        radio.ready = True
        self.shadow = radio

    async def start_heads(self) -> None:
        """When some vehicles have no OBU: the signal heads their drivers see, from the RSUs' SPaT (v2x.vehicle.equipment)."""
        if self.equipment.everyone or self.sumo is not None:  # SUMO's drivers see SUMO's lights
            return
        i, n = self.shard
        sid = f"fleet-heads-{i}-of-{n}"
        radio = Radio(-3, Station(sid, m.SenderKind.VEHICLE, self.clock, self._factory(sid)), self.equipment.heads())
        await radio.transport.start()
        for ix in sorted(self.area) if self.area is not None else range(len(self.net.intersections)):
            await radio.transport.subscribe(self.topics.spat("rsu", self.net.site_tiles[ix], self.net.intersections[ix].spec.id))
        radio.ready = True
        self.heads = radio

    async def start_v2v(self) -> None:
        """The V2V radio: every BSM in the area, for the sidelink applications."""
        i, n = self.shard
        sid = f"fleet-v2v-{i}-of-{n}"
        radio = Radio(-2, Station(sid, m.SenderKind.VEHICLE, self.clock, self._factory(sid)), self._belief())
        await radio.transport.start()
        if self.area is None:
            await radio.transport.subscribe(self.topics.area("bsm", ""))
        else:  # an area shard hears the BSMs of its own sites (and 50 m around them)
            for tile in self.net.area_tiles(sorted(self.area)):
                await radio.transport.subscribe(self.topics.area("bsm", tile))
        radio.ready = True
        self.v2v = radio

    async def start_sumo_lights(self) -> None:
        """SUMO in real time: the RSU junctions' lights follow their RSUs' own SPaT (v2x.vehicle.heads). The login is the
        signal heads' (start_heads): on SUMO the drivers without an OBU see SUMO's lights, so only one of them runs."""
        from v2x.vehicle.heads import SpatHeads

        assert self.sumo is not None
        i, n = self.shard
        sid = f"fleet-heads-{i}-of-{n}"
        self.sumo_lights = SpatHeads(sid, self.sumo, self._factory(sid), self.topics, self.clock, self.reception)
        await self.sumo_lights.start()

    def receive(self) -> None:
        """Handle what every OBU has received."""
        if self.sumo_lights is not None:
            self.sumo_lights.receive()
        if self.v2v is not None:
            now = self.clock.sim_s()
            for msg in self.v2v.transport.receive():
                self.neighbours.add(msg.topic, msg.payload, now)
        if self.shadow is not None:
            for msg in self.shadow.transport.receive():
                self._handle(self.shadow, msg)
        if self.heads is not None:
            for msg in self.heads.transport.receive():
                self._see_heads(self.heads, msg)
        if self._fanned is not None:
            self._take_fanned(self._fanned)
        elif self._arrivals is not None:
            self._take_arrivals(self._arrivals)
        else:
            for radio in self.radios.values():
                if radio.ready:
                    for msg in radio.transport.receive():
                        self._handle(radio, msg)
        for sid, topic, frame in self.reception.due():  # what the links delayed
            held = self._by_sid.get(sid or "")
            if held is None:
                self.counters.arrived_after_leaving += 1  # its vehicle left the network meanwhile
            else:
                self.bad.guard(topic, frame.header.sender_id, self._act, held, topic, frame)

    def _take_arrivals(self, arrivals: dict[Radio, None]) -> None:
        """What the OBUs whose connection said something arrived got, OBU by OBU in `radios`'s order (as every OBU's
        inbox would be read in turn). One whose vehicle has left is not read (nor was its inbox before); one not yet
        ready is kept for later (nothing should reach it before it subscribes)."""
        if not arrivals:
            return
        heard = list(arrivals)
        arrivals.clear()
        if len(heard) > 1:
            heard.sort(key=_order)
        radios = self.radios
        for radio in heard:
            if radios.get(radio.vid) is not radio:
                continue
            if not radio.ready:
                arrivals[radio] = None
                continue
            for msg in radio.station.transport.receive():  # type: ignore[union-attr]
                self._handle(radio, msg)

    def _take_fanned(self, shared: SharedConnection) -> None:
        """What the shared connection handed the OBUs, message by message in order of arrival, each for the OBUs it
        is for (in `radios`'s order); an OBU's own messages stay in the order they came. One whose vehicle has left
        is not handed it (as its inbox was never read again); nor one not ready, which cannot be for it: an OBU
        subscribes only once ready (`subscription_work`), and stays so."""
        shared.pump()
        fanned, shared.fanned = shared.fanned or [], []
        for msg, who in fanned:
            radios = []
            for t in who:
                radio = self._by_sid.get(t.sid)
                if radio is not None and radio.ready and radio.station.transport is t and self.radios.get(radio.vid) is radio:
                    radios.append(radio)
            if len(radios) > 1:
                radios.sort(key=_order)
            self._handle_all(radios, msg)

    def _distance(self, sid: str, frame: m.Frame) -> float | None:
        """How far a vehicle is from an RSU that sent it something, for the sidelink."""
        radio = self._by_sid.get(sid)
        rsu = self._rsu_xy.get(frame.header.sender_id)
        if radio is None or radio.xy is None or rsu is None:
            return None
        return math.hypot(radio.xy[0] - rsu[0], radio.xy[1] - rsu[1])

    def _handle_all(self, radios: list[Radio], msg: Message) -> None:
        """`_handle(radio, msg)` for each of `radios`, the message checked once for all (`Reception.accept_all`)."""
        if len(radios) < 2 or (not msg.payload and kind_of(msg.topic) in RETAINED_KINDS):
            for radio in radios:
                self._handle(radio, msg)
            return
        topic = msg.topic
        taking = [(r, f) for r, f in zip(radios, self.reception.accept_all(msg, [r.station.sender_id for r in radios]), strict=True)
                  if f is not None]
        if taking and isinstance(taking[0][1].body, m.Spat):  # (the same bytes, decoded once: the same frame for all)
            frame = taking[0][1]  # `_act` for each vehicle, what is the same for all worked out once
            self.bad.guard(topic, frame.header.sender_id, self._act_spat, [r for r, _ in taking], topic, frame)
            return
        for radio, frame in taking:
            self.bad.guard(topic, frame.header.sender_id, self._act, radio, topic, frame)

    def _act_spat(self, radios: list[Radio], topic: str, frame: m.Frame) -> None:
        """`_act(radio, topic, frame)` of a SPaT for each of `radios` (each vehicle under its own guard)."""
        assert isinstance(frame.body, m.Spat)
        _, states, count = self._spat(frame, frame.body)
        now, sender = self.clock.sim_s(), frame.header.sender_id
        for radio in radios:
            self.bad.guard(topic, sender, self._take_spat, radio, states, now, count)
        for got in states:  # (the freshest any vehicle heard: the same taken once or by each)
            self.heard.take(got)

    def _take_spat(self, radio: Radio, states: tuple[Received, ...], now: float, count: str) -> None:
        """A vehicle hears a SPaT (`_spat`'s states) at sim time `now`; counted as `count`."""
        for got in states:
            radio.belief.take(got, now)
        self.counters.received[count] += 1
        self.counters.vehicles_with_spat.add(radio.vid)

    def _handle(self, radio: Radio, msg: Message) -> None:
        topic = msg.topic
        if not msg.payload and (kind := kind_of(topic)) in RETAINED_KINDS:  # a retained message cleared by its owner (a hazard: it is over)
            if kind == "rsi":
                radio.hazards.pop(_hazard_key(topic), None)
            self.counters.received[f"{kind}_cleared"] += 1
            return
        # the shard-wide radio is not a vehicle: it is not measured
        if radio is self.shadow:
            frame = self.reception.checked(msg, radio.station.sender_id)
        else:
            frame = self.reception.accept(msg, radio.station.sender_id)
        if frame is not None:
            self.bad.guard(topic, frame.header.sender_id, self._act, radio, topic, frame)

    def _see_heads(self, heads: Radio, msg: Message) -> None:
        """What the signal heads show, as the RSUs' SPaT says (not measured: the physical world)."""
        frame = self.reception.checked(msg, heads.station.sender_id)
        if frame is None or not isinstance(frame.body, m.Spat):  # another type on a SPaT topic: counted as such
            return
        now = self.clock.sim_s()
        for st in frame.body.intersections:
            heads.belief.receive(st, self.clock.sim_of_utc_ms(st.timestamp_ms), "rsu", now)

    def _act(self, radio: Radio, topic: str, frame: m.Frame) -> None:
        body = frame.body
        if isinstance(body, m.Spat):
            _, states, count = self._spat(frame, body)
            if radio is self.shadow:
                for got in states:
                    radio.belief.take(got, self.clock.sim_s())
            else:
                self._take_spat(radio, states, self.clock.sim_s(), count)
            for got in states:
                self.heard.take(got)
            return
        kind = m.type_name(body)
        if isinstance(body, m.Rsi):
            self.counters.received[kind] += 1
            for ev in body.events:
                if ev.status is m.EventStatus.ENDED:
                    radio.hazards.pop(_hazard_key(topic), None)
                else:
                    radio.hazards[_hazard_key(topic)] = ev
        elif isinstance(body, (m.MapData, m.Advisory)):
            self.counters.received[kind] += 1
            if isinstance(body, m.MapData) and radio is not self.shadow:
                self.counters.vehicles_with_map.add(radio.vid)
        elif isinstance(body, m.PriorityStatus) and radio is not self.shadow:
            self.counters.received[kind] += 1
            if not 1 <= body.intersection.id <= len(self.sc.sites):
                self.bad.record("unknown_intersection", topic, f"priority status for intersection {body.intersection.id}", frame.header.sender_id)
                return
            self.priority.heard(radio.vid, body, self.clock.sim_s())
        else:
            self.bad.record("not_handled", topic, kind, frame.header.sender_id)

    def _spat(self, frame: m.Frame, body: m.Spat) -> tuple[m.Frame, tuple[Received, ...], str]:
        """What a vehicle takes from a SPaT: each intersection's state, timed from its timestamp, and the path it came
        by; the same for every vehicle hearing the same frame, so made once."""
        got = self._spats.get(id(frame))  # each entry keeps its frame alive: no other frame has its id meanwhile
        if got is None:
            path = "cloud" if frame.header.sender_kind is m.SenderKind.CLOUD else "rsu"
            states = tuple(Received(st, self.clock.sim_of_utc_ms(st.timestamp_ms), path) for st in body.intersections)
            got = self._spats.keep(id(frame), (frame, states, f"spat/{path}"))
        return got

    # -- the step ----------------------------------------------------------------------------

    def beliefs(self, group: np.ndarray, truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The light each vehicle believes its next signal shows (another shard's vehicles: `truth` if known), and
        on a yellow, the seconds it knows that yellow has left (inf: not known)."""
        lights = np.full(self.traffic.n, Light.NONE, dtype=np.int64)
        yellow_left = np.full(self.traffic.n, np.inf)
        now = self.traffic.t
        unequipped = self.equipment.without_obu(self.traffic)
        at = np.flatnonzero(group >= 0)
        shown: list[int] = []  # per slot of `at`, as plain ints (setting numpy items one by one cost more than the rest)
        radios, groups, heads, yellow, unknown = self.radios, self.net.groups, self.heads, Light.YELLOW, Light.UNKNOWN
        for i, vid, g in zip(at.tolist(), self.traffic.ids[at].tolist(), group[at].tolist(), strict=True):
            radio = radios.get(vid)
            sg = groups[g]
            light: int
            if radio is not None:
                light = radio.belief.light(sg.intersection + 1, sg.group_id, now)
                if light == yellow:
                    yellow_left[i] = radio.belief.yellow_left(sg.intersection + 1, sg.group_id, now)
            elif vid in unequipped:  # its driver sees the signal head
                light = heads.belief.light(sg.intersection + 1, sg.group_id, now) if heads is not None else unknown
                if light == yellow and heads is not None:
                    yellow_left[i] = heads.belief.yellow_left(sg.intersection + 1, sg.group_id, now)
            elif self.mine(vid):
                light = unknown  # its OBU is not up yet
            elif truth is not None:
                light = int(truth[i])
            elif self.shadow is not None:
                light = self.shadow.belief.light(sg.intersection + 1, sg.group_id, now)
            else:
                light = unknown
            shown.append(light)
        lights[at] = shown
        return lights, yellow_left

    def move(self) -> None:
        """Move the traffic one step on what the vehicles believe."""
        traffic = self.core
        if traffic is None:  # SUMO: its drivers see its lights; the applications act through TraCI (docs/sumo.md)
            sumo = self.sumo
            assert sumo is not None
            speeds = self._sumo_glosa(sumo) if self.sc.fleet.glosa else {}
            for vid, v in self._sumo_hazards(sumo).items():
                speeds[vid] = min(v, speeds.get(vid, v))
            sumo.advise(speeds)
            sumo.step(self.sc.step_s)
            self._k += 1
            self._send_priority(self.priority.step_sumo(sumo, sumo.t, self._can_send))
            return
        group, _ = traffic.signal_view()
        truth = self.truth(group) if self.truth is not None else None
        hazards = {vid: r.hazards for vid, r in self.radios.items() if r.hazards}
        believed, yellow_left = self.beliefs(group, truth)
        traffic.step(
            self.sc.step_s, believed, truth, self.apps.hazard_warned(traffic, hazards),
            self.apps.speed_advice(traffic), self.apps.making_way(traffic), yellow_left,
        )
        self._k += 1
        if self.trajectories is not None:
            self.trajectories.sample(traffic, lambda g, t: self.heard.light(g.intersection + 1, g.group_id, t))
        self.apps.step(traffic, hazards, {vid: r.belief for vid, r in self.radios.items()})
        self.hazard_watch.step(traffic)
        self._send_priority(self.priority.step(traffic, traffic.t, self._can_send))

    def _send_priority(self, requests: list[tuple[int, str, m.PriorityRequest]]) -> None:
        """Each emergency vehicle's priority request, update or cancellation (QoS 1), from its OBU."""
        for vid, iid, req in requests:
            radio = self.radios[vid]
            radio.station.publish(self.topics.priority_request(iid, radio.station.sender_id), req, qos=1, sim_s=self.traffic.t)

    def _sumo_glosa(self, sumo: SumoTraffic) -> dict[int, float]:
        """GLOSA on SUMO: each vehicle's advised speed towards its next RSU junction, from the SPaT its OBU received."""
        site, group, dist = sumo.signals_ahead()
        names = list(self.sc.sites)
        out = {}
        for i in np.flatnonzero((site >= 0) & (dist <= GLOSA_RANGE_M)):
            vid = int(sumo.ids[i])
            radio = self.radios.get(vid)
            if radio is None:
                continue
            v = self.apps.advise(sumo.t, vid, radio.belief, (int(site[i]), names[int(site[i])]), int(group[i]), float(dist[i]),
                                 sumo.allowed_speed(vid))
            if v is not None:
                out[vid] = v
        return out

    def _sumo_hazards(self, sumo: SumoTraffic) -> dict[int, float]:
        """HLW on SUMO, from the RSI each OBU holds: a hazard ahead on the vehicle's route within HLW_RANGE_M (where
        it is found on the network from the position received) warns it; a warned vehicle keeps out of the hazard's
        lane on its edge and, within HAZARD_SLOW_M of it, slows to HAZARD_SPEED_MPS (returned: vehicle -> speed).
        The lead time is measured as on the core: warning to arrival at the hazard's position."""
        slow: dict[int, float] = {}
        for vid, radio in self.radios.items():
            for key, ev in radio.hazards.items():
                if key not in self._hazard_road:
                    self._hazard_road[key] = sumo.road_at(ev.position.lat_deg, ev.position.lon_deg)
                at = self._hazard_road[key]
                d = None if at is None else sumo.distance_to(vid, at[0], at[1])
                if at is None or d is None or d > HLW_RANGE_M:
                    continue
                w = Warning(sumo.t, vid, "hlw", f"rsi {key}", math.nan)
                if self.apps.warn(w, key):
                    self._hlw_pending.append((w, at[0], at[1]))
                sumo.keep_off(vid, at[0], at[2], HAZARD_KEEP_OFF_S)
                if d <= HAZARD_SLOW_M:
                    slow[vid] = HAZARD_SPEED_MPS
        still = []
        for w, edge, pos in self._hlw_pending:
            if not sumo.present(w.vehicle):
                continue  # left without reaching it
            if sumo.distance_to(w.vehicle, edge, pos) is None:
                w.lead_s = sumo.t - w.t_s  # there (or past it) now
            else:
                still.append((w, edge, pos))
        self._hlw_pending = still
        return slow

    def _can_send(self, vid: int) -> bool:
        radio = self.radios.get(vid)
        return radio is not None and radio.ready and radio.filters != frozenset()

    def publish_bsms(self) -> None:
        """Each vehicle's BSM, when due (every step at 10 Hz and 0.1 s steps)."""
        self.publish(self.due_bsms())
        self.stalled_bsms()

    def due_bsms(self) -> list[DueBsm]:
        """This shard's BSMs, if this step is a BSM step (every step at 10 Hz and 0.1 s steps): encoded at once, or,
        where a vehicle's BSM is more than the traffic core knows (SUMO's lights, a GNSS error, an attacker's lie),
        as objects."""
        if (self._k - 1) % self._bsm_every != 0:
            return []
        unequipped = self.equipment.without_obu(self.traffic)
        if self.sumo is None and self.gnss is None and self.attacks is None:  # every BSM as the traffic core has it:
            assert self.core is not None  # encoded at once
            wires = [w for w in build_bsm_wires(self.core, self.net.frame) if self.mine(w[0]) and w[0] not in unequipped]
            if all(w[3] is not None for w in wires):
                return cast("list[DueBsm]", wires)
        if self.sumo is not None:
            bsms = bsms_of(self.sumo.states())
        else:
            assert self.core is not None  # one of the two backends moves the vehicles
            bsms = build_bsms(self.core, self.net.frame)
        mine = [(vid, bsm) for vid, bsm in bsms if self.mine(vid) and vid not in unequipped]
        if self.gnss is not None:
            mine = self.gnss.apply(mine, self.traffic.t)
        return [(vid, bsm.position.lat_deg, bsm.position.lon_deg, bsm) for vid, bsm in mine]

    def stalled_bsms(self) -> None:
        """The stalled vehicles' BSMs, at the fleet's BSM rate."""
        if (self._k - 1) % self._bsm_every != 0:
            return
        for k, radio in self.stalled.items():
            lid, front, length = self.traffic.obstacles[k]
            x, y, heading = self.net.xy_heading(np.array([lid]), np.array([front - length / 2]))
            pos = self.net.frame.to_geo(float(x[0]), float(y[0]))
            bsm = m.Bsm(position=pos, speed_mps=0.0, heading_deg=float(heading[0]) % 360.0, length_m=length,
                        events=frozenset({m.VehicleEvent.HAZARD_LIGHTS}))
            if radio.ready:
                topic = self.topics.bsm(quadkey(pos.lat_deg, pos.lon_deg), radio.station.sender_id)
                radio.station.publish(topic, bsm, expiry_s=BSM_EXPIRY_S, sim_s=self.traffic.t)

    def publish(self, bsms: list[DueBsm]) -> None:
        times: bytes | None = None  # a slice's BSMs are of one instant: their header's times, in wire form
        for vid, lat, lon, bsm in bsms:
            radio = self.radios.get(vid)
            if radio is None or not radio.ready:
                self.counters.bsm_not_connected += 1
                continue
            tile, topic, box = radio.tile, radio.bsm_topic, radio.tile_box
            if tile is None or topic is None or not (box[0] < lat < box[2] and box[1] < lon < box[3]):
                tile = quadkey(lat, lon)  # (well inside its tile, a point's quadkey is the tile's: not worked out)
                if tile != radio.tile or topic is None:
                    topic = self.topics.bsm(tile, radio.station.sender_id)
                radio.tile, radio.bsm_topic, radio.tile_box = tile, topic, tile_inside(tile)
            radio.xy = self.net.frame.to_local(lat, lon)
            if isinstance(bsm, bytes):  # its body already in wire form: behind its own header, nothing else to say
                if times is None:
                    times = codec.time_fields(self.clock.utc_us(), max(round(self.traffic.t * 1000), 0))
                if not radio.station.relay_at(times, topic, m.MessageType.BSM, bsm, expiry_s=BSM_EXPIRY_S):
                    self.counters.bsm_not_sent += 1
                continue
            said = [(radio.station.sender_id, bsm)] if self.attacks is None else self.attacks.apply(vid, bsm, self.traffic.t)
            for sid, body in said:  # an attacker's BSM may lie, and a Sybil attacker speaks for a ghost too
                station = radio.station if sid == radio.station.sender_id else self._ghost(sid, radio)
                where = tile if body is bsm else quadkey(body.position.lat_deg, body.position.lon_deg)
                if not station.publish(self.topics.bsm(where, sid), body, expiry_s=BSM_EXPIRY_S, sim_s=self.traffic.t):
                    self.counters.bsm_not_sent += 1  # its sequence number is spent: receivers count the gap

    def _ghost(self, sid: str, host: Radio) -> Station:
        """A Sybil attacker's ghost identity, speaking on its host's connection."""
        st = self.ghosts.get(sid)
        if st is None:
            st = self.ghosts[sid] = self._station(sid, host.transport)
        return st

    def connection(self) -> ConnectionSummary:
        """Lost connections over every OBU (and the fleet's extra radios), gone or still here."""
        extra = [r for r in (self.shadow, self.v2v, self.heads, *self.stalled.values()) if r is not None]
        live = [r.transport.stats for r in [*self.radios.values(), *extra]]
        live += [self.sumo_lights.transport.stats] if self.sumo_lights is not None else []
        return outage_summary([*self.closed_stats, *live], self.clock.epoch_s)

    async def close(self) -> None:
        extra = [r for r in (self.shadow, self.v2v, self.heads, *self.stalled.values()) if r is not None]
        await asyncio.gather(*(self._close(r) for r in [*self.radios.values(), *extra]))
        if self.shared is not None:  # the OBUs' one connection: its drops and outages are theirs
            st = self.shared.inner.stats
            self.counters.dropped_out += st.dropped_out
            self.counters.dropped_in += st.dropped_in
            self.counters.not_subscribed += st.not_subscribed
            with contextlib.suppress(Exception):
                await self.shared.close()
            if st.outages or st.disconnects or st.reconnects:
                self.closed_stats.append(st)
        if self.sumo_lights is not None:
            self.counters.dropped_in += self.sumo_lights.transport.stats.dropped_in
            if self.sumo is not None and (self.sumo.heard_dropped or self.sumo.on_copy_steps):
                log.warning("SUMO's lights: %d SPaT never shown (the fleet far behind), %d junction-steps on a copy of the "
                            "controller for want of fresh SPaT", self.sumo.heard_dropped, self.sumo.on_copy_steps)
            with contextlib.suppress(Exception):
                await self.sumo_lights.close()
            self.sumo_lights = None
        if self.sumo is not None:
            self.sumo.close()  # libsumo: the process's one simulation, free for the next
        self.radios.clear()
        self.stalled.clear()
        self.shadow = self.v2v = self.heads = None

    # -- real time ------------------------------------------------------------------------------

    async def run(self, duration_s: float, progress: Callable[[Fleet], None] | None = None) -> None:
        """Drive in real time until sim time `duration_s` (since the epoch)."""
        dt = self.sc.step_s
        if self.shard[1] > 1 and self.area is None:
            await self.start_shadow()
        await self.start_v2v()
        await (self.start_sumo_lights() if self.sumo is not None else self.start_heads())
        # no controllers here to tell red-light entries: log every stop-line crossing, judged later against the RSUs'
        # record of their lights (v2x.run.results)
        self.traffic.crossings = []
        await asyncio.sleep(max(-self.clock.sim_s(), 0.0))  # every tier begins at sim time 0
        self.traffic.t = max(round(self.clock.sim_s() / dt) * dt, 0.0)
        tasks: set[asyncio.Task[None]] = set()

        def spawn(work: list[Coroutine[Any, Any, None]]) -> None:
            for coro in work:
                task = tg.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        failure: BrokerError | None = None
        async with asyncio.TaskGroup() as tg:
            try:
                while self.traffic.t < duration_s:
                    lag_ms = (self.clock.sim_s() - self.traffic.t) * 1e3
                    row = self.tick.setdefault(int(self.traffic.t), [lag_ms, 0, 0, 0])
                    row[0], row[1] = max(row[0], lag_ms), max(row[1], self.traffic.n)
                    row[2] += 1
                    row[3] += lag_ms >= dt * 1e3
                    spawn(self.radio_work())
                    self.receive()
                    spawn(self.subscription_work())
                    self.move()
                    if self.truth_feed is not None and (core := self.core) is not None and self.v2v is not None:
                        for topic, payload in self.truth_feed.due(core, lambda: self.equipment.mask(core)):
                            self.v2v.transport.publish(topic, payload)
                    # OBUs are not synchronised: spread the step's BSMs over it, a slice at a time
                    bsms = self.due_bsms()
                    self.stalled_bsms()
                    slices = max(min(len(bsms), round(dt / (SLICE_S if self.shared is None else SHARED_SLICE_S))), 1)
                    receive_every = max(round(RECEIVE_EVERY_S / dt * slices), 1)
                    for j in range(slices):
                        self.publish(bsms[j::slices])
                        await asyncio.sleep(max(self.traffic.t - dt + (j + 1) * dt / slices - self.clock.sim_s(), 0.0))
                        if j < slices - 1 and (j + 1) % receive_every == 0:
                            self.receive()
                    if progress is not None and self._k % 10 == 0:
                        progress(self)
            except BrokerError as e:  # an OBU's client id taken over: end the run, plainly (not in a TaskGroup's group)
                failure = e
            finally:
                spawn([self.close()])
        if failure is not None:
            raise failure
