"""Run the traffic core against the signal controllers with perfect information, no messaging.

This is the reference the networked run is held against: every vehicle believes exactly
what the controller shows. Used by the traffic benchmarks and the safety tests.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from v2x.core.network import Network
from v2x.core.scenario import Scenario
from v2x.core.signal.controller import DETECTOR_M, HeadWatch, Mode, SignalController
from v2x.core.signal.plans import controllers
from v2x.core.traffic import Light, Traffic


class OfflineRun:
    """Traffic + controllers stepped together; vehicles see the true signal."""

    def __init__(self, scenario: Scenario, mode: Mode | None = None, seed: int | None = None, warned: bool = False) -> None:
        self.net = Network(scenario)
        self.traffic = Traffic(self.net, scenario, seed)
        self.controllers: list[SignalController] = controllers(self.net, mode)
        self.dt = scenario.step_s
        self.warned = warned  # every driver knows of the hazards ahead (as if warned by HLW)
        self._lights = np.full(len(self.net.groups), Light.NONE, dtype=np.int64)
        self._heads = [HeadWatch(ctl) for ctl in self.controllers]
        self._index = {(g.intersection, g.group_id): g.index for g in self.net.groups}  # -> global group index

    def lights(self) -> np.ndarray:
        """The light each group shows now, by global group index, as `Light` (read only: it is kept between steps)."""
        for i, heads in enumerate(self._heads):
            for g, light in heads.changes():
                self._lights[self._index[(i, g)]] = light
        return self._lights

    def step(self) -> None:
        t = self.traffic
        group, dist = t.signal_view()
        lights = self.lights()
        truth = np.where(group >= 0, lights[np.maximum(group, 0)], Light.NONE)
        t.step(self.dt, truth, truth, np.full(t.n, self.warned))
        # detector calls for actuated control, then advance the controllers to the new time
        calls: list[set[int]] = [set() for _ in self.controllers]
        if any(ctl.actuated for ctl in self.controllers):
            group, dist = t.signal_view()
            for g in np.unique(group[(group >= 0) & (dist < DETECTOR_M)]):
                sg = self.net.groups[int(g)]
                calls[sg.intersection].add(sg.group_id)
        for ctl, c in zip(self.controllers, calls, strict=True):
            ctl.step(t.t, c)

    def run(self, duration_s: float, progress: Callable[[float], None] | None = None) -> Traffic:
        steps = round(duration_s / self.dt)
        for k in range(steps):
            self.step()
            if progress is not None and k % 600 == 0:
                progress(self.traffic.t)
        return self.traffic
