"""SUMO as the mobility backend (docs/sumo.md): the bundled grid, its BSMs, a fast run through Mosquitto."""

from __future__ import annotations

import math

import pytest

from v2x.core import codec, scenario
from v2x.core import messages as m
from v2x.run.report import Report
from v2x.testing import RunScenario
from v2x.vehicle.bsm import bsms_of

libsumo = pytest.importorskip("libsumo", reason="the sumo extra: pip install -e '.[sumo]'")
from v2x.sumo.mobility import SumoTraffic  # noqa: E402  (needs libsumo)

GRID = scenario.bundled_dir() / "grid.toml"


def test_bsm_positions_are_sumos_after_the_wire_and_back() -> None:
    """Every vehicle's BSM, encoded and decoded, converted back with the network's projection and moved forward
    half a length along its heading, is within 0.5 m of SUMO's front bumper; leaving vehicles leave the report."""
    sc = scenario.load(GRID)
    traffic = SumoTraffic(sc)
    assert traffic.location.georeferenced
    try:
        checked, seen, worst = 0, set(), 0.0
        for _ in range(600):  # 60 s: the first vehicles leave at about 50 s
            traffic.step(sc.step_s)
            for vid, bsm in bsms_of(traffic.states()):
                header = m.Header(f"veh-{vid}", m.SenderKind.VEHICLE, 1, 0, 0)
                wire = codec.decode(codec.encode(m.Frame(header, bsm))).body
                assert isinstance(wire, m.Bsm)
                x, y = libsumo.simulation.convertGeo(wire.position.lon_deg, wire.position.lat_deg, True)
                h = math.radians(wire.heading_deg)
                fx, fy = x + wire.length_m / 2 * math.sin(h), y + wire.length_m / 2 * math.cos(h)
                sx, sy = libsumo.vehicle.getPosition(traffic.sumo_id(vid))
                worst = max(worst, math.hypot(fx - sx, fy - sy))
                assert abs(wire.speed_mps - libsumo.vehicle.getSpeed(traffic.sumo_id(vid))) < 0.02
                checked += 1
                seen.add(vid)
            assert traffic.n == len(set(traffic.ids.tolist())) == libsumo.vehicle.getIDCount()
        assert worst < 0.5, worst
        assert traffic.stats.spawned == len(seen) >= 15
        assert checked > 1000
        assert traffic.stats.finished > 0
        assert traffic.n == traffic.stats.spawned - traffic.stats.finished
    finally:
        traffic.close()


def test_every_vehicle_sumo_inserts_is_heard_by_the_cloud(v2x_run: RunScenario) -> None:
    """`v2x run grid --fast` on Mosquitto: each vehicle SUMO inserted was an OBU whose BSMs the cloud heard, none lost."""
    report: Report = v2x_run(str(GRID), duration=60.0)
    spawned = report["vehicles"]["spawned"]
    assert spawned >= 30
    assert report["cloud"]["vehicles_seen"] == spawned
    bsm = report.messages("bsm")
    assert bsm.sent == bsm.received > spawned * 50
    assert bsm.lost == 0
    assert report["traffic"]["collisions"] == 0
