"""Recipes follow the paper; recipes are typed and checked; the optimizer."""

import dataclasses
import json
import os
import pathlib

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_aimv2
from keras_aimv2.optimization import aimv2_adamw
from keras_aimv2.recipes import AblationRecipe
from keras_aimv2.recipes import BackboneSection
from keras_aimv2.recipes import DistributionSection
from keras_aimv2.recipes import InitializeSection
from keras_aimv2.recipes import LiTRecipe
from keras_aimv2.recipes import PretrainingRecipe
from keras_aimv2.recipes import ProbeRecipe
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import backbone_arguments
from keras_aimv2.recipes import load_recipe
from keras_aimv2.recipes import packaged_recipes
from keras_aimv2.recipes import recipe_from_dict
from keras_aimv2.recipes import recipe_names
from keras_aimv2.recipes import recipe_path
from keras_aimv2.recipes import typed_recipe
from keras_aimv2.training import learning_rate_schedule

# The recipes the package must ship, beside any added later.
SHIPPED = {
    "ablation_fashion_mnist",
    "ablation_scenes",
    "aimv2_1b",
    "aimv2_3b",
    "aimv2_huge",
    "aimv2_large",
    "aimv2_large_336",
    "lit_fashion_mnist",
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
    assert "AIMv2" in recipe.paper
    if isinstance(recipe, AblationRecipe):
        # An ablation names a pre-training and a probe recipe.
        assert isinstance(recipe.pretrain.resolve(), PretrainingRecipe)
        assert isinstance(recipe.probe.resolve(), ProbeRecipe)
        return
    assert isinstance(recipe, (PretrainingRecipe, ProbeRecipe, LiTRecipe))
    assert recipe.backbone.arguments()["patch_size"] > 0
    # The read-only mapping view of earlier dict recipes agrees.
    assert backbone_arguments(recipe["backbone"]) == recipe.backbone.arguments()
    assert recipe["training"]["batch_size"] == recipe.training.batch_size


def test_recipes_are_files_of_the_installed_package():
    package = os.path.dirname(os.path.abspath(keras_aimv2.__file__))
    folder = os.path.join(package, "recipes")
    files = {n[:-3] for n in os.listdir(folder) if n.endswith(".py")}
    # Files starting with `_` are the package's modules, not recipes.
    assert set(recipe_names()) == {n for n in files if not n.startswith("_")}
    assert SHIPPED <= set(recipe_names())
    for name in SHIPPED:
        path = recipe_path(name)
        assert os.path.samefile(path, os.path.join(folder, f"{name}.py"))


def test_a_packaged_recipe_loads_by_name_from_any_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("tiny_scenes_cpu")
    assert recipe.name == "tiny_scenes_cpu"
    # The `.py` suffix is accepted, and a recipe built on another one
    # (aimv2_1b runs aimv2_large.py beside it) loads as well.
    assert load_recipe("tiny_scenes_cpu.py") == recipe
    assert load_recipe("aimv2_1b").backbone == BackboneSection(size="1b")
    # An existing file is used as it is, even named like a packaged one.
    source = pathlib.Path(recipe_path("tiny_scenes_cpu")).read_text()
    (tmp_path / "tiny_scenes_cpu.py").write_text(
        source + "\nRECIPE['training']['steps'] = 7\n"
    )
    assert load_recipe("tiny_scenes_cpu.py").training.steps == 7
    assert load_recipe("tiny_scenes_cpu").training.steps != 7
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
    assert tiny["paper"] == load_recipe("tiny_scenes_cpu").paper
    assert tiny["summary"] == (
        "Tiny AIMv2 on procedural captioned scenes, on a 2-core CPU (main job)."
    )
    assert by_name["aimv2_1b"]["summary"].startswith("AIMv2-1B pre-training")
    assert by_name["probe_fashion_mnist"]["command"] == "probe"
    assert by_name["ablation_scenes"]["command"] == "ablate"
    assert by_name["lit_fashion_mnist"]["command"] == "lit"
    assert {r["command"] for r in listing if r["name"] in SHIPPED} == {
        "ablate",
        "lit",
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
    training = recipe.training
    assert training.peak_learning_rate == PAPER_PEAK_LEARNING_RATES[size]
    assert training.batch_size == 8192
    assert training.steps == 1_500_000
    assert training.warmup_steps == 12_500
    assert training.final_learning_rate == 1e-5
    assert training.weight_decay == 1e-4
    assert training.clipnorm == 1.0
    assert training.pixel_loss_weight == 0.4
    assert training.text_loss_weight == 1.0
    assert recipe.data.crop_scale == (0.4, 1.0)
    assert recipe.data.flip_probability == 0.5
    assert recipe.decoder.decoder_hidden_dim == 1024
    assert recipe.decoder.decoder_num_layers == 12
    assert recipe.decoder.context_length == 77
    assert recipe.backbone.arguments()["image_shape"] == (224, 224, 3)


def test_overrides_set_values_and_reject_unknown_keys():
    original = load_recipe("tiny_scenes_cpu")
    recipe = apply_overrides(
        original, ["training.steps=7", "backbone.image_shape=(16, 16, 3)"]
    )
    assert recipe.training.steps == 7
    assert recipe.backbone.image_shape == (16, 16, 3)
    # Recipes are frozen: overrides make a new one.
    assert original.training.steps == 600
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.training.steps = 8
    with pytest.raises(ValueError, match="training.step'.*steps"):
        apply_overrides(recipe, ["training.step=7"])
    with pytest.raises(ValueError, match="section 'trainig'"):
        apply_overrides(recipe, ["trainig.steps=7"])
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(recipe, ["training.steps"])
    with pytest.raises(ValueError, match="`training` is a section"):
        apply_overrides(recipe, ["training=3"])
    with pytest.raises(ValueError, match="No recipe file"):
        load_recipe("no_such_recipe")
    # A top-level entry.
    moved = apply_overrides(recipe, ["output_dir=runs/elsewhere"])
    assert moved.output_dir == "runs/elsewhere"


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
        # A choice.
        ("data.source=webdataset", "`data.source` must be one of"),
        ("distribution.strategy=fsdp", "`distribution.strategy` must be"),
        ("training.verbose=3", "`training.verbose` must be 0 (silent)"),
        ("backbone.size=medium", "`backbone.size` must be one of"),
        ("training.dtype_policy=float13", "Keras dtype policy"),
        # None where the type does not allow it.
        ("training.steps=None", "Received: training.steps=None"),
        ("decoder.decoder_hidden_dim=None", "`decoder.decoder_hidden_dim`"),
        ("training.seed=None", "`training.seed` must be an int."),
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
            "tokenizer.model=models/captions.model",
            "data.source=None",
            "data.train_examples=None",
            # Entries that depend on each other are checked together, after
            # every override: the mesh before its strategy.
            "distribution.mesh_shape=(2, 4)",
            "distribution.strategy=sharded",
            "tokenizer.pad_token=</s>",
            "backbone.hidden_dim=None",
        ],
    )
    assert recipe.training.peak_learning_rate == 1.0
    assert isinstance(recipe.training.peak_learning_rate, float)
    assert recipe.backbone.image_shape == (16, 16, 3)
    assert recipe.data.crop_scale == (0.5, 1.0)
    assert recipe.training.clipnorm is None
    assert recipe.data.train_examples is None
    assert recipe.tokenizer.model == "models/captions.model"
    assert recipe.tokenizer.pad_token == "</s>"
    assert recipe.data.source is None
    assert recipe.distribution == DistributionSection(
        strategy="sharded", mesh_shape=(2, 4)
    )
    # Unset, an encoder entry takes AIMV2Backbone's default.
    assert "hidden_dim" not in recipe.backbone.arguments()
    # Checked together: a mesh without the sharded strategy.
    with pytest.raises(ValueError, match="strategy='sharded' only"):
        apply_overrides(_tiny_recipe(), ["distribution.mesh_shape=(2, 4)"])
    # A built-in source needs its counts.
    with pytest.raises(ValueError, match="`data.train_examples`, which must"):
        apply_overrides(_tiny_recipe(), ["data.train_examples=None"])


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
    assert recipe.training.steps_per_epoch == 5
    assert recipe.head.feature_layers == (2, 3)
    assert recipe.backbone.image_shape is None
    assert recipe.backbone.preset == "runs/x/preset/backbone"
    with pytest.raises(ValueError, match="`head.dropout` must be"):
        apply_overrides(load_recipe(name), ["head.dropout=1.0"])
    with pytest.raises(ValueError, match="`training.epochs` must be"):
        apply_overrides(load_recipe(name), ["training.epochs=0"])
    # A probe's sections are its own: no decoder, no training steps.
    with pytest.raises(ValueError, match="section 'decoder'"):
        apply_overrides(load_recipe(name), ["decoder.context_length=8"])
    with pytest.raises(ValueError, match="'training.steps'"):
        apply_overrides(load_recipe(name), ["training.steps=8"])


