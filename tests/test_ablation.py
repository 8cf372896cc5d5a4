"""`aimv2 ablate`: the objective ablation end to end, its recipes, and the
scene labels its probe reads."""

import io
import json
import os

import numpy as np
import pytest
from conftest import to_numpy
from PIL import Image

import keras_aimv2
from keras_aimv2 import ablation
from keras_aimv2.cli import main
from keras_aimv2.data.scenes import PROBE_TASKS
from keras_aimv2.data.scenes import Scene
from keras_aimv2.data.scenes import SceneObject
from keras_aimv2.data.scenes import scene_arrays
from keras_aimv2.data.scenes import scene_example
from keras_aimv2.data.scenes import scene_label
from keras_aimv2.recipes import AblationRecipe
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import load_recipe
from keras_aimv2.recipes import recipe_from_dict
from keras_aimv2.training import build_pretrainer
from keras_aimv2.transfer import probe_datasets

RECIPE = "ablation_scenes"
# A toy budget: tiny models, a few steps, a few dozen examples.
TOY = [
    "pretrain.backbone.hidden_dim=32",
    "pretrain.backbone.num_layers=1",
    "pretrain.backbone.intermediate_dim=64",
    "pretrain.decoder.decoder_hidden_dim=32",
    "pretrain.decoder.decoder_num_layers=1",
    "pretrain.decoder.decoder_intermediate_dim=64",
    "pretrain.decoder.context_length=12",
    "pretrain.data.train_examples=48",
    "pretrain.data.eval_examples=16",
    "pretrain.tokenizer.vocabulary_size=40",
    "pretrain.training.batch_size=8",
    "pretrain.training.eval_batch_size=8",
    "pretrain.training.steps=2",
    "pretrain.training.steps_per_epoch=2",
    "pretrain.training.warmup_steps=1",
    "pretrain.training.verbose=0",
    "probe.data.train_examples=64",
    "probe.data.test_examples=32",
    "probe.training.batch_size=32",
    "probe.training.eval_batch_size=32",
    "probe.training.epochs=1",
    "probe.training.verbose=0",
]


def _object(size, row=0, col=0, shape="circle"):
    return SceneObject(shape, "red", size, row, col, 10.0, 10.0, 4.0, (1, 2, 3))


def _scene(*objects):
    return Scene(tuple(objects), "black", False, 0, 32)


def test_scene_probe_labels_of_hand_built_scenes():
    assert scene_label(_scene(_object("small"))) == 0
    assert scene_label(_scene(_object("large")), "large_count") == 1
    three = _scene(
        _object("large"), _object("small", 1, 1), _object("large", 2, 2)
    )
    assert scene_label(three, "large_count") == 2
    assert scene_label(three, "object_count") == 2
    assert scene_label(_scene(_object("small")), "object_count") == 0
    all_large = _scene(*(_object("large", i, i) for i in range(3)))
    assert scene_label(all_large) == 3
    with pytest.raises(ValueError, match="'no_task'.*large_count"):
        scene_label(three, "no_task")


def test_scene_arrays_are_the_scenes_drawn_and_labelled():
    images, labels = scene_arrays(40, seed=3, image_size=32)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    for index in (0, 17, 39):
        png, _, scene = scene_example(3, index, 32)
        np.testing.assert_array_equal(
            images[index], np.asarray(Image.open(io.BytesIO(png)))
        )
        assert labels[index] == scene_label(scene)
    counts, _ = scene_arrays(40, seed=3, image_size=32, task="object_count")
    np.testing.assert_array_equal(counts, images)
    assert set(labels) <= set(range(PROBE_TASKS["large_count"].num_classes))
    # Another seed: other scenes.
    other, _ = scene_arrays(40, seed=4, image_size=32)
    assert not np.array_equal(other, images)


