"""Screen a discrete word bank: words chosen per weak sample by a frozen teacher, not learned.

A learned bank row (free or a soft mixture of words) fitted through the teacher becomes a key
to the sample's mask, and its prompts decode to no attribute. This screen asks whether the
teacher can instead *name* what a weak sample's class name left out: for each weak training
sample it appends words from a vocabulary to the class name, one slot at a time (greedy), and
keeps the word under which the frozen teacher segments the sample's known mask best (lowest
segmentation loss; "no further word" is a candidate, so a slot is left empty when no word
helps). Every candidate of a slot is scored in one batched forward pass.

It reports on the same weak training samples:

- the teacher's mIoU with the class name alone, with the true expression, with the class name
  + the chosen words (optimistic: chosen with the mask), and with as many random words from the
  same vocabulary (the baseline for what any extra words buy);
- how often the chosen words name an attribute the class name left out (position, size,
  colour, relation; ``wrel.studies.bank_decode.score_recovery``), against the exact chance
  rate of as many random words from the same vocabulary.

It reads no val or test sample and chooses nothing by itself::

    HF_HUB_OFFLINE=1 python research/word_search_screen.py RUN_DIR --checkpoint stage-0 \\
        --samples 128 --slots 3 --json docs/results/screen/word_search.json

``RUN_DIR`` is a run folder whose ``checkpoints/<name>`` holds the teacher (an Only-Accurate
run's ``best``, or an LRB-WREL run's kept teacher stage ``stage-0``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def candidate_texts(prefixes: list[str], words: list[str]) -> list[str]:
    """``(B * (W + 1))`` texts, sample-major: each prefix alone, then with each word appended."""
    return [text for prefix in prefixes for text in (prefix, *(f"{prefix} {w}" for w in words))]


def choose(losses: Tensor) -> Tensor:
    """Per sample the best candidate of ``losses (B, W + 1)``: 0 (no word) or 1 + word index."""
    return losses.argmin(dim=1)


def weak_subset(cfg: Any, num: int, seed: int) -> tuple[Any, list[Any], dict[int, str], Any]:
    """The run's split samples, the leakage monitor's fixed subset of ``num`` weak training
    samples (with a true expression each), those expressions and ``attributes.json``."""
    from wrel.engine.leakage import leakage_subset, original_expressions
    from wrel.engine.loaders import load_split_samples

    samples = load_split_samples(cfg.data)
    weak = [s for s in samples["train"] if s.quality == "weak"]
    expressions = original_expressions(cfg.data.root, cfg.data.name, cfg.data.train_split)
    subset = leakage_subset(weak, expressions, num, seed)
    attributes = json.loads(
        (Path(cfg.data.root) / (cfg.data.name or "synthetic") / "attributes.json").read_text()
    )
    return samples, subset, expressions, attributes


def eval_tensors(
    cfg: Any, subset: list[Any], eval_loader: Any
) -> tuple[Tensor, Tensor, list[str], list[int]]:
    """Images ``(N, 3, H, W)`` and masks ``(N, H, W)`` of ``subset`` as the evaluation sees
    them (eval transforms, network input size), with their texts and sample ids."""
    images, masks, texts, ids = [], [], [], []
    for batch in eval_loader(cfg, subset):
        images.append(batch["image"])
        masks.append(batch["mask"])
        texts += list(batch["text"])
        ids += [int(i) for i in batch["sample_id"]]
    return torch.cat(images), torch.cat(masks), texts, ids


@torch.no_grad()
def per_sample_losses(
    model: Any, images: Tensor, masks: Tensor, texts: list[str], dice: str, chunk: int
) -> Tensor:
    """Segmentation loss ``(B, C)`` of every sample under each of its ``C`` candidate texts
    (``texts`` holds ``B * C`` of them, sample-major), ``chunk`` forwards at a time."""
    from wrel.methods.losses import per_sample_seg_loss

    batch = images.shape[0]
    per = len(texts) // batch
    reps = torch.arange(batch).repeat_interleave(per)  # (B * C,) sample of each text
    out = []
    for start in range(0, len(texts), chunk):
        idx = reps[start : start + chunk]
        ids, att = model.tokenize(texts[start : start + chunk])
        logits = model(images[idx], input_ids=ids, attention_mask=att).logits
        out.append(per_sample_seg_loss(logits, masks[idx], dice))
    return torch.cat(out).view(batch, per)


def main() -> int:
    from wrel.core.config_io import from_dict
    from wrel.engine.checkpoint import load_model
    from wrel.engine.experiment import ExperimentConfig
    from wrel.engine.loaders import eval_loader
    from wrel.engine.validation import evaluate_model
    from wrel.methods.bank import DEFAULT_VOCAB_WORDS
    from wrel.studies.bank_decode import score_recovery

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of the frozen teacher")
    parser.add_argument("--checkpoint", default="best", help="checkpoints/<name> (best)")
    parser.add_argument("--samples", type=int, default=128, help="weak training samples")
    parser.add_argument("--slots", type=int, default=3, help="words per sample at most")
    parser.add_argument("--batch", type=int, default=8, help="samples per search step")
    parser.add_argument("--chunk", type=int, default=256, help="forwards per pass")
    parser.add_argument("--words", nargs="*", help="vocabulary (default: the bank's)")
    parser.add_argument("--dice", default="foreground-mean-smooth1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    cfg = from_dict(ExperimentConfig, json.loads((args.run / "config.json").read_text()))
    cfg.train.eval_batch_size = 64
    model = _load_teacher(args.run / "checkpoints" / args.checkpoint, cfg, load_model)
    model.eval()
    words = list(args.words or DEFAULT_VOCAB_WORDS)
    samples, subset, expressions, attributes = weak_subset(cfg, args.samples, args.seed)

    def score(items: list[Any]) -> float:
        return float(evaluate_model(model, eval_loader(cfg, items), torch.device("cpu"))["mIoU"])

    # images and masks as the evaluation sees them (eval transforms, network input size)
    image_t, mask_t, prefixes, ids = eval_tensors(cfg, subset, eval_loader)
    by_id = {s.sample_id: s for s in subset}

    start = time.perf_counter()
    chosen = torch.full((len(ids), args.slots), -1, dtype=torch.int64)  # word index per slot
    texts = list(prefixes)
    for slot in range(args.slots):
        for lo in range(0, len(ids), args.batch):
            hi = min(lo + args.batch, len(ids))
            cands = candidate_texts(texts[lo:hi], words)
            losses = per_sample_losses(
                model, image_t[lo:hi], mask_t[lo:hi], cands, args.dice, args.chunk
            )
            pick = choose(losses)  # (b,)
            for j, p in enumerate(pick.tolist()):  # bookkeeping of strings, not the hot path
                if p > 0:
                    chosen[lo + j, slot] = p - 1
                    texts[lo + j] = f"{texts[lo + j]} {words[p - 1]}"
        print(
            f"slot {slot + 1}: {int((chosen[:, slot] >= 0).sum())} of {len(ids)} samples took a "
            f"word ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    seconds = time.perf_counter() - start

    gen = torch.Generator().manual_seed(args.seed)
    counts = (chosen >= 0).sum(dim=1)  # (N,)
    random_texts = [
        " ".join([prefix, *(words[int(i)] for i in torch.randint(len(words), (n,), generator=gen))])
        for prefix, n in zip(prefixes, counts.tolist(), strict=True)
    ]
    as_text = {  # the same samples under each text
        "class_name": prefixes,
        "expression": [expressions[i] for i in ids],
        "searched_words": texts,
        "random_words": random_texts,
    }
    miou = {
        name: score(
            [replace(by_id[i], text=t, quality="accurate") for i, t in zip(ids, ts, strict=True)]
        )
        for name, ts in as_text.items()
    }
    rows = [{**attributes[str(i)]} for i in ids]
    sentinel = torch.where(chosen >= 0, chosen, torch.full_like(chosen, len(words)))
    recovery = score_recovery(sentinel[:, :, None], rows, [*words, "<none>"])
    # chance with each sample's own number of words (score_recovery assumes every slot filled)
    for entry in (*recovery["kinds"].values(), recovery["any"]):
        entry.pop("chance", None)
    report: dict[str, Any] = {
        "teacher": f"{args.run}/checkpoints/{args.checkpoint}",
        "samples": len(ids),
        "slots": args.slots,
        "vocabulary": len(words),
        "words_per_sample": float(counts.double().mean()),
        "seconds": seconds,
        "mIoU": miou,
        "recovery": recovery,
        "examples": [
            {"expression": as_text["expression"][k], "searched": texts[k]}
            for k in range(min(12, len(ids)))
        ],
    }
    report["recovery"]["chance_any"] = _chance_any(rows, words, counts)
    print(json.dumps({k: report[k] for k in ("mIoU", "words_per_sample", "seconds")}, indent=1))
    print(json.dumps(report["recovery"], indent=1))
    for ex in report["examples"]:
        print(f"  {ex['expression']!r:45s} -> {ex['searched']!r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _load_teacher(folder: Path, cfg: Any, load_model: Any) -> Any:
    """A model folder (``best``), or a kept stage's training state (``stage-0``): the run's
    model rebuilt from its config with the state's weights."""
    if (folder / "config.json").is_file():
        return load_model(folder, "cpu")[0]
    from wrel.engine.state import load_resume_state
    from wrel.models.build import build_model

    cfg.model.backbone.pretrained = False
    model = build_model(cfg.model)
    model.load_state_dict(load_resume_state(folder)["stage"]["model"], strict=True)
    return model


def _chance_any(rows: list[dict[str, Any]], words: list[str], counts: Tensor) -> float:
    """Expected rate at which ``counts[i]`` uniform random words (with replacement) from
    ``words`` name any left-out attribute of sample ``i`` (the samples with one to name)."""
    from wrel.studies.bank_decode import attribute_words, chance_of_hit

    index = set(words)
    rates = []
    for row, n in zip(rows, counts.tolist(), strict=True):
        kinds = attribute_words(row.get("attributes") or {}, row.get("class_name", ""))
        t = len(set().union(*kinds.values()) & index)
        if t == 0:
            continue
        rates.append(float(chance_of_hit(torch.tensor([t]), len(words), int(n), 1)[0]))
    return sum(rates) / max(len(rates), 1)


if __name__ == "__main__":
    sys.exit(main())
