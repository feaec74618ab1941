"""Leakage monitor: does the reference bank store the missing words or the mask?

At every val evaluation of a stage that has a bank, a fixed subset of WEAK training samples
(``bank.leakage_samples`` of them, drawn once with ``bank.leakage_seed``) is scored three ways
by the evaluated student:

- ``mIoU_bank``: class name + the sample's bank prompts (what the bank was fitted with);
- ``mIoU_class_name``: the bare class name;
- ``mIoU_expression``: the sample's true (accurate) expression, where the data set has it.

``gap = mIoU_bank - mIoU_expression``. The expression is the most a text can say about the
target; a bank that scores far above it (a large positive gap) holds information no expression
holds: the sample's mask. The trainer logs the result as a ``"leakage"`` event in
``metrics.jsonl``; in the terms of docs/theory.md it measures the effective ``Delta`` with the
bank on the training samples, along training.

For a ``retrieve`` run (wrel.methods.retrieval) the "bank" is the expression bank:
``mIoU_bank`` scores each sample with the real expression chosen for it, so a gap far above the
true expression's means the choice among the candidates works as a key.

The true expressions of weak samples never enter training: they are read here from the data set's
own annotation files (the train split loaded with no weak split), the way ``wrel bound`` does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wrel.data.dataset import load_samples
from wrel.engine.loaders import eval_loader
from wrel.engine.validation import evaluate_model

__all__ = ["leakage_subset", "measure_leakage", "original_expressions"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _expressions_cached(root: str, name: str | None, split: str) -> tuple[tuple[int, str], ...]:

    samples = load_samples(root, split, name=name, accurate_ratio=None, check_files=False)
    return tuple((s.sample_id, s.text) for s in samples if s.quality == "accurate")


def original_expressions(root: str | Path, name: str | None, split: str) -> dict[int, str]:
    """Sample id -> accurate expression of ``split`` as the data set's own files hold it.

    Samples the files themselves mark weak have none. Returns ``{}`` (with a warning) when the
    files cannot be read without a weak split (e.g. only a published split file exists).
    """
    try:
        return dict(_expressions_cached(str(root), name, split))
    except (FileNotFoundError, ValueError) as err:
        log.warning("leakage monitor: no true expressions for %s/%s (%s)", root, split, err)
        return {}


def leakage_subset(
    weak_samples: Sequence[Any], expressions: dict[int, str], num: int, seed: int
) -> list[Any]:
    """A fixed, seeded subset of ``num`` weak samples (sorted by id).

    Drawn among the weak samples with a true expression when any has one (so the three scores
    are paired), else among all of them. The same samples, seed and ``num`` give the same subset.
    """
    pool = sorted(weak_samples, key=lambda s: s.sample_id)
    with_text = [s for s in pool if s.sample_id in expressions]
    pool = with_text or pool
    if num <= 0 or not pool:
        return []
    if num < len(pool):
        pick = np.random.default_rng(seed).choice(len(pool), size=num, replace=False)
        pool = [pool[int(i)] for i in np.sort(pick)]
    return pool


def monitored_bank(stage: Any) -> Any:
    """The bank a stage trains with: its reference bank, its expression bank (a retrieve
    stage), the expression bank its weak samples read (``weak_text="retrieved"``), or None."""
    if getattr(stage, "bank", None) is not None:
        return stage.bank
    if getattr(stage, "expressions", None) is not None:
        return stage.expressions
    if getattr(stage, "retrieved", False):
        return stage.ctx.expressions
    return None


def measure_leakage(
    model: nn.Module,
    bank: Any,
    train_samples: Sequence[Any],
    cfg: Any,
    device: torch.device,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the monitor's weak samples three ways; see the module docstring.

    Args:
        model: the evaluated student (``RefSegModel`` interface).
        bank: the stage's ``ReferenceBank`` (rows for every weak training sample), or the
            ``ExpressionBank`` of a retrieve run (``mIoU_bank`` is then the score with each
            sample's retrieved expression in place of its class name).
        train_samples: the run's train samples (with the weak split).
        cfg: the run's ``ExperimentConfig`` (data root, image size, batch, amp, protocol,
            ``bank.leakage_samples`` / ``bank.leakage_seed``).
        device: where ``model`` lives.

    Returns:
        ``{"num_samples", "num_expression", "mIoU_bank", "mIoU_class_name", "mIoU_expression",
        "gap"}`` in percent (``mIoU_expression`` and ``gap`` are None without expressions);
        ``{"num_samples": 0}`` when there is no weak sample.
    """

    weak = [s for s in train_samples if s.quality == "weak"]
    expressions = original_expressions(cfg.data.root, cfg.data.name, cfg.data.train_split)
    subset = leakage_subset(weak, expressions, cfg.bank.leakage_samples, cfg.bank.leakage_seed)
    if not subset:
        return {"num_samples": 0}

    def score(samples: list[Any], with_bank: bool, desc: str) -> float:
        metrics = evaluate_model(
            model,
            eval_loader(cfg, samples),
            device,
            protocol=cfg.train.protocol,
            amp=cfg.train.amp,
            desc=desc,
            progress=progress,
            bank=bank if with_bank else None,
        )
        return float(metrics["mIoU"])

    if hasattr(bank, "chosen_texts"):  # an expression bank: the texts the student reads
        ids = torch.tensor([s.sample_id for s in subset])
        texts = bank.texts(ids, torch.ones(len(subset), dtype=torch.bool), [s.text for s in subset])
        read = [replace(s, text=t) for s, t in zip(subset, texts, strict=True)]
        bank_score = score(read, False, "leakage: retrieved expression")
    else:
        bank_score = score(subset, True, "leakage: class name + bank")
    out: dict[str, Any] = {
        "num_samples": len(subset),
        "mIoU_bank": bank_score,
        "mIoU_class_name": score(subset, False, "leakage: class name"),
        "mIoU_expression": None,
        "gap": None,
    }
    accurate = [
        replace(s, text=expressions[s.sample_id], quality="accurate")
        for s in subset
        if s.sample_id in expressions
    ]
    out["num_expression"] = len(accurate)
    if len(accurate) == len(subset):
        out["mIoU_expression"] = score(accurate, False, "leakage: expression")
        out["gap"] = out["mIoU_bank"] - out["mIoU_expression"]
    return out
