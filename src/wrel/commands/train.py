"""``wrel train``: run a method (a preset list of stages) on a refer-format data set."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from wrel.commands import add_set_argument
from wrel.engine.experiment import build_experiment, method_names, split_and_ratio_error
from wrel.engine.trainer import train
from wrel.methods.base import ONE_PASS_KINDS, NonFiniteLossError

log = logging.getLogger(__name__)

METHODS = method_names()  # every preset of wrel.engine.experiment.METHOD_PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel train``."""
    p = subparsers.add_parser(
        "train",
        help="train a method (" + ", ".join(METHODS) + ")",
        description=(
            "Train a referring segmentation model with scarce expressions. The method is a "
            "preset list of stages (see docs/training.md); YAML files and --set key=value "
            "override any config key (unknown keys fail). The run folder is "
            "<train.output_dir>/<name>. Works under torchrun: --batch-size is the global batch."
        ),
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="lrb",
        help="training method (docs/training.md, 'Methods are stage lists')",
    )
    p.add_argument("--data", help="data root (refer layout), sets data.root")
    p.add_argument("--accurate-ratio", type=float, help="share of accurate train expressions")
    p.add_argument(
        "--split-file",
        help="weak-split refs file (published, or from `wrel data split`); the accurate ratio "
        "is read from it (not with --accurate-ratio or --method full)",
    )
    p.add_argument(
        "--name", help="run name, a plain folder name inside --output-dir (default: the method)"
    )
    p.add_argument("--output-dir", help="parent of run folders (default: runs)")
    p.add_argument("--epochs", type=int, help="epochs of every supervised/joint stage")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--config", action="append", default=[], help="YAML overrides (repeatable)")
    add_set_argument(p, "override one config key, e.g. train.amp=bf16")
    p.add_argument("--resume", action="store_true", help="continue the run from checkpoints/last")
    p.add_argument(
        "--keep-training-state",
        action="store_true",
        help="keep checkpoints/last (optimizer and bank moments) when the run finishes, to "
        "train it on; sets train.keep_training_state (default: removed, docs/training.md)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write the metrics as TensorBoard event files in <run>/tensorboard; sets "
        "train.tensorboard (needs: pip install 'wrel[tensorboard]')",
    )
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.set_defaults(func=run)


def _base(args: argparse.Namespace) -> dict:
    base: dict = {"data": {}, "train": {}}
    for key, value in (
        ("root", args.data),
        ("accurate_ratio", args.accurate_ratio),
        ("split_file", args.split_file),
    ):
        if value is not None:
            base["data"][key] = value
    for key, value in (
        ("output_dir", args.output_dir),
        ("batch_size", args.batch_size),
        ("device", args.device),
    ):
        if value is not None:
            base["train"][key] = value
    for key in ("keep_training_state", "tensorboard"):
        if getattr(args, key, False):
            base["train"][key] = True
    if args.name:
        base["name"] = args.name
    return base


def _check_output_dir(output_dir: str | Path) -> None:
    """Refuse, before any work, an output folder that is a file (or lies under one)."""
    folder = Path(output_dir)
    current = folder
    while not current.exists() and current != current.parent:
        current = current.parent
    if current.exists() and not current.is_dir():
        raise ValueError(
            f"--output-dir / train.output_dir {folder}: {current} is a file, not a folder; give "
            "a folder (run folders are created inside it)"
        )


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, print the final metrics."""

    if args.split_file and args.method == "full":  # the Full preset would drop it silently
        raise ValueError(
            f"--method full trains with every train expression accurate (accurate ratio 1), so "
            f"the weak split file {args.split_file} cannot apply; drop --split-file for Full "
            "(it reads the data set's own refs(unc).p), or use naive / only-accurate / lrb"
        )
    if args.split_file and args.accurate_ratio is not None:
        raise split_and_ratio_error(args.split_file, args.accurate_ratio)
    cfg = build_experiment(  # resolves --split-file (the file's accurate ratio)
        args.method, base=_base(args), yaml_files=args.config, assignments=args.assignments
    )
    if args.name:
        cfg.name = args.name  # the preset names the run after the method otherwise
    _check_output_dir(cfg.train.output_dir)
    if args.epochs is not None:
        for stage in cfg.stages:
            if stage.kind not in ONE_PASS_KINDS:
                stage.epochs = args.epochs
    try:
        result = train(cfg, resume=args.resume)
    except NonFiniteLossError as err:
        log.error("training stopped: %s", err)
        return 1
    if "test" not in result:  # non-zero ranks, or no test split
        return 0
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        metrics = ", ".join(
            f"{k} {v:.4f}" for k, v in result["test"].items() if isinstance(v, int | float)
        )
        print(f"{cfg.method} test ({result.get('protocol')}): {metrics}\nrun: {result['run_dir']}")
    return 0
