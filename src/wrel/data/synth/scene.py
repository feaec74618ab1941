"""Scene planning, non-overlapping object placement and rendering of one synthetic image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wrel.data.synth.categories import CATEGORY_SPECS, COLOURS, CategorySpec
from wrel.data.synth.shapes import draw_shape
from wrel.data.synth.styles import PLAIN, Style, class_style, draw_style

__all__ = [
    "CLUTTER_SPECS",
    "PlacedObject",
    "Scene",
    "place_clutter",
    "plan_categories",
    "plan_referred_scene",
]

Array = np.ndarray
_REFERENCE_SIZE = 128.0  # sizes in CategorySpec are pixels at this image size
_NEAR_PROB = 0.5  # chance that an object is placed right beside another category's object
_MAX_TRIES = 25  # placement attempts per object before it is dropped


@dataclass
class PlacedObject:
    """One object: its mask and colours on a patch whose top-left pixel is ``(y0, x0)``."""

    category: str
    colour: str
    y0: int
    x0: int
    mask: Array  # (h, w) bool
    rgb: Array  # (h, w, 3) float32
    height: float  # shadow length in pixels
    # Drawn length over the class's mid length at the scene's base scale (after the per-scene
    # scale factor and the legibility floor): what "tiny" / "huge" describe.
    relative_size: float = 1.0
    style: int = 0  # index of the class's appearance style (wrel.data.synth.styles); 0: plain

    def full_mask(self, size: int) -> Array:
        """The object's mask on the whole image, ``(S, S)`` bool."""
        out = np.zeros((size, size), dtype=bool)
        h, w = self.mask.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.mask
        return out


@dataclass
class Scene:
    """A rendered image ``(S, S, 3)`` uint8 and its objects (masks never overlap)."""

    image: Array
    objects: list[PlacedObject]
    # The class the scene's ref is about (``rrsisd`` regime); None: any instance may be referred.
    target_category: str | None = None


def plan_categories(
    categories: list[str],
    min_instances: int,
    max_instances: int,
    max_per_class: int,
    single_prob: float,
    rng: np.random.Generator,
    object_scale: float = 1.0,
) -> list[str]:
    """Choose the class of every object of a scene: a few classes, most of them repeated.

    ``object_scale`` (objects drawn that much longer) lowers how many of a class fit.

    Returns:
        Class names, largest objects first (they are the hardest to place).
    """
    num_classes = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    chosen = rng.choice(categories, size=min(num_classes, len(categories)), replace=False)
    plan: list[str] = []
    for name in chosen:
        longest = CATEGORY_SPECS[name].length[1] * object_scale
        cap = int(np.clip(80.0 / longest, 2, max_per_class))
        count = 1 if rng.random() < single_prob else int(rng.integers(2, cap + 1))
        plan += [str(name)] * count
    while len(plan) < min_instances:
        plan.append(str(rng.choice(categories)))
    plan = plan[:max_instances]
    return sorted(plan, key=lambda n: -CATEGORY_SPECS[n].length[1])


def plan_referred_scene(
    categories: list[str],
    weights: Array,
    max_context: int,
    rng: np.random.Generator,
    ambiguity: float = 1.0,
    lookalike_prob: float = 0.0,
) -> tuple[list[str], str]:
    """Plan a scene around the class of its ref (the ``rrsisd`` regime).

    The referred class is drawn with ``weights`` (RRSIS-D's train frequencies), its count from the
    class's ``single_share`` / ``max_count`` (the chance of more than one scaled by
    ``ambiguity``); with chance ``lookalike_prob`` the class's look-alike joins the scene; then
    up to ``max_context`` other classes join it with one or two instances each (what relations
    refer to).

    Returns:
        (class names, largest objects first; the referred class)
    """
    target = str(categories[int(rng.choice(len(categories), p=weights))])
    spec = CATEGORY_SPECS[target]
    single = spec.max_count == 1 or rng.random() < 1.0 - (1.0 - spec.single_share) * ambiguity
    count = 1 if single else int(rng.integers(2, spec.max_count + 1))
    plan = [target] * count
    others = [c for c in categories if c != target]
    # no draw when off, so that lookalike_prob=0 renders what the generator did before it
    if lookalike_prob > 0 and spec.lookalike in others and rng.random() < lookalike_prob:
        cap = min(2, CATEGORY_SPECS[spec.lookalike].max_count)
        plan += [spec.lookalike] * int(rng.integers(1, cap + 1))
        others.remove(spec.lookalike)
    num_context = int(rng.integers(0, max_context + 1)) if others else 0
    if num_context:
        w = np.array([weights[categories.index(c)] for c in others], dtype=np.float64)
        picked = rng.choice(len(others), size=min(num_context, len(others)), replace=False,
                            p=w / w.sum())  # fmt: skip
        for k in picked:
            cap = min(2, CATEGORY_SPECS[others[int(k)]].max_count)
            plan += [others[int(k)]] * int(rng.integers(1, cap + 1))
    return sorted(plan, key=lambda n: -CATEGORY_SPECS[n].length[1]), target


