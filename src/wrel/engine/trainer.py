"""The one training loop: every method is a list of stages run by :class:`Trainer`.

Anatomy of a run (``runs/<name>/``)::

    config.json          resolved ExperimentConfig
    metrics.jsonl        one JSON object per logged train step / evaluation
    risk_trace.jsonl     with train.trace_class_names: per-sample val losses (1 - IoU) with
                         accurate expressions and with class names, one line per evaluation
    checkpoints/last/    resume state (safetensors + JSON), rewritten atomically
    checkpoints/best/    exported student (save_model), best on val over the final stage
    bank.safetensors     the reference bank with its id mapping (methods that use one)
    final_metrics.json   test metrics of the best model, evaluated once at the end

The loop never looks at the method's name: it builds each stage from its config, feeds it
batches of the stage's sample view, and hands the result (student + bank) to the next stage.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from wrel.config import dumps, to_dict
from wrel.engine.distributed import (
    DistInfo,
    barrier,
    ddp_wrapper,
    init_distributed,
    resolve_device,
    shutdown,
)
from wrel.engine.loaders import StageData, eval_loader, load_split_samples, stage_data
from wrel.engine.stages import build_stage
from wrel.engine.state import capture_rng, load_resume_state, restore_rng, save_resume_state
from wrel.engine.validation import evaluate_model, metric_value
from wrel.experiment import ExperimentConfig
from wrel.methods.base import Handover, NonFiniteLossError, Stage, StageConfig, StageContext

__all__ = ["train", "Trainer", "LoopState", "TRACE_FILE"]

log = logging.getLogger(__name__)

#: Per-evaluation accurate vs class-name val losses (``train.trace_class_names``).
TRACE_FILE = "risk_trace.jsonl"


@dataclass
class LoopState:
    """Where the loop is; saved with every resume checkpoint."""

    stage_index: int = 0
    epoch: int = 0  # epochs completed in the current stage
    iteration: int = 0  # iterations completed in the current epoch
    global_step: int = 0
    best_value: float | None = None


def train(cfg: ExperimentConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) an experiment; returns the final metrics with ``run_dir``."""
    return Trainer(cfg, resume=resume).run()


