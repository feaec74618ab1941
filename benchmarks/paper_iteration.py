"""Time one LRB-WREL iteration of the paper model: bank step + student step + EMA update.

The model is the one ``configs/paper_rrsisd.yaml`` names (Swin-B window 12 at 480 px with drop
path 0.3, BERT-base with layers 0-9 trained) with random weights: the Swin-B is initialised by
timm and the BERT-base comes from a folder written here (``transformers.BertConfig`` defaults +
the uncased WordPiece tokenizer of the packaged all-MiniLM-L6-v2). The stage is the ``joint``
stage of the ``lrb-paper`` preset (EMA over the segmenter, the released Dice), at the paper's
global batch (8, one weak row per sample but one accurate) with bf16 autocast, and a bank of
10,963 rows (the weak share of RRSIS-D's 12,181 training samples at rho = 0.1).

Run on a GPU (``bash benchmarks/check_gpu.sh`` calls it)::

    python benchmarks/paper_iteration.py --output paper_iteration.json

It writes the median seconds per iteration and the peak CUDA memory to the JSON file. Without
CUDA it prints a message and exits 0, unless ``--dry-run``: then the same code path runs on the
CPU with tiny random parts (64 px, batch 2) so it can be checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
PAPER_YAML = REPO / "configs" / "paper_rrsisd.yaml"
RRSISD_WEAK_ROWS = 10963  # 12,181 training samples, 90 % weak


def write_random_bert_base(folder: Path) -> Path:
    """A Hugging Face folder of a BERT-base architecture without weights (random at build) and
    the uncased tokenizer of the packaged all-MiniLM-L6-v2 (the same 30,522-word vocabulary)."""
    from transformers import AutoTokenizer, BertConfig

    from wrel.models.text_encoder import minilm_folder

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder()), local_files_only=True)
    tokenizer.save_pretrained(str(folder))
    BertConfig(vocab_size=len(tokenizer)).save_pretrained(str(folder))
    return folder


def paper_experiment(bert_folder: Path, data_root: str = "unused", dry_run: bool = False) -> Any:
    """The ``lrb-paper`` experiment with configs/paper_rrsisd.yaml, random weights everywhere;
    ``dry_run``: tiny random parts at 64 px instead of Swin-B / BERT-base at 480 px."""
    from wrel.engine.experiment import build_experiment

    sets = [
        f"data.root={data_root}",
        "model.backbone.pretrained=false",
        "model.backbone.checkpoint_path=null",
        f"model.text.path={bert_folder}",
        "model.text.pretrained=false",
    ]
    if dry_run:
        sets += [
            "model.backbone.name=tiny",
            "model.backbone.drop_path_rate=null",
            "model.text.name=tiny",
            "model.text.path=null",
            "model.text.trainable_layers=null",
            "model.decoder.dim=16",
            "data.image_size=64",
        ]
    return build_experiment("lrb-paper", yaml_files=[PAPER_YAML], assignments=sets)


def make_batch(batch: int, size: int, num_rows: int, seed: int = 0) -> dict[str, Any]:
    """A collated batch: random images, blob masks, the first sample accurate, the rest weak."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(size // 4, 3 * size // 4, (batch, 2), generator=gen)  # (B, 2)
    dist2 = (yy[None] - centre[:, :1, None]) ** 2 + (xx[None] - centre[:, 1:, None]) ** 2
    masks = (dist2 < (size // 6) ** 2).long()  # (B, H, W)
    weak = [index > 0 for index in range(batch)]
    return {
        "image": torch.randn(batch, 3, size, size, generator=gen),
        "mask": masks,
        "text": ["vehicle" if w else "the white vehicle on the left of the road" for w in weak],
        "sample_id": torch.randperm(num_rows, generator=gen)[:batch],
        "is_weak": torch.tensor(weak),
        "quality": ["weak" if w else "accurate" for w in weak],
        "category": ["vehicle"] * batch,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the paper model and joint stage, run warm-up + timed iterations; the report."""
    from wrel.methods.base import StageContext
    from wrel.methods.lrb import JointStage
    from wrel.models import build_model

    device = torch.device("cpu" if args.dry_run else "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = paper_experiment(write_random_bert_base(Path(tmp) / "bert"), dry_run=args.dry_run)
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device)
    size = cfg.data.image_size
    batch = 2 if args.dry_run else args.batch
    rows = 16 if args.dry_run else RRSISD_WEAK_ROWS
    joint = next(s for s in cfg.stages if s.kind == "joint")
    ctx = StageContext(
        model=model,
        device=device,
        iters_per_epoch=12181 // 8,
        weak_ids=list(range(rows)),
        bank_cfg=cfg.bank,
        amp="none" if args.dry_run else "bf16",
    )
    stage = JointStage(joint, ctx)
    data = make_batch(batch, size, rows)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for index in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        logs = stage.training_step(data, progress=index / ctx.iters_per_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    report: dict[str, Any] = {
        "what": "one LRB-WREL joint iteration: bank step + student step + EMA update",
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backbone": cfg.model.backbone.name,
        "text": cfg.model.text.name,
        "image_size": size,
        "batch": batch,
        "amp": ctx.amp,
        "bank_rows": rows,
        "bank_optimizer": cfg.bank.optimizer,
        "ema_scope": joint.ema_scope,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seconds_per_iteration_median": statistics.median(times),
        "seconds_per_iteration": times,
        "last_losses": {k: v for k, v in logs.items() if k.endswith("loss")},
    }
    if device.type == "cuda":
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        report["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("paper_iteration.json"))
    parser.add_argument("--batch", type=int, default=8, help="global batch (the paper: 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed iterations")
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny random parts: checks the code path only"
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("need --batch >= 1, --steps >= 1 and --warmup >= 0")
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "paper_iteration: no CUDA device is available; nothing timed (run it on a GPU "
            "machine, or pass --dry-run to check the code path on the CPU)"
        )
        return 0
    report = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    peak = report.get("peak_memory_gib")
    print(
        f"paper_iteration: {report['seconds_per_iteration_median']:.3f} s / iteration "
        f"(median of {args.steps}), batch {report['batch']} at {report['image_size']} px"
        + (f", peak memory {peak:.2f} GiB" if peak is not None else "")
        + f" -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
