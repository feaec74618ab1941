"""Compare the run records of two `wrel bench` result folders: is every shared run reproduced?

    .venv/bin/python research/compare_records.py docs/results/ambiguous runs/trace-full/out

For each run present in both folders it prints whether the best checkpoint (stage, epoch,
step), its val metrics and the test metrics are identical, both mIoUs and both wall times.
Exits 1 when a shared run differs, 2 when the folders share no run.
"""

from __future__ import annotations

import argparse
import sys

from wrel.studies.runner import load_records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="a wrel bench --out folder")
    parser.add_argument("second", help="another one")
    args = parser.parse_args()
    first = {r["name"]: r for r in load_records(args.first)}
    second = {r["name"]: r for r in load_records(args.second)}
    shared = sorted(first.keys() & second.keys())
    if not shared:
        print("the two folders share no run", file=sys.stderr)
        return 2
    print("| run | best checkpoint | val metrics | test metrics | test mIoU | wall time (s) |")
    print("|---|---|---|---|---|---|")
    differs = 0
    for name in shared:
        a, b = first[name], second[name]
        same = [a["best"] == b["best"], a["val"] == b["val"], a["test"] == b["test"]]
        differs += not all(same)
        marks = ["identical" if x else "DIFFERS" for x in same]
        print(
            f"| {name} | {' | '.join(marks)} | {a['test']['mIoU']:.2f} / {b['test']['mIoU']:.2f} "
            f"| {a['wall_time_s']:.0f} / {b['wall_time_s']:.0f} |"
        )
    print(f"\n{len(shared) - differs} of {len(shared)} shared runs reproduced exactly")
    return 1 if differs else 0


if __name__ == "__main__":
    raise SystemExit(main())
