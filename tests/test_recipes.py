"""Recipes follow the paper; overrides are checked; the optimizer's rules."""

import glob
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_aimv2.optimization import aimv2_adamw
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import backbone_arguments
from keras_aimv2.recipes import check_recipe
from keras_aimv2.recipes import load_recipe
from keras_aimv2.training import learning_rate_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_PEAK_LEARNING_RATES = {
    "large": 1e-3,
    "huge": 8e-4,
    "1b": 8e-4,
    "3b": 4e-4,
}


@pytest.mark.parametrize("path", glob.glob(os.path.join(ROOT, "recipes/*.py")))
def test_every_recipe_loads_and_names_its_paper(path):
    recipe = load_recipe(path)
    assert "AIMv2" in recipe["paper"]
    assert backbone_arguments(recipe["backbone"])["patch_size"] > 0


@pytest.mark.parametrize("size", sorted(PAPER_PEAK_LEARNING_RATES))
def test_paper_recipes_follow_table_a1(size):
    recipe = load_recipe(os.path.join(ROOT, f"recipes/aimv2_{size}.py"))
    training = recipe["training"]
    assert training["peak_learning_rate"] == PAPER_PEAK_LEARNING_RATES[size]
    assert training["batch_size"] == 8192
    assert training["steps"] == 1_500_000
    assert training["warmup_steps"] == 12_500
    assert training["final_learning_rate"] == 1e-5
    assert training["weight_decay"] == 1e-4
    assert training["clipnorm"] == 1.0
    assert training["pixel_loss_weight"] == 0.4
    assert recipe["data"]["crop_scale"] == (0.4, 1.0)
    assert recipe["data"]["flip_probability"] == 0.5
    assert recipe["decoder"]["decoder_hidden_dim"] == 1024
    assert recipe["decoder"]["decoder_num_layers"] == 12
    assert recipe["decoder"]["context_length"] == 77
    assert backbone_arguments(recipe["backbone"])["image_shape"] == (
        224,
        224,
        3,
    )


def test_overrides_set_values_and_reject_unknown_keys():
    recipe = load_recipe(os.path.join(ROOT, "recipes/tiny_scenes_cpu.py"))
    apply_overrides(
        recipe, ["training.steps=7", "backbone.image_shape=(16, 16, 3)"]
    )
    assert recipe["training"]["steps"] == 7
    assert recipe["backbone"]["image_shape"] == (16, 16, 3)
    with pytest.raises(ValueError, match="training.step'.*steps"):
        apply_overrides(recipe, ["training.step=7"])
    with pytest.raises(ValueError, match="section 'trainig'"):
        apply_overrides(recipe, ["trainig.steps=7"])
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(recipe, ["training.steps"])
    with pytest.raises(ValueError, match="No recipe file"):
        load_recipe("no_such_recipe")


def _recipe_path(name):
    return os.path.join(ROOT, "recipes", f"{name}.py")


def _tiny_recipe():
    return load_recipe(_recipe_path("tiny_scenes_cpu"))


@pytest.mark.parametrize(
    "override, message",
    [
        # Not the entry's type: a string, a bool or a float for an int.
        ("training.steps=abc", "`training.steps` must be a positive int"),
        ("training.steps=True", "`training.steps` must be a positive int"),
        ("training.batch_size=8.0", "`training.batch_size` must be a positive"),
        ("training.remat=1", "`training.remat` must be a bool"),
        ("training.dtype_policy=16", "`training.dtype_policy` must be a str"),
        ("decoder.context_length='48'", "`decoder.context_length` must be"),
        # Out of range.
        ("training.steps=0", "Received: training.steps=0"),
        ("training.steps_per_epoch=-5", "`training.steps_per_epoch` must be"),
        ("training.eval_batch_size=0", "`training.eval_batch_size` must be"),
        ("training.gradient_accumulation_steps=0", "must be a positive int"),
        ("tokenizer.vocabulary_size=0", "`tokenizer.vocabulary_size` must"),
        ("data.train_examples=0", "`data.train_examples` must be"),
        ("training.warmup_steps=-1", "`training.warmup_steps` must be an int"),
        ("training.peak_learning_rate=0", "must be a number > 0"),
        ("training.clipnorm=-1.0", "`training.clipnorm` must be a number > 0"),
        ("training.pixel_loss_weight=-0.1", "must be a number >= 0"),
        ("data.flip_probability=2", "`data.flip_probability` must be"),
        ("data.crop_scale=(0.9, 0.5)", "`data.crop_scale` must be a pair"),
        # A tuple of another length or element type.
        ("backbone.image_shape=(16, 16)", "`backbone.image_shape` must be"),
        ("backbone.image_shape=(16, 16, 'a')", "three positive ints"),
        # None where the recipe's value may not be None.
        ("training.steps=None", "Received: training.steps=None"),
        ("backbone.hidden_dim=None", "`backbone.hidden_dim` must be"),
        ("training.seed=None", "`training.seed` must be an int, as in the"),
    ],
)
def test_overrides_of_the_wrong_type_or_range_are_refused(override, message):
    with pytest.raises(ValueError) as error:
        apply_overrides(_tiny_recipe(), [override])
    assert message in str(error.value)
    value = override.partition("=")[2]
    assert "Received:" in str(error.value) and value.strip("'") in str(
        error.value
    )


