"""Start and stop a private Mosquitto broker on a free loopback port.

Used by `v2x run` (when no --broker is given) and by the test fixtures. The broker gets
its own config in a temporary directory: MQTT 5 (and 3.1.1) on 127.0.0.1, anonymous
access, and `set_tcp_nodelay true`, without which Mosquitto adds a 40-50 ms latency
tail to small messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TextIO

from v2x.core.errors import BrokerError

INSTALL_HINT = "install it with `apt-get install mosquitto` (Debian/Ubuntu) or see https://mosquitto.org/download/"


def locked_settings() -> list[str]:
    """A locked broker's settings (`v2x broker-config`, `v2x run --secure`): a client's id is its login, so that no login
    can take over another's session (v2x.net.security); no payload over the receivers' cap is carried."""
    from v2x.core.codec import MAX_PAYLOAD_BYTES  # here: the test fixtures import this module, and nothing heavy

    return ["use_username_as_clientid true", f"message_size_limit {MAX_PAYLOAD_BYTES}"]


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, looking in PATH and the usual sbin folders."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"):
        p = Path(d) / "mosquitto"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _connect_packet(version: int, username: str | None = None, password: str | None = None) -> bytes:
    """An MQTT CONNECT (level 5, or 4 for 3.1.1; clean start, keepalive 10 s, no properties) with a unique client id
    (probes sharing one would take over each other's session at the broker), and a login if given."""
    client_id = f"v2x-ping-{os.getpid()}-{secrets.token_hex(4)}".encode()
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    var = b"\x00\x04MQTT" + bytes([version, flags]) + b"\x00\x0a" + (b"\x00" if version == 5 else b"")
    body = var + b"".join(len(x).to_bytes(2, "big") + x for x in (client_id, *(v.encode() for v in (username, password) if v is not None)))
    n, length = len(body), bytearray()
    while True:  # MQTT's variable-length integer: 7 bits a byte, the high bit set on all but the last
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return b"\x10" + bytes(length) + body


def _exchange(host: str, port: int, timeout_s: float, tls: bool, packet: bytes) -> bytes:
    """Send `packet` on a new connection and return the first bytes that answer it (b"": closed without a word)."""
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(socket.create_connection((host, port), timeout=timeout_s))
        if tls:  # only "does it answer": the certificate is not checked here
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            s = stack.enter_context(ctx.wrap_socket(s, server_hostname=host))
        s.sendall(packet)
        try:
            ack = s.recv(16)
        except TimeoutError:
            raise NoReply from None
        with contextlib.suppress(OSError):
            s.sendall(b"\xe0\x00")  # DISCONNECT
    return ack


class NoReply(TimeoutError):
    """The connection was taken, and nothing answered on it."""


def mqtt_connack(host: str, port: int, timeout_s: float = 1.0, version: int = 5, tls: bool = False) -> int | None:
    """The return code of the CONNACK that answers an MQTT CONNECT (level 5, or 4 for 3.1.1) to host:port; None when
    the answer is not a CONNACK (or the connection closed without one). Raises `TimeoutError` when nothing answers
    within `timeout_s` (a broker that is stopped or stuck, whose kernel still accepts connections), another `OSError`
    when nothing listens there."""
    ack = _exchange(host, port, timeout_s, tls, _connect_packet(version))
    return ack[3] if len(ack) >= 4 and ack[0] == 0x20 else None


def mqtt_ping(host: str, port: int, timeout_s: float = 1.0, version: int = 5, refused_ok: bool = False, tls: bool = False) -> bool:
    """True when an MQTT CONNECT (level 5, or 4 for 3.1.1) to host:port is accepted (CONNACK code 0).

    `refused_ok`: also True when the broker answers at that protocol level but refuses the login (a
    broker that requires a password is up, and speaks that level)."""
    try:
        code = mqtt_connack(host, port, timeout_s, version, tls)
    except OSError:
        return False
    return code == 0 or (refused_ok and code not in (None, *UNSUPPORTED_LEVEL))


UNSUPPORTED_LEVEL = (0x01, 0x84)  # CONNACK codes (3.1.1, 5): the broker does not speak that MQTT version
AUTH_REFUSED = (0x04, 0x05, 0x86, 0x87)  # CONNACK codes: wrong login, or not authorised
REFUSED = {  # other CONNACK codes a user can act on (MQTT 3.1.1 and 5)
    0x02: "the broker rejected the client id", 0x03: "the broker is unavailable", 0x04: "wrong user name or password",
    0x05: "login refused (not authorised): a wrong user name or password, or a login the broker does not allow",
    0x85: "the broker rejected the client id", 0x86: "wrong user name or password",
    0x87: "login refused (not authorised): a wrong user name or password, or a login the broker does not allow",
    0x88: "the broker is unavailable", 0x89: "the broker is busy", 0x8A: "banned by the broker",
    0x8C: "the broker does not accept this authentication method",
}


class Transient(BrokerError):
    """No usable answer from the broker, which may change: nothing listens there (yet), the host cannot be reached,
    or no CONNACK came (a broker starting, or overloaded)."""


class NotMqtt(BrokerError):
    """Something answered that is not an MQTT broker: retrying will not help."""


class Closed(Transient):
    """The connection closed without a CONNACK: a broker of MQTT 3.1.1 only may do that to a level-5 CONNECT
    (RabbitMQ, NATS), or one that refuses this client."""


def connack(
    host: str, port: int, timeout_s: float = 1.0, version: int = 5, tls: bool = False,
    username: str | None = None, password: str | None = None,
) -> int:
    """The return code of the CONNACK an MQTT CONNECT (level 5, or 4 for 3.1.1, with a login if given) to host:port
    gets; raises `Transient` or `NotMqtt` saying why, in words a user can act on, when none comes."""
    try:
        ack = _exchange(host, port, timeout_s, tls, _connect_packet(version, username, password))
    except socket.gaierror as e:
        raise Transient(f"unknown host {host!r} ({e.strerror})") from None
    except ConnectionRefusedError:
        raise Transient(f"connection refused: nothing listens on port {port} of {host}") from None
    except NoReply:
        raise Transient(f"it accepts TCP connections but sent no CONNACK within {timeout_s:g} s: not an MQTT broker, or "
                        "one that has stalled") from None
    except TimeoutError:
        raise Transient(f"no answer to a TCP connection within {timeout_s:g} s: the host is unreachable, or a firewall "
                        "drops the connection") from None
    except ssl.SSLError as e:
        raise NotMqtt(f"TLS failed ({e.reason or e}): is it a TLS (mqtts://) port?") from None
    except OSError as e:
        raise Transient(f"cannot connect: {e.strerror or e}") from None
    if ack.lstrip().startswith((b"HTTP/", b"<!DOCTYPE", b"<!doctype", b"<html", b"<HTML")):  # a status line, or a page (HTTP/0.9)
        raise NotMqtt("it answered in HTTP, not MQTT: a web server's port? (MQTT brokers listen on 1883, or 8883 with TLS)")
    if not ack:
        raise Closed("it closed the connection without a CONNACK: not an MQTT broker, or it refuses this client")
    if len(ack) < 4 or ack[0] != 0x20:
        raise NotMqtt(f"it answered with bytes that are not an MQTT CONNACK ({ack[:8]!r}): not an MQTT broker")
    return ack[3]


def connack_at_any_level(
    host: str, port: int, timeout_s: float, tls: bool = False, username: str | None = None, password: str | None = None,
) -> int:
    """`connack` at MQTT 5, else at 3.1.1 when the broker says it does not speak 5 or closes the connection on it."""
    try:
        code = connack(host, port, timeout_s, 5, tls, username, password)
    except Closed:
        code = UNSUPPORTED_LEVEL[0]
    return connack(host, port, timeout_s, 4, tls, username, password) if code in UNSUPPORTED_LEVEL else code


def broker_problem(host: str, port: int, tls: bool = False, username: str | None = None, password: str | None = None,
                   timeout_s: float = 5.0, any_login: bool = False) -> BrokerError | None:
    """Why an MQTT client cannot use the broker at host:port, as an error whose message says it in one phrase
    (`Transient`: no usable answer, which may change); None when it accepts the login (in MQTT 5 or 3.1.1).
    `any_login`: a broker that answers but refuses this login will do (the caller logs in otherwise)."""
    try:
        code = connack_at_any_level(host, port, timeout_s, tls, username, password)
    except BrokerError as e:
        return e
    if code == 0 or (any_login and code in AUTH_REFUSED):
        return None
    return BrokerError(REFUSED.get(code, f"the broker refused the connection (CONNACK code {code:#04x})"))


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent `sig` when this process dies, however it dies (SIGKILL, a crash): a
    broker or tier started by a run must not outlive it. Linux only (prctl PR_SET_PDEATHSIG), and only from the main
    thread: the signal follows the thread that started the child, and a worker thread may end long before the run."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()  # looked up here, not in the forked child

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


_PR_GET_PDEATHSIG = 2
ORPHAN_GRACE_S = 5.0  # [s] a process armed by `die_with_parent` has to end on its own after its parent's death
_orphan_watch: threading.Thread | None = None  # this process's (`end_if_orphaned`): one is enough
_orphan_loop: asyncio.AbstractEventLoop | None = None  # the loop whose tasks it writes out too (`watch_tasks`)


def watch_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Have `end_if_orphaned` write out the tasks of `loop` too (the process's main loop): a task that does not end
    when cancelled is on no thread's stack."""
    global _orphan_loop
    _orphan_loop = loop


async def _listed(loop: asyncio.AbstractEventLoop, out: TextIO) -> None:
    """Every other task of `loop`, with where it waits (in the loop's own thread)."""
    me = asyncio.current_task()
    for task in asyncio.all_tasks(loop):
        if task is not me:
            print(f"\n{task!r}", file=out)
            task.print_stack(file=out)


def end_if_orphaned(grace_s: float = ORPHAN_GRACE_S, poll_s: float = 0.2) -> threading.Thread | None:
    """In a process `die_with_parent` armed (a broker or tier started by a run): a daemon thread that ends the process
    `grace_s` after its parent is gone, if the signal it was sent on the parent's death did not end it by then. The
    signal asks it to stop cleanly (a tier prints its summary); this makes sure it stops: a tier whose asyncio loop
    did not finish (a task that did not end when cancelled) once outlived a killed run by 20 minutes. Before it ends
    the process, it writes every thread's stack to v2x-orphan-PID.txt in the temporary directory (its stderr, where it
    says so, is often a file of the run's, gone with it), to say where it was stuck. None where no signal is armed
    (a process started by hand) or not on Linux; the one already watching, if called again."""
    global _orphan_watch
    if _orphan_watch is not None or not sys.platform.startswith("linux"):
        return _orphan_watch
    sig = ctypes.c_int(0)
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig)) != 0 or sig.value == 0:
        return None
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        time.sleep(grace_s)
        import faulthandler

        said = f"{' '.join(sys.argv)} (pid {os.getpid()}): still running {grace_s:g} s after the process that started it (pid {parent}) died"
        with contextlib.suppress(Exception):  # (a killed run's tier writes to a file the run had: gone with it)
            path = Path(tempfile.gettempdir()) / f"v2x-orphan-{os.getpid()}.txt"
            with open(path, "w") as f:
                print(f"{said}; where each thread was:", file=f, flush=True)
                faulthandler.dump_traceback(f, all_threads=True)
                loop = _orphan_loop
                if loop is not None and not loop.is_closed():  # and its tasks, from the loop's thread, if it runs
                    print("\nits asyncio tasks:", file=f)
                    listed = asyncio.run_coroutine_threadsafe(_listed(loop, f), loop)
                    with contextlib.suppress(Exception):
                        listed.result(1.0)
            print(f"{said}; ending it (where each thread was: {path})", file=sys.stderr, flush=True)
        os._exit(1)

    _orphan_watch = threading.Thread(target=watch, name="end-if-orphaned", daemon=True)
    _orphan_watch.start()
    return _orphan_watch


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 5.0) -> None:
    """Send `sig` to a broker process still running and wait for it; SIGKILL it after `wait_s`."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MosquittoBroker:
    """A private Mosquitto process. Use as a context manager, or call start() and stop().

    `persistence=True` keeps sessions and queued QoS 1 messages in `data_dir` across a
    stop() and start() on the same port (for broker-restart tests). `secure=(passwd, acl)`
    requires a login and applies the ACL (v2x.net.security writes both).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        persistence: bool = False,
        secure: tuple[Path, Path] | None = None,
        tls: tuple[Path, Path] | None = None,
        extra_config: str = "",
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_mosquitto()
        self.port = port
        self.persistence = persistence
        self.secure = secure  # (password file, ACL file): no anonymous clients
        self.tls = tls  # (certificate, key): the listener speaks TLS only
        self.extra_config = extra_config
        self._tmp = tempfile.TemporaryDirectory(prefix="v2x-mosquitto-")
        self.dir = Path(self._tmp.name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has not been started")
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def output_path(self) -> Path:
        """The broker process's stdout and stderr. A file, not a pipe: a pipe nobody reads during the run fills
        (64 KiB), and the broker then blocks in write() for good (amqtt logs every connection to stderr)."""
        return self.dir / "output.log"

    def config_text(self, port: int) -> str:
        lines = [
            f"listener {port} {self.host}",
            *([] if self.tls is None else [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]),
            *(["allow_anonymous true"] if self.secure is None else [
                "allow_anonymous false", f"password_file {self.secure[0]}", f"acl_file {self.secure[1]}", *locked_settings(),
            ]),
            # run as whoever started it: as root, Mosquitto would switch to user `mosquitto`, which cannot
            # write the private directory (0700) its persistence database and log live in
            f"user {getpass.getuser()}",
            "set_tcp_nodelay true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1" if self.persistence else "",
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            self.extra_config,
        ]
        return "\n".join(line for line in lines if line) + "\n"

    kind = "mosquitto"
    mqtt_version = 5

    def command(self, conf: Path) -> list[str]:
        assert self.binary is not None
        return [self.binary, "-c", str(conf)]

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        """Start the broker and wait until it accepts MQTT connections."""
        if self.binary is None:
            raise BrokerError(f"mosquitto is not installed: {INSTALL_HINT}")
        if self.proc is not None and self.proc.poll() is None:
            return self
        last_error = ""
        for _ in range(3):  # a free port can be taken between free_port() and the bind
            port = self.port or free_port()
            conf = self.dir / "mosquitto.conf"
            conf.write_text(self.config_text(port))
            with open(self.output_path, "wb") as out:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(self.command(conf), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=die_with_parent())
            deadline = time.monotonic() + timeout_s
            try:
                while time.monotonic() < deadline:
                    if self.proc.poll() is not None:
                        break
                    up = mqtt_ping(self.host, port, 0.5, self.mqtt_version, self.secure is not None, tls=self.tls is not None)
                    if up:
                        self.port = port
                        return self
                    time.sleep(0.02)
            except BaseException:  # Ctrl-C (or a signal made one) while it starts: it must not outlive the caller
                self._kill()
                raise
            last_error = self._failure_text()
            self._kill()
            if self.port is not None:  # a fixed port: retrying cannot help
                break
        raise BrokerError(f"{self.kind} did not start: {last_error}")

    def _failure_text(self) -> str:
        parts = []
        if self.proc is not None and self.proc.poll() is not None:
            parts.append(f"exit code {self.proc.returncode}")
            if self.output_path.exists():
                parts.append(self.output_path.read_text(errors="replace")[-2000:].strip())
        else:
            parts.append("no CONNACK before the timeout")
        if self.log_path.exists():
            parts.append(self.log_path.read_text(errors="replace")[-2000:])
        return "; ".join(p for p in parts if p)

    def _kill(self, sig: int = signal.SIGTERM, wait_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        end_process(proc, sig, wait_s)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s). Keeps the port for a restart."""
        self._kill()

    def crash(self) -> None:
        """Kill the broker without a clean shutdown (SIGKILL), as a fault."""
        self._kill(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EmbeddedBroker(MosquittoBroker):
    """amqtt, a pure-Python MQTT 3.1.1 broker, for a zero-setup run where Mosquitto is not installed.

    It is much slower than Mosquitto (about 27 ms median latency at 100 vehicles x 10 Hz where
    Mosquitto adds about 2 ms), so a run on it says so in its output and report. It runs as
    `python -m v2x.net.embedded`: amqtt's broker, sending a new client only the retained messages of
    the filters it holds.
    """

    kind = "amqtt (embedded)"
    mqtt_version = 4

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port, binary=sys.executable)

    def config_text(self, port: int) -> str:
        return (
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {self.host}:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )

    def command(self, conf: Path) -> list[str]:
        return [sys.executable, "-m", "v2x.net.embedded", str(conf)]  # amqtt, with a fix (see there)


def broker_for_run() -> MosquittoBroker:
    """Mosquitto on a free port when it is installed, else the embedded amqtt."""
    return MosquittoBroker() if find_mosquitto() is not None else EmbeddedBroker()


def find_nats() -> str | None:
    return shutil.which("nats-server") or next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.path.exists(p)), None)


class NatsCluster:
    """A clustered broker on loopback: `nodes` NATS servers (Debian's `nats-server`) routed into one cluster,
    each with an MQTT 3.1.1 listener, JetStream on (MQTT sessions, QoS 1 and retained messages live in
    replicated JetStream streams, so a retained message published through one node reaches a subscriber on
    another). Use as a context manager; `urls[i]` is node i's MQTT listener.

    Chosen over RabbitMQ's MQTT plugin (3.10 in Debian): RabbitMQ keeps retained messages per node and sends
    none to wildcard subscriptions (rabbitmq-server#8096), and vehicles take their hazards (retained RSI)
    through a wildcard on their tile.
    """

    kind = "nats cluster"

    def __init__(self, nodes: int = 3, binary: str | None = None) -> None:
        self.binary = binary or find_nats()
        self.nodes = nodes
        self._tmp = tempfile.TemporaryDirectory(prefix="v2x-nats-")
        self.dir = Path(self._tmp.name)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mqtt_ports: list[int] = []
        self._logs: list[BinaryIO] = []

    @property
    def urls(self) -> list[str]:
        return [f"mqtt://127.0.0.1:{p}" for p in self.mqtt_ports]

    def config_text(self, i: int, client: int, route_ports: list[int]) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        return (
            f"server_name: n{i}\nlisten: 127.0.0.1:{client}\n"
            f"jetstream {{ store_dir: {self.dir}/js{i}, max_memory_store: 256MB, max_file_store: 1GB }}\n"
            f"cluster {{ name: v2x, listen: 127.0.0.1:{route_ports[i]}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[i]} }}\n"
        )

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        """Start every node, then wait until each accepts MQTT 3.1.1 connections (JetStream has a leader)."""
        if self.binary is None:
            raise BrokerError("nats-server is not installed: install it with `apt-get install nats-server` (Debian/Ubuntu)")
        ports = [free_port() for _ in range(3 * self.nodes)]
        clients, routes, self.mqtt_ports = ports[: self.nodes], ports[self.nodes : 2 * self.nodes], ports[2 * self.nodes :]
        for i in range(self.nodes):
            conf = self.dir / f"n{i}.conf"
            conf.write_text(self.config_text(i, clients[i], routes))
            log = open(self.dir / f"n{i}.log", "wb")  # noqa: SIM115 (the process writes it; closed in close())
            self._logs.append(log)
            self.procs.append(subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                               preexec_fn=die_with_parent()))
        deadline = time.monotonic() + timeout_s
        waiting = set(range(self.nodes))
        while waiting and time.monotonic() < deadline:
            waiting = {i for i in waiting if self.procs[i].poll() is None and not mqtt_ping("127.0.0.1", self.mqtt_ports[i], 0.5, version=4)}
            time.sleep(0.1)
        if waiting:
            logs = "; ".join(f"n{i}: {(self.dir / f'n{i}.log').read_text(errors='replace')[-800:]}" for i in sorted(waiting))
            self.close()
            raise BrokerError(f"the NATS cluster did not come up within {timeout_s:g} s: {logs}")
        return self

    def close(self) -> None:
        for p in self.procs:
            end_process(p)
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._tmp.cleanup()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
