"""Signed messages: ECDSA P-256 with pseudonym certificates from a scenario CA (IEEE 1609.2 / ETSI TS 103 097 in spirit).

A signed payload is the plain MessageFrame bytes followed by field 99, `Security`: the
signer's pseudonym certificate and an ECDSA P-256 / SHA-256 signature over exactly the bytes
before it (protobuf reads the concatenation as one frame, so an unsigned receiver decodes it
as before). The certificate is a compact stand-in for a 1609.2 one: pseudonym, validity,
public key, and the CA's signature over them.

A receiver with a `Verifier` rejects, counting each by kind:

    unsigned       no signature where one is required
    unknown_cert   not issued by the trusted CA (or its CA signature does not verify)
    expired_cert   the message was generated outside its certificate's validity
    bad_signature  the signature does not match the bytes (a forged or altered message)
    stale          generated more than `max_age_s` from the receiver's clock
    replay         the same signed bytes seen before by the same receiver

Certificates are checked once and cached by id; a payload's signature is checked once per
process even when many receivers (a fleet's vehicles) get the same bytes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from v2x.core.wire import v2x_pb2 as pb

CERT_LIFETIME_MS = 7 * 24 * 3600 * 1000  # [ms] a pseudonym certificate's validity (1609.2 pseudonyms: about a week)
MAX_AGE_S = 5.0  # [s] a signed message older (or newer) than this on the receiver's clock is stale
SEEN_KEPT = 200_000  # signed payloads remembered per verifier for replay detection
VERIFIED_KEPT = 4096  # payloads whose signature was checked, kept for the next receiver of the same bytes
_ECDSA = ec.ECDSA(hashes.SHA256())


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


@dataclass
class Signer:
    """One station's pseudonym: its certificate and private key."""

    cert: pb.Certificate
    key: ec.EllipticCurvePrivateKey

    def sign(self, frame: bytes) -> bytes:
        """The frame's bytes with its signature appended (field 99)."""
        return frame + _trailer(pb.Security(signer=self.cert, signature=_raw(self.key.sign(frame, _ECDSA))))


class CA:
    """The scenario's certificate authority: it issues pseudonym certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.public_key = self.key.public_key()
        self.id = hashed_id8(_point(self.public_key))

    @classmethod
    def load(cls, path: Path) -> CA:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a CA key written by v2x ({e})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"{path}: not a P-256 private key")
        return cls(key)

    def save(self, path: Path) -> None:
        path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        path.chmod(0o600)

    def issue(self, pseudonym: str, valid_from_ms: int, lifetime_ms: int = CERT_LIFETIME_MS) -> Signer:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = pb.Certificate(
            pseudonym=pseudonym, valid_from_ms=valid_from_ms, valid_to_ms=valid_from_ms + lifetime_ms,
            public_key=_point(key.public_key()), issuer=self.id,
        )
        tbs = _tbs(cert)
        cert.id = hashed_id8(tbs)
        cert.ca_signature = _raw(self.key.sign(tbs, _ECDSA))
        return Signer(cert, key)

    def verifier(self, max_age_s: float = MAX_AGE_S) -> Verifier:
        return Verifier(self.public_key, self.id, max_age_s)


@dataclass
class Verifier:
    """Checks signed payloads against one trusted CA; remembers what it saw, per receiver, for replays."""

    ca_key: ec.EllipticCurvePublicKey
    ca_id: bytes
    max_age_s: float = MAX_AGE_S
    _certs: dict[bytes, ec.EllipticCurvePublicKey] = field(default_factory=dict)  # certificate id -> key, verified
    _checked: OrderedDict[bytes, str | None] = field(default_factory=OrderedDict)  # payload -> verdict, recent
    _seen: OrderedDict[tuple[str, bytes], None] = field(default_factory=OrderedDict)  # (receiver, signature) seen

    def check(self, payload: bytes, gen_time_us: int, now_us: int, receiver: str = "", retained: bool = False) -> str | None:
        """None when the payload is signed, genuine, fresh and new to `receiver`; else the kind of rejection.
        A retained message (MAP, an active hazard) is as old as it is: it is not held to `max_age_s`."""
        verdict = self._checked.get(payload, "")
        if verdict == "":
            verdict = self._verify(payload, gen_time_us)
            self._checked[payload] = verdict
            if len(self._checked) > VERIFIED_KEPT:
                self._checked.popitem(last=False)
        if verdict is not None:
            return verdict
        if not retained and abs(now_us - gen_time_us) > self.max_age_s * 1e6:
            return "stale"
        key = (receiver, payload[-64:])  # the signature: unique per signed message
        if key in self._seen:
            return "replay"
        self._seen[key] = None
        if len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)
        return None

    def _verify(self, payload: bytes, gen_time_us: int) -> str | None:
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
        public = self._cert_key(sec.signer)
        if public is None:
            return "unknown_cert"
        if not sec.signer.valid_from_ms <= gen_time_us // 1000 <= sec.signer.valid_to_ms:
            return "expired_cert"
        try:
            public.verify(_der(sec.signature), payload[: -len(trailer)], _ECDSA)
        except InvalidSignature:
            return "bad_signature"
        return None

    def _cert_key(self, cert: pb.Certificate) -> ec.EllipticCurvePublicKey | None:
        known = self._certs.get(cert.id)
        if known is not None:
            return known
        tbs = _tbs(cert)
        if cert.issuer != self.ca_id or hashed_id8(tbs) != cert.id or len(cert.ca_signature) != 64:
            return None
        try:
            self.ca_key.verify(_der(cert.ca_signature), tbs, _ECDSA)
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), cert.public_key)
        except (InvalidSignature, ValueError):
            return None
        self._certs[cert.id] = key
        return key
