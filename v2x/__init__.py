"""Vehicle-road-cloud V2X simulator.

One subpackage per layer; imports point down (CI checks it: `lint-imports`):

    v2x.core     messages, the one codec, scenarios, the network, topics, metrics, the traffic
                 core and the signal model (v2x.core.signal). No I/O, no asyncio
    v2x.net      MQTT transport, brokers, lockstep, stations, reception, impairment, signing,
                 broker security, the service base, the settings a tier connects with
    v2x.vehicle  the vehicle tier: the fleet, its OBUs and their applications (`v2x fleet`)
    v2x.watch    the visualiser, recording and replay, `v2x tap`: subscribers only
    v2x.run      the drivers (real time, fast, offline), sweeps, plots and the report

The two other tiers are the top-level packages `roadside` and `cloud`.
"""

__version__ = "0.1.0"