def _recipe_file(tmp_path, name, *lines):
    """A recipe file that takes tiny_scenes_cpu's RECIPE and changes it."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import runpy\n"
        f"RECIPE = runpy.run_path({recipe_path('tiny_scenes_cpu')!r})"
        "['RECIPE']\n" + "".join(f"{line}\n" for line in lines)
    )
    return str(path)


def _load_error(path):
    with pytest.raises(ValueError) as error:
        load_recipe(path)
    assert path in str(error.value)
    return str(error.value)


def test_values_written_in_a_recipe_file_are_checked(tmp_path):
    recipe = _tiny_recipe()
    with pytest.raises(ValueError, match="`training.steps` must be a posit"):
        recipe.training.replace(steps="600")
    path = _recipe_file(
        tmp_path, "text_steps", "RECIPE['training']['steps'] = '600'"
    )
    message = _load_error(path)
    assert "`training.steps` must be a positive int" in message
    assert "Received: training.steps='600'" in message
    path = _recipe_file(
        tmp_path, "bad_shape", "RECIPE['backbone']['image_shape'] = (64, 64)"
    )
    assert "`backbone.image_shape` must be (height" in _load_error(path)
    path = _recipe_file(tmp_path, "bad_flag", "RECIPE['training']['remat'] = 0")
    assert "`training.remat` must be a bool" in _load_error(path)
    path = _recipe_file(
        tmp_path, "bad_section", "RECIPE['distribution'] = 'data_parallel'"
    )
    assert "`distribution` is a section" in _load_error(path)
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


def test_a_misspelled_key_in_a_recipe_file_fails_on_load(tmp_path):
    path = _recipe_file(
        tmp_path,
        "misspelled",
        "RECIPE['training']['warmup_step'] = RECIPE['training']"
        ".pop('warmup_steps')",
    )
    message = _load_error(path)
    assert "Unknown recipe key 'training.warmup_step'" in message
    assert "Did you mean 'training.warmup_steps'?" in message
    path = _recipe_file(
        tmp_path, "misspelled_section", "RECIPE['trainig'] = {'steps': 7}"
    )
    assert "Unknown recipe key 'trainig'" in _load_error(path)
    # Not silently ignored on a probe either.
    source = pathlib.Path(recipe_path("probe_fashion_mnist")).read_text()
    probe = tmp_path / "probe_typo.py"
    probe.write_text(source + "\nRECIPE['head']['dropuot'] = 0.1\n")
    assert "Unknown recipe key 'head.dropuot'" in _load_error(str(probe))


def test_a_missing_entry_without_a_default_is_named(tmp_path):
    path = _recipe_file(
        tmp_path,
        "no_steps",
        "del RECIPE['training']['steps']",
        "del RECIPE['decoder']",
    )
    message = _load_error(path)
    assert "lacks the section `decoder`" in message
    path = _recipe_file(tmp_path, "no_steps", "del RECIPE['training']['steps']")
    message = _load_error(path)
    assert "`training` lacks `training.steps` (a positive int)" in message
    assert "no default" in message


def test_an_old_recipe_lacking_newer_entries_gets_their_defaults(tmp_path):
    # A recipe written before mixed precision, accumulation, remat,
    # distribution, initialization, data validation and the tokenizer's
    # pad and punctuation settings.
    path = _recipe_file(
        tmp_path,
        "old_recipe",
        "for key in ('dtype_policy', 'gradient_accumulation_steps',"
        " 'remat', 'verbose'):",
        "    del RECIPE['training'][key]",
        "del RECIPE['distribution']",
        "del RECIPE['tokenizer']['pad_token']",
        "del RECIPE['tokenizer']['remove_punctuation']",
        "del RECIPE['data']['schema']",
        "del RECIPE['data']['allow_anomalies']",
    )
    recipe = load_recipe(path)
    assert recipe.training.dtype_policy == "float32"
    assert recipe.training.gradient_accumulation_steps == 1
    assert recipe.training.remat is False
    assert recipe.training.rebuild is False
    assert recipe.training.verbose == 1
    assert recipe.distribution == DistributionSection(strategy="none")
    assert recipe.initialize == InitializeSection(preset=None)
    assert recipe.tokenizer.pad_token is None
    assert recipe.tokenizer.remove_punctuation is False
    assert recipe.data.schema is None and recipe.data.allow_anomalies is False
    assert recipe == _tiny_recipe()
    # `--set` reaches the entries the file lacks.
    recipe = apply_overrides(recipe, ["training.remat=True"])
    assert recipe.training.remat is True
    # A probe recipe of an earlier version, with empty `decoder` and
    # `tokenizer` sections, loads; a probe's decoder that is not empty is
    # an error.
    source = pathlib.Path(recipe_path("probe_fashion_mnist")).read_text()
    old_probe = tmp_path / "old_probe.py"
    old_probe.write_text(
        source + "\nRECIPE['decoder'] = {}\nRECIPE['tokenizer'] = {}\n"
    )
    assert load_recipe(str(old_probe)) == load_recipe("probe_fashion_mnist")
    old_probe.write_text(
        source + "\nRECIPE['decoder'] = {'context_length': 8}\n"
    )
    assert "Unknown recipe key 'decoder'" in _load_error(str(old_probe))


def test_a_recipe_file_that_fails_names_its_line(tmp_path):
    path = _recipe_file(
        tmp_path, "failing", "x = 1", "RECIPE['training']['steps'] = steps"
    )
    message = _load_error(path)
    assert f"{path}:4" in message and "NameError" in message
    path = tmp_path / "no_recipe.py"
    path.write_text("RECIPES = {}\n")
    assert "must define a dict RECIPE" in _load_error(str(path))


def test_recipe_json_reads_back_as_the_same_recipe():
    for name in ("tiny_scenes_cpu", "aimv2_large_336", "probe_fashion_mnist"):
        recipe = load_recipe(name)
        written = json.loads(json.dumps(recipe.to_dict()))
        assert recipe_from_dict(written) == recipe
    # recipe.json of a run of the previous version: the recipe file's dict
    # with the defaults it filled in, tuples written as lists.
    import runpy

    values = runpy.run_path(recipe_path("tiny_scenes_cpu"))["RECIPE"]
    values = json.loads(json.dumps(values))
    values["training"]["rebuild"] = False
    assert recipe_from_dict(values) == _tiny_recipe()
    probe = runpy.run_path(recipe_path("probe_fashion_mnist"))["RECIPE"]
    probe = json.loads(json.dumps({**probe, "decoder": {}, "tokenizer": {}}))
    assert recipe_from_dict(probe) == load_recipe("probe_fashion_mnist")


def test_a_recipe_of_the_other_kind_is_refused():
    with pytest.raises(ValueError, match="is a probe recipe: run it with"):
        typed_recipe(load_recipe("probe_fashion_mnist"), PretrainingRecipe)
    with pytest.raises(ValueError, match="is a pretrain recipe"):
        typed_recipe(_tiny_recipe().to_dict(), ProbeRecipe)
    assert typed_recipe(_tiny_recipe().to_dict(), PretrainingRecipe) == (
        _tiny_recipe()
    )
    with pytest.raises(ValueError, match="names no training data"):
        load_recipe("aimv2_large").check_runnable()


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
    entries = {
        "peak_learning_rate": 1e-3,
        "final_learning_rate": 1e-5,
        "warmup_steps": 100,
        "steps": 1100,
    }
    # A recipe's training section, or a dict of the entries it reads.
    for training in (_tiny_recipe().training.replace(**entries), entries):
        schedule = learning_rate_schedule(training)
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
