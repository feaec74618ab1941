"""Object categories of the synthetic benchmark: RRSIS-D names and ids, sizes, colours, shapes.

Sizes are in pixels at the reference image size of 128 and scale linearly with the image size.
Class names and category ids are those of RRSIS-D (its 20 DIOR classes, ids 0..19), so that a
model or split builder treats the synthetic data like the real benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COLOURS",
    "CATEGORY_SPECS",
    "DEFAULT_CATEGORIES",
    "RRSISD_CATEGORY_IDS",
    "CategorySpec",
    "spoken_name",
]

#: RRSIS-D category id of each class name (ids as in the published refs files).
RRSISD_CATEGORY_IDS: dict[str, int] = {
    "Expressway-Service-area": 0,
    "Expressway-toll-station": 1,
    "airplane": 2,
    "airport": 3,
    "baseballfield": 4,
    "basketballcourt": 5,
    "bridge": 6,
    "chimney": 7,
    "dam": 8,
    "golffield": 9,
    "groundtrackfield": 10,
    "harbor": 11,
    "overpass": 12,
    "ship": 13,
    "stadium": 14,
    "storagetank": 15,
    "tenniscourt": 16,
    "trainstation": 17,
    "vehicle": 18,
    "windmill": 19,
}

#: Colour names used in expressions -> RGB. Chosen far apart so a small CNN can tell them apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 228),
    "black": (28, 28, 34),
    "grey": (128, 128, 132),
    "red": (196, 42, 36),
    "blue": (38, 78, 190),
    "green": (58, 150, 70),
    "orange": (226, 122, 36),
}


@dataclass(frozen=True)
class CategorySpec:
    """How one class is drawn.

    Attributes:
        name: RRSIS-D class name, verbatim.
        shape: drawing routine in ``wrel.data.synth.shapes``.
        length: (min, max) object length in pixels at image size 128.
        aspect: (min, max) width / length.
        colours: colour names the class is drawn in; more than one enables colour expressions.
        height: shadow length in pixels at size 128 (0: flat, no shadow).
        on_water: placed on water (a scene holding such a class always has water).
        land_anchor: which part of a water object rests on land: ``"ends"`` (bridges span
            the water) or ``"base"`` (harbours line the shore); ``""``: none.
    """

    name: str
    shape: str
    length: tuple[float, float]
    aspect: tuple[float, float]
    colours: tuple[str, ...]
    height: float = 1.0
    on_water: bool = False
    land_anchor: str = ""


# fmt: off
CATEGORY_SPECS: dict[str, CategorySpec] = {
    spec.name: spec
    for spec in [
        # Vehicles stay at least 4 px wide at size 128 (width >= 6.5 * 0.62) so that a
        # 1/4-resolution decoder still sees them; the longest are trucks.
        CategorySpec("vehicle", "car", (6.5, 11.0), (0.62, 0.7),
                     ("white", "black", "red", "blue", "grey"), 1.0),
        CategorySpec("storagetank", "tank", (7.0, 17.0), (1.0, 1.0), ("white", "grey"), 2.0),
        CategorySpec("airplane", "plane", (13.0, 22.0), (1.0, 1.0), ("white", "grey"), 1.0),
        CategorySpec("ship", "hull", (10.0, 22.0), (0.28, 0.38),
                     ("white", "grey", "red", "black"), 1.0, on_water=True),
        CategorySpec("tenniscourt", "court", (11.0, 16.0), (0.5, 0.55),
                     ("green", "blue", "red"), 0.0),
        CategorySpec("basketballcourt", "court", (11.0, 16.0), (0.55, 0.62),
                     ("orange", "blue"), 0.0),
        CategorySpec("baseballfield", "sector", (16.0, 24.0), (1.0, 1.0), ("green",), 0.0),
        CategorySpec("groundtrackfield", "track", (24.0, 34.0), (0.5, 0.6), ("red", "blue"), 0.0),
        # Windmills and chimneys are told apart mostly by their long pole shadows.
        CategorySpec("windmill", "rotor", (9.0, 13.0), (1.0, 1.0), ("white",), 9.0),
        CategorySpec("chimney", "disc", (4.0, 6.0), (1.0, 1.0), ("grey", "red"), 12.0),
        # Bridges are long enough to span a river from bank to bank.
        CategorySpec("bridge", "rect", (32.0, 50.0), (0.1, 0.14), ("grey", "white"), 1.0,
                     on_water=True, land_anchor="ends"),
        CategorySpec("harbor", "comb", (16.0, 26.0), (0.45, 0.6), ("grey", "white"), 0.5,
                     on_water=True, land_anchor="base"),
    ]
}
# fmt: on

#: Categories drawn by default: every class above.
DEFAULT_CATEGORIES: tuple[str, ...] = tuple(CATEGORY_SPECS)

_SPOKEN = {
    "storagetank": "storage tank",
    "tenniscourt": "tennis court",
    "basketballcourt": "basketball court",
    "baseballfield": "baseball field",
    "groundtrackfield": "ground track field",
}


def spoken_name(name: str) -> str:
    """Class name as written in expressions ("storagetank" -> "storage tank")."""
    return _SPOKEN.get(name, name)
