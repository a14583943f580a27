"""Who may send what on which topic (v2x.core.trust): the header's sender must agree with the topic and be of the
kind that sends the message type; a message may not be ahead of the receiver's clock beyond the skew allowed."""

from __future__ import annotations

import pytest

from v2x.core import messages as m
from v2x.core.mapdata import intersection_ref
from v2x.core.scenario import bundled_dir, load
from v2x.core.topics import Topics
from v2x.core.trust import TrustRules

V, R, C = m.SenderKind.VEHICLE, m.SenderKind.RSU, m.SenderKind.CLOUD
T = Topics("t/x/v2x/v1")
TILE = "13212101122011302"
RULES = TrustRules(load(bundled_dir() / "corridor.toml"))  # J1, J2, J3 with RSUs RSU-J1...


def _spat(*names: str) -> m.Spat:
    return m.Spat(tuple(
        m.IntersectionState(ref=intersection_ref(0), name=n, revision=0, status=frozenset(), timestamp_ms=1_000, plan_id=1, states=())
        for n in names
    ))


def _frame(sender: str, kind: m.SenderKind, body: m.Body) -> m.Frame:
    return m.Frame(m.Header(sender, kind, 0, 1_000_000, 0), body)


BSM = m.Bsm(position=m.GeoPoint(31.0, 120.0), speed_mps=10.0, heading_deg=90.0)
STATUS = m.Status(m.ServiceState.ONLINE)


@pytest.mark.parametrize(
    ("topic", "sender", "kind", "body"),
    [
        (T.bsm(TILE, "veh-3"), "veh-3", V, BSM),
        (T.spat("rsu", TILE, "J2"), "RSU-J2", R, _spat("J2")),
        (T.spat("cloud", TILE, "J2"), "cloud-1", C, _spat("J2")),
        (T.rsm(TILE, "RSU-J1"), "RSU-J1", R, m.Rsm(m.GeoPoint(31.0, 120.0), ())),
        (T.status("rsu", "RSU-J3"), "RSU-J3", R, STATUS),
        (T.status("cloud", "cloud"), "cloud", C, STATUS),
    ],
)
def test_a_sender_that_agrees_with_its_topic_is_trusted(topic: str, sender: str, kind: m.SenderKind, body: m.Body) -> None:
    assert RULES.sender_problem(topic, _frame(sender, kind, body)) is None


@pytest.mark.parametrize(
    ("topic", "sender", "kind", "body", "says"),
    [
        (T.bsm(TILE, "veh-3"), "veh-4", V, BSM, "from 'veh-4' on a topic of 'veh-3'"),
        (T.bsm(TILE, "RSU-J1"), "RSU-J1", R, BSM, "a bsm from a rsu"),
        (T.spat("rsu", TILE, "J2"), "RSU-J1", R, _spat("J2"), "from 'RSU-J1' on a topic of 'RSU-J2'"),
        (T.spat("rsu", TILE, "J2"), "veh-666", V, _spat("J2"), "a spat from a vehicle"),
        (T.spat("rsu", TILE, "J2"), "RSU-J2", R, _spat("J2", "J3"), "about ['J2', 'J3']"),
        (T.spat("cloud", TILE, "J2"), "RSU-J2", R, _spat("J2"), "a spat from a rsu (expected from a cloud)"),
        (T.spat("rsu", TILE, "J9"), "RSU-J9", R, _spat("J9"), "no intersection of this scenario"),
        (T.status("rsu", "RSU-J3"), "RSU-J1", R, STATUS, "on a topic of 'RSU-J3'"),
        (T.status("cloud", "cloud"), "veh-1", V, STATUS, "a status from a vehicle"),
    ],
)
def test_a_sender_that_does_not_agree_with_its_topic_is_refused(
    topic: str, sender: str, kind: m.SenderKind, body: m.Body, says: str,
) -> None:
    why = RULES.sender_problem(topic, _frame(sender, kind, body))
    assert why is not None
    assert says in why