class Trainer:
    """Runs the stages of ``cfg``; see the module docstring for the run folder."""

    def __init__(self, cfg: ExperimentConfig, *, resume: bool = False) -> None:
        self.cfg = cfg
        self.resume = resume
        self.device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist: DistInfo = DistInfo()
        self.run_dir = Path(cfg.train.output_dir) / cfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"

    # -- top level ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train every stage, export the best student, evaluate it on test once."""
        self.dist = init_distributed(self.device)
        try:
            if self.cfg.train.batch_size % self.dist.world_size:
                raise ValueError(
                    f"train.batch_size={self.cfg.train.batch_size} (the global batch) must be "
                    f"divisible by the number of ranks ({self.dist.world_size})"
                )
            self.samples = load_split_samples(self.cfg.data)
            resumed = self._prepare_run_dir()
            handover = self._run_stages(resumed)
            return self._finish(handover)
        finally:
            shutdown(self.dist)

    def _prepare_run_dir(self) -> dict[str, Any] | None:
        saved = self.run_dir / "config.json"
        if self.resume:
            if not saved.is_file():
                raise FileNotFoundError(f"nothing to resume: {saved} does not exist")
            if _comparable(json.loads(saved.read_text())) != _comparable(
                json.loads(dumps(self.cfg))
            ):
                raise ValueError(
                    f"--resume with a config that differs from {saved}; resume with the same "
                    "options (progress/num_workers may differ) or start a new --name"
                )
            state = load_resume_state(self.ckpt_dir / "last")
            self._truncate_log(int(state["loop"]["global_step"]))
            return state
        if self.ckpt_dir.exists():
            raise ValueError(
                f"run folder {self.run_dir} already has checkpoints; pass --resume to continue "
                "it or choose another --name / train.output_dir"
            )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(dumps(self.cfg))
            (self.run_dir / "metrics.jsonl").write_text("")
        barrier(self.dist)
        return None

    # -- stages -------------------------------------------------------------------------------

    def _run_stages(self, resumed: dict[str, Any] | None) -> Handover:
        from wrel.models import build_model

        torch.manual_seed(self.cfg.train.seed)  # identical initial weights on every rank
        model = build_model(self.cfg.model).to(self.device)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        torch.manual_seed(self.cfg.train.seed + 1000 * self.dist.rank)  # per-rank dropout
        state = LoopState(**resumed["loop"]) if resumed else LoopState()
        handover = Handover(model, None)
        for index in range(state.stage_index, len(self.cfg.stages)):
            scfg = self.cfg.stages[index]
            if index != state.stage_index:
                state.stage_index, state.epoch, state.iteration = index, 0, 0
            data = stage_data(self.cfg, scfg, self.samples["train"], self.dist)
            stage = build_stage(scfg, self._context(handover, data))
            if resumed is not None and index == resumed["loop"]["stage_index"]:
                stage.load_state_dict(resumed["stage"])
                restore_rng(resumed["rng"])
            self._run_stage(stage, scfg, data, state)
            handover = stage.handover()
            del stage
        return handover

    def _context(self, handover: Handover, data: StageData) -> StageContext:
        weak_ids = [s.sample_id for s in self.samples["train"] if s.quality == "weak"]
        return StageContext(
            model=handover.model,
            device=self.device,
            iters_per_epoch=data.iters_per_epoch,
            weak_ids=weak_ids,
            bank_cfg=self.cfg.bank,
            bank=handover.bank,
            amp=self.cfg.train.amp,
            channels_last=self.cfg.train.channels_last,
            wrap=ddp_wrapper(self.dist, self.device, self.cfg.train.find_unused_parameters),
        )

    def _run_stage(
        self, stage: Stage, scfg: StageConfig, data: StageData, state: LoopState
    ) -> None:
        name = scfg.name or f"{state.stage_index}-{scfg.kind}"
        ipe = data.iters_per_epoch
        for epoch in range(state.epoch, scfg.epochs):
            loader = data.loader(epoch, skip_batches=state.iteration)
            bar = tqdm(
                total=ipe,
                initial=state.iteration,
                desc=f"{name} {epoch + 1}/{scfg.epochs}",
                disable=None if (self.cfg.train.progress and self.dist.is_main) else True,
            )
            for batch in loader:
                progress = epoch + state.iteration / ipe
                try:
                    logs = stage.training_step(batch, progress)
                except NonFiniteLossError as err:
                    self._log(
                        {
                            "event": "error",
                            "stage": name,
                            "step": state.global_step,
                            "message": str(err),
                        }
                    )
                    log.error("%s; last good checkpoint: %s", err, self.ckpt_dir / "last")
                    raise
                state.iteration += 1
                state.global_step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if "loss" in k})
                if state.global_step % self.cfg.train.log_every == 0 or state.iteration == ipe:
                    self._log(
                        {
                            "event": "train",
                            "stage": name,
                            "epoch": epoch,
                            "step": state.global_step,
                            "progress": round(progress, 6),
                            **logs,
                        }
                    )
                every = self.cfg.train.checkpoint_every
                if every and state.global_step % every == 0 and state.iteration < ipe:
                    self._save_state(stage, state)
            bar.close()
            state.epoch, state.iteration = epoch + 1, 0
            self._maybe_evaluate(stage, scfg, name, state)
            # Resume point at each epoch end; a stage with scfg.eval_every = k (many short
            # epochs) saves every k epochs and at its end (plus every train.checkpoint_every).
            k = max(1, scfg.eval_every or 1)
            if state.epoch % k == 0 or state.epoch == scfg.epochs:
                self._save_state(stage, state)

    def _maybe_evaluate(self, stage: Stage, scfg: StageConfig, name: str, state: LoopState) -> None:
        every = max(1, scfg.eval_every or self.cfg.train.eval_every)
        due = state.epoch % every == 0 or state.epoch == scfg.epochs
        if not (scfg.evaluate and due and self.samples.get("val")):
            return
        model = stage.eval_model()
        trace = self.cfg.train.trace_class_names
        metrics = evaluate_model(
            model,
            eval_loader(self.cfg, self.samples["val"]),
            self.device,
            protocol=self.cfg.train.protocol,
            amp=self.cfg.train.amp,
            desc=f"val {name}",
            progress=self.cfg.train.progress and self.dist.is_main,
            per_sample=trace,
        )
        where = {"stage": name, "epoch": state.epoch - 1, "step": state.global_step}
        extra = self._trace_class_names(model, where, metrics.pop("samples")) if trace else {}
        self._log({"event": "val", **where, **_jsonable(metrics), **extra})
        if state.stage_index != len(self.cfg.stages) - 1:
            return  # the best checkpoint is chosen among the final stage's students only
        value = metric_value(metrics, self.cfg.train.select_metric)
        if state.best_value is None or value > state.best_value:
            state.best_value = value
            self._export_best(
                model,
                {
                    "stage": name,
                    "epoch": state.epoch - 1,
                    "step": state.global_step,
                    "val": _jsonable(metrics),
                },
            )

    def _trace_class_names(
        self, model: torch.nn.Module, where: dict[str, Any], accurate: list[Any]
    ) -> dict[str, Any]:
        """Score val with class names; append the paired per-sample losses to the trace."""
        from wrel.data.dataset import class_name_view
        from wrel.theory.estimators import paired_losses

        weak = evaluate_model(
            model,
            eval_loader(self.cfg, class_name_view(self.samples["val"])),
            self.device,
            protocol=self.cfg.train.protocol,
            amp=self.cfg.train.amp,
            desc="val class names",
            progress=self.cfg.train.progress and self.dist.is_main,
            per_sample=True,
        )
        loss, loss_weak, ids = paired_losses(accurate, weak.pop("samples"))
        self._log(
            {
                **where,
                "risk": float(loss.mean()),
                "risk_class_name": float(loss_weak.mean()),
                "sample_ids": ids.tolist(),
                "loss": [round(float(x), 5) for x in loss],
                "loss_class_name": [round(float(x), 5) for x in loss_weak],
            },
            TRACE_FILE,
        )
        return {"class_name": {k: float(weak[k]) for k in ("oIoU", "mIoU")}}

    # -- files --------------------------------------------------------------------------------

    def _export_best(self, model: torch.nn.Module, info: dict[str, Any]) -> None:
        from wrel.engine.checkpoint import save_model

        if self.dist.is_main:
            size = self.cfg.data.image_size
            metadata = {
                "method": self.cfg.method,
                "image_size": [size, size],  # read by wrel.inference.Predictor
                "dataset": {
                    "root": str(self.cfg.data.root),
                    "name": self.cfg.data.name,
                    "accurate_ratio": self.cfg.data.accurate_ratio,
                    "split_file": self.cfg.data.split_file,
                },
                "protocol": self.cfg.train.protocol,
                "experiment": to_dict(self.cfg),
                **info,
            }
            save_model(self.ckpt_dir / "best", model, metadata)  # type: ignore[arg-type]
        barrier(self.dist)

    def _save_state(self, stage: Stage, state: LoopState) -> None:
        if self.dist.is_main:
            save_resume_state(
                self.ckpt_dir / "last",
                {
                    "loop": asdict(state),
                    "stage": stage.state_dict(),
                    "rng": capture_rng(),
                },
            )
        barrier(self.dist)

    def _log(self, record: dict[str, Any], file: str = "metrics.jsonl") -> None:
        if self.dist.is_main:
            with (self.run_dir / file).open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _truncate_log(self, global_step: int) -> None:
        """Drop log and trace lines written after the checkpoint we resume from (rank 0)."""
        for path in (self.run_dir / "metrics.jsonl", self.run_dir / TRACE_FILE):
            if not (self.dist.is_main and path.is_file()):
                continue
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= global_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, path)

    def _finish(self, handover: Handover) -> dict[str, Any]:
        from wrel.engine.checkpoint import load_model

        best = self.ckpt_dir / "best"
        if not best.exists():  # no val split or no evaluation: the final student is the result
            self._export_best(handover.model, {"stage": "final", "step": None, "val": None})
        result: dict[str, Any] = {"run_dir": str(self.run_dir), "method": self.cfg.method}
        if self.dist.is_main:
            if handover.bank is not None:
                handover.bank.save(self.run_dir / "bank.safetensors")
            model, metadata = load_model(best, device=self.device)
            result.update(protocol=self.cfg.train.protocol, best=_best_info(metadata))
            if self.samples.get("test"):
                result["test"] = _jsonable(
                    evaluate_model(
                        model,
                        eval_loader(self.cfg, self.samples["test"]),
                        self.device,
                        protocol=self.cfg.train.protocol,
                        amp=self.cfg.train.amp,
                        desc="test",
                    )
                )
            path = self.run_dir / "final_metrics.json"
            path.with_suffix(".tmp").write_text(json.dumps(result, indent=2, sort_keys=True))
            os.replace(path.with_suffix(".tmp"), path)
            log.info("final metrics written to %s", path)
        barrier(self.dist)
        return result


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict minus the knobs that may change on resume."""
    data["train"].pop("progress", None)
    data["data"].pop("num_workers", None)
    return data


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(metrics, default=float))


def _best_info(metadata: dict[str, Any]) -> dict[str, Any]:
    meta = metadata.get("metadata", metadata)
    return {k: meta.get(k) for k in ("stage", "epoch", "step", "val")}
