"""``wrel predict``: segment what an expression refers to in one image or a large GeoTIFF."""

from __future__ import annotations

import argparse

from wrel.core.distributed import resolve_device
from wrel.core.outfiles import input_files
from wrel.core.readfiles import folder_files
from wrel.data.rasters import DEFAULT_MAX_PIXELS
from wrel.inference import Predictor, PredictorConfig, open_image, write_prediction
from wrel.inference.outputs import check_prediction_paths
from wrel.inference.predictor import read_checkpoint_scaling

DESCRIPTION = """\
Segment the object that TEXT refers to in IMAGE with a trained model folder.

IMAGE may be a PNG/JPEG or a GDAL raster (GeoTIFF, ...), 8- or 16-bit, with 1 to N bands.
Bands and pixel values are mapped to 8-bit RGB exactly as in training (the checkpoint records
data.image_scaling); --bands replaces its band choice, --stretch overrides its value mapping
(with a warning). Checkpoints older than that record keep the auto stretch (8-bit as is, 2-98%
percentiles otherwise). An empty mask is reported on stderr with the highest foreground
probability. Georeferenced inputs give a GeoTIFF
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

Safety: outputs are checked before anything is computed (never the input image, its sidecars
or VRT sources, or a file of the model folder, also with --overwrite; never a folder; a
supported suffix, a writable folder, no existing file unless --overwrite) and written
atomically (a temporary file in the same folder, then renamed), so an interrupted run leaves
any previous output intact. Images declaring more than --max-pixels pixels are refused from
their header, before the model loads. GeoTIFF nodata pixels are left out of the stretch and
never predicted as foreground.
"""

#: How outputs are named in messages: write_prediction's argument -> the flag.
FLAG_NAMES = {
    "mask_path": "--out",
    "overlay_path": "--overlay",
    "geojson_path": "--geojson",
    "probs_path": "--probs",
}


def _bands(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bands expects e.g. 4,3,2, got {text!r}") from None


def _pixels(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1e11 or value != int(value):  # NaN, inf, fractions, > 1e11
        raise argparse.ArgumentTypeError(
            f"--max-pixels expects a whole number of pixels up to 1e11, such as 2e9 (0: no limit), "
            f"got {text!r}"
        )
    return int(value)


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
        help="mask file, .png or .tif (default: beside the input, IMAGE_mask.tif if "
        "georeferenced, else IMAGE_mask.png)",
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
        default=None,
        help="override the checkpoint's training image scaling (default: use it): auto keeps "
        "8-bit and stretches other data between its 2-98%% percentiles, percentile stretches "
        "all data, none maps the dtype's full range",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (the input image is never replaced)",
    )
    p.add_argument(
        "--max-pixels",
        type=_pixels,
        help="refuse images declaring more pixels (height x width), checked before any pixel is "
        "read; ~2 bytes of memory per pixel are needed (default 1e9 = wrel.data.rasters."
        "DEFAULT_MAX_PIXELS; 0: no limit)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, predict, write the requested files, print a summary."""
    import json
    import logging
    import sys
    from pathlib import Path

    log = logging.getLogger("wrel.predict")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    config = PredictorConfig(
        mode=args.mode,
        tile_size=args.tile_size,
        overlap=args.overlap,
        max_whole_side=args.max_whole_side,
        batch_size=args.batch_size,
        threshold=args.threshold,
        max_pixels=max_pixels,
    )
    if not args.text.strip():  # cheap checks first: nothing is opened or loaded for them
        raise ValueError("the expression is empty; describe the object, e.g. 'the red car'")
    image = Path(args.image)
    # Never written over: the image, its sidecars and VRT sources, and the model's own files.
    inputs = input_files([image]) | {
        f: f"a file of the model folder {args.checkpoint} ({f})"
        for f in folder_files(args.checkpoint)
    }

    def check(**paths: str | Path | None) -> None:
        check_prediction_paths(**paths, inputs=inputs, overwrite=args.overwrite, names=FLAG_NAMES)

    # The given outputs are checked before the image is opened; the defaults (which depend on
    # whether the image is georeferenced) right after its header is read, before the model.
    given = {
        "mask_path": args.out,
        "overlay_path": args.overlay,
        "geojson_path": args.geojson,
        "probs_path": args.probs,
    }
    check(**given)
    scaling = read_checkpoint_scaling(args.checkpoint)  # the training contract, if recorded
    if scaling is not None and args.stretch is not None:
        log.warning(
            "--stretch %s overrides the checkpoint's training image scaling (%s): the model may "
            "see other pixel values than in training",
            args.stretch,
            scaling.describe(),
        )
        scaling = None
    raster = open_image(
        image,
        bands=args.bands,
        stretch=args.stretch or "auto",
        max_pixels=max_pixels,
        scaling=scaling,
    )
    try:
        suffix = ".tif" if raster.is_georeferenced else ".png"
        out = Path(args.out) if args.out else image.with_name(f"{image.stem}_mask{suffix}")
        geojson = args.geojson or (out.with_suffix(".geojson") if raster.is_georeferenced else None)
        outputs = {**given, "mask_path": out, "geojson_path": geojson}
        check(**outputs)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=resolve_device(args.device), config=config
        )
        probs = predictor.predict_raster(raster, args.text)
        mask = predictor.to_mask(probs)
        files = write_prediction(  # all or nothing; OutputWriteError (exit 1) on a fault
            raster, probs, mask, **outputs, properties={"text": args.text}, overwrite=args.overwrite
        )
    finally:
        raster.close()
    top = float(probs.max(initial=0)) / 255.0  # uint8 probabilities
    if not mask.any():
        print(
            f"warning: the mask is empty: no pixel reaches the threshold {args.threshold:g}; "
            f"the highest foreground probability is {top:.3f}",
            file=sys.stderr,
        )
    summary = {
        "image": str(args.image),
        "text": args.text,
        "size": [raster.height, raster.width],
        "foreground_fraction": round(float(mask.mean()), 6),
        "max_probability": round(top, 4),
        **{k: str(v) for k, v in vars(files).items() if v is not None},
    }
    log.info("wrote %s", ", ".join(str(v) for v in vars(files).values() if v is not None))
    print(json.dumps(summary))
    return 0