def test_scene_probe_data_are_rgb_scenes_and_checked():
    probe = load_recipe(RECIPE).probe.resolve()
    data = probe.data.replace(train_examples=32, test_examples=16)
    train, test, num_train, num_test = probe_datasets(data, (32, 32), 16, 16)
    assert (num_train, num_test) == (32, 16)
    images, labels = next(iter(train))
    assert np.asarray(images).shape == (16, 32, 32, 3)
    # Colour scenes, not gray copied into three channels.
    assert not np.array_equal(np.asarray(images)[..., 0], images[..., 2])
    assert set(np.asarray(labels).tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="has 4 classes.*num_classes=10"):
        data.replace(num_classes=10)
    with pytest.raises(ValueError, match="`data.seed`, which must be set"):
        data.replace(seed=None)


def test_ablation_recipes_resolve_their_sub_recipes():
    for name in ("ablation_fashion_mnist", "ablation_scenes"):
        recipe = load_recipe(name)
        assert isinstance(recipe, AblationRecipe)
        assert recipe.ablation.objectives == ablation.OBJECTIVES
        pretrain, probe = recipe.pretrain.resolve(), recipe.probe.resolve()
        assert pretrain.training.steps == 300
        assert pretrain.training.batch_size == 64
        assert pretrain.backbone.arguments()["image_shape"] == (32, 32, 3)
        assert probe.training.epochs == 3
        written = json.loads(json.dumps(recipe.to_dict()))
        assert recipe_from_dict(written) == recipe
    fashion = load_recipe("ablation_fashion_mnist").pretrain.resolve()
    assert fashion.data.source == "fashion-mnist"
    arguments = fashion.backbone.arguments()
    probe_arguments = load_recipe("probe_fashion_mnist").backbone.arguments()
    for key in ("patch_size", "hidden_dim", "num_layers", "intermediate_dim"):
        assert arguments[key] == probe_arguments[key]
    scenes = load_recipe("ablation_scenes").probe.resolve()
    assert (scenes.data.source, scenes.data.task) == ("scenes", "large_count")


def test_overrides_reach_the_sub_recipes():
    recipe = load_recipe(RECIPE)
    changed = apply_overrides(
        recipe,
        [
            "pretrain.training.steps=20",
            "probe.training.epochs=1",
            "ablation.objectives=('pixels', 'untrained')",
        ],
    )
    assert changed.pretrain.resolve().training.steps == 20
    assert changed.probe.resolve().training.epochs == 1
    assert changed.ablation.objectives == ("pixels", "untrained")
    # The recipe's own overrides stay.
    assert changed.pretrain.resolve().data.source_size == 32
    assert recipe.pretrain.resolve().training.steps == 300
    for override, message in (
        ("pretrain.training.stepz=3", "'pretrain.training.stepz'.*steps"),
        ("pretrain.trainin.steps=3", "section 'pretrain.trainin'"),
        ("pretrain.training.steps=0", "`pretrain.training.steps` must be a"),
        ("probe.recipe=tiny_scenes_cpu", "is a pretrain recipe; `probe`"),
        ("ablation.objectives=('aimv2', 'clip')", "each one of \\['aimv2'"),
        ("ablation.objectives=('aimv2', 'aimv2')", "distinct objectives"),
        ("probe.data.seed=1", "held out from the pre-training"),
        (
            "pretrain.training.text_loss_weight=0",
            None,
        ),
    ):
        if message is None:
            # Pixels only is a valid pre-training.
            apply_overrides(recipe, [override])
            continue
        with pytest.raises(ValueError, match=message):
            apply_overrides(recipe, [override])


def test_a_recipe_is_named_or_inline_exactly_once():
    inline = load_recipe("tiny_scenes_cpu").to_dict()
    values = {
        "name": "inline",
        "pretrain": {"entries": inline, "overrides": {"training.steps": 5}},
        "probe": {"recipe": "probe_fashion_mnist"},
        "ablation": {"objectives": ["aimv2"]},
    }
    recipe = recipe_from_dict(values)
    assert recipe.pretrain.resolve().training.steps == 5
    assert recipe.ablation.objectives == ("aimv2",)
    both = {**values, "pretrain": {"entries": inline, "recipe": "x"}}
    with pytest.raises(ValueError, match="exactly one"):
        recipe_from_dict(both)
    with pytest.raises(ValueError, match="`ablation.objectives`"):
        recipe_from_dict({**values, "ablation": {"objectives": ["x"]}})
    with pytest.raises(ValueError, match="lacks the section `ablation`"):
        recipe_from_dict({k: v for k, v in values.items() if k != "ablation"})


