"""The `aimv2` command end to end (interrupts: `test_run_directory`)."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import keras_aimv2
from keras_aimv2.cli import main
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import load_recipe
from keras_aimv2.recipes import packaged_recipes
from keras_aimv2.recipes import recipe_from_dict
from keras_aimv2.recipes import recipe_path

# The packaged main-job recipe, by name (a path works as well).
RECIPE = "tiny_scenes_cpu"
SMALL = [
    "backbone.image_shape=(32, 32, 3)",
    "backbone.hidden_dim=32",
    "backbone.num_layers=1",
    "backbone.intermediate_dim=64",
    "decoder.decoder_hidden_dim=32",
    "decoder.decoder_num_layers=1",
    "decoder.decoder_intermediate_dim=64",
    "decoder.context_length=12",
    "data.source_size=32",
    "data.eval_examples=16",
    "tokenizer.vocabulary_size=40",
    "training.batch_size=8",
    "training.eval_batch_size=8",
    "training.warmup_steps=2",
    "training.verbose=0",
]


def _epochs(output_dir):
    with open(os.path.join(output_dir, "logs", "training.csv")) as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def test_pretrain_writes_its_state_logs_presets_and_pictures(tmp_path):
    output = str(tmp_path / "run")
    overrides = SMALL + [
        "data.train_examples=48",
        "training.steps=4",
        "training.steps_per_epoch=2",
    ]
    assert (
        main(["pretrain", RECIPE, "--output-dir", output, "--set"] + overrides)
        == 0
    )
    with open(os.path.join(output, "backup", "state.json")) as file:
        state = json.load(file)
    assert state["batches"] == 4
    assert os.path.isfile(os.path.join(output, "backup", state["weights"]))
    assert not os.path.exists(os.path.join(output, ".lock"))
    assert _epochs(output) == [0, 1]
    assert os.listdir(os.path.join(output, "logs", "tensorboard"))
    # recipe.json holds every value of the recipe that ran, overrides and
    # defaults included, and reads back as that recipe.
    with open(os.path.join(output, "recipe.json")) as file:
        recorded = json.load(file)
    assert recorded["training"]["dtype_policy"] == "float32"
    ran = apply_overrides(load_recipe(RECIPE), overrides)
    assert recipe_from_dict(recorded) == ran
    # Nothing is left of the atomic writes.
    assert not [n for n in os.listdir(output) if n.startswith(".writing-")]
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    assert metrics["steps"] == 4
    assert set(metrics["held_out"]) == {"trained", "untrained"}
    for name in ("reconstructions.png", "loss_curves.png"):
        with Image.open(os.path.join(output, "pictures", name)) as image:
            assert image.format == "PNG" and min(image.size) > 100
    backbone = keras_aimv2.AIMV2Backbone.from_preset(
        os.path.join(output, "preset", "backbone")
    )
    pretrainer = keras_aimv2.AIMV2Pretrainer.from_preset(
        os.path.join(output, "preset", "pretrainer")
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
    inputs = pretrainer.preprocessor(
        {"images": images, "captions": ["a red circle", "two blue squares"]}
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(inputs["images"])),
        keras.ops.convert_to_numpy(pretrainer.backbone(inputs["images"])),
        atol=1e-6,
    )
    assert len(metrics["pictures"]["captions"]) == 6
    pictures = str(tmp_path / "pictures")
    arguments = ["pictures", os.path.join(output, "preset", "pretrainer")]
    arguments += ["--data", os.path.join(output, "data", "eval")]
    assert main(arguments + ["--output", pictures]) == 0
    with Image.open(os.path.join(pictures, "reconstructions.png")) as image:
        assert image.format == "PNG"


@pytest.mark.parametrize(
    "command",
    [
        "pretrain",
        "probe",
        "ablate",
        "pictures",
        "info",
        "build-dataset",
        "train-tokenizer",
        "recipes",
        "convert",
    ],
)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: aimv2 {command}")
    assert "--help" in usage


def test_bad_override_is_a_clear_error(capsys):
    assert main(["pretrain", RECIPE, "--set", "training.stepz=3"]) == 2
    assert "Unknown recipe key 'training.stepz'" in capsys.readouterr().err


def test_a_recipe_is_checked_before_its_run(capsys, tmp_path):
    # A recipe of the other command.
    assert main(["probe", RECIPE, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a pretrain recipe: run it with `aimv2 pretrain" in err
    # A template that names no data.
    assert main(["pretrain", "aimv2_large", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "names no training data" in err and "data.train_dir" in err
    # A misspelled key in a recipe file.
    path = tmp_path / "typo.py"
    path.write_text(
        "import runpy\n"
        f"RECIPE = runpy.run_path({recipe_path(RECIPE)!r})['RECIPE']\n"
        "RECIPE['data']['sead'] = RECIPE['data'].pop('seed')\n"
    )
    assert main(["pretrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aimv2 pretrain: Recipe file {str(path)!r}")
    assert "'data.sead'" in err and "Did you mean 'data.seed'?" in err
    assert os.listdir(tmp_path) == ["typo.py"]


def test_recipes_command_lists_every_packaged_recipe(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    listing = packaged_recipes()
    assert len(listing) >= 7
    for recipe in listing:
        assert recipe["name"] in out
        assert recipe["summary"] in out
        assert f"paper: {recipe['paper']}" in out
    assert "aimv2 pretrain tiny_scenes_cpu" in out
    assert "aimv2 probe probe_fashion_mnist" in out
    assert "aimv2 ablate ablation_fashion_mnist" in out
    assert "aimv2 pretrain my_recipe.py" in out


@pytest.mark.parametrize("command", ["pretrain", "probe"])
def test_recipe_commands_take_names_and_paths_from_any_directory(
    command, capsys, tmp_path, monkeypatch
):
    # Loading succeeds, so the misspelt override is the error reported.
    monkeypatch.chdir(tmp_path)
    name = "tiny_scenes_cpu" if command == "pretrain" else "probe_fashion_mnist"
    for recipe in (name, f"{name}.py", recipe_path(name)):
        assert main([command, recipe, "--set", "training.stepz=3"]) == 2
        assert "Unknown recipe key 'training.stepz'" in capsys.readouterr().err
    assert main([command, "no_such_recipe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aimv2 {command}: ")
    assert "'no_such_recipe'" in err and f"'{name}'" in err


def test_backend_flag_chooses_the_backend():
    # `keras_aimv2.cli` imports Keras with $KERAS_BACKEND; --backend must
    # still win.
    other = "torch" if keras.config.backend() != "torch" else "jax"
    code = (
        "import sys, keras_aimv2.cli as c; sys.argv = ['aimv2'] + sys.argv[1:];"
        " c.main()"
    )
    process = subprocess.run(
        [sys.executable, "-c", code, "--backend", other, "info"],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.config.backend()},
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert json.loads(process.stdout)["backend"] == other
