"""``wrel eval``: score an exported checkpoint on a split (student, real expressions, no bank)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wrel.core.bounded import check_range
from wrel.core.distributed import resolve_device
from wrel.data.dataset import RefSegDataset, collate_samples, load_samples
from wrel.data.preprocessing import MAX_INPUT_SIDE, Preprocessing
from wrel.engine.checkpoint import load_model
from wrel.engine.validation import evaluate_model
from wrel.models.rmsin.model import load_released_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel eval``."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (oIoU / mIoU / Prec@X)",
        description=(
            "Evaluate an exported model folder (e.g. runs/<name>/checkpoints/best) on a split "
            "of a refer-format data set, with the real expressions."
        ),
    )
    p.add_argument(
        "checkpoint",
        help="model folder written by training (save_model), or an authors' RMSIN / LRB-WREL "
        ".pth file (needs --text-path; built as rmsin at the paper's sizes)",
    )
    p.add_argument(
        "--text-path",
        help="released .pth only: local Hugging Face bert-base-uncased folder (tokenizer, "
        "config; its weights are used only when the file has no bert_model)",
    )
    p.add_argument(
        "--released-key",
        help="released .pth only: the segmenter entry (default: model, else student_model)",
    )
    p.add_argument("--data", required=True, help="data root (refer layout)")
    p.add_argument("--name", help="data set name under the root (auto-detected if unique)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--image-size", type=int, help="network input size (default: the run's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--protocol", default=None, help="scoring protocol (default: the run's)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace, device: Any) -> tuple[Any, dict[str, Any]]:
    """A wrel model folder (strict ``load_model``), or an authors' checkpoint file as rmsin."""
    if not (args.text_path and Path(args.checkpoint).is_file()):
        try:
            return load_model(args.checkpoint, device=device)
        except NotADirectoryError as err:
            raise NotADirectoryError(
                f"{err}; for an authors' RMSIN / LRB-WREL .pth file give --text-path "
                "<local bert-base-uncased folder>"
            ) from err
    size = args.image_size or 480
    model = load_released_model(args.checkpoint, args.text_path, size, key=args.released_key)
    return model.to(device), Preprocessing(image_size=(size, size)).to_metadata()


def run(args: argparse.Namespace) -> int:
    """Load with ``load_model`` (strict), evaluate, print."""

    from torch.utils.data import DataLoader

    check_range("--image-size", args.image_size, 8, MAX_INPUT_SIDE)  # before any allocation
    check_range("--batch-size", args.batch_size, 1, 1024)
    device = resolve_device(args.device)
    model, metadata = _load(args, device)
    pre = Preprocessing.from_metadata(metadata)  # the training input (scaling None: older)
    size = (args.image_size, args.image_size) if args.image_size else pre.image_size
    protocol = args.protocol or metadata.get("protocol", "input")
    samples = load_samples(args.data, args.split, name=args.name)

    loader = DataLoader(
        RefSegDataset(samples, image_size=size, scaling=pre.scaling),
        batch_size=args.batch_size,
        collate_fn=collate_samples,
    )
    metrics = evaluate_model(
        model, loader, device, protocol=protocol, progress=True, desc=f"eval {args.split}"
    )
    out = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "protocol": protocol,
        "num_samples": len(samples),
        "metrics": metrics,
    }
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True, default=float))
    else:
        text = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, int | float))
        print(f"{args.split} ({protocol}, {len(samples)} expressions): {text}")
    return 0
