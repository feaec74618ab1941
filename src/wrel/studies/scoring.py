"""Score trained checkpoints sample by sample for the bound's terms.

Scoring goes through :func:`wrel.engine.validation.evaluate_model` (the project's protocol);
the ``(sample_id, category, I, U)`` records line up accurate-vs-class-name pairs with
:func:`wrel.theory.paired_losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wrel.data.dataset import RefSegDataset, class_name_view, collate_samples
from wrel.engine.validation import evaluate_model

__all__ = ["score_samples", "class_name_view"]


def score_samples(
    model: nn.Module,
    samples: Sequence[Any],
    *,
    image_size: int,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    bank: Any | None = None,
    protocol: str = "input",
) -> list[tuple[int | None, str | None, int, int]]:
    """``(sample_id, category, I, U)`` of every sample, predicted by ``model`` in eval mode.

    Args:
        model: a ``RefSegModel``.
        samples: ``wrel.data.dataset.Sample`` records; their ``text`` is what the model reads.
        image_size: square network input size.
        bank: a ``ReferenceBank``: weak samples get their bank prompts after their text.
        protocol: the evaluator's scoring protocol.
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(
        RefSegDataset(list(samples), image_size=(image_size, image_size)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_samples,
    )
    metrics = evaluate_model(
        model, loader, torch.device(device), protocol=protocol, per_sample=True, bank=bank
    )
    return metrics["samples"]
