"""Vectorised object shapes drawn in object-local coordinates.

Every routine takes the local coordinates ``u`` (along the object's length) and ``v`` (across
it) of the pixel centres of a patch, both ``(h, w)`` float arrays, and returns the object mask
``(h, w)`` bool and its colours ``(h, w, 3)`` float32 (meaningful inside the mask only).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SHAPES", "draw_shape"]

Array = np.ndarray
ShapeFn = Callable[[Array, Array, float, float, Array], tuple[Array, Array]]

_WHITE = np.array([240.0, 240.0, 236.0], dtype=np.float32)
_GRASS = np.array([70.0, 140.0, 64.0], dtype=np.float32)
_CLAY = np.array([176.0, 120.0, 80.0], dtype=np.float32)


def _fill(mask: Array, colour: Array) -> Array:
    rgb = np.empty((*mask.shape, 3), dtype=np.float32)
    rgb[:] = colour
    return rgb


def _rect(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    return mask, _fill(mask, colour)


def _car(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    mask, rgb = _rect(u, v, length, width, colour)
    rgb[(u > length * 0.15) & (u < length * 0.3)] *= 0.7  # darker windscreen at the front
    return mask, rgb


def _disc(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    r2 = u**2 + v**2
    mask = r2 <= (length / 2) ** 2
    rgb = _fill(mask, colour)
    rgb[r2 <= (length / 4) ** 2] *= 0.8
    return mask, rgb


def _tank(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    r = np.sqrt(u**2 + v**2)
    mask = r <= length / 2
    rgb = _fill(mask, colour)
    rgb[(r > length / 2 - max(1.0, length * 0.1)) & mask] *= 0.72  # darker rim
    return mask, rgb


def _plane(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    fuselage = (np.abs(u) <= length / 2) & (np.abs(v) <= max(1.2, length * 0.07))
    chord = length * 0.14 * (1.0 - 0.6 * np.abs(v) / (length * 0.48))
    wings = (np.abs(u - length * 0.05 + 0.25 * np.abs(v)) <= chord) & (np.abs(v) <= length * 0.48)
    tail = (np.abs(u + length * 0.4) <= length * 0.07) & (np.abs(v) <= length * 0.18)
    mask = fuselage | wings | tail
    return mask, _fill(mask, colour)


def _hull(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    bow = np.clip((length / 2 - u) / (0.3 * length), 0.0, 1.0)  # 1 along the body, 0 at the tip
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2 * np.sqrt(bow))
    rgb = _fill(mask, colour)
    rgb[(np.abs(u + length * 0.15) <= length * 0.12) & (np.abs(v) <= width * 0.25)] *= 0.75
    return mask, rgb


def _court(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    rgb = _fill(mask, colour)
    line = (np.abs(u) < 0.5) | (np.abs(np.abs(u) - (length / 2 - 1.0)) < 0.5)
    line |= np.abs(np.abs(v) - (width / 2 - 1.0)) < 0.5
    rgb[line & mask] = _WHITE
    return mask, rgb


def _sector(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    radius = length * 0.8
    x = u + radius * 0.45  # home plate sits behind the centre of the object
    r2 = x**2 + v**2
    mask = (x >= 0) & (np.abs(v) <= x) & (r2 <= radius**2)
    rgb = _fill(mask, colour)
    infield = (np.abs(x - radius * 0.3) + np.abs(v)) <= radius * 0.3
    rgb[infield & mask] = _CLAY
    return mask, rgb


def _track(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    half = (length - width) / 2
    dist = np.sqrt((np.abs(u) - np.minimum(np.abs(u), half)) ** 2 + v**2)
    mask = dist <= width / 2
    rgb = _fill(mask, colour)
    rgb[dist <= width / 2 - max(1.5, width * 0.18)] = _GRASS
    return mask, rgb


def _rotor(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    radius = length / 2
    blade = max(0.75, length * 0.07)
    mask = u**2 + v**2 <= max(1.5, length * 0.12) ** 2  # hub
    for angle in (0.0, 2.0 * np.pi / 3, 4.0 * np.pi / 3):
        along = u * np.cos(angle) + v * np.sin(angle)
        across = -u * np.sin(angle) + v * np.cos(angle)
        mask |= (along >= 0) & (along <= radius) & (np.abs(across) <= blade)
    return mask, _fill(mask, colour)


def _comb(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    base = (np.abs(u) <= length / 2) & (v >= -width / 2) & (v <= -width / 2 + width * 0.3)
    pitch = length / 4
    finger = np.abs(((u + length / 2) % pitch) - pitch / 2) <= max(1.0, pitch * 0.2)
    piers = finger & (np.abs(u) <= length / 2) & (v >= -width / 2) & (v <= width / 2)
    mask = base | piers
    return mask, _fill(mask, colour)


def _cross(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Overpass: a road deck crossing a second road at an angle, both drawn as the object."""
    deck = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    along = u * 0.5 + v * 0.866  # the crossing road, 60 degrees to the deck
    across = -u * 0.866 + v * 0.5
    crossing = (np.abs(along) <= length * 0.3) & (np.abs(across) <= width * 0.4)
    mask = deck | crossing
    rgb = _fill(mask, colour)
    rgb[crossing & ~deck] *= 0.85
    rgb[deck & (np.abs(v) < max(0.4, width * 0.06))] = _WHITE  # centre line
    return mask, rgb


