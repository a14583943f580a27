"""The pytest plugin as a user meets it: a marked scenario run, and its report as an object."""

from __future__ import annotations

import pytest

from v2x.run.report import Report


@pytest.mark.v2x_scenario("four_way", "--set", "links.cellular.latency_ms=50", duration=30)
def test_a_users_latency_budget(v2x_report: Report) -> None:
    assert v2x_report.latency("cloud->vehicle").p99 < 200
    assert 40.0 <= v2x_report.latency("cloud->vehicle", "spat").p50 <= 60.0
    assert v2x_report.messages("bsm").sent > 0
    assert v2x_report.traffic["collisions"] == 0
    assert v2x_report.broker_kind == "external"


def test_a_missing_hop_says_which_hops_there_are() -> None:
    r = Report({"latency_ms": {"vehicle->cloud": {"count": 1, "p50": 1, "p90": 1, "p99": 1, "p999": 1, "max": 1}}})
    with pytest.raises(KeyError, match=r"hops measured: \['vehicle->cloud'\]"):
        r.latency("cloud->vehicle")