def _patch(
    spec: CategorySpec,
    centre: Array,
    length: float,
    width: float,
    angle: float,
    rgb: Array,
    style: Style = PLAIN,
) -> tuple[int, int, Array, Array]:
    radius = int(np.ceil(0.5 * np.hypot(length, width))) + 1
    if style.warp > 0:  # the wobble can push the outline out by up to ``warp`` of the radius
        radius += int(np.ceil(style.warp * radius))
    y0, x0 = int(np.floor(centre[1])) - radius, int(np.floor(centre[0])) - radius
    yy, xx = np.mgrid[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].astype(np.float32)
    dx, dy = xx + 0.5 - centre[0], yy + 0.5 - centre[1]  # pixel centres relative to the object
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    wu, wv = style.warp_coords(u, v)  # u, v themselves when the style does not wobble
    mask, colours = draw_shape(spec.shape, wu, wv, length, width, rgb)
    style.paint(colours, mask, u, v, length)
    return y0, x0, mask, colours


def _crop_patch(
    y0: int, x0: int, mask: Array, colours: Array, size: int
) -> tuple[int, int, Array, Array]:
    """The part of a patch at ``(y0, x0)`` that lies inside a ``size`` x ``size`` image."""
    top, left = max(0, -y0), max(0, -x0)
    bottom = min(mask.shape[0], size - y0)
    right = min(mask.shape[1], size - x0)
    return y0 + top, x0 + left, mask[top:bottom, left:right], colours[top:bottom, left:right]


def _candidate_centre(
    spec: CategorySpec,
    radius: float,
    placed: list[PlacedObject],
    water: Array,
    rng: np.random.Generator,
) -> Array:
    size = water.shape[0]
    others = [p for p in placed if p.category != spec.name]
    if others and rng.random() < _NEAR_PROB:
        anchor = others[int(rng.integers(len(others)))]
        h, w = anchor.mask.shape
        anchor_centre = np.array([anchor.x0 + w / 2, anchor.y0 + h / 2])
        direction = rng.uniform(0.0, 2.0 * np.pi)
        dist = radius + max(h, w) / 2 * rng.uniform(0.6, 0.9) + rng.uniform(0.5, 2.0)
        return anchor_centre + dist * np.array([np.cos(direction), np.sin(direction)])
    if spec.on_water and water.any():
        ys, xs = np.nonzero(water)
        k = int(rng.integers(len(ys)))
        return np.array([xs[k] + 0.5, ys[k] + 0.5])
    return rng.uniform(radius + 1, size - radius - 1, size=2)


def _anchored(
    spec: CategorySpec,
    centre: Array,
    length: float,
    width: float,
    angle: float,
    water: Array,
    strict: bool,
) -> bool:
    """Whether a water object rests on land as ``spec.land_anchor`` asks.

    Bridges need both ends on land (one when not ``strict``); harbours need their base on land
    (any placement when not ``strict``).
    """
    size = water.shape[0]
    along = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-np.sin(angle), np.cos(angle)])
    if spec.land_anchor == "ends":
        points = np.stack([centre - 0.5 * length * along, centre + 0.5 * length * along])
    else:
        points = (centre - (0.5 * width + 1.0) * across)[None]
    points = np.clip(points.astype(int), 0, size - 1)
    on_land = ~water[points[:, 1], points[:, 0]]
    return bool(on_land.all() if strict else (on_land.any() or spec.land_anchor == "base"))


def _legible(
    spec: CategorySpec,
    length: float,
    width: float,
    angle: float,
    rgb: Array,
    min_pixels: int,
    style: Style = PLAIN,
) -> tuple[float, float]:
    """Grow ``length`` and ``width`` together until the drawn mask covers ``min_pixels``."""
    for _ in range(4):  # area grows with the square of the factor: converges in 1-2 rounds
        radius = np.hypot(length, width)
        centre = np.array([radius, radius])
        _, _, mask, _ = _patch(spec, centre, length, width, angle, rgb, style)
        count = int(mask.sum())
        if count >= min_pixels:
            break
        factor = 1.03 * float(np.sqrt(min_pixels / max(count, 1)))
        length, width = length * factor, width * factor
    return length, width


