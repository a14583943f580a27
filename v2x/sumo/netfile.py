"""Reading SUMO network files: what an import and the backend need before SUMO runs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from v2x.core.errors import ScenarioError


@dataclass(frozen=True)
class Location:
    """A network's `location` element: how its metres relate to the Earth."""

    net_offset: tuple[float, float]  # [m] added to projected coordinates
    boundary: tuple[float, float, float, float]  # [m] the network's extent (convBoundary): x0, y0, x1, y1
    projection: str  # proj.4 parameters; "!" when the network is not georeferenced

    @property
    def georeferenced(self) -> bool:
        return self.projection not in ("", "!")


def read_location(net: Path) -> Location:
    """The `location` of a .net.xml; ScenarioError naming the file when it is missing, not XML or not a network."""
    try:
        for _, el in ET.iterparse(net, events=("start",)):
            if el.tag == "location":
                ox, oy = (float(v) for v in el.get("netOffset", "0,0").split(","))
                x0, y0, x1, y1 = (float(v) for v in el.get("convBoundary", "0,0,0,0").split(","))
                return Location((ox, oy), (x0, y0, x1, y1), el.get("projParameter", "!"))
            if el.tag != "net":
                break
    except OSError as e:
        raise ScenarioError([f"{net}: cannot read: {e.strerror or e} (expected a SUMO network, .net.xml)"]) from None
    except ET.ParseError as e:
        raise ScenarioError([f"{net}:{e.position[0]}: not well-formed XML: {e} (expected a SUMO network, .net.xml)"]) from None
    except ValueError as e:
        raise ScenarioError([f"{net}: a location element that cannot be read: {e} (expected numbers)"]) from None
    raise ScenarioError([f"{net}: no <net> with a <location> element (expected a SUMO network, .net.xml, as netconvert writes)"])
