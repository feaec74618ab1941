"""Silent wrong results: each case used to finish with exit 0 and a wrong answer.

An all-empty prediction from a broken normalisation, weights or input; band ranges of NaN
suggested by ``wrel data stats``; a NaN reference bank decoded into words; a resume state
edited to claim a finished run. Each is now an error naming the file or the key (or, for a
few NaN pixels among many, a documented conversion that says what it skipped).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wrel.cli import main
from wrel.engine.checkpoint import CheckpointError, config_seal, file_record, save_model
from wrel.models import ModelConfig, build_model

# The float TIFFs written here carry no geotransform; that is not what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).eval()


@pytest.fixture
def best(tmp_path: Path, tiny_model) -> Path:
    return save_model(tmp_path / "best", tiny_model, {"method": "naive", "image_size": [32, 32]})


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "scene.png"
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


# -- degenerate preprocessing and non-finite weights or inputs ------------------------------------


@pytest.mark.parametrize(
    "mean, std, pattern",
    [
        ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2), r"image_std = \[0\.2, 0\.0, 0\.2\] must be > 0"),
        ((0.5, 0.5, 0.5), (0.2, -0.1, 0.2), r"image_std .* must be > 0"),
        ((math.nan, 0.5, 0.5), (0.2, 0.2, 0.2), r"image_mean = \[nan.*NaN or infinity"),
        ((0.5, 0.5, 0.5), (0.2, math.inf, 0.2), r"image_std = .*inf.*NaN or infinity"),
    ],
)
def test_predictor_refuses_a_degenerate_normalisation(tiny_model, mean, std, pattern) -> None:
    from wrel.inference import Predictor

    with pytest.raises(ValueError, match=pattern):
        Predictor(tiny_model, image_size=(32, 32), mean=mean, std=std)


def test_std_zero_in_a_checkpoint_is_one_line_exit_2(best: Path, tmp_path: Path, capsys) -> None:
    data = json.loads((best / "config.json").read_text())
    data["metadata"]["image_std"] = [0, 0, 0]
    data["config_sha256"] = config_seal(data)  # even a re-sealed edit is refused
    (best / "config.json").write_text(json.dumps(data))
    out = tmp_path / "m.png"
    assert main(["predict", str(best), str(_image(tmp_path)), "a ship", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image_std" in err[0] and str(best / "config.json") in err[0]
    assert not out.exists()


@pytest.mark.parametrize("poison", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_weights_in_memory_are_an_error_not_an_empty_mask(
    tmp_path: Path, poison: float
) -> None:
    from wrel.inference import Predictor
    from wrel.inference.predictor import NonFiniteOutputError

    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny()).eval()
    with torch.no_grad():
        model.decoder.classifier.weight.fill_(poison)  # as a tampered or diverged model
    predictor = Predictor(model, image_size=(32, 32))
    with pytest.raises(NonFiniteOutputError, match="NaN or infinite scores"):
        predictor.predict(_image(tmp_path), "a ship")


def test_all_nan_input_is_an_error(tiny_model) -> None:
    from wrel.data.rasters import NonFiniteImageError
    from wrel.inference import Predictor

    predictor = Predictor(tiny_model, image_size=(32, 32))
    blank = np.full((20, 24, 3), np.nan, dtype=np.float32)
    with pytest.raises(NonFiniteImageError, match="no finite pixel value"):
        predictor.predict(blank, "a ship")
    inf = np.full((20, 24), np.inf, dtype=np.float64)
    with pytest.raises(NonFiniteImageError):
        predictor.predict(inf, "a ship")


def test_a_few_nan_pixels_are_converted_not_refused(tiny_model) -> None:
    from wrel.inference import Predictor

    predictor = Predictor(tiny_model, image_size=(32, 32))
    rng = np.random.default_rng(1)
    scene = rng.random((20, 24, 3)).astype(np.float32)
    scene[3, 4] = np.nan  # documented: NaN pixels read as the low end of the stretch
    probs = predictor.predict(scene, "a ship", return_probs=True)
    assert probs.shape == (20, 24) and np.isfinite(probs).all()


def test_training_reader_refuses_an_all_nan_float_tiff(tmp_path: Path) -> None:
    import rasterio

    from wrel.data.image_reading import read_image

    path = tmp_path / "blank.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=8, height=6, count=1, dtype="float32"
    ) as dst:
        dst.write(np.full((1, 6, 8), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=r"blank\.tif.*no finite pixel value"):
        read_image(path)


# -- NaN statistics are refused (or skipped, and said) at the source ------------------------------


def _float_tiff(path: Path, values: np.ndarray, nodata: float | None = None) -> Path:
    import rasterio

    with rasterio.open(
        path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
        count=values.shape[0], dtype="float32", nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(values.astype(np.float32))
    return path


def test_stats_skip_a_few_nan_pixels_and_say_how_many(tmp_path: Path) -> None:
    from wrel.data.stats import pixel_stats

    rng = np.random.default_rng(0)
    values = rng.uniform(100, 200, (3, 16, 16))
    values[:, 0, :5] = np.nan  # 5 NaN pixels
    values[1, 7, 7] = np.inf  # one more pixel with a non-finite band
    stats = pixel_stats([_float_tiff(tmp_path / "a.tif", values)])
    assert stats["nonfinite_skipped"] == 6
    for key in ("band_low", "band_high", "mean", "std", "min", "max", "median"):
        assert all(math.isfinite(v) for v in stats[key]), (key, stats[key])
    assert all(100 <= v <= 200 for v in stats["band_low"] + stats["band_high"])
    assert "6 NaN, infinite or nodata pixels of 256 sampled were left out" in stats["note"]
    assert "nan" not in " ".join(stats["image_scaling_sets"]).lower()


def test_wrel_data_stats_on_float_tiffs_with_nan_pixels(tmp_path: Path, capsys) -> None:
    """The whole command on a RefSegRS folder of float GeoTIFFs holding a few NaN pixels."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "output_phrase_train.txt").write_text("1 the red roof\n2 a road\n")
    rng = np.random.default_rng(2)
    for index in ("1", "2"):
        values = rng.uniform(0.1, 0.6, (3, 12, 12))
        values[:, :2, :2] = np.nan  # 4 NaN pixels per image
        _float_tiff(tmp_path / "images" / f"{index}.tif", values)
        mask = np.zeros((12, 12), np.uint8)
        mask[4:8, 4:8] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{index}.png")
    assert main(["data", "stats", "--data", str(tmp_path), "--json"]) == 0
    px = json.loads(capsys.readouterr().out)["pixels"]
    assert px["nonfinite_skipped"] == 8 and "8 NaN" in px["note"]
    assert all(0.1 <= v <= 0.6 for v in px["band_low"] + px["band_high"])
    assert main(["data", "stats", "--data", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text.lower().replace("8 nan,", "") and "band_low=[0." in text


def test_stats_leave_nodata_out(tmp_path: Path) -> None:
    from wrel.data.stats import pixel_stats

    values = np.full((3, 8, 8), 50.0)
    values[:, :, :4] = -9999.0  # declared nodata
    values[0, 0, 7] = 60.0
    stats = pixel_stats([_float_tiff(tmp_path / "n.tif", values, nodata=-9999.0)])
    assert stats["nonfinite_skipped"] == 32 and min(stats["min"]) == 50.0


def test_stats_of_all_nan_images_are_refused(tmp_path: Path) -> None:
    from wrel.data.stats import pixel_stats

    path = _float_tiff(tmp_path / "nan.tif", np.full((3, 4, 4), np.nan))
    with pytest.raises(ValueError, match=r"every sampled pixel .* is NaN.*nan\.tif"):
        pixel_stats([path])


def test_stats_of_a_constant_band_suggest_no_range(tmp_path: Path) -> None:
    from wrel.data.stats import pixel_stats

    stats = pixel_stats([_float_tiff(tmp_path / "c.tif", np.full((3, 4, 4), 7.0))])
    assert stats["image_scaling_sets"] == [] and "constant" in stats["note"]


# -- a NaN bank -----------------------------------------------------------------------------------


def test_nan_bank_is_refused_by_bank_decode(tmp_path: Path, tiny_model) -> None:
    from wrel.methods.bank import BankConfig, ReferenceBank
    from wrel.studies.bank_decode import decode_bank

    run = tmp_path / "run"
    save_model(run / "checkpoints" / "best", tiny_model, {"method": "lrb"})
    bank = ReferenceBank.for_model([3, 5, 8], tiny_model, BankConfig(num_prompts=2))
    bank.rows[1, 0, 0] = float("nan")
    bank.save(run / "bank.safetensors")
    with pytest.raises(ValueError, match=r"bank\.safetensors: 1 of 3 bank rows hold NaN.*id 5"):
        decode_bank(run, k=1)
    with torch.no_grad():
        bank.rows[1] = 0.5
    bank.save(run / "bank.safetensors")
    assert decode_bank(run, k=1)["samples"]  # a finite bank decodes


# -- a tampered loop state ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_bench, tiny_model_sets) -> Path:
    """A finished 2-epoch tiny run: ``last`` (end of epoch 2) and ``last.prev`` (epoch 1)."""
    from wrel.engine.trainer import train

    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg(out, tiny_bench, tiny_model_sets)
    return Path(train(cfg)["run_dir"])


def _cfg(out: Path, tiny_bench: Path, tiny_model_sets: list[str]):
    from wrel.engine.experiment import build_experiment

    cfg = build_experiment(
        "only-accurate",
        assignments=[
            f"train.output_dir={out}", "name=run", "train.batch_size=4",
            "train.eval_batch_size=4", "train.progress=false", "data.image_size=16",
            f"data.root={tiny_bench}", *tiny_model_sets,
        ],
    )  # fmt: skip
    cfg.stages[0].epochs = 2
    cfg.train.keep_training_state = True  # a finished run removes it otherwise: nothing to tamper
    return cfg


def _copy_run(finished_run: Path, tmp_path: Path, tiny_bench, tiny_model_sets):
    from wrel.core.config_io import dumps

    cfg = _cfg(tmp_path / "runs", tiny_bench, tiny_model_sets)
    run = tmp_path / "runs" / "run"
    shutil.copytree(finished_run, run)
    (run / "config.json").write_text(dumps(cfg))  # the copy's own output_dir
    return cfg, run


def _edit_loop(folder: Path, **changes) -> None:
    """Change fields of the loop state and re-record the manifest (a deliberate tamper)."""
    path = folder / "state.json"
    skeleton = json.loads(path.read_text())
    loop = dict(skeleton["__dict__"])["loop"]["__dict__"]
    for pair in loop:
        if pair[0] in changes:
            pair[1] = changes[pair[0]]
    path.write_text(json.dumps(skeleton))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.json"] = file_record(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _loop(folder: Path) -> dict:
    skeleton = json.loads((folder / "state.json").read_text())
    return dict(dict(skeleton["__dict__"])["loop"]["__dict__"])


TAMPERS = {
    "stage past the last": ({"stage_index": 5}, r"loop\.stage_index = 5, but the run has 1"),
    "epoch past the end": ({"epoch": 99}, r"has 2 epoch\(s\), the state is at epoch 99"),
    "step a string": ({"global_step": "12"}, r"loop\.global_step = '12' is not an int"),
    "negative step": ({"global_step": -1}, r"loop\.global_step = -1 is not an int >= 0"),
    "bool epoch": ({"epoch": True}, r"loop\.epoch = True is not an int"),
    "nan best": ({"best_value": math.nan}, r"best_value = nan is not a finite number"),
    "negative elapsed time": ({"elapsed_s": -5.0}, r"loop\.elapsed_s = -5\.0 is not a number >= 0"),
    "elapsed time a string": ({"elapsed_s": "60"}, r"loop\.elapsed_s = '60' is not a number"),
    "step below the position": ({"global_step": 1}, r"global_step = 1 is below the 2 steps"),
    "no record of the step": ({"global_step": 10_000}, r"has no train record .* step 10000"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_loop_state_is_refused_on_resume(
    finished_run: Path, tmp_path: Path, tiny_bench, tiny_model_sets, case: str
) -> None:
    from wrel.engine.trainer import train

    changes, pattern = TAMPERS[case]
    cfg, run = _copy_run(finished_run, tmp_path, tiny_bench, tiny_model_sets)
    for name in ("last", "last.prev"):  # the fallback is tampered too
        _edit_loop(run / "checkpoints" / name, **changes)
    with pytest.raises(CheckpointError, match=pattern) as info:
        train(cfg, resume=True)
    assert "checkpoints/last" in str(info.value) and "impossible for this run" in str(info.value)


def test_half_run_edited_to_look_finished_is_refused(
    finished_run: Path, tmp_path: Path, tiny_bench, tiny_model_sets
) -> None:
    """The state after epoch 1 of 2, edited to say epoch 2: the log has no such epoch end."""
    from wrel.engine.trainer import train

    cfg, run = _copy_run(finished_run, tmp_path, tiny_bench, tiny_model_sets)
    ckpt = run / "checkpoints"
    shutil.rmtree(ckpt / "last")
    (ckpt / "last.prev").rename(ckpt / "last")
    half = _loop(ckpt / "last")
    assert (half["epoch"], half["iteration"]) == (1, 0)
    step = half["global_step"]
    with pytest.raises(CheckpointError, match=r"global_step = \d+ is below the \d+ steps"):
        _edit_loop(ckpt / "last", epoch=2)  # the step no longer fits the position
        train(cfg, resume=True)
    # the log as the half run left it (no record after its checkpoint), the step raised too
    log = run / "metrics.jsonl"
    kept = [x for x in log.read_text().splitlines() if json.loads(x).get("step", 0) <= step]
    log.write_text("".join(x + "\n" for x in kept))
    _edit_loop(ckpt / "last", epoch=2, global_step=2 * step)
    with pytest.raises(CheckpointError, match=r"no train record of stage .*, epoch 1, step"):
        train(cfg, resume=True)


def test_mid_epoch_iteration_past_the_epoch_is_refused(
    finished_run: Path, tmp_path: Path, tiny_bench, tiny_model_sets
) -> None:
    from wrel.engine.trainer import train

    cfg, run = _copy_run(finished_run, tmp_path, tiny_bench, tiny_model_sets)
    last = run / "checkpoints" / "last"
    step = _loop(last)["global_step"]
    _edit_loop(last, epoch=1, iteration=500, global_step=step + 500)
    shutil.rmtree(run / "checkpoints" / "last.prev")
    with pytest.raises(CheckpointError, match=r"loop\.iteration = 500, but an epoch of this"):
        train(cfg, resume=True)


def test_untampered_finished_run_still_resumes(
    finished_run: Path, tmp_path: Path, tiny_bench, tiny_model_sets
) -> None:
    from wrel.engine.trainer import train

    cfg, run = _copy_run(finished_run, tmp_path, tiny_bench, tiny_model_sets)
    result = train(cfg, resume=True)  # the loop state is consistent: nothing left to train
    assert Path(result["run_dir"]) == run


def test_a_deeply_nested_log_line_does_not_break_resume(
    finished_run: Path, tmp_path: Path, tiny_bench, tiny_model_sets
) -> None:
    from wrel.engine.trainer import train

    cfg, run = _copy_run(finished_run, tmp_path, tiny_bench, tiny_model_sets)
    step = _loop(run / "checkpoints" / "last")["global_step"]
    deep = "[" * 100_000 + "]" * 100_000
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write(f'{{"step": {step}, "event": "train", "x": {deep}}}\n')
    train(cfg, resume=True)  # the line is dropped with a warning, never a RecursionError
    assert deep not in (run / "metrics.jsonl").read_text()
