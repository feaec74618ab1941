"""Gated pixel-word attention (LAVT-style language-aware visual encoding).

At each backbone scale, every pixel attends over the words (queries from pixels, keys and values
from words, padded words masked out); the language feature is multiplied with a projection of the
visual feature, projected back, and added to the visual feature through a learned per-pixel
tanh gate. The gated result feeds the next backbone stage and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusionConfig", "PixelWordAttention", "GatedFusion", "build_fusion"]


@dataclass
class FusionConfig:
    """Pixel-word attention settings shared by the four scales."""

    num_heads: int = 1  # must divide each scale's attention width
    # attention width per scale; None = the visual channels of that scale (as in LAVT).
    attn_dim: int | None = None


class PixelWordAttention(nn.Module):
    """Multi-head attention from pixels (queries) to words (keys, values).

    Args:
        vis_dim: Visual channels ``C``.
        text_dim: Word feature width ``D``.
        attn_dim: Attention width (divisible by ``num_heads``).
        num_heads: Number of heads.
    """

    def __init__(self, vis_dim: int, text_dim: int, attn_dim: int, num_heads: int) -> None:
        super().__init__()
        if num_heads < 1 or attn_dim % num_heads:
            raise ValueError(
                f"fusion num_heads={num_heads} must be >= 1 and divide the attention width "
                f"{attn_dim}; choose another model.fusion.num_heads or model.fusion.attn_dim"
            )
        self.num_heads = num_heads
        self.query = nn.Sequential(nn.Conv2d(vis_dim, attn_dim, 1), nn.GroupNorm(1, attn_dim))
        self.key = nn.Linear(text_dim, attn_dim)
        self.value = nn.Linear(text_dim, attn_dim)
        self.out = nn.Sequential(nn.Conv2d(attn_dim, vis_dim, 1), nn.GroupNorm(1, vis_dim))

    def forward(self, vis: Tensor, words: Tensor, text_padding_mask: Tensor) -> Tensor:
        """Language feature per pixel.

        Args:
            vis: ``(B, C, H, W)``.
            words: ``(B, L, D)``.
            text_padding_mask: ``(B, L)`` bool, True = padding (ignored).

        Returns:
            ``(B, C, H, W)``.
        """
        b, _, h, w = vis.shape
        heads = self.num_heads
        q = self.query(vis).flatten(2).transpose(1, 2)  # (B, HW, A)
        q = q.unflatten(2, (heads, -1)).transpose(1, 2)  # (B, heads, HW, A/heads)
        k = self.key(words).unflatten(2, (heads, -1)).transpose(1, 2)  # (B, heads, L, A/heads)
        v = self.value(words).unflatten(2, (heads, -1)).transpose(1, 2)  # (B, heads, L, A/heads)
        # finite large negative (not -inf) so an all-padding row cannot produce NaN
        bias = torch.zeros_like(text_padding_mask, dtype=q.dtype)
        bias = bias.masked_fill(text_padding_mask, torch.finfo(q.dtype).min / 2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
        attn = attn.transpose(1, 2).flatten(2)  # (B, HW, A)
        attn = attn.transpose(1, 2).reshape(b, -1, h, w)  # (B, A, H, W)
        return self.out(attn)


class GatedFusion(nn.Module):
    """``x + tanh_gate(m) * m`` with ``m = proj(vis_proj(x) * lang(x, words))``."""

    def __init__(self, vis_dim: int, text_dim: int, attn_dim: int, num_heads: int) -> None:
        super().__init__()
        self.attention = PixelWordAttention(vis_dim, text_dim, attn_dim, num_heads)
        self.vis_proj = nn.Sequential(nn.Conv2d(vis_dim, vis_dim, 1), nn.GELU())
        self.mm_proj = nn.Sequential(nn.Conv2d(vis_dim, vis_dim, 1), nn.GELU())
        self.gate = nn.Sequential(
            nn.Conv2d(vis_dim, vis_dim, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(vis_dim, vis_dim, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, vis: Tensor, words: Tensor, text_padding_mask: Tensor) -> Tensor:
        """Fused ``(B, C, H, W)`` from ``vis (B, C, H, W)`` and ``words (B, L, D)``."""
        lang = self.attention(vis, words, text_padding_mask)
        mm = self.mm_proj(self.vis_proj(vis) * lang)
        return vis + self.gate(mm) * mm


def build_fusion(cfg: FusionConfig, vis_dims: list[int], text_dim: int) -> nn.ModuleList:
    """One :class:`GatedFusion` per backbone scale."""
    return nn.ModuleList(
        GatedFusion(c, text_dim, cfg.attn_dim or c, cfg.num_heads) for c in vis_dims
    )
