"""Weak splits: the WREL algorithm, determinism, purity, published RRSIS-D counts, the CLI."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from refer_testdata import make_refer

from wrel.cli import main
from wrel.data.refer import REFS_FILE, load_refs
from wrel.data.splits import (
    build_weak_split,
    category_names_from_weak_refs,
    import_split,
    select_weak_ids,
    split_counts,
    weak_ids_of,
)

PUBLISHED = {0.1: (90, 1227, 10954), 0.3: (70, 3663, 8518), 0.5: (50, 6096, 6085)}


def _refs(counts: dict[int, int], split: str = "train", start: int = 0) -> list[dict]:
    refs, rid = [], start
    for cid, n in counts.items():
        for _ in range(n):
            text = f"expression {rid}"
            refs.append({
                "ref_id": rid, "category_id": cid, "split": split, "image_id": rid,
                "ann_id": rid, "file_name": f"{rid}.png", "sent_ids": [rid],
                "sentences": [{"raw": text, "sent": text, "tokens": text.split(), "sent_id": rid}],
            })  # fmt: skip
            rid += 1
    return refs


def _members(refs: list[dict], split: str = "train") -> list[tuple[int, int]]:
    return [(r["ref_id"], r["category_id"]) for r in refs if r["split"] == split]


def test_algorithm_counts_and_budget():
    refs = _refs({1: 50, 2: 30, 3: 15, 4: 4, 5: 1}) + _refs({1: 9}, split="val", start=1000)
    weak = select_weak_ids(_members(refs), accurate_ratio=0.1, seed=0)
    per_cat = Counter(r["category_id"] for r in refs if r["ref_id"] in weak)
    # r = 0.9, budget int(100 * 0.9) = 90; n = min(max(1, int(0.9 * count)), budget, count)
    assert per_cat == {1: 45, 2: 27, 3: 13, 4: 3, 5: 1}
    assert all(r["split"] == "train" for r in refs if r["ref_id"] in weak)
    tight = select_weak_ids(_members(_refs({1: 3, 2: 3, 3: 3})), accurate_ratio=0.8, seed=0)
    assert len(tight) == int(9 * 0.2) == 1  # budget reached after the first category


def test_deterministic_and_pure():
    refs = _refs({1: 40, 2: 20})
    before = copy.deepcopy(refs)
    names = {1: "vehicle", 2: "ship"}
    a = build_weak_split(refs, names, 0.3, seed=7)
    b = build_weak_split(refs, names, 0.3, seed=7)
    c = build_weak_split(refs, names, 0.3, seed=8)
    assert refs == before  # input untouched
    assert a == b and weak_ids_of(a, names) != weak_ids_of(c, names)
    for ref in a:
        first = ref["sentences"][0]
        if ref["ref_id"] in weak_ids_of(a, names):
            assert first["raw"] == names[ref["category_id"]] and first["tokens"] == [first["raw"]]
            assert first["sent"] == f"expression {ref['ref_id']}"  # published format
        else:
            assert first["raw"] == first["sent"]


def test_bad_arguments():
    refs = _refs({1: 4})
    with pytest.raises(ValueError, match="accurate_ratio"):
        select_weak_ids(_members(refs), 1.5)
    with pytest.raises(ValueError, match="no class name for category_id 1"):
        build_weak_split(refs, {2: "ship"}, 0.0)
    assert select_weak_ids(_members(refs), 1.0) == set()
    assert len(select_weak_ids(_members(refs), 0.0)) == 4


def _restore(refs: list[dict]) -> list[dict]:
    """The original refs(unc).p of RRSIS-D: expressions back in raw (test-only helper)."""
    out = copy.deepcopy(refs)
    for ref in out:
        first = ref["sentences"][0]
        first["raw"], first["tokens"] = first["sent"], first["sent"].split()
    return out


@pytest.mark.parametrize("rho", sorted(PUBLISHED))
def test_published_rrsisd_counts(shared_rrsisd, rho):
    number, accurate, weak_total = PUBLISHED[rho]
    refs, published_weak = import_split(shared_rrsisd / f"refs(unc)-{number}-all.p")
    names = category_names_from_weak_refs(refs)
    assert len(names) == 20 and names[18] == "vehicle"
    assert len(refs) == 17402 and len(published_weak) == weak_total
    expected = {  # membership exactly as marked: raw is the class name, sent differs
        r["ref_id"] for r in refs if r["sentences"][0]["raw"] != r["sentences"][0]["sent"]
    }
    assert published_weak == expected
    built = build_weak_split(_restore(refs), names, rho, seed=0)
    built_weak = weak_ids_of(built, names)
    assert split_counts(built, built_weak, names) == split_counts(refs, published_weak, names)
    totals = split_counts(built, built_weak, names).values()
    assert (sum(a for a, _ in totals), sum(w for _, w in totals)) == (accurate, weak_total)
    if rho == 0.1:
        assert split_counts(refs, published_weak, names)["vehicle"] == (188, 1683)


def test_cli_split_and_published(tmp_path, capsys):
    make_refer(tmp_path, num_images=12)
    out = tmp_path / "split.p"
    code = main(["data", "split", "--data", str(tmp_path), "--accurate-ratio", "0.5",
                 "--seed", "1", "--out", str(out)])  # fmt: skip
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "accurate" in printed and "total" in printed
    refs = load_refs(out)
    assert len(refs) == len(load_refs(tmp_path / "tiny" / REFS_FILE))
    assert main(["data", "split", "--published", str(out)]) == 0
    assert "weak train refs" in capsys.readouterr().out
    assert main(["data", "split", "--data", str(tmp_path)]) == 2


def test_weak_split_spec_resolves_once(tmp_path) -> None:
    from wrel.data.splits import WeakSplit

    assert WeakSplit.resolve(None, None).kind == "as-is"
    ratio = WeakSplit.resolve(0.3, None, seed=4)
    assert (ratio.kind, ratio.accurate_ratio, ratio.seed) == ("ratio", 0.3, 4)
    assert ratio.for_split("train") is ratio and ratio.for_split("val").kind == "as-is"
    file = WeakSplit.resolve(None, tmp_path / "refs.p")
    assert file.kind == "file" and file.for_split("val") is file
    assert file.weak_ids([(1, 1), (2, 1)]) == set()  # a file keeps its own marks
    members = _members(_refs({1: 20, 2: 10}))
    assert ratio.weak_ids(members) == select_weak_ids(members, 0.3, 4)
    with pytest.raises(ValueError, match="either split_file"):
        WeakSplit.resolve(0.1, tmp_path / "refs.p")
    with pytest.raises(ValueError, match="accurate_ratio must be in"):
        WeakSplit.resolve(1.5, None)


def test_build_experiment_resolves_the_split_file(tmp_path) -> None:
    """The weak split is part of the resolved config: no caller patches it afterwards."""
    from wrel.engine.experiment import build_experiment
    from wrel.studies.profiles import PROFILES
    from wrel.studies.runner import RunSpec, build_run_config

    make_refer(tmp_path, num_images=12)
    split = tmp_path / "split.p"
    assert main(["data", "split", "--data", str(tmp_path), "--accurate-ratio", "0.5",
                 "--out", str(split)]) == 0  # fmt: skip
    for method in ("naive", "lrb"):
        cfg = build_experiment(method, base={"data": {"split_file": str(split)}})
        assert cfg.data.split_file == str(split) and cfg.data.accurate_ratio is None
    # a ratio other than the default, or Full, contradicts the file
    with pytest.raises(ValueError, match="either a split file .* or an accurate ratio"):
        build_experiment(
            "naive", assignments=[f"data.split_file={split}", "data.accurate_ratio=0.3"]
        )
    with pytest.raises(ValueError, match="--method full .* cannot apply"):
        build_experiment("full", assignments=[f"data.split_file={split}"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_experiment("naive", assignments=[f"data.split_file={tmp_path / 'none.p'}"])
    # a file without weak refs leaves the bank stages nothing to train on
    none_weak = tmp_path / "none-weak.p"
    assert main(["data", "split", "--data", str(tmp_path), "--accurate-ratio", "1",
                 "--out", str(none_weak)]) == 0  # fmt: skip
    with pytest.raises(ValueError, match="'bank-init' needs weak samples"):
        build_experiment("lrb", assignments=[f"data.split_file={none_weak}"])
    # wrel bench: the file's split for every method but Full, which keeps its own data
    profile = PROFILES["quick"]
    naive = build_run_config(profile, RunSpec("naive", 0.5, 0), tmp_path, tmp_path, (), str(split))
    assert naive.data.split_file == str(split) and naive.data.accurate_ratio is None
    full = build_run_config(profile, RunSpec("full", 1.0, 0), tmp_path, tmp_path, (), str(split))
    assert full.data.split_file is None and full.data.accurate_ratio == 1.0
