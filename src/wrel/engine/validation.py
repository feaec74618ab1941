"""Evaluation loop used by the trainer, ``wrel eval`` and ``wrel bound``: the student on the
samples' texts, with the reference bank's prompts for weak samples when a bank is given."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from wrel.core.progress import Progress
from wrel.evaluation import Evaluator
from wrel.methods.bank import ReferenceBank, text_inputs

__all__ = ["evaluate_model", "metric_value"]


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    protocol: str = "input",
    amp: str = "none",
    progress: bool = False,
    desc: str = "eval",
    per_sample: bool = False,
    bank: ReferenceBank | None = None,
) -> dict[str, Any]:
    """Score ``model`` on every batch of ``loader`` with ``wrel.evaluation.Evaluator``.

    Predictions are the argmax of the 2-class logits at the network input resolution, against
    the (nearest-resized) masks of the dataset. Every rank scores the whole loader (it is not
    sharded), so nothing is gathered across ranks.

    Args:
        per_sample: also return ``"samples"``: ``(sample_id, category, I, U)`` per sample.
        bank: a ``ReferenceBank``; samples marked weak get their prompts written into the free
            token slots after their text (the LRB-WREL training input). Default: no bank.

    Returns:
        The evaluator's metrics dict (oIoU, mIoU, Prec@X in percent, per category, ...).
    """

    was_training = model.training
    model.eval()
    evaluator = Evaluator(protocol)
    evaluator.reset()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if amp == "bf16"
        else contextlib.nullcontext()
    )
    bar = Progress(len(loader), desc, enabled=progress, unit="batch")
    for batch in loader:
        bar.update(1)
        input_ids, attention_mask = model.tokenize(list(batch["text"]))  # type: ignore[operator]
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        is_weak = torch.tensor([q == "weak" for q in batch["quality"]], device=device)
        text = text_inputs(
            model, input_ids, attention_mask, bank, batch["sample_id"].to(device), is_weak
        )
        with autocast:
            out = model(batch["image"].to(device), **text)
        pred = out.logits.argmax(dim=1).bool().cpu()  # (B, H, W)
        evaluator.update(
            pred, batch["mask"].bool(), list(batch["category"]), sample_ids=batch["sample_id"]
        )
    bar.close()
    model.train(was_training)
    metrics = dict(evaluator.compute(gather=False))
    if per_sample:
        metrics["samples"] = evaluator.per_sample()
    return metrics


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """Look up ``name`` (e.g. ``"mIoU"``) case-insensitively in an evaluator's result."""
    for key, value in metrics.items():
        if key.lower() == name.lower():
            return float(value)
    raise ValueError(f"metric {name!r} not in evaluation result keys {sorted(metrics)}")
