"""Render one image of the benchmark with its instances and verified referring expressions."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from wrel.data.synth.categories import CATEGORY_SPECS
from wrel.data.synth.config import SynthConfig
from wrel.data.synth.expressions import (
    RRSISD_KIND_WEIGHTS,
    choose_attributes,
    describe_more,
    phrase_expression,
    rough_position,
)
from wrel.data.synth.geometry import Instance
from wrel.data.synth.render import SceneParams, render_scene

__all__ = ["ImageRecord", "build_image", "encode_png", "image_rng", "scene_params"]

_PNG_COMPRESS_LEVEL = 6  # fixed so that the same pixels always give the same bytes


@dataclass
class ImageRecord:
    """One rendered image: PNG bytes, its instances (RLE masks) and its refs (target indices)."""

    png: bytes
    instances: list[dict[str, Any]]  # category, colour, rle, bbox, area
    refs: list[dict[str, Any]]  # target, attributes, expression, num_same_class


def image_rng(seed: int, split_index: int, index: int) -> np.random.Generator:
    """The generator of one image, derived from the master seed (stable across worker counts)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index, index)))


def encode_png(image: np.ndarray) -> bytes:
    """Lossless, reproducible PNG bytes of an ``(H, W, 3)`` uint8 image (no timestamps)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _choose_refs(
    instances: list[Instance],
    config: SynthConfig,
    rng: np.random.Generator,
    target_category: str | None = None,
) -> list[dict[str, Any]]:
    """Refs of up to ``config.refs_per_image`` targets; with ``target_category`` (the ``rrsisd``
    regime) the targets are that class's instances first, and expressions name RRSIS-D's extra
    attributes (mix set by ``config.relation_weight``, ``position_extra`` and
    ``extra_position_margin``)."""
    size, num_refs = config.image_size, config.refs_per_image
    refs = []
    order = rng.permutation(len(instances))
    if target_category is not None:
        order = np.concatenate([
            [i for i in order if instances[i].category == target_category],
            [i for i in order if instances[i].category != target_category],
        ]).astype(int)  # fmt: skip
    weights = None
    if target_category is not None:
        weights = {**RRSISD_KIND_WEIGHTS, "next_to": config.relation_weight}
    for target in order:
        attributes = choose_attributes(int(target), instances, size, rng, weights)
        if attributes is None:
            continue
        rough = False
        if target_category is not None:
            core = attributes
            attributes = describe_more(
                attributes, int(target), instances, size, rng, config.position_extra,
                config.extra_position_margin,
            )  # fmt: skip
            rough = rough_position(attributes, core, instances[target], size)
        category = instances[target].category
        refs.append({
            "target": int(target),
            "attributes": attributes,
            "expression": phrase_expression(category, attributes, instances, rng),
            "num_same_class": sum(o.category == category for o in instances),
            **({"rough_position": True} if rough else {}),
        })  # fmt: skip
        if len(refs) == num_refs:
            break
    return sorted(refs, key=lambda r: r["target"])


def scene_params(config: SynthConfig) -> SceneParams:
    """The scene keys of a generator config."""
    return SceneParams(
        min_instances=config.min_instances,
        max_instances=config.max_instances,
        max_per_class=config.max_per_class,
        single_prob=config.single_prob,
        blur_sigma=config.blur_sigma,
        noise_std=config.noise_std,
        object_scale=config.object_scale,
        min_object_pixels=config.object_floor(),
        clutter=config.clutter,
        illumination=config.illumination,
        target_weights=(
            tuple(float(CATEGORY_SPECS[c].train_refs) for c in config.categories)
            if config.regime == "rrsisd" else None
        ),
        max_context=config.max_context,
        scale_jitter=config.scale_jitter,
        colour_sd=config.colour_sd,
        ambiguity=config.ambiguity,
        lookalike_prob=config.lookalike_prob,
        target_first=config.target_first,
        styles=config.styles,
        style_tail=config.style_tail,
    )  # fmt: skip


def build_image(config: SynthConfig, split_index: int, index: int) -> ImageRecord:
    """Render image ``index`` of split ``split_index`` (0 train, 1 val, 2 test)."""
    rng = image_rng(config.seed, split_index, index)
    size = config.image_size
    scene = render_scene(size, config.categories, rng, scene_params(config))
    records, geometry = [], []
    for obj in scene.objects:
        full = obj.full_mask(size)
        geometry.append(Instance.from_mask(obj.category, obj.colour, full, obj.relative_size))
        rle = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
        records.append({
            "category": obj.category,
            "colour": obj.colour,
            "rle": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "bbox": list(geometry[-1].bbox),
            "area": geometry[-1].area,
        })  # fmt: skip
        if config.regime == "rrsisd":  # what its size word is measured against
            records[-1]["relative_size"] = obj.relative_size
        if config.styles > 1:  # which look of its class (absent: plain, as before styles)
            records[-1]["style"] = obj.style
    refs = _choose_refs(geometry, config, rng, scene.target_category)
    return ImageRecord(png=encode_png(scene.image), instances=records, refs=refs)
