"""The multimodal Swin tower of RMSIN: Swin blocks, then language fusion, in every stage.

timm supplies the window attention (relative position bias), the MLP, stochastic depth and the
patch embedding, which compute exactly what the released network computes. Patch merging is
written here only to keep the released key order (``reduction`` before ``norm``; timm registers
them the other way round); it computes what timm's does. The
block itself is written here: timm rolls the map for the shifted windows *before* padding it
to a multiple of the window, the released Swin pads first and rolls the padded map. Both agree
when the map divides by the window, and at 480 px also at 30 px (padded to 36: the padding equals
the shift, so every token lands in the same window group), but not at 15 px (padded to 24), the
last stage (see :func:`shifted_window_mask`).

Each stage (names as released, so the state dict keeps the released layout): ``blocks`` ->
``fusion`` (PWAM) with ``res_gate`` and ``visual_residual`` (IIM) with ``visual_gate`` ->
``downsample`` (patch merging, absent in the last stage). The stage emits the PWAM output (what
the released network normalises and passes on to the cross-scale module) and hands the gated
sum to the next stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models.swin_transformer import WindowAttention
from torch import Tensor, nn

from wrel.models.rmsin.fusion import IntraScaleBlock, PixelWordAttention, tanh_gate

__all__ = [
    "PatchMerging",
    "SwinBlock",
    "RmsinStage",
    "shifted_window_mask",
    "to_windows",
    "from_windows",
]


def to_windows(x: Tensor, window: int) -> Tensor:
    """``(B, H, W, C)`` with ``H, W`` multiples of ``window`` -> ``(B * nW, window**2, C)``."""
    batch, height, width, dim = x.shape
    x = x.view(batch, height // window, window, width // window, window, dim)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, dim)


def from_windows(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`to_windows`: ``(B * nW, window**2, C)`` -> ``(B, H, W, C)``."""
    dim = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, dim)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, dim)


def shifted_window_mask(
    height: int, width: int, window: int, shift: int, device: torch.device | None = None
) -> Tensor:
    """Additive mask ``(nW, window**2, window**2)`` of the shifted windows, 0 or -100.

    ``height, width`` are the *padded* map sizes (multiples of ``window``). The map is cut into
    three bands per axis, ``[0, -window)``, ``[-window, -shift)`` and ``[-shift, end)``, and
    two tokens of one window may attend to each other only when they lie in the same region.
    The padded zeros at the bottom/right are rolled in with the map, as released.
    """
    labels = torch.zeros(height, width, device=device)
    bands = ((0, height - window), (height - window, height - shift), (height - shift, height))
    cols = ((0, width - window), (width - window, width - shift), (width - shift, width))
    region = 0
    for top, bottom in bands:
        for left, right in cols:
            labels[top:bottom, left:right] = region
            region += 1
    windows = to_windows(labels[None, :, :, None], window).squeeze(-1)  # (nW, window**2)
    diff = windows[:, None, :] - windows[:, :, None]  # (nW, N, N)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, linear to 2C:
    ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)`` (odd sides are zero-padded)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, dim = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        half_h, half_w = x.shape[1] // 2, x.shape[2] // 2
        x = x.reshape(batch, half_h, 2, half_w, 2, dim).permute(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.flatten(3)))  # (B, H/2, W/2, 2C)


class SwinBlock(nn.Module):
    """A (shifted-)window attention block on ``(B, H, W, C)``: pad, roll, attend, undo."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size=window)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``x (B, H, W, C)``; ``mask`` from :func:`shifted_window_mask` (used when shifted)."""
        _, height, width, dim = x.shape
        y = self.norm1(x)
        y = F.pad(y, (0, 0, 0, -width % self.window, 0, -height % self.window))
        padded_h, padded_w = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(to_windows(y, self.window), mask=mask if self.shift else None)
        y = from_windows(y, self.window, padded_h, padded_w)  # (B, H', W', C)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :height, :width, :])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RmsinStage(nn.Module):
    """Swin blocks, PWAM + IIM with their tanh gates, then patch merging (not in the last)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_paths: Sequence[float],
        text_dim: int,
        fusion_heads: int,
        fusion_drop: float,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, window // 2 if i % 2 else 0, mlp_ratio, drop_paths[i])
            for i in range(depth)
        )
        self.fusion = PixelWordAttention(dim, text_dim, fusion_heads, fusion_drop)
        self.res_gate = tanh_gate(dim)
        self.visual_residual = IntraScaleBlock()
        self.visual_gate = tanh_gate(dim)
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, H, W, C)`` -> (PWAM output ``(B, H, W, C)``, next stage input).

        The next stage input is ``(B, H/2, W/2, 2C)`` (or ``(B, H, W, C)`` in the last stage).
        """
        batch, height, width, dim = x.shape
        padded = (-(-height // self.window) * self.window, -(-width // self.window) * self.window)
        mask = shifted_window_mask(*padded, self.window, self.window // 2, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        tokens = x.reshape(batch, height * width, dim)  # (B, N, C)
        visual = self.visual_residual(tokens, height, width)
        fused = self.fusion(tokens, words, word_mask)
        tokens = tokens + self.res_gate(fused) * fused + self.visual_gate(visual) * visual
        fused = fused.view(batch, height, width, dim)
        x = tokens.view(batch, height, width, dim)
        return fused, (self.downsample(x) if self.downsample is not None else x)
