"""Stage configs per kind: every way of setting stage keys resolves as before the split.

``stage_config_snapshot.json`` holds the resolved stage keys of every method preset, every bench
method of every profile (``wrel.studies.runner.build_run_config``) and every file under
configs/, as the single ``StageConfig`` with every knob resolved them (the keys a kind no longer
has left out). A preset or profile changed on purpose regenerates it: see
:func:`current_stage_values`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wrel.core.config_io import from_dict, to_dict
from wrel.engine.experiment import METHOD_PRESETS, ExperimentConfig, build_experiment
from wrel.methods.base import (
    STAGE_CONFIGS,
    BankInitConfig,
    JointConfig,
    StageConfig,
    SupervisedConfig,
    stage_config,
    stage_keys,
)
from wrel.studies.profiles import PROFILES
from wrel.studies.runner import RunSpec, build_run_config

SNAPSHOT = Path(__file__).with_name("stage_config_snapshot.json")
REPO = Path(__file__).resolve().parents[2]
FILL = ["data.root=/x", "model.backbone.checkpoint_path=/x.safetensors", "model.text.path=/x"]


def current_stage_values() -> dict[str, list[dict[str, Any]]]:
    """Resolved stage dicts of every preset, profile bench method and config file."""
    out: dict[str, list[dict[str, Any]]] = {}
    for method in sorted(METHOD_PRESETS):
        out[f"preset/{method}"] = to_dict(build_experiment(method).stages)
    for name, profile in sorted(PROFILES.items()):
        for method in profile.methods:
            for ratio in profile.ratios:
                spec = RunSpec(method, 1.0 if method == "full" else ratio, 0)
                cfg = build_run_config(profile, spec, "/tmp/d", "/tmp/r")
                out[f"profile/{name}/{method}/{ratio}"] = to_dict(cfg.stages)
    for path in sorted((REPO / "configs").glob("*.yaml")):
        for method in ("lrb", "lrb-paper", "naive"):
            cfg = build_experiment(method, yaml_files=[path], assignments=FILL)
            out[f"yaml/configs/{path.name}/{method}"] = to_dict(cfg.stages)
    return out


def test_every_preset_and_profile_resolves_as_the_snapshot() -> None:
    want = json.loads(SNAPSHOT.read_text())
    got = current_stage_values()
    assert sorted(got) == sorted(want)
    for key, stages in got.items():
        assert stages == want[key], key
    # every stage is its kind's class and has exactly that kind's keys
    kinds = {s["kind"] for stages in got.values() for s in stages}
    assert kinds == set(STAGE_CONFIGS)
    for stages in got.values():
        for stage in stages:
            assert set(stage) == stage_keys(STAGE_CONFIGS[stage["kind"]])


def test_stage_classes_own_their_keys() -> None:
    base = stage_keys(StageConfig)
    assert stage_keys(SupervisedConfig) == base | {"handover", "weak_text"}
    bank = {"bank_lr", "bank_weight_decay"}
    assert stage_keys(BankInitConfig) == base | bank | {"frozen_mode", "bank_select"}
    assert "bank_steps" in stage_keys(JointConfig) and "frozen_mode" not in stage_keys(JointConfig)
    assert not ({"student_init", "ema_scope", "prompt_dropout"} & stage_keys(BankInitConfig))
    cfg = build_experiment("lrb")
    assert [type(s) for s in cfg.stages] == [SupervisedConfig, BankInitConfig, JointConfig]
    assert isinstance(build_experiment("naive").stages[0], SupervisedConfig)


def test_a_key_of_another_kind_names_stage_kind_key_and_owners() -> None:
    with pytest.raises(ValueError) as err:
        build_experiment("naive", assignments=["stages.naive.bank_lr=1"])
    text = str(err.value)
    for part in ("'naive'", "kind supervised", "'bank_lr'", "bank_init, joint"):
        assert part in text, text
    with pytest.raises(ValueError, match=r"kind bank_init\) has no key 'student_init'.* joint"):
        build_experiment("lrb", assignments=["stages.bank-init.student_init=pretrained"])
    # a YAML / config.json stage list is checked the same way
    data = to_dict(build_experiment("naive"))
    data["stages"][0]["ema_scope"] = "segmenter"
    with pytest.raises(ValueError, match=r"stage 'naive' \(kind supervised\).*'ema_scope'"):
        from_dict(ExperimentConfig, data)
    # a key of no kind still lists the valid keys
    with pytest.raises(ValueError, match="unknown config key.*bank_lrr.*valid keys"):
        build_experiment("lrb", assignments=["stages.joint.bank_lrr=1"])


def test_set_overrides_per_kind_and_kind_changes() -> None:
    cfg = build_experiment(
        "lrb-paper",
        assignments=[
            "stages.joint.student_init=pretrained",
            "stages.bank-init.bank_lr=0.25",
            "stages.0.dice=foreground-mean-smooth1",
        ],
    )
    teacher, init, joint = cfg.stages
    assert isinstance(joint, JointConfig) and joint.student_init == "pretrained"
    assert isinstance(init, BankInitConfig) and init.bank_lr == 0.25
    assert init.frozen_mode == "train" and teacher.dice == "foreground-mean-smooth1"
    # a new kind keeps the keys it has and gets its own defaults for the rest
    changed = build_experiment("lrb", assignments=["stages.joint.kind=supervised"])
    assert type(changed.stages[2]) is SupervisedConfig
    assert changed.stages[2].optim == build_experiment("lrb").stages[2].optim
    grown = build_experiment("naive", assignments=["stages.naive.kind=joint"])
    assert type(grown.stages[0]) is JointConfig and grown.stages[0].bank_steps == 1
    # the value rules of a kind's own keys still apply
    with pytest.raises(ValueError, match=r"stages.joint.bank_steps=-1"):
        build_experiment("lrb", assignments=["stages.joint.bank_steps=-1"])


def test_config_json_round_trip_keeps_the_kind_classes() -> None:
    for method in sorted(METHOD_PRESETS):
        cfg = build_experiment(method)
        again = from_dict(ExperimentConfig, json.loads(json.dumps(to_dict(cfg))))
        assert again == cfg
        assert [type(s) for s in again.stages] == [type(s) for s in cfg.stages]


def test_the_base_class_is_not_a_stage() -> None:
    with pytest.raises(TypeError, match="configured by JointConfig"):
        StageConfig(kind="joint")
    with pytest.raises(TypeError, match="configured by SupervisedConfig"):
        StageConfig()
    assert stage_config("bank_init", bank_lr=0.5) == BankInitConfig(bank_lr=0.5)
    with pytest.raises(ValueError, match="kind: 'nope' is not one of"):
        stage_config("nope")


def test_handover_best_needs_a_later_stage_and_val() -> None:
    from wrel.engine.experiment import build_experiment

    cfg = build_experiment("lrb-paper", assignments=["stages.teacher-warmup.handover=best"])
    assert cfg.stages[0].handover == "best"
    with pytest.raises(ValueError, match="handover"):
        build_experiment("naive", assignments=["stages.naive.handover=best"])
    with pytest.raises(ValueError, match="evaluate"):
        build_experiment(
            "lrb-paper",
            assignments=[
                "stages.teacher-warmup.handover=best",
                "stages.teacher-warmup.evaluate=false",
            ],
        )
    with pytest.raises(ValueError, match="handover"):
        build_experiment("lrb-paper", assignments=["stages.teacher-warmup.handover=first"])
    with pytest.raises(ValueError, match="handover"):  # a key of supervised stages only
        build_experiment("lrb-paper", assignments=["stages.joint.handover=best"])
