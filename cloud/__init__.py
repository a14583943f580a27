"""Cloud tier: the cloud-control service (area picture, signal plans, hazards, SPaT relay)."""
