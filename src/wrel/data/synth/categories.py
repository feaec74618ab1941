"""Object categories of the synthetic benchmark: RRSIS-D names and ids, sizes, colours, shapes.

Sizes are in pixels at the reference image size of 128 and scale linearly with the image size.
Class names and category ids are those of RRSIS-D (its 20 DIOR classes, ids 0..19), so that a
model or split builder treats the synthetic data like the real benchmark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "COLOURS",
    "AMBIGUOUS_CATEGORIES",
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
        train_refs: RRSIS-D train refs of the class (its ``refs(unc).p``, 12,181 in all): the
            ``rrsisd`` regime draws each ref's class with these weights.
        single_share: in the ``rrsisd`` regime, the chance that the referred class occurs once
            in its scene (its class name then says which object is meant).
        max_count: in the ``rrsisd`` regime, the most instances of the class in one scene.
        lookalike: the class this one is most easily taken for (``""``: none); in the
            ``rrsisd`` regime it joins the referred class's scene with chance
            ``SynthConfig.lookalike_prob``, so that the class name is what tells them apart.
    """

    name: str
    shape: str
    length: tuple[float, float]
    aspect: tuple[float, float]
    colours: tuple[str, ...]
    height: float = 1.0
    on_water: bool = False
    land_anchor: str = ""
    train_refs: int = 0
    single_share: float = 0.5
    max_count: int = 3
    lookalike: str = ""


# fmt: off
# Columns after the drawing ones: RRSIS-D train refs (measured from its refs(unc).p), the share
# of scenes where the referred class occurs once, and the most instances per scene. The last two
# follow DIOR's per-class instance density (docs/data.md): small objects (vehicles, ships, tanks,
# planes, courts, windmills) come in groups, large facilities (airports, dams, stations, golf
# fields, stadiums, service areas, toll stations) mostly alone.
CATEGORY_SPECS: dict[str, CategorySpec] = {
    spec.name: spec
    for spec in [
        # Vehicles stay at least 4 px wide at size 128 (width >= 6.5 * 0.62) so that a
        # 1/4-resolution decoder still sees them; the longest are trucks.
        CategorySpec("vehicle", "car", (6.5, 11.0), (0.62, 0.7),
                     ("white", "black", "red", "blue", "grey"), 1.0,
                     train_refs=1871, single_share=0.15, max_count=8),
        CategorySpec("storagetank", "tank", (7.0, 17.0), (1.0, 1.0), ("white", "grey"), 2.0,
                     train_refs=417, single_share=0.15, max_count=6),
        CategorySpec("airplane", "plane", (13.0, 22.0), (1.0, 1.0), ("white", "grey"), 1.0,
                     train_refs=392, single_share=0.2, max_count=5),
        CategorySpec("ship", "hull", (10.0, 22.0), (0.28, 0.38),
                     ("white", "grey", "red", "black"), 1.0, on_water=True,
                     train_refs=636, single_share=0.2, max_count=6),
        CategorySpec("tenniscourt", "court", (11.0, 16.0), (0.5, 0.55),
                     ("green", "blue", "red"), 0.0,
                     train_refs=333, single_share=0.2, max_count=5),
        CategorySpec("basketballcourt", "court", (11.0, 16.0), (0.55, 0.62),
                     ("orange", "blue"), 0.0,
                     train_refs=408, single_share=0.35, max_count=4),
        CategorySpec("baseballfield", "sector", (16.0, 24.0), (1.0, 1.0), ("green",), 0.0,
                     train_refs=855, single_share=0.45, max_count=3),
        CategorySpec("groundtrackfield", "track", (24.0, 34.0), (0.5, 0.6), ("red", "blue"), 0.0,
                     train_refs=818, single_share=0.75, max_count=2),
        # Windmills and chimneys are told apart mostly by their long pole shadows.
        CategorySpec("windmill", "rotor", (9.0, 13.0), (1.0, 1.0), ("white",), 9.0,
                     train_refs=943, single_share=0.2, max_count=5),
        CategorySpec("chimney", "disc", (4.0, 6.0), (1.0, 1.0), ("grey", "red"), 12.0,
                     train_refs=397, single_share=0.45, max_count=3),
        # Bridges are long enough to span a river from bank to bank.
        CategorySpec("bridge", "rect", (32.0, 50.0), (0.1, 0.14), ("grey", "white"), 1.0,
                     on_water=True, land_anchor="ends",
                     train_refs=907, single_share=0.7, max_count=2),
        CategorySpec("harbor", "comb", (16.0, 26.0), (0.45, 0.6), ("grey", "white"), 0.5,
                     on_water=True, land_anchor="base",
                     train_refs=142, single_share=0.35, max_count=3),
        # The eight large facilities of RRSIS-D, each drawn to look like a neighbour class:
        # overpass like a bridge on land, dam like a short thick bridge, stadium like a track,
        # train station and service area like each other, toll station like a short overpass.
        CategorySpec("overpass", "cross", (28.0, 44.0), (0.11, 0.15), ("grey", "white"), 1.5,
                     train_refs=793, single_share=0.7, max_count=2),
        CategorySpec("airport", "runway", (34.0, 46.0), (0.5, 0.65), ("grey", "white"), 0.5,
                     train_refs=629, single_share=1.0, max_count=1),
        CategorySpec("dam", "dam", (22.0, 34.0), (0.16, 0.24), ("grey", "white"), 1.0,
                     on_water=True, land_anchor="ends",
                     train_refs=592, single_share=0.95, max_count=2),
        CategorySpec("trainstation", "station", (26.0, 38.0), (0.26, 0.36),
                     ("grey", "blue", "white"), 1.5,
                     train_refs=489, single_share=0.95, max_count=2),
        CategorySpec("golffield", "golf", (28.0, 40.0), (0.6, 0.8), ("green",), 0.0,
                     train_refs=480, single_share=0.9, max_count=2),
        CategorySpec("Expressway-Service-area", "lot", (24.0, 34.0), (0.5, 0.68),
                     ("grey", "white"), 1.0,
                     train_refs=386, single_share=0.7, max_count=2),
        CategorySpec("Expressway-toll-station", "tollgate", (14.0, 22.0), (0.3, 0.42),
                     ("grey", "white", "blue"), 1.5,
                     train_refs=384, single_share=0.8, max_count=2),
        CategorySpec("stadium", "stadium", (26.0, 36.0), (0.72, 0.86), ("grey", "white"), 2.0,
                     train_refs=309, single_share=0.8, max_count=2),
    ]
}
# fmt: on

