"""Pixel-word attention (PWAM), its gate, and the intra-scale interaction block (IIM).

Shapes: visual tokens ``(B, N, C)`` with ``N = H * W``; words ``(B, D, L)`` (channels first, as
the released network takes them) and ``word_mask (B, L, 1)`` with 1 on real tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PixelWordAttention", "WordAttention", "IntraScaleBlock", "tanh_gate"]


def _conv1x1(in_dim: int, out_dim: int, *extra: nn.Module) -> nn.Sequential:
    """A 1-D 1x1 convolution over ``(B, C, N)`` followed by ``extra`` layers."""
    return nn.Sequential(nn.Conv1d(in_dim, out_dim, 1), *extra)


def tanh_gate(dim: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear -> Tanh, both linears without bias: a per-channel gate."""
    return nn.Sequential(
        nn.Linear(dim, dim, bias=False),
        nn.ReLU(),
        nn.Linear(dim, dim, bias=False),
        nn.Tanh(),
    )


class WordAttention(nn.Module):
    """Every pixel attends over the words (scaled dot product, padding masked out).

    Query: pixels (1x1 conv + instance norm); keys and values: words (1x1 convs, zeroed on
    padding); output: 1x1 conv + instance norm. The scale is ``dim ** -0.5`` over all heads.
    """

    def __init__(self, dim: int, text_dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.f_key = _conv1x1(text_dim, dim)
        self.f_query = _conv1x1(dim, dim, nn.InstanceNorm1d(dim))
        self.f_value = _conv1x1(text_dim, dim)
        self.W = _conv1x1(dim, dim, nn.InstanceNorm1d(dim))  # noqa: N815 (released name)

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """``x (B, N, C)``, ``words (B, D, L)``, ``word_mask (B, L, 1)`` -> ``(B, N, C)``."""
        batch, num_pixels, _ = x.shape
        heads, head_dim = self.num_heads, self.dim // self.num_heads
        mask = word_mask.permute(0, 2, 1)  # (B, 1, L)
        query = self.f_query(x.permute(0, 2, 1))  # (B, C, N)
        key = self.f_key(words) * mask  # (B, C, L)
        value = self.f_value(words) * mask  # (B, C, L)
        num_words = value.shape[-1]
        query = query.permute(0, 2, 1).reshape(batch, num_pixels, heads, head_dim)
        query = query.permute(0, 2, 1, 3)  # (B, heads, N, C / heads)
        key = key.reshape(batch, heads, head_dim, num_words)  # (B, heads, C / heads, L)
        value = value.reshape(batch, heads, head_dim, num_words)
        scores = torch.matmul(query, key) * self.dim**-0.5  # (B, heads, N, L)
        scores = scores + (1e4 * mask.unsqueeze(1) - 1e4)  # padding -> -1e4
        out = torch.matmul(scores.softmax(dim=-1), value.permute(0, 1, 3, 2))  # (B, h, N, C/h)
        out = out.permute(0, 2, 1, 3).reshape(batch, num_pixels, self.dim)  # (B, N, C)
        return self.W(out.permute(0, 2, 1)).permute(0, 2, 1)  # (B, N, C)


class PixelWordAttention(nn.Module):
    """PWAM: the pixel's projection times its attended language vector, projected again."""

    def __init__(self, dim: int, text_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.vis_project = _conv1x1(dim, dim, nn.GELU(), nn.Dropout(dropout))
        self.image_lang_att = WordAttention(dim, text_dim, num_heads)
        self.project_mm = _conv1x1(dim, dim, nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """``x (B, N, C)`` -> multimodal features ``(B, N, C)``."""
        vis = self.vis_project(x.permute(0, 2, 1))  # (B, C, N)
        lang = self.image_lang_att(x, words, word_mask).permute(0, 2, 1)  # (B, C, N)
        return self.project_mm(vis * lang).permute(0, 2, 1)  # (B, N, C)


def _conv_bn(kernel: int) -> nn.Sequential:
    """Single-channel conv (no bias) + BatchNorm, named ``conv`` / ``bn`` as released."""
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(1, 1, kernel, padding=kernel // 2, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(1))
    return seq


def _conv_bn_conv_bn() -> nn.Sequential:
    """1x1 conv + BN then 3x3 conv + BN on one channel (``conv1 bn1 conv2 bn2``)."""
    seq = nn.Sequential()
    seq.add_module("conv1", nn.Conv2d(1, 1, 1, bias=False))
    seq.add_module("bn1", nn.BatchNorm2d(1))
    seq.add_module("conv2", nn.Conv2d(1, 1, 3, padding=1, bias=False))
    seq.add_module("bn2", nn.BatchNorm2d(1))
    return seq


class _SpatialWeights(nn.Module):
    """Two re-parameterisable branch blocks on a one-channel map, ending in a sigmoid:
    ``sigmoid(B2(relu(B1(m))))`` with ``Bk(m) = 1x1(m) + (1x1 then 3x3)(m) + BN(m)``."""

    def __init__(self) -> None:
        super().__init__()
        self.brb_3x3 = _conv_bn_conv_bn()
        self.brb_1x1 = _conv_bn(1)
        self.brb_identity = nn.BatchNorm2d(1)
        self.brb_3x3_2 = _conv_bn_conv_bn()
        self.brb_1x1_2 = _conv_bn(1)
        self.brb_identity_2 = nn.BatchNorm2d(1)

    def forward(self, m: Tensor) -> Tensor:
        """``m (B, 1, H, W)`` -> weights in (0, 1), ``(B, 1, H, W)``."""
        out = torch.relu(self.brb_1x1(m) + self.brb_3x3(m) + self.brb_identity(m))
        out = self.brb_1x1_2(out) + self.brb_3x3_2(out) + self.brb_identity_2(out)
        return torch.sigmoid(out)


class IntraScaleBlock(nn.Module):
    """IIM: re-weights every pixel by a spatial map computed from the channel mean."""

    def __init__(self) -> None:
        super().__init__()
        self.repblock = _SpatialWeights()

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """``x (B, N, C)`` on an ``height x width`` grid -> ``(B, N, C)``."""
        batch, _, dim = x.shape
        grid = x.view(batch, height, width, dim).permute(0, 3, 1, 2)  # (B, C, H, W)
        weights = self.repblock(grid.mean(dim=1, keepdim=True))  # (B, 1, H, W)
        return (grid * weights).reshape(batch, dim, -1).permute(0, 2, 1)  # (B, N, C)
