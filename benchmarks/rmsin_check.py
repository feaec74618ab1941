"""rmsin checks: forward + backward throughput and peak memory, then a short ``lrb-paper`` run.

1. ``fwdbwd``: the RMSIN segmenter at the paper's sizes (Swin-B, window 12, 480 px, random
   weights; word features random ``(B, 768, 20)``), forward + backward of the summed logits;
   seconds per iteration, images per second, peak memory (CUDA: allocated; CPU: the growth of
   the process's peak resident memory).
2. ``train``: the first stage of ``lrb-paper`` (teacher warm-up: released loss, AdamW 3e-5,
   poly schedule) on the embedded synthetic benchmark at 480 px, rmsin + a random BERT-base
   (``transformers.BertConfig`` defaults, the uncased vocabulary of the packaged MiniLM
   tokenizer), for ``--train-steps`` steps; the loss is printed every ``--log-every`` steps and
   the summary compares the mean loss of the first and last tenth.

GPU (``bash benchmarks/check_gpu.sh`` runs it; about 3-5 minutes on one H100)::

    python benchmarks/rmsin_check.py --device cuda --output rmsin_check.json

CPU, code path only (tiny rmsin at 64 px, a few steps)::

    python benchmarks/rmsin_check.py --tiny --device cpu

CPU numbers of docs/model.md (full build, batch 1, 480 px, forward + backward only)::

    python benchmarks/rmsin_check.py --device cpu --parts fwdbwd --batch 1 --warmup 0 --steps 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
PAPER_YAML = REPO / "configs" / "paper_rrsisd.yaml"
TINY_SETS = [
    "model.rmsin.embed_dim=8",
    "model.rmsin.depths=[1,1,2,1]",
    "model.rmsin.num_heads=[1,1,2,2]",
    "model.rmsin.window_size=4",
    "model.text.name=tiny",
    "model.text.path=null",
    "model.text.trainable_layers=null",
    "data.image_size=64",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure_fwdbwd(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Forward + backward of the segmenter; the timing report."""
    from wrel.models.rmsin.config import RmsinConfig
    from wrel.models.rmsin.decoder import RmsinDecoder
    from wrel.models.rmsin.network import MultimodalSwin, RmsinSegmenter

    cfg, size = (RmsinConfig.tiny(), 64) if args.tiny else (RmsinConfig(), 480)
    rss_before = _peak_rss_gib()
    torch.manual_seed(0)
    model = RmsinSegmenter(MultimodalSwin(cfg, 768, size, 0.3), RmsinDecoder(cfg.embed_dim))
    model = model.to(device).train()
    images = torch.randn(args.batch, 3, size, size, device=device)
    words = torch.randn(args.batch, 768, 20, device=device)
    word_mask = torch.ones(args.batch, 20, 1, device=device)
    word_mask[:, 12:] = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for index in range(args.warmup + args.steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=args.amp == "bf16"):
            logits = model(images, words, word_mask)
        logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
        _sync(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    report: dict[str, Any] = {
        "image_size": size,
        "batch": args.batch,
        "amp": args.amp,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_iteration_median": seconds,
        "images_per_second": args.batch / seconds,
        "seconds_per_iteration": times,
    }
    if device.type == "cuda":
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        report["peak_rss_growth_gib"] = _peak_rss_gib() - rss_before
    return report


def _random_bert_base(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig

    from wrel.models.text_encoder import minilm_folder

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder()), local_files_only=True)
    tokenizer.save_pretrained(str(folder))
    BertConfig(vocab_size=len(tokenizer)).save_pretrained(str(folder))
    return folder


