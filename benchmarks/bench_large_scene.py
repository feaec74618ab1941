"""Peak memory and time of ``wrel predict`` on a large GeoTIFF (default 8000 x 8000).

Writes a synthetic georeferenced scene strip by strip, then runs the tiled (or whole-scene)
prediction and writes the GeoTIFF mask, GeoJSON polygons and PNG overlay, reporting wall time
and peak resident memory (``resource.getrusage``) plus the peak of Python/numpy allocations
(``tracemalloc``). Without ``--checkpoint`` an untrained model is built (``--model tiny``
measures the pipeline's own memory and overheads; ``--model default`` the real architecture's
speed).

    .venv/bin/python benchmarks/bench_large_scene.py --size 8000 --out /tmp/bench_scene
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def current_rss_mb() -> float:
    """Current resident set size in MiB (from /proc; falls back to the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return rss_mb()


def write_scene(path: Path, size: int, seed: int = 0) -> None:
    """A georeferenced 3-band uint16 scene with bright 'ships' on a smooth background."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": 3,
        "dtype": "uint16",
        "crs": CRS.from_epsg(32633),
        "transform": Affine(0.5, 0, 500000.0, 0, -0.5, 4.6e6),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, 512):
            rows = np.arange(r0, min(size, r0 + 512), dtype=np.float32)[:, None]
            base = 800 + 300 * np.sin(rows / 700.0) * np.cos(cols / 900.0)  # (h, W)
            strip = np.repeat(base[None], 3, axis=0).astype(np.uint16)  # (3, h, W)
            for _ in range(4):  # a few bright rectangles per strip
                r, c = rng.integers(0, strip.shape[1] - 20), rng.integers(0, size - 60)
                strip[:, r : r + 20, c : c + 60] = 4000
            dst.write(strip, window=((r0, r0 + strip.shape[1]), (0, size)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="scene side in pixels")
    parser.add_argument("--checkpoint", help="model folder (default: an untrained --model)")
    parser.add_argument(
        "--model",
        choices=["tiny", "default"],
        default="tiny",
        help="without --checkpoint: ModelConfig.tiny() or ModelConfig() (pretrained parts)",
    )
    parser.add_argument("--mode", choices=["tile", "whole"], default="tile")
    parser.add_argument("--tile-size", type=int, default=800)
    parser.add_argument("--overlap", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128, help="tiny model input size")
    parser.add_argument("--out", default="bench_large_scene_out", help="output folder")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from wrel.inference import Predictor, PredictorConfig, open_image, write_prediction

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = out / f"scene_{args.size}.tif"
    if not scene.exists():
        t0 = time.perf_counter()
        write_scene(scene, args.size)
        print(f"wrote {scene} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    cfg = PredictorConfig(
        mode=args.mode, tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size
    )
    if args.checkpoint:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, config=cfg)
    else:
        from wrel.models import ModelConfig, build_model

        torch.manual_seed(0)
        size = (args.image_size, args.image_size)
        model_cfg = ModelConfig.tiny() if args.model == "tiny" else ModelConfig()
        model = build_model(model_cfg)
        predictor = Predictor(model, image_size=size, device=args.device, config=cfg)
    before = current_rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    raster = open_image(scene)
    probs = predictor.predict_raster(raster, "the bright ship at the top left")
    mask = predictor.to_mask(probs)
    t_predict = time.perf_counter() - t0
    files = write_prediction(
        raster,
        probs,
        mask,
        mask_path=out / "mask.tif",
        overlay_path=out / "overlay.png",
        geojson_path=out / "mask.geojson",
    )
    t_total = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    result = {
        "size": args.size,
        "mode": args.mode,
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "model": args.checkpoint or f"untrained {args.model} ({args.image_size}px input)",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "predict_s": round(t_predict, 1),
        "predict_and_write_s": round(t_total, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(rss_mb(), 1),
        "tracemalloc_peak_mb": round(py_peak / 2**20, 1),
        "foreground_fraction": round(float(mask.mean()), 4),
        "geojson_mb": round(files.geojson.stat().st_size / 2**20, 2) if files.geojson else None,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
