"""The signal model the RSU, the cloud and the offline runner share: controllers and their plans
(`controller`), a scenario's plans and the SignalPlan message (`plans`), and SPaT from a controller (`spat`)."""
