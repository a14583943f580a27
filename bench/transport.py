"""Which Python MQTT client should carry the simulator? Measured against one Mosquitto.

    python -m bench.transport                      # all clients, all tests (about 2 minutes)
    python -m bench.transport --clients gmqtt,paho --rates 1000,5000

paho-mqtt and aiomqtt are benchmark-only dependencies: pip install -e '.[clients]'.

For each client (aiomqtt, the maintained asyncio-mqtt; paho-mqtt used directly; gmqtt):
  - throughput at QoS 0 and QoS 1: one publisher process sends N BSM-sized (60-byte)
    messages as fast as it can, one subscriber process of the same client counts them;
    msgs/s = received / (last receipt - first receipt);
  - latency at 1k, 5k and 10k msg/s: the publisher paces itself; each payload carries its
    send time (CLOCK_MONOTONIC, shared by processes on one machine); the subscriber records
    receipt - send per message: p50/p99/p99.9 and the share delivered.
The broker is a private Mosquitto with `set_tcp_nodelay true`, started for the run. Every
figure is printed beside the same run's mosquitto_pub/mosquitto_sub reference where it applies.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing as mp
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from v2x.net.broker import MosquittoBroker

PAYLOAD_BYTES = 60  # about a BSM frame
HOST = "127.0.0.1"
IDLE_END_S = 2.0  # a subscriber that hears nothing for this long is done
MAX_INFLIGHT = 1000  # unacknowledged QoS 1 messages a publisher may have
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]  # Nagle off on every client socket


def _payload(seq: int) -> bytes:
    head = struct.pack("<qI", time.monotonic_ns(), seq)
    return head + b"\x00" * (PAYLOAD_BYTES - len(head))


@dataclass
class SubResult:
    received: int
    first_ns: int
    last_ns: int
    latencies_ns: np.ndarray


# ---------------------------------------------------------------------------
# Clients: each has a subscriber and a publisher, run in their own process
# ---------------------------------------------------------------------------


class _Recorder:
    def __init__(self, n: int) -> None:
        self.lat = np.zeros(n, dtype=np.int64)
        self.count = 0
        self.first = 0
        self.last = 0
        self._seen = -1
        self._since = time.monotonic()

    def hit(self, payload: bytes) -> None:
        now = time.monotonic_ns()
        if self.count == 0:
            self.first = now
        self.last = now
        if self.count < len(self.lat):
            self.lat[self.count] = now - struct.unpack_from("<q", payload)[0]
        self.count += 1

    def finished(self, n: int) -> bool:
        """All n received, or nothing new for IDLE_END_S."""
        if self.count >= n:
            return True
        now = time.monotonic()
        if self.count != self._seen:
            self._seen, self._since = self.count, now
        return now - self._since > IDLE_END_S

    def result(self) -> SubResult:
        return SubResult(self.count, self.first, self.last, self.lat[: min(self.count, len(self.lat))])


def _pace(n: int, rate: float, send: Callable[[int], None]) -> None:
    """Call send(i) for i < n at `rate` per second (0: as fast as possible)."""
    t0 = time.monotonic()
    i = 0
    while i < n:
        due = n if rate <= 0 else min(n, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            send(i)
            i += 1
        if rate > 0 and i < n:
            time.sleep(0.0005)


async def _apace(n: int, rate: float, send: Callable[[int], object]) -> None:
    t0 = time.monotonic()
    i = 0
    while i < n:
        due = n if rate <= 0 else min(n, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            r = send(i)
            if asyncio.iscoroutine(r):
                await r
            i += 1
            if rate <= 0 and i % 200 == 0:
                await asyncio.sleep(0)  # let the network loop breathe
        if rate > 0 and i < n:
            await asyncio.sleep(0.0005)


# paho ------------------------------------------------------------------------


def _nodelay(sock: object) -> None:
    assert isinstance(sock, socket.socket), "paho has no socket after connect"
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def paho_sub(port: int, topic: str, qos: int, n: int, conn: Connection) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    rec = _Recorder(n)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, msg: rec.hit(bytes(msg.payload))
    c.connect(HOST, port)
    _nodelay(c.socket())  # paho leaves Nagle on
    c.subscribe(topic, qos)
    c.loop_start()
    time.sleep(0.3)
    conn.send("ready")
    _wait_idle(rec, n)
    c.loop_stop()
    conn.send(rec.result())


def paho_pub(port: int, topic: str, qos: int, n: int, rate: float, conn: Connection) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(MAX_INFLIGHT)
    c.max_queued_messages_set(0)
    c.connect(HOST, port)
    _nodelay(c.socket())
    c.loop_start()
    conn.recv()
    infos = []
    _pace(n, rate, lambda i: infos.append(c.publish(topic, _payload(i), qos)))
    for info in infos[-100:]:
        info.wait_for_publish(10)
    time.sleep(0.2)
    c.loop_stop()
    conn.send("done")


# gmqtt -----------------------------------------------------------------------


def gmqtt_sub(port: int, topic: str, qos: int, n: int, conn: Connection) -> None:
    async def main() -> None:
        import gmqtt

        rec = _Recorder(n)
        c = gmqtt.Client(f"sub-{os.getpid()}")

        def on_message(_c: object, _t: str, payload: bytes, _q: int, _p: object) -> int:
            rec.hit(payload)
            return 0

        c.on_message = on_message
        await c.connect(HOST, port)
        c.subscribe(topic, qos=qos)
        await asyncio.sleep(0.3)
        conn.send("ready")
        await _await_idle(rec, n)
        await c.disconnect()
        conn.send(rec.result())

    asyncio.run(main())


def gmqtt_pub(port: int, topic: str, qos: int, n: int, rate: float, conn: Connection) -> None:
    async def main() -> None:
        import gmqtt
        from gmqtt.storage import PersistentStorage

        class Counting(PersistentStorage):  # type: ignore[misc]
            """Tracks unacknowledged QoS 1 messages, so the publisher can apply backpressure."""

            def __init__(self) -> None:
                super().__init__()
                self.unacked: set[int] = set()
                self.freed = asyncio.Event()

            @property
            def inflight(self) -> int:
                return len(self.unacked)

            def push_message(self, mid: int, raw: bytes) -> None:
                self.unacked.add(mid)
                super().push_message(mid, raw)

            def remove_message_by_mid(self, mid: int) -> None:
                self.unacked.discard(mid)
                self.freed.set()
                super().remove_message_by_mid(mid)

        store = Counting()
        c = gmqtt.Client(f"pub-{os.getpid()}", persistent_storage=store)
        limit = [MAX_INFLIGHT]

        def on_connect(_c: object, _flags: int, _rc: int, props: dict[str, list[int]]) -> None:
            # the broker's Receive Maximum: gmqtt raises rather than queue past it
            limit[0] = min(MAX_INFLIGHT, props.get("receive_maximum", [MAX_INFLIGHT])[0])

        c.on_connect = on_connect
        await c.connect(HOST, port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)

        async def send(i: int) -> None:
            while store.inflight >= limit[0] - 1:  # gmqtt has no in-flight queue of its own
                store.freed.clear()
                await store.freed.wait()
            c.publish(topic, _payload(i), qos=qos)

        await _apace(n, rate, send)
        await asyncio.sleep(1.0)
        await c.disconnect()
        conn.send("done")

    asyncio.run(main())


# aiomqtt ---------------------------------------------------------------------


def aiomqtt_sub(port: int, topic: str, qos: int, n: int, conn: Connection) -> None:
    async def main() -> None:
        import aiomqtt

        rec = _Recorder(n)
        async with aiomqtt.Client(
            HOST, port, identifier=f"sub-{os.getpid()}", protocol=aiomqtt.ProtocolVersion.V5, socket_options=NODELAY
        ) as c:
            await c.subscribe(topic, qos)

            async def reader() -> None:
                async for msg in c.messages:
                    rec.hit(bytes(msg.payload))

            task = asyncio.create_task(reader())
            await asyncio.sleep(0.3)
            conn.send("ready")
            await _await_idle(rec, n)
            task.cancel()
        conn.send(rec.result())

    asyncio.run(main())


def aiomqtt_pub(port: int, topic: str, qos: int, n: int, rate: float, conn: Connection) -> None:
    async def main() -> None:
        import aiomqtt

        async with aiomqtt.Client(
            HOST, port, identifier=f"pub-{os.getpid()}", protocol=aiomqtt.ProtocolVersion.V5,
            max_inflight_messages=MAX_INFLIGHT, socket_options=NODELAY,
        ) as c:
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            await _apace(n, rate, lambda i: c.publish(topic, _payload(i), qos))
            await asyncio.sleep(0.5)
        conn.send("done")

    asyncio.run(main())


def _wait_idle(rec: _Recorder, n: int) -> None:
    while not rec.finished(n):
        time.sleep(0.01)


async def _await_idle(rec: _Recorder, n: int) -> None:
    while not rec.finished(n):  # noqa: ASYNC110 - "idle for 2 s" is a time condition, no event signals it
        await asyncio.sleep(0.01)


CLIENTS = {
    "gmqtt": (gmqtt_sub, gmqtt_pub),
    "paho": (paho_sub, paho_pub),
    "aiomqtt": (aiomqtt_sub, aiomqtt_pub),
}


def measure(client: str, port: int, qos: int, n: int, rate: float, tag: str) -> SubResult:
    sub_fn, pub_fn = CLIENTS[client]
    topic = f"bench/{client}/{tag}"
    ctx = mp.get_context("spawn")
    s_parent, s_child = ctx.Pipe()
    p_parent, p_child = ctx.Pipe()
    sub = ctx.Process(target=sub_fn, args=(port, topic, qos, n, s_child))
    pub = ctx.Process(target=pub_fn, args=(port, topic, qos, n, rate, p_child))
    sub.start()
    pub.start()
    try:
        if not s_parent.poll(30):
            raise RuntimeError(f"{client} subscriber did not start")
        s_parent.recv()
        p_parent.send("go")
        limit = 60 + (n / rate if rate > 0 else 0)
        if not s_parent.poll(limit):
            raise RuntimeError(f"{client} subscriber did not finish in {limit:.0f} s")
        res: SubResult = s_parent.recv()
    finally:
        for p in (pub, sub):
            p.join(15)
            if p.is_alive():
                p.kill()
    return res


def c_client_throughput(port: int, n: int, qos: int) -> float:
    """mosquitto_pub/mosquitto_sub reference, timed like the Python clients: first to last receipt."""
    topic = f"bench/c/{qos}"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", HOST, "-p", str(port), "-t", topic, "-q", str(qos), "-C", str(n), "-F", "%U"],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.3)
    # mosquitto_pub -l sends each stdin line as a message
    pub = subprocess.Popen(
        ["mosquitto_pub", "-h", HOST, "-p", str(port), "-t", topic, "-q", str(qos), "-l"], stdin=subprocess.PIPE
    )
    assert pub.stdin is not None
    pub.stdin.write((("x" * PAYLOAD_BYTES + "\n") * n).encode())
    pub.stdin.close()
    try:
        out, _ = sub.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        sub.kill()
        out, _ = sub.communicate()
    pub.wait(30)
    stamps = out.split()
    if len(stamps) < 2:
        return float("nan")
    return (len(stamps) - 1) / (float(stamps[-1]) - float(stamps[0]))


SENT = "$SYS/broker/publish/messages/sent"  # PUBLISH packets the broker delivered, to every client


class Deliveries:
    """The broker's own count of messages it delivered, as Mosquitto publishes it on $SYS (every second with
    `sys_interval 1` in its configuration), sampled with mosquitto_sub: the same unit as the C-client ceiling."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self._sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", SENT, "-F", "%U %p"],
                                     stdout=subprocess.PIPE, text=True)
        self.samples: list[tuple[float, int]] = []  # (UTC s, count)

    def stop(self) -> None:
        self._sub.terminate()
        self.samples = [(float(t), int(c)) for t, c in (line.split() for line in self._sub.communicate()[0].splitlines())]

    def rate(self, start: float, end: float) -> float:
        """Deliveries per second between the first sample from `start` (UTC s) and the last up to `end`."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="gmqtt,paho,aiomqtt")
    parser.add_argument("--count", type=int, default=50_000, help="messages per throughput test")
    parser.add_argument("--rates", default="1000,5000,10000", help="msg/s for the latency tests")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each latency test")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure (median)")
    args = parser.parse_args(argv)
    clients = args.clients.split(",")
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        parser.error(f"--clients: unknown {', '.join(unknown)} (known: {', '.join(CLIENTS)})")
    missing = [c for c in clients if importlib.util.find_spec(c) is None]  # each client's name is its package's
    if missing:
        parser.error(f"--clients: {', '.join(missing)} not installed: pip install -e '.[clients]'")
    rates = [float(r) for r in args.rates.split(",")]
    # every client may keep MAX_INFLIGHT QoS 1 messages unacknowledged (Mosquitto's default is 20)
    with MosquittoBroker(extra_config=f"max_inflight_messages {MAX_INFLIGHT}") as broker:
        port = broker.port or 0
        print(f"Mosquitto on port {port} (set_tcp_nodelay true, max_inflight_messages {MAX_INFLIGHT}); payload {PAYLOAD_BYTES} bytes; python {sys.version.split()[0]}")
        print("\n== Throughput, one publisher and one subscriber process (median of runs)")
        print(f"{'client':<22}{'QoS 0 msg/s':>14}{'QoS 1 msg/s':>14}{'delivered':>11}")
        ref = {q: statistics.median(c_client_throughput(port, args.count, q) for _ in range(args.repeat)) for q in (0, 1)}
        print(f"{'mosquitto_pub/sub (C)':<22}{ref[0]:>14,.0f}{ref[1]:>14,.0f}{'':>11}")
        for client in clients:
            row = []
            delivered = []
            for qos in (0, 1):
                runs = [measure(client, port, qos, args.count, 0, f"tp{qos}-{k}") for k in range(args.repeat)]
                row.append(statistics.median(r.received / max((r.last_ns - r.first_ns) / 1e9, 1e-9) for r in runs))
                delivered.append(min(r.received for r in runs) / args.count)
            print(f"{client:<22}{row[0]:>14,.0f}{row[1]:>14,.0f}{min(delivered):>10.1%}")
        print("\n== Latency at a paced rate, QoS 0 (receipt - send, ms)")
        print(f"{'client':<12}{'rate':>8}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'delivered':>11}")
        for client in clients:
            for rate in rates:
                n = int(rate * args.seconds)
                r = measure(client, port, 0, n, rate, f"lat{int(rate)}")
                lat = r.latencies_ns / 1e6
                if len(lat) == 0:
                    print(f"{client:<12}{rate:>8,.0f}{'nothing received':>47}")
                    continue
                p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
                print(f"{client:<12}{rate:>8,.0f}{p50:>9.2f}{p99:>9.2f}{p999:>9.2f}{lat.max():>9.1f}{r.received / n:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
