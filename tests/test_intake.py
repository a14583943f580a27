"""The compiled BSM intake (v2x.net.intake) against the one-by-one path it stands in for: the same messages through
both give the same outcomes, refusals, streams, measurements and picture, whatever the traffic holds (next numbers,
gaps, copies, restarts, jumps, forgers, messages from the future and expired ones, retained ones, a sender gone
silent past the sweep and back, numbers wrapping, a stream long enough to forget its oldest numbers, bytes that are no
BSM, BSMs the compiled reader leaves to protobuf)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from cloud.service import CloudService
from roadside.service import RsuService
from v2x.core import codec
from v2x.core import messages as m
from v2x.core.geo import LocalFrame
from v2x.core.metrics import DUP_WINDOW, SEQ_MOD
from v2x.core.network import Network
from v2x.core.scenario import bundled_dir, load
from v2x.core.topics import TILE_ZOOM, Topics, quadkey
from v2x.net.reception import Reception
from v2x.net.service import Service
from v2x.net.station import StepClock
from v2x.net.transport import MemoryBroker, MemoryTransport, Message

V = m.SenderKind.VEHICLE
FRAME = LocalFrame(31.49, 120.31)
EPOCH_S = 1_767_225_600.0


def _traffic(net: Network, seed: int, steps: int) -> list[tuple[float, list[Message]]]:
    """(sim time, arrivals) of each step: 30 senders near and far from J1's RSU, and every kind of trouble."""
    rng = random.Random(seed)
    topics = Topics()
    senders = [f"veh-{k}" for k in range(30)]
    seq = {s: rng.choice([0, 0, 0, SEQ_MOD - 7]) for s in senders}
    last: dict[str, bytes] = {}
    silent = {"veh-5"}
    start = {s: (rng.uniform(-500, 500), rng.uniform(-500, 500)) for s in senders}
    out = []
    for step in range(steps):
        t = step * 0.1 + (61.0 if step >= steps - 30 else 0.0)  # the last steps after a gap past SILENT_S
        now_us = round((EPOCH_S + t) * 1e6)
        msgs = []
        for s in rng.sample(senders, len(senders)):
            if s in silent and 50 <= step < steps - 30:
                continue
            x, y = start[s][0] + 0.8 * step, start[s][1]  # some leave radio range, or cross into another tile
            point = net.frame.to_geo(x, y)
            topic = topics.bsm(quadkey(point.lat_deg, point.lon_deg, TILE_ZOOM), s) if rng.random() < 0.97 else topics.bsm("0", s)
            if s == "veh-0" or rng.random() < 0.85:
                seq[s] += 1  # the next number
            else:
                seq[s] += rng.choice([2, 3, 20, 5000, -3, -4000])  # gaps, jumps, late ones, a restart's worth back
            what = rng.random() if s != "veh-0" else 1.0
            sender, kind, gen_us, retain = s, V, now_us - rng.randrange(0, 50_000), False
            events: frozenset[m.VehicleEvent] = frozenset()
            if what < 0.02:
                sender = "veh-999"  # a forger on another's topic
            elif what < 0.04:
                kind = m.SenderKind.RSU
            elif what < 0.06:
                gen_us = now_us + 3_000_000  # from the future
            elif what < 0.08:
                gen_us = now_us - 2_000_000  # expired
            elif what < 0.09:
                retain = True
            elif what < 0.11:
                events = frozenset({m.VehicleEvent.HARD_BRAKING})  # left to protobuf by the compiled reader
            elif what < 0.12:
                seq[s] = 0  # a restart
            accuracy = m.PositionalAccuracy(rng.uniform(0.1, 3), 0.5) if rng.random() < 0.3 else None
            elevation = None if rng.random() < 0.5 else rng.uniform(0, 50)
            bsm = m.Bsm(position=m.GeoPoint(point.lat_deg, point.lon_deg, elevation), speed_mps=rng.uniform(0, 20),
                        heading_deg=rng.uniform(0, 359), accuracy=accuracy, events=events, width_m=rng.choice([1.8, 2.5]))
            payload = codec.encode(m.Frame(m.Header(sender, kind, seq[s] % SEQ_MOD, gen_us, round(t * 1000)), bsm))
            if s in last and rng.random() < 0.03:
                payload = last[s]  # a copy of its last
            last[s] = payload
            msgs.append(Message(topic, payload, 0, retain, 0))
            if rng.random() < 0.01:
                msgs.append(Message(topic, b"\x0a\x03bad", 0, False, 0))  # no BSM
        out.append((t, msgs))
    return out


