"""Stage-kind registry: a plain dict from ``StageConfig.kind`` to the stage class."""

from __future__ import annotations

from wrel.methods.base import Stage, StageConfig, StageContext
from wrel.methods.lrb import BankInitStage, JointStage
from wrel.methods.retrieval import RetrieveStage
from wrel.methods.supervised import SupervisedStage

__all__ = ["STAGE_KINDS", "build_stage"]

STAGE_KINDS: dict[str, type[Stage]] = {
    "supervised": SupervisedStage,
    "bank_init": BankInitStage,
    "joint": JointStage,
    "retrieve": RetrieveStage,
}


def build_stage(cfg: StageConfig, ctx: StageContext) -> Stage:
    """Instantiate the stage of kind ``cfg.kind``; unknown kinds list the valid ones."""
    try:
        cls = STAGE_KINDS[cfg.kind]
    except KeyError:
        raise ValueError(
            f"unknown stage kind {cfg.kind!r}; valid kinds: {sorted(STAGE_KINDS)}"
        ) from None
    return cls(cfg, ctx)
