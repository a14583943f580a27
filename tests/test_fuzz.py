"""Fuzzing every receiver: 100,000 payloads over every topic kind, into the RSU, the cloud, a vehicle's OBU,
the visualiser's scene and the recorder. Nothing may raise, no handler may fail, and every payload must be
accounted for: handled, or counted under a named kind of bad input (or as a duplicate or an echo).

The payloads are real bytes for the real decoder: random bytes; bit-flipped, cut and extended real frames;
real frames with one field set to a random or extreme value through protobuf reflection (out-of-range
positions, speeds, enums, huge strings and lists); oversize payloads; replays and stale copies; and valid
frames on the topics of other kinds. The services run their real handlers over the in-memory transport (no
broker is needed to offer a payload to a handler; the broker paths are tested elsewhere).
"""

from __future__ import annotations

import io
import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.service import CloudService
from roadside.service import RsuService
from tests import strategies as gen
from v2x.core import codec
from v2x.core import messages as m
from v2x.core.codec import MAX_PAYLOAD_BYTES
from v2x.core.mapdata import build_map, intersection_ref
from v2x.core.network import Network
from v2x.core.scenario import bundled_dir, load
from v2x.core.topics import Topics, quadkey
from v2x.core.wire import v2x_pb2 as pb
from v2x.net.connection import Connection
from v2x.net.reception import AFTER_ACCEPT
from v2x.net.station import Station, StepClock
from v2x.net.transport import MemoryBroker, MemoryTransport, Message
from v2x.vehicle.fleet import Fleet, Radio
from v2x.watch.record import Recorder
from v2x.watch.scene import Scene

EPOCH = 1_767_225_600.0
COUNT = 100_000


class Receivers:
    """The four subscribers that act on messages, and the recorder, built on four_way."""

    def __init__(self) -> None:
        sc = load(bundled_dir() / "four_way.toml")
        self.net = Network(sc)
        self.clock = StepClock(EPOCH)
        self.clock.t = 30.0
        self.topics = Topics()
        mem = MemoryBroker()
        self.rsu = RsuService(self.net, 0, MemoryTransport(mem, "rsu-J1"), self.topics, self.clock)
        self.cloud = CloudService(self.net, MemoryTransport(mem, "cloud"), self.topics, self.clock, events=None)
        conn = Connection("mqtt://127.0.0.1:1", impair=False)
        self.fleet = Fleet(sc, conn, self.clock, transport_factory=lambda sid: MemoryTransport(mem, sid))
        self.radio = Radio(7, Station("veh-7", m.SenderKind.VEHICLE, self.clock, MemoryTransport(mem, "veh-7")), self.fleet._belief(), ready=True)
        self.fleet.radios[7] = self.radio
        self.fleet._by_sid["veh-7"] = self.radio
        self.scene = Scene()
        self.recorder = Recorder(io.BytesIO())
        self.fed = 0

    def offer(self, topic: str, payload: bytes) -> None:
        msg = Message(topic, payload, 0, False, int((EPOCH + self.clock.t) * 1e9))
        self.rsu.accept(msg)
        self.cloud.accept(msg)
        self.fleet._handle(self.radio, msg)
        self.scene.ingest(topic, payload, msg.rx_ns)
        self.recorder.write(topic, payload, msg.rx_ns)
        self.fed += 1

    def unaccounted(self) -> dict[str, int]:
        """Per receiver: payloads offered minus payloads accounted for (0 each when every one was counted)."""
        out = {}
        for name, svc in (("rsu", self.rsu), ("cloud", self.cloud)):
            r = svc.reception
            out[name] = self.fed - sum(r.outcomes.values()) - _bad(svc.bad.counts) - sum(r.link_lost.values()) - _cleared(svc.received)
        f = self.fleet
        out["fleet"] = self.fed - sum(f.reception.outcomes.values()) - _bad(f.bad.counts) - _cleared(f.counters.received)
        out["scene"] = self.fed - sum(self.scene.received.values()) - _bad(self.scene.errors)
        out["recorder"] = self.fed - self.recorder.messages
        return out

    def handler_errors(self) -> dict[str, int]:
        return {
            "rsu": self.rsu.bad.counts["handler_error"], "cloud": self.cloud.bad.counts["handler_error"],
            "fleet": self.fleet.bad.counts["handler_error"], "scene": self.scene.errors["handler_error"],
        }