def test_a_message_or_a_spat_s_timing_ahead_of_the_clock_is_measured() -> None:
    now_us = 1_000_000
    assert RULES.clock_skew_us == 500_000  # the default: 0.5 s
    assert RULES.ahead_us(_frame("veh-3", V, BSM), now_us) == 0
    later = m.Frame(m.Header("RSU-J1", R, 0, now_us, 0), _spat("J1"))
    assert RULES.ahead_us(later, now_us - 2_000_000) == 2_000_000
    dated_ahead = m.Spat((m.IntersectionState(ref=intersection_ref(0), name="J1", revision=0, status=frozenset(),
                                              timestamp_ms=now_us // 1000 + 3_600_000, plan_id=1, states=()),))
    assert RULES.ahead_us(m.Frame(m.Header("RSU-J1", R, 0, now_us, 0), dated_ahead), now_us) == 3_600_000_000


def test_a_bsm_heard_over_the_sidelink_is_held_to_the_same_rules() -> None:
    """The fleet's V2V radio judges a BSM as every other receiver does, on first use: sender against topic, kind,
    clock skew, age. Each refusal is counted by kind and never reaches an application."""
    from v2x.core import codec
    from v2x.vehicle.sidelink import Neighbours

    now_us = 5_000_000_000

    def bsm(sender: str, kind: m.SenderKind, at_us: int) -> bytes:
        return codec.encode(m.Frame(m.Header(sender, kind, 0, at_us, 0), BSM))

    heard = Neighbours(range_m=300.0)
    heard.trust, heard.utc_us = RULES, lambda: now_us
    cases = {
        "veh-1": bsm("veh-1", V, now_us - 100_000),  # genuine, 0.1 s old
        "veh-2": bsm("veh-2", R, now_us),  # a BSM claiming an RSU sent it
        "veh-3": bsm("veh-3", V, now_us + 3_600_000_000),  # an hour ahead
        "veh-4": bsm("veh-4", V, now_us - 5_000_000),  # five seconds old
    }
    for sender, payload in cases.items():
        heard.add(T.bsm(TILE, sender), payload, 10.0)
    assert [heard.heard("veh-9", s, 10.0, 10.1) is not None for s in cases] == [True, False, False, False]
    assert dict(heard.bad.counts) == {"wrong_sender": 1, "from_the_future": 1, "expired": 1}


def test_a_receiver_judges_every_message_as_the_rules_do_though_it_judges_a_sender_once() -> None:
    """Reception keeps each sender's verdict per topic: a sender that turns forger on a topic, a forger between two
    genuine messages, a SPaT naming another intersection on the same topic, each is refused as the rules refuse it."""
    from v2x.core import codec
    from v2x.net.reception import Reception
    from v2x.net.station import StepClock
    from v2x.net.transport import Message

    clock = StepClock(1.0)
    reception = Reception("cloud", C, clock, trust=RULES)
    bsm, spat = T.bsm(TILE, "veh-3"), T.spat("rsu", TILE, "J2")
    sent = [
        (bsm, "veh-3", V, BSM), (bsm, "veh-4", V, BSM), (bsm, "veh-3", V, BSM), (bsm, "veh-3", R, BSM),
        (spat, "RSU-J2", R, _spat("J2")), (spat, "RSU-J2", R, _spat("J2", "J3")), (spat, "RSU-J2", R, _spat("J2")),
        (spat, "RSU-J2", R, _spat("J3")), (bsm, "veh-3", V, BSM),
    ]
    refused = 0
    for seq, (topic, sender, kind, body) in enumerate(sent):
        frame = m.Frame(m.Header(sender, kind, seq, 1_000_000, 0), body)
        refused += RULES.sender_problem(topic, frame) is not None
        reception.accept(Message(topic, codec.encode(frame), 0, False, 0))
    assert refused == 4
    assert reception.bad.counts["wrong_sender"] == refused


def test_a_receiver_that_reads_a_step_s_bsms_at_once_takes_each_as_it_takes_it_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Reception.read_bsms` reads a step's BSMs in one call: handed to `accept`, each is what `decoded` gives it, and
    the receiver hands out the same frames and counts the same refusals, duplicates and expiries, stream by stream,
    as one that decodes each message as it comes (a forger, a BSM on a SPaT topic, a copy, an old one, garbage)."""
    from v2x.core import codec
    from v2x.net.reception import Reception, decoded
    from v2x.net.station import StepClock
    from v2x.net.transport import Message

    clock = StepClock(1.0)
    clock.t = 10.0
    bsm, spat = T.bsm(TILE, "veh-3"), T.spat("rsu", TILE, "J2")
    sent = [(bsm, "veh-3", V, BSM, 0), (bsm, "veh-4", V, BSM, 0), (bsm, "veh-3", V, BSM, 1), (bsm, "veh-3", V, BSM, 1),
            (spat, "RSU-J2", R, _spat("J2"), 0), (spat, "veh-3", V, BSM, 2), (bsm, "veh-3", V, BSM, 3)]
    now_us = clock.utc_us()
    msgs = [Message(topic, codec.encode(m.Frame(m.Header(sender, kind, seq, now_us - 2_000_000 * (seq == 3), 0), body)), 0, False, 0)
            for topic, sender, kind, body, seq in sent]
    msgs += [Message(bsm, b"\x0a\x01", 0, False, 0), Message(bsm, codec.encode(m.Frame(m.Header("veh-3", V, 4, now_us, 0), BSM)), 0, False, 0)]
    alone, at_once = (Reception("cloud", C, clock, trust=RULES) for _ in range(2))
    read = at_once.read_bsms(msgs)
    assert [r is not None for r in read] == [True, True, True, True, False, True, True, False, True]
    assert all(r == decoded(codec.decode(msg.payload)) for msg, r in zip(msgs, read, strict=True) if r is not None)
    relay = Reception("cloud", C, clock, trust=RULES)
    relay.skim_rsm = True  # a relay's reception (`codec.skim`) reads a BSM as `decode` does
    assert relay.read_bsms(msgs) == read
    got_alone = [alone.accept(msg) for msg in msgs]
    decoded_alone: list[bytes] = []

    def decode(data: bytes) -> m.Frame:  # what was not read at once
        decoded_alone.append(data)
        return real_decode(data)

    real_decode = codec.decode
    monkeypatch.setattr(codec, "decode", decode)
    got_at_once = [at_once.accept(msg, read=r) for msg, r in zip(msgs, read, strict=True)]
    monkeypatch.undo()
    assert decoded_alone == [msg.payload for msg, r in zip(msgs, read, strict=True) if r is None]
    assert got_at_once == got_alone
    assert sum(f is not None for f in got_alone) == 4  # veh-3's 0, 1, 4 and the SPaT
    assert at_once.bad.counts == alone.bad.counts == {"wrong_sender": 1, "wrong_type": 1, "expired": 1, "malformed": 1}
    assert at_once.outcomes == alone.outcomes
    assert at_once.measure.to_json() == alone.measure.to_json()


@pytest.mark.parametrize("rules", [RULES, None])
def test_a_bsm_taken_through_accept_bsm_is_taken_as_accept_takes_it(rules: TrustRules | None) -> None:
    """`Reception.accept_bsm`, a service's one-call path for a BSM `read_bsms` read on a BSM topic, hands out the same
    frames and counts the same refusals, duplicates, expiries, own messages and measurements as `accept` (a forger,
    a copy, an old one, one from the future, the receiver's own, a sender gone silent and back)."""
    from v2x.core import codec
    from v2x.core.topics import kind_of
    from v2x.net.reception import Reception
    from v2x.net.station import StepClock
    from v2x.net.transport import Message

    clock = StepClock(1.0)
    clock.t = 10.0
    now_us = clock.utc_us()
    bsm = T.bsm(TILE, "veh-3")
    sent = [("veh-3", V, 0, 0), ("veh-4", V, 0, 0), ("veh-3", V, 1, 0), ("veh-3", V, 1, 0), ("veh-3", V, 2, -2_000_000),
            ("veh-3", V, 3, 5_000_000), ("cloud", V, 0, 0), ("veh-3", V, 4, 0), ("veh-3", R, 5, 0)]
    msgs = [Message(bsm, codec.encode(m.Frame(m.Header(sender, kind, seq, now_us + dt, 0), BSM)), 0, False, 0)
            for sender, kind, seq, dt in sent]
    msgs.append(Message(bsm, codec.encode(m.Frame(m.Header("veh-3", V, 6, now_us, 0), BSM)), 0, True, 0))  # retained
    one, other = (Reception("cloud", C, clock, trust=rules) for _ in range(2))
    read = one.read_bsms(msgs)
    assert all(r is not None for r in read)
    assert all(kind_of(msg.topic) == "bsm" for msg in msgs)
    assert one.verifier is None  # (no signature required: what `Service.take` asks before `accept_bsm`)
    got = [one.accept(msg, read=r) for msg, r in zip(msgs, read, strict=True)]
    clock.t += 61.0  # past SILENT_S (60 s): the streams are swept, closed, before the next message is measured
    later = Message(bsm, codec.encode(m.Frame(m.Header("veh-3", V, 7, clock.utc_us(), 0), BSM)), 0, False, 0)
    got.append(one.accept(later, read=one.read_bsms([later])[0]))
    clock.t -= 61.0
    got_bsm = [other.accept_bsm(msg, r) for msg, r in zip(msgs, read, strict=True)]
    clock.t += 61.0
    got_bsm.append(other.accept_bsm(later, other.read_bsms([later])[0]))  # type: ignore[arg-type]
    assert got_bsm == got
    if rules is None:  # the forgers and the one from the future taken, the receiver's own handed back unmeasured
        assert one.bad.counts == {"expired": 1}
        assert one.outcomes == {"accepted": 8, "duplicate": 1, "own": 1}
    else:
        assert one.bad.counts == {"wrong_sender": 3, "expired": 1, "from_the_future": 1}
        assert one.outcomes == {"accepted": 5, "duplicate": 1}
    assert other.bad.counts == one.bad.counts
    assert other.bad.rejected_by_type == one.bad.rejected_by_type
    assert other.outcomes == one.outcomes
    assert other.measure.to_json() == one.measure.to_json()
    assert other.measure.closed == one.measure.closed
    assert one.measure.closed  # the sweep closed the silent streams


def test_a_bsm_taken_through_accept_bsm_on_an_impaired_link_is_lost_held_and_handed_out_as_accept_does() -> None:
    """On an impaired link `accept_bsm` loses, delays (holds) and hands out the same BSMs as `accept`."""
    from v2x.core import codec
    from v2x.core.scenario import Cellular, Links, Sidelink
    from v2x.net.impair import Impairment
    from v2x.net.reception import Reception
    from v2x.net.station import StepClock
    from v2x.net.transport import Message

    clock = StepClock(1.0)
    clock.t = 10.0
    now_us = clock.utc_us()
    msgs = [Message(T.bsm(TILE, f"veh-{k}"), codec.encode(m.Frame(m.Header(f"veh-{k}", V, 0, now_us, 0), BSM)), 0, False, 0)
            for k in range(40)]
    one, other = (Reception("cloud", C, clock, Impairment(Links(Sidelink(), Cellular(latency_ms=50.0, loss=0.3)), seed=3))
                  for _ in range(2))
    read = one.read_bsms(msgs)
    got = [one.accept(msg, read=r) for msg, r in zip(msgs, read, strict=True)]
    got_bsm = [other.accept_bsm(msg, r) for msg, r in zip(msgs, read, strict=True)]  # type: ignore[arg-type]
    assert got_bsm == got
    assert one.link_lost == other.link_lost
    assert one.link_lost["bsm"] > 0
    assert other.outcomes == one.outcomes
    assert one.outcomes["held"] > 0
    clock.t += 1.0
    assert other.due() == one.due()
    assert other.measure.to_json() == one.measure.to_json()
