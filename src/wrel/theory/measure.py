"""Measure the bound's terms on trained checkpoints: per-sample losses ``1 - IoU``.

Everything is scored with :class:`wrel.evaluation.Evaluator` (the project's protocol), keyed by
sample id, so accurate-vs-class-name pairs line up with :func:`wrel.theory.paired_losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["score_samples", "class_name_view", "losses_by_id"]


def class_name_view(samples: Sequence[Any]) -> list[Any]:
    """The same samples with the class name, verbatim, as their only text (a weak view)."""
    return [replace(s, text=s.category, quality="weak") for s in samples]


@torch.no_grad()
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
        bank: a ``ReferenceBank``: samples marked weak get their bank prompts written into the
            free token slots after their text (the LRB-WREL input); others are scored as is.
        protocol: the evaluator's scoring protocol.
    """
    from torch.utils.data import DataLoader

    from wrel.data.dataset import RefSegDataset, collate_samples
    from wrel.evaluation import Evaluator

    device = torch.device(device)
    loader = DataLoader(
        RefSegDataset(list(samples), image_size=(image_size, image_size)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_samples,
    )
    evaluator = Evaluator(protocol)
    was_training = model.training
    model.eval()
    for batch in loader:
        input_ids, attention_mask = model.tokenize(list(batch["text"]))  # type: ignore[operator]
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        images = batch["image"].to(device)
        if bank is not None:
            is_weak = torch.tensor([q == "weak" for q in batch["quality"]], device=device)
            embeds = model.embed_tokens(input_ids)  # type: ignore[operator]
            filled, mask = bank.fill(embeds, attention_mask, batch["sample_id"].to(device), is_weak)
            out = model(images, inputs_embeds=filled, attention_mask=mask)
        else:
            out = model(images, input_ids=input_ids, attention_mask=attention_mask)
        evaluator.update(
            out.logits.argmax(1).bool().cpu(),
            batch["mask"].bool(),
            list(batch["category"]),
            sample_ids=batch["sample_id"],
        )
    model.train(was_training)
    return evaluator.per_sample()


def losses_by_id(records: Sequence[tuple[int | None, str | None, int, int]]) -> dict[int, float]:
    """``{sample_id: 1 - IoU}`` (IoU = 0 where the union is empty, as the protocol says)."""
    from wrel.theory import losses_from_counts

    ids = [int(r[0]) for r in records if r[0] is not None]
    if len(ids) != len(records):
        raise ValueError("records lack sample ids")
    losses = losses_from_counts([r[2] for r in records], [r[3] for r in records])
    return dict(zip(ids, np.asarray(losses).tolist(), strict=True))
