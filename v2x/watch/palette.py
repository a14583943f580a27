"""The colours the visualiser's window and the Foxglove scene share, so a vehicle or a light looks the same in both."""

from __future__ import annotations

from v2x.core import messages as m
from v2x.watch.scene import Flag

Colour = tuple[int, int, int]

LIGHT_RED: Colour = (222, 32, 32)
LIGHT_YELLOW: Colour = (250, 196, 0)
LIGHT_GREEN: Colour = (24, 186, 72)
LIGHT_DARK: Colour = (110, 110, 110)

_LIGHTS: dict[m.LightState, Colour] = {
    m.LightState.RED: LIGHT_RED,
    m.LightState.FLASHING_RED: LIGHT_RED,
    m.LightState.PERMISSIVE_GREEN: LIGHT_GREEN,
    m.LightState.PROTECTED_GREEN: LIGHT_GREEN,
    m.LightState.FLASHING_GREEN: LIGHT_GREEN,
    m.LightState.YELLOW: LIGHT_YELLOW,
    m.LightState.FLASHING_YELLOW: LIGHT_YELLOW,
}

#: speed colours, 0 .. 14+ m/s in 2 m/s steps: stopped is red, free flow green
SPEED_STEP_MPS = 2.0
SPEED_COLOURS: list[Colour] = [
    (200, 30, 30), (225, 85, 30), (240, 140, 30), (240, 190, 40),
    (200, 205, 50), (140, 195, 60), (70, 175, 70), (30, 150, 90),
]
#: state colours, in order of precedence (the first flag a vehicle has wins)
STATE_COLOURS: list[tuple[int, Colour, str]] = [
    (Flag.EMERGENCY, (210, 20, 40), "emergency vehicle"),
    (Flag.PRIORITY, (170, 40, 200), "signal priority requested"),
    (Flag.HAZARD_LIGHTS, (20, 20, 20), "hazard lights / disabled"),
    (Flag.WARNED, (255, 130, 0), "warned (hazard ahead / advisory)"),
    (Flag.BRAKING, (240, 210, 0), "hard braking"),
]
STATE_NORMAL: Colour = (70, 110, 190)
HAZARD_COLOUR: Colour = (215, 25, 25)


def light_colour(state: m.LightState) -> Colour:
    return _LIGHTS.get(state, LIGHT_DARK)


def speed_colour(speed_mps: float) -> Colour:
    return SPEED_COLOURS[min(max(int(speed_mps / SPEED_STEP_MPS), 0), len(SPEED_COLOURS) - 1)]


def state_colour(flags: int) -> Colour:
    for bit, colour, _ in STATE_COLOURS:
        if flags & bit:
            return colour
    return STATE_NORMAL
