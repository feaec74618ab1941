"""The one training loop: every method is a list of stages run by :class:`Trainer`.

Anatomy of a run (``runs/<name>/``)::

    config.json          resolved ExperimentConfig
    metrics.jsonl        one JSON object per logged train step / evaluation
    risk_trace.jsonl     with train.trace_class_names: per-sample val losses (1 - IoU) with
                         accurate expressions and with class names, one line per epoch-end
                         evaluation and per mid-epoch one that became the best
    checkpoints/best/    exported student (save_model: weights only, MODEL_CARD.md), best on
                         val over the final stage; its card gets the test metrics at the end
    bank.safetensors     the reference bank with its id mapping (methods that use one), compact:
                         half precision, no optimizer moments (ReferenceBank.save)
    expressions.json     per weak sample, the expression a retrieve stage chose (if any)
    expression_bank/     that bank's candidates and choices, read by `wrel bank decode`
    final_metrics.json   test metrics of the best model, evaluated once at the end
    tensorboard/         with train.tensorboard: the metrics.jsonl scalars as event files

    Training state, while the run trains (removed when it finishes, unless
    train.keep_training_state / --keep-training-state):
    checkpoints/last/    resume state (safetensors + JSON + SHA-256 manifest), rewritten atomically
    checkpoints/last.prev/  the previous resume state (the fallback of a damaged last/);
                         not kept with train.keep_previous_checkpoint=false
    checkpoints/best/    exported student (save_model: weights only, MODEL_CARD.md), best on
                         val over the final stage; its card gets the test metrics at the end
    checkpoints/best-oIoU/, best-mIoU/  with train.best_per_metric: the final stage's best
                         student by each metric (as the released code keeps both)
    bank.safetensors     the reference bank with its id mapping (methods that use one)
    expressions.json     per weak sample, the expression a retrieve stage chose (if any)
    final_metrics.json   test metrics of the best model, evaluated once at the end
    checkpoints/stage-<i>/  with train.keep_stage_checkpoints (`wrel bench`): the end of stage i
                         without its optimizer, for runs sharing the first stages (kept at the end)

The loop never looks at the method's name: it builds each stage from its config, feeds it
batches of the stage's sample view, and hands the result (student + bank) to the next stage.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from wrel.core.bounded import load_json
from wrel.core.config_io import dumps, from_dict, to_dict
from wrel.core.distributed import (
    DistInfo,
    barrier,
    ddp_wrapper,
    init_distributed,
    resolve_device,
    shutdown,
)
from wrel.core.progress import Progress
from wrel.data.dataset import class_name_view
from wrel.data.preprocessing import Preprocessing
from wrel.engine.checkpoint import (
    CheckpointError,
    atomic_write_text,
    checkpoint_temps,
    load_model,
    remove_stale_temps,
    save_model,
    update_model_metadata,
    write_errors,
    writer_alive,
)
from wrel.engine.experiment import ExperimentConfig, validate_experiment
from wrel.engine.leakage import measure_leakage, monitored_bank
from wrel.engine.loaders import StageData, eval_loader, load_split_samples, stage_data
from wrel.engine.resume_checks import check_iteration, check_loop_state
from wrel.engine.stages import build_stage
from wrel.engine.state import (
    capture_rng,
    complete_stage_state,
    find_resume_dir,
    finished_stage_state,
    keep_stage_end,
    read_resume_state,
    remove_training_state,
    restore_rng,
    save_resume_state,
)
from wrel.engine.tensorboard import TensorBoardLog, require_tensorboard
from wrel.engine.validation import evaluate_model, metric_value
from wrel.evaluation.per_sample import paired_losses
from wrel.methods.base import (
    Handover,
    JointConfig,
    NonFiniteLossError,
    Stage,
    StageConfig,
    StageContext,
)
from wrel.models import build_model

__all__ = ["train", "Trainer", "LoopState", "TRACE_FILE", "EXPRESSION_BANK_DIR"]

log = logging.getLogger(__name__)

#: Per epoch-end evaluation: accurate vs class-name val losses (``train.trace_class_names``).
TRACE_FILE = "risk_trace.jsonl"
#: A finished retrieve run's expression bank (candidates, choices, pool), as a resume-format
#: folder (``wrel bank decode`` reads it once ``checkpoints/last`` is gone).
EXPRESSION_BANK_DIR = "expression_bank"


@dataclass
class LoopState:
    """Where the loop is; saved with every resume checkpoint."""

    stage_index: int = 0
    epoch: int = 0  # epochs completed in the current stage
    iteration: int = 0  # iterations completed in the current epoch
    global_step: int = 0
    best_value: float | None = None
    #: seconds the run had trained when this state was saved, counted over every process
    #: that worked on it (a killed process up to its last checkpoint: the steps it did after
    #: that are done again and counted once); None when a resumed state predates the field
    elapsed_s: float | None = 0.0


def train(cfg: ExperimentConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) an experiment; returns the final metrics with ``run_dir``."""
    return Trainer(cfg, resume=resume).run()


