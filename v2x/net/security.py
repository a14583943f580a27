"""Broker security: per-client credentials and ACLs for Mosquitto (`v2x broker-config`, `v2x run --secure`).

Every station logs in with its own user name, the one it signs its messages with (its sender id):
each vehicle `veh-N` (and a stalled vehicle `stalled-K`), each RSU by its id, and `cloud`;
watchers (the visualiser, the recorder, the fleet's listen-only radios) log in as `observer`.
Passwords are derived from one secret (HMAC-SHA256 of the user name), so a fleet needs only
the secret to log in any vehicle, while the broker holds only their PBKDF2-SHA512 hashes
(Mosquitto 2's password-file format).

The ACL lets everyone who logged in read everything under the topic root, and write only:

    a vehicle   its own BSM topic (any tile) and its own priority requests
    an RSU      its intersection's SPaT (sidelink path), MAP, priority replies; its RSM and status
    the cloud   signal plans, RSI, advisories, the relayed SPaT (cellular path), its status
    observer    nothing

Mosquitto refuses a publish the ACL does not allow (MQTT 5: PUBACK "not authorized" at QoS 1)
and delivers it to nobody.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from v2x.core.scenario import Scenario
from v2x.core.topics import TILE_ZOOM, Topics
from v2x.net.transport import BrokerUrl

OBSERVER = "observer"
CLOUD = "cloud"
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd uses
_TILE = "/".join(["+"] * TILE_ZOOM)  # any tile, as topic levels


@dataclass(frozen=True)
class Credentials:
    """The secret every password derives from; `url()` gives a station its login."""

    secret: str

    @classmethod
    def new(cls) -> Credentials:
        return cls(secrets.token_urlsafe(32))

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["secret"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a credentials file written by `v2x broker-config` ({e})") from None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"secret": self.secret}) + "\n")
        path.chmod(0o600)

    def password(self, user: str) -> str:
        return hmac.new(self.secret.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, broker_url: str, user: str) -> str:
        """The broker URL with `user` and its password in it."""
        u = BrokerUrl.parse(broker_url)
        scheme = "mqtts" if u.tls else "mqtt"
        ca = "" if u.ca is None else f"?ca={quote(u.ca)}"
        return f"{scheme}://{quote(user, safe='')}:{self.password(user)}@{u.host}:{u.port}{ca}"


def fleet_user(client_id: str) -> str:
    """The login of one of a fleet's clients: a vehicle's OBU is itself; listen-only radios are observers."""
    return client_id if client_id.startswith(("veh-", "stalled-")) else OBSERVER


def login(credentials: Credentials | None, broker_url: str, user: str) -> str:
    """The URL a station connects with: its own login when the broker is secured, else the URL as given."""
    return broker_url if credentials is None else credentials.url(broker_url, user)


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password-file hash: $7$iterations$salt$PBKDF2-SHA512, base64."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def vehicle_users(sc: Scenario, duration_s: float | None = None) -> list[str]:
    """Vehicle logins a run of `sc` can need: generously above the demand's expected arrivals."""
    horizon = sc.duration_s if duration_s is None else duration_s
    expected = sum(d.vph / 3600.0 * max(min(horizon, d.end_s) - d.start_s, 0.0) for d in sc.demand)
    n = math.ceil(expected + 6 * math.sqrt(expected + 1) + 50) + len(sc.vehicles)
    return [f"veh-{k}" for k in range(1, n + 1)] + [f"stalled-{k}" for k in range(1, len(sc.events) + 1)]


def users(sc: Scenario, duration_s: float | None = None) -> list[str]:
    return [*vehicle_users(sc, duration_s), *(sc.rsu_of(i).id for i in range(len(sc.intersections))), CLOUD, OBSERVER]


def acl_text(sc: Scenario, root: str) -> str:
    t = Topics(root)
    r = t.root
    lines = [
        f"# ACL for scenario {sc.name} under {r}/, written by v2x broker-config",
        "# everyone who logged in reads everything under the root (and the broker's version)",
        f"pattern read {r}/#",
        "pattern read $SYS/broker/version",
        "# vehicles: only their own BSM (any tile) and their own priority requests",
        f"pattern write {r}/bsm/{_TILE}/%u",
        f"pattern write {r}/prq/+/%u",
    ]
    for i, inter in enumerate(sc.intersections):
        rsu = sc.rsu_of(i).id
        lines += [
            f"# {rsu}: the RSU of {inter.id}",
            f"user {rsu}",
            f"topic write {r}/spat/rsu/{_TILE}/{inter.id}",
            f"topic write {r}/map/{_TILE}/{inter.id}",
            f"topic write {r}/rsm/{_TILE}/{rsu}",
            f"topic write {r}/prs/{inter.id}/+",
            f"topic write {t.status('rsu', rsu)}",
        ]
    lines += [
        "# the cloud",
        f"user {CLOUD}",
        f"topic write {r}/plan/+",
        f"topic write {r}/rsi/#",
        f"topic write {r}/advisory/#",
        f"topic write {r}/spat/cloud/#",
        f"topic write {t.status('cloud', CLOUD)}",
    ]
    return "\n".join(lines) + "\n"


def write_config(
    sc: Scenario, out: Path, root: str, port: int, credentials: Credentials, duration_s: float | None = None,
    tls: tuple[Path, Path] | None = None,
) -> dict[str, Path]:
    """Write mosquitto.conf, passwd, acl and credentials.json into `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("mosquitto.conf", "passwd", "acl", "credentials.json")}
    paths["passwd"].write_text("".join(f"{u}:{mosquitto_hash(credentials.password(u))}\n" for u in users(sc, duration_s)))
    paths["passwd"].chmod(0o600)
    paths["acl"].write_text(acl_text(sc, root))
    credentials.save(paths["credentials.json"])
    paths["mosquitto.conf"].write_text(secure_config(paths["passwd"], paths["acl"], port, tls))
    return paths


def secure_config(passwd: Path, acl: Path, port: int, tls: tuple[Path, Path] | None = None, host: str = "0.0.0.0") -> str:
    """The Mosquitto settings that lock a listener: no anonymous clients, the password file, the ACL."""
    lines = [
        f"listener {port} {host}",
        "allow_anonymous false",
        f"password_file {passwd.resolve()}",
        f"acl_file {acl.resolve()}",
        "set_tcp_nodelay true",
    ]
    if tls is not None:
        cert, key = tls
        lines += [f"certfile {cert.resolve()}", f"keyfile {key.resolve()}"]
    return "\n".join(lines) + "\n"
