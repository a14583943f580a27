"""`v2x tap`: print every message on a broker, decoded, as one JSON line each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import TextIO

from v2x.core import codec
from v2x.core.errors import DecodeError
from v2x.core.jsonview import frame_record
from v2x.net.transport import MqttTransport


async def tap(url: str, topic_filter: str, count: int | None, out: TextIO, errors: TextIO) -> int:
    """Print decoded messages until `count` have been printed (None: forever). Returns how many."""
    printed = 0
    async with MqttTransport(url, f"v2x-tap-{id(out):x}") as t:
        await t.subscribe(topic_filter, qos=1)
        while count is None or printed < count:
            await t.wait(1.0)
            for msg in t.receive() if count is None else t.receive(count - printed):
                try:
                    frame = codec.decode(msg.payload)
                except DecodeError as e:
                    # a bad payload is reported, never fatal
                    print(json.dumps({"topic": msg.topic, "error": e.kind, "detail": str(e), "bytes": len(msg.payload)}), file=errors)
                    continue
                out.write(json.dumps(frame_record(msg.topic, frame, msg.rx_ns), ensure_ascii=False) + "\n")
                out.flush()
                printed += 1
    return printed


def run(url: str, topic_filter: str, count: int | None) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tap(url, topic_filter, count, sys.stdout, sys.stderr))
    return 0
