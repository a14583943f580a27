"""`python -m cloud SCENARIO --broker URL`: run the cloud-control service (also `v2x cloud`)."""

from __future__ import annotations

import argparse
import sys

from cloud.service import CloudService, serve
from v2x.network import Network
from v2x.tier_args import add_common, credentials, load, run_service, setup_logging, signing_ca


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="v2x cloud",
        description="Run the cloud-control service for a scenario's region against a broker. Events "
        "(an RSU lost or back) are printed as JSON lines; a summary is printed at the end.",
    )
    add_common(parser)
    args = parser.parse_args(argv)
    setup_logging()
    sc = load(args.scenario, args.set, args.seed, args.copies)
    if sc is None:
        return 2
    net = Network(sc)
    started: list[CloudService] = []
    creds = credentials(args, "v2x cloud")
    return run_service(
        "v2x cloud",
        serve(net, args.broker, args.duration, args.root, args.keepalive, args.epoch, started, args.impair, creds,
              signing_ca(args, "v2x cloud")),
        started,
    )


if __name__ == "__main__":
    sys.exit(main())