#: Each class's look-alike (the class a model trained on few samples takes it for): small objects
#: of similar outline, fields and courts of similar layout, the large facilities drawn alike.
_LOOKALIKES: dict[str, str] = {
    "storagetank": "chimney", "chimney": "storagetank",
    "airplane": "windmill", "windmill": "airplane",
    "ship": "harbor", "harbor": "ship",
    "tenniscourt": "basketballcourt", "basketballcourt": "tenniscourt",
    "baseballfield": "golffield", "golffield": "baseballfield",
    "groundtrackfield": "stadium", "stadium": "groundtrackfield",
    "bridge": "dam", "dam": "bridge",
    "overpass": "Expressway-toll-station", "Expressway-toll-station": "overpass",
    "trainstation": "Expressway-Service-area", "Expressway-Service-area": "trainstation",
    "airport": "trainstation",
}  # fmt: skip
CATEGORY_SPECS = {
    name: dataclasses.replace(spec, lookalike=_LOOKALIKES.get(name, ""))
    for name, spec in CATEGORY_SPECS.items()
}

#: Categories drawn by default: RRSIS-D's 20 classes.
DEFAULT_CATEGORIES: tuple[str, ...] = tuple(CATEGORY_SPECS)

#: The 12 classes of the ``ambiguous`` regime (the benchmark before RRSIS-D's 20 classes).
AMBIGUOUS_CATEGORIES: tuple[str, ...] = tuple(CATEGORY_SPECS)[:12]

_SPOKEN = {
    "storagetank": "storage tank",
    "tenniscourt": "tennis court",
    "basketballcourt": "basketball court",
    "baseballfield": "baseball field",
    "groundtrackfield": "ground track field",
    "trainstation": "train station",
    "golffield": "golf field",
    "Expressway-Service-area": "expressway service area",
    "Expressway-toll-station": "expressway toll station",
}


def spoken_name(name: str) -> str:
    """Class name as written in expressions ("storagetank" -> "storage tank")."""
    return _SPOKEN.get(name, name)
