"""Scale-out: districts of independent sites, the fleet sharded by area, several cloud instances."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from v2x.core import scenario
from v2x.core.errors import ScenarioError
from v2x.core.network import Network
from v2x.core.traffic import Light, Traffic
from v2x.testing import RunScenario


def test_tile_lays_out_independent_copies_with_their_own_names() -> None:
    base = scenario.load(scenario.resolve("corridor"))
    sc = scenario.tile(base, 5)
    assert [i.id for i in sc.intersections[:4]] == ["J1", "J2", "J3", "J1-1"]
    assert len(sc.intersections) == 15
    assert {r.intersection for r in sc.rsus} == {i.id for i in sc.intersections}
    assert len(sc.demand) == 5 * len(base.demand)
    assert sc.roads[2].ends == ("J1-1.east", "J2-1.west")
    net = Network(sc)
    # each copy is one site: its three junctions linked by roads, no road to another copy
    assert net.components == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]
    # no copy's lanes come near another's: the sites' bounding boxes are apart
    boxes = []
    for site in net.components:
        pts = np.concatenate([lk.points for lk in net.links if lk.intersection in site])
        boxes.append((pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()))
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
            assert ax1 + 100 < bx0 or bx1 + 100 < ax0 or ay1 + 100 < by0 or by1 + 100 < ay0
    assert scenario.tile(base, 1) is base
    with pytest.raises(ScenarioError, match="copies"):
        scenario.tile(base, 0)


def test_area_shards_drive_only_their_own_sites_with_ids_no_other_shard_uses() -> None:
    sc = scenario.tile(scenario.load(scenario.resolve("four_way")), 4)
    net = Network(sc)
    shards = []
    for i in range(2):
        area = net.shard_area(i, 2)
        tr = Traffic(net, sc, area=area, shard=(i, 2))
        ids: set[int] = set()
        for _ in range(1200):  # 120 s
            tr.step(0.1, np.full(tr.n, Light.PERMISSIVE, dtype=np.int64))  # green everywhere, yielding by gap acceptance
            ids |= set(tr.ids.tolist())
            on = {net.links[int(lk)].intersection for lk in tr.current_link()}
            assert on <= area, f"shard {i} has vehicles at {on - area}"
        assert ids
        assert all(v % 2 == (i + 1) % 2 for v in ids)  # k*2 + i + 1
        shards.append(ids)
    assert not shards[0] & shards[1]


def test_fleet_workers_and_cloud_instances_carry_every_message_once(v2x_run: RunScenario) -> None:
    """`v2x run --copies 2 --workers 2 --clouds 2`: two fleet processes by area, two cloud instances
    sharing the SPaT relay through $share; nothing lost, each RSU SPaT relayed once."""
    r = v2x_run("four_way", "--copies", "2", "--workers", "2", "--clouds", "2", "--no-impairment", "--warmup", "10",
                duration=30, fast=False)
    data = r.data
    assert data["fleet_tick"]
    assert r["steady"]["tick"]["late_share"] <= 0.01
    bsm, spat = r.messages("bsm"), r.messages("spat")
    assert bsm.sent > 1000
    assert bsm.lost == 0
    assert spat.lost == 0
    assert bsm.duplicates == 0
    assert spat.duplicates == 0
    assert data["messages"]["bsm"]["received_by"]["cloud"] == bsm.sent  # each BSM reached the instance owning its site
    # each SPaT an RSU sent was relayed once, by one instance or the other: every one that reached an instance, and
    # none twice; missed only those the RSUs sent before either instance listened (under load an instance may start
    # after sim time 0: it hears the RSUs' retained status then)
    relayed = data["messages"]["spat"]["relayed_by_cloud"]
    assert relayed == data["messages"]["spat"]["received_by"]["cloud"]
    listening_s = min(e["sim_s"] for e in data["cloud"]["events"] if e["event"] == "rsu-online")
    before = 2 * (math.ceil(max(listening_s, 0.0) * 10) + 1)  # two RSUs at 10 Hz, from sim time 0
    assert 0 <= (spat.sent - relayed) - relayed <= before
    assert set(data["connection"]["tiers"]) >= {"fleet", "cloud"}
    assert data["connection"]["outages_s"] == []  # no client id was taken over
    assert data["vehicles"]["spawned"] > 20


@pytest.mark.integration
def test_workers_and_clouds_are_checked_before_anything_starts() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "v2x", "run", "four_way", "--headless", *args], capture_output=True, text=True, timeout=60)

    fast = run("--fast", "--workers", "2", "--duration", "5")
    assert fast.returncode == 2
    assert "fast mode" in fast.stderr
    clouds = run("--clouds", "3", "--copies", "2", "--duration", "5")
    assert clouds.returncode == 2
    assert "2 independent site(s)" in clouds.stderr
    fleet = subprocess.run([sys.executable, "-m", "v2x", "fleet", "four_way", "--shard", "1/2", "--by", "area", "--duration", "1"],
                           capture_output=True, text=True, timeout=60)
    assert fleet.returncode == 2
    assert "too few to shard by area" in fleet.stderr
