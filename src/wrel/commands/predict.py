"""``wrel predict``: segment what an expression refers to in one image or a large GeoTIFF."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Segment the object that TEXT refers to in IMAGE with a trained model folder.

IMAGE may be a PNG/JPEG or a GDAL raster (GeoTIFF, ...), 8- or 16-bit, with 1 to N bands
(--bands picks three, 16-bit data is percentile-stretched). Georeferenced inputs give a GeoTIFF
mask with the input's CRS and transform plus GeoJSON polygons in the same CRS; other inputs give
a PNG mask.

Large scenes (--mode):
  whole  downscale the whole scene to the model input: keeps the global layout, so use it when
         the expression locates the object in the scene ("the ship at the top left").
  tile   cut the scene into overlapping tiles of --tile-size pixels (seen at training scale) and
         stitch the probabilities: keeps small objects visible, so use it for objects described
         by their own look or surroundings ("the white ship beside the pier"). Memory stays
         bounded by the tile size, whatever the scene size.
  auto   whole up to --max-whole-side pixels, tile above (default).
"""


def _bands(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bands expects e.g. 4,3,2, got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel predict``."""
    p = subparsers.add_parser(
        "predict",
        help="segment the object an expression refers to (PNG or GeoTIFF, any size)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="model folder written by training (save_model)")
    p.add_argument("image", help="input image: .png/.jpg or a GDAL raster such as .tif")
    p.add_argument("text", help='referring expression, e.g. "the ship at the top left"')
    p.add_argument(
        "--out",
        help="mask file, .png or .tif (default: IMAGE_mask.tif if georeferenced, else .png)",
    )
    p.add_argument("--overlay", help="PNG quick look with the mask tinted over the image")
    p.add_argument(
        "--geojson", help="GeoJSON polygons (default for georeferenced inputs: OUT.geojson)"
    )
    p.add_argument("--probs", help="uint8 probabilities (0-255) as .tif or .png")
    p.add_argument("--mode", choices=["auto", "whole", "tile"], default="auto", help="see above")
    p.add_argument("--tile-size", type=int, default=800, help="scene pixels per tile (default 800)")
    p.add_argument("--overlap", type=int, default=160, help="tile overlap in pixels (default 160)")
    p.add_argument(
        "--max-whole-side", type=int, default=1600, help="auto: tile above this side (default 1600)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold")
    p.add_argument("--bands", type=_bands, help="1-based bands as R,G,B (e.g. 4,3,2) or one band")
    p.add_argument(
        "--stretch",
        choices=["auto", "percentile", "none"],
        default="auto",
        help="auto: keep 8-bit, 2-98%% percentile stretch for other data",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, predict, write the requested files, print a summary."""
    import json
    import logging
    from pathlib import Path

    from wrel.engine.distributed import resolve_device
    from wrel.inference import Predictor, PredictorConfig, open_image, write_prediction

    log = logging.getLogger("wrel.predict")
    config = PredictorConfig(
        mode=args.mode,
        tile_size=args.tile_size,
        overlap=args.overlap,
        max_whole_side=args.max_whole_side,
        batch_size=args.batch_size,
        threshold=args.threshold,
    )
    raster = open_image(args.image, bands=args.bands, stretch=args.stretch)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=resolve_device(args.device), config=config
    )
    try:
        probs = predictor.predict_raster(raster, args.text)
        mask = predictor.to_mask(probs)
        stem = Path(args.image).stem
        out = Path(args.out or f"{stem}_mask{'.tif' if raster.is_georeferenced else '.png'}")
        geojson = args.geojson or (out.with_suffix(".geojson") if raster.is_georeferenced else None)
        files = write_prediction(
            raster,
            probs,
            mask,
            mask_path=out,
            overlay_path=args.overlay,
            geojson_path=geojson,
            probs_path=args.probs,
            properties={"text": args.text},
        )
    finally:
        raster.close()
    summary = {
        "image": str(args.image),
        "text": args.text,
        "size": [raster.height, raster.width],
        "foreground_fraction": round(float(mask.mean()), 6),
        **{k: str(v) for k, v in vars(files).items() if v is not None},
    }
    log.info("wrote %s", ", ".join(str(v) for v in vars(files).values() if v is not None))
    print(json.dumps(summary))
    return 0
