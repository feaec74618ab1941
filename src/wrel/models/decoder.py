"""Top-down decoder over the four fused scales with skip connections.

Starting from the coarsest (1/32) map, each step upsamples to the next finer map's exact size
(so any input size works, divisible by 32 or not), concatenates the skip, and refines with a
3x3 conv; a 1x1 classifier at 1/4 resolution gives 2-class logits, resized to the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DecoderConfig", "TopDownDecoder", "build_decoder"]


@dataclass
class DecoderConfig:
    """Width of the decoder."""

    dim: int = 64  # channels of every decoder level (the 1/4-scale 3x3 conv dominates FLOPs)
    num_classes: int = 2  # background / referred object


def _conv_gn_relu(in_dim: int, out_dim: int, kernel: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: per-GPU batches are tiny (the paper: 8 over several GPUs) and
    # the 1/32 map can be 1x1, where BatchNorm cannot train on a batch of one.
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(_groups(out_dim), out_dim),
        nn.ReLU(inplace=True),
    )


def _groups(dim: int) -> int:
    """Largest of 32, 16, 8, 4, 2 that divides ``dim`` leaving >= 4 channels a group, else 1."""
    return next((g for g in (32, 16, 8, 4, 2) if dim % g == 0 and dim // g >= 4), 1)


class TopDownDecoder(nn.Module):
    """Fuse four scales top-down.

    Args:
        in_dims: Channels of the four fused maps, finest (1/4) first.
        dim: Decoder width.
        num_classes: Output channels.
    """

    def __init__(self, in_dims: list[int], dim: int, num_classes: int = 2) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"decoder dim must be positive, got {dim}")
        self.lateral = nn.ModuleList(_conv_gn_relu(c, dim, 1) for c in in_dims)
        self.refine = nn.ModuleList(_conv_gn_relu(2 * dim, dim, 3) for _ in in_dims[:-1])
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Logits ``(B, num_classes, *size)`` from four maps ``(B, C_i, H_i, W_i)``."""
        x = self.lateral[-1](feats[-1])
        for index in range(len(feats) - 2, -1, -1):
            skip = self.lateral[index](feats[index])
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.refine[index](torch.cat([x, skip], dim=1))  # (B, dim, H_i, W_i)
        logits = self.classifier(x)  # (B, num_classes, H/4, W/4)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def build_decoder(cfg: DecoderConfig, in_dims: list[int]) -> TopDownDecoder:
    """A :class:`TopDownDecoder` for the backbone's stage channels."""
    return TopDownDecoder(in_dims, cfg.dim, cfg.num_classes)
