"""Composition root: typed model config -> built parts -> :class:`RefSegModel`.

Registries are plain dicts from name to builder; an unknown name raises ``ValueError`` listing
the valid ones (backbone names also fall back to any timm model name).
"""

from __future__ import annotations

from collections.abc import Callable

from wrel.models.backbone import (
    BackboneConfig,
    StagedBackbone,
    build_timm_backbone,
    build_tiny_backbone,
)
from wrel.models.config import ARCHITECTURES, ModelConfig
from wrel.models.decoder import build_decoder
from wrel.models.fusion import build_fusion
from wrel.models.refseg import RefSegModel
from wrel.models.rmsin.model import build_rmsin
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
    """Build every part from ``cfg`` and assemble the model (nothing is downloaded).

    ``cfg.arch`` picks the network: ``refseg`` (default) or ``rmsin`` (the paper's RMSIN,
    :func:`wrel.models.rmsin.model.build_rmsin`; it presents the same interface and is typed
    as ``RefSegModel`` for its callers).
    """
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown model.arch {cfg.arch!r}; valid values: {list(ARCHITECTURES)}")
    if cfg.arch == "rmsin":
        return build_rmsin(cfg, build_text_encoder(cfg.text))  # type: ignore[return-value]
    backbone = build_backbone(cfg.backbone, cfg.input_size)
    backbone.freeze(cfg.backbone.frozen_stages)
    text_encoder = build_text_encoder(cfg.text)
    fusion = build_fusion(cfg.fusion, backbone.channels, text_encoder.dim)
    decoder = build_decoder(cfg.decoder, backbone.channels)
    return RefSegModel(backbone, text_encoder, fusion, decoder, config=cfg)
