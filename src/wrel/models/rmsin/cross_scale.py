"""The cross-scale interaction module (CIM) of RMSIN.

All four stage outputs are average-pooled to the coarsest grid (``s x s``, ``s = input / 32``),
concatenated (``C = 15 * embed_dim`` channels), squeezed to ``C / 4``, passed through one block
of cross-scale attention + per-scale feed-forward + cross-scale attention + feed-forward, and
widened back; each stage's own map is then gated by its slice (:class:`ScaleAwareGate`).

Cross-scale attention attends from the ``s x s`` tokens and two strided depthwise views of them
(``ceil(s / 2)`` and ``(s - 1) // 3 + 1`` per side) to all of them; the token counts fix the
weight shape of its ``proj`` layer (225 <- 314 at 480 px), so the module is built for one input
size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CrossScaleModule", "cross_scale_tokens"]


def cross_scale_tokens(side: int) -> tuple[int, int]:
    """``(tokens of the s x s grid, tokens of the grid and both strided views)`` for ``s``."""
    half = (side - 1) // 2 + 1  # 3x3 depthwise conv, stride 2, padding 1
    third = (side - 1) // 3 + 1  # 5x5 depthwise conv, stride 3, padding 2
    return side * side, side * side + half * half + third * third


class Residual(nn.Module):
    """``x + m(x)``; the wrapped module is named ``m`` as released."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


class LinearBN(nn.Sequential):
    """Linear (no bias) then BatchNorm1d over all tokens: ``(B, N, C) -> (B, N, C')``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.add_module("c", nn.Linear(in_dim, out_dim, bias=False))
        self.add_module("bn", nn.BatchNorm1d(out_dim))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        linear, norm = self[0], self[1]
        y = linear(x)
        return norm(y.flatten(0, 1)).reshape_as(y)


class TokenAttention(nn.Module):
    """Multi-head attention over the cross-scale tokens plus a depthwise-conv path on the
    values of the ``s x s`` tokens (key width 32, 8 heads, value width 64, as released).

    The released code reshapes head-major tensors straight into channel-major ones (no
    transpose) before the conv path and before ``proj``; that reshape is kept, since the
    weights were trained with it.
    """

    def __init__(self, dim: int, grid_tokens: int, all_tokens: int) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = 8, 32, 64
        self.values = self.value_dim * self.num_heads  # 512
        self.grid_tokens = grid_tokens
        self.qkv = LinearBN(dim, self.values + 2 * self.key_dim * self.num_heads)
        self.parallel_conv = nn.Sequential(
            nn.Hardswish(),
            nn.Conv2d(self.values, self.values, 3, padding=1, groups=self.values),
        )
        self.to_out = nn.Linear(self.values, dim)
        self.proj = nn.Linear(all_tokens, grid_tokens)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """``x (B, T, C)`` (grid tokens first) -> ``(B, height * width, C)``."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # (B, heads, T, d)
        grid_values = v[:, :, : self.grid_tokens, :].reshape(batch, self.values, height, width)
        conv_path = self.parallel_conv(grid_values).flatten(2)  # (B, 512, s*s)
        attn = ((q @ k.transpose(-2, -1)) * self.key_dim**-0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, -1, tokens)  # (B, 512, T), raw reshape
        out = self.proj(out) + conv_path  # (B, 512, s*s)
        return self.to_out(out.permute(0, 2, 1))  # (B, s*s, C)