#: Unannotated distractors ("clutter"): sheds and roofs, round roofs, tree crowns. They are
#: never referred to and never instances, but look like the small target classes (a grey shed
#: like a vehicle, a round grey roof like a storage tank), so telling the classes apart has to be
#: learnt from data rather than from shape alone.
CLUTTER_SPECS: tuple[CategorySpec, ...] = (
    CategorySpec("shed", "rect", (6.0, 16.0), (0.5, 0.9), ("roof_grey", "roof_brown", "roof_red"),
                 1.5),
    CategorySpec("round_roof", "disc", (6.0, 14.0), (1.0, 1.0), ("roof_grey", "roof_light"), 1.5),
    CategorySpec("tree", "disc", (4.0, 10.0), (1.0, 1.0), ("tree_green",), 2.0),
)  # fmt: skip

_CLUTTER_COLOURS: dict[str, tuple[int, int, int]] = {
    "roof_grey": (142, 140, 138),
    "roof_light": (196, 194, 188),
    "roof_brown": (140, 100, 70),
    "roof_red": (150, 64, 52),
    "tree_green": (46, 88, 44),
}


def place_clutter(
    count: int,
    scale: float,
    placed: list[PlacedObject],
    occupied: Array,
    water: Array,
    rng: np.random.Generator,
) -> list[PlacedObject]:
    """Place up to ``count`` distractors in the free land of a scene (after the instances)."""
    out: list[PlacedObject] = []
    for _ in range(count):
        spec = CLUTTER_SPECS[int(rng.integers(len(CLUTTER_SPECS)))]
        obj = _place(spec, scale, placed + out, occupied, water, rng, palette=_CLUTTER_COLOURS)
        if obj is not None:
            out.append(obj)
    return out


def _place(
    spec: CategorySpec,
    scale: float,
    placed: list[PlacedObject],
    occupied: Array,
    water: Array,
    rng: np.random.Generator,
    min_pixels: int = 0,
    palette: dict[str, tuple[int, int, int]] = COLOURS,
    colour_sd: float = 7.0,
    base_scale: float | None = None,
    styles: int = 1,
    style_tail: float = 1.0,
) -> PlacedObject | None:
    """Place one object of ``spec`` drawn ``scale`` times its class size (None if no room).

    ``colour_sd`` is the per-object colour variation (grey levels); ``base_scale`` the scene's
    scale before any per-scene factor, against which ``relative_size`` is measured; ``styles``
    > 1 draws the object in one of its class's appearance styles (``style_tail``: the Zipf
    exponent of their frequencies; wrel.data.synth.styles).
    """
    size = occupied.shape[0]
    length = rng.uniform(*spec.length) * scale
    width = length * rng.uniform(*spec.aspect)
    angle = rng.uniform(0.0, np.pi)
    colour = str(rng.choice(spec.colours))
    rgb = np.asarray(palette[colour], dtype=np.float32)
    rgb = rgb + rng.normal(0, colour_sd, 3).astype(np.float32)
    style_index = draw_style(rng, styles, style_tail)  # no draw when styles is 1
    style = class_style(spec.name, style_index)
    width *= style.aspect
    if min_pixels > 0:
        length, width = _legible(spec, length, width, angle, rgb, min_pixels, style)
    radius = 0.5 * np.hypot(length, width) + 1
    if style.warp > 0:  # the outline's wobble reaches out by up to ``warp`` of the radius
        radius *= 1.0 + style.warp
    if radius > 0.45 * size:  # larger than the image allows: shrink to fit (shape kept)
        shrink = 0.45 * size / radius
        length, width, radius = length * shrink, width * shrink, radius * shrink
    relative = length / (0.5 * (spec.length[0] + spec.length[1]) * (base_scale or scale))
    for attempt in range(_MAX_TRIES):
        centre = _candidate_centre(spec, radius, placed, water, rng)
        if not (radius + 1 <= centre.min() and centre.max() <= size - radius - 1):
            continue
        on_water = bool(water[int(centre[1]), int(centre[0])])
        if on_water != (spec.on_water and water.any()):
            continue
        strict = attempt < _MAX_TRIES // 2
        if spec.land_anchor and not _anchored(spec, centre, length, width, angle, water, strict):
            angle = rng.uniform(0.0, np.pi)
            continue
        y0, x0, mask, colours = _patch(spec, centre, length, width, angle, rgb, style)
        # a wobbled patch's margin (never its mask) may leave the image; else this keeps it all
        y0, x0, mask, colours = _crop_patch(y0, x0, mask, colours, size)
        ys, xs = np.nonzero(mask)
        if len(ys) < max(4.0, 12.0 * scale**2):  # too small to see: try another draw
            continue
        box = occupied[y0 + ys.min() - 1 : y0 + ys.max() + 2, x0 + xs.min() - 1 : x0 + xs.max() + 2]
        if box.any():
            continue
        occupied[y0 + ys.min() : y0 + ys.max() + 1, x0 + xs.min() : x0 + xs.max() + 1] = True
        return PlacedObject(
            spec.name, colour, y0, x0, mask, colours, spec.height * scale,
            round(float(relative), 4), style_index,
        )  # fmt: skip
    return None
