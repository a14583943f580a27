"""Link impairment: the latency and loss a scenario sets are the latency and loss the report measures."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2x.core.scenario import Cellular, Links, Sidelink
from v2x.net.impair import Impairment
from v2x.testing import RunScenario

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")


def test_cellular_latency_100_ms_in_real_time_measures_100_ms(v2x_run: RunScenario) -> None:
    """On top of the real broker: the cloud->vehicle median is the setting, within 10%."""
    r = v2x_run(SHORT, "--set", "links.cellular.latency_ms=100", duration=15, fast=False)
    hop = r.latency("cloud->vehicle")
    assert hop.count > 100
    assert 90.0 <= hop.p50 <= 110.0
    assert r.latency("rsu->vehicle").p50 < 20.0  # the sidelink is not cellular


def test_no_impairment_gives_the_broker_s_own_latency(v2x_run: RunScenario) -> None:
    r = v2x_run(SHORT, "--set", "links.cellular.latency_ms=100", "--no-impairment", duration=10, fast=False)
    assert r["impairment"] is None
    assert r.latency("cloud->vehicle").p50 < 20.0


def test_ten_percent_loss_measures_ten_percent(v2x_run: RunScenario) -> None:
    """Loss on every link, counted by the receivers' sequence numbers alone (fast mode)."""
    sets = ["links.cellular.loss=0.1", "links.sidelink.loss=0.1", "links.sidelink.edge_loss=0.1", "links.sidelink.range_m=5000"]
    r = v2x_run(SHORT, *(x for s in sets for x in ("--set", s)), duration=120)
    for hop in ("vehicle->cloud", "vehicle->rsu", "rsu->vehicle", "cloud->vehicle", "rsu->cloud"):
        c = r["loss_by_hop"][hop]
        assert c["received"] + c["lost"] > 500, hop
        assert 0.08 <= c["loss"] <= 0.12, (hop, c)
    assert r.messages("bsm").lost > 0
    # each drop is also counted where the link made it
    drops = r["link_drops"]
    assert drops["fleet"]["lost"]["spat"] > 0
    assert drops["cloud"]["lost"]["bsm"] > 0
    assert drops["rsus"][0]["lost"]["bsm"] > 0


@pytest.mark.parametrize("distance", [0.0, 150.0, 250.0, 299.0])
def test_sidelink_loss_rises_with_distance_squared_and_stops_at_range(distance: float) -> None:
    imp = Impairment(Links(Sidelink(loss=0.02, edge_loss=0.5, range_m=300.0), Cellular()), seed=1)
    expected = 0.02 + 0.48 * (distance / 300.0) ** 2
    lost = sum(imp.delay_s("rsu->vehicle", "veh-1", seq.to_bytes(4, "little"), distance) is None for seq in range(20_000))
    assert abs(lost / 20_000 - expected) < 0.015
    assert imp.delay_s("rsu->vehicle", "veh-1", b"x", 300.5) is None  # out of range


def test_cellular_latency_is_lognormal_with_the_set_median_and_p99() -> None:
    imp = Impairment(Links(Sidelink(), Cellular(latency_ms=40.0, p99_ms=120.0)), seed=2)
    delays = sorted(d for seq in range(20_000) if (d := imp.delay_s("cloud->vehicle", "v", seq.to_bytes(4, "little"), None)) is not None)
    assert abs(delays[len(delays) // 2] * 1000 - 40.0) < 1.5
    assert abs(delays[int(len(delays) * 0.99)] * 1000 - 120.0) < 8.0
    # a pure function of the seed and the message: the same again, another seed differs
    again = Impairment(Links(Sidelink(), Cellular(latency_ms=40.0, p99_ms=120.0)), seed=2)
    assert again.delay_s("cloud->vehicle", "v", b"7", None) == imp.delay_s("cloud->vehicle", "v", b"7", None)
    other = Impairment(Links(Sidelink(), Cellular(latency_ms=40.0, p99_ms=120.0)), seed=3)
    assert other.delay_s("cloud->vehicle", "v", b"7", None) != imp.delay_s("cloud->vehicle", "v", b"7", None)
