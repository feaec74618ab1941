"""A bank of real expressions: each weak sample reads one written for another sample.

A learned bank row (free vectors, or soft mixtures of words) fitted through a teacher becomes a
per-sample key to the mask (docs/training.md, "Leakage monitor"). The expression bank cannot:

- :class:`ExpressionBank` holds, for each weak training sample, ``K`` candidate expressions
  drawn at random from the ACCURATE training expressions of the same category (written for
  other images' objects), and the index of the chosen one (0: the bare class name);
- :class:`RetrieveStage` (stage kind ``retrieve``) makes one pass over the weak samples and, for
  each, keeps the candidate under which a frozen copy of the handed-over model (the teacher)
  segments the sample's known mask best (lowest per-sample segmentation loss; the class name
  alone is candidate 0 and wins ties). No weight moves;
- a following supervised stage with ``weak_text="retrieved"`` trains on every sample, the weak
  ones reading their chosen expression instead of the class name.

A choice among ``K + 1`` fluent texts carries at most ``log2(K + 1)`` bits, and what the
student reads is an expression a person wrote, so the bank can be read as it is
(``expressions.json`` in the run folder). Whether the chosen text describes the target depends
on how well the teacher reads expressions; ``research/retrieval_screen.py`` measures it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from wrel.core.outfiles import atomic_output
from wrel.methods.base import Handover, RetrieveConfig, Stage, StageContext
from wrel.methods.ema import EmaTeacher
from wrel.methods.losses import per_sample_seg_loss

__all__ = ["ExpressionBank", "RetrieveStage", "draw_candidates"]


def draw_candidates(
    row_categories: Sequence[str],
    pool_categories: Sequence[str],
    k: int,
    generator: torch.Generator,
) -> Tensor:
    """``(N, k)`` pool indices per row, drawn from the pool entries of the row's category.

    Without replacement while the category has ``k`` entries, with replacement below that;
    -1 for a row whose category has none (it keeps its class name).
    """
    if k < 1:
        raise ValueError(f"retrieve: candidates must be >= 1, got {k}")
    out = torch.full((len(row_categories), k), -1, dtype=torch.int64)
    pool_cat = list(pool_categories)
    for category in sorted(set(row_categories)):  # one draw per category, vectorised within
        rows = torch.tensor([i for i, c in enumerate(row_categories) if c == category])
        entries = torch.tensor([i for i, c in enumerate(pool_cat) if c == category])
        if entries.numel() == 0:
            continue
        if entries.numel() >= k:  # k distinct entries per row: top-k of uniform keys
            keys = torch.rand(rows.numel(), entries.numel(), generator=generator)
            picks = keys.topk(k, dim=1).indices  # (R, k)
        else:
            picks = torch.randint(entries.numel(), (rows.numel(), k), generator=generator)
        out[rows] = entries[picks]
    return out


class ExpressionBank:
    """Per weak sample (row, keyed by sample id): ``K`` candidate expressions and the choice.

    ``candidates (N, K)`` index ``pool`` (the accurate training expressions), -1 = none;
    ``choice (N,)`` is 0 for the bare class name, ``j`` for ``candidates[:, j - 1]``.
    """

    def __init__(self, ids: Tensor, pool: list[str], candidates: Tensor) -> None:
        order = ids.to(torch.int64).argsort()
        self.ids = ids.to(torch.int64)[order]  # (N,) sorted
        self.candidates = candidates.to(torch.int64)[order]  # (N, K)
        if self.candidates.ndim != 2 or self.candidates.shape[0] != self.ids.numel():
            raise ValueError(f"candidates must be (N, K), got {tuple(self.candidates.shape)}")
        if self.candidates.numel() and int(self.candidates.max()) >= len(pool):
            raise ValueError("a candidate index is outside the expression pool")
        self.pool = list(pool)
        self.choice = torch.zeros(self.ids.numel(), dtype=torch.int64)  # (N,) 0 = class name

    @classmethod
    def for_samples(
        cls, train_samples: Sequence[Any], weak_ids: Sequence[int], k: int, seed: int
    ) -> ExpressionBank:
        """Candidates for ``weak_ids`` from the accurate samples of ``train_samples``."""
        accurate = sorted(
            (s for s in train_samples if s.quality == "accurate"), key=lambda s: s.sample_id
        )
        category = {s.sample_id: s.category for s in train_samples}
        ids = sorted(int(i) for i in weak_ids)
        gen = torch.Generator().manual_seed(seed)
        candidates = draw_candidates(
            [category[i] for i in ids], [s.category for s in accurate], k, gen
        )
        return cls(torch.tensor(ids, dtype=torch.int64), [s.text for s in accurate], candidates)

    @property
    def num_candidates(self) -> int:
        return int(self.candidates.shape[1])

    def row_index(self, sample_ids: Tensor) -> Tensor:
        """Rows of ``sample_ids (B,)``; raises if one has no row."""
        sample_ids = sample_ids.to(torch.int64).cpu()
        pos = torch.searchsorted(self.ids, sample_ids).clamp(max=max(self.ids.numel() - 1, 0))
        found = (
            self.ids[pos] == sample_ids
            if self.ids.numel()
            else torch.zeros_like(pos, dtype=torch.bool)
        )
        if not bool(found.all()):
            raise ValueError(
                f"expression bank has no row for sample id(s) {sample_ids[~found][:5].tolist()}; "
                "it must come from the same training samples (data root, accurate_ratio, seed)"
            )
        return pos

    def candidate_texts(self, rows: Tensor, class_names: Sequence[str]) -> list[str]:
        """``len(rows) * (K + 1)`` texts, row-major: the class name, then the K candidates (a
        missing candidate reads the class name, so it can only tie with candidate 0)."""
        cands = self.candidates[rows].tolist()
        return [
            text
            for name, row in zip(class_names, cands, strict=True)
            for text in (name, *(self.pool[j] if j >= 0 else name for j in row))
        ]

    def set_choice(self, rows: Tensor, choice: Tensor) -> None:
        """Record the chosen candidate (0 = class name) of ``rows``."""
        if bool((choice < 0).any()) or bool((choice > self.num_candidates).any()):
            raise ValueError("a choice is outside 0..K")
        self.choice[rows.cpu()] = choice.to(torch.int64).cpu()

    def chosen_texts(self, rows: Tensor, class_names: Sequence[str]) -> list[str]:
        """The text each row reads: its chosen expression, or its class name."""
        choice = self.choice[rows].tolist()
        cands = self.candidates[rows].tolist()
        return [
            name if c == 0 or row[c - 1] < 0 else self.pool[row[c - 1]]
            for name, c, row in zip(class_names, choice, cands, strict=True)
        ]

    def texts(self, sample_ids: Tensor, is_weak: Tensor, texts: Sequence[str]) -> list[str]:
        """``texts`` with each weak sample's class name replaced by its chosen expression."""
        out = list(texts)
        weak = torch.as_tensor(is_weak, dtype=torch.bool).cpu()
        if not bool(weak.any()):
            return out
        where = weak.nonzero().flatten().tolist()
        rows = self.row_index(torch.as_tensor(sample_ids).cpu()[weak])
        for i, text in zip(where, self.chosen_texts(rows, [out[i] for i in where]), strict=True):
            out[i] = text
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "candidates": self.candidates,
            "choice": self.choice,
            "pool": list(self.pool),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ids, candidates and pool must match this bank's."""
        if not torch.equal(state["ids"].cpu(), self.ids) or not torch.equal(
            state["candidates"].cpu(), self.candidates
        ) or list(state["pool"]) != self.pool:  # fmt: skip
            raise ValueError(
                "the saved expression bank was drawn for other samples or candidates "
                "(data, accurate_ratio, seed or stages.<retrieve>.candidates/seed changed)"
            )
        self.choice = state["choice"].to(torch.int64).cpu().clone()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ExpressionBank:
        bank = cls(state["ids"].cpu(), list(state["pool"]), state["candidates"].cpu())
        bank.choice = state["choice"].to(torch.int64).cpu().clone()
        return bank

    def summary(self) -> dict[str, Any]:
        """Rows, candidates per row, and the share that kept the bare class name."""
        n = int(self.ids.numel())
        return {
            "rows": n,
            "candidates": self.num_candidates,
            "kept_class_name": float((self.choice == 0).double().mean()) if n else None,
        }

    def save(self, path: str | Path, class_names: dict[int, str] | None = None) -> None:
        """A readable JSON: per weak sample id, the chosen text (its class name when it kept it,
        ``null`` when the class names are not given)."""
        names = class_names or {}
        rows = torch.arange(self.ids.numel())
        ids = self.ids.tolist()
        chosen = self.chosen_texts(rows, [names.get(i, "") for i in ids])
        samples = [
            {"sample_id": i, "choice": int(c), "text": t if (c or i in names) else None}
            for i, c, t in zip(ids, self.choice.tolist(), chosen, strict=True)
        ]
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({**self.summary(), "samples": samples}, indent=1) + "\n")


