"""Signed messages: pseudonym certificates from a scenario CA; forged, replayed, stale and unsigned ones rejected."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from roadside.service import RsuService
from v2x.core import codec
from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.network import Network
from v2x.core.scenario import bundled_dir, load
from v2x.core.topics import Topics
from v2x.core.wire import v2x_pb2 as pb
from v2x.net.broker import MosquittoBroker
from v2x.net.signing import CA, Authority, Signer, Verifier, role_permissions, unsigned
from v2x.net.station import Station, StepClock
from v2x.net.transport import MqttTransport, Will
from v2x.testing import until

EPOCH = 1_767_225_600.0
NOW_US = int((EPOCH + 10.0) * 1e6)


VEHICLE = role_permissions(m.SenderKind.VEHICLE)


def _check(v: Verifier, payload: bytes, now_us: int, receiver: str = "", retained: bool = False) -> str | None:
    """`v`'s verdict on a payload as a receiver sees it: decoded, then checked."""
    return v.check(payload, codec.decode(payload), now_us, receiver, retained)


def _station(ca: CA | None, sid: str = "veh-1") -> Station:
    clock = StepClock(EPOCH)
    clock.t = 10.0
    st = Station(sid, m.SenderKind.VEHICLE, clock)
    if ca is not None:
        st.signer = ca.issue(sid, int(EPOCH * 1000), VEHICLE)
    return st


BSM = m.Bsm(position=m.GeoPoint(31.2, 121.4), speed_mps=10.0, heading_deg=90.0)


def test_a_signed_frame_verifies_and_still_decodes_as_a_plain_one() -> None:
    ca = CA()
    payload = _station(ca).encode(BSM, stream="bsm")
    assert _check(ca.verifier(), payload, NOW_US) is None
    frame = codec.decode(payload)  # an unsigned receiver reads it as before
    assert frame.body == codec.decode(_station(None).encode(BSM, stream="bsm")).body
    assert len(pb.MessageFrame.FromString(payload).security.signature) == 64


def test_unsigned_is_the_frame_a_signed_payload_carries_whoever_signed_it() -> None:
    """Link impairment draws on these bytes: a signature and a certificate are new in every run, the frame is not."""
    plain = _station(None).encode(BSM, stream="bsm")
    one, other = _station(CA()).encode(BSM, stream="bsm"), _station(CA()).encode(BSM, stream="bsm")
    assert one != other  # each signed by its own run's keys
    assert unsigned(one) == unsigned(other) == plain
    assert unsigned(plain) == plain
    for junk in (b"", b"\xff\xff", plain[:-3], b"\x08\x01" + plain):  # no frame, cut short, a varint field first
        assert unsigned(junk) == junk


def test_a_redelivered_copy_of_a_message_refused_as_stale_is_a_duplicate_not_a_second_refusal() -> None:
    """A plan that went stale while it waited is refused once; the broker's copy of it after a reconnect (DUP) is the
    same message, dropped as a duplicate, not counted against its sender again (tests/test_hardening.py's signed plan
    under load: {"stale": 2}). Without DUP, the same bytes again are refused as they were."""
    ca = CA()
    v = ca.verifier()
    payload = _station(ca).encode(BSM, stream="bsm")
    late_us = NOW_US + 60_000_000  # a minute after it was made: stale
    frame = codec.decode(payload)
    assert v.check(payload, frame, late_us, "rsu") == "stale"
    assert v.check(payload, frame, late_us, "rsu", redelivered=True) == "duplicate"
    assert v.check(payload, frame, late_us, "rsu") == "stale"
    fresh = _station(ca).encode(dataclasses.replace(BSM, speed_mps=11.0), stream="bsm")
    assert v.check(fresh, codec.decode(fresh), NOW_US, "rsu", redelivered=True) is None  # not seen before: as any


