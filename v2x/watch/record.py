"""Recording to MCAP and replaying from it.

A recording holds every message a subscriber got, exactly as it came over the wire: one
MCAP channel per MQTT topic, the payload bytes unchanged, `publish_time` the header's generation
time, and `log_time` the time on the run's own clock: in real time the receive time (sim time
is the wall clock), in fast mode the generation time (sim time from the fixed epoch; `--log-time
sent`), so that a replay at `--speed 1`, and Foxglove's timeline, take as long as the run's sim
time did, not the seconds its fast run took. The schema is `v2x.v1.MessageFrame` as a
protobuf FileDescriptorSet, so Foxglove and the `mcap` readers decode every message.
A payload that is not a MessageFrame is still kept (nothing is lost), on a second channel
of its topic with no schema, and counted.

Beside the raw channels, a recording holds Foxglove scene channels derived from the messages
(v2x.watch.foxglove: vehicles for the Map and 3D panels, lanes, signals, hazards, latency), marked
with the channel metadata `v2x: scene`; `read` and the replays skip them. `--no-scene` leaves them out.

    v2x record --broker URL out.mcap     record until Ctrl-C (or --duration)
    v2x replay run.mcap --to-broker URL  publish a recording back onto a broker
    v2x replay run.mcap                  watch it in the visualiser (v2x.watch.viz)

Replayed messages go out with the QoS and retain flag of their topic (the topic table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from google.protobuf.message import DecodeError as PbDecodeError
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.writer import Writer
from mcap_protobuf.schema import build_file_descriptor_set

from v2x.core.codec import MAX_PAYLOAD_BYTES
from v2x.core.errors import BrokerError, V2xError
from v2x.core.topics import DEFAULT_ROOT, spec_of
from v2x.core.wire import v2x_pb2 as pb
from v2x.net.connection import new_run_id
from v2x.net.options import add_credentials_option, add_run_id_option, credentials, positive_seconds
from v2x.net.security import RECORD_LOGIN, login
from v2x.net.transport import MqttTransport
from v2x.watch.foxglove import LATENCY_PREFIX, LATENCY_SCHEMA, SCHEMAS, Out, SceneChannels

log = logging.getLogger(__name__)

SCHEMA_NAME = "v2x.v1.MessageFrame"
SCENE_METADATA = {"v2x": "scene"}  # marks a derived channel (Foxglove's scene), not a topic of the wire
RAW_ENCODING = "application/octet-stream"  # channels of payloads that are not MessageFrames
QUIET_S = 0.5  # [s] with nothing arriving before a stopping recorder closes the file
DRAIN_MAX_S = 10.0  # [s] at most spent draining on stop


@dataclass(frozen=True, slots=True)
class Recorded:
    topic: str
    payload: bytes
    log_time_ns: int  # receive time
    publish_time_ns: int  # generation time from the header (the receive time when it has none)


LOG_TIMES = ("receive", "sent")  # what a recording's log time is: when it arrived, or when it was generated


class Recorder:
    """Writes messages to an MCAP file as they arrive."""

    def __init__(self, out: Path | IO[bytes], log_time: str = "receive", *, scene: bool = True, root: str = DEFAULT_ROOT) -> None:
        """`log_time`: "receive" (the receive time), or "sent" (the header's generation time; a payload that has none
        is logged at the latest generation time before it). `scene`: add Foxglove's scene channels, from the messages
        under the topic root `root`."""
        if log_time not in LOG_TIMES:
            raise ValueError(f"log time {log_time!r}: expected one of {', '.join(LOG_TIMES)}")
        self.log_sent = log_time == "sent"
        self._last_sent_ns: int | None = None
        self._file: IO[bytes] = open(out, "wb") if isinstance(out, Path) else out  # noqa: SIM115 (closed in close())
        self._owns = isinstance(out, Path)
        self.path = out if isinstance(out, Path) else None
        self.writer = Writer(self._file)
        self.writer.start(profile="", library="v2x-sim")
        fds = build_file_descriptor_set(pb.MessageFrame)
        self.schema_id = self.writer.register_schema(SCHEMA_NAME, "protobuf", fds.SerializeToString())
        self._channels: dict[tuple[str, bool], int] = {}
        self._seq: Counter[int] = Counter()
        self.messages = 0
        self.undecodable = 0
        self.bytes = 0
        self.by_type: Counter[str] = Counter()
        # the scene (latency only when the log time is the receive time: a fast run's log time is when it was sent)
        self.scene = SceneChannels(root, measure_latency=not self.log_sent) if scene else None
        self.scene_errors = 0
        self._scene_schemas: dict[str, int] = {}

    def _channel(self, topic: str, framed: bool) -> int:
        cid = self._channels.get((topic, framed))
        if cid is None:
            if framed:
                cid = self.writer.register_channel(topic, "protobuf", self.schema_id)
            else:
                cid = self.writer.register_channel(topic, RAW_ENCODING, 0, {"note": "payload is not a v2x.v1.MessageFrame"})
            self._channels[(topic, framed)] = cid
        return cid

    def write(self, topic: str, payload: bytes, rx_ns: int) -> None:
        publish_ns, framed = rx_ns, len(payload) <= MAX_PAYLOAD_BYTES
        if framed:
            try:
                msg = pb.MessageFrame.FromString(payload)
            except (PbDecodeError, RecursionError):
                framed = False
            else:
                if 0 < msg.header.gen_time_us < 2**64 // 1000:  # a wild header time does not fit MCAP's uint64 ns
                    publish_ns = msg.header.gen_time_us * 1000
                self.by_type[msg.WhichOneof("body") or ("cleared" if not payload else "no body")] += 1
        if not framed:
            self.undecodable += 1
        log_ns = rx_ns
        if self.log_sent:
            if publish_ns != rx_ns:
                self._last_sent_ns = publish_ns
            log_ns = rx_ns if self._last_sent_ns is None else self._last_sent_ns
        cid = self._channel(topic, framed)
        self._seq[cid] += 1
        self.writer.add_message(cid, log_time=log_ns, data=payload, publish_time=publish_ns, sequence=self._seq[cid])
        self.messages += 1
        self.bytes += len(payload)
        if self.scene is not None:
            try:
                self._write_scene(self.scene.feed(topic, payload, log_ns))
            except Exception:  # a bug in deriving the scene never costs the recording its raw messages
                self.scene_errors += 1
                if self.scene_errors == 1:
                    log.exception("%s: the Foxglove scene could not be derived from this message", topic)

    def _write_scene(self, outs: list[Out]) -> None:
        for o in outs:
            key = ("scene:" + o.channel, True)
            cid = self._channels.get(key)
            if cid is None:
                cid = self._channels[key] = self._scene_channel(o.channel)
            self._seq[cid] += 1
            self.writer.add_message(cid, log_time=o.log_time_ns, data=o.data, publish_time=o.log_time_ns, sequence=self._seq[cid])

    def _scene_channel(self, channel: str) -> int:
        if channel.startswith(LATENCY_PREFIX):
            name, encoding, data, msg_encoding = "v2x.Latency", "jsonschema", json.dumps(LATENCY_SCHEMA).encode(), "json"
        else:
            cls = SCHEMAS[channel]
            name, encoding, msg_encoding = cls.DESCRIPTOR.full_name, "protobuf", "protobuf"
            data = build_file_descriptor_set(cls).SerializeToString()
        sid = self._scene_schemas.get(name)
        if sid is None:
            sid = self._scene_schemas[name] = self.writer.register_schema(name, encoding, data)
        return self.writer.register_channel(channel, msg_encoding, sid, SCENE_METADATA)

    def close(self) -> dict[str, Any]:
        if self.scene is not None:
            self._write_scene(self.scene.flush())
        self.writer.finish()  # type: ignore[no-untyped-call]
        if self._owns:
            self._file.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path else None, "messages": self.messages, "channels": len(self._channels),
            "undecodable": self.undecodable, "bytes": self.bytes, "by_type": dict(sorted(self.by_type.items())),
            **({} if self.scene is None else {"scene": {
                "messages": dict(sorted(self.scene.sent.items())), "late_bsm": self.scene.late_bsm, "errors": self.scene_errors,
            }}),
        }


def read(path: Path) -> Iterator[Recorded]:
    """Every message of a recording that came over the wire, in log-time order, framed or not (not the scene channels
    derived from them). A file that is not MCAP (or is cut short) raises RecordingError naming the file."""
    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            for _schema, channel, message in reader.iter_messages(log_time_order=True):
                if channel.metadata.get("v2x") != "scene":
                    yield Recorded(channel.topic, bytes(message.data), message.log_time, message.publish_time)
    except (McapError, EOFError, struct.error) as e:
        raise RecordingError(f"{path}: not a readable MCAP recording ({e})") from None


class RecordingError(V2xError):
    """A recording cannot be read."""


# -- the commands -----------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout: `v2x run` waits for "ready" and reads the "summary"."""
    print(json.dumps({"event": event, **fields}), flush=True)


