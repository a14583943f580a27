"""What a run's tiers reported, as typed summaries, and the report built from them (`v2x run --report r.json`).

`Results` holds each tier's summary (`FleetSummary`, `RsuSummary`, `CloudSummary`): in fast mode the
objects themselves, in real time what the tiers' processes printed, read back with `from_json`.
`build_report` turns them into the report's JSON; `print_summary` draws its table on the terminal.
Reading a report back is `v2x.run.report.Report`.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console

from cloud.service import CloudSummary
from roadside.service import RsuSummary
from v2x.core.jsonview import add_counts
from v2x.core.metrics import Counts, Histogram, Series, merge_json, series_after, series_table
from v2x.core.scenario import Scenario
from v2x.core.traffic import Light
from v2x.core.trajectories import Trajectories
from v2x.net.service import ServiceSummary
from v2x.net.transport import merge_spans
from v2x.run.perception import perception_report
from v2x.vehicle.apps import HazardWarnings
from v2x.vehicle.summary import Emergency, FleetSummary, LineCrossing

MAX_WINDOWS = 600  # latency over time: at most this many points per hop in the report
MIN_BSMS_JUDGED = 10  # a sender the cloud heard fewer BSMs from is not scored


@dataclass
class Results:
    """Every tier's summary of one run (None: that tier reported nothing, e.g. its process died)."""

    mode: str  # "fast" or "realtime"
    fleet: FleetSummary | None = None  # the fleet, or its processes' summaries merged
    fleets: list[FleetSummary] = field(default_factory=list)  # real time with --workers: each process's
    cloud: CloudSummary | None = None  # the cloud, or its instances' summaries merged
    clouds: list[CloudSummary] = field(default_factory=list)  # real time: each instance's
    rsus: list[RsuSummary] = field(default_factory=list)
    cloud_events: list[dict[str, Any]] = field(default_factory=list)  # rsu-lost, plan-sent, hazard-raised...
    lockstep: dict[str, Any] | None = None  # fast mode: the barrier's counts
    trajectories: Trajectories | None = None  # with --plots: for the time-space diagrams
    epoch_utc_s: float | None = None  # real time: the UTC time [s] of sim second 0 (every tier's)
    interrupted: bool = False  # cut short by Ctrl-C
    tiers_failed: list[dict[str, Any]] = field(default_factory=list)  # real time: tier, exit_code, error
    cloud_picture: dict[str, Any] | None = None  # fast mode: the cloud's picture against the truth (v2x.run.picture)


@dataclass(frozen=True)
class RunInfo:
    """What the report says about the run itself, besides what the tiers measured."""

    scenario: Scenario
    duration_s: float
    broker_kind: str
    url: str
    mqtt: str
    impair: bool
    settings: list[str]  # the --set overrides
    warmup_s: float | None
    wall_s: float
    run_id: str  # in every client id of the run (v2x.net.connection)
    leftovers: dict[str, int] = field(default_factory=dict)  # retained by an earlier run under the root, cleared (v2x.run.claim)
    scheduling: str = "normal"  # the Linux policy of the run's processes and the broker it started (not one given with --broker)


