"""Speed of the synthetic benchmark generator: samples (refs) per minute, writing included.

Usage:
    .venv/bin/python benchmarks/bench_synthetic.py [--images 1000] [--size 128] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from wrel.data.synth import SynthConfig, generate_benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images to render per run")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts")
    args = parser.parse_args()
    config = SynthConfig(image_size=args.size, num_train=args.images, num_val=0, num_test=0)
    results = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = generate_benchmark(Path(tmp), config, num_workers=workers, progress=False)
            seconds = time.perf_counter() - start
            refs = json.loads((out / "meta.json").read_text())["splits"]["train"]["refs"]
        results.append({
            "workers": workers,
            "image_size": args.size,
            "images": args.images,
            "samples": refs,
            "seconds": round(seconds, 2),
            "images_per_second": round(args.images / seconds, 1),
            "samples_per_minute": round(60 * refs / seconds),
        })  # fmt: skip
    print(json.dumps({"cpu_count": os.cpu_count(), "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
