"""The learnable reference bank (PAPER.md section 4) and its row-sparse AdamW.

The bank is one plain tensor ``rows`` of shape ``(N_weak, P, D)``: ``P`` prompt embeddings per
weak training sample, in the text encoder's word-embedding space. Row ``r`` belongs to sample
``ids[r]`` (``ids`` is sorted, so a look-up is one ``searchsorted``).

Its optimizer is a *lazy* AdamW: first/second moments and the step count are kept per row and
only the rows of the current batch are updated (weight decay included), so rows that were not
in the batch never drift, and there is no dense gradient. Memory is rows + two moments =
``3 * N * P * D * 4`` bytes: with ``P = 20`` and ``D = 768`` that is 184 GB per million weak
samples (61 GB for the rows alone), against 245 GB for dense AdamW with its dense gradient; the
tiny models of the tests (``D = 64``) need 15 GB per million. Under ``torch.distributed`` every
rank all-gathers the (row index, gradient) pairs of all ranks and applies the same update, so
the bank stays identical on every rank (the reference code lets the copies drift).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["BankConfig", "ReferenceBank", "fill_prompts"]

log = logging.getLogger(__name__)


@dataclass
class BankConfig:
    """Shape, initialisation and AdamW constants of the reference bank."""

    num_prompts: int = 20  # P: prompt slots per sample (only free text slots are filled)
    init_std: float = 0.02  # rows start as N(0, init_std^2)
    seed: int = 0  # seeds the torch.Generator of the initialisation
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


def fill_prompts(
    embeds: Tensor, attention_mask: Tensor, prompts: Tensor, is_weak: Tensor
) -> tuple[Tensor, Tensor]:
    """Write prompts into the free slots after each weak sample's tokens (vectorised).

    For a weak row ``i`` with ``L_i`` real tokens (``[CLS] name [SEP]``, right padded), position
    ``j >= L_i`` receives ``prompts[i, j - L_i]`` (while ``j - L_i < P``) and mask 1. Accurate
    rows are returned unchanged.

    Args:
        embeds: ``(B, L, D)`` word embeddings.
        attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding.
        prompts: ``(B, P, D)`` prompt rows (any values for accurate rows).
        is_weak: ``(B,)`` bool.

    Returns:
        ``(embeds (B, L, D), attention_mask (B, L))``.
    """
    batch, length, dim = embeds.shape
    num_prompts = prompts.shape[1]
    lengths = attention_mask.sum(dim=1)  # (B,)
    slot = torch.arange(length, device=embeds.device)[None, :] - lengths[:, None]  # (B, L)
    filled = (slot >= 0) & (slot < num_prompts) & is_weak.to(torch.bool)[:, None]  # (B, L)
    index = slot.clamp(0, num_prompts - 1)[:, :, None].expand(batch, length, dim)  # (B, L, D)
    gathered = prompts.to(embeds.dtype).gather(1, index)  # (B, L, D)
    out = torch.where(filled[:, :, None], gathered, embeds)
    mask = torch.where(filled, torch.ones_like(attention_mask), attention_mask)
    return out, mask


class ReferenceBank:
    """Per-sample prompt rows ``(N, P, D)`` keyed by sample id, with a row-sparse AdamW.

    Args:
        sample_ids: ids of the weak training samples (any order, unique).
        dim: ``D``, the text encoder's word-embedding width.
        cfg: bank settings.
        device: where rows and moments live.
    """

    def __init__(
        self,
        sample_ids: Tensor | list[int],
        dim: int,
        cfg: BankConfig,
        device: torch.device | str = "cpu",
    ) -> None:
        ids = torch.as_tensor(sample_ids, dtype=torch.int64).flatten()
        if ids.numel() != ids.unique().numel():
            raise ValueError("reference bank: sample ids must be unique")
        self.cfg = cfg
        self.ids = ids.sort().values.to(device)  # (N,) row r <-> ids[r]
        gen = torch.Generator().manual_seed(cfg.seed)
        shape = (self.ids.numel(), cfg.num_prompts, dim)
        self.rows = (torch.randn(shape, generator=gen) * cfg.init_std).to(device)  # (N, P, D)
        self.exp_avg = torch.zeros_like(self.rows)
        self.exp_avg_sq = torch.zeros_like(self.rows)
        self.steps = torch.zeros(self.ids.numel(), dtype=torch.int64, device=device)  # (N,)

    @property
    def num_rows(self) -> int:
        return int(self.ids.numel())

    def to(self, device: torch.device | str) -> ReferenceBank:
        """Move rows, moments and ids to ``device`` (in place); returns ``self``."""
        for name in ("ids", "rows", "exp_avg", "exp_avg_sq", "steps"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def row_index(self, sample_ids: Tensor, is_weak: Tensor | None = None) -> Tensor:
        """Rows of ``sample_ids`` ``(B,)``; -1 where ``is_weak`` is False.

        Raises:
            ValueError: a weak sample id has no row (the bank was built for other samples).
        """
        sample_ids = sample_ids.to(self.ids.device, torch.int64)
        weak = (
            torch.ones_like(sample_ids, dtype=torch.bool)
            if is_weak is None
            else is_weak.to(self.ids.device, torch.bool)
        )
        pos = torch.searchsorted(self.ids, sample_ids).clamp(max=max(self.num_rows - 1, 0))
        found = self.ids[pos] == sample_ids if self.num_rows else torch.zeros_like(weak)
        missing = weak & ~found
        if bool(missing.any()):
            raise ValueError(
                f"reference bank has no row for weak sample id(s) "
                f"{sample_ids[missing][:5].tolist()}; the bank must be built from the same "
                "training samples (same data root, accurate_ratio and seed)"
            )
        return torch.where(weak, pos, torch.full_like(pos, -1))

    def gather(self, rows: Tensor) -> Tensor:
        """Detached prompts ``(B, P, D)`` for row indices ``(B,)`` (zeros where the row is -1)."""
        out = self.rows[rows.clamp_min(0)]  # (B, P, D)
        return torch.where((rows >= 0)[:, None, None], out, torch.zeros_like(out))

    def fill(
        self, embeds: Tensor, attention_mask: Tensor, sample_ids: Tensor, is_weak: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:func:`fill_prompts` with this bank's (detached) rows for the weak samples."""
        rows = self.row_index(sample_ids, is_weak)
        return fill_prompts(embeds, attention_mask, self.gather(rows), is_weak.to(embeds.device))

    def apply_gradients(
        self, rows: Tensor, grads: Tensor, num_samples: int, *, lr: float, weight_decay: float
    ) -> None:
        """One row-sparse AdamW step from per-row gradient *sums* of this rank.

        Under ``torch.distributed`` (this is a collective: every rank must call it, also with
        no rows) the (row, gradient) pairs of all ranks are gathered; gradients are divided by
        the total number of samples over all ranks, so the update equals that of one process
        holding the global batch. Duplicate rows have their gradients summed.

        Args:
            rows: ``(K,)`` row indices (no -1).
            grads: ``(K, P, D)`` gradients of the summed per-sample loss.
            num_samples: samples that contributed on this rank.
            lr: learning rate of this step.
            weight_decay: decoupled weight decay, applied to the updated rows only.
        """
        rows, grads, total = _gather_all_ranks(rows, grads.to(self.rows.dtype), num_samples)
        if total == 0 or rows.numel() == 0:
            return
        uniq, inverse = torch.unique(rows, return_inverse=True)  # (U,), (K,)
        grad = (
            torch.zeros(
                (uniq.numel(), *grads.shape[1:]), dtype=grads.dtype, device=grads.device
            ).index_add_(0, inverse, grads)
            / total
        )  # (U, P, D)
        b1, b2 = self.cfg.beta1, self.cfg.beta2
        steps = self.steps[uniq] + 1  # (U,)
        self.steps.index_copy_(0, uniq, steps)
        m = self.exp_avg[uniq].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.exp_avg_sq[uniq].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.exp_avg.index_copy_(0, uniq, m)
        self.exp_avg_sq.index_copy_(0, uniq, v)
        bc1 = (1 - b1 ** steps.double()).to(grad.dtype)[:, None, None]  # (U, 1, 1)
        bc2 = (1 - b2 ** steps.double()).to(grad.dtype)[:, None, None]
        param = self.rows[uniq].mul_(1 - lr * weight_decay)
        param.sub_(lr * (m / bc1) / ((v / bc2).sqrt() + self.cfg.eps))
        self.rows.index_copy_(0, uniq, param)

    def state_dict(self) -> dict[str, Tensor]:
        """Rows, moments, per-row step counts and the id mapping (all tensors)."""
        return {
            "ids": self.ids,
            "rows": self.rows,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`; the ids and shapes must match exactly."""
        missing = {"ids", "rows", "exp_avg", "exp_avg_sq", "steps"} - set(state)
        if missing:
            raise ValueError(f"reference bank state lacks {sorted(missing)}")
        ids = state["ids"].to(self.ids.device, torch.int64)
        if ids.shape != self.ids.shape or not torch.equal(ids, self.ids):
            raise ValueError(
                "reference bank state was saved for other sample ids; use the same data, "
                "accurate_ratio and seed as the run that saved it"
            )
        if state["rows"].shape != self.rows.shape:
            raise ValueError(
                f"reference bank state has rows {tuple(state['rows'].shape)}, "
                f"expected {tuple(self.rows.shape)}"
            )
        for name in ("rows", "exp_avg", "exp_avg_sq", "steps"):
            getattr(self, name).copy_(state[name])

    def save(self, path: str | Path) -> None:
        """Write the bank (with its id mapping) to a safetensors file."""
        from safetensors.torch import save_file

        save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(path))

    @classmethod
    def load(
        cls, path: str | Path, cfg: BankConfig | None = None, device: torch.device | str = "cpu"
    ) -> ReferenceBank:
        """Read a bank written by :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference bank file {path} does not exist")
        state = load_file(str(path))
        cfg = cfg or BankConfig()
        cfg = BankConfig(**{**cfg.__dict__, "num_prompts": int(state["rows"].shape[1])})
        bank = cls(state["ids"], int(state["rows"].shape[2]), cfg, device)
        bank.load_state_dict(state)
        return bank


def _gather_all_ranks(rows: Tensor, grads: Tensor, count: int) -> tuple[Tensor, Tensor, int]:
    """All-gather variable-length (rows, grads) and the sample counts of every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows, grads, count
    world = dist.get_world_size()
    device = grads.device
    meta = torch.tensor([rows.numel(), count], dtype=torch.int64, device=device)
    metas = [torch.zeros_like(meta) for _ in range(world)]
    dist.all_gather(metas, meta)
    sizes = [int(m[0]) for m in metas]
    total = sum(int(m[1]) for m in metas)
    longest = max(sizes)
    if longest == 0:
        return rows[:0], grads[:0], total
    pad = longest - rows.numel()
    rows_p = torch.cat([rows.to(device), rows.new_zeros(pad).to(device)])
    grads_p = torch.cat([grads, grads.new_zeros((pad, *grads.shape[1:]))])
    all_rows = [torch.zeros_like(rows_p) for _ in range(world)]
    all_grads = [torch.zeros_like(grads_p) for _ in range(world)]
    dist.all_gather(all_rows, rows_p)
    dist.all_gather(all_grads, grads_p)
    rows_out = torch.cat([r[:n] for r, n in zip(all_rows, sizes, strict=True)])
    grads_out = torch.cat([g[:n] for g, n in zip(all_grads, sizes, strict=True)])
    return rows_out, grads_out, total