def test_overrides_are_converted_to_the_entry_type():
    recipe = apply_overrides(
        _tiny_recipe(),
        [
            "training.peak_learning_rate=1",
            "backbone.image_shape=[16, 16, 3]",
            "data.crop_scale=[0.5, 1]",
            "training.clipnorm=None",
            "data.train_examples=None",
            "tokenizer.model=models/captions.model",
            "data.source=None",
            "distribution.mesh_shape=(2, 4)",
        ],
    )
    assert recipe["training"]["peak_learning_rate"] == 1.0
    assert isinstance(recipe["training"]["peak_learning_rate"], float)
    assert recipe["backbone"]["image_shape"] == (16, 16, 3)
    assert recipe["data"]["crop_scale"] == (0.5, 1.0)
    assert recipe["training"]["clipnorm"] is None
    assert recipe["data"]["train_examples"] is None
    assert recipe["tokenizer"]["model"] == "models/captions.model"
    assert recipe["data"]["source"] is None
    assert recipe["distribution"]["mesh_shape"] == (2, 4)


def test_probe_recipe_overrides_follow_its_own_sections():
    path = _recipe_path("probe_fashion_mnist")
    recipe = apply_overrides(
        load_recipe(path),
        [
            "training.steps_per_epoch=5",
            "head.feature_layers=(2, 3)",
            "backbone.preset=runs/x/preset/backbone",
            "backbone.image_shape=None",
        ],
    )
    assert recipe["training"]["steps_per_epoch"] == 5
    assert recipe["head"]["feature_layers"] == (2, 3)
    assert recipe["backbone"]["image_shape"] is None
    with pytest.raises(ValueError, match="`head.dropout` must be"):
        apply_overrides(load_recipe(path), ["head.dropout=1.0"])
    with pytest.raises(ValueError, match="`training.epochs` must be"):
        apply_overrides(load_recipe(path), ["training.epochs=0"])


def test_values_written_in_a_recipe_file_are_checked(tmp_path):
    recipe = _tiny_recipe()
    recipe["training"]["steps"] = "600"
    with pytest.raises(ValueError, match="`training.steps` must be a posit"):
        check_recipe(recipe)
    path = tmp_path / "bad_rate.py"
    path.write_text(
        "import runpy\n"
        f"RECIPE = runpy.run_path({_recipe_path('tiny_scenes_cpu')!r})"
        "['RECIPE']\n"
        "RECIPE['training']['peak_learning_rate'] = -1e-3\n"
    )
    with pytest.raises(ValueError) as error:
        load_recipe(str(path))
    assert str(path) in str(error.value)
    assert "`training.peak_learning_rate` must be a number > 0" in str(
        error.value
    )


def test_a_recipe_with_a_syntax_error_names_its_file_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("RECIPE = {\n    'name': 'broken',\n    'paper' 2,\n}\n")
    with pytest.raises(ValueError) as error:
        load_recipe(str(path))
    message = str(error.value)
    assert f"{path}:3:" in message
    assert "not valid Python" in message
    assert "\n" not in message


def test_schedule_warms_up_then_decays_to_the_final_rate():
    schedule = learning_rate_schedule(
        {
            "peak_learning_rate": 1e-3,
            "final_learning_rate": 1e-5,
            "warmup_steps": 100,
            "steps": 1100,
        }
    )
    rates = [float(to_numpy(schedule(step))) for step in (0, 50, 100, 1100)]
    np.testing.assert_allclose(
        rates, [1e-6, 0.5 * (1e-6 + 1e-3), 1e-3, 1e-5], rtol=1e-3
    )


def test_weight_decay_is_fully_decoupled_and_skips_the_paper_exclusions():
    optimizer = aimv2_adamw(learning_rate=1e-3)
    # Keras decays by lr * weight_decay: 1e-3 * 0.1 = the paper's 1e-4.
    np.testing.assert_allclose(optimizer.weight_decay, 0.1)
    names = {
        "kernel": True,
        "embeddings": True,
        "bias": False,
        "scale": False,
        "position_embedding": False,
        "bos_token": False,
    }
    variables = [keras.Variable(np.zeros((2,)), name=name) for name in names]
    for variable, decayed in zip(variables, names.values(), strict=True):
        assert optimizer._use_weight_decay(variable) is decayed, variable.name
