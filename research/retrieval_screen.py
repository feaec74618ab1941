"""Screen a bank of real expressions: per weak sample, the teacher picks one written for another.

The learned banks become keys to the mask and the greedy word search (``word_search_screen.py``)
finds idiosyncratic word pairs. This screen asks whether a frozen teacher can instead choose,
for each weak training sample, a whole *real* expression from the accurate pool of the same
category: ``K`` candidates drawn at random (written for other images' objects), plus the bare
class name; the teacher keeps the one under which it segments the sample's known mask best
(lowest segmentation loss). A choice among ``K + 1`` fluent texts carries at most
``log2(K + 1)`` bits, so it can hardly be a per-sample key; the question is whether the chosen
text describes the target.

It reports on the same weak training samples:

- mIoU of the teacher with the class name, the true expression, the chosen expression
  (optimistic: chosen with the mask) and a random one of the candidates;
- the same four under a **judge**, another model that reads expressions (``--judge``): if the
  judge segments the target from the chosen expression about as well as from the true one, the
  chosen text is a referring expression of the target, not a teacher's private key;
- how often the chosen expression names an attribute the class name left out (position, size,
  colour, relation, from ``attributes.json``), against the exact chance rate: the mean over
  the sample's own candidates.

It also scores a **relative** choice from the same forwards: each candidate's loss minus that
text's mean loss over every sample it was scored on in this screen (the class name: minus its
mean over the samples of its category). A text the teacher reads as "any object of the class"
fits many samples and is discounted; a text that fits this sample more than it fits others is
preferred (a pointwise-mutual-information reading of the loss). The means need each text to be
scored on several samples: with 16 candidates a pool text is scored on about
``16 * samples / pool size of its category`` of them, so use a few hundred samples or more.

It reads no val or test sample and chooses nothing by itself::

    HF_HUB_OFFLINE=1 python research/retrieval_screen.py runs/bench/lrb-paper-r10-s2 \\
        --checkpoint stage-0 --judge runs/bench/naive-r30-s0 --samples 64 --candidates 16 \\
        --json docs/results/screen/retrieval.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from word_search_screen import (  # noqa: E402
    _load_teacher,
    choose,
    eval_tensors,
    per_sample_losses,
    weak_subset,
)


def relative_scores(losses: Tensor, candidates: Tensor, categories: list[str]) -> Tensor:
    """``losses (N, K + 1)`` minus each text's mean loss over the samples it was scored on.

    Column 0 (the class name) is centred by the mean over the samples of the same category;
    column ``k + 1`` by the mean of pool text ``candidates[:, k]`` over all its occurrences
    (a missing candidate, -1, reads the class name and is centred as column 0)."""
    n, k1 = losses.shape
    cats = sorted(set(categories))
    cat = torch.tensor([cats.index(c) for c in categories])  # (N,)
    cat_sum = torch.zeros(len(cats)).index_add_(0, cat, losses[:, 0])
    cat_mean = cat_sum / torch.bincount(cat, minlength=len(cats)).clamp(min=1)
    pool = candidates.clamp(min=0)
    size = int(pool.max()) + 1 if pool.numel() else 1
    real = candidates >= 0  # (N, K)
    flat, vals = pool[real], losses[:, 1:][real]
    text_mean = torch.zeros(size).index_add_(0, flat, vals) / torch.bincount(
        flat, minlength=size
    ).clamp(min=1)
    centre = torch.where(real, text_mean[pool], cat_mean[cat][:, None])  # (N, K)
    out = losses.clone()
    out[:, 0] -= cat_mean[cat]
    out[:, 1:] -= centre
    assert out.shape == (n, k1)
    return out


def scored_per_text(candidates: Tensor) -> dict[str, float]:
    """How many samples each pool text that occurs was scored on (median, min, mean)."""
    flat = candidates[candidates >= 0]
    counts = torch.bincount(flat)
    counts = counts[counts > 0].float()
    if counts.numel() == 0:
        return {"median": 0.0, "min": 0.0, "mean": 0.0}
    return {
        "median": float(counts.median()),
        "min": float(counts.min()),
        "mean": float(counts.mean()),
    }


def main() -> int:
    from wrel.core.config_io import from_dict
    from wrel.engine.checkpoint import load_model
    from wrel.engine.experiment import ExperimentConfig
    from wrel.engine.loaders import eval_loader
    from wrel.engine.validation import evaluate_model
    from wrel.methods.retrieval import ExpressionBank
    from wrel.studies.bank_decode import attribute_words, expression_recovery

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of the frozen teacher")
    parser.add_argument("--checkpoint", default="best", help="checkpoints/<name> (best)")
    parser.add_argument("--judge", type=Path, help="run folder of a model that reads expressions")
    parser.add_argument("--judge-checkpoint", default="best")
    parser.add_argument("--samples", type=int, default=64, help="weak training samples")
    parser.add_argument("--candidates", type=int, default=16, help="real expressions per sample")
    parser.add_argument("--batch", type=int, default=8, help="samples per scoring pass")
    parser.add_argument("--chunk", type=int, default=256, help="forwards per pass")
    parser.add_argument("--dice", default="foreground-mean-smooth1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bf16", action="store_true", help="score in bf16 with channels_last (as the profiles)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.candidates < 1 or args.samples < 1:
        parser.error("--candidates and --samples must be at least 1")

    torch.manual_seed(args.seed)
    cfg = from_dict(ExperimentConfig, json.loads((args.run / "config.json").read_text()))
    cfg.train.eval_batch_size = 64
    teacher = _load_teacher(args.run / "checkpoints" / args.checkpoint, cfg, load_model).eval()
    judge = None
    if args.judge is not None:
        jcfg = from_dict(ExperimentConfig, json.loads((args.judge / "config.json").read_text()))
        judge = _load_teacher(args.judge / "checkpoints" / args.judge_checkpoint, jcfg, load_model)
        judge.eval()
    samples, subset, expressions, attributes = weak_subset(cfg, args.samples, args.seed)

    image_t, mask_t, prefixes, ids = eval_tensors(cfg, subset, eval_loader)
    by_id = {s.sample_id: s for s in subset}
    # the retrieve stage's own candidates (wrel.methods.retrieval), for this subset only
    bank = ExpressionBank.for_samples(samples["train"], ids, args.candidates, args.seed)
    rows = bank.row_index(torch.tensor(ids))
    if bool((bank.candidates[rows] < 0).any()):
        raise SystemExit("a category of the subset has no accurate training expression")
    candidates = [[bank.pool[j] for j in row] for row in bank.candidates[rows].tolist()]

    if args.bf16:
        teacher = teacher.to(memory_format=torch.channels_last)
        image_t = image_t.contiguous(memory_format=torch.channels_last)
    precision = (
        torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    )
    start = time.perf_counter()
    parts = []
    with torch.no_grad(), precision:
        for lo in range(0, len(ids), args.batch):
            hi = min(lo + args.batch, len(ids))
            texts = bank.candidate_texts(rows[lo:hi], prefixes[lo:hi])
            parts.append(
                per_sample_losses(
                    teacher, image_t[lo:hi], mask_t[lo:hi], texts, args.dice, args.chunk
                ).float()
            )
    losses = torch.cat(parts)  # (N, K + 1): class name, then the K candidates
    seconds = time.perf_counter() - start
    categories = [by_id[i].category for i in ids]
    relative = relative_scores(losses, bank.candidates[rows], categories)

    def texts_of(choice: torch.Tensor) -> list[str]:
        return [
            prefixes[j] if p == 0 else candidates[j][p - 1] for j, p in enumerate(choice.tolist())
        ]

    chosen = texts_of(choose(losses))
    chosen_relative = texts_of(choose(relative))

    as_text = {
        "class_name": prefixes,
        "expression": [expressions[i] for i in ids],
        "chosen": chosen,
        "chosen_relative": chosen_relative,
        "random_candidate": [c[0] for c in candidates],  # drawn at random: a blind pick
    }

    def score(model: Any, texts: list[str]) -> float:
        items = [
            replace(by_id[i], text=t, quality="accurate") for i, t in zip(ids, texts, strict=True)
        ]
        return float(evaluate_model(model, eval_loader(cfg, items), torch.device("cpu"))["mIoU"])

    miou = {name: score(teacher, texts) for name, texts in as_text.items()}
    judged = {name: score(judge, texts) for name, texts in as_text.items()} if judge else None
    kinds = [
        attribute_words(attributes[str(i)].get("attributes") or {}, by_id[i].category) for i in ids
    ]
    report: dict[str, Any] = {
        "teacher": f"{args.run}/checkpoints/{args.checkpoint}",
        "judge": f"{args.judge}/checkpoints/{args.judge_checkpoint}" if judge else None,
        "samples": len(ids),
        "candidates": args.candidates,
        "kept_class_name": sum(c == p for c, p in zip(chosen, prefixes, strict=True)) / len(ids),
        "seconds": seconds,
        "mIoU_teacher": miou,
        "mIoU_judge": judged,
        "bf16": args.bf16,
        "kept_class_name_relative": sum(
            c == p for c, p in zip(chosen_relative, prefixes, strict=True)
        )
        / len(ids),
        "scored_per_pool_text": scored_per_text(bank.candidates[rows]),
        "recovery": expression_recovery(chosen, candidates, kinds),
        "recovery_relative": expression_recovery(chosen_relative, candidates, kinds),
        "examples": [
            {
                "expression": as_text["expression"][k],
                "chosen": chosen[k],
                "chosen_relative": chosen_relative[k],
            }
            for k in range(min(12, len(ids)))
        ],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=1))
    for ex in report["examples"]:
        print(f"  {ex['expression']!r:45s} -> {ex['chosen']!r} | {ex['chosen_relative']!r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
