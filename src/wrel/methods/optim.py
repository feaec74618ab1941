"""AdamW with per-group learning rates and a per-iteration poly(0.9) schedule.

Parameters are grouped by the model's name prefixes (``backbone.``, ``text_encoder.``, and the
rest: ``fusion.`` + ``decoder.``), each with its own learning rate; norms, biases and every
1-D parameter get no weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["OptimConfig", "param_groups", "build_optimizer", "poly_factor", "build_poly_scheduler"]


@dataclass
class OptimConfig:
    """Optimizer settings of one trained stage.

    Defaults are for the small models and short (6-epoch) schedules of the synthetic benchmark,
    chosen on its val split (docs/results/README.md); the paper's values for Swin-B/BERT-base on
    RRSIS-D are 3e-5 for every group (docs/paper-recipe.md).
    """

    lr_backbone: float = 3e-4  # pretrained image tower: lower than the fresh head
    lr_text: float = 1e-4  # pretrained text encoder
    lr_head: float = 1e-3  # fusion + decoder, trained from scratch
    weight_decay: float = 0.01
    poly_power: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping


def _group_of(name: str) -> str:
    if name.startswith("backbone."):
        return "backbone"
    if name.startswith("text_encoder."):
        return "text"
    return "head"


def _no_decay(name: str, param: nn.Parameter) -> bool:
    lowered = name.lower()
    return param.ndim <= 1 or lowered.endswith(".bias") or "norm" in lowered or ".bn" in lowered


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split the trainable parameters into (group, decay/no-decay) AdamW groups.

    Returns:
        Non-empty groups, each with ``params``, ``lr``, ``weight_decay`` and ``name``.
    """
    lrs = {"backbone": cfg.lr_backbone, "text": cfg.lr_text, "head": cfg.lr_head}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        buckets.setdefault((_group_of(name), _no_decay(name, param)), []).append(param)
    groups = []
    for (group, no_decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": lrs[group],
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "name": f"{group}{'/no_decay' if no_decay else ''}",
            }
        )
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; raises ``ValueError`` when nothing is trainable."""
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters; check requires_grad settings")
    return torch.optim.AdamW(groups, betas=cfg.betas)


def poly_factor(iteration: float, total: float, power: float = 0.9) -> float:
    """Poly decay ``(1 - iteration / total) ** power``, clamped to [0, 1]."""
    if total <= 0:
        return 1.0
    return max(0.0, 1.0 - iteration / total) ** power


def build_poly_scheduler(
    optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration poly schedule over ``total_iters`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: poly_factor(it, total_iters, power)
    )
