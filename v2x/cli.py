"""The `v2x` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from v2x import __version__, scenario
from v2x.errors import ScenarioError

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
        if not args.quiet:
            print(f"{f}: ok ({s.name}: {len(s.intersections)} intersection(s), {s.duration_s:g} s)")
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


def _scenario_path(arg: str) -> Path:
    """A scenario given as a path, or as the name of a bundled one ('four_way')."""
    p = Path(arg)
    if p.exists() or p.suffix == ".toml":
        return p
    bundled = scenario.bundled_dir() / f"{arg}.toml"
    return bundled if bundled.exists() else p


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

    p = sub.add_parser("scenarios", help="list the bundled scenarios", description="List the bundled scenarios.")
    p.add_argument("--paths", action="store_true", help="also print the folder they are in")
    p.set_defaults(func=_cmd_scenarios)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