class Trainer:
    """Runs the stages of ``cfg``; see the module docstring for the run folder."""

    def __init__(self, cfg: ExperimentConfig, *, resume: bool = False) -> None:
        validate_experiment(cfg)  # before any data is read or any model is built
        if cfg.train.tensorboard:
            require_tensorboard()
        self.cfg = cfg
        self.resume = resume
        self.device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist: DistInfo = DistInfo()
        self.run_dir = Path(cfg.train.output_dir) / cfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._last_is_damaged = False  # set when --resume fell back to last.prev
        self._initial_state: dict[str, torch.Tensor] | None = None  # student_init=pretrained
        self._tb: TensorBoardLog | None = None  # train.tensorboard, rank 0
        self._clock0 = time.monotonic()  # this process's start (reset by run())
        self._elapsed_before: float | None = 0.0  # the resumed state's elapsed_s

    # -- top level ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train every stage, export the best student, evaluate it on test once."""
        self._clock0 = time.monotonic()
        self.dist = init_distributed(self.device)
        try:
            if self.cfg.train.batch_size % self.dist.world_size:
                raise ValueError(
                    f"train.batch_size={self.cfg.train.batch_size} (the global batch) must be "
                    f"divisible by the number of ranks ({self.dist.world_size})"
                )
            self.samples = load_split_samples(self.cfg.data)
            resumed = self._prepare_run_dir()
            if resumed is not None:  # a state saved before the field existed: time unknown
                before = resumed["loop"].get("elapsed_s")
                self._elapsed_before = None if before is None else float(before)
            self._record_paths()
            if self.cfg.train.tensorboard and self.dist.is_main:
                # events after the resumed step go, as the lines metrics.jsonl drops
                step = int(resumed["loop"]["global_step"]) + 1 if resumed else None
                self._tb = TensorBoardLog(self.run_dir / "tensorboard", purge_step=step)
            handover = self._run_stages(resumed)
            return self._finish(handover)
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            shutdown(self.dist)

    def _prepare_run_dir(self) -> dict[str, Any] | None:
        """Check the run folder; return the resume state (None: start from the beginning).

        - Temporaries of interrupted checkpoint writers that no longer run are removed first.
        - Without ``--resume``: a folder holding a complete checkpoint (``last``, ``last.prev``
          or ``best``) is refused; one with only leftovers of a run killed before its first
          checkpoint is started afresh (with a warning).
        - With ``--resume``: the saved config must match; the newest usable resume checkpoint is
          read (``last``, else ``last.prev`` with a warning; the first save then moves the
          damaged ``last`` to ``last.damaged``); a run that never completed a checkpoint starts
          from the beginning with a warning.
        """
        saved = self.run_dir / "config.json"
        live = self._live_writers()  # rank 0 decides for all (PIDs are per host)
        if live:
            path, pid = live[0]
            raise ValueError(
                f"{path} belongs to process {pid}, which is still running: another run is "
                f"writing {self.run_dir}. Stop it first (or, if no run uses this folder, "
                "delete that temporary)"
            )
        if self.dist.is_main:
            for folder in (self.run_dir, self.ckpt_dir):
                remove_stale_temps(folder)
        barrier(self.dist)
        if self.resume:
            if not saved.is_file():
                raise FileNotFoundError(f"nothing to resume: {saved} does not exist")
            try:
                previous = load_json(saved, "run config")
                # keys added since the run started read as their defaults (what it ran)
                previous = json.loads(dumps(from_dict(ExperimentConfig, previous)))
                same = _comparable(previous) == _comparable(json.loads(dumps(self.cfg)))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(
                    f"{saved} is not a wrel run config (corrupt?): {err!r}; restore it or start "
                    "a new --name"
                ) from err
            if not same:
                raise ValueError(
                    f"--resume with a config that differs from {saved}; resume with the same "
                    "options (progress/num_workers may differ) or start a new --name"
                )
            try:
                state, source = read_resume_state(self.ckpt_dir / "last")
            except FileNotFoundError:
                if (self.run_dir / "final_metrics.json").is_file():
                    raise ValueError(
                        f"{self.run_dir} is a finished run (final_metrics.json) whose training "
                        "state was removed at its end: nothing to resume. Train a new --name "
                        "(keep the state of a run with --keep-training-state)"
                    ) from None
                log.warning(
                    "%s holds no resume checkpoint (the run stopped before its first one): "
                    "starting it from the beginning",
                    self.ckpt_dir,
                )
                self._start_fresh(saved)
                return None
            _check_resume_state(state, source)
            check_loop_state(
                state["loop"],
                source,
                [(st.name or f"{i}-{st.kind}", st.epochs) for i, st in enumerate(self.cfg.stages)],
                self.run_dir / "metrics.jsonl",
            )
            # resumed from last.prev: the first save moves the damaged last to last.damaged
            # instead of rotating it into last.prev (which stays the good fallback until then)
            self._last_is_damaged = source.name != "last"
            self._truncate_log(int(state["loop"]["global_step"]))
            return state
        if self._has_checkpoint():
            raise ValueError(
                f"run folder {self.run_dir} already has checkpoints; pass --resume to continue "
                "it or choose another --name / train.output_dir"
            )
        if self.ckpt_dir.exists():
            log.warning(
                "%s holds no complete checkpoint (a run killed before its first one): "
                "starting the run from the beginning",
                self.ckpt_dir,
            )
        self._start_fresh(saved)
        return None

    def _start_fresh(self, saved: Path) -> None:
        if self.dist.is_main:
            with write_errors(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(saved, dumps(self.cfg))
                atomic_write_text(self.run_dir / "metrics.jsonl", "")
                (self.run_dir / TRACE_FILE).unlink(missing_ok=True)
        barrier(self.dist)

    def _has_checkpoint(self) -> bool:
        best = self.ckpt_dir / "best"
        return find_resume_dir(self.ckpt_dir / "last") is not None or (
            (best / "config.json").is_file() and (best / "model.safetensors").is_file()
        )

    def _live_writers(self) -> list[tuple[str, int]]:
        """Checkpoint temporaries in the run folder whose writer process still runs, as seen
        by rank 0 and broadcast, so that every rank takes the same decision."""
        live: list[tuple[str, int]] = []
        if self.dist.is_main:
            live = [
                (str(path), pid)
                for folder in (self.run_dir, self.ckpt_dir)
                for path, pid in checkpoint_temps(folder)
                if writer_alive(pid)
            ]
        if self.dist.enabled:
            import torch.distributed as dist

            box: list[Any] = [live]
            dist.broadcast_object_list(box, src=0)
            live = box[0]
        return live

    # -- stages -------------------------------------------------------------------------------

    def _run_stages(self, resumed: dict[str, Any] | None) -> Handover:

        torch.manual_seed(self.cfg.train.seed)  # identical initial weights on every rank
        model = build_model(self.cfg.model).to(self.device)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if any(
            isinstance(st, JointConfig) and st.student_init != "handover" for st in self.cfg.stages
        ):
            self._initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.manual_seed(self.cfg.train.seed + 1000 * self.dist.rank)  # per-rank dropout
        state = LoopState(**resumed["loop"]) if resumed else LoopState()
        handover = Handover(model, None)
        for index in range(state.stage_index, len(self.cfg.stages)):
            stage_cfg = self.cfg.stages[index]
            if index != state.stage_index:
                state.stage_index, state.epoch, state.iteration = index, 0, 0
            data = stage_data(self.cfg, stage_cfg, self.samples["train"], self.dist)
            stage = build_stage(stage_cfg, self._context(handover, data))
            if resumed is not None and index == resumed["loop"]["stage_index"]:
                if state.epoch < stage_cfg.epochs:
                    check_iteration(resumed["loop"], self.ckpt_dir / "last", data.iters_per_epoch)
                saved = resumed["stage"]
                if state.epoch >= stage_cfg.epochs and state.iteration == 0:  # a stage end
                    saved = complete_stage_state(saved, stage.state_dict())
                stage.load_state_dict(saved)
                restore_rng(resumed["rng"])
            self._run_stage(stage, stage_cfg, data, state)
            handover = stage.handover()
            if (info := stage.handover_info()) is not None:
                name = stage_cfg.name or f"{index}-{stage_cfg.kind}"
                self._log({"event": "handover", "stage": name, "step": state.global_step, **info})
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
            expressions=handover.expressions,
            train_samples=self.samples["train"],
            amp=self.cfg.train.amp,
            channels_last=self.cfg.train.channels_last,
            wrap=ddp_wrapper(self.dist, self.device, self.cfg.train.find_unused_parameters),
            initial_state=self._initial_state,
        )

    def _run_stage(
        self, stage: Stage, stage_cfg: StageConfig, data: StageData, state: LoopState
    ) -> None:
        name = stage_cfg.name or f"{state.stage_index}-{stage_cfg.kind}"
        iters_per_epoch = data.iters_per_epoch
        for epoch in range(state.epoch, stage_cfg.epochs):
            loader = data.loader(epoch, skip_batches=state.iteration)
            bar = Progress(
                iters_per_epoch,
                f"{name} epoch {epoch + 1}/{stage_cfg.epochs}",
                initial=state.iteration,
                enabled=self.cfg.train.progress and self.dist.is_main,
            )
            for batch in loader:
                progress = epoch + state.iteration / iters_per_epoch
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
                bar.update(
                    1, step=state.global_step, **{k: v for k, v in logs.items() if "loss" in k}
                )
                if (
                    state.global_step % self.cfg.train.log_every == 0
                    or state.iteration == iters_per_epoch
                ):
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
                if every and state.global_step % every == 0 and state.iteration < iters_per_epoch:
                    self._save_state(stage, state)
                val_every = self.cfg.train.val_every_steps
                if (
                    val_every
                    and state.global_step % val_every == 0
                    and state.iteration < iters_per_epoch
                ):
                    self._maybe_evaluate(stage, stage_cfg, name, state, mid_epoch=True)
            bar.close()
            state.epoch, state.iteration = epoch + 1, 0
            self._score_train_samples(stage, name, data, state)
            self._maybe_evaluate(stage, stage_cfg, name, state)
            # Resume point at each epoch end; a stage with stage_cfg.eval_every = k (many short
            # epochs) saves every k epochs and at its end (plus every train.checkpoint_every).
            k = max(1, stage_cfg.eval_every or 1)
            if state.epoch % k == 0 or state.epoch == stage_cfg.epochs:
                self._save_state(stage, state)
        if self.cfg.train.keep_stage_checkpoints and state.stage_index < len(self.cfg.stages) - 1:
            if self.dist.is_main:  # the stage's end, for runs that share this prefix
                stage_state = finished_stage_state(stage.state_dict())
                state.elapsed_s = self._elapsed_s()
                end = {"loop": asdict(state), "stage": stage_state, "rng": capture_rng()}
                keep_stage_end(self.ckpt_dir, state.stage_index, end)
            barrier(self.dist)

    def _score_train_samples(
        self, stage: Stage, name: str, data: StageData, state: LoopState
    ) -> None:
        """Score the model a stage asks for (:meth:`Stage.train_scoring`) on the stage's own
        training samples, as they are (no cut-out), and hand the metrics back to the stage."""
        scoring = stage.train_scoring()
        if scoring is None:
            return
        model, bank = scoring
        metrics = evaluate_model(
            model,
            eval_loader(self.cfg, list(data.dataset.samples)),
            self.device,
            protocol=self.cfg.train.protocol,
            amp=self.cfg.train.amp,
            desc=f"train score {name}",
            progress=self.cfg.train.progress and self.dist.is_main,
            bank=bank,
        )
        where = {"stage": name, "epoch": state.epoch - 1, "step": state.global_step}
        scores = {k: float(metrics[k]) for k in ("oIoU", "mIoU")}
        self._log({"event": "train_score", **where, **scores})
        stage.observe_train_score(metrics, where)

    def _maybe_evaluate(
        self,
        stage: Stage,
        stage_cfg: StageConfig,
        name: str,
        state: LoopState,
        mid_epoch: bool = False,
    ) -> None:
        """Score val at an epoch end (when due) or, with ``mid_epoch``, inside an epoch
        (``train.val_every_steps``); keep the best student of the final stage."""
        every = max(1, stage_cfg.eval_every or self.cfg.train.eval_every)
        val_every = self.cfg.train.val_every_steps
        due = (
            mid_epoch
            or state.epoch % every == 0
            or state.epoch == stage_cfg.epochs
            or (val_every > 0 and state.global_step % val_every == 0)
        )
        if not stage_cfg.evaluate and not mid_epoch and state.epoch == stage_cfg.epochs:
            self._log_leakage(
                stage,
                stage.eval_model(),
                {"stage": name, "epoch": state.epoch - 1, "step": state.global_step},
            )
        if not (stage_cfg.evaluate and due and self.samples.get("val")):
            return
        model = stage.eval_model()
        tracing = self.cfg.train.trace_class_names
        metrics = evaluate_model(
            model,
            eval_loader(self.cfg, self.samples["val"]),
            self.device,
            protocol=self.cfg.train.protocol,
            amp=self.cfg.train.amp,
            desc=f"val {name}",
            progress=self.cfg.train.progress and self.dist.is_main,
            per_sample=tracing,
        )
        epoch = state.epoch if mid_epoch else state.epoch - 1  # the epoch the model is in
        where = {"stage": name, "epoch": epoch, "step": state.global_step}
        samples = metrics.pop("samples", None)
        # class-name traces at epoch ends, and at a mid-epoch evaluation that becomes the chosen
        # checkpoint (`wrel bound --records` needs Gamma at the chosen checkpoint itself)
        final = state.stage_index == len(self.cfg.stages) - 1
        value = metric_value(metrics, self.cfg.train.select_metric)
        chosen = final and (state.best_value is None or value >= state.best_value)
        trace = tracing and (not mid_epoch or chosen)
        extra = self._trace_class_names(model, where, samples) if trace else {}
        self._log({"event": "val", **where, **_jsonable(metrics), **extra})
        self._log_leakage(stage, model, where)
        if not final:
            # the best checkpoint is chosen among the final stage's students only; an earlier
            # stage may keep its own best to hand over (SupervisedConfig.handover)
            stage.observe_val(value, where)
            return
        info = {"stage": name, "epoch": epoch, "step": state.global_step, "val": _jsonable(metrics)}
        # ties go to the later checkpoint: a run stuck at 0 does not report its first epoch
        if state.best_value is None or value >= state.best_value:
            state.best_value = value
            self._export_best(model, info)
        if self.cfg.train.best_per_metric:
            for metric in ("oIoU", "mIoU"):
                folder = f"best-{metric}"
                best = self._saved_best(folder, metric)
                if best is None or metric_value(metrics, metric) >= best:
                    self._export_best(model, {**info, "selected_by": metric}, folder)

    def _log_leakage(self, stage: Stage, model: torch.nn.Module, where: dict[str, Any]) -> None:
        """Score the leakage monitor's weak samples (wrel.engine.leakage) when ``stage`` has a
        bank: at each val evaluation, and at the end of a stage without one (bank init)."""
        bank = monitored_bank(stage)
        if bank is None or self.cfg.bank.leakage_samples <= 0:
            return
        leak = measure_leakage(model, bank, self.samples["train"], self.cfg, self.device)
        self._log({"event": "leakage", **where, **leak})

    def _trace_class_names(
        self, model: torch.nn.Module, where: dict[str, Any], accurate: list[Any]
    ) -> dict[str, Any]:
        """Score val with class names; append the paired per-sample losses to the trace."""

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

    def _saved_best(self, folder: str, metric: str) -> float | None:
        """The val ``metric`` of ``checkpoints/<folder>`` (None: no such checkpoint yet), read
        from its metadata, so that a resumed run keeps comparing against it."""
        path = self.ckpt_dir / folder / "config.json"
        try:
            val = json.loads(path.read_text(encoding="utf-8"))["metadata"]["val"]
            return metric_value(val, metric)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _export_best(
        self, model: torch.nn.Module, info: dict[str, Any], folder: str = "best"
    ) -> None:

        if self.dist.is_main:
            size = self.cfg.data.image_size
            # the preprocessing record, read back by wrel.inference.Predictor and `wrel eval`
            preprocessing = Preprocessing((size, size), scaling=self.cfg.data.image_scaling)
            metadata = {
                "method": self.cfg.method,
                **preprocessing.to_metadata(),
                "dataset": {
                    "root": str(self.cfg.data.root),
                    "name": _dataset_label(self.cfg.data),
                    "accurate_ratio": self.cfg.data.accurate_ratio,
                    "split_file": self.cfg.data.split_file,
                    "split_seed": self.cfg.data.split_seed,
                    **self._data_summary(),
                },
                "protocol": self.cfg.train.protocol,
                "experiment": to_dict(self.cfg),
                **info,
            }
            save_model(self.ckpt_dir / folder, model, metadata)  # type: ignore[arg-type]
        barrier(self.dist)

    def _elapsed_s(self) -> float | None:
        """Seconds this run has trained, over every process that resumed it (None: a state
        from before this was recorded is part of it)."""
        if self._elapsed_before is None:
            return None
        return round(self._elapsed_before + time.monotonic() - self._clock0, 3)

    def _save_state(self, stage: Stage, state: LoopState) -> None:
        state.elapsed_s = self._elapsed_s()
        if self.dist.is_main:
            save_resume_state(
                self.ckpt_dir / "last",
                {
                    "loop": asdict(state),
                    "stage": stage.state_dict(),
                    "rng": capture_rng(),
                },
                current_is_damaged=getattr(self, "_last_is_damaged", False),
                keep_previous=self.cfg.train.keep_previous_checkpoint,
            )
            self._last_is_damaged = False
        barrier(self.dist)

    def _log(self, record: dict[str, Any], file: str = "metrics.jsonl") -> None:
        if self.dist.is_main:
            if file == "metrics.jsonl":  # wall-clock time of the line, ISO-8601 UTC, last key
                record = {**record, "time": _utc_now()}
                if self._tb is not None:
                    self._tb.write(record)
            with (self.run_dir / file).open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _data_summary(self) -> dict[str, Any]:
        """Train counts and the accurate ratio the run really trained with (derived from the
        samples, so a split file's own ratio is what is reported)."""
        train = self.samples.get("train") or []
        accurate = sum(1 for s in train if s.quality == "accurate")
        d = self.cfg.data
        source = "split_file" if d.split_file else "accurate_ratio"
        if not d.split_file and d.accurate_ratio is None:
            source = "files"  # the refs' own accurate / weak marks
        return {
            "num_train": len(train),
            "num_accurate": accurate,
            "num_weak": len(train) - accurate,
            "train_accurate_ratio": round(accurate / len(train), 6) if train else None,
            "ratio_source": source,
        }

    def _record_paths(self) -> None:
        """``paths.json``: each path of the config as given and absolute (config.json keeps
        what the user gave, so ``--resume`` compares the same strings); warns on resume when
        a relative path now points elsewhere."""
        if not self.dist.is_main:
            return
        d = self.cfg.data
        given = {
            "data.root": d.root,
            "data.split_file": d.split_file,
            "train.output_dir": self.cfg.train.output_dir,
            "run_dir": str(self.run_dir),
        }
        paths = {
            key: {"given": str(value), "absolute": str(Path(value).expanduser().resolve())}
            for key, value in given.items()
            if value is not None
        }
        target = self.run_dir / "paths.json"
        if self.resume and target.is_file():
            try:
                before = json.loads(target.read_text(encoding="utf-8"))
            except ValueError:
                before = {}
            for key, now in paths.items():
                old = (before.get(key) or {}).get("absolute") if isinstance(before, dict) else None
                if old and old != now["absolute"]:
                    log.warning(
                        "%s=%r now resolves to %s; the run started with %s (another working "
                        "folder?)",
                        key,
                        now["given"],
                        now["absolute"],
                        old,
                    )
        with write_errors(self.run_dir):
            atomic_write_text(target, json.dumps(paths, indent=2))

    def _truncate_log(self, global_step: int) -> None:
        """Drop log and trace lines written after the checkpoint we resume from (rank 0)."""
        for path in (self.run_dir / "metrics.jsonl", self.run_dir / TRACE_FILE):
            if not (self.dist.is_main and path.is_file()):
                continue
            kept = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line) if line.strip() else None
                except (ValueError, RecursionError):  # a line cut short by a kill
                    log.warning("dropping an unreadable line of %s: %.60s", path, line)
                    continue
                if not isinstance(record, dict) or record.get("step", 0) > global_step:
                    continue
                if record.get("event") == "handover" and record.get("step") == global_step:
                    continue  # logged after the stage-end checkpoint; the resumed run logs it
                kept.append(line)
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, path)

    def _remove_training_state(self) -> None:
        """Drop what only resuming reads (``wrel.engine.state.remove_training_state``); the
        run is complete, so a failure to delete is a warning, not an error."""
        try:
            removed = remove_training_state(
                self.ckpt_dir, keep_stage_ends=self.cfg.train.keep_stage_checkpoints
            )
        except OSError as err:
            log.warning("could not remove the training state in %s: %s", self.ckpt_dir, err)
            return
        if removed:
            log.info(
                "removed the training state %s (keep it with --keep-training-state)",
                ", ".join(p.name for p in removed),
            )

    def _finish(self, handover: Handover) -> dict[str, Any]:

        best = self.ckpt_dir / "best"
        if not best.exists():  # no val split or no evaluation: the final student is the result
            self._export_best(handover.model, {"stage": "final", "step": None, "val": None})
        result: dict[str, Any] = {"run_dir": str(self.run_dir), "method": self.cfg.method}
        if self.dist.is_main:
            if handover.bank is not None:  # compact: fp16 rows, no moments
                with write_errors(self.run_dir / "bank.safetensors"):
                    handover.bank.save(self.run_dir / "bank.safetensors", compact=True)
            if handover.expressions is not None:
                names = {s.sample_id: s.text for s in self.samples["train"] if s.is_weak}
                handover.expressions.save(self.run_dir / "expressions.json", names)
                save_resume_state(
                    self.run_dir / EXPRESSION_BANK_DIR,
                    {"expressions": handover.expressions.state_dict()},
                    keep_previous=False,
                )
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
                # the card and metadata of checkpoints/best gain the test metrics (atomic;
                # the weights' SHA-256 records are unchanged)
                update_model_metadata(best, {"test": result["test"]})
            result["data"] = {"split_file": self.cfg.data.split_file, **self._data_summary()}
            share = "empty_prediction_share"
            result[share] = {
                "val": ((result["best"] or {}).get("val") or {}).get(share),
                "test": (result.get("test") or {}).get(share),
            }
            result["warnings"] = _empty_warnings(result[share])
            for message in result["warnings"]:
                log.warning("%s", message)
            # the whole run, test included; a resumed run counts its killed processes up to
            # their last checkpoint; None when part of it ran before this was recorded
            result["wall_time_s"] = self._elapsed_s()
            path = self.run_dir / "final_metrics.json"
            path.with_suffix(".tmp").write_text(json.dumps(result, indent=2, sort_keys=True))
            os.replace(path.with_suffix(".tmp"), path)
            log.info("final metrics written to %s", path)
            if not self.cfg.train.keep_training_state:  # after final_metrics.json: a kill
                # before this point resumes from last and finishes again
                self._remove_training_state()
        barrier(self.dist)
        return result