def build_report(run: RunInfo, res: Results) -> dict[str, Any]:
    """The run's report as JSON-ready values."""
    sc, fs, cloud, rsus = run.scenario, res.fleet, res.cloud, res.rsus
    fleet_rx = fs.messages.received if fs else {}
    fleet_rx_by_type = add_counts({k.split("/")[0]: v} for k, v in fleet_rx.items())
    sent = add_counts([fs.messages.sent if fs else {}, cloud.sent if cloud else {}, *(r.sent for r in rsus)])
    by_receiver = {
        "vehicles": fleet_rx_by_type, "cloud": cloud.received if cloud else {}, "rsus": add_counts(r.received for r in rsus),
    }
    receivers: list[FleetSummary | ServiceSummary] = [*(res.fleets or ([fs] if fs else [])), *(res.clouds or ([cloud] if cloud else [])), *rsus]
    latency, counts, series = merge_json(p.measurements for p in receivers)
    unseen = _bsms_unseen(res, counts)
    by_type_counts: dict[str, Counts] = {}
    by_hop_counts: dict[str, Counts] = {}
    for (t, hop), c in counts.items():
        by_type_counts.setdefault(t, Counts()).add(c)
        by_hop_counts.setdefault(hop, Counts()).add(c)
    messages: dict[str, Any] = {}
    for t in sorted(set(sent) | {k for c in by_receiver.values() for k in c}):
        measured = by_type_counts.get(t, Counts())
        messages[t] = {
            "sent": sent.get(t, 0),
            "received": sum(c.get(t, 0) for c in by_receiver.values()),
            "lost": measured.lost,
            "duplicates": measured.duplicates,
            "jumps": measured.jumps,  # streams begun anew: a number further ahead than its sender could have numbered
            "expired": measured.expired,  # received too old to use (a stalled or congested receiver)
            "received_by": {who: c[t] for who, c in by_receiver.items() if c.get(t)},
        }
    window = max(math.ceil(run.duration_s / MAX_WINDOWS), 1)
    by_hop: dict[str, Histogram] = {}
    by_type: dict[str, dict[str, Any]] = {}
    for (t, hop), h in sorted(latency.items()):
        by_hop.setdefault(hop, Histogram()).merge(h)
        by_type.setdefault(t, {})[hop] = h.summary_ms()
    if "spat" in messages:
        messages["spat"]["received_by_vehicles_by_path"] = {"rsu": fleet_rx.get("spat/rsu", 0), "cloud": fleet_rx.get("spat/cloud", 0)}
        messages["spat"]["relayed_by_cloud"] = cloud.relayed_spat if cloud else 0
    tick = fs.tick if fs else []
    report: dict[str, Any] = {
        "scenario": sc.name,
        "run_id": run.run_id,
        "leftovers_cleared": run.leftovers,  # by kind: what an earlier run left retained under the root (v2x.run.claim)
        "mode": res.mode,
        "seed": sc.seed,
        # the sim seconds the run reached (less than asked when it was stopped early); what was asked, apart
        "duration_s": min(fs.sim_s, run.duration_s) if fs else 0.0,  # (real time's last step may end a step past it)
        "duration_configured_s": run.duration_s,
        "wall_s": round(run.wall_s, 1),
        "epoch_utc_s": res.epoch_utc_s,  # real time: the UTC time [s] of sim second 0 (every tier's)
        "interrupted": res.interrupted,
        "tiers_failed": res.tiers_failed,  # real time: each tier process that crashed or was killed, and why
        "broker": {"kind": run.broker_kind, "url": run.url, "mqtt": run.mqtt},
        "scheduling": run.scheduling,  # the policy of the processes the run started (--scheduling; v2x.net.options.scheduling)
        "impairment": dataclasses.asdict(sc.links) if run.impair else None,
        "settings": run.settings,
        "messages": messages,
        "latency_basis": latency_basis(res.mode, run.impair),  # what every latency below is: measured or modelled
        "latency_ms": {hop: h.summary_ms() for hop, h in sorted(by_hop.items())},
        "latency_ms_by_type": by_type,
        # for plots: each hop's merged histogram (bucket index -> count, as in v2x.core.metrics), and p50/p99 over time
        "latency_hist_us": {hop: h.to_json() for hop, h in sorted(by_hop.items())},
        "latency_over_time": {
            hop: {"window_s": window, "columns": ["t_s", "count", "p50_ms", "p99_ms"], "rows": series_table(per, window)}
            for hop, per in sorted(series.items())
        },
        "fleet_peak_rss_mb": fs.peak_rss_mb if fs else None,  # the fleet's process (or processes, added up)
        # real time, per sim second: [second, most a step started late (ms), most vehicles present, steps, late steps]
        "fleet_tick": tick,
        "steady": None if run.warmup_s is None else _steady(run.warmup_s, series, tick),
        "loss_by_hop": {
            hop: {**vars(c), "loss": round(c.lost / max(c.received + c.lost, 1), 4), **({"unseen": unseen} if hop == "vehicle->cloud" else {})}
            for hop, c in sorted(by_hop_counts.items())
        },
        # [from, to] sim time [s] each service's loop did not run for more than STALL_S (stopped, or starved of CPU)
        "stalls_s": {**({"cloud": cloud.stalls_s} if cloud else {}), **{r.rsu or str(k): r.stalls_s for k, r in enumerate(rsus)}},
        "vehicles": fs.vehicles.to_json() if fs else {},
        "traffic": _traffic(fs, rsus),
        # roadside sensors and the cloud's fusion, scored against the truth (v2x.run.perception); {} without sensors
        "perception": perception_report([(r.rsu, r.perception) for r in rsus], cloud.fusion if cloud else {}),
        "cloud_picture": res.cloud_picture,  # fast mode: the share of the true road users the cloud holds (v2x.run.picture)
        "penetration": fs.penetration.to_json() if fs else {},  # who had an OBU, and each group's traffic figures
        "events": {
            "hazard_warning_ms": (fs.hazard_warning_ms if fs else HazardWarnings()).to_json(),
            "plan_apply_ms": _plan_latency(
                cloud.sent.get("plan", 0) if cloud else 0, [p for r in rsus for p in r.plans], [x for r in rsus for x in r.plans_refused],
                sum(r.rejected_by_type.get("plan", 0) for r in rsus),
            ),
            "detected_hazards": cloud.detected_hazards if cloud else [],  # raised by the cloud from BSMs, source "detection"
        },
        "apps": {app: kpis.to_json() for app, kpis in fs.apps.items()} if fs else {},
        "app_events": fs.app_events.to_json() if fs else {},
        # emergency vehicles' travel times, their priority requests, and what each RSU did with them
        "emergency": {
            **(fs.emergency if fs else Emergency()).to_json(),
            "priority_policy": sc.control.priority,
            "rsu_log": [e for r in rsus for e in r.priority],
        },
        "spat_coverage": fs.spat.to_json() if fs else {},
        "cloud": {
            "vehicles_seen": cloud.vehicles_seen if cloud else 0,
            "max_queue_by_approach": cloud.max_queue_by_approach if cloud else {},
            "events": res.cloud_events,
        },
        "bad_input": {"fleet": fs.bad_input if fs else {}, "cloud": cloud.bad_input if cloud else {}, "rsus": add_counts(r.bad_input for r in rsus)},
        "dropped": {
            "fleet": fs.dropped.to_json() if fs else {}, "cloud": cloud.dropped if cloud else {},
            "rsus": add_counts(r.dropped for r in rsus),
        },
        "connection": _connection(res),
        "misbehaviour": _misbehaviour(fs.attackers if fs else {}, cloud.misbehaviour.to_json() if cloud else {}),
        # messages the impaired links lost (also in the sequence-number loss), or still carried at the end
        "link_drops": {
            "fleet": fs.link_drops.to_json() if fs else {}, "cloud": cloud.link_drops.to_json() if cloud else {},
            "rsus": [r.link_drops.to_json() for r in rsus],
        },
    }
    if res.lockstep is not None:
        report["lockstep"] = res.lockstep
    return report


