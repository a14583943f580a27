"""The cloud's adaptive policy on a SUMO network's RSU junctions (docs/sumo.md).

The same policy as on our junctions (cloud.policy.Adaptive: Webster's split of a cycle by each phase's critical
flow ratio, from the arrivals and residual queues the cloud counts from BSMs), planned from what the RSU itself
plans from: each junction's base plan is its traffic light's program made into our plan (v2x.sumo.signals), an
approach is an incoming edge of the junction ("B0.A0B0"), its lanes are the edge's lanes that the light controls,
and a phase serves the approaches whose lanes start a link it gives green. The RSU checks every plan against the
limits it makes from the program (v2x.sumo.site.plan_limits). Each junction keeps its own cycle: the policy knows
no roads between SUMO junctions, so it sets no green wave there.
"""

from __future__ import annotations

from cloud.policy import Adaptive
from v2x.core.network import Network
from v2x.sumo.site import approach_of, approaches, sumo_sites


class SumoAdaptive(Adaptive):
    """The adaptive policy for the RSU junctions of a SUMO scenario (approaches named "<junction>.<edge>")."""

    def __init__(self, net: Network) -> None:
        super().__init__(net)  # a SUMO scenario's network has no schematic intersections: no roads, no links
        sites = sumo_sites(net.scenario)
        appr = approaches(net.scenario)
        self.ids = [s.id for s in sites]
        self.base = [s.plan for s in sites]
        self.current = list(self.base)
        self.phase_legs = [
            [sorted({approach_of(lane) for (i, lane), groups in appr.groups.items() if i == s.index and groups & p.groups})
             for p in s.plan.phases]
            for s in sites
        ]
        self.lanes = {f"{sites[i].id}.{edge}": n for (i, edge), n in appr.lanes.items()}
        self.group_of = list(range(len(sites)))  # each junction its own coordination group


def adaptive(net: Network) -> Adaptive:
    """The adaptive policy for a scenario's RSU intersections: our junctions', or a SUMO network's."""
    return SumoAdaptive(net) if net.scenario.mobility == "sumo" else Adaptive(net)
