"""Broker security: per-client credentials and ACLs for Mosquitto (`v2x broker-config`, `v2x run --secure`).

Every connection logs in with its own user name, the one its station signs its messages with (its sender id):
each vehicle `veh-N` (and a stalled vehicle `stalled-K`), a fleet process's listen-only radios
(`fleet-v2v-I-of-N`, `fleet-shard-I-of-N`, `fleet-heads-I-of-N`: the signal heads, or on SUMO its lights' SPaT), each RSU by its id, the cloud `cloud` (instances `cloud-I`);
watchers log in as `observer` (the visualiser as `observer-viz`, the recorder as `observer-record`), and
`v2x run`'s claim on its topic root as `run`.

The broker replaces each client's id with its login (`use_username_as_clientid`): a login can only ever be
the client, and hold the session, of its own name. Without it any login could connect with another's client
id and take over its session, persistent subscriptions and queued messages included (an RSU's plans):
Mosquitto checks read access when a message is queued for a session, not when the session is taken over
(eclipse-mosquitto/mosquitto#3553), so no ACL can stop that. It is why every connection has a login of its
own, and why run ids (in client ids: v2x.net.connection) do not matter on such a broker: one broker
configuration serves one topic root, and `v2x run`'s claim on the root keeps a second run off it.

Passwords are derived from a secret per role (HMAC-SHA256 of the user name): `fleet` (vehicles and the
fleet's radios), `rsu`, `cloud`, `observer` and `run`. A fleet needs only the fleet's secret to log in any
vehicle, and with it cannot log in as an RSU or the cloud; the broker holds only PBKDF2-SHA512 hashes
(Mosquitto 2's password-file format).

The ACL (Mosquitto's ACLs allow, they never deny) lets every login read every kind of message under the topic
root but advisories, which only the vehicle they are for reads (`advisory/{tile}/{vehicle}`, and a tile's
`advisory/{tile}/all`); observers read everything. Each login writes only:

    a vehicle   its own BSM topic (any tile) and its own priority requests
    an RSU      its intersection's SPaT (sidelink path), MAP, priority replies; its RSM and status
    the cloud   signal plans, RSI, advisories, the relayed SPaT (cellular path), its status
    run         the root's run marker, and the retained kinds (MAP, RSI, status), to clear an earlier run's
    observer    nothing

Mosquitto refuses a publish the ACL does not allow (MQTT 5: PUBACK "not authorized" at QoS 1) and delivers it
to nobody; it refuses a payload over `message_size_limit` (the receivers' cap, MAX_PAYLOAD_BYTES: 74 times the
largest MAP of the bundled scenarios, 885 bytes) likewise.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from v2x.core.scenario import Scenario
from v2x.core.topics import KINDS, RETAINED_KINDS, TILE_ZOOM, Topics
from v2x.net.broker import locked_settings
from v2x.net.transport import BrokerUrl

OBSERVER = "observer"
VIZ_LOGIN = "observer-viz"  # the visualiser's login
RECORD_LOGIN = "observer-record"  # the recorder's
OBSERVERS = (OBSERVER, VIZ_LOGIN, RECORD_LOGIN)
CLOUD = "cloud"
RUN = "run"  # `v2x run`'s claim on its topic root (v2x.run.claim)
ROLES = ("fleet", "rsu", "cloud", "observer", "run")  # each has its own secret
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd uses
_TILE = "/".join(["+"] * TILE_ZOOM)  # any tile, as topic levels


def role_of(user: str) -> str:
    """The role whose secret derives `user`'s password (every name not of another role is an RSU's)."""
    if user.startswith(("veh-", "stalled-", "fleet-")):
        return "fleet"
    if user == CLOUD or user.startswith(f"{CLOUD}-"):
        return "cloud"
    if user == OBSERVER or user.startswith(f"{OBSERVER}-"):
        return "observer"
    return "run" if user == RUN else "rsu"


@dataclass(frozen=True)
class Credentials:
    """The secrets passwords derive from, by role (a tier holds only its own role's); `url()` gives a login."""

    secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls) -> Credentials:
        return cls({role: secrets.token_urlsafe(32) for role in ROLES})

    @classmethod
    def load(cls, path: Path) -> Credentials:
        """A credentials file of `v2x broker-config` (one written before secrets per role, one `secret` for every
        role, still reads: it matches the password file written with it)."""
        try:
            data = json.loads(path.read_text())
            if "secret" in data:
                return cls(dict.fromkeys(ROLES, str(data["secret"])))
            found = {str(role): str(secret) for role, secret in data["secrets"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a credentials file written by `v2x broker-config` ({e})") from None
        unknown = sorted(set(found) - set(ROLES))
        if unknown or not found:
            raise ValueError(f"{path}: secrets for {unknown or 'no role'} (expected some of {', '.join(ROLES)})")
        return cls(found)

    def only(self, roles: Iterable[str]) -> Credentials:
        """These credentials cut down to `roles` (what one tier needs)."""
        return Credentials({r: s for r, s in self.secrets.items() if r in set(roles)})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"secrets": self.secrets}) + "\n")
        path.chmod(0o600)

    def missing(self, roles: Iterable[str]) -> list[str]:
        return [r for r in roles if r not in self.secrets]

    def password(self, user: str) -> str:
        role = role_of(user)
        secret = self.secrets.get(role)
        if secret is None:
            raise ValueError(f"no {role} secret in these credentials, so no password for {user!r} (they hold "
                             f"{', '.join(sorted(self.secrets)) or 'none'}; `v2x broker-config` writes credentials-{role}.json)")
        return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, broker_url: str, user: str) -> str:
        """The broker URL with `user` and its password in it."""
        u = BrokerUrl.parse(broker_url)
        scheme = "mqtts" if u.tls else "mqtt"
        ca = "" if u.ca is None else f"?ca={quote(u.ca)}"
        return f"{scheme}://{quote(user, safe='')}:{self.password(user)}@{u.host}:{u.port}{ca}"


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


