"""Composition root: typed model config -> built parts -> :class:`RefSegModel`.

Registries are plain dicts from name to builder; an unknown name raises ``ValueError`` listing
the valid ones (backbone names also fall back to any timm model name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from wrel.models.backbone import (
    BackboneConfig,
    StagedBackbone,
    build_timm_backbone,
    build_tiny_backbone,
)
from wrel.models.decoder import DecoderConfig, build_decoder
from wrel.models.fusion import FusionConfig, build_fusion
from wrel.models.refseg import RefSegModel
from wrel.models.text_encoder import (
    TextEncoder,
    TextEncoderConfig,
    build_local,
    build_minilm,
    build_tiny_text_encoder,
)

__all__ = ["ModelConfig", "BACKBONES", "TEXT_ENCODERS", "build_model", "build_backbone"]

#: name -> ``builder(cfg, input_size)`` (``input_size``: the square input side, or None).
BACKBONES: dict[str, Callable[[BackboneConfig, int | None], StagedBackbone]] = {
    "efficientnet_lite0": build_timm_backbone,
    "tiny": build_tiny_backbone,
}

TEXT_ENCODERS: dict[str, Callable[[TextEncoderConfig], TextEncoder]] = {
    "minilm": build_minilm,
    "local": build_local,
    "tiny": build_tiny_text_encoder,
}


@dataclass
class ModelConfig:
    """The whole model: one config per part (defaults: EfficientNet-Lite0 + MiniLM)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # Square network input side in px. Not a knob of its own: ``build_experiment`` fills it from
    # ``data.image_size`` (the one owner), and checkpoints save it so a loaded model is rebuilt
    # for the size it was trained at. Fixed-size timm models (Swin) are built for it; None keeps
    # timm's default size for them (other sizes still run, see backbone.timm_create_kwargs).
    input_size: int | None = None

    @classmethod
    def tiny(cls) -> ModelConfig:
        """Random tiny parts for tests: builds in well under a second, forwards in ms."""
        return cls(
            backbone=BackboneConfig(name="tiny", pretrained=False),
            text=TextEncoderConfig(name="tiny", pretrained=False),
            fusion=FusionConfig(num_heads=1),
            decoder=DecoderConfig(dim=16),
        )


def build_backbone(cfg: BackboneConfig, input_size: int | None = None) -> StagedBackbone:
    """A registered backbone, or any timm model with hierarchical ``feature_info``, built for
    square inputs of side ``input_size`` (None: the model's default)."""
    if input_size is not None and (isinstance(input_size, bool) or int(input_size) < 1):
        raise ValueError(f"model input_size must be a positive int or None, got {input_size!r}")
    builder = BACKBONES.get(cfg.name)
    if builder is not None:
        return builder(cfg, input_size)
    import timm

    if timm.is_model(cfg.name):
        return build_timm_backbone(cfg, input_size)
    raise ValueError(
        f"unknown backbone {cfg.name!r}; valid names: {sorted(BACKBONES)} or any timm model "
        "with hierarchical stages (for example convnext_tiny)"
    )


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    """A registered text encoder, with ``cfg.trainable_layers`` applied."""
    builder = TEXT_ENCODERS.get(cfg.name)
    if builder is None:
        raise ValueError(
            f"unknown text encoder {cfg.name!r}; valid names: {sorted(TEXT_ENCODERS)} "
            "(use 'local' with model.text.path for any Hugging Face folder)"
        )
    encoder = builder(cfg)
    encoder.set_trainable(cfg.trainable_layers, cfg.train_embeddings)
    return encoder


def build_model(cfg: ModelConfig) -> RefSegModel:
    """Build every part from ``cfg`` and assemble the model (nothing is downloaded)."""
    backbone = build_backbone(cfg.backbone, cfg.input_size)
    backbone.freeze(cfg.backbone.frozen_stages)
    text_encoder = build_text_encoder(cfg.text)
    fusion = build_fusion(cfg.fusion, backbone.channels, text_encoder.dim)
    decoder = build_decoder(cfg.decoder, backbone.channels)
    return RefSegModel(backbone, text_encoder, fusion, decoder, config=cfg)