def latency_basis(mode: str, impair: bool) -> dict[str, str]:
    """What a run's latencies are: in real time measured on the wall clock through the broker (with the link model's
    delays on top when impaired); in fast mode modelled, the link model's delays in sim time, not the broker's."""
    if mode == "fast":
        return {"kind": "modelled", "clock": "sim", "label": "modelled: the link model's delays in sim time (fast mode); the broker's own time is not in it"}
    return {"kind": "measured", "clock": "wall", "label": "measured: wall clock, through the broker" + (", with the link model's delays" if impair else "")}


def _bsms_unseen(res: Results, counts: dict[tuple[str, str], Counts]) -> int:
    """BSMs the vehicles generated (sent, or a sequence number spent while their connection was down) that the cloud
    neither received nor saw missing from a sequence gap, added to its lost ones (`counts` is changed): the ends of
    streams that a receiver could not hear (a vehicle that left, or moved to another tile's topic, while the cloud was
    stalled or cut off) leave no gap behind. One cloud hears every BSM of the run (it subscribes to all of them before
    sim time 0, when the first vehicle may appear), so what it did not receive was lost to it. Several instances each
    hear their own sites' tiles: not added up then (0)."""
    fs = res.fleet
    if fs is None or res.cloud is None or len(res.clouds) > 1:
        return 0
    c = counts.setdefault(("bsm", "vehicle->cloud"), Counts())
    unseen = max(fs.messages.sent.get("bsm", 0) + fs.dropped.bsm_not_sent - c.received - c.lost, 0)
    c.lost += unseen
    return unseen


