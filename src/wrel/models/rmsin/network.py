"""The RMSIN segmenter: multimodal Swin tower + cross-scale module + ARC decoder.

Module names follow the released state dict (``backbone.layers.i...``, ``backbone.norm{i}``,
``backbone.cim...``, ``classifier...``), so a released segmenter state dict loads by name (see
:mod:`wrel.models.rmsin.released` for the few keys that are derived instead of stored).
"""

from __future__ import annotations

from typing import Any, Self

import torch.nn.functional as F
from timm.layers import PatchEmbed
from torch import Tensor, nn

from wrel.models.rmsin.config import RmsinConfig
from wrel.models.rmsin.cross_scale import CrossScaleModule
from wrel.models.rmsin.decoder import RmsinDecoder
from wrel.models.rmsin.swin import RmsinStage

__all__ = ["MultimodalSwin", "RmsinSegmenter"]


class MultimodalSwin(nn.Module):
    """Patch embedding, four fusion stages, one LayerNorm per stage output, then CIM.

    Args:
        cfg: network sizes.
        text_dim: width ``D`` of the word features.
        input_size: square input side the cross-scale module is built for (a multiple of 32).
        drop_path_rate: stochastic depth, rising linearly over all blocks from 0.
    """

    def __init__(
        self, cfg: RmsinConfig, text_dim: int, input_size: int, drop_path_rate: float
    ) -> None:
        super().__init__()
        cfg.validate()
        if input_size < 32 or input_size % 32:
            raise ValueError(
                f"rmsin needs a square input side that is a multiple of 32, got {input_size}; "
                "set data.image_size (480 for the paper)"
            )
        self.input_size = input_size
        widths = [cfg.embed_dim << i for i in range(4)]
        self.patch_embed = PatchEmbed(
            img_size=None,
            patch_size=4,
            in_chans=3,
            embed_dim=cfg.embed_dim,
            norm_layer=nn.LayerNorm,
            output_fmt="NHWC",
            strict_img_size=False,
        )
        total = sum(cfg.depths)  # linear from 0 to the rate (in Python: builds on meta too)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(cfg.depths[:i]) for i in range(4)]
        self.layers = nn.ModuleList(
            RmsinStage(
                dim=widths[i],
                depth=cfg.depths[i],
                num_heads=cfg.num_heads[i],
                window=cfg.window_size,
                mlp_ratio=cfg.mlp_ratio,
                drop_paths=rates[starts[i] : starts[i] + cfg.depths[i]],
                text_dim=text_dim,
                fusion_heads=cfg.fusion_heads[i],
                fusion_drop=cfg.fusion_drop,
                downsample=i < 3,
            )
            for i in range(4)
        )
        # The last stage's gated sum feeds nothing (its PWAM output is the stage output, as
        # released), so its gates and IIM never get a gradient: frozen, which changes no update
        # (AdamW skips them either way) and lets DDP run without find_unused_parameters.
        last = self.layers[-1]
        for unused in (last.res_gate, last.visual_residual, last.visual_gate):
            unused.requires_grad_(False)
        for index, width in enumerate(widths):
            self.add_module(f"norm{index}", nn.LayerNorm(width))
        self.cim = CrossScaleModule(widths, input_size // 32)
        self.channels = widths

    def forward(self, images: Tensor, words: Tensor, word_mask: Tensor) -> list[Tensor]:
        """``images (B, 3, S, S)``, ``words (B, D, L)``, ``word_mask (B, L, 1)`` -> four maps
        ``(B, C_i, S / 2**(i+2), ...)``, finest first."""
        x = self.patch_embed(images)  # (B, S/4, S/4, C)
        outs = []
        for index, stage in enumerate(self.layers):
            fused, x = stage(x, words, word_mask)
            norm = getattr(self, f"norm{index}")
            outs.append(norm(fused).permute(0, 3, 1, 2).contiguous())  # (B, C_i, H_i, W_i)
        return self.cim(outs)


class RmsinSegmenter(nn.Module):
    """What the released checkpoints call the model: ``backbone`` + ``classifier``.

    ``forward(images, words, word_mask)`` -> logits ``(B, 2, S, S)``, the decoder output
    resized bilinearly with aligned corners, as released.
    """

    def __init__(self, backbone: MultimodalSwin, classifier: RmsinDecoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def to(self, *args: Any, **kwargs: Any) -> Self:
        """As ``nn.Module.to``; ``memory_format`` goes to the 4-D convolutions only (the ARC
        kernels are 5-D, which ``nn.Module.to`` refuses to convert to channels-last)."""
        memory_format = kwargs.pop("memory_format", None)
        out = super().to(*args, **kwargs)
        if memory_format is not None:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    module.to(memory_format=memory_format)
        return out

    def forward(self, images: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """Logits ``(B, 2, S, S)``; see :meth:`segment`."""
        return self.segment(images, words, word_mask)[0]

    def segment(
        self, images: Tensor, words: Tensor, word_mask: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """``images (B, 3, S, S)``, ``words (B, D, L)``, ``word_mask (B, L, 1)`` ->
        (logits ``(B, 2, S, S)``, the four CIM maps, finest first)."""
        side = self.backbone.input_size
        if tuple(images.shape[-2:]) != (side, side):
            raise ValueError(
                f"rmsin is built for {side} x {side} inputs, got {tuple(images.shape[-2:])}; "
                "resize the images or rebuild with data.image_size set to their size"
            )
        feats = self.backbone(images, words, word_mask)
        logits = self.classifier(feats)
        logits = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=True)
        return logits, feats