def _cleared(received: Counter[str]) -> int:
    """Empty payloads on a retained kind's topic: its owner clearing it, handled as `<kind>_cleared`."""
    return sum(v for k, v in received.items() if k.endswith("_cleared"))


def _bad(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k not in AFTER_ACCEPT)  # those follow an accepted frame


def _seeds(rx: Receivers) -> list[tuple[str, bytes]]:
    """One real frame of every type, on its own topic, as the tiers would send it."""
    net, clock, t = rx.net, rx.clock, rx.topics
    cx, cy = net.intersections[0].center
    here = net.frame.to_geo(cx, cy)
    tile = quadkey(here.lat_deg, here.lon_deg)
    ref = intersection_ref(0)
    rsu_id = net.scenario.rsu_of(0).id  # the seeds are valid messages from the right senders: fuzzing starts from what is accepted
    rsu, cloud, car = (Station(s, k, clock) for s, k in ((rsu_id, m.SenderKind.RSU), ("cloud", m.SenderKind.CLOUD), ("veh-3", m.SenderKind.VEHICLE)))
    _, _, x, y = net.lane_point("J1", "north", 0, 60.0)
    pos = net.frame.to_geo(x, y)
    group = net.group_of("J1", "north", "through").group_id
    lane = next(ln.lane_id for ln in build_map(net, 0).lanes if ln.name.startswith("north.in"))
    state = m.IntersectionState(ref=ref, name="J1", revision=1, status=frozenset(), timestamp_ms=clock.utc_us() // 1000, plan_id=0,
                                states=(m.MovementState(group, (m.MovementEvent(m.LightState.RED, m.TimeChange(0.0, 3.0, 30.0, 9.0)),)),))
    event = m.RoadTrafficEvent(event_id=4, kind=m.HazardKind.OBSTACLE, source=m.EventSource.POLICE, status=m.EventStatus.ACTIVE,
                               position=pos, radius_m=20.0, lanes=(m.LaneRef(ref, lane),))
    phases = tuple(m.PhasePlan(phase_id=k + 1, signal_groups=(g,), green_s=20.0, yellow_s=3.0, all_red_s=2.0, min_green_s=10.0, max_green_s=40.0)
                   for k, g in enumerate(sorted({sg.group_id for sg in net.groups if sg.intersection == 0})[:4]))
    bodies: list[tuple[str, Station, m.Body]] = [
        (t.bsm(tile, "veh-3"), car, m.Bsm(position=pos, speed_mps=12.0, heading_deg=180.0, events=frozenset({m.VehicleEvent.HARD_BRAKING}))),
        (t.spat("rsu", tile, "J1"), rsu, m.Spat((state,))),
        (t.spat("cloud", tile, "J1"), cloud, m.Spat((state,))),
        (t.map(tile, "J1"), rsu, m.MapData((build_map(net, 0),))),
        (t.rsm(tile, rsu_id), rsu, m.Rsm(here, (m.Participant(type=m.ParticipantType.MOTOR, ptc_id=1, source=m.SourceType.V2X, vehicle_id="veh-3",
                                                               position=pos, speed_mps=12.0, heading_deg=180.0, width_m=1.8, length_m=4.5),))),
        (t.rsi(tile, "cloud", 4), cloud, m.Rsi(here, (event,))),
        (t.plan("J1"), cloud, m.SignalPlan(intersection=ref, plan_id=3, mode=m.ControlMode.FIXED_TIME, cycle_s=100.0, offset_s=0.0, phases=phases)),
        (t.advisory(tile, "veh-7"), cloud, m.Advisory(target_id="veh-7", kind=m.AdvisoryKind.SPEED, advised_speed_mps=8.0, valid_until_ms=clock.utc_us() // 1000 + 5000)),
        (t.priority_request("J1", "veh-3"), car, m.PriorityRequest(request_id=1, intersection=ref, type=m.RequestType.REQUEST, role=m.VehicleRole.EMERGENCY,
                                                                  in_lane_id=lane, eta_s=6.0, position=pos)),
        (t.priority_status("J1", "veh-7"), rsu, m.PriorityStatus(requester_id="veh-7", request_id=1, intersection=ref, state=m.PriorityState.GRANTED,
                                                                 action=m.PriorityAction.GREEN_EXTENSION, signal_group=group)),
        (t.status("rsu", rsu_id), rsu, m.Status(m.ServiceState.ONLINE, "0.1", "J1 range_m=300")),
    ]
    return [(topic, station.encode(body, stream=topic)) for topic, station, body in bodies]


def _set_random_field(msg: object, rng: random.Random, depth: int = 0) -> None:
    """Set one scalar field somewhere in a protobuf message to a random or extreme value (by reflection)."""
    desc = msg.DESCRIPTOR  # type: ignore[attr-defined]
    fields = list(desc.fields)
    f = rng.choice(fields)
    if f.message_type is not None:
        if f.is_repeated:
            items = getattr(msg, f.name)
            for _ in range(rng.choice((0, 1, 3, 300))):
                items.add()
            if len(items) and depth < 4:
                _set_random_field(items[rng.randrange(len(items))], rng, depth + 1)
        elif depth < 4:
            _set_random_field(getattr(msg, f.name), rng, depth + 1)
        return
    limits = {
        f.TYPE_INT32: (-(2**31), 2**31 - 1), f.TYPE_SINT32: (-(2**31), 2**31 - 1), f.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
        f.TYPE_UINT32: (0, 2**32 - 1), f.TYPE_FIXED32: (0, 2**32 - 1), f.TYPE_ENUM: (-(2**31), 2**31 - 1),
        f.TYPE_INT64: (-(2**63), 2**63 - 1), f.TYPE_SINT64: (-(2**63), 2**63 - 1), f.TYPE_UINT64: (0, 2**64 - 1),
        f.TYPE_FIXED64: (0, 2**64 - 1), f.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    }
    if f.type == f.TYPE_BOOL:
        value: object = rng.random() < 0.5
    elif f.type == f.TYPE_STRING:
        value = rng.choice(["", "x" * rng.choice((1, 300, 5000)), "\u0000\ufffd/+#", "veh-7", "J1"])
    elif f.type == f.TYPE_BYTES:
        value = rng.randbytes(rng.randrange(50))
    elif f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
        value = rng.choice((float("nan"), float("inf"), -1e300, 0.0, rng.uniform(-1e6, 1e6)))
    else:
        lo, hi = limits[f.type]
        value = rng.choice((lo, hi, 0, -1 if lo < 0 else 1, rng.randint(lo, hi), rng.randint(-1000, 100_000) if lo < 0 else rng.randint(0, 100_000)))
    if f.is_repeated:
        getattr(msg, f.name).append(value)
    else:
        setattr(msg, f.name, value)


def _fuzzed(seeds: list[tuple[str, bytes]], topics: list[str], rng: random.Random) -> tuple[str, str, bytes]:
    """(how, topic, payload): one fuzzed payload."""
    topic, payload = rng.choice(seeds)
    how = rng.choice(("random", "flip", "cut", "field", "field", "field", "wrong_topic", "replay", "stale", "oversize"))
    if how == "random":
        return how, rng.choice(topics), rng.randbytes(rng.randrange(200))
    if how == "flip":
        b = bytearray(payload)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return how, topic, bytes(b)
    if how == "cut":
        cut = payload[: rng.randrange(len(payload))]
        return how, topic, cut + (rng.randbytes(rng.randrange(20)) if rng.random() < 0.5 else b"")
    if how == "oversize":
        return how, topic, payload + b"\x00" * (MAX_PAYLOAD_BYTES + rng.randrange(1, 5000))
    if how == "wrong_topic":
        return how, rng.choice(topics), payload
    msg = pb.MessageFrame.FromString(payload)
    if how == "stale":
        msg.header.gen_time_us -= rng.choice((2_000_000, 60_000_000, 10**12))
        msg.header.seq += rng.randrange(1, 10_000)
    elif how == "field":
        for _ in range(rng.randint(1, 3)):
            _set_random_field(msg, rng)
    return how, topic, msg.SerializeToString()


def _fuzz(rx: Receivers, seeds: list[tuple[str, bytes]]) -> Counter[str]:
    """Offer COUNT fuzzed payloads (seeded: the same every time); how many of each making."""
    topics = sorted({topic for topic, _ in seeds})
    rng = random.Random(20261122)
    made: Counter[str] = Counter()
    for _ in range(COUNT):
        how, topic, payload = _fuzzed(seeds, topics, rng)
        made[how] += 1
        rx.offer(topic, payload)
    return made


def test_100k_fuzzed_payloads_over_every_topic_crash_nothing_and_are_all_counted() -> None:
    rx = Receivers()
    seeds = _seeds(rx)
    for topic, payload in seeds:  # the real ones first: each is handled
        rx.offer(topic, payload)
    assert rx.unaccounted() == dict.fromkeys(("rsu", "cloud", "fleet", "scene", "recorder"), 0)
    made = _fuzz(rx, seeds)
    assert rx.fed == COUNT + len(seeds)
    assert rx.unaccounted() == dict.fromkeys(("rsu", "cloud", "fleet", "scene", "recorder"), 0)
    assert rx.handler_errors() == dict.fromkeys(("rsu", "cloud", "fleet", "scene"), 0)
    bad = rx.rsu.bad.counts
    # every class of fault was produced and recognised by name
    for kind in ("malformed", "oversize", "out_of_range", "wrong_type", "wrong_sender", "from_the_future", "expired"):
        assert bad[kind] > 0, dict(bad)
    assert rx.rsu.reception.outcomes["duplicate"] > 0  # replays
    assert min(made.values()) > COUNT // 20


_SHARED: list[tuple[Receivers, list[str]]] = []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=gen.any_frame, topic_index=st.integers(0, 10))
def test_any_valid_frame_on_any_topic_is_handled_or_counted(frame: m.Frame, topic_index: int) -> None:
    if not _SHARED:  # one set of receivers (and topics) for every example: building them is the slow part
        shared = Receivers()
        _SHARED.append((shared, sorted({topic for topic, _ in _seeds(shared)})))
    rx, topics = _SHARED[0]
    rx.offer(topics[topic_index], codec.encode(frame))
    assert rx.unaccounted() == dict.fromkeys(("rsu", "cloud", "fleet", "scene", "recorder"), 0)
    assert rx.handler_errors() == dict.fromkeys(("rsu", "cloud", "fleet", "scene"), 0)


def main() -> None:
    """`python -m tests.test_fuzz`: the 100k run, with what each receiver made of it."""
    import json
    import logging

    logging.disable(logging.WARNING)
    rx = Receivers()
    made = _fuzz(rx, _seeds(rx))
    print(json.dumps({
        "payloads": rx.fed, "made": dict(sorted(made.items())), "unaccounted": rx.unaccounted(), "handler_errors": rx.handler_errors(),
        "rsu": {**dict(sorted(rx.rsu.bad.counts.items())), **rx.rsu.reception.outcomes},
        "scene": dict(sorted((rx.scene.errors + rx.scene.received).items())),
        "recorder_undecodable": rx.recorder.undecodable,
    }, indent=1))


if __name__ == "__main__":
    main()