def _traffic(fs: FleetSummary | None, rsus: list[RsuSummary]) -> dict[str, Any]:
    """The fleet's traffic figures; in real time its red-light violations judged from its stop-line crossings against
    what each RSU's heads really showed then (None when an intersection crossed has no RSU record)."""
    if fs is None:
        return {}
    out = fs.traffic.to_json()
    if out["red_light_violations"] is None and rsus and fs.crossings_logged:  # no crossing at all is 0 violations, not "not judged"
        out["red_light_violations"] = red_light_violations(fs.line_crossings, rsus)
    return out


def red_light_violations(crossings: list[LineCrossing], rsus: list[RsuSummary]) -> int | None:
    """Stop-line crossings made while the movement's head really showed red (each RSU's record of its lights)."""
    changes: dict[tuple[str, int], tuple[list[float], list[int]]] = {}
    for r in rsus:
        for t, g, light in r.lights:
            times, lights = changes.setdefault((r.intersection, int(g)), ([], []))
            times.append(t)
            lights.append(int(light))
    n = 0
    for x in crossings:
        record = changes.get((x.intersection, x.group))
        if record is None:
            return None  # no record of what that head showed: not judged
        k = bisect.bisect_right(record[0], x.t_s) - 1
        n += k >= 0 and record[1][k] == Light.RED
    return n


def _steady(from_s: float, series: Series, tick: list[list[float]]) -> dict[str, Any]:
    """The run from sim second `from_s` on: latency per hop; the fleet's tick (real time) and vehicles present."""
    rows = [r for r in tick if r[0] >= from_s]
    steps = sum(r[3] for r in rows)
    return {
        "from_s": from_s,
        "latency_ms": {hop: series_after(per, from_s) for hop, per in sorted(series.items())},
        "tick": {
            "seconds": len(rows),
            "steps": steps,
            # steps that started a whole step (or more) behind the wall clock (with several fleet processes, a
            # step of any): the fleet holds its tick while these are at most 1% (its p99 lag is under one step)
            "late_steps": sum(r[4] for r in rows),
            "late_share": round(sum(r[4] for r in rows) / steps, 4) if steps else None,
            "lag_ms_max": max((r[1] for r in rows), default=None),
            "vehicles_mean": round(sum(r[2] for r in rows) / len(rows), 1) if rows else None,
            "vehicles_max": max((r[2] for r in rows), default=None),
        },
    }


