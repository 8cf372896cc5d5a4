"""LiT tuning end to end: `aimv2 lit`, a locked encoder, zero-shot."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import only_on
from conftest import to_numpy

from keras_aimv2.cli import main
from keras_aimv2.lit_tuning import lit_tune
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_lit import AIMV2LiT
from keras_aimv2.recipes import LiTRecipe
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import load_recipe

RECIPE = "lit_fashion_mnist"
# A toy budget: a 1-block encoder and text tower of width 32, 12 steps of
# 32 pairs from 256 captioned images, zero-shot on 200 test images.
TOY = [
    "backbone.hidden_dim=32",
    "backbone.num_layers=1",
    "backbone.intermediate_dim=64",
    "text.hidden_dim=32",
    "text.num_layers=1",
    "text.intermediate_dim=64",
    "text.projection_dim=16",
    "data.train_examples=256",
    "data.eval_examples=64",
    "training.batch_size=32",
    "training.eval_batch_size=32",
    "training.steps=12",
    "training.steps_per_epoch=6",
    "training.warmup_steps=2",
    "training.peak_learning_rate=3e-3",
    "training.verbose=0",
    "zero_shot.test_examples=200",
    "zero_shot.batch_size=100",
]


def _toy_recipe(*extra):
    return apply_overrides(load_recipe(RECIPE), TOY + list(extra))


@pytest.fixture(scope="module")
def encoder_preset(tmp_path_factory):
    """A saved random encoder of the toy size, as a pre-training saves it."""
    recipe = _toy_recipe()
    arguments = recipe.backbone.arguments()
    backbone = AIMV2Backbone(**arguments)
    path = str(tmp_path_factory.mktemp("encoder") / "backbone")
    backbone.save_to_preset(path)
    return path, [to_numpy(w) for w in backbone.weights]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, encoder_preset):
    path, _ = encoder_preset
    output = str(tmp_path_factory.mktemp("lit"))
    recipe = _toy_recipe(f"backbone.preset={path}")
    return output, lit_tune(recipe, output)


def test_the_recipe_is_a_lit_recipe_with_paper_settings():
    recipe = load_recipe(RECIPE)
    assert isinstance(recipe, LiTRecipe)
    assert recipe.KIND == "lit"
    # The locked encoder is the one the Fashion-MNIST pre-training trains.
    ablation = load_recipe("ablation_fashion_mnist")
    overrides = ablation.pretrain["overrides"]
    assert recipe.backbone.image_shape == overrides["backbone.image_shape"]
    assert recipe.data.source == overrides["data.source"]
    assert recipe.data.train_examples == overrides["data.train_examples"]
    assert (
        recipe.tokenizer.vocabulary_size
        == (overrides["tokenizer.vocabulary_size"])
    )
    assert all("{}" in t for t in recipe.zero_shot.templates)


def test_lit_tuning_lowers_the_held_out_contrastive_loss(toy_run):
    output, summary = toy_run
    held_out = summary["held_out"]
    assert held_out["trained"]["loss"] < held_out["untrained"]["loss"]
    assert summary["steps"] == 12
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        assert json.load(f)["held_out"] == held_out


def test_the_locked_encoder_is_unchanged_and_saved(toy_run, encoder_preset):
    output, summary = toy_run
    _, weights = encoder_preset
    model = AIMV2LiT.from_preset(os.path.join(summary["presets"], "lit"))
    trained = [to_numpy(w) for w in model.backbone.vision_encoder.weights]
    assert len(trained) == len(weights)
    for before, after in zip(weights, trained, strict=True):
        np.testing.assert_array_equal(before, after)
    # The text tower did train: its weights are not the initial ones.
    assert model.backbone.text_encoder.trainable


def test_zero_shot_reports_accuracy_per_class(toy_run):
    _, summary = toy_run
    zero_shot = summary["zero_shot"]
    assert zero_shot["test_examples"] == 200
    assert 0.0 <= zero_shot["top1"] <= 1.0
    assert zero_shot["class_names"][9] == "an ankle boot"
    assert set(zero_shot["per_class_top1"]) <= set(zero_shot["class_names"])
    per_class = list(zero_shot["per_class_top1"].values())
    assert all(0.0 <= value <= 1.0 for value in per_class)


def test_a_rerun_resumes_from_the_finished_state(toy_run, encoder_preset):
    output, summary = toy_run
    path, _ = encoder_preset
    again = lit_tune(_toy_recipe(f"backbone.preset={path}"), output)
    # Nothing left to train: the same weights give the same results.
    assert again["steps"] == summary["steps"]
    assert again["held_out"]["trained"] == summary["held_out"]["trained"]
    assert again["zero_shot"]["top1"] == summary["zero_shot"]["top1"]


def test_templates_need_one_placeholder():
    with pytest.raises(ValueError, match="zero_shot.templates"):
        _toy_recipe("zero_shot.templates=('a photo',)")


def test_the_command_refuses_a_recipe_of_another_kind(capsys):
    assert main(["lit", "tiny_scenes_cpu"]) == 2
    assert "aimv2 pretrain" in capsys.readouterr().err
    assert main(["pretrain", RECIPE]) == 2
    assert "aimv2 lit" in capsys.readouterr().err


def _distributed_lit(tmp_path, *extra, environment=None, launcher=()):
    """`aimv2 lit` at the toy size, 2 steps, in fresh processes."""
    output = str(tmp_path / "lit")
    command = [*launcher] or [sys.executable]
    command += ["-m", "keras_aimv2.cli", "lit", RECIPE, *extra]
    command += ["--output-dir", output, "--set", *TOY]
    command += ["training.steps=2", "training.steps_per_epoch=2"]
    command += ["data.train_examples=64", "zero_shot.test_examples=50"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", **(environment or {}))
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=environment
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["steps"] == 2
    assert 0.0 <= metrics["zero_shot"]["top1"] <= 1.0
    assert os.path.isdir(os.path.join(output, "preset", "lit"))
    return completed.stdout


@only_on("jax")
def test_lit_data_parallel_over_two_jax_devices(tmp_path):
    flags = "--xla_force_host_platform_device_count=2"
    stdout = _distributed_lit(
        tmp_path,
        "--strategy",
        "data_parallel",
        environment={"XLA_FLAGS": flags},
    )
    assert "strategy 'data_parallel', 2 replica(s)" in stdout


@only_on("tensorflow")
def test_lit_under_mirrored_strategy(tmp_path):
    stdout = _distributed_lit(tmp_path, "--strategy", "data_parallel")
    assert "strategy 'data_parallel', 1 replica(s)" in stdout


@only_on("torch")
def test_lit_with_two_torchrun_processes(tmp_path):
    from test_distribution import _free_port

    launcher = [sys.executable, "-m", "torch.distributed.run"]
    launcher += ["--nproc-per-node=2", f"--master-port={_free_port()}"]
    stdout = _distributed_lit(
        tmp_path, "--strategy", "data_parallel", launcher=launcher
    )
    assert "process 0 of 2" in stdout and "process 1 of 2" in stdout