async def drain(t: MqttTransport, on_message: Any, quiet_s: float = QUIET_S, limit_s: float = DRAIN_MAX_S) -> None:
    """Take what is still arriving until `quiet_s` passes with nothing (at most `limit_s`)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not await t.wait(quiet_s):
            return
        for msg in t.receive():
            on_message(msg.topic, msg.payload, msg.rx_ns)


def stop_event(*signals: signal.Signals) -> asyncio.Event:
    """An event set by any of `signals` (default SIGINT and SIGTERM)."""
    ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in signals or (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, ev.set)
    return ev


async def record(
    url: str, root: str, out: Path, duration_s: float | None, run_id: str | None = None, log_time: str = "receive",
    scene: bool = True,
) -> dict[str, Any]:
    """Record until SIGINT/SIGTERM or `duration_s`; `url` carries the login when the broker needs one; `run_id`: the
    run it records (its client id is `<run id>-record`)."""
    rec = Recorder(out, log_time, scene=scene, root=root)
    stop = stop_event()
    try:
        async with MqttTransport(url, f"{run_id or new_run_id()}-record", inbox=1_000_000) as t:
            await t.subscribe(f"{root}/#", qos=1)
            _emit("ready", topic_filter=f"{root}/#")
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                await t.wait(0.2)
                for msg in t.receive():
                    rec.write(msg.topic, msg.payload, msg.rx_ns)
            await drain(t, rec.write)
            dropped = t.stats.dropped_in
    finally:
        summary = rec.close()
    summary["dropped"] = dropped
    return summary


def qos_retain(topic: str) -> tuple[int, bool]:
    """QoS and retain flag of a topic, from the topic table (QoS 0, not retained if the topic is not ours)."""
    spec = spec_of(topic)
    return (0, False) if spec is None else (spec.qos, spec.retained != "no")


async def replay_to_broker(path: Path, url: str, speed: float) -> dict[str, int]:
    """Publish a recording onto a broker, paced by its log times / `speed` (0: as fast as the broker takes them)."""
    sent = Counter[str]()
    async with MqttTransport(url, f"v2x-replay-{os.getpid()}", outbox=1_000_000) as t:
        t0_wall = time.monotonic()
        t0_log: int | None = None
        for r in read(path):
            t0_log = r.log_time_ns if t0_log is None else t0_log
            if speed > 0:
                due = t0_wall + (r.log_time_ns - t0_log) / 1e9 / speed
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
            qos, retain = qos_retain(r.topic)
            while not t.publish(r.topic, r.payload, qos=qos, retain=retain):  # the outbox is full: let it empty
                await t.drain(1.0)
            sent["messages"] += 1
        if not await t.drain(60.0):
            raise BrokerError(f"{url}: the replay's messages were not all acknowledged within 60 s")
        took_s = time.monotonic() - t0_wall
    return {**sent, "wall_ms": round(took_s * 1000)}  # from the first message to the last acknowledged


def build_record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="v2x record",
        description="Record every message under a topic root to MCAP (protobuf schemas; Foxglove opens it). "
        "Stops on Ctrl-C or after --duration; prints a JSON summary.",
    )
    p.add_argument("out", type=Path, help="the .mcap file to write")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    p.add_argument("--duration", type=positive_seconds, default=None, help="wall seconds to record (default: until Ctrl-C)")
    p.add_argument(
        "--log-time", choices=LOG_TIMES, default="receive",
        help="each message's MCAP log time: when it arrived (default; real time, where sim time is the wall clock), "
        "or when it was sent, from its header (a fast run, whose sim time runs ahead of the wall: `v2x run --fast "
        "--record` sets it), so that replay and Foxglove's timeline keep sim time",
    )
    p.add_argument(
        "--no-scene", action="store_true",
        help="leave out the Foxglove scene channels (/scene/..., /latency/...) derived from the messages: only what came over the wire",
    )
    add_credentials_option(p)
    add_run_id_option(p, "it records")
    return p


def record_main(argv: list[str]) -> int:
    args = build_record_parser().parse_args(argv)
    try:
        url = login(credentials(args, "v2x record", ("observer",)), args.broker, RECORD_LOGIN)
        summary = asyncio.run(record(url, args.root.strip("/"), args.out, args.duration, args.run_id, args.log_time, not args.no_scene))
    except BrokerError as e:
        args.out.unlink(missing_ok=True)  # failed: no partial recording left behind to be taken for a whole one
        print(f"v2x record: {e}", file=sys.stderr)
        return 1
    _emit("summary", **summary)
    return 0


def replay_broker_main(path: Path, url: str, speed: float) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        try:
            sent = asyncio.run(replay_to_broker(path, url, speed))
        except (BrokerError, RecordingError) as e:
            print(f"v2x replay: {e}", file=sys.stderr)
            return 1
        _emit("summary", **sent)
    return 0
