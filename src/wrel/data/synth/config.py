"""``SynthConfig``: every knob of the embedded synthetic benchmark."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from wrel.data.synth.categories import AMBIGUOUS_CATEGORIES, CATEGORY_SPECS, DEFAULT_CATEGORIES
from wrel.data.synth.geometry import POSITION_MARGIN

__all__ = ["HASH_NEUTRAL", "REGIMES", "SynthConfig", "FLOOR_SIZE"]

#: Named benchmark regimes: the settings that make each one (on top of the field defaults).
#: ``rrsisd`` (the default): RRSIS-D's 20 classes with its train frequencies, the referred
#: class alone in its scene as often as DIOR's density says, RRSIS-D's expression mix.
#: ``ambiguous``: the benchmark before that calibration (12 classes, 71 % of class names
#: matching two or more objects): class names that mislead.
REGIMES: dict[str, dict[str, Any]] = {
    "rrsisd": {},
    "ambiguous": {
        "regime": "ambiguous",
        "categories": list(AMBIGUOUS_CATEGORIES),
        "scale_jitter": 1.0,
        "colour_sd": 7.0,
        # not read by its planner; pinned so that its settings hash stays put
        "ambiguity": 0.55,
        "extra_position_margin": POSITION_MARGIN,
        "styles": 1,  # plain looks, as rendered for its records
        "fill_splits": False,  # counts are images, as rendered for its records
    },
}

#: Settings added after records were made, each with the value that renders as before: left out
#: of :meth:`SynthConfig.settings_hash` (and filled into an older meta.json) at that value.
HASH_NEUTRAL: dict[str, Any] = {
    "extra_position_margin": POSITION_MARGIN,
    "styles": 1,
    "style_tail": 1.0,
    "fill_splits": False,
}

FLOOR_SIZE = 96  # min_object_pixels is given at this image size
#: Upper bounds of the sizes (a typo such as num_train=1e12 or image_size=100000 is refused
#: at once instead of running out of memory or disk hours later).
MAX_SYNTH_IMAGE_SIZE = 4096
MAX_SYNTH_IMAGES = 1_000_000  # per split
MAX_REFS_PER_IMAGE = 64
MAX_INSTANCES = 256


@dataclass
class SynthConfig:
    """Configuration of :func:`wrel.data.synth.generate_benchmark`.

    Counts are samples (refs) while ``fill_splits`` is on (the default): an image without a
    ref (its target found no room) is left out and the split goes on to its next image until
    it holds exactly that many. With ``fill_splits`` off they are images, each giving up to
    ``refs_per_image`` samples. Each ref has its own target instance, in its image's split.
    """

    # Calibrated to RRSIS-D's structure (docs/data.md): 96 px images trained at 96 px keep a
    # 2-core CPU practical; 256 or 480 work the same way (object sizes scale with the image).
    image_size: int = 96
    # About RRSIS-D's 12,181 train refs, so that 10 % accurate is ~1,200 expressions; val and
    # test large enough that a 1-point mIoU difference is not seed noise.
    num_train: int = 12000
    num_val: int = 1000
    num_test: int = 2000
    # On (since v9b): counts are samples. A split renders further images (the next image
    # indices, so its first images are those of an unfilled render) until it holds num_* refs,
    # leaving out images without one. Off (v3-v9a): counts are images, and a split loses the
    # samples of images whose target found no room (v9a: 11,939 / 994 / 1,976 from 12,000 /
    # 1,000 / 2,000 images).
    fill_splits: bool = True
    # RRSIS-D has exactly one ref per image. With two, an image whose two refs are weak and of
    # the same class gives identical inputs with different masks.
    refs_per_image: int = 1
    # Object sizes relative to the image, on top of the image-size scaling (1.0: the sizes of
    # CategorySpec at 128 px). 1.5 draws everything 1.5x longer at the same image size.
    object_scale: float = 1.5
    # Legibility floor: an object drawn with fewer pixels is grown (its class's shape kept)
    # until it covers this many; 0 turns the floor off. In pixels of a 96 px image, scaled
    # with the square of image_size / 96 (the same share of the image at every size). 80
    # keeps >= 90 % of targets at 64 or more input pixels when training at 96 px.
    min_object_pixels: int = 80
    # Up to this many unannotated distractors per scene (sheds, round roofs, trees: look-alikes
    # of the small classes, never referred to), uniform in 0..clutter; 0: none.
    clutter: int = 6
    # Per-scene lighting: brightness gain 1 +- x, colour tint +- x/3, haze up to x/2; 0: off.
    # With clutter, this makes appearance vary enough that a model trained on 10 % of the
    # images sees too few of it (docs/data.md, "Calibrated to RRSIS-D").
    illumination: float = 0.25
    min_instances: int = 3
    max_instances: int = 10
    max_per_class: int = 6  # upper bound on repeats of a class (large classes get fewer)
    # Chance that a class drawn for a scene appears once: gives the single-instance samples
    # while keeping most class names ambiguous (>= 60% of refs).
    single_prob: float = 0.25
    categories: list[str] = field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    # "rrsisd": each ref's class drawn with RRSIS-D's train frequencies and its count from the
    # class's DIOR-like density (CategorySpec.single_share / max_count), expressions in RRSIS-D's
    # mix; min/max_instances, max_per_class and single_prob then do not apply. "ambiguous": the
    # earlier planning (a few classes per scene, most repeated, any instance referred).
    regime: str = "rrsisd"
    # rrsisd: up to this many other classes share the referred object's scene.
    max_context: int = 2
    # Per-scene object scale drawn log-uniformly in [1/x, x] (scenes of different ground
    # resolution, as DIOR's 0.5-30 m); 1 turns it off.
    scale_jitter: float = 1.7
    colour_sd: float = 16.0  # per-object colour variation around its named colour (grey levels)
    # rrsisd: scale on each class's chance to occur more than once when it is referred
    # (1 - single_share); 1 keeps CategorySpec's density, lower makes class names single out
    # their object more often. Calibrated on the baselines (docs/results/calibration.md): 0.55
    # in v7 (24 % of samples ambiguous; Naive-WREL tied Only-Accurate at 30 %), 0.2 in v8b
    # (9.5 %; Naive-WREL closed too much of the 10 % gap over seeds), 0.55 again since v9a,
    # whose appearance styles give class names something to teach.
    ambiguity: float = 0.55
    # rrsisd: chance that the referred class's look-alike (CategorySpec.lookalike) joins its
    # scene, so that telling the two apart takes the samples that name the class; 0: never.
    lookalike_prob: float = 1.0
    # rrsisd: place the referred class's instances first (then the others, largest first), so
    # that a large look-alike never takes its room and the class frequencies stay RRSIS-D's;
    # False: largest first for all (v3-v5).
    target_first: bool = True
    # rrsisd: expression mix. The weight of a relation core against the others
    # (expressions.RRSISD_KIND_WEIGHTS) and the chance of adding the target's grid cell to an
    # expression that does not need it. With a look-alike in every scene relations are available
    # more often and positions needed less, so v7 moves them back towards RRSIS-D's 14 / 64 %
    # (v3-v6: 4.0 and 0.7).
    relation_weight: float = 1.0
    position_extra: float = 1.0
    # rrsisd: how far inside a 3x3 cell (share of the image side) the target's centroid must lie
    # for its cell to be added as an extra position. 0.05 (the margin every judged attribute
    # uses; v3-v7) keeps extras as clear as cores; lower also names the cell of a target nearer
    # a grid line, as RRSIS-D's annotators do. With fewer repeated classes (v8) fewer
    # expressions need a position: at 0.05 53 % name one, at 0.0375 64 % (RRSIS-D: 64.3 %).
    # v9a (ambiguity 0.55, as v7) keeps 0.05: 59.7 % name one. attributes.json marks a position
    # named inside the narrower margin ("rough_position").
    extra_position_margin: float = POSITION_MARGIN
    # Appearance styles within a class (wrel.data.synth.styles): each annotated object is drawn
    # in one of ``styles`` looks of its class (outline wobble, proportions, stripes), look k with
    # probability proportional to (k + 1) ** -style_tail. A long tail of looks is perception
    # that 1,200 masks do not cover but 12,000 do. 1: every object in its class's plain look
    # (no draw; the renders of v3-v8b); 16 since v9a.
    styles: int = 16
    style_tail: float = 1.0
    blur_sigma: float = 0.6  # optics: a light blur, in pixels at the chosen image size
    noise_std: float = 3.0  # sensor noise, in 0..255 grey levels
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value and the fix."""
        if not 32 <= self.image_size <= MAX_SYNTH_IMAGE_SIZE:
            raise ValueError(
                f"image_size={self.image_size} must be in [32, {MAX_SYNTH_IMAGE_SIZE}]"
            )
        for name in ("num_train", "num_val", "num_test"):
            if not 0 <= getattr(self, name) <= MAX_SYNTH_IMAGES:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be in [0, {MAX_SYNTH_IMAGES:,}]"
                )
        if not isinstance(self.fill_splits, bool):
            raise ValueError(f"fill_splits={self.fill_splits!r} must be true or false")
        if not 0.25 <= self.object_scale <= 4.0:
            raise ValueError(f"object_scale={self.object_scale} must be in [0.25, 4]")
        if not 0 <= self.min_object_pixels <= FLOOR_SIZE**2 // 16:
            raise ValueError(
                f"min_object_pixels={self.min_object_pixels} must be in [0, "
                f"{FLOOR_SIZE**2 // 16}] (pixels of a {FLOOR_SIZE} px image)"
            )
        if not 0 <= self.clutter <= 50:
            raise ValueError(f"clutter={self.clutter} must be in [0, 50]")
        if not 0.0 <= self.illumination <= 0.5:
            raise ValueError(f"illumination={self.illumination} must be in [0, 0.5]")
        if not 1 <= self.refs_per_image <= MAX_REFS_PER_IMAGE:
            raise ValueError(
                f"refs_per_image={self.refs_per_image} must be in [1, {MAX_REFS_PER_IMAGE}]"
            )
        if not 1 <= self.min_instances <= self.max_instances <= MAX_INSTANCES:
            raise ValueError(
                f"need 1 <= min_instances <= max_instances <= {MAX_INSTANCES}, got "
                f"{self.min_instances}, {self.max_instances}"
            )
        if not 2 <= self.max_per_class <= MAX_INSTANCES:
            raise ValueError(f"max_per_class={self.max_per_class} must be in [2, {MAX_INSTANCES}]")
        if not 0.0 <= self.single_prob <= 1.0:
            raise ValueError(f"single_prob={self.single_prob} must be in [0, 1]")
        unknown = [c for c in self.categories if c not in CATEGORY_SPECS]
        if unknown or not self.categories:
            raise ValueError(
                f"unknown or no categories {unknown}; choose from {sorted(CATEGORY_SPECS)}"
            )
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories has duplicates: {self.categories}")
        if self.regime not in REGIMES:
            raise ValueError(f"regime={self.regime!r} must be one of {sorted(REGIMES)}")
        if not 0 <= self.max_context <= 5:
            raise ValueError(f"max_context={self.max_context} must be in [0, 5]")
        if not 1.0 <= self.scale_jitter <= 2.0:
            raise ValueError(f"scale_jitter={self.scale_jitter} must be in [1, 2]")
        if not 0.0 <= self.ambiguity <= 1.0:
            raise ValueError(f"ambiguity={self.ambiguity} must be in [0, 1]")
        if not 0.0 <= self.lookalike_prob <= 1.0:
            raise ValueError(f"lookalike_prob={self.lookalike_prob} must be in [0, 1]")
        if not isinstance(self.target_first, bool):
            raise ValueError(f"target_first={self.target_first!r} must be true or false")
        if not 0.0 < self.relation_weight <= 20.0:
            raise ValueError(f"relation_weight={self.relation_weight} must be in (0, 20]")
        if not 0.0 <= self.position_extra <= 1.0:
            raise ValueError(f"position_extra={self.position_extra} must be in [0, 1]")
        if not 0.0 <= self.extra_position_margin <= POSITION_MARGIN:
            raise ValueError(
                f"extra_position_margin={self.extra_position_margin} must be in "
                f"[0, {POSITION_MARGIN}]"
            )
        if not 1 <= self.styles <= 64:
            raise ValueError(f"styles={self.styles} must be in [1, 64] (1: plain looks only)")
        if not 0.0 <= self.style_tail <= 4.0:
            raise ValueError(f"style_tail={self.style_tail} must be in [0, 4]")
        if not 0.0 <= self.colour_sd <= 40.0:
            raise ValueError(f"colour_sd={self.colour_sd} must be in [0, 40]")

    @classmethod
    def for_regime(cls, name: str, **overrides: Any) -> SynthConfig:
        """The config of a named regime (:data:`REGIMES`), with ``overrides`` on top."""
        if name not in REGIMES:
            raise ValueError(f"unknown regime {name!r}; choose from {sorted(REGIMES)}")
        return cls(**{**REGIMES[name], **overrides})

    def settings_hash(self) -> str:
        """A short hash of every generator setting (records name the data they ran on).

        A setting added after records were made (:data:`HASH_NEUTRAL`) is left out while it
        holds the value that renders as before, so those records still name their data.
        """
        settings = dataclasses.asdict(self)
        for key, neutral in HASH_NEUTRAL.items():
            if settings[key] == neutral:
                del settings[key]
        text = json.dumps(settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def object_floor(self) -> int:
        """``min_object_pixels`` at this config's image size (pixels)."""
        return round(self.min_object_pixels * (self.image_size / FLOOR_SIZE) ** 2)