#: LoopState fields added after states were first saved (older states resume without them)
_LOOP_FIELDS_ADDED = frozenset({"elapsed_s"})


def _check_resume_state(state: dict[str, Any], source: Path) -> None:
    """The parts the loop reads from a resume state exist (a checksum-valid folder of another
    format, or an edited one, fails here naming the folder)."""
    loop = state.get("loop")
    names = {f.name for f in fields(LoopState)}
    if (
        not isinstance(loop, dict)
        # a state saved before `elapsed_s` was recorded lacks only that field
        or set(loop) not in (names, names - _LOOP_FIELDS_ADDED)
        or not isinstance(state.get("stage"), dict)
        or not isinstance(state.get("rng"), dict)
    ):
        raise CheckpointError(
            f"{source} is not a wrel resume checkpoint of this version (needs 'loop' with "
            f"{sorted(names)}, 'stage' and 'rng')"
        )


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict minus the knobs that may change on resume."""
    data["train"].pop("progress", None)
    data["train"].pop("keep_previous_checkpoint", None)  # storage only; older runs lack it
    data["train"].pop("keep_stage_checkpoints", None)  # storage only
    data["train"].pop("keep_training_state", None)  # storage only
    data["train"].pop("tensorboard", None)  # logging only
    data["data"].pop("num_workers", None)
    return data


def _dataset_label(data: Any) -> str | None:
    """The data set's name for the model card: ``data.name``, else the one the loader picks
    (the single ``*/refs(unc).p`` folder of the root, or the root of a RefSegRS folder)."""
    if data.name:
        return str(data.name)
    root = Path(data.root)
    if (root / f"output_phrase_{data.train_split}.txt").is_file():
        return f"{root.resolve().name} (RefSegRS layout)"
    found = sorted(p.parent.name for p in root.glob("*/refs(unc).p"))
    return found[0] if len(found) == 1 else None


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(metrics, default=float))


def _utc_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _empty_warnings(shares: dict[str, float | None]) -> list[str]:
    """Warnings for a best model whose val / test predictions are all (or mostly) empty."""
    out = []
    for split, share in shares.items():
        if share is None:
            continue
        if share >= 1.0:
            out.append(
                f"every {split} prediction of the best model is empty (no foreground pixel): "
                "the model has learnt nothing usable; check the learning rates, the epochs and "
                "the image scaling (data.image_scaling), and the target sizes (wrel data stats)"
            )
        elif share >= 0.5:
            out.append(
                f"{share:.0%} of the {split} predictions of the best model are empty (no "
                "foreground pixel)"
            )
    return out


def _best_info(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: metadata.get(k) for k in ("stage", "epoch", "step", "val")}