def test_forged_messages_are_rejected() -> None:
    ca = CA()
    v = ca.verifier()
    genuine = _station(ca).encode(BSM, stream="bsm")
    # the body altered after signing (a faster speed): the signature no longer matches
    msg = pb.MessageFrame.FromString(genuine)
    msg.bsm.speed = 1000
    altered = msg.SerializeToString()
    assert _check(v, altered, NOW_US) == "bad_signature"
    # signed by a pseudonym that another CA issued (or a self-made one)
    assert _check(v, _station(CA()).encode(BSM, stream="bsm"), NOW_US) == "unknown_cert"
    # the certificate's validity stretched by its holder: the CA's signature over it fails
    msg = pb.MessageFrame.FromString(genuine)
    msg.security.signer.valid_to_ms += 10**9
    stretched = msg.SerializeToString()
    assert _check(ca.verifier(), stretched, NOW_US) == "unknown_cert"
    # a genuine certificate, used after it expired
    old = _station(None)
    old.signer = ca.issue("veh-1", int(EPOCH * 1000) - 10**9, VEHICLE, lifetime_ms=1000)
    assert _check(v, old.encode(BSM, stream="bsm"), NOW_US) == "expired_cert"
    # no signature at all
    assert _check(v, _station(None).encode(BSM, stream="bsm"), NOW_US) == "unsigned"


def test_replayed_and_stale_messages_are_rejected() -> None:
    ca = CA()
    v = ca.verifier()
    payload = _station(ca).encode(BSM, stream="bsm")
    assert _check(v, payload, NOW_US, receiver="rsu") is None
    assert _check(v, payload, NOW_US, receiver="rsu") == "replay"
    assert _check(v, payload, NOW_US, receiver="cloud") is None  # another receiver: its first copy
    later = NOW_US + 60_000_000  # the same bytes a minute later: stale before it is a replay
    assert _check(v, payload, later, receiver="veh-9") == "stale"
    assert _check(v, payload, later, receiver="veh-9", retained=True) is None  # a retained MAP or RSI is old by design