def _misbehaviour(attackers: dict[str, str], detector: dict[str, Any]) -> dict[str, Any]:
    """The cloud's misbehaviour detection scored against the fleet's truth: detection rate per attack,
    false-positive rate over honest vehicles (senders heard at least MIN_BSMS_JUDGED times)."""
    if not detector:
        return {}
    flagged = detector.get("flagged", {})
    judged = {s for s, n in detector.get("senders", {}).items() if n >= MIN_BSMS_JUDGED}
    by_attack: dict[str, dict[str, Any]] = {}
    for sid, kind in attackers.items():
        if sid not in judged or (kind == "sybil" and not sid.endswith("-g")):
            continue  # a Sybil host tells the truth about itself: its ghost is the lie
        e = by_attack.setdefault(kind, {"attackers": 0, "detected": 0})
        e["attackers"] += 1
        e["detected"] += sid in flagged
    for e in by_attack.values():
        e["rate"] = round(e["detected"] / e["attackers"], 4)
    honest = sorted(s for s in judged if s not in attackers)
    false = [s for s in honest if s in flagged]
    return {
        "by_attack": dict(sorted(by_attack.items())),
        "honest": {"vehicles": len(honest), "false_positives": len(false), "rate": round(len(false) / max(len(honest), 1), 4),
                   "listed": {s: flagged[s] for s in false[:20]}},
    }


def _connection(res: Results) -> dict[str, Any]:
    """Each tier's lost connections, and the broker outages: when any tier was down (merged, sim seconds)."""
    tiers = {
        "fleet": res.fleet.connection.to_json() if res.fleet else {},
        "cloud": res.cloud.connection.to_json() if res.cloud else {},
    }
    tiers.update({r.rsu or str(k): r.connection.to_json() for k, r in enumerate(res.rsus)})
    shared = res.fleet is not None and res.fleet.shard.connections == "shared"
    return {
        "tiers": tiers, "outages_s": merge_spans(span for t in tiers.values() for span in t.get("down_s", [])),
        "obus": SHARED_NOTE if shared else "per-vehicle: each OBU its own MQTT client, client id and login",
    }


SHARED_NOTE = ("shared: one MQTT connection per fleet process carries all its OBUs' messages (--obu-connections shared); "
               "no per-vehicle client ids, Wills, logins or ACLs; in real time a step's BSMs leave in 10 ms slices, not 1 ms")


def _plan_latency(issued: int, plans: list[dict[str, Any]], refused: list[dict[str, Any]], rejected: int = 0) -> dict[str, Any]:
    """Signal plans: issued (sent by the cloud), received and accepted by their RSU, applied at a phase boundary,
    refused by the RSU (with why), rejected on arrival (stale, forged, from a wrong sender: in the RSUs' bad input);
    from issue to apply [ms]."""
    done = [round((p["applied_s"] - p["issued_s"]) * 1000.0, 1) for p in plans if p.get("applied_s") is not None]
    return {
        "issued": issued, "received": len(plans), "applied": len(done), "refused": len(refused), "rejected": rejected,
        "p50": float(np.median(done)) if done else None, "max": max(done) if done else None, "plans": plans,
        "refusals": refused,
    }


def na(value: float | None, reason: str, fmt: str = "g") -> str:
    """A figure for the terminal: the number, or "n/a (reason)" when there is none."""
    return f"n/a ({reason})" if value is None else format(value, fmt)


def _ms(x: float | None) -> str:
    """Latency [ms] on the terminal: always two decimals."""
    return na(x, "none measured", ".2f")


