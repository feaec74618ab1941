"""The referring segmentation model: built parts in, 2-class logits out.

``RefSegModel`` takes a built backbone, text encoder, fusion modules and decoder (see
:func:`wrel.models.build.build_model`). Language is fused after every backbone stage and the
fused map feeds the next stage, as in LAVT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from wrel.models.backbone import StagedBackbone
from wrel.models.config import ModelConfig
from wrel.models.decoder import TopDownDecoder
from wrel.models.text_encoder import TextEncoder

__all__ = ["TextEncoderMethods", "RefSegOutput", "RefSegModel", "word_features"]


@dataclass
class RefSegOutput:
    """Model output.

    Attributes:
        logits: ``(B, 2, H, W)`` at the input resolution (channel 1 = referred object).
        features: The four fused maps ``(B, C_i, H_i, W_i)``, finest first.
    """

    logits: Tensor
    features: list[Tensor]


def word_features(
    text_encoder: TextEncoder,
    images: Tensor,
    attention_mask: Tensor | None,
    input_ids: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
    words: Tensor | None = None,
) -> Tensor:
    """The word features ``(B, L, D)`` a model's forward fuses: ``words`` when given (checked
    against ``attention_mask`` and the batch), else the text encoder's output for the ids or
    embeddings. Shared by every architecture, so all present one forward signature."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if attention_mask is None:
        raise ValueError("attention_mask is required (from model.tokenize)")
    if words is None:
        return text_encoder(attention_mask, input_ids=input_ids, inputs_embeds=inputs_embeds)
    if input_ids is not None or inputs_embeds is not None:
        raise ValueError("pass words or the text (input_ids / inputs_embeds), not both")
    if words.shape[:2] != attention_mask.shape or words.shape[0] != images.shape[0]:
        raise ValueError(
            f"words {tuple(words.shape)} must be (B, L, D) for attention_mask "
            f"{tuple(attention_mask.shape)} and {images.shape[0]} images"
        )
    return words


class TextEncoderMethods:
    """The text side shared by the segmenters (``RefSegModel``, ``RmsinModel``): everything here
    delegates to ``self.text_encoder``."""

    text_encoder: TextEncoder

    @property
    def text_dim(self) -> int:
        """Width ``D`` of word embeddings and word features."""
        return self.text_encoder.dim

    @property
    def max_length(self) -> int:
        """Padded token length ``L``."""
        return self.text_encoder.max_length

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)``, both ``(B, L)`` int64 on CPU, right-padded to ``L``."""
        return self.text_encoder.tokenize(texts)

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """Word embeddings ``(B, L, D)`` of ``input_ids (B, L)``, before position/type terms."""
        return self.text_encoder.word_embeddings(input_ids)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Contextual word features ``(B, L, D)`` of ``input_ids (B, L)``: what :meth:`forward`
        computes from the text, to pass back as its ``words`` when one text meets many images
        (the text encoder sees no image, so its output depends on the text alone)."""
        return self.text_encoder(attention_mask, input_ids=input_ids)


class RefSegModel(TextEncoderMethods, nn.Module):
    """Language-aware backbone + top-down decoder.

    Args:
        backbone: Four-stage visual encoder.
        text_encoder: BERT-family encoder with its tokenizer.
        fusion: One gated pixel-word attention module per stage.
        decoder: Top-down decoder over the four fused maps.
        config: The config it was built from (saved with checkpoints); None for hand-built.
    """

    def __init__(
        self,
        backbone: StagedBackbone,
        text_encoder: TextEncoder,
        fusion: nn.ModuleList,
        decoder: TopDownDecoder,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        if len(fusion) != len(backbone.stages):
            raise ValueError(f"need one fusion module per stage, got {len(fusion)}")
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.decoder = decoder
        self.config = config

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        words: Tensor | None = None,
    ) -> RefSegOutput:
        """Segment the referred object.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised, any ``H, W``.
            input_ids: ``(B, L)`` token ids (or give ``inputs_embeds`` or ``words``).
            attention_mask: ``(B, L)``, 1 = real token (prompt slots count as real).
            inputs_embeds: ``(B, L, D)`` word-space embeddings; BERT adds position/type terms.
            words: ``(B, L, D)`` word features from :meth:`encode_text` of the same model; the
                text encoder is skipped (its gradient does not flow).

        Returns:
            :class:`RefSegOutput` with ``logits (B, 2, H, W)``.
        """
        words = word_features(
            self.text_encoder, images, attention_mask, input_ids, inputs_embeds, words
        )
        assert attention_mask is not None  # checked by word_features
        padding = attention_mask == 0  # (B, L) True = ignored
        height, width = images.shape[-2:]
        div = self.backbone.size_divisor
        x = F.pad(images, (0, -width % div, 0, -height % div))  # (B, 3, H', W'), H' % div == 0
        feats = []
        for index, fuse in enumerate(self.fusion):
            x = fuse(self.backbone.forward_stage(index, x), words, padding)  # fused feeds next
            feats.append(x)
        logits = self.decoder(feats, size=padded_size(images, div))
        return RefSegOutput(logits=logits[..., :height, :width], features=feats)


def padded_size(images: Tensor, divisor: int) -> tuple[int, int]:
    """Height and width of ``images (B, 3, H, W)`` rounded up to multiples of ``divisor``."""
    height, width = images.shape[-2:]
    return (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