def _state(svc: Service) -> dict[str, Any]:
    if isinstance(svc, CloudService):
        svc.misbehaviour.check()
        return _common(svc) | {
            "vehicles": {k: ([None if math.isnan(x) else x for x in v], at) for k, (v, at) in svc.vehicles.items()},
            "seen": svc.seen, "misbehaviour": svc.misbehaviour.summary(), "tracks": dict(svc.misbehaviour.tracks),
        }
    assert isinstance(svc, RsuService)
    return _common(svc) | {
        "heard": {k: ([None if math.isnan(x) else x for x in v], at) for k, (v, at) in svc.heard.items()}, "ptc": dict(svc._ptc),
    }


def _common(svc: Service) -> dict[str, Any]:
    rec = svc.reception
    return {
        "outcomes": dict(rec.outcomes), "bad": dict(rec.bad.counts), "rejected_by_type": dict(rec.bad.rejected_by_type),
        "received": dict(svc.received), "measurements": rec.measure.to_json(), "closed": dict(rec.measure.closed),
        "streams": {k: (s.first, s.highest, s.unique, s.duplicates, dict(s.recent)) for k, s in rec.measure.streams.items()},
    }


@pytest.mark.parametrize(("seed", "tier"), [(1, "rsu"), (2, "rsu"), (3, "cloud")])
async def test_the_compiled_intake_takes_bsms_as_the_one_by_one_path_does(seed: int, tier: str) -> None:
    net = Network(load(bundled_dir() / "four_way.toml"))
    traffic = _traffic(net, seed, 220)
    states, one_by_one = [], []
    for compiled in (True, False):
        clock = StepClock(EPOCH_S)
        async with MemoryTransport(MemoryBroker(), tier) as t:
            svc: Service = RsuService(net, 0, t, Topics(), clock) if tier == "rsu" else CloudService(net, t, Topics(), clock, events=None)
            if not compiled:
                svc.make_intake = lambda: None  # type: ignore[method-assign]
            calls = 0
            take_one = svc._take_one

            def counted(msg: Message, read: Any, take_one: Any = take_one) -> None:
                nonlocal calls
                calls += 1
                take_one(msg, read)

            svc._take_one = counted  # type: ignore[method-assign]
            rsms = []
            for t_s, msgs in traffic:
                clock.t = t_s
                svc.take(msgs)
                if isinstance(svc, RsuService):
                    rsms.append(svc.rsm(t_s))
                    svc.calls(t_s)
                else:
                    rsms.append(list(svc.picture(t_s)))
            states.append(_state(svc) | {"rsm": rsms})
            one_by_one.append(calls)
    fast, slow = states
    for key in fast:
        assert fast[key] == slow[key], key
    n = sum(len(msgs) for _, msgs in traffic)
    assert one_by_one[1] == n
    assert one_by_one[0] < n / 3  # most went the compiled way
    # the traffic held what it was meant to: every kind of refusal, copies, jumps, a sweep, expiries
    assert {"wrong_sender", "from_the_future", "expired", "malformed"} <= set(slow["bad"])
    assert slow["outcomes"]["duplicate"] > 0
    assert any(c["jumps"] for c in slow["measurements"]["counts"].values())
    assert slow["closed"]
    if tier == "rsu":
        assert 0 < len(slow["heard"]) < 30  # some out of range
    else:
        assert slow["misbehaviour"].flagged  # (positions jump about: flagged as implausible)


