"""`v2x viz --foxglove [PORT]`: the scene channels of v2x.watch.foxglove, live, over Foxglove's WebSocket protocol.

A subscriber like the window: it takes `<root>/#` from the broker, derives the scene from the messages, and
logs it on a foxglove-sdk WebSocket server. In Foxglove (the web app or the desktop app), open a connection,
choose "Foxglove WebSocket" and give `ws://HOST:PORT` (default ws://127.0.0.1:8765). A viewer that connects
late gets the lanes and hazards again within `RESEND_S`: they are not sent again by the run itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

import foxglove
from mcap_protobuf.schema import build_file_descriptor_set

from v2x.net.connection import new_run_id
from v2x.net.options import credentials
from v2x.net.security import VIZ_LOGIN, login
from v2x.net.transport import MqttTransport
from v2x.watch.foxglove import LATENCY_PREFIX, LATENCY_SCHEMA, SCHEMAS, Out, SceneChannels
from v2x.watch.record import drain, stop_event

RESEND_S = 1.0  # [s] between re-sends of what does not change often (lanes, hazards), for viewers that join late
POLL_S = 0.05  # [s] the longest a message waits here before it goes out


class Server:
    """The WebSocket server and its channels: every scene channel is advertised from the start, the latency
    channels when their sender kind is first heard."""

    def __init__(self, host: str, port: int) -> None:
        self.server = foxglove.start_server(name="v2x-sim", host=host, port=port)
        self.channels: dict[str, foxglove.Channel] = {}
        for name, cls in SCHEMAS.items():
            schema = foxglove.Schema(
                name=cls.DESCRIPTOR.full_name, encoding="protobuf", data=build_file_descriptor_set(cls).SerializeToString(),
            )
            self.channels[name] = foxglove.Channel(name, schema=schema, message_encoding="protobuf")
        self.sent = 0

    @property
    def port(self) -> int:
        return int(self.server.port)

    def log(self, outs: list[Out]) -> None:
        for o in outs:
            ch = self.channels.get(o.channel)
            if ch is None and o.channel.startswith(LATENCY_PREFIX):
                schema = foxglove.Schema(name="v2x.Latency", encoding="jsonschema", data=json.dumps(LATENCY_SCHEMA).encode())
                ch = self.channels[o.channel] = foxglove.Channel(o.channel, schema=schema, message_encoding="json")
            if ch is not None:
                ch.log(o.data, log_time=o.log_time_ns)
                self.sent += 1

    def stop(self) -> None:
        self.server.stop()


async def serve(args: argparse.Namespace) -> int:
    root = args.root.strip("/")
    scene = SceneChannels(root)
    server = Server(args.foxglove_host, args.foxglove)
    stop = stop_event()
    ended = stop_event(signal.SIGUSR1)  # `v2x run`: the run is over
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    received = 0
    try:
        url = login(credentials(args, "v2x viz", ("observer",)), args.broker, VIZ_LOGIN)
        async with MqttTransport(url, f"{args.run_id or new_run_id()}-foxglove", inbox=1_000_000) as t:
            await t.subscribe(f"{root}/#", qos=1)
            ws = f"ws://{args.foxglove_host}:{server.port}"
            print(json.dumps({"event": "ready", "foxglove": ws}), flush=True)
            print(f"v2x viz: serving Foxglove at {ws} (in Foxglove: Open connection > Foxglove WebSocket > {ws})", file=sys.stderr)
            deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
            resend = time.monotonic() + RESEND_S
            while not (stop.is_set() or ended.is_set()) and (deadline is None or time.monotonic() < deadline):
                await t.wait(POLL_S)
                for msg in t.receive(100_000):
                    received += 1
                    server.log(scene.feed(msg.topic, msg.payload, msg.rx_ns))
                if time.monotonic() >= resend:
                    now_ns = time.time_ns()
                    server.log(scene.lanes(now_ns) + (scene.hazards(now_ns) if scene.scene.hazards else []))
                    resend = time.monotonic() + RESEND_S

            def take(topic: str, payload: bytes, rx_ns: int) -> None:
                server.log(scene.feed(topic, payload, rx_ns))

            await drain(t, take)
            server.log(scene.flush())
            dropped = t.stats.dropped_in
    finally:
        server.stop()
    print(json.dumps({
        "event": "summary", "received": received, "scene_messages": dict(sorted(scene.sent.items())), "sent": server.sent,
        "late_bsm": scene.late_bsm, "dropped": dropped,
    }), flush=True)
    return 0
