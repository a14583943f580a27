"""A fleet's shared connection hands each message once, with the OBUs it is for (issue #27): `Reception.accept_all`
takes it for all of them as `accept` takes it for each, and `SharedConnection` keeps the order an OBU's inbox kept."""

from __future__ import annotations

import asyncio
from typing import Any

from v2x.core import codec
from v2x.core import messages as m
from v2x.core.scenario import Cellular, Links, Sidelink, bundled_dir, load
from v2x.core.topics import Topics
from v2x.core.trust import TrustRules
from v2x.net.impair import Impairment
from v2x.net.reception import Reception
from v2x.net.shared import SharedConnection
from v2x.net.station import StepClock
from v2x.net.transport import Message, TransportStats

T = Topics("t/x/v2x/v1")
TILE = "13212101122011302"
RULES = TrustRules(load(bundled_dir() / "corridor.toml"))  # J1, J2, J3 with RSUs RSU-J1...
R, C, V = m.SenderKind.RSU, m.SenderKind.CLOUD, m.SenderKind.VEHICLE
EPOCH_S = 1_767_225_600.0


def _spat(name: str) -> m.Spat:
    return m.Spat((m.IntersectionState(ref=m.IntersectionRef(0, int(name[1:])), name=name, revision=0, status=frozenset(),
                                       timestamp_ms=0, plan_id=0, states=()),))


def _frame(sender: str, kind: m.SenderKind, seq: int, gen_s: float, body: m.Body) -> bytes:
    return codec.encode(m.Frame(m.Header(sender, kind, seq, round((EPOCH_S + gen_s) * 1e6), 0), body))


def _traffic() -> list[tuple[float, Message, list[str]]]:
    """(sim time, message, receivers): each way a message can fare, each to several receivers."""
    spat, rsi, bsm = T.spat("rsu", TILE, "J2"), T.rsi(TILE, "cloud", 1), T.bsm(TILE, "veh-3")
    vehicles = ["veh-1", "veh-2", "veh-3", "veh-4"]
    first = Message(spat, _frame("RSU-J2", R, 1, 1.0, _spat("J2")), 0, False, 0)
    return [
        (1.0, first, vehicles),
        (1.0, first, vehicles[1:]),  # a copy: a duplicate for those that had it
        (1.1, Message(spat, _frame("RSU-J2", R, 2, 1.1, _spat("J2")), 0, False, 0), vehicles[:2]),
        (1.2, Message(spat, _frame("RSU-J2", R, 5, 1.2, _spat("J2")), 0, False, 0), vehicles),  # 3 and 4 lost
        (3.0, Message(spat, _frame("RSU-J2", R, 6, 1.3, _spat("J2")), 0, False, 0), vehicles),  # expired
        (3.1, Message(spat, b"\x00garbage", 0, False, 0), vehicles),  # undecodable
        (3.2, Message(spat, _frame("RSU-J2", R, 7, 3.2, m.Status(m.ServiceState.ONLINE)), 0, False, 0), vehicles),  # wrong type
        (3.3, Message(spat, _frame("RSU-J1", R, 1, 3.3, _spat("J2")), 0, False, 0), vehicles),  # the wrong RSU
        (3.4, Message(spat, _frame("RSU-J2", R, 8, 3.9, _spat("J2")), 0, False, 0), vehicles),  # ahead, within the skew
        (3.5, Message(spat, _frame("RSU-J2", R, 9, 9.0, _spat("J2")), 0, False, 0), vehicles),  # from the future
        (3.6, Message(rsi, _frame("cloud", C, 1, 1.0, m.Rsi(m.GeoPoint(31.0, 120.0), ())), 1, True, 0), vehicles),  # retained: old, no latency
        (3.7, Message(bsm, _frame("veh-3", V, 1, 3.7, m.Bsm(position=m.GeoPoint(31.0, 120.0), speed_mps=1.0, heading_deg=0.0)),
                      0, False, 0), vehicles),  # heard by its own sender too
        (3.8, Message(T.bsm(TILE, "veh-5"), _frame("veh-5", V, 1, 3.8, m.Bsm(position=m.GeoPoint(31.0, 120.0), speed_mps=1.0,
                                                                           heading_deg=0.0)), 0, False, 0), ["veh-1"]),
        (3.9, Message(spat, _frame("RSU-J2", R, 10, 3.9, _spat("J2")), 0, False, 0), []),
        (4.0, Message(spat, _frame("RSU-J2", R, 11, 4.0, _spat("J2")), 0, False, 0), ["veh-1", "veh-1", "veh-2"]),  # twice
        (4.1, Message(T.bsm(TILE, "veh-9"), _bsm("veh-9", 1, 4.1), 0, False, 0), ["veh-1", "veh-2"]),
        (4.2, Message(T.bsm(TILE, "fleet"), _bsm("fleet", 1, 4.2), 0, False, 0), ["", "veh-1"]),  # "": the owner itself
        # 60 s on, a BSM heard only by its own sender (no sweep of silent streams for it, as `accept` makes none), then
        # veh-9's next, numbered past a gap
        (64.0, Message(T.bsm(TILE, "veh-3"), _bsm("veh-3", 2, 64.0), 0, False, 0), ["veh-3"]),
        (64.5, Message(T.bsm(TILE, "veh-9"), _bsm("veh-9", 5, 64.5), 0, False, 0), ["veh-1", "veh-2"]),
    ]


