"""research/pool_coverage.py: what a pool of retrieved expressions can say at all."""

from __future__ import annotations

import json

import pytest


def test_pool_hits_counts_chance_and_coverage_by_hand(research_script) -> None:
    cov = research_script("pool_coverage")
    pool = [
        "The leftmost white ship",  # 0: position + colour
        "The red ship",  # 1: another colour
        "The ship on the right",  # 2: another position
        "The small ship",  # 3: nothing of sample 0 or 1
    ]
    kinds = [
        {"position": {"leftmost", "left"}, "colour": {"white"}},  # sample 0
        {"colour": {"red"}},  # sample 1
        {"size": {"large", "big"}},  # sample 2: no candidate says it
        {},  # sample 3: nothing left out; not counted
        {"colour": {"white"}},  # sample 4: no candidates; not counted
    ]
    candidates = [[1, 2, 3], [0, 1], [0, 3], [0], []]
    out = cov.pool_hits(pool, kinds, candidates)
    # sample 0: none of candidates 1, 2, 3 says leftmost, left or white ("right" is not "left")
    assert out["position"] == {"samples": 1, "chance": 0.0, "coverage": 0.0}
    # colour: sample 0 (0 of 3 candidates), sample 1 (1 of 2)
    assert out["colour"]["samples"] == 2
    assert out["colour"]["chance"] == pytest.approx((0 / 3 + 1 / 2) / 2)
    assert out["colour"]["coverage"] == pytest.approx(0.5)
    assert out["size"] == {"samples": 1, "chance": 0.0, "coverage": 0.0}
    assert out["relation"] == {"samples": 0, "chance": None, "coverage": None}
    # any: samples 0, 1, 2; only sample 1 has a candidate naming one of its kinds
    assert out["any"]["samples"] == 3
    assert out["any"]["coverage"] == pytest.approx(1 / 3)
    # every: sample 1's one kind is named by candidate 1 -> covered; chance 1/2 there
    assert out["every"]["coverage"] == pytest.approx(1 / 3)
    assert out["every"]["chance"] == pytest.approx((0 + 1 / 2 + 0) / 3)


def test_every_needs_one_candidate_naming_all_kinds(research_script) -> None:
    cov = research_script("pool_coverage")
    pool = ["The leftmost ship", "The white ship", "The leftmost white ship"]
    kinds = [{"position": {"leftmost"}, "colour": {"white"}}] * 2
    out = cov.pool_hits(pool, kinds, [[0, 1], [0, 2]])
    # both samples have each kind covered by some candidate
    assert out["position"]["coverage"] == 1.0 and out["colour"]["coverage"] == 1.0
    assert out["any"]["coverage"] == 1.0
    # but only the second has one candidate that says both
    assert out["every"]["coverage"] == pytest.approx(0.5)
    assert out["every"]["chance"] == pytest.approx((0 + 1 / 2) / 2)


def test_coverage_on_a_tiny_benchmark(research_script, tiny_bench, tmp_path) -> None:
    cov = research_script("pool_coverage")
    attributes = json.loads((tiny_bench / "synthetic" / "attributes.json").read_text())
    out = cov.coverage_for(tiny_bench, 0.5, 0, [2], attributes)
    assert out["weak"] > 0 and out["pool"] > 0
    for key in ("2", "all"):
        for row in cov.ROWS:
            figures = out[key][row]
            if figures["samples"]:
                # a perfect chooser does at least as well as a random pick
                assert 0.0 <= figures["chance"] <= figures["coverage"] <= 1.0
    # the whole category pool covers at least what any K of it covers
    for row in cov.ROWS:
        if out["2"][row]["samples"]:
            assert out["all"][row]["coverage"] >= out["2"][row]["coverage"]
    text = cov.markdown({"seeds": [0], "candidates": [2], "ratios": {"0.5": [out]}})
    assert "| position |" in text and "K = all" in text
