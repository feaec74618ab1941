"""The learnable reference bank (docs/training.md, "Reference bank") and its row-sparse AdamW.

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

Variants that limit what a row can store (``BankConfig``; the defaults are the plain bank above,
see docs/variants.md "Bank variants"):

- ``parametrization="vocab"``: each prompt slot is a softmax mixture over a vocabulary's word
  embeddings, ``prompt = softmax(logits / T) @ vocab``, so prompts stay in the convex hull of
  the vocabulary; the learnable rows are the logits ``(N_weak, P, V)``. ``vocab`` is a snapshot
  of the word-embedding rows of the vocabulary's tokens, taken when the bank is built. The
  temperature of row ``r`` anneals geometrically with the row's own update count ``s_r``:
  ``T_r = T_start * (T_end / T_start) ** min(1, s_r / temperature_steps)``.
- ``projection="nearest"``: the forward pass uses the nearest vocabulary row (the argmax of the
  mixture, or, for a free bank, the closest row in Euclidean distance), the backward pass the
  gradient of the unprojected prompt (straight-through).
- ``max_norm = r > 0`` (free bank): after every update each prompt vector is projected onto the
  ball of radius ``r`` times the mean word-embedding norm of the model's table.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from wrel.core.outfiles import fsync_file
from wrel.methods.bank_optim import dense_adamw_step

__all__ = [
    "BankConfig",
    "DEFAULT_VOCAB_WORDS",
    "ReferenceBank",
    "fill_prompts",
    "text_inputs",
    "vocab_token_ids",
    "word_embedding_table",
]

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
    # sparse: row-lazy AdamW (only the batch's rows move); dense: AdamW over every row at every
    # step, as the released code (wrel.methods.bank_optim; docs/paper-recipe.md "Paper recipe")
    optimizer: Literal["sparse", "dense"] = "sparse"
    # -- variants (docs/variants.md "Bank variants"); the defaults are the plain free bank --
    parametrization: Literal["free", "vocab"] = "free"  # vocab: softmax mixtures of words
    vocab_words: list[str] | None = None  # vocabulary of the vocab bank / projection (tokenised
    # with the model's tokenizer); None: DEFAULT_VOCAB_WORDS
    full_vocab: bool = False  # use the whole word-embedding table instead (memory-checked)
    temperature_start: float = 1.0  # vocab bank: softmax temperature of a fresh row ...
    temperature_end: float = 0.1  # ... annealed geometrically to this one ...
    temperature_steps: int = 15  # ... over this many updates of the row (0: T_end at once)
    projection: Literal["none", "nearest"] = "none"  # nearest: straight-through nearest token
    max_norm: float = 0.0  # free bank: > 0 caps each prompt's norm at max_norm * mean word norm
    max_memory_gb: float = 4.0  # refuse a vocab bank whose rows + moments exceed this
    # Leakage monitor (wrel.engine.leakage): weak training samples scored at each evaluation
    leakage_samples: int = 64  # 0 disables it
    leakage_seed: int = 0  # fixes which weak samples are scored

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value."""
        checks = [
            (self.num_prompts >= 1, "num_prompts must be >= 1"),
            (self.init_std >= 0, "init_std must be >= 0"),
            (self.parametrization in ("free", "vocab"), "parametrization must be free or vocab"),
            (self.projection in ("none", "nearest"), "projection must be none or nearest"),
            (
                0 < self.temperature_end <= self.temperature_start,
                "temperatures must satisfy 0 < temperature_end <= temperature_start",
            ),
            (self.temperature_steps >= 0, "temperature_steps must be >= 0"),
            (self.max_norm >= 0, "max_norm must be >= 0 (0 disables the norm bound)"),
            (
                not (self.max_norm > 0 and self.parametrization == "vocab"),
                "max_norm applies to the free bank; a vocab bank is already bounded by the "
                "convex hull of its vocabulary (set max_norm=0)",
            ),
            (self.max_memory_gb > 0, "max_memory_gb must be > 0"),
            (self.optimizer in ("sparse", "dense"), "optimizer must be sparse or dense"),
            (self.leakage_samples >= 0, "leakage_samples must be >= 0 (0 disables the monitor)"),
            (
                self.vocab_words is None or len(self.vocab_words) > 0,
                "vocab_words must be None (the default list) or a non-empty list of words",
            ),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError(f"bank config: {'; '.join(bad)} (got {asdict(self)})")

    @property
    def needs_vocab(self) -> bool:
        """Whether the bank needs vocabulary embeddings (vocab bank or nearest projection)."""
        return self.parametrization == "vocab" or self.projection == "nearest"


#: The default vocabulary of the vocab bank: the words an expression adds to a class name in
#: RRSIS-D-style data (position, size, colour, relation) and the spoken RRSIS-D class names.
DEFAULT_VOCAB_WORDS: tuple[str, ...] = (
    # position
    "left", "right", "top", "bottom", "upper", "lower", "middle", "center", "side", "corner",
    "leftmost", "rightmost", "topmost", "bottommost", "uppermost", "lowest", "far", "edge",
    # size
    "largest", "smallest", "biggest", "tiniest", "large", "small", "big", "tiny", "long", "short",
    # colour
    "red", "white", "black", "gray", "grey", "blue", "green", "orange", "yellow", "brown",
    "dark", "light",
    # relation
    "next", "beside", "near", "close", "between", "above", "below", "behind",
    # other objects (RRSIS-D class names, spoken)
    "airplane", "airport", "baseball", "basketball", "bridge", "chimney", "dam", "golf",
    "field", "ground", "track", "harbor", "overpass", "ship", "stadium", "storage", "tank",
    "tennis", "court", "train", "station", "vehicle", "windmill", "expressway", "service",
    "area", "toll",
)  # fmt: skip


def text_inputs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    bank: ReferenceBank | None = None,
    sample_ids: Tensor | None = None,
    prompted: Tensor | None = None,
) -> dict[str, Tensor]:
    """The text keyword arguments of ``model(images, **text)``, for training and evaluation alike.

    Without a bank: the token ids. With one: the word embeddings of the text (the class name for
    weak samples) with the bank's prompts written into the free slots of the ``prompted``
    samples ``(B,)`` bool (:meth:`ReferenceBank.fill`), as ``inputs_embeds``.
    """
    if bank is None:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    if sample_ids is None or prompted is None:
        raise ValueError("text_inputs: a bank needs sample_ids and prompted")
    embeds = model.embed_tokens(input_ids)  # type: ignore[operator]  # (B, L, D)
    filled, mask = bank.fill(embeds, attention_mask, sample_ids, prompted)
    return {"inputs_embeds": filled, "attention_mask": mask}


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


