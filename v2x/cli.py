"""The `v2x` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from v2x import __version__
from v2x.core import scenario
from v2x.core.errors import BrokerError, ScenarioError
from v2x.core.topics import DEFAULT_ROOT
from v2x.net.options import add_credentials_option, add_scenario_options, load

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input: an invalid scenario, a bad argument


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for f in args.files:
        try:
            s = scenario.load(f)
        except ScenarioError as e:
            failed += 1
            for line in e.problems:
                print(line, file=sys.stderr)
            continue
        if s.mobility == "sumo":  # its network and routes too, as `v2x run` checks them before any tier starts
            from v2x.run.main import sumo_problems

            if problems := sumo_problems(s):
                failed += 1
                print("\n".join(problems), file=sys.stderr)
                continue
        if not args.quiet:
            where = f"SUMO network {Path(s.sumo.net).name}" if s.sumo is not None and s.mobility == "sumo" else f"{len(s.intersections)} intersection(s)"
            print(f"{f}: ok ({s.name}: {where}, {s.duration_s:g} s)")
    if failed:
        print(f"{failed} of {len(args.files)} file(s) invalid", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _cmd_scenarios(args: argparse.Namespace) -> int:
    files = scenario.bundled()
    if not files:
        print(f"no scenarios found in {scenario.bundled_dir()}", file=sys.stderr)
        return EXIT_FAILURE
    width = max(len(f.stem) for f in files)
    for f in files:
        try:
            desc = scenario.load(f).description
        except ScenarioError as e:
            desc = f"INVALID: {e.problems[0]}"
        print(f"{f.stem:<{width}}  {desc}")
    if args.paths:
        print(f"\n(in {scenario.bundled_dir()})")
    return EXIT_OK


def _lat_lon(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAT,LON in degrees, e.g. 31.4912,120.3119") from None
    if not (-85 <= lat <= 85 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"{text!r}: out of range (expected -85..85, -180..180)")
    return lat, lon


def _cmd_import(args: argparse.Namespace) -> int:
    try:
        from v2x.sumo import importer
    except ImportError as e:
        print(f"v2x {args.command}: needs SUMO, the sumo extra ({e.name} is missing): pip install -e '.[sumo]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "import-osm":
            done = importer.import_osm(args.osm, args.output, args.routes, args.trips)
        else:
            done = importer.import_sumo(args.net, args.routes, args.output, args.origin, args.trips)
    except ScenarioError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    net = done.network
    print(f"{done.path}: {done.scenario.name}, SUMO network {done.scenario.sumo.net if done.scenario.sumo else ''}: "
          f"{len(net.edges)} edges, {net.junctions} junctions, {len(net.traffic_lights)} with traffic lights"
          f"{'' if net.location.georeferenced else ' (no projection: laid out around the origin)'}; "
          f"route files: {', '.join(Path(r).name for r in done.scenario.sumo.routes) if done.scenario.sumo else ''} "
          f"{'' if done.scenario.sumo and done.scenario.sumo.routes else '(none: SUMO inserts no vehicles; give --routes or --trips)'}")
    return EXIT_OK


def _cmd_tap(args: argparse.Namespace) -> int:
    from v2x.net.options import credentials
    from v2x.net.security import OBSERVER, login
    from v2x.watch.tap import run

    try:
        return run(login(credentials(args, "v2x tap", ("observer",)), args.broker, OBSERVER), args.topic_filter, args.count)
    except BrokerError as e:
        print(f"v2x tap: {e}", file=sys.stderr)
        return EXIT_FAILURE


def _cmd_plot(args: argparse.Namespace) -> int:
    import json

    from v2x.run.plots import write_plots

    try:
        report = json.loads(args.report.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"v2x plot: cannot read the report {args.report}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if "latency_hist_us" not in report:
        print(f"v2x plot: {args.report} has no latency_hist_us: not a `v2x run --report` file of this version", file=sys.stderr)
        return EXIT_USAGE
    for path in write_plots(report, args.out):
        print(path)
    return EXIT_OK


def _cmd_cluster(args: argparse.Namespace) -> int:
    import time

    from v2x.net.broker import NatsCluster

    try:
        with NatsCluster(args.nodes) as cluster:
            for i, url in enumerate(cluster.urls):
                print(f"node {i}: {url}", flush=True)
            print(f"{args.nodes}-node NATS cluster up (MQTT 3.1.1, JetStream); Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
    except BrokerError as e:
        print(f"v2x cluster: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def _exec_tier(package: str, args: list[str]) -> int:
    """Hand over to a tier's own command line; v2x does not import the roadside or cloud packages."""
    os.execv(sys.executable, [sys.executable, "-m", package, *args])


