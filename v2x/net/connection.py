"""How a tier reaches its broker and its run: the one bundle of settings every tier connects with.

A `Connection` says which broker (URL, and a login per station on a secured broker), which MQTT
version, how often to keep the connection alive, under which topic root, whether messages are
signed (the run's CA) and links impaired, which UTC instant is sim time 0, and the run's id (in every
client id, so that two runs on one broker never take over each other's connections). `v2x run` makes one
and hands it to the tiers it runs in its own process, and as command-line options (`argv()`) to
the tiers it starts as processes; each tier's command line turns those options back into one
(`v2x.net.options.connection`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2x.core import messages as m
from v2x.core.errors import V2xError
from v2x.core.scenario import Scenario
from v2x.core.topics import DEFAULT_ROOT, Topics
from v2x.net.impair import Impairment
from v2x.net.security import Credentials, login
from v2x.net.signing import CA, Authority, role_permissions, valid_from_ms
from v2x.net.station import Clock
from v2x.net.transport import MqttTransport, MqttVersion

RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,31}")  # what a run id may be: part of every MQTT client id


def new_run_id() -> str:
    """A run id: 8 random hex digits (32 bits: two runs on one broker share one about once in 4 billion)."""
    return secrets.token_hex(4)


def checked_run_id(text: str) -> str:
    """`text` if it can be a run id (1 to 32 letters, digits, `_`, `.`, `-`, not starting with one of the last three)."""
    if not RUN_ID.fullmatch(text):
        raise V2xError(f"run id {text!r}: expected 1 to 32 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return text


@dataclass(frozen=True)
class Connection:
    """The settings a tier connects with; every station of the tier shares them."""

    url: str
    credentials: Credentials | None = None  # a secured broker: each station logs in as itself (v2x.net.security)
    mqtt: MqttVersion = "auto"  # MQTT 5, falling back to 3.1.1 ("auto"), or one of them
    keepalive_s: int = 10  # [s] the broker publishes a station's Last Will after 1.5x this without a packet
    root: str = DEFAULT_ROOT  # topic root
    # signed messages (v2x.net.signing): the run's root CA (`v2x run`), or the authority a tier's process was given
    ca: CA | Authority | None = None
    impair: bool = True  # apply the scenario's link latency and loss (v2x.net.impair)
    epoch_s: float | None = None  # UTC [s] of sim time 0, shared by every tier of a run (None: now)
    run_id: str = field(default_factory=new_run_id)  # in every client id of the run: `<run id>-<station>`
    topics: Topics = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checked_run_id(self.run_id)
        object.__setattr__(self, "topics", Topics(self.root))

    def clock(self) -> Clock:
        """Sim time on the wall clock from the run's epoch (real time)."""
        return Clock(self.epoch_s)

    def impairment(self, sc: Scenario) -> Impairment | None:
        """The scenario's link impairment, seeded by its seed; None when turned off."""
        return Impairment(sc.links, sc.seed, signed=self.ca is not None) if self.impair else None

    def login(self, user: str) -> str:
        """The broker URL `user` connects with: its own login on a secured broker, else the URL as given."""
        return login(self.credentials, self.url, user)

    def client_id(self, station: str) -> str:
        """The MQTT client id of one of the run's stations: `<run id>-<station>` (the station's sender id, in its
        messages and topics, stays `station`)."""
        return f"{self.run_id}-{station}"

    def transport(self, station: str, user: str | None = None, **options: Any) -> MqttTransport:
        """A broker connection for `station` (client id `<run id>-<station>`), logged in as `user` (default: the
        station); `options` go to `MqttTransport` (a Will, a persistent session, queue sizes)."""
        options.setdefault("keepalive_s", self.keepalive_s)
        return MqttTransport(self.login(user or station), self.client_id(station), version=self.mqtt, **options)

    def authority(self, name: str, kind: m.SenderKind, clock: Clock, intersections: Iterable[str] = ()) -> Authority | None:
        """The authority that issues a tier's pseudonyms when messages are signed: the one this tier's process was
        given, or a new one from the run's root CA, valid from a minute before `clock`'s now, with what stations of
        `kind` may send (about `intersections`)."""
        if self.ca is None or isinstance(self.ca, Authority):
            return self.ca
        return self.ca.authority(name, valid_from_ms(clock), role_permissions(kind, intersections))

    def argv(self, credentials_file: Path | None = None, ca_file: Path | None = None) -> list[str]:
        """These settings as a tier's command-line options (`v2x roadside`, `v2x cloud`, `v2x fleet`): the
        credentials and the CA travel as the files they were saved to. Each tier keeps its own keepalive."""
        if (self.credentials is None) != (credentials_file is None) or (self.ca is None) != (ca_file is None):
            raise ValueError("the credentials and the CA go to a tier's process as files: give the file of each one set")
        return [
            "--broker", self.url, "--root", self.root, "--mqtt", self.mqtt, "--run-id", self.run_id,
            *([] if self.epoch_s is None else ["--epoch", f"{self.epoch_s:.3f}"]),
            *([] if self.impair else ["--no-impairment"]),
            *([] if credentials_file is None else ["--credentials", str(credentials_file)]),
            *([] if ca_file is None else ["--signing-ca", str(ca_file)]),
        ]
