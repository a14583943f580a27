"""Make the bundled SUMO grid: scenarios/grid/grid.net.xml and grid.rou.xml (docs/sumo.md).

    python scripts/make_grid.py     # needs the sumo extra: pip install -e '.[sumo]'

A 3 x 2 grid of signalised junctions (A0..C1), 200 m blocks, two lanes each way at 50 km/h, 150 m
approaches at the edges, made by SUMO's netgenerate with the command below. netgenerate builds in plain
metres; the network is then georeferenced by its `location` element: a transverse Mercator projection
centred on the scenario's origin, the grid's centre at (0, 0) of the projection. The demand is a flow
from every edge entering the grid to each exit edge on the far side and to the sides, each Poisson at FLOW_VPH (SUMO's `period="exp(rate)"`, drawn with the run's seed).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import libsumo
import sumo

OUT = Path(__file__).resolve().parents[1] / "scenarios" / "grid"
LAT0_DEG, LON0_DEG = 31.4950, 120.3200  # the scenario's origin (Wuxi, a national V2X pilot zone)
FLOW_VPH = 30.0  # [veh/h] per (entry, exit) pair: Poisson arrivals
NETGENERATE = [
    "--grid", "--grid.x-number", "3", "--grid.y-number", "2", "--grid.length", "200", "--grid.attach-length", "150",
    "--default.lanenumber", "2", "--default.speed", "13.89", "--tls.guess", "--no-turnarounds", "true",
    "--seed", "1",
]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    net = OUT / "grid.net.xml"
    tool = Path(sumo.SUMO_HOME) / "bin" / "netgenerate"
    subprocess.run([str(tool), *NETGENERATE, "--output-file", str(net)], check=True)
    text = net.read_text(encoding="utf-8")
    found = re.search(r'<location netOffset="[^"]*" convBoundary="([^"]*)"', text)
    if found is None:
        raise SystemExit(f"{net}: no location element")
    x0, y0, x1, y1 = (float(v) for v in found.group(1).split(","))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    proj = f"+proj=tmerc +lat_0={LAT0_DEG} +lon_0={LON0_DEG} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    location = (f'<location netOffset="{cx:.2f},{cy:.2f}" convBoundary="{found.group(1)}" origBoundary="0,0,0,0" '
                f'projParameter="{proj}"/>')
    text = re.sub(r"<location [^>]*/>", location, text, count=1)
    net.write_text(text, encoding="utf-8")
    # origBoundary: the grid's corners in lon/lat, with the projection just written
    libsumo.start(["sumo", "--net-file", str(net), "--no-step-log", "--no-warnings"])
    (lon_a, lat_a), (lon_b, lat_b) = libsumo.simulation.convertGeo(x0, y0), libsumo.simulation.convertGeo(x1, y1)
    libsumo.close()
    net.write_text(text.replace('"0,0,0,0"', f'"{lon_a:.6f},{lat_a:.6f},{lon_b:.6f},{lat_b:.6f}"'), encoding="utf-8")

    entries = sorted(set(re.findall(r'<edge id="((?:left|right|top|bottom)\d[A-C]\d)"', text)))
    exits = sorted(set(re.findall(r'<edge id="([A-C]\d(?:left|right|top|bottom)\d)"', text)))
    flows = []
    for entry in entries:
        side = re.sub(r"\d.*", "", entry)
        for exit_ in exits:
            if re.sub(r"^[A-C]\d|\d$", "", exit_) != side:  # not back out on the side it came in
                flows.append(f'    <flow id="{entry}-{exit_}" from="{entry}" to="{exit_}" begin="0" end="86400" '
                             f'period="exp({FLOW_VPH / 3600:.6f})" departLane="best" departSpeed="max"/>')
    (OUT / "grid.rou.xml").write_text(
        "<!-- made by scripts/make_grid.py -->\n<routes>\n" + "\n".join(flows) + "\n</routes>\n", encoding="utf-8",
    )
    print(f"wrote {net} and {OUT / 'grid.rou.xml'} ({len(flows)} flows): netgenerate {' '.join(NETGENERATE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
