"""Signal control policies side by side, the same seeds: fixed time, actuated, cloud-adaptive.

    python -m bench.control                     # about 12 minutes on 2 cores
    python -m bench.control --seeds 2 --duration 600

- bench/scenarios/unbalanced.toml: four_way with 3:1 major-to-minor demand (450 and 150 veh/h
  per approach) and four_way's even fixed-time split, the usual starting timing in the field.
- corridor.toml: three signals whose fixed-time plan an engineer tuned for the demand (splits
  and a green-wave offset): what the cloud's retiming costs or gains against a good plan.

Every run is a fast-mode run through Mosquitto (`v2x sweep ... --set control.policy=...`):
the cloud estimates arrivals and queues from the BSMs it receives and sends SignalPlans,
which the RSUs apply at a phase boundary. Mean delay and stops per vehicle are medians across
seeds; the change is adaptive against fixed time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from bench.apps import sweep, sweep_args

UNBALANCED = str(Path(__file__).parent / "scenarios" / "unbalanced.toml")


def table(rows: list[dict[str, str]], policies: list[str]) -> dict[str, tuple[float, float, float]]:
    print(f"{'policy':12}{'delay s':>10}{'stops/veh':>11}{'veh/h':>8}   delay per seed")
    med = {}
    for pol in policies:
        got = [r for r in rows if r["control.policy"] == pol]
        med[pol] = tuple(statistics.median(float(r[k]) for r in got) for k in ("mean_delay_s", "stops_per_vehicle", "throughput_vph"))
        seeds = ", ".join(r["mean_delay_s"] for r in sorted(got, key=lambda r: int(r["seed"])))
        print(f"{pol:12}{med[pol][0]:>10.2f}{med[pol][1]:>11.3f}{med[pol][2]:>8.0f}   {seeds}")
    return med  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    args = sweep_args("python -m bench.control", __doc__, argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-control-"))

    policies = ["fixed", "actuated", "adaptive"]
    rows = sweep(tmp / "unbalanced", UNBALANCED, "control.policy=" + ",".join(policies), args.seeds, args.duration, args.jobs)
    print(f"\nunbalanced four-way (3:1), {args.seeds} seeds x {args.duration:g} s, fast mode (median across seeds)")
    med = table(rows, policies)
    print(f"adaptive vs fixed: delay {(med['adaptive'][0] / med['fixed'][0] - 1) * 100:+.1f}%, "
          f"stops {(med['adaptive'][1] / med['fixed'][1] - 1) * 100:+.1f}%")

    rows = sweep(tmp / "corridor", "corridor", "control.policy=fixed,adaptive", args.seeds, args.duration, args.jobs)
    print(f"\ncorridor (tuned fixed-time plan with a green wave), {args.seeds} seeds x {args.duration:g} s")
    med = table(rows, ["fixed", "adaptive"])
    print(f"adaptive vs fixed: delay {(med['adaptive'][0] / med['fixed'][0] - 1) * 100:+.1f}%, "
          f"stops {(med['adaptive'][1] / med['fixed'][1] - 1) * 100:+.1f}%")
    print(f"\n(runs kept in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