def _bsm(sender: str, seq: int, gen_s: float) -> bytes:
    return _frame(sender, V, seq, gen_s, m.Bsm(position=m.GeoPoint(31.0, 120.0), speed_mps=1.0, heading_deg=0.0))


def _outcome(rx: Reception) -> dict[str, Any]:
    return {"outcomes": dict(rx.outcomes), "bad": dict(rx.bad.counts), "by_type": dict(rx.bad.rejected_by_type),
            "measure": rx.measure.to_json()}


def test_a_message_taken_for_all_its_receivers_at_once_fares_as_it_does_taken_for_each() -> None:
    """Every way a message can fare (accepted, duplicate, a gap, expired, undecodable, of the wrong type, from the wrong
    sender, from the future, retained, the receiver's own), with trust rules and without: the same frames handed out,
    the same outcomes, bad-input counts and measurements."""
    lossy = Links(Sidelink(loss=0.3, latency_ms=5.0), Cellular(latency_ms=40.0, p99_ms=120.0, loss=0.3))
    for trust, links, shared in ((RULES, None, None), (None, None, None), (RULES, lossy, None), (RULES, None, T.root)):
        each_clock, all_clock = StepClock(EPOCH_S), StepClock(EPOCH_S)
        each, at_once = (Reception("fleet", V, clock, trust=trust, impairment=None if links is None else Impairment(links, seed=1))
                         for clock in (each_clock, all_clock))
        each.shared_prefix = at_once.shared_prefix = shared  # (a shared subscription's share: latency only)
        handed: list[list[bool]] = []
        for t, msg, receivers in _traffic():
            each_clock.t = all_clock.t = t
            one_by_one = [each.accept(msg, r) for r in receivers]
            together = at_once.accept_all(msg, receivers)
            assert together == one_by_one, (t, msg.topic)
            handed.append([f is not None for f in together])
        assert _outcome(at_once) == _outcome(each)
        assert at_once.holding == each.holding
        if shared is not None:
            assert each.measure.unsequenced
            continue
        if links is not None:  # each message taken for each receiver (the link is each receiver's own)
            assert each.link_lost == at_once.link_lost
            assert sum(each.link_lost.values()) > 0
            assert each.outcomes["held"] > 0
            continue
        assert handed[0] == [True] * 4  # the cases are what they say
        assert handed[1] == [False] * 3
        bad = each.bad.counts
        assert (bad["malformed"], bad["wrong_type"], bad["expired"]) == (4, 4, 4)
        if trust is not None:
            assert (bad["wrong_sender"], bad["from_the_future"]) == (4, 4)
        assert each.outcomes["own"] == 3
        # veh-9 silent for over a minute: its stream closed by the sweep at 64.5 s (none at 64.0), the gap not a loss
        assert _outcome(each)["measure"]["counts"]["bsm|vehicle->vehicle"]["lost"] == 0


