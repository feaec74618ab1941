"""Supervised training on a chosen view of the training set.

With ``samples="accurate"`` this is Only-Accurate (and LRB stage 1, the teacher warm-up); with
``samples="all"`` it is Naive-WREL (weak samples see their class name as text) or Full (when the
data has every expression accurate, ``accurate_ratio = 1``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from wrel.methods.base import Handover, Stage, StageConfig, StageContext
from wrel.methods.losses import seg_loss
from wrel.methods.optim import build_optimizer, build_poly_scheduler
from wrel.methods.retrieval import ExpressionBank

__all__ = ["SupervisedStage"]

log = logging.getLogger(__name__)


class SupervisedStage(Stage):
    """Segmentation loss on the batch's own text; updates model and text encoder."""

    def __init__(self, cfg: StageConfig, ctx: StageContext) -> None:
        super().__init__(cfg, ctx)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_poly_scheduler(
            self.optimizer, self.total_iters, cfg.optim.poly_power
        )
        # The (DDP-)wrapped forward is kept outside the module tree: no duplicate state keys.
        self.__dict__["forward_model"] = ctx.wrap(self.model)
        self.keep_best = getattr(cfg, "handover", "last") == "best"
        # handover="best": the best val score so far, where it was measured, and the model's
        # weights then (on the CPU)
        self.best: dict[str, Any] | None = None
        self._handed_over: dict[str, Any] | None = None
        # weak_text="retrieved": the expression bank of a preceding retrieve stage (handed over,
        # or restored by load_state_dict when the run resumes inside this stage)
        self.retrieved = getattr(cfg, "weak_text", "class_name") == "retrieved"

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, float]:
        """Forward with real text / class names, weighted CE + Dice, one AdamW step."""
        self.model.train()
        if self.retrieved:
            batch = {**batch, "text": self._retrieved_texts(batch)}
        b = self.prepare(batch)
        with self.autocast():
            out = self.forward_model(
                b.images, input_ids=b.input_ids, attention_mask=b.attention_mask
            )
        loss = seg_loss(out.logits, b.masks, self.cfg.dice, self.cfg.loss_reduction)
        self.check_finite(loss, "segmentation loss", progress)
        self.optimizer_step(self.optimizer, loss, self.model.parameters())
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return {"loss": float(loss.detach()), "lr": float(lr)}

    def _retrieved_texts(self, batch: dict[str, Any]) -> list[str]:
        """The batch's texts, each weak sample's class name replaced by its retrieved
        expression."""
        if self.ctx.expressions is None:
            raise ValueError(
                f"stage {self.cfg.name or self.cfg.kind!r}: weak_text=retrieved needs the "
                "expression bank of a retrieve stage before it (wrel.methods.retrieval)"
            )
        return self.ctx.expressions.texts(
            torch.as_tensor(batch["sample_id"]), torch.as_tensor(batch["is_weak"]), batch["text"]
        )

    def observe_val(self, value: float, where: dict[str, Any]) -> None:
        """With ``handover="best"``: keep the model's weights when ``value`` is the best so far
        (ties go to the later point, as for the run's exported best)."""
        if not self.keep_best or (self.best is not None and value < self.best["value"]):
            return
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.best = {"value": float(value), "where": copy.deepcopy(where), "model": weights}

    def handover(self) -> Handover:
        """The last model, or with ``handover="best"`` the one at the best val point (the last
        when no val score was seen, with a warning)."""
        if self.keep_best:
            if self.best is None:
                log.warning(
                    "stage %r: handover=best but no val score was seen (no val split?); "
                    "handing over its last model",
                    self.cfg.name or self.cfg.kind,
                )
                self._handed_over = {"handover": "last", "reason": "no val score"}
            else:
                self.model.load_state_dict(self.best["model"], strict=True)
                self._handed_over = {
                    "handover": "best",
                    "val": self.best["value"],
                    **{f"best_{k}": v for k, v in self.best["where"].items()},
                }
        return Handover(self.model, self.ctx.bank, self.ctx.expressions)

    def handover_info(self) -> dict[str, Any] | None:
        return self._handed_over

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.best is not None:
            state["best"] = self.best
        if self.retrieved and self.ctx.expressions is not None:
            state["expressions"] = self.ctx.expressions.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        best = state.get("best")
        if best is not None and not self.keep_best:
            raise ValueError(
                "the resume state holds a best model for handover=best, but this stage hands "
                "over its last model: the run's config changed since it was saved"
            )
        self.best = best
        if self.retrieved and "expressions" in state:
            if self.ctx.expressions is None:
                self.ctx.expressions = ExpressionBank.from_state(state["expressions"])
            else:
                self.ctx.expressions.load_state_dict(state["expressions"])
