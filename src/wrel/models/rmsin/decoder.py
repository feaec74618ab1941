"""The RMSIN decoder: a 512-channel top-down path with BatchNorm and adaptive rotated
convolutions (ARC), ending in 2-class logits at 1/4 of the input.

An ARC layer predicts, per image, a gate ``alpha`` in (0, 1) and an angle ``theta`` in
(-40, 40) degrees from its input (:class:`RoutingFunction`), rotates its 3x3 kernel by
``theta`` (each rotated tap is a bilinear mix of the original taps: a 9 x 9 matrix), scales it
by ``alpha`` and convolves that image with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RotatedConv", "RoutingFunction", "RmsinDecoder", "rotation_matrices"]

# The 9 x 9 tap-mixing matrix of a 3x3 kernel rotated by theta, as released: every entry is a
# combination c0 + c1 cos + c2 sin + c3 cos*sin. Entries are (row, col, (c0, c1, c2, c3)); one
# table for theta >= 0 and one for theta < 0 (taps numbered row-major 0..8, centre 4).
_A, _ONE_MINUS_A = (0, 1, -1, 0), (1, -1, 1, 0)  # cos - sin, 1 - (cos - sin)
_C, _ONE_MINUS_C = (0, 1, 1, 0), (1, -1, -1, 0)  # cos + sin, 1 - (cos + sin)
_B, _MINUS_B = (0, 0, 0, 1), (0, 0, 0, -1)  # cos * sin
_X_MINUS_B, _Y_MINUS_B = (0, 1, 0, -1), (0, 0, 1, -1)
_X_PLUS_B, _B_MINUS_Y = (0, 1, 0, 1), (0, 0, -1, 1)
_CORNER_POS, _CORNER_NEG = (1, -1, -1, 1), (1, -1, 1, -1)  # 1 - c + b, 1 - a - b
_CENTRE = (1, 0, 0, 0)
_POSITIVE = [
    (0, 0, _A), (0, 1, _ONE_MINUS_A),
    (1, 1, _X_MINUS_B), (1, 2, _B), (1, 4, _CORNER_POS), (1, 5, _Y_MINUS_B),
    (2, 2, _A), (2, 5, _ONE_MINUS_A),
    (3, 0, _B), (3, 1, _Y_MINUS_B), (3, 3, _X_MINUS_B), (3, 4, _CORNER_POS),
    (4, 4, _CENTRE),
    (5, 4, _CORNER_POS), (5, 5, _X_MINUS_B), (5, 7, _Y_MINUS_B), (5, 8, _B),
    (6, 3, _ONE_MINUS_A), (6, 6, _A),
    (7, 3, _Y_MINUS_B), (7, 4, _CORNER_POS), (7, 6, _B), (7, 7, _X_MINUS_B),
    (8, 7, _ONE_MINUS_A), (8, 8, _A),
]  # fmt: skip
_NEGATIVE = [
    (0, 0, _C), (0, 3, _ONE_MINUS_C),
    (1, 0, _MINUS_B), (1, 1, _X_PLUS_B), (1, 3, _B_MINUS_Y), (1, 4, _CORNER_NEG),
    (2, 1, _ONE_MINUS_C), (2, 2, _C),
    (3, 3, _X_PLUS_B), (3, 4, _CORNER_NEG), (3, 6, _MINUS_B), (3, 7, _B_MINUS_Y),
    (4, 4, _CENTRE),
    (5, 1, _B_MINUS_Y), (5, 2, _MINUS_B), (5, 4, _CORNER_NEG), (5, 5, _X_PLUS_B),
    (6, 6, _C), (6, 7, _ONE_MINUS_C),
    (7, 4, _CORNER_NEG), (7, 5, _B_MINUS_Y), (7, 7, _X_PLUS_B), (7, 8, _MINUS_B),
    (8, 5, _ONE_MINUS_C), (8, 8, _C),
]  # fmt: skip


def _coefficients(entries: list[tuple[int, int, tuple[int, int, int, int]]]) -> Tensor:
    table = torch.zeros(9, 9, 4)
    for row, col, coeffs in entries:
        table[row, col] = torch.tensor(coeffs, dtype=table.dtype)
    return table


def rotation_matrices(thetas: Tensor) -> Tensor:
    """``thetas (...)`` in radians -> tap-mixing matrices ``(..., 9, 9)``."""
    cos, sin = torch.cos(thetas), torch.sin(thetas)
    basis = torch.stack([torch.ones_like(cos), cos, sin, cos * sin], dim=-1)  # (..., 4)
    pos = _coefficients(_POSITIVE).to(basis)
    neg = _coefficients(_NEGATIVE).to(basis)
    positive = (pos * basis[..., None, None, :]).sum(-1)  # (..., 9, 9)
    negative = (neg * basis[..., None, None, :]).sum(-1)
    return torch.where((thetas >= 0)[..., None, None], positive, negative)


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of ``(B, C, H, W)`` (module named ``norm`` as released)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class RoutingFunction(nn.Module):
    """Per-image gates and angles of an ARC layer: depthwise 3x3, LayerNorm, ReLU, global
    average pool, then ``sigmoid(fc_alpha)`` and ``softsign(fc_theta) * 40 deg``."""

    def __init__(self, dim: int, num_kernels: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.norm = _ChannelLayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.fc_alpha = nn.Linear(dim, num_kernels)
        self.dropout2 = nn.Dropout(dropout)
        self.fc_theta = nn.Linear(dim, num_kernels, bias=False)
        self.max_angle = 40.0 / 180.0 * math.pi

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, C, H, W)`` -> ``(alphas, thetas)``, both ``(B, num_kernels)``."""
        pooled = torch.relu(self.norm(self.dwc(x))).mean(dim=(2, 3))  # (B, C)
        alphas = torch.sigmoid(self.fc_alpha(self.dropout1(pooled)))
        thetas = F.softsign(self.fc_theta(self.dropout2(pooled))) * self.max_angle
        return alphas, thetas