def train_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The teacher warm-up stage of ``lrb-paper`` with rmsin; the loss curve."""
    from torch.utils.data import DataLoader

    from wrel.data.dataset import RefSegDataset, collate_samples, load_samples
    from wrel.data.synth import SynthConfig, generate_benchmark
    from wrel.engine.experiment import build_experiment
    from wrel.methods.base import StageContext
    from wrel.methods.supervised import SupervisedStage
    from wrel.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        num_train = 64 if args.tiny else 2000
        generate_benchmark(
            root, SynthConfig(num_train=num_train, num_val=8, num_test=8), progress=False
        )
        sets = [
            f"data.root={root}",
            "model.arch=rmsin",
            "model.backbone.pretrained=false",
            "model.backbone.checkpoint_path=null",
            f"model.text.path={_random_bert_base(Path(tmp) / 'bert')}",
            "model.text.pretrained=false",
            *(TINY_SETS if args.tiny else []),
        ]
        cfg = build_experiment("lrb-paper", yaml_files=[PAPER_YAML], assignments=sets)
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device)
        samples = load_samples(root, "train")
        size = cfg.data.image_size
        loader = DataLoader(
            RefSegDataset(samples, image_size=(size, size)),
            batch_size=args.batch,
            shuffle=True,
            drop_last=True,
            collate_fn=collate_samples,
            generator=torch.Generator().manual_seed(0),
        )
        ctx = StageContext(
            model=model,
            device=device,
            iters_per_epoch=args.train_steps,
            weak_ids=[],
            bank_cfg=cfg.bank,
            amp=args.amp,
        )
        stage = SupervisedStage(cfg.stages[0], ctx)
        losses: list[float] = []
        start = time.perf_counter()
        while len(losses) < args.train_steps:
            for batch in loader:
                logs = stage.training_step(batch, progress=len(losses) / args.train_steps)
                losses.append(logs["loss"])
                if len(losses) % args.log_every == 0 or len(losses) == 1:
                    print(f"  train step {len(losses):4d}  loss {logs['loss']:.4f}", flush=True)
                if len(losses) == args.train_steps:
                    break
        _sync(device)
        seconds = time.perf_counter() - start
    tenth = max(1, len(losses) // 10)
    first, last = statistics.mean(losses[:tenth]), statistics.mean(losses[-tenth:])
    return {
        "stage": cfg.stages[0].name,
        "image_size": size,
        "batch": args.batch,
        "steps": len(losses),
        "seconds": seconds,
        "loss_first_tenth": first,
        "loss_last_tenth": last,
        "loss_decreased": last < first,
        "losses": losses,
    }


def summary(report: dict[str, Any]) -> str:
    """One screen: device, the two parts, the verdict."""
    lines = [f"rmsin check on {report['device']} (torch {report['torch']})"]
    fb = report.get("fwdbwd")
    if fb:
        memory = fb.get("peak_memory_gib", fb.get("peak_rss_growth_gib"))
        lines.append(
            f"  forward+backward  {fb['image_size']} px, batch {fb['batch']}, amp {fb['amp']}: "
            f"{fb['seconds_per_iteration_median']:.3f} s/iter, {fb['images_per_second']:.2f} img/s, "
            f"peak memory {memory:.2f} GiB, {fb['parameters'] / 1e6:.2f} M parameters"
        )
    tr = report.get("train")
    if tr:
        lines.append(
            f"  lrb-paper {tr['stage']}  {tr['steps']} steps at {tr['image_size']} px, batch "
            f"{tr['batch']}: {tr['seconds']:.0f} s, loss {tr['loss_first_tenth']:.4f} -> "
            f"{tr['loss_last_tenth']:.4f} ({'decreasing' if tr['loss_decreased'] else 'NOT decreasing'})"
        )
    ok = not tr or tr["loss_decreased"]
    lines.append(f"rmsin check: {'OK' if ok else 'FAILED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny rmsin at 64 px (code path)")
    parser.add_argument("--parts", default="fwdbwd,train", help="comma list of fwdbwd,train")
    parser.add_argument("--batch", type=int, default=8, help="batch (the paper: 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed forward+backward steps")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument(
        "--amp", choices=["none", "bf16"], default=None, help="default: bf16 on CUDA"
    )
    parser.add_argument("--output", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("rmsin_check: no CUDA device; use --device cpu (with --tiny for a quick check)")
        return 2
    args.amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    if args.tiny:
        args.batch, args.steps, args.train_steps = (
            min(args.batch, 2),
            min(args.steps, 2),
            min(args.train_steps, 20),
        )
        args.log_every = min(args.log_every, 5)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"fwdbwd", "train"}:
        parser.error(f"unknown part in --parts {args.parts!r}; use fwdbwd,train")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "tiny": args.tiny,
    }
    if "fwdbwd" in parts:
        report["fwdbwd"] = measure_fwdbwd(args, device)
    if "train" in parts:
        report["train"] = train_steps(args, device)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
    print(summary(report))
    return 0 if not report.get("train") or report["train"]["loss_decreased"] else 1


if __name__ == "__main__":
    sys.exit(main())