def fleet_radios(workers: int) -> list[str]:
    """The logins of the listen-only radios of a fleet of up to `workers` processes (v2x.vehicle.fleet)."""
    return [f"fleet-{r}-{i}-of-{n}" for n in range(1, workers + 1) for i in range(n) for r in ("v2v", "shard", "heads")]


def cloud_users(clouds: int) -> list[str]:
    """The cloud's logins: `cloud`, and `cloud-I` for each of up to `clouds` instances (cloud.service.instance_id)."""
    return [CLOUD, *(f"{CLOUD}-{i}" for i in range(clouds if clouds > 1 else 0))]


def users(sc: Scenario, duration_s: float | None = None, workers: int = 1, clouds: int = 1) -> list[str]:
    return [
        *vehicle_users(sc, duration_s), *fleet_radios(workers), *(sc.rsu_of(i).id for i in range(len(sc.sites))),
        *cloud_users(clouds), *OBSERVERS, RUN,
    ]


def acl_text(sc: Scenario, root: str, clouds: int = 1, workers: int = 1) -> str:
    t = Topics(root)
    r = t.root
    lines = [
        f"# ACL for scenario {sc.name} under {r}/, written by v2x broker-config",
        "# everyone who logged in reads every kind of message under the root but advisories (and the broker's version)",
        *(f"pattern read {r}/{kind}/#" for kind in sorted(KINDS - {"advisory"})),
        "pattern read $SYS/broker/version",
        "# advisories: a vehicle reads its own, and those for every vehicle in a tile",
        f"pattern read {r}/advisory/{_TILE}/%u",
        f"pattern read {r}/advisory/{_TILE}/all",
        "# vehicles: only their own BSM (any tile) and their own priority requests",
        f"pattern write {r}/bsm/{_TILE}/%u",
        f"pattern write {r}/prq/+/%u",
    ]
    for i, iid in enumerate(sc.sites):
        rsu = sc.rsu_of(i).id
        lines += [
            f"# {rsu}: the RSU of {iid}",
            f"user {rsu}",
            f"topic write {r}/spat/rsu/{_TILE}/{iid}",
            f"topic write {r}/map/{_TILE}/{iid}",
            f"topic write {r}/rsm/{_TILE}/{rsu}",
            f"topic write {r}/prs/{iid}/+",
            f"topic write {t.status('rsu', rsu)}",
            *([f"topic read {t.truth(rsu)}"] if any(s.rsu == rsu for s in sc.sensors) else []),  # its sensors' truth
        ]
    if sc.sensors:  # real time: the fleet processes' V2V radios publish the truth for the RSUs' sensors (v2x.core.truth)
        for radio in (u for u in fleet_radios(workers) if u.startswith("fleet-v2v-")):
            lines += [f"# {radio}: the road users' truth for the RSUs' sensors", f"user {radio}", f"topic write {t.truth('+')}"]
    for cloud in cloud_users(clouds):
        lines += [
            f"# the cloud{'' if cloud == CLOUD else f' instance {cloud}'}",
            f"user {cloud}",
            f"topic write {r}/plan/+",
            f"topic write {r}/rsi/{_TILE}/{cloud}/+",
            f"topic write {r}/advisory/#",
            f"topic write {r}/spat/cloud/#",
            f"topic write {t.status('cloud', cloud)}",
        ]
    for observer in OBSERVERS:
        lines += ["# a watcher: reads everything, writes nothing", f"user {observer}", f"topic read {r}/#"]
    lines += [
        "# v2x run: its claim on the root, and clearing what an earlier run left retained",
        f"user {RUN}",
        f"topic readwrite {t.run_marker()}",
        f"topic read {r}/+",  # its marker read back through a wildcard (does the broker deliver retained messages so?)
        *(f"topic readwrite {r}/{kind}/#" for kind in sorted(RETAINED_KINDS)),
    ]
    return "\n".join(lines) + "\n"


