"""The vehicle tier: the fleet, each vehicle an OBU with its own MQTT identity, driving on the signal it
received; its applications, BSMs, emergency priority, V2V and misbehaving OBUs; `v2x fleet`."""
