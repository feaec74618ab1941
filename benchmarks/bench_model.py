"""Parameters, FLOPs and per-image latency of the default wrel model.

Reports, for each input size, forward FLOPs (``torch.utils.flop_counter.FlopCounterMode``,
batch 1, one multiply-add = 2 FLOPs) and the median latency per image over repeated runs, on
the CPU and, when one is available, on a GPU; each with and without channels_last.

    python benchmarks/bench_model.py --sizes 128 256 480 --repeats 10 --output bench.json

Latency on a shared machine depends on its load; note it with the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from wrel.core.config_io import apply_overrides
from wrel.models import ModelConfig, build_model

TEXT = "the small white vehicle parked on the left of the road"


def count_parameters(model: torch.nn.Module) -> dict[str, float]:
    """Parameters (millions) per part and in total."""
    parts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
        for name in ("backbone", "text_encoder", "fusion", "decoder")
    }
    parts["total"] = sum(parts.values())
    parts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    return parts


def count_flops(model: torch.nn.Module, size: int) -> float:
    """Forward GFLOPs for one ``size`` x ``size`` image and one expression."""
    ids, mask = model.tokenize([TEXT])
    images = torch.randn(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images, ids, mask)
    return counter.get_total_flops() / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(
    model: torch.nn.Module,
    size: int,
    device: torch.device,
    *,
    batch: int,
    repeats: int,
    warmup: int,
    channels_last: bool,
) -> float:
    """Median milliseconds per image of ``repeats`` forward passes of a batch."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    ids, mask = model.tokenize([TEXT] * batch)
    ids, mask = ids.to(device), mask.to(device)
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            model(images, ids, mask)
            _sync(device)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; returns a JSON-able report."""
    torch.manual_seed(0)
    cfg = apply_overrides(ModelConfig, assignments=args.set)
    model = build_model(cfg).eval()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    report: dict[str, Any] = {
        "model": f"{cfg.backbone.name} + {cfg.text.name}",
        "parameters_m": count_parameters(model),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "rows": [],
    }
    for size in args.sizes:
        gflops = count_flops(model.to("cpu"), size)
        for device in devices:
            batch = args.gpu_batch if device.type == "cuda" else 1
            repeats = args.repeats * (5 if device.type == "cuda" else 1)
            for channels_last in (False, True):
                ms = latency_ms(
                    model,
                    size,
                    device,
                    batch=batch,
                    repeats=repeats,
                    warmup=args.warmup,
                    channels_last=channels_last,
                )
                row = {
                    "size": size,
                    "gflops": round(gflops, 3),
                    "device": torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else "cpu",
                    "batch": batch,
                    "channels_last": channels_last,
                    "ms_per_image": round(ms, 2),
                }
                logging.info("%s", row)
                report["rows"].append(row)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table."""
    lines = [
        "| size | GFLOPs | device | batch | channels_last | ms / image (median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['size']} | {r['gflops']:.2f} | {r['device']} | {r['batch']} | "
            f"{r['channels_last']} | {r['ms_per_image']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 480])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs (x5 on GPU)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gpu-batch", type=int, default=8, help="batch size on the GPU")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="model config key=value")
    parser.add_argument("--output", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