class RetrieveStage(Stage):
    """One pass over the weak samples: each keeps the candidate expression under which the
    frozen teacher segments its mask best. Hands over the model unchanged and the bank."""

    cfg: RetrieveConfig

    def __init__(self, cfg: RetrieveConfig, ctx: StageContext) -> None:
        super().__init__(cfg, ctx)
        if cfg.candidates < 1 or cfg.chunk < 1:
            raise ValueError(
                f"retrieve: candidates and chunk must be >= 1, got {cfg.candidates}, {cfg.chunk}"
            )
        if ctx.expressions is None:
            ctx.expressions = ExpressionBank.for_samples(
                ctx.train_samples, ctx.weak_ids, cfg.candidates, cfg.seed
            )
        self.expressions: ExpressionBank = ctx.expressions
        self.frozen = EmaTeacher(self.model)  # a frozen copy in eval mode; the model is untouched
        # word features of every text a candidate can be, encoded once by the frozen model:
        # rows 0..P-1 the pool, then each class name met (a text meets ~144 images per pass)
        self._words: Tensor | None = None  # (P + names, L, D)
        self._word_mask: Tensor | None = None  # (P + names, L)
        self._name_row: dict[str, int] = {}

    @torch.no_grad()
    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, float]:
        b = self.prepare(batch)
        net = self.frozen.module
        net.eval()  # set every step: a .train() call on the stage would switch it
        weak = b.is_weak.cpu()
        rows = self.expressions.row_index(b.sample_ids.cpu()[weak])  # (W,)
        names = [t for t, w in zip(batch["text"], weak.tolist(), strict=True) if w]
        per = self.expressions.num_candidates + 1
        images, masks = b.images[weak.to(b.images.device)], b.masks[weak.to(b.masks.device)]
        # (W * per,) rows of the word table, in candidate_texts' order: the class name, then
        # the K candidates (a missing one reads the class name)
        text_rows, table, table_mask = self._text_rows(rows, names, images.device)
        owner = torch.arange(rows.numel()).repeat_interleave(per)  # (W * per,) row of each
        losses = []
        for lo in range(0, text_rows.numel(), self.cfg.chunk):
            idx = owner[lo : lo + self.cfg.chunk].to(images.device)
            sel = text_rows[lo : lo + self.cfg.chunk]
            with self._autocast():
                logits = net(images[idx], attention_mask=table_mask[sel], words=table[sel]).logits
            losses.append(per_sample_seg_loss(logits.float(), masks[idx], self.cfg.dice))
        if losses:
            loss = torch.cat(losses).view(rows.numel(), per)  # (W, K + 1)
            choice = loss.argmin(dim=1).cpu()  # first minimum: the class name wins ties
            chosen_loss = loss.min(dim=1).values.cpu()
        else:
            choice = torch.zeros(0, dtype=torch.int64)
            chosen_loss = torch.zeros(0)
        rows, choice, chosen_loss = _gather_choices(rows, choice, chosen_loss)
        self.check_finite(chosen_loss.sum(), "retrieval loss", progress)
        self.expressions.set_choice(rows, choice)
        n = max(int(rows.numel()), 1)
        return {
            "retrieve_loss": float(chosen_loss.sum()) / n,
            "kept_class_name": float((choice == 0).sum()) / n,
        }

    def _encode(self, texts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Word features ``(N, L, D)`` and masks ``(N, L)`` of ``texts`` by the frozen model,
        in chunks, at the stage's precision."""
        net: Any = self.frozen.module  # a RefSegModel (or a stand-in with its interface)
        words, masks = [], []
        for lo in range(0, len(texts), self.cfg.chunk):
            ids, att = self.model.tokenize(texts[lo : lo + self.cfg.chunk])
            ids, att = ids.to(device), att.to(device)
            with self._autocast():
                words.append(net.encode_text(ids, att))
            masks.append(att)
        return torch.cat(words), torch.cat(masks)

    def _text_rows(
        self, rows: Tensor, names: list[str], device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(W * (K + 1),)`` word-table rows of bank ``rows (W,)`` whose samples read the class
        ``names``, and the table (words, masks); encodes the pool on the first call and each
        class name on first sight."""
        if self._words is None or self._word_mask is None:
            self._words, self._word_mask = self._encode(self.expressions.pool, device)
        new = sorted(set(names) - set(self._name_row))
        if new:
            words, masks = self._encode(new, device)
            start = self._words.shape[0]
            self._name_row.update({name: start + i for i, name in enumerate(new)})
            self._words = torch.cat([self._words, words])
            self._word_mask = torch.cat([self._word_mask, masks])
        name_rows = torch.tensor([self._name_row[n] for n in names], dtype=torch.int64)  # (W,)
        cand = self.expressions.candidates[rows]  # (W, K), -1 = none
        cand = torch.where(cand >= 0, cand, name_rows[:, None])
        text_rows = torch.cat([name_rows[:, None], cand], dim=1).reshape(-1).to(device)
        return text_rows, self._words, self._word_mask

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.autocast == "bf16":
            return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)
        return self.autocast()

    def handover(self) -> Handover:
        return Handover(self.model, self.ctx.bank, self.expressions)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"model": self.model.state_dict(), "expressions": self.expressions.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.model.load_state_dict(state["model"], strict=True)
        self.frozen.module.load_state_dict(state["model"], strict=True)
        self.expressions.load_state_dict(state["expressions"])


def _gather_choices(rows: Tensor, choice: Tensor, loss: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every rank's ``(rows, choice, loss)`` concatenated (identity in one process), so the
    bank is the same on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return rows, choice, loss
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (rows.tolist(), choice.tolist(), loss.tolist()))
    return (
        torch.tensor([r for p in parts for r in p[0]], dtype=torch.int64),
        torch.tensor([c for p in parts for c in p[1]], dtype=torch.int64),
        torch.tensor([x for p in parts for x in p[2]], dtype=torch.float32),
    )
