"""The typed config of the whole model: one config per part (the parts own their keys)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wrel.models.backbone import BackboneConfig
from wrel.models.decoder import DecoderConfig
from wrel.models.fusion import FusionConfig
from wrel.models.rmsin.config import RmsinConfig
from wrel.models.text_encoder import TextEncoderConfig

__all__ = ["ModelConfig", "ARCHITECTURES"]

#: ``model.arch`` values: this project's network, or the paper's RMSIN (docs/model.md).
ARCHITECTURES = ("refseg", "rmsin")


@dataclass
class ModelConfig:
    """The whole model: one config per part (defaults: EfficientNet-Lite0 + MiniLM)."""

    # "refseg": backbone + fusion + decoder below (this project's network); "rmsin": the
    # paper's network, sized by ``rmsin`` (fusion / decoder unused; backbone gives only the Swin
    # weights file, pretrained and drop_path_rate), with the same text encoder.
    arch: str = "refseg"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    rmsin: RmsinConfig = field(default_factory=RmsinConfig)
    # Square network input side in px. Not a knob of its own: ``build_experiment`` fills it from
    # ``data.image_size`` (the one owner), and checkpoints save it so a loaded model is rebuilt
    # for the size it was trained at. Fixed-size timm models (Swin) are built for it; None keeps
    # timm's default size for them (other sizes still run, see backbone.timm_create_kwargs).
    input_size: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"model.arch={self.arch!r}: use one of {', '.join(ARCHITECTURES)}")

    @classmethod
    def tiny(cls) -> ModelConfig:
        """Random tiny parts for tests: builds in well under a second, forwards in ms."""
        return cls(
            backbone=BackboneConfig(name="tiny", pretrained=False),
            text=TextEncoderConfig(name="tiny", pretrained=False),
            fusion=FusionConfig(num_heads=1),
            decoder=DecoderConfig(dim=16),
        )