def test_bad_objective_names_are_a_clear_error(capsys, tmp_path):
    output = str(tmp_path / "run")
    code = main(
        ["ablate", RECIPE, "--output-dir", output, "--objectives", "aimv2"]
        + ["pixel"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("aimv2 ablate: `ablation.objectives` must be")
    assert "('aimv2', 'pixel')" in err and "'pixels'" in err
    assert not os.path.exists(output)


def test_ablate_command_end_to_end_and_rerun(tmp_path, capsys):
    output = str(tmp_path / "run")
    arguments = ["ablate", RECIPE, "--output-dir", output, "--set"] + TOY
    assert main(arguments) == 0
    out = capsys.readouterr().out
    with open(os.path.join(output, "ablation.json")) as file:
        results = json.load(file)
    rows = results["rows"]
    assert [row["objective"] for row in rows] == list(ablation.OBJECTIVES)
    for row in rows:
        assert 0.0 <= row["probe_top1"] <= 1.0
        assert np.isfinite(row["held_out"]["text_loss"])
        assert np.isfinite(row["held_out"]["pixel_loss"])
    weights = {row["objective"]: row["loss_weights"] for row in rows}
    assert weights["aimv2"] == {"text": 1.0, "pixel": 0.4}
    assert weights["captions"] == {"text": 1.0, "pixel": 0.0}
    assert weights["pixels"] == {"text": 0.0, "pixel": 0.4}
    assert weights["untrained"] is None
    assert rows[-1]["pretraining_steps"] == 0
    assert all(row["pretraining_steps"] == 2 for row in rows[:3])
    with open(os.path.join(output, "ablation.md")) as file:
        table = file.read()
    for objective in ablation.OBJECTIVES:
        assert f"| {objective} |" in table
    with Image.open(os.path.join(output, "ablation.png")) as image:
        assert image.format == "PNG"
    assert not [n for n in os.listdir(output) if n.startswith(".writing")]
    assert "[ablate] | aimv2 |" in out
    # Each pre-training ran with its objective's weights.
    for objective, weight in (("captions", "pixel"), ("pixels", "text")):
        path = os.path.join(output, objective, "pretrain", "recipe.json")
        with open(path) as file:
            recorded = json.load(file)
        assert recorded["training"][f"{weight}_loss_weight"] == 0.0
    # The untrained encoder is the one every pre-training starts from.
    recipe = apply_overrides(load_recipe(RECIPE), TOY).pretrain.resolve()
    tokenizer = os.path.join(output, "aimv2", "pretrain", "tokenizer.model")
    initial = build_pretrainer(recipe, tokenizer).backbone
    untrained = keras_aimv2.AIMV2Backbone.from_preset(
        os.path.join(output, "untrained", "encoder", "preset", "backbone")
    )
    for a, b in zip(initial.weights, untrained.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))

    # A rerun skips every finished part and writes the same rows.
    metrics = os.path.join(output, "aimv2", "pretrain", "metrics.json")
    before = os.stat(metrics).st_mtime_ns
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == 8
    assert "[pretrain]" not in out and "[probe]" not in out
    assert os.stat(metrics).st_mtime_ns == before
    with open(os.path.join(output, "ablation.json")) as file:
        assert json.load(file)["rows"] == rows
    # A changed probe reruns the probe, not what made its encoder.
    changed = arguments + ["probe.training.seed=1", "ablation.objectives="]
    changed[-1] += "('untrained',)"
    assert main(changed) == 0
    out = capsys.readouterr().out
    assert "untrained encoder finished before, skipped" in out
    assert out.count("[probe] recipe") == 1
