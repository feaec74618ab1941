"""Screen reference-bank variants for memorisation and readability through one frozen model.

LRB-WREL's bank initialisation fits one row of prompts per weak training sample through a
frozen model. A row that can hold anything can become a key to that sample's mask: the model
then segments the sample far better with the bank than with its true expression. This script
fits banks of several variants on the same fixed weak training samples, through the same frozen
model, for a few visits per row (one visit per epoch, as in training), and after each visit
reports on those samples:

- mIoU with class name + bank, with the class name alone and with the true expression (the
  leakage monitor's three scores, ``wrel.engine.leakage``); ``gap`` = bank - expression;
- for banks whose prompts are words: how often a prompt word names an attribute the class name
  left out (``wrel.studies.bank_decode.score_recovery`` against the generator's attributes).

It chooses nothing by itself and reads no val or test sample: it shows how far each variant's
bank moves towards a per-sample key, at which step size, before a full training run is spent on
it. The frozen model should be a teacher (a model trained on accurate expressions only), e.g.
the best checkpoint of an Only-Accurate run on the same data::

    HF_HUB_OFFLINE=1 python research/bank_screen.py RUN_DIR --samples 256 --visits 4 \\
        --json docs/results/bank_screen.json

``RUN_DIR`` is a run folder (``config.json`` + ``checkpoints/best``); its data root, split and
image size are used. Variants are ``name:key=value,key=value`` with BankConfig keys and
``lr`` (the bank learning rate), e.g. ``free:lr=0.012`` or
``words:parametrization=vocab,projection=nearest,temperature_steps=4,lr=0.3``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

DEFAULT_VARIANTS = (
    "free-paper:lr=0.012",
    "free-nearest:projection=nearest,lr=0.012",
    "words:parametrization=vocab,projection=nearest,lr=0.3",
    "words-soft:parametrization=vocab,lr=0.3",
    "words-high:parametrization=vocab,projection=nearest,lr=1.0",
)


def parse_variant(text: str) -> tuple[str, dict[str, Any], float]:
    """``name:key=value,...`` -> (name, BankConfig overrides, bank lr)."""
    name, _, rest = text.partition(":")
    overrides: dict[str, Any] = {}
    lr = 0.012
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"variant {text!r}: {item!r} is not key=value")
        parsed: Any = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        if key == "lr":
            lr = float(parsed)
        else:
            overrides[key] = parsed
    if not name:
        raise ValueError(f"variant {text!r} has no name")
    return name, overrides, lr


def main() -> int:
    from wrel.core.config_io import from_dict
    from wrel.engine.checkpoint import load_model
    from wrel.engine.experiment import ExperimentConfig
    from wrel.engine.leakage import leakage_subset, original_expressions
    from wrel.engine.loaders import eval_loader, load_split_samples
    from wrel.engine.validation import evaluate_model
    from wrel.methods.bank import ReferenceBank, word_embedding_table
    from wrel.methods.base import PreparedBatch
    from wrel.methods.lrb import bank_update

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of the frozen model")
    parser.add_argument("--checkpoint", default="best", help="checkpoints/<name> (best)")
    parser.add_argument("--samples", type=int, default=256, help="weak training samples")
    parser.add_argument("--visits", type=int, default=4, help="visits (epochs) per row")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--frozen-mode", choices=("eval", "train"), default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    cfg = from_dict(ExperimentConfig, json.loads((args.run / "config.json").read_text()))
    cfg.train.eval_batch_size = args.batch
    model, _ = load_model(args.run / "checkpoints" / args.checkpoint, "cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    samples = load_split_samples(cfg.data)
    weak = [s for s in samples["train"] if s.quality == "weak"]
    expressions = original_expressions(cfg.data.root, cfg.data.name, cfg.data.train_split)
    subset = leakage_subset(weak, expressions, args.samples, args.seed)
    accurate = [replace(s, text=expressions[s.sample_id], quality="accurate") for s in subset]
    device = torch.device("cpu")

    def score(items: list[Any], bank: Any = None) -> float:
        loader = eval_loader(cfg, items)
        return float(evaluate_model(model, loader, device, bank=bank)["mIoU"])

    base = {"class_name": score(subset), "expression": score(accurate)}
    print(f"{len(subset)} weak training samples through {args.run}/checkpoints/{args.checkpoint}")
    print(f"class name alone {base['class_name']:.2f}, true expression {base['expression']:.2f}")
    word_norm = float(word_embedding_table(model).float().norm(dim=-1).mean())
    results: dict[str, Any] = {"frozen_model": str(args.run), "samples": len(subset), **base}
    results["word_norm"] = word_norm
    results["variants"] = {}
    decode = _decoder(args.run, args.checkpoint, cfg)
    for text in args.variants:
        name, overrides, lr = parse_variant(text)
        bcfg = replace(cfg.bank, **overrides)
        if bcfg.parametrization == "vocab":
            bcfg = replace(bcfg, temperature_steps=overrides.get("temperature_steps", args.visits))
        bank = ReferenceBank.for_model([s.sample_id for s in subset], model, bcfg, device)
        every = torch.arange(bank.num_rows)
        with torch.no_grad():
            start_prompts = bank.prompts(every).clone()  # (N, P, D)
        # the bank is fitted through a frozen copy (train mode updates its BatchNorm
        # statistics, as in bank initialisation); scores use the untouched model
        frozen = copy.deepcopy(model)
        frozen.train(args.frozen_mode == "train")
        rows: list[dict[str, Any]] = []
        start = time.perf_counter()
        for visit in range(1, args.visits + 1):
            loader = eval_loader(cfg, subset)  # every sample once: one visit per row
            losses = []
            for batch in loader:
                ids, att = model.tokenize(list(batch["text"]))
                b = PreparedBatch(
                    images=batch["image"],
                    masks=batch["mask"],
                    input_ids=ids,
                    attention_mask=att,
                    sample_ids=torch.as_tensor(batch["sample_id"]),
                    is_weak=torch.ones(len(batch["text"]), dtype=torch.bool),
                )
                loss = bank_update(
                    bank, frozen, b, lr=lr, weight_decay=0.01, dice="foreground-mean-smooth1"
                )
                losses.append(float(loss))
            with torch.no_grad():
                moved = (bank.prompts(every) - start_prompts).norm(dim=-1).mean()
            row = {
                "visit": visit,
                "bank_loss": sum(losses) / len(losses),
                # mean L2 distance of a prompt from its start, in mean word-embedding norms
                "moved": float(moved) / word_norm,
                "mIoU_bank": score(subset, bank),
                **decode(bank),
            }
            row["gap"] = row["mIoU_bank"] - base["expression"]
            rows.append(row)
            print(
                f"{name:14s} visit {visit}: loss {row['bank_loss']:.3f}  moved {row['moved']:.3f}"
                f"  bank {row['mIoU_bank']:.2f}"
                f"  gap {row['gap']:+.2f}  recovery {row.get('recovery', float('nan')):.3f}"
                f" (chance {row.get('chance', float('nan')):.3f})",
                flush=True,
            )
        results["variants"][name] = {
            "spec": text,
            "lr": lr,
            "visits": rows,
            "seconds": time.perf_counter() - start,
        }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _decoder(run: Path, checkpoint: str, cfg: Any) -> Any:
    """bank -> {"recovery", "chance"}: whether a prompt's nearest word (k = 1) names an
    attribute the class name left out (any kind), and the chance rate of random words from the
    same vocabulary (``wrel.studies.bank_decode``)."""
    import tempfile

    from wrel.studies.bank_decode import decode_bank

    def decode(bank: Any) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.json").write_text((run / "config.json").read_text())
            bank.save(Path(tmp) / "bank.safetensors")
            report = decode_bank(
                tmp, k=1, data_root=cfg.data.root, model_dir=run / "checkpoints" / checkpoint
            )
        scores = (report.get("scores") or {}).get("any") or {}
        if scores.get("recovered") is None:
            return {}
        return {"recovery": scores["recovered"], "chance": scores["chance"]}

    return decode


if __name__ == "__main__":
    sys.exit(main())