class _Inner:
    """The fleet's one connection, without a broker: what arrives is put in by the test."""

    def __init__(self) -> None:
        self.arrived: list[Message] = []
        self.stats = TransportStats()
        self.subscribed: list[str] = []

    def receive(self, limit: int = 10_000) -> list[Message]:
        out, self.arrived = self.arrived[:limit], self.arrived[limit:]
        return out

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        self.subscribed.append(topic_filter)


def test_the_shared_connection_hands_each_message_once_with_the_obus_it_is_for_in_order_of_arrival() -> None:
    """A message for several fanned OBUs is handed once, with them; one for a transport with an inbox goes to its
    inbox; a retained message an OBU gets on subscribing comes after what arrived before it, as its inbox kept it."""
    inner = _Inner()
    shared = SharedConnection(inner)  # type: ignore[arg-type]
    shared.fanned = []
    a, b, radio = shared.transport("veh-1", fanned=True), shared.transport("veh-2", fanned=True), shared.transport("fleet-v2v-0-of-1")
    spat, rsi = T.spat("rsu", TILE, "J2"), T.area("rsi", TILE)

    async def go() -> None:
        await a.subscribe(T.spat_area(TILE))
        await a.subscribe(rsi)
        await radio.subscribe(T.spat_area(TILE))
        await b.subscribe(T.spat_area(TILE))
        inner.arrived += [Message(spat, b"1", 0, False, 0), Message(T.rsi(TILE, "cloud", 1), b"hazard", 1, True, 0)]
        await b.subscribe(rsi)  # the hazard, retained, comes to b from the connection's copy, after SPaT 1
        inner.arrived += [Message(spat, b"2", 0, False, 0)]
        shared.pump()

    asyncio.run(go())
    assert inner.subscribed == [T.spat_area(TILE), rsi]  # each filter once
    got = [(msg.payload, msg.retain, sorted(t.sid for t in who)) for msg, who in shared.fanned]
    assert got == [(b"1", False, ["veh-1", "veh-2"]), (b"hazard", True, ["veh-1"]), (b"hazard", True, ["veh-2"]),
                   (b"2", False, ["veh-1", "veh-2"])]
    assert [msg.payload for msg in radio.receive()] == [b"1", b"2"]
    assert a.receive() == b.receive() == []
    assert (a.stats.received, b.stats.received, radio.stats.received) == (3, 3, 2)
    assert shared.delivered == 7  # from the broker (the retained copy on subscribing is not counted, as before)


def _fleet(clock: StepClock) -> tuple[Any, list[Any]]:
    """A fleet of four_way with four ready OBUs (no broker: the test hands them what they hear)."""
    from v2x.net.connection import Connection
    from v2x.net.station import Station
    from v2x.net.transport import MemoryBroker, MemoryTransport
    from v2x.vehicle.fleet import Fleet, Radio

    broker = MemoryBroker()
    fleet = Fleet(FOUR_WAY, Connection("mqtt://127.0.0.1:1", impair=False), clock,
                  transport_factory=lambda sid: MemoryTransport(broker, sid))
    radios = []
    for vid in range(1, 5):
        radio = Radio(vid, Station(f"veh-{vid}", V, clock), fleet._belief(), ready=True, order=vid)
        fleet.radios[vid] = fleet._by_sid[radio.station.sender_id] = radio
        radios.append(radio)
    return fleet, radios


def _fleet_state(fleet: Any, radios: list[Any]) -> dict[str, Any]:
    return {"received": dict(fleet.counters.received), "with_spat": sorted(fleet.counters.vehicles_with_spat),
            "bad": dict(fleet.bad.counts), "outcomes": dict(fleet.reception.outcomes), "measure": fleet.reception.measure.to_json(),
            "beliefs": [None if r.belief is None else {k: (v.at_s, v.state) for k, v in r.belief.latest.items()} for r in radios],
            "heard": {k: (v.at_s, v.state) for k, v in fleet.heard.latest.items()}, "hazards": [dict(r.hazards) for r in radios]}


FOUR_WAY = load(bundled_dir() / "four_way.toml")


