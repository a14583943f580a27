"""`python -m cloud SCENARIO --broker URL`: run the cloud-control service (also `v2x cloud`)."""

from __future__ import annotations

import argparse
import sys

from cloud.service import CloudService, serve
from v2x.core.network import Network
from v2x.net.options import add_common, connection, load, run_service, setup_logging, shard_arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x cloud",
        description="Run the cloud-control service for a scenario's region against a broker. Events "
        "(an RSU lost or back) are printed as JSON lines; a summary is printed at the end.",
    )
    add_common(parser)
    parser.add_argument(
        "--instance", type=shard_arg, default=(0, 1), metavar="I/N",
        help="be instance I of N (I = 0..N-1, one --epoch): it owns whole sites (road-connected groups of "
        "intersections, dealt round-robin, see --copies): their BSMs, RSMs, hazards and signal plans",
    )
    parser.add_argument(
        "--share", default=None, metavar="GROUP",
        help="take the SPaT relay through the shared subscription $share/GROUP/... (MQTT 5; Mosquitto, EMQX, "
        "HiveMQ): the broker hands each RSU SPaT to one instance of the group",
    )
    args = parser.parse_args(argv)
    setup_logging()
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    net = Network(sc)
    if args.instance[1] > max(len(net.components), 1):  # one instance serves any network, a SUMO one too
        print(f"v2x cloud: --instance {args.instance[0]}/{args.instance[1]}: {sc.name} has only {len(net.components)} "
              "independent site(s) to share out (use --copies)", file=sys.stderr)
        return 2
    started: list[CloudService] = []
    return run_service(
        "v2x cloud",
        serve(net, connection(args, "v2x cloud", ("cloud",)), args.duration, started, args.instance, args.share),
        started,
    )


if __name__ == "__main__":
    sys.exit(main())
