"""How well-conditioned is the reference forward of the released RMSIN network?

Fills the 2-2-2-2 `rmsin` build by the reference's closed-form weight rule (the same filling as
tests/models/test_rmsin_reference.py, whose helpers it imports), runs the reference input once
in float32 and once in float64, and prints each output's max abs gap to the reference logits
and to each other, beside the range of the reference's own class-logit difference. A float64 /
float32 gap far above that range means no float32 implementation can match the reference to
1e-4 unless it repeats the reference's exact operation order and backend (docs/model.md).

    HF_HUB_OFFLINE=1 PYTHONPATH=src python research/rmsin_reference_conditioning.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests" / "models"))
    import test_rmsin_reference as ref_test  # the test's weight rule and key map

    from wrel.models.rmsin.released import DERIVED_KEY_SUFFIX, load_released_segmenter

    torch.set_num_threads(args.threads)
    ref = ref_test.load_file(str(ref_test.DATA / "reference_io.safetensors"))
    model = ref_test.segmenter((2, 2, 2, 2))
    state = {}
    for key, (shape, dtype) in ref_test.layout("2-2-2-2")["state_dict"].items():
        if dtype != "float32":
            derived = key.endswith(DERIVED_KEY_SUFFIX)
            state[key] = model.get_buffer(key) if derived else model.state_dict()[key]
            continue
        state[key] = ref.get(f"bn.{key}", ref_test.rule_tensor(key, shape))
    load_released_segmenter(model, state, "reference rule")
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        out32 = model(ref["image"], ref["l_feats"], ref["l_mask"])
        seconds = time.perf_counter() - start
        out64 = model.double()(ref["image"].double(), ref["l_feats"].double(),
                               ref["l_mask"].double())  # fmt: skip
    expected = ref["logits"].double()
    margin = (expected[:, 1] - expected[:, 0]).abs()
    print(f"threads {args.threads}, float32 forward {seconds:.1f} s")
    print(f"float32 vs reference: {(out32.double() - expected).abs().max().item():.4g}")
    print(f"float64 vs reference: {(out64 - expected).abs().max().item():.4g}")
    print(f"float64 vs float32:   {(out64 - out32.double()).abs().max().item():.4g}")
    print(f"reference |logit 1 - logit 0|: {margin.min().item():.4g} to {margin.max().item():.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
