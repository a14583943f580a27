#!/usr/bin/env python3
"""Regenerate the committed protobuf code from proto/v2x/v1/*.proto.

Uses protoc from grpcio-tools (no system protoc) and mypy-protobuf for the .pyi stubs;
both are pinned in the `test` extra so the output is reproducible.

    python scripts/gen_proto.py          # write v2x/core/wire/*_pb2.py and *_pb2.pyi
    python scripts/gen_proto.py --check  # exit 1 if the committed files are stale
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "v2x" / "v1"
OUT_DIR = ROOT / "v2x" / "core" / "wire"


def generate(dest: Path) -> list[Path]:
    """Compile every .proto into `dest` (flat) and return the files written."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            *(str(p) for p in protos),
        ]
        subprocess.run(cmd, check=True)
        written = []
        for f in sorted((Path(tmp) / "v2x" / "v1").iterdir()):
            if f.suffix in (".py", ".pyi"):
                target = dest / f.name
                shutil.copyfile(f, target)
                written.append(target)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed code instead of writing")
    args = parser.parse_args()
    if not args.check:
        for f in generate(OUT_DIR):
            print(f"wrote {f.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            f.name for f in generate(Path(tmp))
            if not (OUT_DIR / f.name).exists() or (OUT_DIR / f.name).read_bytes() != f.read_bytes()
        ]
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run python scripts/gen_proto.py", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