def _at_least_one(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="v2x",
        description="Vehicle-road-cloud V2X simulator: vehicles, roadside units and a cloud service "
        "exchanging protobuf messages over MQTT.",
        epilog="Run `v2x COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "validate",
        help="check scenario files and report every problem",
        description="Validate scenario files. Each problem is printed as FILE:LINE: field.path: what is wrong "
        "(expected ...). Exit code 0 when all are valid, 2 otherwise.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="scenario TOML files")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "tap",
        help="print live messages from a broker as JSON lines",
        description="Subscribe to a topic filter and print each message, decoded, as one JSON line: "
        "topic, type, header, body, receive time and latency. Undecodable payloads are reported on stderr.",
    )
    p.add_argument("topic_filter", nargs="?", default="v2x/v1/#", help="MQTT topic filter (default v2x/v1/#)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default mqtt://127.0.0.1:1883)")
    p.add_argument("-n", "--count", type=_at_least_one, default=None, help="stop after this many messages")
    add_credentials_option(p)
    p.set_defaults(func=_cmd_tap)

    # listed for --help; main() hands these to the tier's own command line before parsing
    sub.add_parser("run", help="run a scenario: every tier, through a broker, with a report (`v2x run -h`)", add_help=False)
    sub.add_parser("sweep", help="run a grid of settings in fast mode: a CSV and KPI plots (`v2x sweep -h`)", add_help=False)
    sub.add_parser("fleet", help="run a scenario's vehicles against a broker (`v2x fleet -h` for options)", add_help=False)
    for name, text in VIEWERS.items():
        sub.add_parser(name, help=text, add_help=False)
    for tier, text in TIERS.items():
        sub.add_parser(tier, help=text, add_help=False)

    p = sub.add_parser(
        "plot",
        help="draw a report's latency plots (CDF per hop, latency over time)",
        description="Draw the latency plots of a `v2x run --report` file. Time-space diagrams need the "
        "vehicles' trajectories, which only a run has: use `v2x run --plots DIR` for those.",
    )
    p.add_argument("report", type=Path, help="the run's JSON report")
    p.add_argument("out", type=Path, help="folder for the PNGs (created)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "cluster",
        help="start a clustered broker on loopback: NATS nodes with MQTT, for scale-out runs",
        description="Start a cluster of nats-server nodes (Debian package nats-server) routed together, each "
        "with an MQTT 3.1.1 listener and JetStream (sessions, QoS 1 and retained messages replicated). Prints "
        "each node's broker URL; runs until Ctrl-C. Give each tier (roadside, cloud, fleet shards) a node's URL.",
    )
    p.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    p.set_defaults(func=_cmd_cluster)

    p = sub.add_parser(
        "import-sumo",
        help="write a scenario that runs a SUMO network (and its routes) on SUMO",
        description="Write a scenario (mobility = \"sumo\") that references a SUMO network and its demand, after "
        "checking them (the network reads, every edge the routes name is in it). Paths in the scenario are relative "
        "to it. Needs the sumo extra (pip install -e '.[sumo]'); see docs/sumo.md.",
    )
    p.add_argument("net", type=Path, metavar="NET.net.xml", help="the SUMO network")
    p.add_argument("--origin", type=_lat_lon, default=None, metavar="LAT,LON",
                   help="where a network without a projection lies: its (0, 0) [deg] (default: Wuxi, 31.4912,120.3119)")
    _import_options(p, "a SUMO route file: routes, trips or flows (repeat for several)")

    p = sub.add_parser(
        "import-osm",
        help="convert an OpenStreetMap file with netconvert and write a scenario that runs it on SUMO",
        description="Run SUMO's netconvert on an OpenStreetMap file (traffic lights from the signals mapped, "
        "joined junctions, the road geometry kept) into NAME.net.xml beside the scenario, then write the scenario "
        "as import-sumo does. Needs the sumo extra; see docs/sumo.md.",
    )
    p.add_argument("osm", type=Path, metavar="MAP.osm", help="the OpenStreetMap file")
    _import_options(p, "a SUMO route file for the new network")

    p = sub.add_parser("scenarios", help="list the bundled scenarios", description="List the bundled scenarios.")
    p.add_argument("--paths", action="store_true", help="also print the folder they are in")
    p.set_defaults(func=_cmd_scenarios)
    return parser