def test_a_fleet_taking_a_message_for_all_its_vehicles_at_once_ends_as_taking_it_for_each() -> None:
    """`Fleet._handle_all` against `_handle` for each vehicle: SPaT on both paths (copies of one to some vehicles), an
    expired one, a hazard set and cleared, bytes that are no frame; and with one vehicle whose handling fails (counted
    for it alone, the others' taken)."""
    from v2x.core.network import Network
    from v2x.core.signal.plans import controllers
    from v2x.core.signal.spat import intersection_state
    from v2x.net.station import Station

    net = Network(FOUR_WAY)
    tile, iid = net.site_tiles[0], net.intersections[0].spec.id
    ctl = controllers(net)[0]
    rsu, cloud = Station(FOUR_WAY.rsu_of(0).id, R, StepClock(EPOCH_S)), Station("cloud", C, StepClock(EPOCH_S))
    topic, relayed, rsi = T.spat("rsu", tile, iid), T.spat("cloud", tile, iid), T.rsi(tile, "cloud", 1)
    traffic: list[tuple[float, Message, list[int]]] = []
    for k in range(5):
        rsu.clock.t = cloud.clock.t = 10.0 + k * 0.1  # type: ignore[attr-defined]
        ctl.step(10.0 + k * 0.1)
        body = m.Spat((intersection_state(net, 0, ctl, rsu.clock.utc_us() // 1000, revision=k),))
        heard = Message(topic, rsu.encode(body, None, topic), 0, False, 0)
        traffic += [(10.0 + k * 0.1, heard, [0, 1, 2, 3]), (10.0 + k * 0.1, Message(relayed, cloud.encode(body, None, relayed), 0, False, 0),
                                                             [0, 2, 3]), (10.0 + k * 0.1, heard, [1, 2])]
    traffic += [(12.5, heard, [0, 1, 2, 3]),  # a copy, late
                (12.6, Message(rsi, cloud.encode(m.Rsi(m.GeoPoint(31.0, 120.0), ()), None, rsi), 1, True, 0), [0, 1, 2, 3]),
                (12.7, Message(rsi, b"", 1, True, 0), [0, 2, 3]), (12.8, Message(topic, b"\x00bad", 0, False, 0), [0, 1, 2, 3])]
    taken: dict[int | None, int] = {}
    for broken in (None, 1):
        (each, each_radios), (at_once, all_radios) = (_fleet(StepClock(EPOCH_S)) for _ in range(2))
        if broken is not None:
            each_radios[broken].belief = all_radios[broken].belief = None  # taking a SPaT raises for this vehicle
        for t, msg, who in traffic:
            each.clock.t = at_once.clock.t = t
            for i in who:
                each._handle(each_radios[i], msg)
            at_once._handle_all([all_radios[i] for i in who], msg)
        assert _fleet_state(at_once, all_radios) == _fleet_state(each, each_radios)
        assert each.counters.received["spat/rsu"] > 0
        assert each.counters.received["spat/cloud"] > 0
        assert each.bad.counts["handler_error"] == (0 if broken is None else 5)
        taken[broken] = at_once.counters.received["spat/rsu"]
    assert taken[1] == taken[None] - 5  # a SPaT the vehicle failed to take is not counted as received


def test_a_fleet_reading_only_the_obus_something_reached_takes_what_reading_every_obu_takes() -> None:
    """One connection per OBU (real time): the fleet reads only the OBUs whose connection said something arrived
    (`Fleet._take_arrivals`), against reading every ready OBU's inbox in turn: the same messages, taken in the same
    order, with the same outcome; an OBU not yet ready is read once it is, one whose vehicle left is not."""
    import functools

    from v2x.core.network import Network
    from v2x.core.signal.plans import controllers
    from v2x.core.signal.spat import intersection_state
    from v2x.net.station import Station
    from v2x.net.transport import MemoryBroker, MemoryTransport

    net = Network(FOUR_WAY)
    tile, iid = net.site_tiles[0], net.intersections[0].spec.id
    topic, rsi = T.spat("rsu", tile, iid), T.rsi(tile, "cloud", 1)

    def fleet_of(arrivals: bool) -> tuple[Any, list[Any], list[tuple[int, bytes]], MemoryBroker]:
        fleet, radios = _fleet(StepClock(EPOCH_S))
        broker = MemoryBroker()
        if arrivals:
            fleet._arrivals = {}
        for radio in radios:
            t = MemoryTransport(broker, radio.station.sender_id)
            radio.station.transport = t
            asyncio.run(t.start())
            asyncio.run(t.subscribe(T.spat_area(tile)))
            if arrivals:
                t.on_arrival(functools.partial(fleet._arrivals.__setitem__, radio, None))
        asyncio.run(radios[1].transport.subscribe(rsi))  # a hazard for one OBU alone
        radios[2].ready = False  # connecting still
        taken: list[tuple[int, bytes]] = []
        handle = fleet._handle

        def logged(radio: Any, msg: Message) -> None:
            taken.append((radio.vid, msg.payload))
            handle(radio, msg)

        fleet._handle = logged
        return fleet, radios, taken, broker

    runs = []
    for arrivals in (False, True):
        fleet, radios, taken, broker = fleet_of(arrivals)
        ctl = controllers(net)[0]
        rsu, cloud = Station(FOUR_WAY.rsu_of(0).id, R, StepClock(EPOCH_S)), Station("cloud", C, StepClock(EPOCH_S))

        def spat(t: float, fleet: Any, rsu: Station, ctl: Any, broker: MemoryBroker) -> None:
            rsu.clock.t = fleet.clock.t = t  # type: ignore[attr-defined]
            ctl.step(t)
            body = m.Spat((intersection_state(net, 0, ctl, rsu.clock.utc_us() // 1000, revision=int(t * 10)),))
            broker.route(topic, rsu.encode(body, None, topic), 0, False)

        broker.route(rsi, cloud.encode(m.Rsi(m.GeoPoint(31.0, 120.0), ()), None, rsi), 1, True)  # the second OBU's first
        spat(10.0, fleet, rsu, ctl, broker)
        spat(10.1, fleet, rsu, ctl, broker)
        fleet.receive()
        fleet.receive()  # nothing new
        radios[2].ready = True
        fleet.receive()  # what reached it before it was ready is read now
        del fleet.radios[4]  # its vehicle left: what reaches it stays unread
        spat(10.2, fleet, rsu, ctl, broker)
        fleet.receive()
        runs.append((taken, _fleet_state(fleet, radios), len(radios[3].transport._inbox), fleet._arrivals))
    (polled, polled_state, polled_left, _), (read, read_state, read_left, left) = runs
    assert read == polled
    assert read_state == polled_state
    vids = [vid for vid, _ in read]
    assert vids.count(3) == 3  # what reached it before it was ready too
    assert vids.count(2) == 4  # and the hazard
    assert read_left == polled_left == 1
    assert left == {}  # nothing kept waiting


def test_a_fleet_with_one_connection_per_obu_is_told_of_each_obus_arrivals() -> None:
    """The wiring of `_take_arrivals`: each OBU the fleet makes (`radio_work`) on a connection of its own says when
    something reached it; the fleet then reads it, and only it."""
    from v2x.net.connection import Connection
    from v2x.net.transport import MemoryBroker, MemoryTransport
    from v2x.vehicle.fleet import Fleet

    broker = MemoryBroker()
    fleet = Fleet(FOUR_WAY, Connection("mqtt://127.0.0.1:1", impair=False), StepClock(EPOCH_S))
    assert fleet._arrivals == {}  # (real time, one connection per OBU)
    fleet._factory = lambda sid: MemoryTransport(broker, sid)

    async def connect() -> None:
        await asyncio.gather(*fleet.radio_work())

    while len(fleet.radios) < 3:
        fleet.move()
        asyncio.run(connect())
    radios = list(fleet.radios.values())
    assert all(r.ready for r in radios)
    for r in radios[:2]:
        asyncio.run(r.transport.subscribe("t/x"))
    broker.route("t/x", b"\x00bad", 0, False)  # (no frame: counted as such, for each OBU that got it)
    assert list(fleet._arrivals) == radios[:2]
    fleet.receive()
    assert fleet._arrivals == {}
    assert sum(fleet.bad.counts.values()) == 2