class RotatedConv(nn.Module):
    """ARC: a 3x3 convolution (no bias) whose kernel(s) are rotated and gated per image."""

    def __init__(self, in_dim: int, out_dim: int, num_kernels: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_kernels, out_dim, in_dim, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.rounting_func = RoutingFunction(in_dim, num_kernels)  # released spelling

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        batch, in_dim, height, width = x.shape
        num_kernels, out_dim = self.weight.shape[:2]
        alphas, thetas = self.rounting_func(x)
        mixing = rotation_matrices(thetas) * alphas[..., None, None]  # (B, n, 9, 9)
        taps = self.weight.permute(0, 3, 4, 1, 2).reshape(num_kernels, 9, -1)  # (n, 9, O*I)
        kernels = torch.einsum("bnpq,nqk->bpk", mixing, taps)  # (B, 9, O*I)
        kernels = kernels.view(batch, 3, 3, out_dim, in_dim).permute(0, 3, 4, 1, 2)
        kernels = kernels.reshape(batch * out_dim, in_dim, 3, 3)
        out = F.conv2d(
            x.reshape(1, batch * in_dim, height, width), kernels, padding=1, groups=batch
        )
        return out.view(batch, out_dim, height, width)


class RmsinDecoder(nn.Module):
    """Top-down over the CIM maps: at each of the three steps, upsample (bilinear, corners
    aligned), concatenate the finer map, 3x3 conv + BN + ReLU, ARC + BN + ReLU; then a 1x1
    classifier. ``embed_dim`` is the width of the finest map (hidden width ``4 * embed_dim``)."""

    def __init__(self, embed_dim: int, num_classes: int = 2) -> None:
        super().__init__()
        hidden = 4 * embed_dim
        skips = {4: 8 * embed_dim + 4 * embed_dim, 3: hidden + 2 * embed_dim, 2: hidden + embed_dim}
        for level, in_dim in skips.items():
            self.add_module(f"conv1_{level}", nn.Conv2d(in_dim, hidden, 3, padding=1, bias=False))
            self.add_module(f"conv2_{level}", RotatedConv(hidden, hidden))
            self.add_module(f"bn1_{level}", nn.BatchNorm2d(hidden))
            self.add_module(f"bn2_{level}", nn.BatchNorm2d(hidden))
        self.conv1_1 = nn.Conv2d(hidden, num_classes, 1)

    def _step(self, level: int, x: Tensor, skip: Tensor) -> Tensor:
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        x = torch.cat([x, skip], dim=1)
        x = torch.relu(getattr(self, f"bn1_{level}")(getattr(self, f"conv1_{level}")(x)))
        return torch.relu(getattr(self, f"bn2_{level}")(getattr(self, f"conv2_{level}")(x)))

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Four maps, finest first -> logits ``(B, num_classes, H_1, W_1)`` at 1/4."""
        c1, c2, c3, c4 = feats
        x = self._step(4, c4, c3)
        x = self._step(3, x, c2)
        return self.conv1_1(self._step(2, x, c1))
