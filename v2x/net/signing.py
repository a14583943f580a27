"""Signed messages: ECDSA P-256 with certificates that carry permissions (IEEE 1609.2 / ETSI TS 103 097 in spirit).

A signed payload is the plain MessageFrame bytes followed by field 99, `Security`: the
signer's pseudonym certificate, the certificate of the authority that issued it, and an ECDSA
P-256 / SHA-256 signature over exactly the bytes before it (protobuf reads the concatenation as
one frame, so an unsigned receiver decodes it as before). A certificate is a compact stand-in for
a 1609.2 one: pseudonym, validity, public key, permissions, and its issuer's signature over them.

Who issues what (the 1609.2 chain, shortened): the run's root CA issues one authority per tier,
whose permissions are what that tier's stations may send (`role_permissions`):

    a vehicle   bsm, prq
    an RSU      spat and map about its own intersections; rsm, prs, status
    the cloud   plan, rsi, advisory, spat (the relay), status

Each authority issues its stations' pseudonyms, with permissions within its own. A tier's process
holds only its authority's key, never the root's, so a fleet cannot make itself a cloud certificate.

A receiver with a `Verifier` (it trusts the root CA only) rejects, counting each by kind:

    unsigned         no signature where one is required
    unknown_cert     not issued (through an authority) by the trusted root CA, or a signature on the chain fails
    expired_cert     the message was generated outside its certificate's (or its authority's) validity
    bad_signature    the signature does not match the bytes (a forged or altered message)
    wrong_pseudonym  the certificate's pseudonym is not the sender the header names
    not_permitted    the certificate does not permit this message type, or this intersection
    stale            past its freshness on the receiver's clock: the end of the validity it declares (a plan's,
                     an advisory's, its RSI events' ends; an RSI about a hazard that lasts until it is cleared
                     stays fresh), or `max_age_s` after it was generated when it declares none; or
                     generated more than `max_age_s` ahead of the receiver's clock
    replay           the same signed bytes seen before by the same receiver (a retained message delivered
                     again, on resubscribing, or a QoS 1 one the broker sent again after a reconnect, DUP set,
                     is the broker's copy: not a replay, the receiver's duplicate)

Certificates are checked once and cached by their exact bytes; a payload's verdict is reached once
per process even when many receivers (a fleet's vehicles) get the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from v2x.core import messages as m
from v2x.core.kept import Kept
from v2x.core.trust import spat_names
from v2x.core.wire import v2x_pb2 as pb

CERT_LIFETIME_MS = 7 * 24 * 3600 * 1000  # [ms] a pseudonym certificate's validity (1609.2 pseudonyms: about a week)
MAX_AGE_S = 5.0  # [s] a signed message older (or newer) than this on the receiver's clock is stale
SEEN_KEPT = 200_000  # signed payloads remembered per verifier for replay detection
VERIFIED_KEPT = 4096  # payloads whose signature was checked, kept for the next receiver of the same bytes
_ECDSA = ec.ECDSA(hashes.SHA256())
DUPLICATE = "duplicate"  # Verifier.check: a copy the broker sent again, seen before (not a rejection: counted as a duplicate)

class _Clock(Protocol):
    def utc_us(self) -> int: ...


Permissions = Mapping[str, tuple[str, ...]]  # message type -> the intersections it may be about (empty: any)
ABOUT_INTERSECTIONS = ("spat", "map")  # the types whose permission names intersections (their bodies name theirs)
_SENDS = {
    m.SenderKind.VEHICLE: ("bsm", "prq"),
    m.SenderKind.RSU: ("spat", "map", "rsm", "prs", "status"),
    m.SenderKind.CLOUD: ("plan", "rsi", "advisory", "spat", "status"),
}


def valid_from_ms(clock: _Clock) -> int:
    """When a certificate issued now becomes valid: a minute before `clock`'s now (UTC ms), for clocks a little apart."""
    return clock.utc_us() // 1000 - 60_000