async def test_an_rsu_applies_the_cloud_s_signed_plan_and_rejects_forged_and_replayed_ones(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    """Through Mosquitto: a genuine plan applies once; a forged plan (another CA), an altered one and a replay of the
    genuine one are counted by kind and never reach the controller."""
    sc = load(bundled_dir() / "four_way.toml")
    net = Network(sc)
    clock = StepClock(EPOCH)
    clock.t = 10.0
    topics = Topics(f"{topic_prefix}/v2x/v1")
    ca = CA()
    rsu = RsuService(net, 0, MqttTransport(mosquitto.url, f"{topic_prefix}-rsu"), topics, clock)
    rsu.sign_with(ca.authority("roadside", int(EPOCH * 1000), role_permissions(m.SenderKind.RSU, [sc.intersections[0].id])))
    # the intersection's own two phases (north-south, east-west), retimed: a plan its RSU's PlanLimits accept
    ns, ew = (tuple(sorted(net.groups[g].group_id for g in green)) for green in net.intersections[0].phase_groups)
    plan = m.SignalPlan(intersection=intersection_ref(0), plan_id=7, mode=m.ControlMode.FIXED_TIME, cycle_s=80.0, offset_s=0.0, phases=(
        m.PhasePlan(phase_id=1, signal_groups=ns, green_s=30.0, yellow_s=3.0, all_red_s=2.0, min_green_s=10.0, max_green_s=60.0),
        m.PhasePlan(phase_id=2, signal_groups=ew, green_s=40.0, yellow_s=3.0, all_red_s=2.0, min_green_s=10.0, max_green_s=60.0),
    ))
    cloud = Station("cloud", m.SenderKind.CLOUD, clock)
    cloud.signer = ca.issue("cloud", int(EPOCH * 1000), role_permissions(m.SenderKind.CLOUD))
    forger = Station("cloud", m.SenderKind.CLOUD, clock)
    forger.signer = CA().issue("cloud", int(EPOCH * 1000), role_permissions(m.SenderKind.CLOUD))
    topic = topics.plan(sc.intersections[0].id)
    genuine = cloud.encode(plan, stream=topic)
    altered = pb.MessageFrame.FromString(genuine)
    altered.signal_plan.cycle = 1200
    await rsu.transport.start()
    try:
        await rsu.start()
        async with MqttTransport(mosquitto.url, f"{topic_prefix}-attacker") as attacker:
            for payload in (genuine, forger.encode(plan, stream=topic), altered.SerializeToString(), genuine):
                attacker.publish(topic, payload, qos=1)
            assert await attacker.drain(5.0)
        for _ in range(50):
            await asyncio.sleep(0.05)
            rsu.receive()
            if sum(rsu.bad.counts.values()) >= 3:
                break
    finally:
        await rsu.transport.close()
    assert rsu.counters.plans_applied == 1
    assert dict(rsu.bad.counts) == {"unknown_cert": 1, "bad_signature": 1, "replay": 1}


@pytest.mark.integration
def test_run_sign_end_to_end(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "v2x", "run", "hazard", "--sign", "--fast", "--headless", "--duration", "70",
                          "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["bad_input"] == {"fleet": {}, "cloud": {}, "rsus": {}}  # every message signed and verified
    assert r["messages"]["bsm"]["received_by"]["cloud"] > 1000
    assert r["apps"]["hlw"]["warnings"] > 0  # the hazard's RSI, signed by the cloud, verified by the OBUs


def test_v2v_acts_only_on_genuine_signed_bsms() -> None:
    """The sidelink verifies a BSM when an application first asks for it: unsigned, forged and replayed ones are counted, not used."""
    from v2x.vehicle.sidelink import Neighbours

    ca = CA()
    heard = Neighbours(range_m=300.0)
    heard.verifier, heard.utc_us = ca.verifier(), lambda: NOW_US
    genuine = _station(ca, "veh-1").encode(BSM, stream="bsm")
    heard.add("v2x/v1/bsm/1/2/veh-1", genuine, 10.0)
    heard.add("v2x/v1/bsm/1/2/veh-2", _station(None, "veh-2").encode(BSM, stream="bsm"), 10.0)  # unsigned
    heard.add("v2x/v1/bsm/1/2/veh-3", _station(CA(), "veh-3").encode(BSM, stream="bsm"), 10.0)  # a pseudonym from another CA
    assert heard.heard("veh-5", "veh-1", 10.0, 10.1) is not None
    assert heard.heard("veh-5", "veh-2", 10.0, 10.1) is None
    assert heard.heard("veh-5", "veh-3", 10.0, 10.1) is None
    heard.add("v2x/v1/bsm/1/2/veh-1", genuine, 10.2)  # the same signed bytes again: a replay
    assert heard.heard("veh-5", "veh-1", 10.0, 10.3) is None
    assert dict(heard.bad.counts) == {"unsigned": 1, "unknown_cert": 1, "replay": 1}
    # without a verifier (an unsigned run) the same bytes are used as before
    plain = Neighbours(range_m=300.0)
    plain.add("v2x/v1/bsm/1/2/veh-2", _station(None, "veh-2").encode(BSM, stream="bsm"), 10.0)
    assert plain.heard("veh-5", "veh-2", 10.0, 10.1) is not None


@pytest.mark.integration
async def test_each_connection_gets_a_newly_signed_will() -> None:
    """A signed Will is taken to no age but checked for replays: after a lost connection, the reconnect must hand the
    broker new signed bytes, or a receiver would refuse the second lost connection's Will as a replay."""
    from v2x.net.service import last_will
    from v2x.net.station import Clock

    ca = CA()
    clock = Clock(EPOCH)
    signer = ca.issue("rsu-w", int(time.time() * 1000) - 60_000, role_permissions(m.SenderKind.RSU))  # a Will is made now
    made: list[bytes] = []

    def will() -> Will:
        w = last_will("v2x/v1/status/rsu/rsu-w", "rsu-w", m.SenderKind.RSU, clock, signer)
        made.append(w.payload)
        return w

    broker = MosquittoBroker().start()
    try:
        t = MqttTransport(broker.url, "rsu-w", will=will, keepalive_s=1, connect_timeout_s=30.0)
        async with t:
            broker.crash()
            await until(lambda: not t.connected)
            broker.start()
            await until(lambda: t.connected)
    finally:
        broker.stop()
    assert len(made) >= 2
    assert len(set(made)) == len(made)  # new bytes for every CONNECT
    v = ca.verifier()
    assert [_check(v, p, NOW_US, "cloud", retained=True) for p in made] == [None] * len(made)  # each genuine, none a replay


def test_fast_mode_signs_the_cloud_s_will() -> None:
    """Fast mode's cloud signs its Will like every other message (it is made at connect time, after signing is set up)."""
    from v2x.net.connection import Connection
    from v2x.run.fast import FastRun

    ca = CA()
    run = FastRun(load(bundled_dir() / "four_way.toml"), Connection("mqtt://127.0.0.1:1", root="v2x/v1", ca=ca))
    transport = run.cloud.transport.inner  # type: ignore[attr-defined]
    will = transport.will() if callable(transport.will) else transport.will  # as the CONNECT would carry it
    assert will.topic == "v2x/v1/status/cloud/cloud"
    sent_us = codec.decode(will.payload).header.gen_time_us
    assert _check(ca.verifier(), will.payload, sent_us, "rsu-1", True) is None


def _spat_about(name: str) -> m.Spat:
    state = m.IntersectionState(ref=intersection_ref(0), name=name, revision=0, status=frozenset(), timestamp_ms=0, plan_id=0, states=())
    return m.Spat((state,))


def test_a_certificate_permits_only_its_holder_s_messages_under_its_own_name() -> None:
    """1609.2's permissions in spirit: a pseudonym signs only what its role sends, about its own intersections, under
    its own name; an authority grants only what it holds, and its own certificate signs no message."""
    ca = CA()
    v = ca.verifier()
    t0 = int(EPOCH * 1000)
    fleet = ca.authority("fleet", t0, role_permissions(m.SenderKind.VEHICLE))
    roadside = ca.authority("roadside", t0, role_permissions(m.SenderKind.RSU, ["J1", "J2"]))
    clock = StepClock(EPOCH)
    clock.t = 10.0

    def signed(signer_of: Signer, sender: str, kind: m.SenderKind, body: m.Body) -> bytes:
        st = Station(sender, kind, clock)
        st.signer = signer_of
        return st.encode(body, stream="x")

    veh = fleet.issue("veh-1", t0)
    rsu = roadside.issue("RSU-J1", t0, role_permissions(m.SenderKind.RSU, ["J1"]))
    assert _check(v, signed(veh, "veh-1", m.SenderKind.VEHICLE, BSM), NOW_US) is None
    assert _check(v, signed(rsu, "RSU-J1", m.SenderKind.RSU, _spat_about("J1")), NOW_US) is None
    # a vehicle's genuine pseudonym, under another name: the cloud's, an RSU's
    assert _check(v, signed(veh, "cloud", m.SenderKind.CLOUD, m.Status(m.ServiceState.ONLINE, "x", "")), NOW_US) == "wrong_pseudonym"
    assert _check(v, signed(veh, "RSU-J1", m.SenderKind.RSU, _spat_about("J1")), NOW_US) == "wrong_pseudonym"
    # under its own name, a message its role does not send; an RSU's SPaT about another intersection
    assert _check(v, signed(veh, "veh-1", m.SenderKind.RSU, m.Rsm(ref_pos=m.GeoPoint(0.0, 0.0), participants=())), NOW_US) == "not_permitted"
    assert _check(v, signed(rsu, "RSU-J1", m.SenderKind.RSU, _spat_about("J2")), NOW_US) == "not_permitted"
    # an authority grants only what it holds
    with pytest.raises(ValueError, match="may not grant"):
        fleet.issue("cloud", t0, role_permissions(m.SenderKind.CLOUD))
    with pytest.raises(ValueError, match="may not grant"):
        roadside.issue("RSU-J3", t0, role_permissions(m.SenderKind.RSU, ["J3"]))
    # an authority's own key signs no message
    assert _check(v, signed(Signer(fleet.cert, fleet.key), "fleet", m.SenderKind.VEHICLE, BSM), NOW_US) == "unknown_cert"
    # a genuine certificate with its pseudonym or permissions edited by its holder: its issuer's signature fails,
    # though it keeps the certificate's id (a verifier must not trust an id it has seen before)
    genuine = signed(veh, "veh-1", m.SenderKind.VEHICLE, BSM)
    for edit in ("pseudonym", "permissions"):
        cert = pb.Certificate()
        cert.CopyFrom(veh.cert)
        if edit == "pseudonym":
            cert.pseudonym = "cloud"
        else:
            cert.permissions.add(psid="plan")
        sender = "cloud" if edit == "pseudonym" else "veh-1"
        body: m.Body = BSM if edit == "pseudonym" else m.SignalPlan(
            intersection=intersection_ref(0), plan_id=1, mode=m.ControlMode.FIXED_TIME, cycle_s=60.0, offset_s=0.0, phases=())
        kind = m.SenderKind.CLOUD
        assert _check(v, genuine, NOW_US, receiver=edit) is None  # the genuine one first: its certificate now cached
        assert _check(v, signed(Signer(cert, veh.key, veh.issuer), sender, kind, body), NOW_US) == "unknown_cert"


def test_a_tier_s_authority_survives_its_file(tmp_path: Path) -> None:
    ca = CA()
    a = ca.authority("roadside", int(EPOCH * 1000), role_permissions(m.SenderKind.RSU, ["J1"]))
    a.save(tmp_path / "a.json")
    b = Authority.load(tmp_path / "a.json")
    assert b.cert == a.cert
    assert b.permissions == {"map": ("J1",), "prs": (), "rsm": (), "spat": ("J1",), "status": ()}
    st = Station("RSU-J1", m.SenderKind.RSU, StepClock(EPOCH))
    st.signer = b.issue("RSU-J1", int(EPOCH * 1000))
    assert _check(ca.verifier(), st.encode(_spat_about("J1"), 10.0, "x"), int(EPOCH * 1e6)) is None
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json: not a signing authority"):
        Authority.load(tmp_path / "bad.json")


def _mqtt(kind: int, body: bytes) -> bytes:
    """An MQTT packet: its first byte, the remaining length (MQTT's variable-length integer), the body."""
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([kind]) + bytes(length) + body


def _read_packet(sock: Any) -> tuple[int, bytes]:
    """The next MQTT packet on a blocking socket: (its first byte, its body)."""
    def exactly(n: int) -> bytes:
        got = b""
        while len(got) < n:
            chunk = sock.recv(n - len(got))
            assert chunk, "the broker closed the connection"
            got += chunk
        return got
    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return first, exactly(length)


async def test_a_qos1_message_the_broker_sends_again_after_a_reconnect_is_a_duplicate_not_a_replay(
    mosquitto: MosquittoBroker, topic_prefix: str,
) -> None:
    """QoS 1 is at least once: a message a receiver took, but had not acknowledged when its connection dropped, comes
    again when it reconnects to its session, DUP set by the broker. Signed, that copy was refused as a replay (bad
    input, its sender logged); it is the broker's copy, dropped as a duplicate. Seen under load, where an RSU that waited
    out a stall reconnected (tests/test_hardening.py's signed plan)."""
    import socket

    from v2x.net.reception import Reception
    from v2x.net.station import Clock
    from v2x.net.transport import Message

    clock = Clock(time.time())
    ca = CA()
    cloud = Station("cloud", m.SenderKind.CLOUD, clock)
    cloud.signer = ca.issue("cloud", int(time.time() * 1000) - 60_000, role_permissions(m.SenderKind.CLOUD))
    topic, client_id = f"{topic_prefix}/v2x/v1/rsi/1/cloud/1", f"{topic_prefix}-veh"
    pos = m.GeoPoint(31.2, 121.4)
    event = m.RoadTrafficEvent(event_id=1, kind=m.HazardKind.STALLED_VEHICLE, source=m.EventSource.DETECTION,
                               status=m.EventStatus.ACTIVE, position=pos, radius_m=10.0, start_time_ms=clock.utc_us() // 1000)
    signed = cloud.encode(m.Rsi(pos, (event,)), stream=topic)

    # the receiver's first connection: MQTT 5 by hand, a session that outlives it (60 s), subscribed at QoS 1
    with socket.create_connection(("127.0.0.1", mosquitto.port), timeout=10) as raw:
        raw.sendall(_mqtt(0x10, b"\x00\x04MQTT\x05\x00\x00\x3c\x05\x11" + (60).to_bytes(4, "big")
                          + len(client_id).to_bytes(2, "big") + client_id.encode()))
        assert _read_packet(raw)[0] == 0x20  # CONNACK
        raw.sendall(_mqtt(0x82, b"\x00\x01\x00" + len(topic).to_bytes(2, "big") + topic.encode() + b"\x01"))
        assert _read_packet(raw)[0] == 0x90  # SUBACK
        async with MqttTransport(mosquitto.url, f"{topic_prefix}-cloud") as tx:
            tx.publish(topic, signed, qos=1)
            assert await tx.drain(5.0)
        kind, body = await asyncio.to_thread(_read_packet, raw)
        assert kind & 0xF6 == 0x32, hex(kind)  # PUBLISH, QoS 1
        assert not kind & 0x08, hex(kind)  # sent the first time: DUP clear
        props_at = 2 + int.from_bytes(body[:2], "big") + 2  # after the topic and the packet id
        assert body[props_at] == 0  # (no properties)
        first = body[props_at + 1:]
        # ... and the connection drops before the receiver acknowledges it (no PUBACK)
    assert first == signed
    vehicle = Reception("veh-1", m.SenderKind.VEHICLE, clock)
    vehicle.verifier = ca.verifier()
    assert vehicle.accept(Message(topic, first, 1, False, time.time_ns())) is not None  # taken, once

    # the receiver connects to its session again: the broker sends what was not acknowledged, DUP set
    async with MqttTransport(mosquitto.url, client_id, clean_start=False, session_expiry_s=60) as rx:
        await until(lambda: rx.stats.received > 0)
        (again,) = rx.receive()
    assert again.dup, again
    assert again.qos == 1
    assert again.payload == signed
    assert vehicle.accept(again) is None
    assert vehicle.checked(again, "veh-1") is None  # dropped by the verifier itself: no sequence bookkeeping needed
    assert dict(vehicle.bad.counts) == {}, vehicle.bad.counts  # before: {"replay": 1}
    assert vehicle.outcomes["duplicate"] == 2
    # the same bytes again without DUP (someone sending what it captured) are a replay, as before
    assert vehicle.accept(Message(topic, signed, 1, False, time.time_ns())) is None
    assert dict(vehicle.bad.counts) == {"replay": 1}


async def test_the_broker_never_passes_on_a_publisher_s_dup_flag(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    """What the replay check's leniency rests on: DUP on a delivered message is the broker's own (MQTT 3.1.1 3.3.1.1,
    5.0 3.3.1.1), so a publisher cannot mark a captured message as a redelivery to slip it past a receiver."""
    import socket

    topic = f"{topic_prefix}/v2x/v1/rsi/1/cloud/1"
    async with MqttTransport(mosquitto.url, f"{topic_prefix}-rx") as rx:
        await rx.subscribe(topic, qos=1)
        with socket.create_connection(("127.0.0.1", mosquitto.port), timeout=10) as raw:
            client_id = f"{topic_prefix}-tx"
            raw.sendall(_mqtt(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(client_id).to_bytes(2, "big") + client_id.encode()))
            assert _read_packet(raw)[0] == 0x20  # CONNACK
            # PUBLISH, QoS 1, DUP set: topic, packet id 7, no properties, the payload
            raw.sendall(_mqtt(0x3A, len(topic).to_bytes(2, "big") + topic.encode() + b"\x00\x07\x00" + b"captured"))
            assert (await asyncio.to_thread(_read_packet, raw))[0] == 0x40  # PUBACK
        await until(lambda: rx.stats.received > 0)
        (got,) = rx.receive()
    assert got.payload == b"captured"
    assert got.qos == 1
    assert not got.dup
