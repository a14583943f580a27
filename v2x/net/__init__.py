"""The plumbing between tiers: MQTT transport, brokers, lockstep, stations, reception (check, then measure),
link impairment, signing, broker security, the service base and the settings a tier connects with.
Imports only `v2x.core`."""
