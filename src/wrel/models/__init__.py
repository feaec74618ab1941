"""wrel.models: the referring segmentation model (backbone, text encoder, fusion, decoder).

``build_model(ModelConfig())`` builds EfficientNet-Lite0 + MiniLM with local pretrained
weights; ``build_model(ModelConfig.tiny())`` builds a tiny random model for tests.
"""

from wrel.models.backbone import BackboneConfig, StagedBackbone
from wrel.models.build import BACKBONES, TEXT_ENCODERS, ModelConfig, build_model
from wrel.models.decoder import DecoderConfig
from wrel.models.fusion import FusionConfig
from wrel.models.refseg import RefSegModel, RefSegOutput
from wrel.models.text_encoder import TextEncoder, TextEncoderConfig

__all__ = [
    "BACKBONES",
    "TEXT_ENCODERS",
    "BackboneConfig",
    "DecoderConfig",
    "FusionConfig",
    "ModelConfig",
    "RefSegModel",
    "RefSegOutput",
    "StagedBackbone",
    "TextEncoder",
    "TextEncoderConfig",
    "build_model",
]
