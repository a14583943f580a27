"""Tier summaries are typed records: they go to a JSON line and back unchanged, a malformed line is refused naming
the field, and the shards (or instances) of a run add up as the report needs."""

from __future__ import annotations

import json
import re

import pytest

from cloud.misbehaviour import MisbehaviourSummary
from cloud.service import CloudSummary
from roadside.service import RsuSummary
from v2x.net.reception import LinkDrops
from v2x.net.transport import ConnectionSummary
from v2x.vehicle.apps import AppKpis, HazardWarnings
from v2x.vehicle.summary import FleetLinkDrops, FleetSummary, Shard, TrafficKpis, Vehicles


def _line(record: object) -> dict[str, object]:
    """What a tier prints and the run reads: through JSON text."""
    return json.loads(json.dumps(record.to_json()))  # type: ignore[attr-defined,no-any-return]


def _fleet(shard: int, finished: int, delay_s: float, tick: list[list[float]], first_ms: float | None) -> FleetSummary:
    return FleetSummary(
        vehicles=Vehicles(finished + 2, finished, 2),
        shard=Shard(shard, 2, 10 + shard, "vehicle"),
        traffic=TrafficKpis(600.0, delay_s, 0.5, None if shard else 3, 1, 0),
        apps={"hlw": AppKpis(2, 2, 1.5, 1.0, 2)},
        hazard_warning_ms=HazardWarnings(first_ms, None, [{"event_id": 1, "first_ms": first_ms, "last_ms": None}]),
        bad_input={"undecodable": shard + 1},
        connection=ConnectionSummary(1, 1, [[10.0, 12.0 + shard]]),
        link_drops=FleetLinkDrops({"spat": 3}, 1, shard),
        tick=tick,
        peak_rss_mb=100.0,
    )


def test_every_tier_summary_round_trips_through_its_json_line() -> None:
    rsu = RsuSummary(sent={"spat": 600}, link_drops=LinkDrops({"bsm": 4}, 2), connection=ConnectionSummary(1, 1, [[3.0, None]]),
                     rsu="RSU-J1", plans_applied=1, plans=[{"plan_id": 7, "issued_s": 1.0, "applied_s": None}])
    cloud = CloudSummary(received={"bsm": 9}, relayed_spat=5, max_queue_by_approach={"J1.north": 4},
                         misbehaviour=MisbehaviourSummary({"veh-1": 40}, {"veh-1": {"at_s": 3.2, "strikes": {"speed": 2}}}))
    fleet = _fleet(0, 10, 20.0, [[0, 1.5, 30, 10, 0]], 250.0)
    for record in (rsu, cloud, fleet):
        assert type(record).from_json(_line(record)) == record


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ({"sent": [1]}, "RsuSummary.sent: expected an object"),
        ({"connection": None}, "RsuSummary.connection: null"),
        ({"link_drops": {"lost": {"bsm": "4"}}}, "RsuSummary.link_drops.lost.bsm: expected int"),
        ({"plans": {"a": 1}}, "RsuSummary.plans: expected a list"),
        ({"vehicles_seen": 3}, "unknown field(s) ['vehicles_seen']"),
    ],
)
def test_a_malformed_summary_line_is_refused_naming_the_field(line: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        RsuSummary.from_json(line)


def test_the_shards_of_a_fleet_add_up() -> None:
    a = _fleet(0, 10, 20.0, [[0, 1.0, 30, 10, 0], [1, 4.0, 31, 10, 1]], 250.0)
    b = _fleet(1, 30, 40.0, [[1, 2.0, 29, 10, 0]], 400.0)
    m = FleetSummary.merge([a, b])
    assert m.vehicles == Vehicles(44, 40, 4)
    assert m.shard == Shard(None, 2, 21, "vehicle")
    assert m.traffic.mean_delay_s == round((20.0 * 10 + 40.0 * 30) / 40, 2)  # weighted by vehicles finished
    assert m.traffic.red_light_violations is None  # not known for one shard: not known for the run
    assert m.tick == [[0, 1.0, 30, 10, 0], [1, 4.0, 60, 20, 1]]  # the latest lag; vehicles, steps, late steps added
    assert m.hazard_warning_ms.first == 400.0
    assert len(m.hazard_warning_ms.per_hazard) == 2
    assert m.bad_input == {"undecodable": 3}
    assert m.connection == ConnectionSummary(2, 2, [[10.0, 13.0]])  # overlapping outages merged
    assert m.link_drops == FleetLinkDrops({"spat": 6}, 2, 1)
    assert m.peak_rss_mb == 200.0
    assert FleetSummary.merge([a]) is a


def test_the_instances_of_the_cloud_add_up() -> None:
    a = CloudSummary(sent={"spat": 10}, relayed_spat=10, vehicles_seen=5, max_queue_by_approach={"J1.north": 3},
                     detected_hazards=[{"event_id": 129}], misbehaviour=MisbehaviourSummary({"veh-1": 40}, {}))
    b = CloudSummary(sent={"spat": 12, "rsi": 1}, relayed_spat=12, vehicles_seen=7, max_queue_by_approach={"J1-1.north": 2},
                     misbehaviour=MisbehaviourSummary({"veh-2": 50}, {"veh-2": {"at_s": 1.0, "strikes": {}}}))
    m = CloudSummary.merge([a, b])
    assert (m.sent, m.relayed_spat, m.vehicles_seen) == ({"spat": 22, "rsi": 1}, 22, 12)
    assert m.max_queue_by_approach == {"J1.north": 3, "J1-1.north": 2}
    assert m.detected_hazards == [{"event_id": 129}]
    assert m.misbehaviour.senders == {"veh-1": 40, "veh-2": 50}
    assert list(m.misbehaviour.flagged) == ["veh-2"]
    assert m.measurements == {}  # kept per instance: the report adds them up with the other receivers'
