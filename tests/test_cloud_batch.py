"""The cloud's per-message work done in batches gives what it gave one message at a time: the misbehaviour checks
(on-road geometry for a batch of BSMs at once) and the SPaT relay (the body sent on as it came, not encoded again)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcap.writer import Writer

from cloud.misbehaviour import (
    ACCURACY_CAP_M,
    APPEAR_M,
    CREDIBLE_BSMS,
    FLAG_STRIKES,
    GONE_S,
    GRID_M,
    HEADING_TOL_DEG,
    MAX_ACCEL_MPS2,
    MAX_DT_S,
    MAX_SPEED_MPS,
    MAX_TURN_DEG,
    MIN_INTERVAL_S,
    MOVE_SIGMAS,
    MOVE_TOL_M,
    MOVE_TOL_SHARE,
    MOVING_MPS,
    OFF_ROAD_SIGMAS,
    OVERLAP_DISTINCT,
    OVERLAP_M,
    OVERLAP_SIGMAS,
    ROAD_MARGIN_M,
    STANDING_MPS,
    SWEEP_EVERY_S,
    TWIN_M,
    TWIN_S,
    TWIN_SPEED_MPS,
    Misbehaviour,
    MisbehaviourSummary,
)
from tests import strategies as gen
from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.core.network import Network
from v2x.net.signing import CA, role_permissions
from v2x.net.station import Station, StepClock
from v2x.net.transport import MemoryBroker, MemoryTransport
from v2x.run.offline import OfflineRun
from v2x.vehicle.attacks import Attacks
from v2x.vehicle.bsm import build_bsms
from v2x.vehicle.gnss import GnssError
from v2x.watch.record import RAW_ENCODING, read

EPOCH = 1_767_225_600.0


def _segments(det: Misbehaviour) -> tuple[np.ndarray, ...]:
    """Every lane segment the detector knows (start, direction, length^2, half width, heading)."""
    ax, ay, dx, dy, len2, hw, heading = det._segs
    return np.stack([ax, ay], axis=1), np.stack([dx, dy], axis=1), len2, hw, heading


def _on_road_one(segs: tuple[np.ndarray, ...], x: float, y: float, speed: float, h: float, margin: float) -> tuple[bool, bool]:
    """The on-road check for one position against every segment of the network, as it was written before batches
    (one position at a time); the detector looks only at the segments of the position's grid square, which hold every
    segment within reach, so the verdicts must agree."""
    a, d, len2, hw, dirs = segs
    p = np.array([x, y])
    u = np.clip(((p - a) * d).sum(axis=1) / len2, 0.0, 1.0)
    closest = a + d * u[:, None]
    dist = np.hypot(*(closest - p).T) - hw
    near = dirs[dist <= margin]
    off = float(dist.min()) > margin
    wrong = speed > 1.0 and near.size > 0 and float(np.abs((near - h + math.pi) % (2 * math.pi) - math.pi).min()) > math.radians(HEADING_TOL_DEG)
    return off, not off and wrong


def _in_lane_full(net: Network, x: float, y: float) -> tuple[int, float] | None:
    """The approach lane a point lies on, by a search of every IN segment of the network (as it was written before
    the grid): the nearest segment, if the point is within its half width + 0.5 m."""
    ids, a, b, half = net._in_segments
    ab = b - a
    p = np.array([x, y])
    t = np.clip(((p - a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-9), 0.0, 1.0)
    d = np.hypot(*(a + ab * t[:, None] - p).T)
    k = int(np.argmin(d))
    return None if d[k] > half[k] + 0.5 else (int(ids[k]), float((1.0 - t[k]) * np.hypot(*ab[k])))


@pytest.mark.parametrize(("name", "copies"), [("four_way", 6), ("corridor", 1)])
def test_the_lane_a_point_lies_on_is_found_in_its_square_as_among_every_lane(name: str, copies: int) -> None:
    """The cloud's queue survey asks, for every vehicle each second, which approach lane it is on: looked up among the
    lanes of the point's grid square, the answer (lane and distance to the stop line, to the bit) is a full search's."""
    net = Network(scenario.tile(scenario.load(scenario.resolve(name)), copies))
    rng = np.random.default_rng(3)
    pts = np.concatenate([lk.points for lk in net.links])
    n = 3000
    x = np.concatenate([pts[rng.integers(len(pts), size=n), 0] + rng.normal(0, 3, n), rng.uniform(pts[:, 0].min() - 50, pts[:, 0].max() + 50, 300)])
    y = np.concatenate([pts[rng.integers(len(pts), size=n), 1] + rng.normal(0, 3, n), rng.uniform(pts[:, 1].min() - 50, pts[:, 1].max() + 50, 300)])
    got = [net.in_lane_at(px, py) for px, py in zip(x.tolist(), y.tolist(), strict=True)]
    assert got == [_in_lane_full(net, px, py) for px, py in zip(x.tolist(), y.tolist(), strict=True)]
    lanes, to_line = net.in_lanes_at(x, y)  # all at once, as the cloud's survey asks
    assert got == [None if lane < 0 else (lane, d) for lane, d in zip(lanes.tolist(), to_line.tolist(), strict=True)]
    assert 0 < sum(h is not None for h in got) < len(got)  # both answers exercised


def test_the_on_road_check_of_a_batch_is_that_of_each_position_alone() -> None:
    net = Network(scenario.tile(scenario.load(scenario.resolve("four_way")), 2))
    det = Misbehaviour(net)
    rng = np.random.default_rng(7)
    pts = np.concatenate([lk.points for lk in net.links])  # on every lane and turning path
    n = 4000
    x = np.concatenate([pts[rng.integers(len(pts), size=n), 0] + rng.normal(0, 4, n), rng.uniform(-2000, 2000, 200)])
    y = np.concatenate([pts[rng.integers(len(pts), size=n), 1] + rng.normal(0, 4, n), rng.uniform(-2000, 2000, 200)])
    speed, h = rng.uniform(0, 20, len(x)), rng.uniform(-math.pi, math.pi, len(x))
    h[:50] = np.nan  # no heading to judge: never the wrong way (as numpy's min of NaN)
    margin = ROAD_MARGIN_M + OFF_ROAD_SIGMAS * np.minimum(rng.choice([0.0, 0.5, 5.0], len(x)), ACCURACY_CAP_M)
    off, wrong = det._on_road(x, y, speed, h, margin)
    segs = _segments(det)
    one = [_on_road_one(segs, *args) for args in zip(x.tolist(), y.tolist(), speed.tolist(), h.tolist(), margin.tolist(), strict=True)]
    assert off.tolist() == [o for o, _ in one]
    assert wrong.tolist() == [w for _, w in one]
    # both verdicts, and both answers of each, were exercised
    assert 0 < off.sum() < len(x)
    assert wrong.sum() > 0


def test_misbehaviour_verdicts_do_not_depend_on_the_batches() -> None:
    """Attackers of every kind: checked as one batch per step, and each BSM on its own, the same flags and strikes."""
    base = scenario.load(scenario.resolve("four_way"))
    kinds = ["constant_position", "constant_offset", "random_position", "random_offset", "eventual_stop", "sybil"]
    sc = dataclasses.replace(base, events=(), attacks=tuple(scenario.Attack(k, 0.1) for k in kinds))  # type: ignore[arg-type]
    run = OfflineRun(sc)
    attacks = Attacks(sc, run.net)
    batched, alone = Misbehaviour(run.net), Misbehaviour(run.net)
    for _ in range(round(120.0 / sc.step_s)):
        run.step()
        t = run.traffic.t
        for vid, bsm in build_bsms(run.traffic, run.net.frame):
            for sid, said in attacks.apply(vid, bsm, t):
                x, y = run.net.frame.to_local(said.position.lat_deg, said.position.lon_deg)
                for det in (batched, alone):
                    det.bsm(sid, t, x, y, said.speed_mps, said.heading_deg, 0.0)
                alone.check()
        for det in (batched, alone):
            det.sweep(t)
    assert batched.summary().flagged, "no attacker flagged: the comparison says nothing"
    assert batched.summary() == alone.summary()


@settings(max_examples=150, deadline=None)
@given(spat=gen.spat.filter(lambda s: len(s.intersections) == 1), header=gen.header, unknown=st.booleans())
def test_a_relayed_spat_is_the_frame_a_fresh_encoding_makes(spat: m.Spat, header: m.Header, unknown: bool) -> None:
    """The relay's bytes (the body as it came, under the relay's header) equal decoding the SPaT and encoding it
    again; a field this codec does not know is not passed on."""
    data = codec.encode(m.Frame(header, spat))
    if unknown:
        data += b"\x90\x03\x01"  # field 50, varint 1: not in MessageFrame
    got = codec.decode(data)
    relay = m.Header("cloud", m.SenderKind.CLOUD, 7, header.gen_time_us, header.sim_time_ms)
    assert codec.encode_relayed(relay, codec.relay_body(data)) == codec.encode(m.Frame(relay, got.body))


async def _connect(out: MemoryTransport, tap: MemoryTransport, service: Any = None) -> None:
    """Both transports connected, the tap hearing everything; then the service subscribes, if one is given."""
    await out.start()
    await tap.start()
    await tap.subscribe("#")
    if service is not None:
        await service.start()


def test_a_signed_relay_drops_the_rsu_s_signature_and_carries_its_own() -> None:
    ca = CA()
    clock = StepClock(EPOCH)
    rsu = Station("RSU-J1", m.SenderKind.RSU, clock)
    rsu.signer = ca.issue("RSU-J1", int(EPOCH * 1000), role_permissions(m.SenderKind.RSU, ["J1"]))
    spat = m.Spat((m.IntersectionState(ref=m.IntersectionRef(0, 1), name="J1", revision=0, status=frozenset(), timestamp_ms=0, plan_id=0,
                                       states=()),))
    came = rsu.encode(spat, stream="spat/rsu/J1")
    broker = MemoryBroker()
    out, tap = MemoryTransport(broker, "cloud"), MemoryTransport(broker, "tap")
    asyncio.run(_connect(out, tap))
    cloud = Station("cloud", m.SenderKind.CLOUD, clock, out)
    cloud.signer = ca.issue("cloud", int(EPOCH * 1000), role_permissions(m.SenderKind.CLOUD))
    assert cloud.relay("spat/cloud/J1", m.message_type(spat), codec.relay_body(came), expiry_s=1)
    assert cloud.publish("spat/cloud/J1", spat, expiry_s=1)
    relayed, encoded = (msg.payload for msg in tap.receive())
    v = ca.verifier()
    for payload in (relayed, encoded):
        frame = codec.decode(payload)
        assert frame.header.sender_id == "cloud"
        assert frame.body == spat
        assert v.check(payload, frame, clock.utc_us(), "veh-1", False) is None
    # the same stream: the relay took sequence number 0, the fresh encoding 1; otherwise the same frame
    assert codec.decode(relayed).header.seq == 0
    assert codec.decode(encoded).header.seq == 1
    assert cloud.sent["spat"] == 2


@pytest.mark.integration
def test_the_replay_measures_a_recorded_run_and_tells_behaviours_apart(tmp_path: Path) -> None:
    """bench.replay on a real fast run's recording, of the cloud and of the roadside: CPU over the vehicle-seconds the
    BSMs say, and a fingerprint that two plays agree on and a change of what the tier heard changes."""
    from bench.replay import measure

    rec = tmp_path / "run.mcap"
    subprocess.run([sys.executable, "-m", "v2x", "run", "four_way", "--fast", "--duration", "15", "--headless", "--record", str(rec)],
                   check=True, capture_output=True, timeout=600)
    got = measure(rec, "four_way", 1, 0.1, 2)
    assert got["vehicle_s"] > 0
    assert got["cpu_s"] > 0
    assert got["published"] > 100  # the SPaT relay, each RSU SPaT once
    # the same recording without one RSU SPaT: one relay fewer, another fingerprint
    cut = tmp_path / "cut.mcap"
    with cut.open("wb") as f:
        writer = Writer(f)
        writer.start()
        channels: dict[str, int] = {}
        dropped = False
        for r in read(rec):
            if not dropped and "/spat/rsu/" in r.topic:
                dropped = True
                continue
            if r.topic not in channels:
                channels[r.topic] = writer.register_channel(r.topic, RAW_ENCODING, 0)
            writer.add_message(channels[r.topic], log_time=r.log_time_ns, data=r.payload, publish_time=r.publish_time_ns)
        writer.finish()
    other = measure(cut, "four_way", 1, 0.1, 1)
    assert other["published"] == got["published"] - 1
    assert other["fingerprint"] != got["fingerprint"]
    # the roadside's form: the RSU's SPaT and RSM every 0.1 s of the 15 s (and its MAP and status); a vehicle
    # unheard is missing from its RSMs
    rsu = measure(rec, "four_way", 1, 0.1, 2, tier="roadside")
    assert rsu["vehicle_s"] == got["vehicle_s"]
    assert 2 * 140 < rsu["published"] < 2 * 160
    quiet = next(r.topic for r in read(rec) if "/bsm/" in r.topic)
    with cut.open("wb") as f:
        writer = Writer(f)
        writer.start()
        channels = {}
        for r in read(rec):
            if r.topic != quiet:
                if r.topic not in channels:
                    channels[r.topic] = writer.register_channel(r.topic, RAW_ENCODING, 0)
                writer.add_message(channels[r.topic], log_time=r.log_time_ns, data=r.payload, publish_time=r.publish_time_ns)
        writer.finish()
    assert measure(cut, "four_way", 1, 0.1, 1, tier="roadside")["fingerprint"] != rsu["fingerprint"]


def test_a_spat_its_cellular_link_delayed_is_relayed_from_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the scenario's cellular latency the RSU's SPaT reaches the cloud late (held by the link): it is still
    relayed from its bytes, and as a fresh encoding would give it."""
    from cloud.service import CloudService
    from v2x.core.topics import Topics
    from v2x.net.impair import Impairment
    from v2x.net.transport import Message

    sc = scenario.load(scenario.resolve("four_way"))
    assert sc.links.cellular.latency_ms > 0
    net = Network(sc)
    clock = StepClock(EPOCH)
    broker = MemoryBroker()
    out, tap = MemoryTransport(broker, "cloud"), MemoryTransport(broker, "tap")
    svc = CloudService(net, out, Topics(), clock, events=None, impairment=Impairment(sc.links, sc.seed))
    asyncio.run(_connect(out, tap, svc))
    relays: list[str] = []
    relay = Station.relay

    def counted(self: Station, topic: str, *args: object, **kw: object) -> bool:
        relays.append(topic)
        return relay(self, topic, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Station, "relay", counted)
    name = sc.sites[0]
    rsu = Station(sc.rsu_of(0).id, m.SenderKind.RSU, clock)
    topic = Topics().spat("rsu", net.site_tiles[0], name)
    sent = []
    for k in range(30):
        clock.t = k * 0.1
        spat = m.Spat((m.IntersectionState(ref=m.IntersectionRef(0, 1), name=name, revision=0, status=frozenset(),
                                           timestamp_ms=clock.utc_us() // 1000, plan_id=0, states=()),))
        sent.append(spat)
        out.deliver(Message(topic, rsu.encode(spat, stream=topic), 0, False, clock.utc_us() * 1000))
        svc.receive()
        svc.tick(clock.t)
    relayed = [codec.decode(msg.payload) for msg in tap.receive() if "/spat/cloud/" in msg.topic]
    assert svc.reception.outcomes["held"] > 0, (svc.reception.outcomes, svc.bad.counts)
    assert len(relayed) == len(relays) > 20  # every relay from its bytes (a few may be lost, or still on the link)
    assert [f.body for f in relayed] == sent[: len(relayed)]


# The per-BSM checks as they were written in Python, before the compiled kernel (cloud.misbehaviour._check_kernel), a
# sender's state in a `_Track`: the reference the kernel's verdicts are held to.
_TAU = 2 * math.pi
_MAX_TURN_RAD = math.radians(MAX_TURN_DEG)

@dataclass
class _Track:
    t: float
    x: float
    y: float
    speed: float
    heading: float
    first_s: float
    n: int = 1
    strikes: Counter[str] = field(default_factory=Counter)
    overlapped: set[str] = field(default_factory=set)
    flagged_s: float | None = None
    cell: tuple[int, int] = (0, 0)  # its square of the grid the neighbour checks look in
    acc: float = 0.0  # [m] its latest stated accuracy (one sigma), capped at ACCURACY_CAP_M


def _credible(tr: _Track) -> bool:
    """Heard for a second or more with no strike: its word counts against another's."""
    return tr.n >= CREDIBLE_BSMS and not tr.strikes


class _Reference:
    """`Misbehaviour`'s checks one BSM at a time in Python, on `det`'s road geometry and entries."""

    def __init__(self, det: Misbehaviour) -> None:
        self.det = det
        self.roads = det.roads
        self._entries = np.stack([det._entry_x, det._entry_y], axis=1)
        self.tracks: dict[str, _Track] = {}
        self.gone: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self._twins: dict[tuple[str, str], tuple[float, float]] = {}
        # grid square -> senders filed there, in the order filed (visited latest first, as the kernel visits them)
        self._cells: dict[tuple[int, int], dict[str, None]] = {}
        self.latest_t = 0.0
        self._next_sweep_s = -math.inf

    def bsm(self, sender: str, t: float, x: float, y: float, speed: float, heading_deg: float, accuracy_m: float) -> None:
        off = wrong = np.zeros(1, dtype=bool)
        if self.roads:
            margin = ROAD_MARGIN_M + OFF_ROAD_SIGMAS * min(accuracy_m, ACCURACY_CAP_M)
            off, wrong = self.det._on_road(*(np.array([v]) for v in (x, y, speed, math.radians(heading_deg), margin)))
        self._check(sender, t, x, y, speed, heading_deg, accuracy_m, bool(off[0]), bool(wrong[0]))

    def _check(self, sender: str, t: float, x: float, y: float, speed: float, heading_deg: float, accuracy_m: float,
               off_road: bool, wrong_way: bool) -> None:
        """One BSM's checks against its sender's history and its neighbours; `off_road`, `wrong_way`: `_on_road`'s."""
        if t > self.latest_t:
            self.latest_t = t
        h = math.radians(heading_deg)
        acc = accuracy_m if accuracy_m < ACCURACY_CAP_M else ACCURACY_CAP_M
        tr = self.tracks.get(sender)
        strikes: dict[str, int] = {}  # this BSM's strikes by check, each check at most once
        if tr is None:
            tr = self.tracks[sender] = _Track(t, x, y, speed, h, t, acc=acc)
            if self.roads and float(np.hypot(*(self._entries - (x, y)).T).min()) > APPEAR_M + OFF_ROAD_SIGMAS * acc:
                strikes["sudden_appearance"] = FLAG_STRIKES
        else:
            dt = t - tr.t
            if 0 < dt < MIN_INTERVAL_S:
                strikes["frequency"] = 1
            if 0 < dt <= MAX_DT_S:
                d = math.hypot(x - tr.x, y - tr.y)
                allowance = MOVE_SIGMAS * math.hypot(tr.acc, acc)  # both fixes' errors, at worst independent
                if abs(d - (tr.speed + speed) / 2 * dt) > MOVE_TOL_M + MOVE_TOL_SHARE * d + allowance:
                    strikes["position_speed"] = 1
                if abs(speed - tr.speed) / dt > MAX_ACCEL_MPS2:  # beyond what any car can do: one is enough
                    strikes["acceleration"] = FLAG_STRIKES
                turn = abs((h - tr.heading + math.pi) % _TAU - math.pi)
                if dt <= 0.5 and speed > 2.0 and turn > _MAX_TURN_RAD:
                    strikes["heading_change"] = 1
            tr.t, tr.x, tr.y, tr.speed, tr.heading, tr.acc = t, x, y, speed, h, acc
            tr.n += 1
        if speed > MAX_SPEED_MPS:
            strikes["speed"] = 1
        if off_road:
            strikes["off_road"] = 1
        elif wrong_way:
            strikes["heading"] = 1
        self._move(sender, tr)
        cx, cy = tr.cell
        cells, tracks = self._cells, self.tracks
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                square = cells.get((cx + dx, cy + dy))
                if not square:
                    continue
                for other in reversed(square):
                    o = tracks[other]
                    if other == sender or abs(o.t - t) > 0.15 or o.flagged_s is not None:
                        continue  # compare with others heard at the same moment and not already known to lie
                    d = math.hypot(o.x - x, o.y - y)
                    if d >= TWIN_M:  # too far for either check (OVERLAP_M < TWIN_M)
                        continue
                    if d < OVERLAP_M and d + OVERLAP_SIGMAS * math.hypot(acc, o.acc) < OVERLAP_M:  # surely within OVERLAP_M, errors allowed for
                        self._overlap(tr, sender, o, other, t)
                    if abs(o.t - t) < 0.01:  # two identities of one OBU send at the same instant
                        lateral = abs((o.x - x) * math.cos(h) - (o.y - y) * math.sin(h))
                        if lateral < 1.0:  # one ahead of the other in the same lane, not in the next lane
                            self._twin(tr, sender, o, other, d, t)
                        else:  # out of line breaks the lockstep: with GNSS error, side by side may look in line now and then
                            self._twins.pop((sender, other) if sender < other else (other, sender), None)
        if strikes:
            self._strike(tr, strikes, t)

    def _move(self, sender: str, tr: _Track) -> None:
        """File a sender under the grid square of its latest position (squares of GRID_M: the checks need neighbours
        within TWIN_M only, so a BSM looks at 9 squares, not at every vehicle)."""
        cell = (math.floor(tr.x / GRID_M), math.floor(tr.y / GRID_M))
        if cell != tr.cell or sender not in self._cells.get(cell, ()):
            self._cells.get(tr.cell, {}).pop(sender, None)
            self._cells.setdefault(cell, {})[sender] = None
            tr.cell = cell

    def _overlap(self, tr: _Track, sender: str, o: _Track, other: str, t: float) -> None:
        """Two bodies in one place. A standing vehicle that a moving one drives through is not there; else
        whoever overlaps OVERLAP_DISTINCT others is."""
        for a, b in ((tr, o), (o, tr)):
            if a.speed < STANDING_MPS and b.speed > MOVING_MPS and _credible(b):
                a.strikes["overlap"] += FLAG_STRIKES
                self._flag(a, t)
                return
        for a, partner, name in ((tr, o, other), (o, tr, sender)):
            if not _credible(partner):
                continue  # a newcomer, or one with strikes, does not count against another
            a.overlapped.add(name)
            if len(a.overlapped) == OVERLAP_DISTINCT:
                a.strikes["overlap"] += FLAG_STRIKES
                self._flag(a, t)

    def _twin(self, tr: _Track, sender: str, o: _Track, other: str, d: float, t: float) -> None:
        """Two senders closer than any honest follower at speed, moving in lockstep (one OBU, two identities)."""
        key = (sender, other) if sender < other else (other, sender)
        turn = abs((tr.heading - o.heading + math.pi) % (2 * math.pi) - math.pi)
        held = self._twins.get(key)
        if tr.speed > TWIN_SPEED_MPS and abs(tr.speed - o.speed) < 0.05 and turn < math.radians(1.0) and (held is None or abs(held[1] - d) < 0.2):
            since = t if held is None else held[0]
            self._twins[key] = (since, d)
            if t - since >= TWIN_S:
                for a in (tr, o):
                    if not a.strikes["twin"]:
                        a.strikes["twin"] += FLAG_STRIKES
                        self._flag(a, t)
        else:
            self._twins.pop(key, None)

    def sweep(self, now: float) -> None:
        """Senders that stopped sending while others still send: gone where no vehicle leaves the road?

        Looks at most every SWEEP_EVERY_S (the cloud calls it after every batch of messages)."""
        if now < self._next_sweep_s:
            return
        self._next_sweep_s = now + SWEEP_EVERY_S
        for sender, tr in list(self.tracks.items()):
            if tr.t < self.latest_t - GONE_S and now - self.latest_t < GONE_S:
                del self.tracks[sender]
                self._cells[tr.cell].pop(sender, None)
                if tr.speed < STANDING_MPS:  # honest vehicles leave the network moving, at its edge
                    self._strike(tr, Counter(sudden_disappearance=FLAG_STRIKES), tr.t)
                self.gone[sender] = (tr.n, _flag_of(tr))
                for pair in [k for k in self._twins if sender in k]:
                    del self._twins[pair]

    def _strike(self, tr: _Track, strikes: Mapping[str, int], t: float) -> None:
        if strikes:
            tr.strikes.update(strikes)
            self._flag(tr, t)

    def _flag(self, tr: _Track, t: float) -> None:
        if tr.flagged_s is None and sum(tr.strikes.values()) >= FLAG_STRIKES:
            tr.flagged_s = t

    def summary(self) -> MisbehaviourSummary:
        every = {**self.gone, **{s: (tr.n, _flag_of(tr)) for s, tr in self.tracks.items()}}
        return MisbehaviourSummary(
            {s: n for s, (n, _) in sorted(every.items())},
            {s: flag for s, (_, flag) in sorted(every.items()) if flag is not None},
        )


def _flag_of(tr: _Track) -> dict[str, Any] | None:
    return None if tr.flagged_s is None else {"at_s": round(tr.flagged_s, 2), "strikes": dict(tr.strikes)}


def test_the_compiled_checks_give_the_verdicts_of_the_checks_written_in_python() -> None:
    """Every attack, standard GNSS receivers on some OBUs and RTK on the others, vehicles entering and leaving: the
    detector's verdicts (BSMs per sender, who is flagged, when, and each check's strikes in the order they first
    struck) are those of the per-BSM checks as they were written in Python (`_Reference`)."""
    base = scenario.load(scenario.resolve("four_way"))
    kinds = ["constant_position", "constant_offset", "random_position", "random_offset", "eventual_stop", "sybil"]
    gnss = scenario.Gnss("standard", rtk_share=0.5)
    sc = dataclasses.replace(base, events=(), attacks=tuple(scenario.Attack(k, 0.1) for k in kinds),  # type: ignore[arg-type]
                             fleet=dataclasses.replace(base.fleet, gnss=gnss))
    run = OfflineRun(sc)
    attacks = Attacks(sc, run.net)
    receivers = GnssError(gnss, sc.seed, run.net.frame)
    det = Misbehaviour(run.net)
    ref = _Reference(det)
    for _ in range(round(150.0 / sc.step_s)):
        run.step()
        t = run.traffic.t
        for vid, bsm in receivers.apply(build_bsms(run.traffic, run.net.frame), t):
            for sid, said in attacks.apply(vid, bsm, t):
                x, y = run.net.frame.to_local(said.position.lat_deg, said.position.lon_deg)
                acc = 0.0 if said.accuracy is None else said.accuracy.semi_major_m
                det.bsm(sid, t, x, y, said.speed_mps, said.heading_deg, acc)
                ref.bsm(sid, t, x, y, said.speed_mps, said.heading_deg, acc)
        det.sweep(t)
        ref.sweep(t)
    got, want = det.summary(), ref.summary()
    assert got.senders == want.senders
    assert len(ref.gone) > 20  # senders let go and summed up from what was kept
    assert ({s: (f["at_s"], list(f["strikes"].items())) for s, f in got.flagged.items()}
            == {s: (f["at_s"], list(f["strikes"].items())) for s, f in want.flagged.items()})
    struck = {c for f in want.flagged.values() for c in f["strikes"]}
    assert struck >= {"overlap", "twin", "sudden_disappearance", "sudden_appearance", "position_speed", "off_road"}, struck


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_checks_give_the_python_verdicts_on_crowded_random_traffic(seed: int) -> None:
    """A crowd of senders in three lanes, beaconing at the same instants: standing and moving, in and out of lockstep
    by centimetres, driving through each other, leaving and coming back under the same id (a slot given again). The
    detector's verdicts are the Python checks' (`_Reference`), as on real traffic. The road checks are
    off (as on a network without lanes), so that the neighbour checks meet senders not flagged already."""
    det = Misbehaviour(OfflineRun(scenario.load(scenario.resolve("four_way"))).net)
    det.roads = False
    ref = _Reference(det)
    rng = np.random.default_rng(seed)
    n = 60
    x = rng.choice([-1.75, -5.25, -8.75], n) + rng.normal(0, 0.2, n)
    y = rng.uniform(100, 260, n)
    speed = rng.choice([0.0, 0.3, 6.0, 6.02, 6.1, 6.3], n)
    heading = rng.choice([180.0, 180.0, 180.5], n)
    acc = rng.choice([0.0, 0.0, 0.02, 0.3], n)
    away = np.zeros(n, dtype=bool)
    for k in range(500):
        t = round(k * 0.1, 1)
        away ^= rng.random(n) < 0.004  # some stop sending for a while, and come back
        rad = np.radians(heading)
        x += speed * 0.1 * np.sin(rad) + rng.normal(0, 0.02, n)
        y += speed * 0.1 * np.cos(rad) + rng.normal(0, 0.02, n)
        y = np.where(y < 100, 260.0, y)  # round again (a jump the position-speed check sees)
        for i in rng.permutation(n).tolist():
            if not away[i]:
                for check in (det, ref):
                    check.bsm(f"v{i}", t, float(x[i]), float(y[i]), float(speed[i]), float(heading[i]), float(acc[i]))
        if k % 7 == 0:
            det.check()  # batches of every size
        det.sweep(t)
        ref.sweep(t)
    got, want = det.summary(), ref.summary()
    assert got.senders == want.senders
    assert ({s: (f["at_s"], list(f["strikes"].items())) for s, f in got.flagged.items()}
            == {s: (f["at_s"], list(f["strikes"].items())) for s, f in want.flagged.items()})
    struck = {c for f in want.flagged.values() for c in f["strikes"]}
    assert struck >= {"overlap", "twin"}, struck


def test_a_sender_struck_at_a_time_that_is_no_number_is_flagged_and_far_or_unknown_positions_are_filed() -> None:
    """Values no decoded BSM carries (the codec's ranges keep them out) still leave the detector whole: strikes at a NaN
    generation time flag the sender, and positions that are infinite, NaN or beyond the grid's range are filed at its
    edge, the checks going on for every other sender."""
    det = Misbehaviour(OfflineRun(scenario.load(scenario.resolve("four_way"))).net)
    det.roads = False
    for k in range(3):
        det.bsm("fast", math.nan, 0.0, 150.0 + k, 50.0, 180.0)  # above MAX_SPEED_MPS: a strike each
    for k, x in enumerate([math.inf, -math.inf, math.nan, 1e300, -1e300, 5e10]):
        det.bsm(f"far{k}", 0.0, x, x, 0.0, 0.0)
    det.check()
    assert "fast" in det.summary().flagged
    for k in range(20):  # two honest senders side by side in lockstep: the same verdicts as the Python checks
        for sender, x in (("a", -1.75), ("b", -5.25)):
            det.bsm(sender, 1.0 + k / 10, x, 200.0 - k, 10.0, 180.0)
    det.check()
    summary = det.summary()
    assert set(summary.senders) == {"fast", "a", "b"} | {f"far{k}" for k in range(6)}
    assert "a" not in summary.flagged
    assert "b" not in summary.flagged
    assert det.tracks.keys() >= {"a", "b", "far0", "far2"}