def word_embedding_table(model: Any) -> Tensor:
    """The word-embedding table ``(V_all, D)`` behind ``model.embed_tokens``.

    Found as the ``nn.Embedding`` of ``model`` whose output equals ``embed_tokens`` on a few
    ids, so it works for any model with the documented interface.

    Raises:
        ValueError: no such embedding.
    """
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings > 0:
            probe = torch.arange(min(4, module.num_embeddings), device=module.weight.device)
            with torch.no_grad():
                same = model.embed_tokens(probe[None])[0]
                if same.shape == (probe.numel(), module.embedding_dim) and torch.equal(
                    same, module(probe)
                ):
                    return module.weight
    raise ValueError(
        f"{type(model).__name__} has no nn.Embedding that embed_tokens reads from; the bank "
        "variants that use the vocabulary need the model's word-embedding table"
    )


def vocab_token_ids(model: Any, cfg: BankConfig) -> Tensor:
    """Sorted unique token ids ``(V,)`` of the bank's vocabulary.

    ``cfg.full_vocab``: every row of the word-embedding table. Otherwise the words of
    ``cfg.vocab_words`` (default :data:`DEFAULT_VOCAB_WORDS`) tokenised with ``model.tokenize``,
    without padding and the special tokens the tokenizer adds around every text (those of an
    empty text). A word split into several pieces contributes every piece.
    """
    if cfg.full_vocab:
        return torch.arange(word_embedding_table(model).shape[0], dtype=torch.int64)
    words = list(cfg.vocab_words) if cfg.vocab_words is not None else list(DEFAULT_VOCAB_WORDS)
    bad = [w for w in words if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ValueError(f"bank.vocab_words holds empty or non-string entries: {bad[:5]}")
    ids, mask = model.tokenize(words)  # (W, L) each
    empty_ids, empty_mask = model.tokenize([""])
    special = empty_ids[empty_mask.bool()]  # e.g. [CLS], [SEP]
    keep = mask.bool() & ~torch.isin(ids, special)
    vocab = ids[keep].unique()  # sorted
    if vocab.numel() == 0:
        raise ValueError(
            f"bank.vocab_words {words[:5]}... tokenise to no ordinary token; give real words"
        )
    return vocab.to(torch.int64)


class ReferenceBank:
    """Per-sample prompt rows keyed by sample id, with a row-sparse AdamW.

    ``rows`` holds the learnable parameters: the prompts ``(N, P, D)`` of a free bank, or the
    mixture logits ``(N, P, V)`` of a vocab bank; :meth:`prompts` maps them to prompt vectors.
    Build a bank that needs the vocabulary (or a norm bound) with :meth:`for_model`.

    Args:
        sample_ids: ids of the weak training samples (any order, unique).
        dim: ``D``, the text encoder's word-embedding width.
        cfg: bank settings.
        device: where rows and moments live.
        vocab_ids: ``(V,)`` token ids of the vocabulary (vocab bank / nearest projection).
        vocab: ``(V, D)`` their word embeddings.
        embed_norm: mean norm of the model's word embeddings (for ``cfg.max_norm``).
    """

    def __init__(
        self,
        sample_ids: Tensor | list[int],
        dim: int,
        cfg: BankConfig,
        device: torch.device | str = "cpu",
        *,
        vocab_ids: Tensor | None = None,
        vocab: Tensor | None = None,
        embed_norm: float | None = None,
    ) -> None:
        cfg.validate()
        ids = torch.as_tensor(sample_ids, dtype=torch.int64).flatten()
        if ids.numel() != ids.unique().numel():
            raise ValueError("reference bank: sample ids must be unique")
        if cfg.needs_vocab and (vocab is None or vocab_ids is None):
            raise ValueError(
                f"bank parametrization={cfg.parametrization!r} / projection={cfg.projection!r} "
                "needs the vocabulary embeddings; build the bank with ReferenceBank.for_model"
            )
        if cfg.max_norm > 0 and not (embed_norm and embed_norm > 0):
            raise ValueError("bank.max_norm needs the mean word-embedding norm (for_model)")
        self.cfg = cfg
        self.ids = ids.sort().values.to(device)  # (N,) row r <-> ids[r]
        self.vocab_ids = torch.zeros(0, dtype=torch.int64, device=device)  # (V,)
        self.vocab = torch.zeros(0, dim, device=device)  # (V, D)
        if vocab is not None and vocab_ids is not None:
            if vocab.ndim != 2 or vocab.shape != (vocab_ids.numel(), dim):
                raise ValueError(
                    f"bank vocabulary embeddings {tuple(vocab.shape)} do not match "
                    f"{vocab_ids.numel()} token ids of width {dim}"
                )
            self.vocab_ids = vocab_ids.to(device, torch.int64)
            self.vocab = vocab.detach().to(device, torch.float32)
        self.embed_norm = float(embed_norm or 0.0)
        width = dim
        if cfg.parametrization == "vocab":
            width = self.vocab.shape[0]
            self._check_memory(width)
        gen = torch.Generator().manual_seed(cfg.seed)
        shape = (self.ids.numel(), cfg.num_prompts, width)
        self.rows = (torch.randn(shape, generator=gen) * cfg.init_std).to(device)  # (N, P, D|V)
        self.exp_avg = torch.zeros_like(self.rows)
        self.exp_avg_sq = torch.zeros_like(self.rows)
        self.steps = torch.zeros(self.ids.numel(), dtype=torch.int64, device=device)  # (N,)
        if cfg.max_norm > 0:
            self.project_rows(torch.arange(self.num_rows, device=self.rows.device))

    @classmethod
    def for_model(
        cls,
        sample_ids: Tensor | list[int],
        model: Any,
        cfg: BankConfig,
        device: torch.device | str = "cpu",
    ) -> ReferenceBank:
        """A bank for ``model``'s word-embedding space, with the vocabulary ``cfg`` asks for.

        The vocabulary embeddings are a snapshot of ``model``'s table now (detached).
        """
        probe = torch.zeros(1, 1, dtype=torch.int64, device=device)
        with torch.no_grad():
            dim = int(model.embed_tokens(probe).shape[-1])
            vocab_ids = vocab = None
            embed_norm = None
            if cfg.needs_vocab:
                vocab_ids = vocab_token_ids(model, cfg).to(device)
                if cfg.parametrization == "vocab":  # refuse before embedding a huge vocabulary
                    cls._memory_check(cfg, len(torch.as_tensor(sample_ids)), vocab_ids.numel())
                vocab = model.embed_tokens(vocab_ids[None])[0].float()
            if cfg.max_norm > 0:
                embed_norm = float(word_embedding_table(model).float().norm(dim=-1).mean())
        return cls(
            sample_ids, dim, cfg, device, vocab_ids=vocab_ids, vocab=vocab, embed_norm=embed_norm
        )

    @staticmethod
    def _memory_check(cfg: BankConfig, num_rows: int, vocab_size: int) -> None:
        need = 12 * num_rows * cfg.num_prompts * vocab_size  # rows + 2 AdamW moments, float32
        gb = need / 1e9
        if gb > cfg.max_memory_gb:
            raise ValueError(
                f"a vocab bank of {num_rows} rows x {cfg.num_prompts} slots x {vocab_size} "
                f"words needs {gb:.1f} GB (logits + 2 AdamW moments, float32), over "
                f"bank.max_memory_gb={cfg.max_memory_gb}; restrict bank.vocab_words (and "
                "full_vocab=false), lower bank.num_prompts, or raise bank.max_memory_gb"
            )
        log.info(
            "vocab bank: %d rows x %d slots x %d words = %.3f GB (logits + moments)",
            num_rows,
            cfg.num_prompts,
            vocab_size,
            gb,
        )

    def _check_memory(self, vocab_size: int) -> None:
        self._memory_check(self.cfg, self.num_rows, vocab_size)

    @property
    def num_rows(self) -> int:
        return int(self.ids.numel())

    def to(self, device: torch.device | str) -> ReferenceBank:
        """Move rows, moments, ids and vocabulary to ``device`` (in place); returns ``self``."""
        for name in ("ids", "rows", "exp_avg", "exp_avg_sq", "steps", "vocab_ids", "vocab"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def reset_optimizer(self) -> None:
        """A fresh AdamW for the bank (``stages.<joint>.bank_moments=fresh``, as released): both
        moments and the per-row step counts back to 0, the rows kept. The step counts also set a
        vocab bank's temperature, whose anneal then starts again."""
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.steps.zero_()

    # -- parametrisation ---------------------------------------------------------------------

    def temperature(self, rows: Tensor) -> Tensor:
        """Softmax temperature ``(K,)`` of rows ``(K,)`` (vocab bank), from their update counts:
        ``T_start * (T_end / T_start) ** min(1, steps / temperature_steps)``."""
        cfg = self.cfg
        steps = self.steps[rows].to(torch.float32)
        if cfg.temperature_steps:
            frac = (steps / cfg.temperature_steps).clamp(max=1.0)
        else:
            frac = torch.ones_like(steps)
        ratio = cfg.temperature_end / cfg.temperature_start
        return cfg.temperature_start * torch.as_tensor(ratio, device=steps.device) ** frac

    def mixture_weights(self, rows: Tensor, params: Tensor | None = None) -> Tensor:
        """Vocab bank: the convex weights ``(K, P, V)`` (>= 0, summing to 1) of rows ``(K,)``;
        ``params`` (the rows' logits, e.g. a leaf that needs gradients) defaults to theirs."""
        if self.cfg.parametrization != "vocab":
            raise ValueError("mixture_weights: this bank is free (parametrization='free')")
        logits = self.rows[rows] if params is None else params
        temp = self.temperature(rows).to(logits.dtype)[:, None, None]  # (K, 1, 1)
        return torch.softmax(logits / temp, dim=-1)

    def prompts(self, rows: Tensor, params: Tensor | None = None) -> Tensor:
        """Prompt vectors ``(K, P, D)`` of rows ``(K,)`` (no -1), differentiable in ``params``.

        ``params``: the rows' parameters (default: the stored ones), e.g. a leaf tensor the bank
        step differentiates. Free bank: the prompts are the parameters; vocab bank: mixtures
        ``softmax(logits / T) @ vocab``. With ``projection="nearest"`` the forward value is the
        nearest vocabulary row and the gradient that of the unprojected prompt.
        """
        params = self.rows[rows] if params is None else params
        if self.cfg.parametrization == "vocab":
            weights = self.mixture_weights(rows, params)  # (K, P, V)
            soft = weights @ self.vocab.to(weights.dtype)  # (K, P, D)
            if self.cfg.projection == "nearest":
                hard = self.vocab[weights.argmax(dim=-1)].to(soft.dtype)  # (K, P, D)
                return hard + (soft - soft.detach())  # exactly hard forward, d soft backward
            return soft
        if self.cfg.projection == "nearest":
            vocab = self.vocab.to(params.dtype)
            nearest = torch.cdist(params.detach().flatten(0, 1), vocab).argmin(dim=-1)  # (K*P,)
            hard = vocab[nearest].view_as(params)
            return hard + (params - params.detach())  # exactly hard forward, identity grad
        return params

    def project_rows(self, rows: Tensor) -> None:
        """Apply the norm bound (``cfg.max_norm``, free bank) to rows ``(K,)`` in place.

        Called after every update; a custom optimiser writing ``rows`` should call it too.
        """
        if self.cfg.max_norm <= 0 or rows.numel() == 0:
            return
        radius = self.cfg.max_norm * self.embed_norm
        param = self.rows[rows]  # (K, P, D)
        norm = param.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.rows.index_copy_(0, rows, param * (radius / norm).clamp(max=1.0))

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
        with torch.no_grad():
            out = self.prompts(rows.clamp_min(0))  # (B, P, D)
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
        if self.cfg.optimizer == "dense":
            dense_adamw_step(self, rows, grads, total, lr=lr, weight_decay=weight_decay)
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
        self.project_rows(uniq)

    def state_dict(self) -> dict[str, Tensor]:
        """Rows, moments, per-row step counts and the id mapping (all tensors); plus the
        vocabulary (``vocab_ids``, ``vocab``) and ``embed_norm`` for the variants using them."""
        state = {
            "ids": self.ids,
            "rows": self.rows,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "steps": self.steps,
        }
        if self.cfg.needs_vocab:
            state.update(vocab_ids=self.vocab_ids, vocab=self.vocab)
        if self.cfg.max_norm > 0:
            state["embed_norm"] = torch.tensor(self.embed_norm, dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`; the ids and shapes must match exactly."""
        expected = set(self.state_dict())
        missing = expected - set(state)
        foreign = ({"vocab_ids", "vocab", "embed_norm"} & set(state)) - expected
        if missing or foreign:
            raise ValueError(
                f"reference bank state lacks {sorted(missing)} / has unexpected "
                f"{sorted(foreign)}: it was saved by a bank with other variant settings "
                "(bank.parametrization / projection / max_norm); use the run's settings"
            )
        ids = state["ids"].to(self.ids.device, torch.int64)
        if ids.shape != self.ids.shape or not torch.equal(ids, self.ids):
            raise ValueError(
                "reference bank state was saved for other sample ids; use the same data, "
                "accurate_ratio and seed as the run that saved it"
            )
        for name in ("rows", "vocab_ids", "vocab"):
            if name in expected and state[name].shape != getattr(self, name).shape:
                raise ValueError(
                    f"reference bank state has {name} {tuple(state[name].shape)}, "
                    f"expected {tuple(getattr(self, name).shape)}"
                )
        for name in ("rows", "exp_avg", "exp_avg_sq", "steps", "vocab_ids", "vocab"):
            if name in expected:
                getattr(self, name).copy_(state[name])
        if "embed_norm" in expected:
            self.embed_norm = float(state["embed_norm"])

    def save(self, path: str | Path, *, compact: bool = False) -> None:
        """Write the bank (with its id mapping and its config as metadata) to safetensors,
        atomically (a temporary file, then a rename).

        ``compact``: what a finished run keeps (``bank.safetensors``): the rows and the
        vocabulary in half precision (float32 for a tensor with values beyond its range), the
        ids and per-row step counts, and no AdamW moments: ``P * D * 2`` bytes per weak sample
        (15 KB at ``P = 20``, ``D = 384``) instead of ``3 * P * D * 4``. :meth:`load` reads
        both; a compact bank's moments restart at zero, so training it further is not the
        run's own continuation (that needs the resume state, ``--keep-training-state``).
        """
        from safetensors.torch import save_file

        path = Path(path)
        state = self.state_dict()
        metadata = {"bank_config": json.dumps(asdict(self.cfg))}
        if compact:
            state = {k: _half(k, v) for k, v in state.items() if k not in _MOMENTS}
            metadata["moments"] = "none"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in state.items()},
                str(tmp),
                metadata=metadata,
            )
            fsync_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(
        cls, path: str | Path, cfg: BankConfig | None = None, device: torch.device | str = "cpu"
    ) -> ReferenceBank:
        """Read a bank written by :meth:`save`.

        The variant settings saved with the file win over ``cfg`` (the file's tensors depend on
        them); ``num_prompts`` is read off the rows.
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference bank file {path} does not exist")
        try:  # safetensors' own error type, or bad JSON metadata: one clear ValueError
            state = load_file(str(path))
            with safe_open(str(path), framework="pt") as fh:
                saved = json.loads((fh.metadata() or {}).get("bank_config", "{}"))
        except (OSError, MemoryError):
            raise
        except Exception as err:
            raise ValueError(
                f"reference bank file {path} is damaged (truncated or corrupt?): "
                f"{' '.join(str(err).split())}; use the run's own bank.safetensors or retrain"
            ) from err
        if "rows" not in state or "ids" not in state:
            raise ValueError(f"{path} is not a reference bank file (no 'rows' / 'ids' tensors)")
        if not isinstance(saved, dict):
            raise ValueError(f"{path}: the bank_config metadata is not a JSON object")
        known = {f.name for f in fields(BankConfig)}
        values = {**(cfg or BankConfig()).__dict__}
        values.update({k: v for k, v in saved.items() if k in known})
        values["num_prompts"] = int(state["rows"].shape[1])
        cfg = BankConfig(**values)
        vocab = state.get("vocab")
        dim = int(vocab.shape[1]) if vocab is not None else int(state["rows"].shape[2])
        embed_norm = float(state["embed_norm"]) if "embed_norm" in state else None
        bank = cls(
            state["ids"],
            dim,
            cfg,
            device,
            vocab_ids=state.get("vocab_ids"),
            vocab=vocab,
            embed_norm=embed_norm,
        )
        for name in _MOMENTS:  # a compact bank (save(compact=True)): moments restart at 0
            state.setdefault(name, getattr(bank, name))
        bank.load_state_dict(state)
        return bank


#: The AdamW moments of the rows, left out of a compact bank file.
_MOMENTS = ("exp_avg", "exp_avg_sq")
#: Tensors of a compact bank file stored in half precision.
_HALF_TENSORS = ("rows", "vocab")


def _half(name: str, tensor: Tensor) -> Tensor:
    """``tensor`` in float16 when it is one of :data:`_HALF_TENSORS` and every value fits
    (finite and within float16's range); as it is otherwise."""
    if name not in _HALF_TENSORS or not tensor.is_floating_point() or tensor.numel() == 0:
        return tensor
    biggest = float(tensor.detach().abs().max())
    if not biggest <= torch.finfo(torch.float16).max:  # NaN or out of range: keep float32
        log.warning(
            "bank %s holds values beyond float16 (max |x| %g): kept in float32", name, biggest
        )
        return tensor
    return tensor.to(torch.float16)


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
