"""Forwards per second of a frozen teacher scoring candidate texts (the retrieve stage's cost).

The retrieve stage (wrel.methods.retrieval) runs ``K + 1`` forwards per weak sample, in chunks,
without gradients. This times one chunk of the model of a run folder at the run's input size,
fp32 and bf16 autocast, with and without channels_last, after a warm-up pass, each twice: the
text encoded in every forward (``text: encoded``), and the word features encoded once and passed
as ``words`` (``text: cached``, what the stage does: each pool text meets about 144 images in a
10 % pass, so encoding it once is free by comparison)::

    HF_HUB_OFFLINE=1 python research/bench_retrieval_forward.py runs/bench/lrb-paper-r10-s2 \\
        --checkpoint stage-0 --chunks 64 256 --json docs/results/retrieval_forward.json

Figures depend on the machine and on what else runs on it; the script prints them with the
thread count it used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from word_search_screen import _load_teacher  # noqa: E402


def main() -> int:
    from wrel.core.config_io import from_dict
    from wrel.engine.checkpoint import load_model
    from wrel.engine.experiment import ExperimentConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of the teacher")
    parser.add_argument("--checkpoint", default="best", help="checkpoints/<name> (best)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per setting")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if min(args.chunks) < 1 or args.repeats < 1:
        parser.error("--chunks and --repeats must be at least 1")

    cfg = from_dict(ExperimentConfig, json.loads((args.run / "config.json").read_text()))
    model = _load_teacher(args.run / "checkpoints" / args.checkpoint, cfg, load_model).eval()
    size = cfg.data.image_size
    rows = []
    for chunk in args.chunks:
        ids, att = model.tokenize(["the white vehicle on the lower left"] * chunk)
        images = torch.randn(chunk, 3, size, size, generator=torch.Generator().manual_seed(0))
        for channels_last in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            net = model.to(memory_format=fmt)
            x = images.contiguous(memory_format=fmt)
            for precision in ("fp32", "bf16"):
                ctx = (
                    torch.autocast("cpu", dtype=torch.bfloat16)
                    if precision == "bf16"
                    else torch.autocast("cpu", enabled=False)
                )
                with torch.no_grad(), ctx:
                    words = net.encode_text(ids, att)  # the stage's word table, for one text
                    for text in ("encoded", "cached"):
                        kwargs = {"input_ids": ids} if text == "encoded" else {"words": words}
                        net(x, attention_mask=att, **kwargs)  # warm-up
                        start = time.perf_counter()
                        for _ in range(args.repeats):
                            net(x, attention_mask=att, **kwargs)
                        seconds = (time.perf_counter() - start) / args.repeats
                        row = {
                            "chunk": chunk,
                            "channels_last": channels_last,
                            "precision": precision,
                            "text": text,
                            "forwards_per_s": round(chunk / seconds, 1),
                        }
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    report = {
        "run": f"{args.run}/checkpoints/{args.checkpoint}",
        "image_size": size,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
