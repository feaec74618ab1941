"""The rmsin model behind the :class:`~wrel.models.refseg.RefSegModel` interface.

The text encoder stays a separate part (``text_encoder``: BERT, or any local Hugging Face
folder; the reference bank writes its prompts into its word embeddings as for the default
network). Its contextual word features ``(B, L, D)`` enter the segmenter channels first,
``(B, D, L)``, with the mask ``(B, L, 1)`` (1 = real token or prompt slot), as the released
scripts pass BERT's output. Logits are ``(B, 2, H, W)``, channel 1 = referred object, like the
default network's, so no conversion is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor

from wrel.models.config import ModelConfig
from wrel.models.refseg import RefSegOutput, TextEncoderMethods, word_features
from wrel.models.rmsin.config import RELEASED_DROP_PATH, RELEASED_INPUT_SIZE, RmsinConfig
from wrel.models.rmsin.decoder import RmsinDecoder
from wrel.models.rmsin.network import MultimodalSwin, RmsinSegmenter
from wrel.models.rmsin.released import (
    load_released_bert,
    load_released_segmenter,
    load_swin_weights,
    read_released_checkpoint,
)
from wrel.models.text_encoder import TextEncoder, TextEncoderConfig, build_local

__all__ = ["RmsinModel", "build_rmsin", "load_released_checkpoint", "load_released_model"]

logger = logging.getLogger(__name__)


class RmsinModel(TextEncoderMethods, RmsinSegmenter):
    """RMSIN segmenter (``backbone`` + ``classifier``, released names) + ``text_encoder``."""

    def __init__(
        self,
        backbone: MultimodalSwin,
        classifier: RmsinDecoder,
        text_encoder: TextEncoder,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__(backbone, classifier)
        self.text_encoder = text_encoder
        self.config = config

    def forward(  # type: ignore[override]
        self,
        images: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        words: Tensor | None = None,
    ) -> RefSegOutput:
        """As :meth:`RefSegModel.forward`; ``images`` must be ``S x S`` (``data.image_size``).

        Returns:
            :class:`RefSegOutput`: ``logits (B, 2, S, S)`` and the four CIM maps.
        """
        feats = word_features(
            self.text_encoder, images, attention_mask, input_ids, inputs_embeds, words
        )
        assert attention_mask is not None  # checked by word_features
        word_mask = attention_mask[:, :, None].to(feats.dtype)  # (B, L, 1)
        logits, maps = self.segment(images, feats.permute(0, 2, 1), word_mask)
        return RefSegOutput(logits=logits, features=maps)


def build_rmsin(cfg: ModelConfig, text_encoder: TextEncoder) -> RmsinModel:
    """The rmsin model of ``cfg`` around a built text encoder (Swin weights from
    ``cfg.backbone.checkpoint_path`` when given; nothing is downloaded)."""
    if cfg.backbone.frozen_stages:
        raise ValueError("model.backbone.frozen_stages is not supported by rmsin; set it to 0")
    rate = cfg.backbone.drop_path_rate
    rate = RELEASED_DROP_PATH if rate is None else float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"model.backbone.drop_path_rate must be in [0, 1), got {rate}")
    size = RELEASED_INPUT_SIZE if cfg.input_size is None else int(cfg.input_size)
    tower = MultimodalSwin(cfg.rmsin, text_encoder.dim, size, rate)
    if cfg.backbone.checkpoint_path is not None:
        load_swin_weights(tower, cfg.backbone.checkpoint_path)
    elif cfg.backbone.pretrained:
        logger.warning(
            "rmsin: no model.backbone.checkpoint_path, the Swin tower starts from random weights "
            "(set it to local swin_base_patch4_window12_384 weights, or pretrained=false)"
        )
    return RmsinModel(tower, RmsinDecoder(cfg.rmsin.embed_dim), text_encoder, config=cfg)


def load_released_checkpoint(model: RmsinModel, path: str | Path, key: str | None = None) -> None:
    """Load an authors' RMSIN / LRB-WREL checkpoint file into ``model`` strictly: the segmenter
    (``model`` or ``student_model``, or ``key``) and, when the file has it, ``bert_model`` into
    the text encoder (which must then be BERT-base, ``model.text.path``)."""
    segmenter, bert = read_released_checkpoint(path, key)
    load_released_segmenter(model, segmenter, str(path))
    if bert is None:
        logger.warning("%s has no bert_model; the text encoder keeps its own weights", path)
    else:
        load_released_bert(model.text_encoder.bert, bert, str(path))


def load_released_model(
    path: str | Path,
    text_path: str | Path,
    input_size: int = RELEASED_INPUT_SIZE,
    sizes: RmsinConfig | None = None,
    key: str | None = None,
) -> RmsinModel:
    """Build rmsin (paper sizes unless ``sizes``) with BERT from the local Hugging Face folder
    ``text_path`` and load an authors' checkpoint file into it (see
    :func:`load_released_checkpoint`); eval mode, on CPU.

    BERT's weights come from the file's ``bert_model``; a file without one (a teacher-only
    checkpoint) keeps the folder's pretrained weights, as the released test script does.
    """
    segmenter, bert = read_released_checkpoint(path, key)
    text = TextEncoderConfig(name="local", path=str(text_path), pretrained=bert is None)
    cfg = ModelConfig(arch="rmsin", text=text, rmsin=sizes or RmsinConfig(), input_size=input_size)
    cfg.backbone.pretrained = False
    model = build_rmsin(cfg, build_local(cfg.text))
    load_released_segmenter(model, segmenter, str(path))
    if bert is not None:
        load_released_bert(model.text_encoder.bert, bert, str(path))
    return model.eval()
