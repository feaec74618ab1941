"""Supervised training on a chosen view of the training set.

With ``samples="accurate"`` this is Only-Accurate (and LRB stage 1, the teacher warm-up); with
``samples="all"`` it is Naive-WREL (weak samples see their class name as text) or Full (when the
data has every expression accurate, ``accurate_ratio = 1``).
"""

from __future__ import annotations

from typing import Any

from wrel.methods.base import Stage, StageConfig, StageContext
from wrel.methods.losses import seg_loss
from wrel.methods.optim import build_optimizer, build_poly_scheduler

__all__ = ["SupervisedStage"]


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

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, float]:
        """Forward with real text / class names, weighted CE + Dice, one AdamW step."""
        self.model.train()
        b = self.prepare(batch)
        with self.autocast():
            out = self.forward_model(
                b.images, input_ids=b.input_ids, attention_mask=b.attention_mask
            )
        loss = seg_loss(out.logits, b.masks, self.cfg.dice)
        self.check_finite(loss, "segmentation loss", progress)
        self.optimizer_step(self.optimizer, loss, self.model.parameters())
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return {"loss": float(loss.detach()), "lr": float(lr)}

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