def print_summary(console: Console, r: dict[str, Any]) -> None:
    """The report's headline figures as a table on the terminal: numbers, or "n/a" with the reason."""
    from rich.table import Table

    msgs = r["messages"]
    configured = r.get("duration_configured_s", r["duration_s"])

    def count(t: str, what: str) -> int:
        return int(msgs.get(t, {}).get(what, 0))

    if r.get("interrupted"):
        console.print(f"INTERRUPTED at sim {r['duration_s']:.1f} s of {configured:g} s: the figures below cover that much",
                      style="bold red")
    basis = r.get("latency_basis") or latency_basis(r["mode"], r.get("impairment") is not None)
    t = Table(title=f"{r['scenario']}: {r['duration_s']:.1f} of {configured:g} s sim, {r['mode']}, in {r['wall_s']:.1f} s wall, "
                    f"broker {r['broker']['kind']}, run {r.get('run_id')}")
    t.add_column("what")
    t.add_column("value", justify="right")
    if r["vehicles"]:
        t.add_row("vehicles spawned / finished", f"{r['vehicles']['spawned']} / {r['vehicles']['finished']}")
    pen = r.get("penetration") or {}
    if pen.get("unequipped", {}).get("vehicles"):
        eq, un = pen["equipped"], pen["unequipped"]
        t.add_row("vehicles equipped / unequipped (fleet.penetration)", f"{eq['vehicles']} / {un['vehicles']}")
        why = [("none finished" if g["finished"] is not None else "not kept per vehicle on SUMO") for g in (eq, un)]
        t.add_row("mean delay (s) / stops: equipped; unequipped", "; ".join(
            f"{na(g['mean_delay_s'], w, '.1f')} / {na(g['stops_per_vehicle'], w, '.2f')}" for g, w in zip((eq, un), why, strict=True)))
    for name in msgs:
        t.add_row(f"{name}: sent / received / lost / dup",
                  f"{count(name, 'sent')} / {count(name, 'received')} / {count(name, 'lost')} / {count(name, 'duplicates')}")
    for name, c in msgs.items():
        if c.get("jumps"):
            t.add_row(f"{name}: sequence jumps (new streams, not counted as lost)", str(c["jumps"]))
        if c.get("expired"):
            t.add_row(f"{name}: received expired (too old to use)", str(c["expired"]))
    if r["loss_by_hop"].get("vehicle->cloud", {}).get("unseen"):
        t.add_row("BSMs lost to the cloud with no sequence gap to show it (stream ends)", str(r["loss_by_hop"]["vehicle->cloud"]["unseen"]))
    for tier, stalls in r.get("stalls_s", {}).items():
        for a, b in stalls:
            t.add_row(f"{tier} stalled (its loop did not run) {a:.1f} to {b:.1f} s (sim)", f"{b - a:.1f} s")
    t.add_row("latency", basis["label"])
    for hop, lat in r["latency_ms"].items():
        t.add_row(f"latency {hop} p50 / p99 / max (ms, {basis['kind']})",
                  f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])}  (n={lat['count']})")
    for hop, lat in r.get("visualiser", {}).get("latency_ms", {}).items():
        t.add_row(f"latency {hop} p50 / p99 (ms, measured by the visualiser as its HUD shows it: the broker only, no link model)",
                  f"{_ms(lat['p50'])} / {_ms(lat['p99'])}")
    by_path = msgs.get("spat", {}).get("received_by_vehicles_by_path", {})
    t.add_row("SPaT to vehicles (RSU path / cloud path)", f"{by_path.get('rsu', 0)} / {by_path.get('cloud', 0)}")
    if r["spat_coverage"]:
        cov = r["spat_coverage"]
        t.add_row("approaching vehicles without SPaT / MAP",
                  f"{len(cov['approaching_without_spat'])} / {cov['vehicles_approaching'] - cov.get('vehicles_with_map', 0)}")
    if r.get("fleet_tick"):  # real time: how far the fleet's steps fell behind the wall clock
        late, steps = sum(row[4] for row in r["fleet_tick"]), sum(row[3] for row in r["fleet_tick"])
        t.add_row("fleet tick lag: steps late (a step or more) / max lag (ms)", f"{late} of {steps} / {max(row[1] for row in r['fleet_tick']):.1f}")
    else:
        t.add_row("fleet tick lag", "n/a (fast mode: lockstep, no wall clock)" if r["mode"] == "fast" else "n/a (no fleet step recorded)")
    dropped = {tier: d.get("transport_in", 0) for tier, d in r.get("dropped", {}).items()}
    rejected = {tier: sum(b.values()) for tier, b in r.get("bad_input", {}).items()}
    if any(dropped.values()) or any(rejected.values()):
        t.add_row("input dropped on arrival / rejected (fleet, cloud, RSUs)",
                  f"{' / '.join(str(dropped.get(k, 0)) for k in ('fleet', 'cloud', 'rsus'))}; "
                  f"{' / '.join(str(rejected.get(k, 0)) for k in ('fleet', 'cloud', 'rsus'))}")
    if r["traffic"]:
        tr, finished = r["traffic"], r["vehicles"].get("finished", 0)
        t.add_row("mean delay (s) / stops per vehicle",
                  f"{na(tr['mean_delay_s'] if finished else None, 'no vehicle finished', '.1f')} / "
                  f"{na(tr['stops_per_vehicle'] if finished else None, 'no vehicle finished', '.2f')}")
        t.add_row("collisions / red-light violations",
                  f"{tr['collisions']} / {na(tr['red_light_violations'], 'not judged: no record of the lights at the crossings')}")
    if r.get("perception"):
        f, err = r["perception"]["fusion"], r["perception"]["position_error_m"]
        t.add_row("sensor detections / equipped matched to own BSM / ghosts / misses; error p50 (m)",
                  f"{f['detections']} / {na(f['equipped']['match_rate'], 'no equipped vehicle detected')} / {f['ghosts']} / "
                  f"{f['misses']}; {na(err['p50'], 'none reported')}")
    for app, a in r.get("apps", {}).items():
        if a["warnings"]:
            t.add_row(f"{app.upper()} warnings / vehicles / lead p50 (s)",
                      f"{a['warnings']} / {a['vehicles']} / {na(a['lead_time_s_p50'], 'no lead time', '.1f')}")
    for h in r.get("events", {}).get("hazard_warning_ms", {}).get("per_hazard", []):
        t.add_row(f"hazard {h['event_id']}: warned first / last (ms); reached unwarned",
                  f"{na(h['first_ms'], 'none warned', '.1f')} / {na(h['last_ms'], 'none warned', '.1f')}; {h['reached_unwarned']} of {h['reached']}")
    for d in r.get("events", {}).get("detected_hazards", []):
        t.add_row(f"detected by the cloud: {d['kind'].replace('_', ' ')}",
                  f"{d['intersection']}.{d['approach']} lane {d['lane']}, {d['to_line_m']} m before the line, at {d['sim_s']} s")
    for x in r.get("emergency", {}).get("crossings", []):
        t.add_row(f"{x['vehicle']} (emergency) request to crossing {x['intersection']} (s)", na(x["seconds"], "did not cross", ".1f"))
    plans = r.get("events", {}).get("plan_apply_ms", {})
    if plans.get("issued") or plans.get("refused") or plans.get("rejected"):
        t.add_row("signal plans issued / applied / refused / rejected on arrival; issue to apply p50 (ms)",
                  f"{plans['issued']} / {plans['applied']} / {plans['refused']} / {plans.get('rejected', 0)}; "
                  f"{na(plans['p50'], 'none applied', '.1f')}")
    for a, b in r.get("connection", {}).get("outages_s", []):
        tiers = r["connection"]["tiers"]
        back = ", ".join(f"{k} {v.get('reconnects', 0)}" for k, v in tiers.items() if v.get("disconnects"))
        t.add_row(f"broker outage {a:.1f} to {'end' if b is None else f'{b:.1f}'} s (sim); reconnects",
                  f"{back or 'none'}; BSMs not sent {r['dropped']['fleet'].get('bsm_not_sent', 0)}")
    if r.get("leftovers_cleared"):
        t.add_row("cleared, left retained by an earlier run", ", ".join(f"{k} {n}" for k, n in r["leftovers_cleared"].items()))
    if "lockstep" in r:
        ls = r["lockstep"]
        t.add_row("lockstep rounds / lost / unexpected", f"{ls['rounds']} / {ls['lost']} / {ls['unexpected']}")
    console.print(t)
