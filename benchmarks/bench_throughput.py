"""Training throughput: samples/s of a whole training step against the bare towers' bound.

For each variant (a set of ``--set`` overrides on top of a benchmark profile), this times

* ``step``: ``Stage.training_step`` of the method's first stage (or ``--stage``; a joint stage
  starts from a fresh bank) on real batches from the
  stage's own loader (data loading, tokenisation, forward, loss, backward, AdamW step), and
* ``towers``: forward + backward of the backbone's four stages and the text encoder alone,
  configured as in the variant (same frozen parts), on the same batches: the bound a fused
  model cannot beat,

in interleaved rounds (variant A, B, ..., A, B, ...), so that load on a shared machine hits
every variant alike. It prints the median samples/s of each and their ratio, and writes JSON.

    python benchmarks/bench_throughput.py --data data --profile full \\
        --variant before="model.backbone.frozen_stages=0" \\
        --variant after="model.backbone.frozen_stages=1" --output docs/results/throughput.json

Run it on an otherwise idle machine for absolute figures; the ratios hold under load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from wrel.core.distributed import DistInfo
from wrel.engine.experiment import build_experiment
from wrel.engine.loaders import load_split_samples, stage_data
from wrel.engine.stages import build_stage
from wrel.methods.base import StageContext
from wrel.models import build_model
from wrel.studies.profiles import get_profile


def _variant(text: str) -> tuple[str, list[str]]:
    name, sep, sets = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: use NAME=key=value[,key=value]")
    return name, [s for s in sets.split(",") if s.strip()]


class _Runner:
    """One variant: its model, first stage, batches and the two timed callables."""

    def __init__(
        self, sets: list[str], method: str, data: str, batches: int, stage: str | None = None
    ) -> None:
        cfg = build_experiment(
            method, assignments=[*sets, f"data.root={data}", "train.progress=false"]
        )
        torch.manual_seed(cfg.train.seed)
        self.cfg = cfg
        self.model = build_model(cfg.model)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        samples = load_split_samples(cfg.data)["train"]
        names = [s.name for s in cfg.stages]
        if stage is not None and stage not in names:
            raise SystemExit(f"--stage {stage!r}: the stages of {method} are {names}")
        scfg = cfg.stages[names.index(stage) if stage else 0]
        data_ = stage_data(cfg, scfg, samples, DistInfo())
        ctx = StageContext(
            model=self.model,
            device=torch.device("cpu"),
            iters_per_epoch=data_.iters_per_epoch,
            weak_ids=[s.sample_id for s in samples if s.quality == "weak"],
            bank_cfg=cfg.bank,
            channels_last=cfg.train.channels_last,
        )
        self.stage = build_stage(scfg, ctx)
        self.stage_name, self.stage_kind = scfg.name, scfg.kind
        self.data = data_
        self.batches = batches
        self.epoch = 0
        self.batch_size = data_.per_rank_batch

    def time_step(self) -> float:
        """Seconds per step over ``batches`` steps, loading included."""
        loader = iter(self.data.loader(self.epoch))
        self.epoch += 1
        self.stage.training_step(next(loader), 0.0)  # warm-up (allocations, oneDNN kernels)
        start = time.perf_counter()
        for index in range(self.batches):
            self.stage.training_step(next(loader), index / max(1, self.data.iters_per_epoch))
        return (time.perf_counter() - start) / self.batches

    def time_towers(self) -> float:
        """Seconds per batch of forward + backward through the backbone and text encoder."""
        loader = iter(self.data.loader(self.epoch))
        self.epoch += 1
        batches = [next(loader) for _ in range(self.batches + 1)]
        model = self.model.train()
        fmt = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        elapsed = 0.0
        for index, batch in enumerate(batches):
            start = time.perf_counter()
            images = batch["image"].contiguous(memory_format=fmt)
            ids, mask = model.tokenize(list(batch["text"]))
            feats = model.backbone(images)
            words = model.text_encoder(mask, input_ids=ids)
            total = sum(f.float().mean() for f in feats) + words.float().mean()
            if total.requires_grad:
                total.backward()
            model.zero_grad(set_to_none=True)
            if index:  # the first batch warms up
                elapsed += time.perf_counter() - start
        return elapsed / self.batches


def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = get_profile(args.profile)
    data = args.data
    if data is None or not Path(data).exists():
        from wrel.data.synth import SynthConfig, generate_benchmark

        data = data or tempfile.mkdtemp(prefix="wrel-throughput-")
        synth = {**profile.synth, "num_train": 256, "num_val": 0, "num_test": 0}
        generate_benchmark(data, SynthConfig(**synth), progress=False)
    runners = {
        name: _Runner(
            [*profile.experiment_sets(), *sets], args.method, str(data), args.batches, args.stage
        )
        for name, sets in args.variant
    }
    times: dict[str, dict[str, list[float]]] = {n: {"step": [], "towers": []} for n in runners}
    for round_index in range(args.rounds):
        for name, runner in runners.items():
            times[name]["step"].append(runner.time_step())
            times[name]["towers"].append(runner.time_towers())
            print(
                f"round {round_index + 1}/{args.rounds} {name}: step "
                f"{runner.batch_size / times[name]['step'][-1]:.1f} samples/s, towers "
                f"{runner.batch_size / times[name]['towers'][-1]:.1f} samples/s",
                flush=True,
            )
    rows = []
    for name, runner in runners.items():
        step = statistics.median(times[name]["step"])
        towers = statistics.median(times[name]["towers"])
        rows.append(
            {
                "variant": name,
                "sets": dict(args.variant)[name],
                "stage": runner.stage_name,
                "stage_kind": runner.stage_kind,
                "batch": runner.batch_size,
                "image_size": runner.cfg.data.image_size,
                "step_samples_per_s": round(runner.batch_size / step, 2),
                "towers_samples_per_s": round(runner.batch_size / towers, 2),
                "step_over_towers_time": round(step / towers, 2),
            }
        )
    return {
        "profile": args.profile,
        "method": args.method,
        "stage": args.stage,
        "batches_per_round": args.batches,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| variant | stage | batch | input | step (samples/s) | towers fwd+bwd (samples/s) | "
        "step time / towers time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['variant']} | {r.get('stage', '')} | {r['batch']} | {r['image_size']} | "
            f"{r['step_samples_per_s']} | "
            f"{r['towers_samples_per_s']} | {r['step_over_towers_time']} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="rendered benchmark root (default: a small temp render)")
    parser.add_argument("--profile", default="full", help="benchmark profile (default: full)")
    parser.add_argument(
        "--method", default="full", help="method whose stage is timed (its first unless --stage)"
    )
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        required=True,
        metavar="NAME=KEY=VALUE[,KEY=VALUE]",
        help="a named set of config overrides (repeatable)",
    )
    parser.add_argument(
        "--stage", help="stage name to time (default: the method's first), e.g. joint"
    )
    parser.add_argument("--batches", type=int, default=10, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--output", type=Path, help="write the JSON report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = run(args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
