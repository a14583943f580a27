"""Link impairment: the latency, jitter and loss of the scenario's links, applied at the receiver.

Two link kinds (the scenario's `[links]`):

- **sidelink** (PC5) carries vehicle<->RSU (and vehicle<->vehicle) messages: a fixed latency
  plus uniform jitter; nothing arrives beyond `range_m`; within it the loss probability
  rises with the square of the distance, from `loss` next to the sender to `edge_loss` at
  the range:  p(d) = loss + (edge_loss - loss) * (d / range_m)^2.
- **cellular** (Uu) carries everything to and from the cloud: latency lognormal with median
  `latency_ms` and 99th percentile `p99_ms` (fixed at `latency_ms` without a p99), plus
  uniform jitter, and a flat `loss`.

Each draw is a pure function of the run's seed, the receiver and the message's bytes (its
header holds sender, sequence number and generation time), so the same run impairs the
same messages the same way whatever order they arrive in, under any topic root: fast mode
stays deterministic. A signed message is drawn on its frame alone, without the signature
and certificate each run makes anew (`v2x.net.signing.unsigned`). The
delay adds to whatever the broker took (real time) or to the lockstep step (fast mode).
"""

from __future__ import annotations

import hashlib
import math
import struct
from statistics import NormalDist

from v2x.core.scenario import Links
from v2x.net.signing import unsigned

Z99 = NormalDist().inv_cdf(0.99)  # 2.326...
_WORDS = struct.Struct("<3Q")  # a 24-byte hash as three unsigned 64-bit words, read at once (every message, every receiver)
_TWO64 = 2.0**64
_INV = NormalDist().inv_cdf


def link_of(hop: str) -> str:
    """"cellular" for any hop to or from the cloud, else "sidelink"."""
    return "cellular" if "cloud" in hop else "sidelink"


class Impairment:
    def __init__(self, links: Links, seed: int, signed: bool = False) -> None:
        self.links = links
        self.seed = seed
        self.signed = signed  # messages carry signatures: draw on their frames alone (unsigned() walks each payload)
        c = links.cellular
        # lognormal: median = latency, p99 = median * exp(sigma * z99)
        self._sigma = math.log(c.p99_ms / c.latency_ms) / Z99 if c.p99_ms and c.latency_ms > 0 else 0.0

    def _uniforms(self, receiver: str, payload: bytes) -> tuple[float, float, float]:
        """Three uniforms in (0, 1]: the hash's three 8-byte words, little-endian, each (k + 0.5) / 2^64 (rounded to a float)."""
        frame = unsigned(payload) if self.signed else payload
        a, b, c = _WORDS.unpack(hashlib.blake2b(f"{self.seed}|{receiver}|".encode() + frame, digest_size=24).digest())
        return (a + 0.5) / _TWO64, (b + 0.5) / _TWO64, (c + 0.5) / _TWO64

    def sidelink_loss(self, distance_m: float) -> float:
        s = self.links.sidelink
        if distance_m > s.range_m:
            return 1.0
        return s.loss + (s.edge_loss - s.loss) * (distance_m / s.range_m) ** 2

    def delay_s(self, hop: str, receiver: str, payload: bytes, distance_m: float | None) -> float | None:
        """The extra delay [s] of one message (its payload: header and body) at one receiver, or None if lost."""
        u_loss, u_lat, u_jit = self._uniforms(receiver, payload)
        if link_of(hop) == "sidelink":
            s = self.links.sidelink
            p = s.loss if distance_m is None else self.sidelink_loss(distance_m)
            if u_loss < p:
                return None
            ms = s.latency_ms + s.jitter_ms * (2.0 * u_jit - 1.0)
        else:
            c = self.links.cellular
            if u_loss < c.loss:
                return None
            ms = c.latency_ms * math.exp(self._sigma * _INV(u_lat)) + c.jitter_ms * (2.0 * u_jit - 1.0)
        return max(ms, 0.0) / 1000.0
