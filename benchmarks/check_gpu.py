"""Train a few steps of every method on CUDA with bf16 autocast and print throughput.

Run on a GPU machine: ``bash benchmarks/check_gpu.sh``. Exits with status 2 and a clear message
when no CUDA device is available.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("check_gpu: no CUDA device is available; run this on a GPU machine", file=sys.stderr)
        return 2
    from wrel.data.synth import SynthConfig, generate_benchmark
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate_benchmark(root, SynthConfig())
        for method in ("only-accurate", "naive", "full", "lrb"):
            cfg = build_experiment(
                method,
                assignments=[
                    f"data.root={root}",
                    f"train.output_dir={tmp}/runs",
                    "train.device=cuda",
                    "train.amp=bf16",
                    "train.channels_last=true",
                    "train.progress=false",
                ],
            )
            for stage in cfg.stages:
                stage.epochs = 1
            torch.cuda.synchronize()
            start = time.perf_counter()
            result = train(cfg)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            print(f"{method:14s} {seconds:7.2f} s  test {result.get('test')}")
    print("check_gpu: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
