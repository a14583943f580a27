"""protobuf's wire format, written by compiled code: the pieces the batch encoders share (v2x.core.bsm_wire,
v2x.core.rsu_wire). Each writes into a byte array at a position and returns the position after what it wrote."""

from __future__ import annotations

from v2x.core.jit import ByteArray, helper


@helper
def varint(buf: ByteArray, at: int, v: int) -> int:
    """Write `v` (>= 0) as a protobuf varint at `at`; the position after it."""
    while v >= 0x80:
        buf[at] = (v & 0x7F) | 0x80
        v >>= 7
        at += 1
    buf[at] = v
    return at + 1


@helper
def field(buf: ByteArray, at: int, tag: int, v: int) -> int:
    """A varint field (`v` >= 0) unless it is 0, which proto3 leaves out."""
    if v == 0:
        return at
    buf[at] = tag
    return varint(buf, at + 1, v)


@helper
def message(buf: ByteArray, at: int, tag: int, body: ByteArray, n: int) -> int:
    """A length-delimited field: `tag`, then the first `n` bytes of `body` behind their length (a sub-message, which
    proto3 writes even when empty, as the codec sets it; or a string); the position after it."""
    buf[at] = tag
    at = varint(buf, at + 1, n)
    buf[at:at + n] = body[:n]
    return at + n


@helper
def zigzag(v: int) -> int:
    """sint32's encoding of `v`: 0, -1, 1, -2... as 0, 1, 2, 3..."""
    return (v << 1) ^ (v >> 63)