async def test_a_long_stream_forgets_its_oldest_numbers_as_the_one_by_one_path_does() -> None:
    """One sender's stream past 2 * DUP_WINDOW numbers (the oldest forgotten), then a copy of an early one (no longer
    known: a restart) and of a recent one (a duplicate), through both paths."""
    net = Network(load(bundled_dir() / "four_way.toml"))
    topic = Topics().bsm(quadkey(*_geo(net), TILE_ZOOM), "veh-1")
    n = 2 * DUP_WINDOW + 300
    bsm = m.Bsm(position=m.GeoPoint(*_geo(net)), speed_mps=5.0, heading_deg=10.0)
    frames = [codec.encode(m.Frame(m.Header("veh-1", V, k, round(EPOCH_S * 1e6) + k * 100_000 - 5_000_000_000, 0), bsm))
              for k in range(n)]
    states = []
    for compiled in (True, False):
        clock = StepClock(EPOCH_S)
        clock.t = -5000.0
        async with MemoryTransport(MemoryBroker(), "rsu") as t:
            svc = RsuService(net, 0, t, Topics(), clock)
            if not compiled:
                svc.make_intake = lambda: None  # type: ignore[method-assign]
            for k in range(0, n, 50):
                clock.t = -5000.0 + k * 0.1
                svc.take([Message(topic, f, 0, False, 0) for f in frames[k : k + 50]])
            svc.take([Message(topic, frames[3], 0, False, 0), Message(topic, frames[-2], 0, False, 0)])
            states.append(_state(svc))
    assert states[0] == states[1]
    assert states[1]["outcomes"]["duplicate"] == 1


def _geo(net: Network) -> tuple[float, float]:
    p = net.frame.to_geo(10.0, 20.0)
    return p.lat_deg, p.lon_deg


def test_values_of_a_bsm_are_the_kernels_for_its_bytes() -> None:
    """`values_of` a decoded BSM and the kernel's values for its bytes: the same floats (NaN where not stated)."""
    import numpy as np

    from v2x.net.intake import values_of

    rng = random.Random(4)
    for _ in range(200):
        acc = m.PositionalAccuracy(rng.uniform(0, 12), rng.uniform(0, 12)) if rng.random() < 0.5 else None
        bsm = m.Bsm(position=m.GeoPoint(rng.uniform(-89, 89), rng.uniform(-179, 179), rng.choice([None, rng.uniform(-400, 6000)])),
                    speed_mps=rng.uniform(0, 160), heading_deg=rng.uniform(0, 359.9), width_m=rng.uniform(0, 10),
                    length_m=rng.uniform(0, 40), accuracy=acc)
        payload = codec.encode(m.Frame(m.Header("v", V, 0, 10, 0), bsm))
        frame = codec.decode(payload)
        assert isinstance(frame.body, m.Bsm)
        want = values_of(frame.body, FRAME)
        got = _kernel_values(payload)
        assert np.array_equal(np.array(want), got, equal_nan=True), (want, got)
        assert not math.isnan(got[0])


def _kernel_values(payload: bytes) -> Any:
    import numpy as np

    from v2x.core import wire_read
    from v2x.net import intake

    rows, ok = np.empty((1, wire_read.SLOTS), np.int64), np.empty(1, np.int64)
    buf, starts = np.frombuffer(payload, np.uint8), np.array([0, len(payload)], np.int64)
    wire_read.bsm_frames(buf, starts, rows, ok)
    names = np.zeros((1, intake.NAME_BYTES), np.uint8)
    names[0, :1] = ord("v")
    values = np.empty((1, intake.VALUES), np.float64)
    frame = intake.BsmIntake(Reception("r", m.SenderKind.RSU, StepClock(0.0)), FRAME).frame
    taken = intake.take_bsms(buf, starts, rows, ok, np.zeros(1, np.int64), np.array([10], np.int64), 0, 0, 10**6, 2**62,
                             names, np.array([1], np.int64), np.array([-1], np.int64), intake._TRANSMISSIONS, intake._CLASSES,
                             frame, np.zeros(1, np.int64), values, np.zeros(1, np.int64), np.zeros(1, np.int64))
    assert taken == 1
    return values[0]
