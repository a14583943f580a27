"""What signing costs: ECDSA P-256 signatures and verifications per second, against decoding the same BSMs.

    python -m bench.signing            # 3 rounds of 5,000 BSMs; medians

Each round builds 5,000 distinct BSMs from 100 vehicles (pseudonym certificates from one CA),
then times, on one core: encoding them unsigned (the reference), encoding and signing them,
decoding them unsigned (the reference), and verifying them (certificate checks are cached by
certificate id, as a receiver does; every signature is checked, none is served from the
per-payload cache, since every payload differs).
"""

from __future__ import annotations

import statistics
import sys
import time

from v2x.core import codec
from v2x.core import messages as m
from v2x.net.signing import CA, role_permissions
from v2x.net.station import Station, StepClock

EPOCH = 1_767_225_600.0
N = 5_000


def _round() -> dict[str, float]:
    ca = CA()
    clock = StepClock(EPOCH)
    plain = [Station(f"veh-{k}", m.SenderKind.VEHICLE, clock) for k in range(100)]
    signed = [Station(f"veh-{k}", m.SenderKind.VEHICLE, clock) for k in range(100)]
    fleet = ca.authority("fleet", int(EPOCH * 1000), role_permissions(m.SenderKind.VEHICLE))  # as `v2x run --sign` does
    for st in signed:
        st.signer = fleet.issue(st.sender_id, int(EPOCH * 1000))
    bsms = [m.Bsm(position=m.GeoPoint(31.2 + k * 1e-6, 121.4), speed_mps=10.0 + k % 7, heading_deg=float(k % 360)) for k in range(N)]
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    unsigned_payloads = [plain[k % 100].encode(b, stream="bsm") for k, b in enumerate(bsms)]
    out["encode/s"] = N / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    payloads = [signed[k % 100].encode(b, stream="bsm") for k, b in enumerate(bsms)]
    out["encode+sign/s"] = N / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in unsigned_payloads:
        codec.decode(p)
    out["decode/s"] = N / (time.perf_counter() - t0)
    v = ca.verifier()
    now = int((EPOCH + 1.0) * 1e6)
    t0 = time.perf_counter()
    for p in payloads:
        frame = codec.decode(p)
        if v.check(p, frame, now) is not None:
            raise SystemExit("a genuine message failed to verify")
    out["decode+verify/s"] = N / (time.perf_counter() - t0)
    out["bytes unsigned"] = statistics.mean(len(p) for p in unsigned_payloads)
    out["bytes signed"] = statistics.mean(len(p) for p in payloads)
    return out


def main() -> int:
    rounds = [_round() for _ in range(3)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"{N} BSMs per round, 3 rounds, medians (one core)")
    for k in ("encode/s", "encode+sign/s", "decode/s", "decode+verify/s"):
        print(f"  {k:16} {med[k]:10,.0f}   runs: {', '.join(f'{r[k]:,.0f}' for r in rounds)}")
    print(f"  signing: {med['encode+sign/s'] / med['encode/s']:.3f} of unsigned encoding; "
          f"verifying: {med['decode+verify/s'] / med['decode/s']:.3f} of unsigned decoding")
    print(f"  BSM size: {med['bytes unsigned']:.0f} bytes unsigned, {med['bytes signed']:.0f} signed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
