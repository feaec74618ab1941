"""Compose a scene: background, cast shadows, objects, optical blur and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wrel.data.synth.background import render_background
from wrel.data.synth.categories import CATEGORY_SPECS
from wrel.data.synth.scene import (
    CLUTTER_SPECS,
    PlacedObject,
    Scene,
    _place,
    place_clutter,
    plan_categories,
    plan_referred_scene,
)

__all__ = ["SceneParams", "compose_scene", "gaussian_blur", "render_scene"]

Array = np.ndarray
_SHADOW_FACTOR = 0.55  # brightness left in a shadow
_POLE_SHAPES = ("rotor", "disc")  # tall thin objects cast a long pole shadow
_HAZE_GREY = 190.0
_SHAPE_OF = {spec.name: spec.shape for spec in (*CATEGORY_SPECS.values(), *CLUTTER_SPECS)}


def gaussian_blur(image: Array, sigma: float) -> Array:
    """Separable Gaussian blur of ``(H, W, C)`` float32 (edges replicated)."""
    if sigma <= 0:
        return image
    radius = max(1, int(np.ceil(2.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    h, w = image.shape[:2]
    for axis, n in ((0, h), (1, w)):
        padded = np.pad(
            image, [(radius, radius) if a == axis else (0, 0) for a in range(3)], "edge"
        )
        out = np.zeros_like(image)
        for k, tap in enumerate(taps):
            out += tap * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
        image = out
    return image


def _paste(target: Array, mask: Array, y0: int, x0: int) -> None:
    """OR ``mask`` into ``target`` at ``(y0, x0)``, clipping at the image border."""
    h, w = mask.shape
    size_y, size_x = target.shape
    ty0, tx0, ty1, tx1 = max(0, y0), max(0, x0), min(size_y, y0 + h), min(size_x, x0 + w)
    if ty0 < ty1 and tx0 < tx1:
        target[ty0:ty1, tx0:tx1] |= mask[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]


def _shadows(objects: list[PlacedObject], size: int, sun: float) -> Array:
    """Union of cast shadows ``(S, S)`` bool for a sun azimuth ``sun`` (radians)."""
    shadow = np.zeros((size, size), dtype=bool)
    direction = np.array([np.cos(sun), np.sin(sun)])
    for obj in objects:
        if obj.height <= 0:
            continue
        shift = np.rint(direction * max(1.0, obj.height)).astype(int)
        if _SHAPE_OF[obj.category] in _POLE_SHAPES:
            h, w = obj.mask.shape
            steps = np.linspace(0.0, 1.0, int(obj.height) + 2)
            pole_x = np.rint(obj.x0 + w / 2 + steps * shift[0]).astype(int)
            pole_y = np.rint(obj.y0 + h / 2 + steps * shift[1]).astype(int)
            inside = (pole_x >= 0) & (pole_x < size) & (pole_y >= 0) & (pole_y < size)
            shadow[pole_y[inside], pole_x[inside]] = True
        _paste(shadow, obj.mask, obj.y0 + shift[1], obj.x0 + shift[0])
    return shadow


def compose_scene(
    background: Array,
    objects: list[PlacedObject],
    rng: np.random.Generator,
    *,
    blur_sigma: float,
    noise_std: float,
    illumination: float = 0.0,
) -> Array:
    """Draw shadows and objects on ``background`` ``(S, S, 3)``; returns uint8 ``(S, S, 3)``.

    ``illumination`` > 0 varies the scene's lighting: a brightness gain in ``1 +- x``, a colour
    tint of ``+- x / 3`` per channel and a haze that blends up to ``x / 2`` of a light grey in.
    """
    size = background.shape[0]
    image = background.copy()
    image[_shadows(objects, size, rng.uniform(0.0, 2.0 * np.pi))] *= _SHADOW_FACTOR
    for obj in objects:
        h, w = obj.mask.shape
        region = image[obj.y0 : obj.y0 + h, obj.x0 : obj.x0 + w]
        region[obj.mask] = obj.rgb[obj.mask]
    if illumination > 0:
        gain = 1.0 + rng.uniform(-illumination, illumination)
        tint = 1.0 + rng.uniform(-illumination / 3, illumination / 3, size=3)
        haze = rng.uniform(0.0, illumination / 2)
        image = image * (gain * tint).astype(np.float32)
        image = (1.0 - haze) * image + haze * np.float32(_HAZE_GREY)
    image = gaussian_blur(image, blur_sigma)
    image += rng.normal(0.0, noise_std, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SceneParams:
    """How one scene is planned and rendered (``wrel.data.synth.generate`` fills it from
    ``SynthConfig``; ``min_object_pixels`` is ``SynthConfig.object_floor()`` there)."""

    min_instances: int
    max_instances: int
    max_per_class: int
    single_prob: float
    blur_sigma: float
    noise_std: float
    object_scale: float = 1.0
    min_object_pixels: int = 0
    clutter: int = 0
    illumination: float = 0.0
    # ``rrsisd`` regime (None: the ``ambiguous`` planning): the referred class's weights, one per
    # entry of the categories, and how many other classes may join its scene.
    target_weights: tuple[float, ...] | None = None
    max_context: int = 2
    # Per-scene scale factor drawn log-uniformly in [1/x, x] (ground sampling distance varies
    # across scenes); 1: off.
    scale_jitter: float = 1.0
    colour_sd: float = 7.0  # per-object colour variation, grey levels
    ambiguity: float = 1.0  # rrsisd: scale on the referred class's chance of repeats
    lookalike_prob: float = 0.0  # rrsisd: chance that the referred class's look-alike joins
    target_first: bool = False  # rrsisd: place the referred class before the larger others
    styles: int = 1  # appearance styles per class (wrel.data.synth.styles); 1: plain only
    style_tail: float = 1.0  # Zipf exponent of the styles' frequencies


def render_scene(
    size: int, categories: list[str], rng: np.random.Generator, params: SceneParams
) -> Scene:
    """Plan, place and render one scene (every random draw comes from ``rng``).

    Objects are drawn ``params.object_scale`` times their class's size at this image size and
    grown to at least ``params.min_object_pixels`` pixels; then up to ``params.clutter``
    unannotated distractors (sheds, round roofs, trees) fill free land, and
    ``params.illumination`` varies the lighting.
    """
    p = params
    target: str | None = None
    if p.target_weights is not None:
        weights = np.asarray(p.target_weights, dtype=np.float64)
        plan, target = plan_referred_scene(
            categories, weights / weights.sum(), p.max_context, rng, p.ambiguity,
            p.lookalike_prob,
        )  # fmt: skip
    else:
        plan = plan_categories(
            categories, p.min_instances, p.max_instances, p.max_per_class, p.single_prob, rng,
            p.object_scale,
        )  # fmt: skip
    water = any(CATEGORY_SPECS[n].on_water for n in plan) or rng.random() < 0.2
    background, water_mask = render_background(size, rng, water=water)
    occupied = np.zeros((size, size), dtype=bool)
    objects: list[PlacedObject] = []
    base = size / 128.0 * p.object_scale
    jitter = np.log(p.scale_jitter)
    scale = base * float(np.exp(rng.uniform(-jitter, jitter))) if p.scale_jitter > 1 else base
    if p.target_first and target is not None:  # the referred class gets room before the rest
        plan = [n for n in plan if n == target] + [n for n in plan if n != target]
    for name in plan:
        spec = CATEGORY_SPECS[name]
        obj = _place(
            spec, scale, objects, occupied, water_mask, rng, p.min_object_pixels,
            colour_sd=p.colour_sd, base_scale=base, styles=p.styles, style_tail=p.style_tail,
        )  # fmt: skip
        if obj is not None:
            objects.append(obj)
    extra = place_clutter(
        int(rng.integers(0, p.clutter + 1)) if p.clutter else 0,
        scale, objects, occupied, water_mask, rng,
    )  # fmt: skip
    image = compose_scene(
        background, objects + extra, rng, blur_sigma=p.blur_sigma, noise_std=p.noise_std,
        illumination=p.illumination,
    )  # fmt: skip
    return Scene(image=image, objects=objects, target_category=target)