#: which roles' secrets each tier's credentials file holds (`credentials-<tier>.json`)
TIER_ROLES = {"fleet": ("fleet",), "roadside": ("rsu",), "cloud": ("cloud",), "observer": ("observer",)}


def write_config(
    sc: Scenario, out: Path, root: str, port: int, credentials: Credentials, duration_s: float | None = None,
    tls: tuple[Path, Path] | None = None, workers: int = 1, clouds: int = 1,
) -> dict[str, Path]:
    """Write mosquitto.conf, passwd, acl, credentials.json (every role's secret: for `v2x run`) and
    credentials-<tier>.json (each tier's own, TIER_ROLES) into `out`; their paths. `workers`, `clouds`: the most
    fleet processes and cloud instances a run will have (they log in each as itself)."""
    logins = users(sc, duration_s, workers, clouds)
    clashes = sorted(u for u in (sc.rsu_of(i).id for i in range(len(sc.sites))) if role_of(u) != "rsu")
    if clashes:
        raise ValueError(f"scenario {sc.name}: RSU id(s) {clashes} look like the logins of another role (veh-, stalled-, "
                         f"fleet-, {CLOUD}, {OBSERVER}, {RUN}): rename them")
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("mosquitto.conf", "passwd", "acl", "credentials.json")}
    paths["passwd"].write_text("".join(f"{u}:{mosquitto_hash(credentials.password(u))}\n" for u in logins))
    paths["passwd"].chmod(0o600)
    paths["acl"].write_text(acl_text(sc, root, clouds, workers))
    credentials.save(paths["credentials.json"])
    for tier, roles in TIER_ROLES.items():
        paths[f"credentials-{tier}.json"] = out / f"credentials-{tier}.json"
        credentials.only(roles).save(paths[f"credentials-{tier}.json"])
    paths["mosquitto.conf"].write_text(secure_config(paths["passwd"], paths["acl"], port, tls))
    return paths


def secure_config(passwd: Path, acl: Path, port: int, tls: tuple[Path, Path] | None = None, host: str = "0.0.0.0") -> str:
    """The Mosquitto settings that lock a listener: no anonymous clients, the password file, the ACL, client id =
    login, the payload cap (`locked_settings`); and `user`: started as root, Mosquitto switches to this user, who
    owns the files written with it (0600; the default user `mosquitto` could not read them, and it would not start)."""
    lines = [
        f"listener {port} {host}",
        "allow_anonymous false",
        f"password_file {passwd.resolve()}",
        f"acl_file {acl.resolve()}",
        *locked_settings(),
        f"user {getpass.getuser()}",
        "set_tcp_nodelay true",
    ]
    if tls is not None:
        cert, key = tls
        lines += [f"certfile {cert.resolve()}", f"keyfile {key.resolve()}"]
    return "\n".join(lines) + "\n"
