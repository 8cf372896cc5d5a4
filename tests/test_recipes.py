"""Recipes follow the paper; overrides are checked; the optimizer's rules."""

import os
import pathlib

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_aimv2
from keras_aimv2.optimization import aimv2_adamw
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import backbone_arguments
from keras_aimv2.recipes import check_recipe
from keras_aimv2.recipes import load_recipe
from keras_aimv2.recipes import packaged_recipes
from keras_aimv2.recipes import recipe_names
from keras_aimv2.recipes import recipe_path
from keras_aimv2.training import learning_rate_schedule

# The recipes the package must ship, beside any added later.
SHIPPED = {
    "aimv2_1b",
    "aimv2_3b",
    "aimv2_huge",
    "aimv2_large",
    "aimv2_large_336",
    "probe_fashion_mnist",
    "tiny_scenes_cpu",
}
PAPER_PEAK_LEARNING_RATES = {
    "large": 1e-3,
    "huge": 8e-4,
    "1b": 8e-4,
    "3b": 4e-4,
}


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_loads_and_names_its_paper(name):
    recipe = load_recipe(name)
    assert "AIMv2" in recipe["paper"]
    assert backbone_arguments(recipe["backbone"])["patch_size"] > 0


def test_recipes_are_files_of_the_installed_package():
    package = os.path.dirname(os.path.abspath(keras_aimv2.__file__))
    folder = os.path.join(package, "recipes")
    files = {n[:-3] for n in os.listdir(folder) if n.endswith(".py")}
    assert set(recipe_names()) == files - {"__init__"}
    assert SHIPPED <= set(recipe_names())
    for name in SHIPPED:
        path = recipe_path(name)
        assert os.path.samefile(path, os.path.join(folder, f"{name}.py"))


def test_a_packaged_recipe_loads_by_name_from_any_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("tiny_scenes_cpu")
    assert recipe["name"] == "tiny_scenes_cpu"
    # The `.py` suffix is accepted, and a recipe built on another one
    # (aimv2_1b runs aimv2_large.py beside it) loads as well.
    assert load_recipe("tiny_scenes_cpu.py") == recipe
    assert load_recipe("aimv2_1b")["backbone"] == {"size": "1b"}
    # An existing file is used as it is, even named like a packaged one.
    source = pathlib.Path(recipe_path("tiny_scenes_cpu")).read_text()
    (tmp_path / "tiny_scenes_cpu.py").write_text(
        source + "\nRECIPE['training']['steps'] = 7\n"
    )
    assert load_recipe("tiny_scenes_cpu.py")["training"]["steps"] == 7
    assert load_recipe("tiny_scenes_cpu")["training"]["steps"] != 7
    assert load_recipe(str(tmp_path / "tiny_scenes_cpu.py")) == (
        load_recipe("tiny_scenes_cpu.py")
    )


@pytest.mark.parametrize("value", ["no_such_recipe", "missing/dir/tiny.py"])
def test_an_unknown_recipe_names_the_value_and_lists_the_recipes(value):
    with pytest.raises(ValueError) as error:
        load_recipe(value)
    message = str(error.value)
    assert repr(value) in message
    for name in SHIPPED:
        assert repr(name) in message
    assert "aimv2 recipes" in message


def test_packaged_recipes_give_name_paper_and_summary():
    listing = packaged_recipes()
    assert [r["name"] for r in listing] == recipe_names()
    by_name = {r["name"]: r for r in listing}
    tiny = by_name["tiny_scenes_cpu"]
    assert tiny["paper"] == load_recipe("tiny_scenes_cpu")["paper"]
    assert tiny["summary"] == (
        "Tiny AIMv2 on procedural captioned scenes, on a 2-core CPU (main job)."
    )
    assert by_name["aimv2_1b"]["summary"].startswith("AIMv2-1B pre-training")
    assert by_name["probe_fashion_mnist"]["command"] == "probe"
    assert {r["command"] for r in listing if r["name"] in SHIPPED} == {
        "pretrain",
        "probe",
    }
    for recipe in listing:
        assert "AIMv2" in recipe["paper"], recipe["name"]
        assert recipe["summary"] and "\n" not in recipe["summary"]
        assert os.path.isfile(recipe["path"])


@pytest.mark.parametrize("size", sorted(PAPER_PEAK_LEARNING_RATES))
def test_paper_recipes_follow_table_a1(size):
    recipe = load_recipe(f"aimv2_{size}")
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
    recipe = load_recipe("tiny_scenes_cpu")
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


def _tiny_recipe():
    return load_recipe("tiny_scenes_cpu")


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
    name = "probe_fashion_mnist"
    recipe = apply_overrides(
        load_recipe(name),
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
        apply_overrides(load_recipe(name), ["head.dropout=1.0"])
    with pytest.raises(ValueError, match="`training.epochs` must be"):
        apply_overrides(load_recipe(name), ["training.epochs=0"])


def test_values_written_in_a_recipe_file_are_checked(tmp_path):
    recipe = _tiny_recipe()
    recipe["training"]["steps"] = "600"
    with pytest.raises(ValueError, match="`training.steps` must be a posit"):
        check_recipe(recipe)
    path = tmp_path / "bad_rate.py"
    path.write_text(
        "import runpy\n"
        f"RECIPE = runpy.run_path({recipe_path('tiny_scenes_cpu')!r})"
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
