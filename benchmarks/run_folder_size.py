"""Size of a run folder on disk, by part: what a finished run keeps and what it removed.

    python benchmarks/run_folder_size.py runs/demo-lrb-r10-s0
    python benchmarks/run_folder_size.py runs/demo-lrb-r10-s0 --json

Parts: each folder of ``checkpoints/`` (``best``, and while a run trains or with
``--keep-training-state`` the resume state ``last`` / ``last.prev`` and the stage ends
``stage-<i>``), ``bank.safetensors``, ``tensorboard/``, ``expression_bank/`` and the rest (config, logs,
metrics). Sizes are the bytes the files occupy (``st_blocks``, as ``du``), each hard-linked file
counted once. For the bank it also prints the bytes per weak sample (rows of the file) and
whether the file holds the AdamW moments. The targets of a finished run (docs/training.md
"Run folder"): the demo folder at most 600 MB, the bank at most 20 KB per weak sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Folders of the run folder reported as one part each (the checkpoints/ ones one by one).
_TOP_PARTS = ("bank.safetensors", "tensorboard", "expression_bank")


def _disk_bytes(path: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes the files under ``path`` occupy, each (device, inode) once."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    total = 0
    for file in files:
        info = file.lstat()
        key = (info.st_dev, info.st_ino)
        if key in seen:
            continue
        seen.add(key)
        total += getattr(info, "st_blocks", 0) * 512 or info.st_size
    return total


def _bank_info(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        rows = handle.get_slice("rows")
        shape = [int(x) for x in rows.get_shape()]
        dtype = str(rows.get_dtype())
    size = path.stat().st_size
    return {
        "rows_shape": shape,
        "rows_dtype": dtype,
        "moments": "exp_avg" in names,
        "bytes": size,
        "bytes_per_weak_sample": round(size / shape[0], 1) if shape and shape[0] else None,
    }


def measure(run_dir: str | Path) -> dict[str, Any]:
    """``{"parts": {name: bytes}, "total": bytes, "bank": {...} or None}`` of a run folder."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise ValueError(f"{run} is not a run folder (no config.json); give runs/<name>")
    seen: set[tuple[int, int]] = set()
    parts: dict[str, int] = {}
    ckpt = run / "checkpoints"
    if ckpt.is_dir():
        for folder in sorted(p for p in ckpt.iterdir() if p.is_dir()):
            parts[f"checkpoints/{folder.name}"] = _disk_bytes(folder, seen)
    for name in _TOP_PARTS:
        if (run / name).exists():
            parts[name] = _disk_bytes(run / name, seen)
    rest = [p for p in run.iterdir() if p.name not in (*_TOP_PARTS, "checkpoints")]
    parts["other (config, logs, metrics)"] = sum(_disk_bytes(p, seen) for p in rest)
    bank = run / "bank.safetensors"
    return {
        "run": str(run),
        "parts": parts,
        "total": sum(parts.values()),
        "bank": _bank_info(bank) if bank.is_file() else None,
    }


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder (runs/<name>)")
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = parser.parse_args(argv)
    try:
        report = measure(args.run)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['run']}: {_human(report['total'])} on disk")
    for name, size in report["parts"].items():
        print(f"  {name:<32} {_human(size):>10}")
    bank = report["bank"]
    if bank is not None:
        print(
            f"bank: rows {bank['rows_shape']} {bank['rows_dtype']}, moments "
            f"{'kept' if bank['moments'] else 'none'}, {_human(bank['bytes_per_weak_sample'])} "
            "per weak sample"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
