"""Roadside tier: one RSU per intersection, running its signal controller and radio."""
