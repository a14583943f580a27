"""Running scenarios: `v2x run` in real time and fast (lockstep) mode, the offline runner, sweeps, plots and the
report. The only layer (with the CLI and the benchmarks) that imports the tiers."""