def role_permissions(kind: m.SenderKind, intersections: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """What a station of this kind may send; an RSU's SPaT and MAP only about `intersections` (its own)."""
    about = tuple(intersections) if kind is m.SenderKind.RSU else ()
    return {t: about if t in ABOUT_INTERSECTIONS else () for t in _SENDS[kind]}


_NO_END = -1  # valid until cleared: an RSI about a hazard with no end time


def valid_until_ms(body: m.Body) -> int | None:
    """The end [UTC ms] of the validity a message declares of its own: a plan's, an advisory's, the last of an RSI's
    events (`_NO_END` when one of them lasts until it is cleared); None when it declares none."""
    if isinstance(body, m.SignalPlan):
        return body.valid_until_ms
    if isinstance(body, m.Advisory):
        return body.valid_until_ms or None
    if isinstance(body, m.Rsi) and body.events:
        ends = [e.end_time_ms for e in body.events]
        return _NO_END if None in ends else max(e for e in ends if e is not None)
    return None


def _about(frame: m.Frame) -> set[str]:
    """The intersections a SPaT or a MAP speaks for."""
    body = frame.body
    if isinstance(body, m.MapData):
        return {x.name for x in body.intersections}
    return set(spat_names(body))


def _permitted(perms: Permissions, frame: m.Frame) -> bool:
    ssp = perms.get(m.message_type(frame.body).value)
    return ssp is not None and (not ssp or _about(frame) <= set(ssp))


def _within(granted: Permissions, held: Permissions) -> bool:
    """Whether every permission `granted` is also `held` (an issuer grants only what it may)."""
    return all(t in held and (not held[t] or (bool(ssp) and set(ssp) <= set(held[t]))) for t, ssp in granted.items())


def _perms_of(cert: pb.Certificate) -> dict[str, tuple[str, ...]]:
    return {p.psid: tuple(p.ssp) for p in cert.permissions}


def hashed_id8(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:8]


def _raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _der(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def _tbs(cert: pb.Certificate) -> bytes:
    """The certificate's to-be-signed part: fields 2..6, serialized."""
    part = pb.Certificate()
    part.CopyFrom(cert)
    part.ClearField("id")
    part.ClearField("ca_signature")
    return part.SerializeToString(deterministic=True)


def _trailer(sec: pb.Security) -> bytes:
    return pb.MessageFrame(security=sec).SerializeToString(deterministic=True)


_SECURITY_TAG = 99 << 3 | 2  # MessageFrame.security: field 99, length-delimited, always the last field on the wire


def unsigned(payload: bytes) -> bytes:
    """The frame a payload carries, without its signature trailer: the bytes every run of a seed sends alike (a
    signature and a certificate are new in each run). An unsigned payload, or one that is no frame, as it is."""
    i, n = 0, len(payload)
    while i < n:  # the frame's top-level fields are all length-delimited: header, body, security
        tag, i_len = _varint(payload, i)
        if tag == _SECURITY_TAG:
            return payload[:i]
        if tag & 7 != 2 or i_len < 0:
            return payload
        length, i_value = _varint(payload, i_len)
        if i_value < 0:
            return payload
        i = i_value + length
    return payload


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """The varint at `b[i:]` and the index after it; (0, -1) when `b` ends inside it or it runs past 10 bytes."""
    value, shift = 0, 0
    while i < len(b) and shift < 70:
        byte = b[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7
    return 0, -1


def _certificate(
    pseudonym: str, key: ec.EllipticCurvePrivateKey, issuer_id: bytes, issuer_key: ec.EllipticCurvePrivateKey,
    valid_from_ms: int, lifetime_ms: int, permissions: Permissions, authority: bool = False,
) -> pb.Certificate:
    cert = pb.Certificate(
        pseudonym=pseudonym, valid_from_ms=valid_from_ms, valid_to_ms=valid_from_ms + lifetime_ms,
        public_key=_point(key.public_key()), issuer=issuer_id, authority=authority,
        permissions=[pb.Permission(psid=t, ssp=ssp) for t, ssp in sorted(permissions.items())],
    )
    tbs = _tbs(cert)
    cert.id = hashed_id8(tbs)
    cert.ca_signature = _raw(issuer_key.sign(tbs, _ECDSA))
    return cert


@dataclass
class Signer:
    """One station's pseudonym: its certificate and private key, and the authority certificate that issued it."""

    cert: pb.Certificate
    key: ec.EllipticCurvePrivateKey
    issuer: pb.Certificate | None = None  # None: issued by the root CA itself

    def sign(self, frame: bytes) -> bytes:
        """The frame's bytes with its signature appended (field 99)."""
        sec = pb.Security(signer=self.cert, signature=_raw(self.key.sign(frame, _ECDSA)))
        if self.issuer is not None:
            sec.issuer.CopyFrom(self.issuer)
        return frame + _trailer(sec)


class CA:
    """The run's root certificate authority: it issues the tiers' authorities (and, for tests, pseudonyms)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.public_key = self.key.public_key()
        self.id = hashed_id8(_point(self.public_key))

    def issue(self, pseudonym: str, valid_from_ms: int, permissions: Permissions, lifetime_ms: int = CERT_LIFETIME_MS) -> Signer:
        """A pseudonym the root issues itself, permitted to send `permissions`."""
        key = ec.generate_private_key(ec.SECP256R1())
        return Signer(_certificate(pseudonym, key, self.id, self.key, valid_from_ms, lifetime_ms, permissions), key)

    def authority(self, name: str, valid_from_ms: int, permissions: Permissions, lifetime_ms: int = CERT_LIFETIME_MS) -> Authority:
        """An authority for one tier: it issues pseudonyms with permissions within `permissions`."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, self.id, self.key, valid_from_ms, lifetime_ms, permissions, authority=True)
        return Authority(cert, key, self.public_key)

    def verifier(self, max_age_s: float = MAX_AGE_S) -> Verifier:
        return Verifier(self.public_key, self.id, max_age_s)


@dataclass
class Authority:
    """A tier's issuing authority (1609.2's authorization authority, in spirit): its certificate from the root CA,
    its key, and the root's public key, which is all its stations trust. Saved to the file a tier's process is
    given (`--signing-ca`), in place of enrolment."""

    cert: pb.Certificate
    key: ec.EllipticCurvePrivateKey
    root_key: ec.EllipticCurvePublicKey

    @property
    def permissions(self) -> dict[str, tuple[str, ...]]:
        return _perms_of(self.cert)

    def issue(self, pseudonym: str, valid_from_ms: int, permissions: Permissions | None = None, lifetime_ms: int = CERT_LIFETIME_MS) -> Signer:
        """A pseudonym permitted to send `permissions` (default: all this authority may grant); ValueError beyond."""
        perms = self.permissions if permissions is None else permissions
        if not _within(perms, self.permissions):
            raise ValueError(f"authority {self.cert.pseudonym!r} may not grant {dict(perms)} (it holds {self.permissions})")
        key = ec.generate_private_key(ec.SECP256R1())
        return Signer(_certificate(pseudonym, key, self.cert.id, self.key, valid_from_ms, lifetime_ms, perms), key, self.cert)

    def verifier(self, max_age_s: float = MAX_AGE_S) -> Verifier:
        return Verifier(self.root_key, hashed_id8(_point(self.root_key)), max_age_s)

    def save(self, path: Path) -> None:
        data = {
            "certificate": base64.b64encode(self.cert.SerializeToString(deterministic=True)).decode(),
            "key": self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
            "root": self.root_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        }
        path.write_text(json.dumps(data) + "\n")
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> Authority:
        try:
            data = json.loads(path.read_text())
            cert = pb.Certificate.FromString(base64.b64decode(data["certificate"]))
            key = serialization.load_pem_private_key(data["key"].encode(), password=None)
            root = serialization.load_pem_public_key(data["root"].encode())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a signing authority written by `v2x run --sign` ({e})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(root, ec.EllipticCurvePublicKey):
            raise ValueError(f"{path}: not P-256 keys")
        if not cert.authority:
            raise ValueError(f"{path}: its certificate is not an authority's")
        return cls(cert, key, root)


@dataclass(frozen=True)
class _Known:
    """A certificate whose chain verified: its key, pseudonym, permissions and validity (with its issuer's)."""

    key: ec.EllipticCurvePublicKey
    pseudonym: str
    permissions: dict[str, tuple[str, ...]]
    valid_from_ms: int
    valid_to_ms: int


@dataclass
class Verifier:
    """Checks signed payloads against one trusted root CA; remembers what it saw, per receiver, for replays."""

    ca_key: ec.EllipticCurvePublicKey
    ca_id: bytes
    max_age_s: float = MAX_AGE_S
    _certs: Kept[bytes, _Known | None] = field(default_factory=lambda: Kept(VERIFIED_KEPT))  # a certificate's exact bytes -> verified, or None
    _checked: OrderedDict[bytes, str | None] = field(default_factory=OrderedDict)  # payload -> verdict, recent
    _seen: OrderedDict[tuple[str, bytes], None] = field(default_factory=OrderedDict)  # (receiver, signature) seen

    def check(
        self, payload: bytes, frame: m.Frame, now_us: int, receiver: str = "", retained: bool = False, redelivered: bool = False,
    ) -> str | None:
        """None when the payload (decoded as `frame`) is signed, genuine, permitted, fresh and new to `receiver`;
        else the kind of rejection. A retained message (MAP, an active hazard) is as old as it is: it is not held
        to `max_age_s`; seen before, it is not a replay (the receiver's sequence bookkeeping drops it as a
        duplicate). A `redelivered` one (QoS 1 sent again by the broker on the receiver's session, its DUP flag set)
        seen before is not a replay either: it is `DUPLICATE`, which the receiver drops and counts as such."""
        verdict = self._checked.get(payload, "")
        if verdict == "":
            verdict = self._verify(payload, frame)
            self._checked[payload] = verdict
            if len(self._checked) > VERIFIED_KEPT:
                self._checked.popitem(last=False)
        if verdict is not None:
            return verdict
        key = (receiver, payload[-64:])  # the signature: unique per signed message
        seen = key in self._seen
        if seen and redelivered:
            # the broker's copy of a message this receiver had, taken or refused (a QoS 1 message sent again on its
            # session after a reconnect): dropped here, whatever the sequence bookkeeping would make of it (a stream
            # gone quiet meanwhile would take it as new), and not counted against its sender a second time
            return DUPLICATE
        if not seen:
            self._seen[key] = None
            if len(self._seen) > SEEN_KEPT:
                self._seen.popitem(last=False)
        if not retained and self._stale(frame, now_us):
            return "stale"
        if seen:
            # a retained message delivered again (on resubscribing, after a reconnect) is the broker's copy, not a
            # replay: the receiver's sequence bookkeeping drops it as a duplicate
            return None if retained else "replay"
        return None

    def _stale(self, frame: m.Frame, now_us: int) -> bool:
        """Generated more than `max_age_s` ahead of `now_us`, or behind it and past its freshness: the end of its own
        validity when it carries one (a plan, an RSI, an advisory: what may wait out an outage on its way), else
        `max_age_s` after it was generated."""
        gen_us = frame.header.gen_time_us
        if gen_us - now_us > self.max_age_s * 1e6:
            return True
        until_ms = valid_until_ms(frame.body)
        if until_ms is _NO_END:
            return False
        return now_us > (gen_us + self.max_age_s * 1e6 if until_ms is None else until_ms * 1000)

    def _verify(self, payload: bytes, frame: m.Frame) -> str | None:
        try:
            msg = pb.MessageFrame.FromString(payload)
        except Exception:
            return "bad_signature"
        if not msg.HasField("security"):
            return "unsigned"
        sec = msg.security
        trailer = _trailer(sec)
        if not payload.endswith(trailer) or len(sec.signature) != 64:
            return "bad_signature"
        known = self._known(sec.signer, sec.issuer if sec.HasField("issuer") else None)
        if known is None:
            return "unknown_cert"
        if not known.valid_from_ms <= frame.header.gen_time_us // 1000 <= known.valid_to_ms:
            return "expired_cert"
        try:
            known.key.verify(_der(sec.signature), payload[: -len(trailer)], _ECDSA)
        except InvalidSignature:
            return "bad_signature"
        if known.pseudonym != frame.header.sender_id:
            return "wrong_pseudonym"
        if not _permitted(known.permissions, frame):
            return "not_permitted"
        return None

    def _known(self, cert: pb.Certificate, issuer: pb.Certificate | None) -> _Known | None:
        """The signer's certificate, verified up to the root (through `issuer`, an authority, when the root did not
        issue it itself); None when any link fails, or an authority's certificate signs a message."""
        raw = cert.SerializeToString(deterministic=True) + b"|" + (b"" if issuer is None else issuer.SerializeToString(deterministic=True))
        if raw in self._certs:
            return self._certs[raw]
        known = None
        if not cert.authority:
            if issuer is None:
                known = self._signed_by(cert, self.ca_key, self.ca_id)
            else:
                auth = self._signed_by(issuer, self.ca_key, self.ca_id) if issuer.authority else None
                leaf = None if auth is None else self._signed_by(cert, auth.key, issuer.id)
                if auth is not None and leaf is not None and _within(leaf.permissions, auth.permissions):
                    known = _Known(leaf.key, leaf.pseudonym, leaf.permissions, max(leaf.valid_from_ms, auth.valid_from_ms),
                                   min(leaf.valid_to_ms, auth.valid_to_ms))
        return self._certs.keep(raw, known)

    @staticmethod
    def _signed_by(cert: pb.Certificate, issuer_key: ec.EllipticCurvePublicKey, issuer_id: bytes) -> _Known | None:
        tbs = _tbs(cert)
        if cert.issuer != issuer_id or hashed_id8(tbs) != cert.id or len(cert.ca_signature) != 64:
            return None
        try:
            issuer_key.verify(_der(cert.ca_signature), tbs, _ECDSA)
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), cert.public_key)
        except (InvalidSignature, ValueError):
            return None
        return _Known(key, cert.pseudonym, _perms_of(cert), cert.valid_from_ms, cert.valid_to_ms)
