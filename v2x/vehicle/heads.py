"""Real time on SUMO: the lights of the RSU junctions follow their RSUs' own SPaT (docs/sumo.md).

In fast mode the fleet's SUMO is handed the RSUs' controllers themselves (`SumoTraffic.follow`). In real time the RSUs
are other processes, and what reaches them over the air (a cloud plan, a priority request, detector calls) changes
their controllers there. So the fleet listens to each RSU's own SPaT (`<root>/spat/rsu/#`, the RSU's 10 Hz
broadcast of its controller's state) on one connection of its own, and SUMO's light shows what the latest SPaT says.

This link is internal to the simulation, not V2X traffic: it stands for the cable between a real controller and its
signal heads. So it is neither impaired (no simulated sidelink loss or delay) nor measured (not in the report's
message counts or latencies). It is checked like any network input (decodable, signed when signing, the sender the
RSU of that junction, not from the future), and what fails is counted with the fleet's bad input; a SPaT older than
one already shown is dropped and counted (`out_of_order_spat`). While a junction has no fresh SPaT (none yet, or
none for `HEARD_FRESH_S`) its light runs on the copy of its RSU's controller, exact while that one runs fixed time.
"""

from __future__ import annotations

from v2x.core import messages as m
from v2x.core.topics import Topics
from v2x.net.reception import Reception
from v2x.net.station import Clock
from v2x.net.transport import Transport
from v2x.sumo.mobility import SumoTraffic


class SpatHeads:
    """The connection on which the fleet hears its SUMO junctions' SPaT, and hands it to SUMO's lights."""

    def __init__(
        self, sid: str, sumo: SumoTraffic, transport: Transport, topics: Topics, clock: Clock, reception: Reception,
    ) -> None:
        self.sid = sid  # its login and station id, as the fleet's other radios: fleet-heads-I-of-N
        self.sumo = sumo
        self.transport = transport
        self.topics = topics
        self.clock = clock
        self.reception = reception
        self.heard = 0  # SPaT intersection states shown on SUMO's lights
        self._last_ms: dict[str, int] = {}  # junction -> the timestamp [ms, UTC] of the SPaT it shows

    async def start(self) -> None:
        await self.transport.start()
        await self.transport.subscribe(f"{self.topics.root}/spat/rsu/#", qos=0)

    def receive(self) -> None:
        """Show what every SPaT that arrived says, on its junction's light (from SUMO's next step)."""
        for msg in self.transport.receive():
            frame = self.reception.checked(msg, self.sid)
            if frame is None:
                continue
            if not isinstance(frame.body, m.Spat):
                continue  # the topic's type check has counted it
            for st in frame.body.intersections:
                if not self.sumo.has_light(st.name):
                    self.reception.bad.record("unknown_intersection", msg.topic, f"SPaT for {st.name!r}", frame.header.sender_id)
                    continue
                if st.timestamp_ms < self._last_ms.get(st.name, 0):
                    self.reception.bad.record("out_of_order_spat", msg.topic, f"SPaT of {st.name} older than the one shown",
                                              frame.header.sender_id)
                    continue
                self._last_ms[st.name] = st.timestamp_ms
                states = {ms.signal_group: ms.events[0].state for ms in st.states if ms.events}
                self.sumo.hear(st.name, states, self.clock.sim_of_utc_ms(st.timestamp_ms))
                self.heard += 1

    async def close(self) -> None:
        await self.transport.close()
