"""How a tier reaches its broker and its run: the one bundle of settings every tier connects with.

A `Connection` says which broker (URL, and a login per station on a secured broker), which MQTT
version, how often to keep the connection alive, under which topic root, whether messages are
signed (the run's CA) and links impaired, and which UTC instant is sim time 0. `v2x run` makes one
and hands it to the tiers it runs in its own process, and as command-line options (`argv()`) to
the tiers it starts as processes; each tier's command line turns those options back into one
(`v2x.net.options.connection`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2x.core import messages as m
from v2x.core.scenario import Scenario
from v2x.core.topics import DEFAULT_ROOT, Topics
from v2x.net.impair import Impairment
from v2x.net.security import Credentials, login
from v2x.net.signing import CA, Authority, role_permissions, valid_from_ms
from v2x.net.station import Clock
from v2x.net.transport import MqttTransport, MqttVersion


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
    topics: Topics = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", Topics(self.root))

    def clock(self) -> Clock:
        """Sim time on the wall clock from the run's epoch (real time)."""
        return Clock(self.epoch_s)

    def impairment(self, sc: Scenario) -> Impairment | None:
        """The scenario's link impairment, seeded by its seed; None when turned off."""
        return Impairment(sc.links, sc.seed) if self.impair else None

    def login(self, user: str) -> str:
        """The broker URL `user` connects with: its own login on a secured broker, else the URL as given."""
        return login(self.credentials, self.url, user)

    def transport(self, client_id: str, user: str | None = None, **options: Any) -> MqttTransport:
        """A broker connection for station `client_id`, logged in as `user` (default: itself); `options` go to
        `MqttTransport` (a Will, a persistent session, queue sizes)."""
        options.setdefault("keepalive_s", self.keepalive_s)
        return MqttTransport(self.login(user or client_id), client_id, version=self.mqtt, **options)

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
            "--broker", self.url, "--root", self.root, "--mqtt", self.mqtt,
            *([] if self.epoch_s is None else ["--epoch", f"{self.epoch_s:.3f}"]),
            *([] if self.impair else ["--no-impairment"]),
            *([] if credentials_file is None else ["--credentials", str(credentials_file)]),
            *([] if ca_file is None else ["--signing-ca", str(ca_file)]),
        ]
