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
