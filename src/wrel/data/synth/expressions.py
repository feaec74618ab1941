"""Choose verified attribute combinations for a target and phrase them in the RRSIS-D style."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from wrel.data.synth.categories import CATEGORY_SPECS, spoken_name
from wrel.data.synth.geometry import (
    CELL_NAMES,
    EXTREMES,
    POSITION_MARGIN,
    SIZES,
    Instance,
    cell_margin,
    scale_word,
    singles_out,
)

__all__ = [
    "candidate_attributes",
    "choose_attributes",
    "describe_more",
    "phrase_expression",
    "rough_position",
    "scale_word",
]

_POSITION_PHRASES: dict[str, list[str]] = {
    "upper left": ["on the upper left", "in the upper left", "at the top left"],
    "top": ["on the top", "at the top", "in the upper middle"],
    "upper right": ["on the upper right", "in the upper right", "at the top right"],
    "left": ["on the left", "on the left side", "in the middle left"],
    "middle": ["in the middle", "in the center", "at the center"],
    "right": ["on the right", "on the right side", "in the middle right"],
    "lower left": ["on the lower left", "in the lower left", "at the bottom left"],
    "bottom": ["at the bottom", "on the bottom", "in the lower middle"],
    "lower right": ["on the lower right", "in the lower right", "at the bottom right"],
}
_SUPERLATIVES: dict[str, list[str]] = {
    "leftmost": ["leftmost"],
    "rightmost": ["rightmost"],
    "topmost": ["topmost", "uppermost"],
    "bottommost": ["bottommost", "lowest"],
    "largest": ["largest", "biggest"],
    "smallest": ["smallest", "tiniest"],
}
_FAR_SIDE = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom"}
_NEAR_WORDS = ["next to", "beside", "near", "close to"]
_COLOUR_WORDS = {"grey": "gray"}  # RRSIS-D spells it "gray"
_PAIRABLE = ("position", "colour", "next_to")  # conjunctions read naturally in any order
# Preference among the kinds that single out a target. Extremes are verifiable for most targets
# and relations for few, so rarer kinds are favoured to keep every kind frequent.
_KIND_WEIGHTS = {
    "position": 1.0, "extreme": 0.6, "size": 2.0, "colour": 1.0, "next_to": 3.0,
    "combination": 1.0,
}  # fmt: skip
#: The ``rrsisd`` regime's preference: RRSIS-D names colour in 31 % of its expressions and a
#: relation in 14 %, so colour cores are rarer and relations kept frequent (docs/data.md).
RRSISD_KIND_WEIGHTS = {
    "position": 1.5, "extreme": 0.5, "size": 0.6, "colour": 0.08, "next_to": 4.0,
    "combination": 0.25,
}  # fmt: skip


def candidate_attributes(target: Instance, instances: list[Instance]) -> list[dict[str, Any]]:
    """Every single attribute the target might be described by (not yet verified)."""
    options: list[dict[str, Any]] = [{"position": name} for name in CELL_NAMES.values()]
    options += [{"extreme": name} for name in EXTREMES] + [{"size": name} for name in SIZES]
    if len(CATEGORY_SPECS[target.category].colours) > 1:
        options.append({"colour": target.colour})
    others = sorted({o.category for o in instances if o.category != target.category})
    options += [{"next_to": name} for name in others]
    return options


def choose_attributes(
    target_index: int,
    instances: list[Instance],
    size: int,
    rng: np.random.Generator,
    kind_weights: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """Pick a verified attribute combination that singles out the target, or ``None``.

    A kind (position, extreme, size, colour, relation, combination) is drawn among those with
    at least one verified option (weighted by ``_KIND_WEIGHTS``), then one option of that kind. A target that is the
    only instance of its class may be referred to by its class alone (``{}``) as a last resort.
    """
    target = instances[target_index]
    singles = [
        a
        for a in candidate_attributes(target, instances)
        if singles_out(a, target_index, instances, size)
    ]
    pairable = [a for a in candidate_attributes(target, instances) if next(iter(a)) in _PAIRABLE]
    pairs = [
        {**a, **b}
        for a, b in itertools.combinations(pairable, 2)
        if next(iter(a)) != next(iter(b)) and singles_out({**a, **b}, target_index, instances, size)
    ]
    pairs += [{**s, "colour": target.colour} for s in singles if next(iter(s)) in ("extreme", "size")
              and len(CATEGORY_SPECS[target.category].colours) > 1]  # fmt: skip
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for option in singles:
        by_kind.setdefault(next(iter(option)), []).append(option)
    if pairs:
        by_kind["combination"] = pairs
    if not by_kind:
        alone = not any(
            o.category == target.category for i, o in enumerate(instances) if i != target_index
        )
        return {} if alone else None
    kinds = sorted(by_kind)
    weights = np.array([(kind_weights or _KIND_WEIGHTS)[k] for k in kinds])
    options = by_kind[kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]]
    return dict(options[int(rng.integers(len(options)))])


#: rrsisd regime: chance that a true attribute the core does not need is said anyway, so that
#: the mix of what expressions name matches RRSIS-D's (docs/data.md, measured by
#: ``wrel.data.expression_mix``).
EXTRA_PROBS = {"position": 0.7, "colour": 0.05, "scale": 0.45}


def describe_more(
    attributes: dict[str, Any],
    target_index: int,
    instances: list[Instance],
    size: int,
    rng: np.random.Generator,
    position_prob: float = EXTRA_PROBS["position"],
    position_margin: float = POSITION_MARGIN,
) -> dict[str, Any]:
    """Add true attributes the core does not need, as RRSIS-D's expressions do (``rrsisd``).

    The core still singles out the target; what is added is true of it (the grid cell its
    centroid lies in, its colour, its size word against its class), so it never misleads.
    ``position_prob`` is the chance of adding the grid cell (``SynthConfig.position_extra``);
    the target's centroid must lie ``position_margin`` (share of the image side) inside it
    (``SynthConfig.extra_position_margin``; below :data:`POSITION_MARGIN` the cell of a target
    near a grid line is named too, and :func:`rough_position` tells such a cell apart).
    """
    target = instances[target_index]
    out = dict(attributes)
    if "position" not in out and "extreme" not in out and rng.random() < position_prob:
        cells = [n for n in CELL_NAMES.values()
                 if cell_margin(target, n, size) >= position_margin * size]  # fmt: skip
        if cells:
            out["position"] = cells[0]
    if "colour" not in out and rng.random() < EXTRA_PROBS["colour"]:
        out["colour"] = target.colour
    word = scale_word(target.relative_size)
    if word and "size" not in out and rng.random() < EXTRA_PROBS["scale"]:
        out["scale"] = word
    return out


def rough_position(attributes: dict[str, Any], core: dict[str, Any], target: Instance,
                   size: int) -> bool:  # fmt: skip
    """Whether ``describe_more`` added a grid cell the target lies in by less than
    :data:`POSITION_MARGIN` (``core``: the attributes it was given)."""
    cell = attributes.get("position")
    if cell is None or "position" in core:
        return False
    return cell_margin(target, cell, size) < POSITION_MARGIN * size


def _pick(words: list[str], rng: np.random.Generator) -> str:
    return words[int(rng.integers(len(words)))]


def phrase_expression(
    category: str, attributes: dict[str, Any], instances: list[Instance], rng: np.random.Generator
) -> str:
    """Write an expression for ``attributes`` ("The red vehicle on the left", ...).

    Args:
        category: the target's class name.
        attributes: a verified combination from :func:`choose_attributes`.
        instances: every instance of the image (decides "the storage tank" vs "a storage tank").
        rng: draws the phrasing.
    """
    noun = spoken_name(category)
    superlative = attributes.get("extreme") or attributes.get("size")
    if set(attributes) == {"extreme"} and rng.random() < 0.4:
        side = _FAR_SIDE[attributes["extreme"]]
        far = f"on the far {side}" if side in ("left", "right") else f"at the very {side}"
        return f"The {noun} {_pick([far, f'closest to the {side}'], rng)}"
    before = [_pick(_SUPERLATIVES[superlative], rng)] if superlative else []
    if "scale" in attributes:
        before.append(str(attributes["scale"]))
    if "colour" in attributes:
        before.append(_COLOUR_WORDS.get(attributes["colour"], attributes["colour"]))
    after = []
    if "position" in attributes:
        after.append(_pick(_POSITION_PHRASES[attributes["position"]], rng))
    if "next_to" in attributes:
        other = attributes["next_to"]
        article = "the" if sum(o.category == other for o in instances) == 1 else "a"
        after.append(f"{_pick(_NEAR_WORDS, rng)} {article} {spoken_name(other)}")
    det = "The" if superlative else _pick(["The", "A"], rng)
    head = " ".join([det, *before, noun])
    if after and rng.random() < 0.25:
        return f"{head} is {' '.join(after)}"
    return " ".join([head, *after])
