"""`wrel data synth` / `wrel data stats` and the preview grid, called in-process."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from wrel.commands.data_synth import add_subcommands
from wrel.data.preview import render_preview

SMALL = [
    "--set",
    "image_size=64",
    "--set",
    "num_train=6",
    "--set",
    "num_val=2",
    "--set",
    "num_test=2",
]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wrel data")
    add_subcommands(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_stats_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preview = tmp_path / "preview.png"
    assert (
        _run(["synth", "--out", str(tmp_path), *SMALL, "--no-progress", "--preview", str(preview)])
        == 0
    )
    meta = json.loads((tmp_path / "synthetic" / "meta.json").read_text())
    assert meta["config"]["image_size"] == 64 and meta["splits"]["train"]["images"] == 6
    assert Image.open(preview).size[0] > 300
    capsys.readouterr()
    assert _run(["stats", "--data", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_images"] == 10 and 0.0 <= stats["ambiguous_share"] <= 1.0
    assert _run(["stats", "--data", str(tmp_path)]) == 0
    assert "ambiguous class names" in capsys.readouterr().out


def test_cli_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid keys"):
        _run(["synth", "--out", str(tmp_path), "--set", "num_trian=3"])
    with pytest.raises(FileNotFoundError, match="wrel data synth"):
        _run(["stats", "--data", str(tmp_path / "missing")])


def test_preview_rejects_empty_split(tmp_path: Path) -> None:
    _run(["synth", "--out", str(tmp_path), *SMALL, "--set", "num_val=0", "--no-progress"])
    with pytest.raises(ValueError, match="no refs in split"):
        render_preview(tmp_path, tmp_path / "p.png", split="val")


@pytest.mark.skipif(
    importlib.util.find_spec("wrel.commands.data") is None,
    reason="wrel.commands.data not built yet",
)
def test_wrel_main_dispatches(tmp_path: Path) -> None:
    from wrel.cli import main

    assert main(["data", "synth", "--out", str(tmp_path), *SMALL, "--no-progress"]) == 0
    assert main(["data", "stats", "--data", str(tmp_path), "--json"]) == 0