def _import_options(p: argparse.ArgumentParser, routes_help: str) -> None:
    """The demand and output options `import-sumo` and `import-osm` share."""
    p.add_argument("--routes", type=Path, action="append", default=[], metavar="R.rou.xml", help=routes_help)
    p.add_argument("--trips", type=float, default=None, metavar="SECONDS",
                   help="also make random trips, one every SECONDS for an hour, edge to edge (SUMO's randomTrips.py)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="my.toml", help="the scenario to write")
    p.set_defaults(func=_cmd_import)


TIERS = {
    "roadside": "run a scenario's RSUs against a broker (`v2x roadside -h` for options)",
    "cloud": "run the cloud-control service against a broker (`v2x cloud -h` for options)",
}


VIEWERS = {
    "broker-config": "write a locked Mosquitto config: a login per station, ACLs per topic (`v2x broker-config -h`)",
    "viz": "watch a broker's traffic in a window: vehicles, signals, hazards, latency (`v2x viz -h`)",
    "record": "record a broker's messages to MCAP (`v2x record -h`)",
    "replay": "play an MCAP recording into the visualiser or onto a broker (`v2x replay -h`)",
}


#: commands with their own command line, imported only when used: name -> (module, function)
OWN_PARSERS = {
    "run": ("v2x.run.main", "main"),
    "sweep": ("v2x.run.sweep", "main"),
    "fleet": ("v2x.vehicle.cli", "main"),
    "viz": ("v2x.watch.viz", "viz_main"),
    "replay": ("v2x.watch.viz", "replay_main"),
    "record": ("v2x.watch.record", "record_main"),
}


def broker_config_main(argv: list[str]) -> int:
    """`v2x broker-config`: write a locked Mosquitto configuration for a scenario."""
    from v2x.net.security import Credentials, users, write_config

    p = argparse.ArgumentParser(
        prog="v2x broker-config",
        description="Write a Mosquitto configuration for a scenario in which every station logs in as itself and "
        "may publish only its own topics, reads no other vehicle's advisories, and its client id is its login: "
        "mosquitto.conf, passwd (PBKDF2-SHA512 hashes), acl, credentials.json (every role's secret, for `v2x run`) "
        "and credentials-{fleet,roadside,cloud,observer}.json (each tier's own: pass it with --credentials; keep "
        "them private).",
    )
    p.add_argument("scenario", help="scenario file, or the name of a bundled one")
    p.add_argument("out", type=Path, help="folder to write the files into (created)")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    p.add_argument("--port", type=int, default=1883, help="listener port (default 1883)")
    p.add_argument("--duration", type=float, default=None, help="sim seconds the runs will last: sizes the vehicle logins (default: the scenario's)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="the most fleet processes a run will have (`v2x run --workers`; default 1)")
    p.add_argument("--clouds", type=int, default=1, metavar="N", help="the most cloud instances a run will have (`v2x run --clouds`; default 1)")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: the listener speaks TLS (mqtts://)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    add_scenario_options(p)
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("v2x broker-config: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    for f in (args.tls_cert, args.tls_key):
        if f is not None and not f.is_file():
            print(f"v2x broker-config: {f}: no such file", file=sys.stderr)
            return 2
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    tls = (args.tls_cert, args.tls_key) if args.tls_cert is not None else None
    if args.workers < 1 or args.clouds < 1:
        print("v2x broker-config: --workers and --clouds must be at least 1", file=sys.stderr)
        return 2
    try:
        paths = write_config(sc, args.out, args.root, args.port, Credentials.new(), args.duration, tls, args.workers, args.clouds)
    except ValueError as e:
        print(f"v2x broker-config: {e}", file=sys.stderr)
        return 2
    n = len(users(sc, args.duration, args.workers, args.clouds))
    url = f"mqtts://HOST:{args.port}?ca=CA.pem" if tls else f"mqtt://HOST:{args.port}"
    print(f"wrote {', '.join(str(x) for x in paths.values())} ({n} logins)")
    print(f"start the broker:  mosquitto -c {paths['mosquitto.conf']}")
    print(f"run each tier with:  --broker {url} --credentials {args.out}/credentials-<tier>.json  (fleet, roadside, cloud; "
          f"observer for v2x viz, record and tap; {paths['credentials.json']} for v2x run)")
    if tls:
        print("(CA.pem: the certificate authority that signed --tls-cert, or the certificate itself if self-signed)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    from v2x.net.broker import end_if_orphaned

    end_if_orphaned()  # a fleet worker or a watcher started by a run that was killed: ends, even if its loop does not
    if args_list and args_list[0] == "broker-config":
        return broker_config_main(args_list[1:])
    if args_list and args_list[0] in OWN_PARSERS:
        module, function = OWN_PARSERS[args_list[0]]
        command: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
        return command(args_list[1:])
    if args_list and args_list[0] in TIERS:
        return _exec_tier(args_list[0], args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