def _runway(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Airport: a long runway, a parallel taxiway and an apron with a terminal beside it."""
    runway = (np.abs(u) <= length / 2) & (np.abs(v - width * 0.35) <= max(1.0, width * 0.12))
    taxiway = (np.abs(u) <= length * 0.4) & (np.abs(v - width * 0.05) <= max(0.6, width * 0.05))
    apron = (np.abs(u + length * 0.05) <= length * 0.22) & (v >= -width / 2) & (v <= 0.0)
    mask = runway | taxiway | apron
    rgb = _fill(mask, colour)
    terminal = (
        (np.abs(u + length * 0.05) <= length * 0.16) & (v >= -width / 2) & (v <= -width * 0.3)
    )
    rgb[terminal] *= 0.7
    rgb[runway & (np.abs(v - width * 0.35) < max(0.4, width * 0.02))] = _WHITE
    return mask, rgb


def _dam(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Dam: a thick wall across water, wider at its base, with a light crest."""
    taper = 0.75 + 0.25 * np.clip(v / width + 0.5, 0.0, 1.0)  # wider on the downstream side
    mask = (np.abs(u) <= length / 2 * taper) & (np.abs(v) <= width / 2)
    rgb = _fill(mask, colour)
    rgb[mask & (v < -width * 0.25)] *= 1.12
    return mask, rgb


def _station(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Train station: long platform roofs with dark track gaps between them."""
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    rgb = _fill(mask, colour)
    pitch = max(2.0, width / 4)
    tracks = np.abs(((v + width / 2) % pitch) - pitch / 2) <= max(0.5, pitch * 0.18)
    rgb[mask & tracks] *= 0.45
    return mask, rgb


def _lot(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Service area: a parking lot with rows of parked cars and a building at one end."""
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    rgb = _fill(mask, colour * 0.8)
    pitch = max(2.5, width / 4)
    rows = np.abs(((v + width / 2) % pitch) - pitch / 2) <= max(0.5, pitch * 0.2)
    cars = rows & (np.abs(((u + length / 2) % 2.0) - 1.0) <= 0.5) & (u > -length * 0.2)
    rgb[mask & cars] = _WHITE
    rgb[mask & (u <= -length * 0.25)] = colour * 1.1  # the building
    return mask, rgb


def _tollgate(
    u: Array, v: Array, length: float, width: float, colour: Array
) -> tuple[Array, Array]:
    """Toll station: a canopy across a road with booths in a row under it."""
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    rgb = _fill(mask, colour)
    pitch = max(2.0, length / 6)
    booths = np.abs(((u + length / 2) % pitch) - pitch / 2) <= max(0.4, pitch * 0.15)
    rgb[mask & booths] *= 0.55
    return mask, rgb


def _stadium(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Stadium: an oval of stands around a green pitch (like a track, with a grey ring)."""
    r = (u / (length / 2)) ** 2 + (v / (width / 2)) ** 2
    mask = r <= 1.0
    rgb = _fill(mask, colour)
    rgb[r <= 0.55] = _GRASS
    return mask, rgb


def _golf(u: Array, v: Array, length: float, width: float, colour: Array) -> tuple[Array, Array]:
    """Golf field: an irregular green with lighter fairways and sand bunkers."""
    angle = np.arctan2(v, u)
    wobble = 1.0 + 0.18 * np.sin(3.0 * angle + 1.3) + 0.1 * np.sin(5.0 * angle)
    r = np.sqrt((u / (length / 2)) ** 2 + (v / (width / 2)) ** 2)
    mask = r <= wobble
    rgb = _fill(mask, colour)
    rgb[mask & (np.abs(v - 0.2 * u) <= width * 0.12)] *= 1.25  # fairway
    bunker = ((u - length * 0.25) ** 2 + (v + width * 0.2) ** 2) <= (width * 0.1) ** 2
    rgb[mask & bunker] = np.array([214.0, 200.0, 150.0], dtype=np.float32)
    return mask, rgb


SHAPES: dict[str, ShapeFn] = {
    "rect": _rect,
    "car": _car,
    "disc": _disc,
    "tank": _tank,
    "plane": _plane,
    "hull": _hull,
    "court": _court,
    "sector": _sector,
    "track": _track,
    "rotor": _rotor,
    "comb": _comb,
    "cross": _cross,
    "runway": _runway,
    "dam": _dam,
    "station": _station,
    "lot": _lot,
    "tollgate": _tollgate,
    "stadium": _stadium,
    "golf": _golf,
}


def draw_shape(
    shape: str, u: Array, v: Array, length: float, width: float, colour: Array
) -> tuple[Array, Array]:
    """Draw ``shape`` on local coordinates; returns mask ``(h, w)`` and colours ``(h, w, 3)``."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {sorted(SHAPES)}")
    return SHAPES[shape](u, v, length, width, colour)