def _depthwise_bn(dim: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(dim, dim, kernel, stride=stride, padding=kernel // 2, groups=dim),
        nn.BatchNorm2d(dim),
    )


class CrossScaleAttention(nn.Module):
    """Tokens of the grid and its two strided views -> :class:`TokenAttention` -> BN,
    hardswish, 1x1 conv: ``(B, C, s, s) -> (B, C, s, s)``."""

    def __init__(self, dim: int, grid_tokens: int, all_tokens: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(dim)
        self.DWConv1 = _depthwise_bn(dim, 3, 2)  # noqa: N815 (released name)
        self.DWConv2 = _depthwise_bn(dim, 5, 3)  # noqa: N815 (released name)
        self.attention = TokenAttention(dim, grid_tokens, all_tokens)
        self.bn4 = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, dim, height, width = x.shape
        x0 = self.bn1(x)
        views = (x0, self.DWConv1(x0), self.DWConv2(x0))
        tokens = torch.cat([v.flatten(2) for v in views], dim=2).permute(0, 2, 1)  # (B, T, C)
        out = self.attention(tokens, height, width).permute(0, 2, 1)  # (B, C, s*s)
        out = out.reshape(batch, dim, height, width)
        return self.conv(F.hardswish(self.bn4(out)))


class FeedForward(nn.Module):
    """BN, 1x1 conv, BN, grouped 3x3 conv, ReLU6, 1x1 conv (hidden = ``hidden_dim``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.bn2 = nn.BatchNorm2d(hidden_dim)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=dim)
        self.conv3 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(F.relu6(self.conv2(self.bn2(self.conv1(self.bn1(x))))))


class PerScaleFeedForward(nn.Module):
    """A residual :class:`FeedForward` on each scale's slice of the squeezed channels."""

    def __init__(self, channels: Sequence[int], mlp_ratio: int = 2) -> None:
        super().__init__()
        self.channels = [int(c) for c in channels]
        for index, width in enumerate(self.channels, start=1):
            self.add_module(f"ff{index}", Residual(FeedForward(width, mlp_ratio * width)))

    def forward(self, x: Tensor) -> Tensor:
        parts = x.split(self.channels, dim=1)
        layers = [getattr(self, f"ff{i}") for i in range(1, 5)]
        return torch.cat([layer(part) for layer, part in zip(layers, parts, strict=True)], dim=1)


class CrossScaleBlock(nn.Module):
    """Attention, per-scale feed-forward, attention, feed-forward; each residual."""

    def __init__(self, dim: int, channels: Sequence[int], grid_tokens: int, all_tokens: int):
        super().__init__()
        self.csa1 = Residual(CrossScaleAttention(dim, grid_tokens, all_tokens))
        self.intra_ff = Residual(PerScaleFeedForward([c // 4 for c in channels]))
        self.csa2 = Residual(CrossScaleAttention(dim, grid_tokens, all_tokens))
        self.ff = Residual(FeedForward(dim, 2 * dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(self.csa2(self.intra_ff(self.csa1(x))))


class ScaleAwareGate(nn.Module):
    """``BN(1x1(local)) * up(hsigmoid(BN(1x1(global)))) + up(BN(1x1(global)))``, where
    ``up`` resizes the coarse global map to the local one (bilinear)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local_embedding = nn.Conv2d(dim, dim, 1)
        self.bn1 = nn.BatchNorm2d(dim)
        self.global_embedding = nn.Conv2d(dim, dim, 1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.global_act = nn.Conv2d(dim, dim, 1)
        self.bn3 = nn.BatchNorm2d(dim)

    def forward(self, local: Tensor, coarse: Tensor) -> Tensor:
        size = local.shape[-2:]
        local = self.bn1(self.local_embedding(local))
        glob = self.bn2(self.global_embedding(coarse))
        glob = F.interpolate(glob, size=size, mode="bilinear", align_corners=False)
        act = F.relu6(self.bn3(self.global_act(coarse)) + 3) / 6
        act = F.interpolate(act, size=size, mode="bilinear", align_corners=False)
        return local * act + glob


class CrossScaleModule(nn.Module):
    """CIM over the four stage maps ``(B, C_i, H_i, W_i)``, finest first; same shapes out.

    Args:
        channels: the four stage widths.
        grid_side: side ``s`` of the coarsest map the module is built for.
    """

    def __init__(self, channels: Sequence[int], grid_side: int) -> None:
        super().__init__()
        self.channels = [int(c) for c in channels]
        total = sum(self.channels)
        hidden = total // 4
        grid_tokens, all_tokens = cross_scale_tokens(grid_side)
        self.down_channel = nn.Conv2d(total, hidden, 1)
        self.up_channel = nn.Conv2d(hidden, total, 1)
        self.block = nn.ModuleList(
            [CrossScaleBlock(hidden, self.channels, grid_tokens, all_tokens)]
        )
        self.bn = nn.BatchNorm2d(hidden)
        self.fusion = nn.ModuleList(ScaleAwareGate(c) for c in self.channels)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        size = (int(feats[-1].shape[-2]), int(feats[-1].shape[-1]))
        out = torch.cat([F.adaptive_avg_pool2d(f, size) for f in feats], dim=1)
        out = self.down_channel(out)
        for block in self.block:
            out = block(out)
        coarse = self.up_channel(self.bn(out)).split(self.channels, dim=1)
        return [gate(f, c) for gate, f, c in zip(self.fusion, feats, coarse, strict=True)]
