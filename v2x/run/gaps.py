"""What a run's broker does not do that the run relies on: said in one line at the start, and what it cost in one line
at the end (issue #28).

At the start the run's claim on its root (v2x.run.claim) finds out, from its own connection:
  - whether a retained message reaches a wildcard subscription made after it (RabbitMQ's MQTT plugin keeps retained
    messages by exact topic and sends none to a wildcard, rabbitmq-server#8096): vehicles take MAP and hazards (RSI)
    through wildcards on their tile, so they get neither until it is sent again (MAP never is);
  - whether the broker speaks MQTT 5 (NATS and RabbitMQ speak 3.1.1): without it BSM and SPaT carry no message
    expiry, so the broker may hand out stale ones that each receiver then drops by their header time, and there are
    no shared subscriptions (`--clouds N`).
At the end the report says what that cost: approaching vehicles that never got a MAP, hazards that vehicles reached
unwarned, and in fast mode the expected deliveries that never came and the wall time the lockstep rounds spent
waiting them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Abilities:
    """What the broker was found to do (all True until found otherwise)."""

    retained_to_wildcard: bool = True  # a retained message reaches a later wildcard subscription
    mqtt5: bool = True  # the broker accepted an MQTT 5 connection


def missing(found: Abilities, mqtt: str) -> dict[str, str]:
    """What the broker lacks that the run relies on, by ability (`retained_to_wildcard`, `mqtt5`), each with what it
    will cost. `mqtt`: the version the run asked for (`--mqtt`): 3.1.1 asked for is not a gap."""
    out = {}
    if not found.retained_to_wildcard:
        out["retained_to_wildcard"] = ("retained messages are not delivered to wildcard subscriptions: vehicles, which "
                                       "take MAP and hazards (RSI) through one, get no MAP and no hazard raised before "
                                       "they subscribed")
    if not found.mqtt5 and mqtt == "auto":
        out["mqtt5"] = ("no MQTT 5 (3.1.1 only): no message expiry, so stale BSM and SPaT are delivered and dropped by "
                        "each receiver, and no shared subscriptions (--clouds)")
    return out


def costs(report: dict[str, Any], gaps: bool) -> list[str]:
    """What the broker's shortfalls cost this run, as measured in its report. `gaps`: whether the broker was found
    to lack something at the start; else only the lockstep's losses are the broker's for sure (a vehicle can miss a
    MAP or a hazard warning to link loss)."""
    out = []
    cov = report.get("spat_coverage") or {}
    without_map = 0 if not gaps else cov.get("vehicles_approaching", 0) - cov.get("vehicles_with_map", 0)
    if without_map > 0:
        out.append(f"{without_map} of {cov['vehicles_approaching']} approaching vehicles never got a MAP")
    hazards = report.get("events", {}).get("hazard_warning_ms", {}).get("per_hazard", [])
    unwarned = 0 if not gaps else sum(h.get("reached_unwarned", 0) for h in hazards)
    if unwarned:
        out.append(f"{unwarned} of {sum(h.get('reached', 0) for h in hazards)} vehicles reached a hazard unwarned")
    lockstep = report.get("lockstep") or {}
    if lockstep.get("lost"):
        out.append(f"{lockstep['lost']} expected deliveries never came, and waiting them out took "
                   f"{lockstep.get('waited_out_s', 0):.1f} s of the {report.get('wall_s', 0):.1f} s wall")
    return out
