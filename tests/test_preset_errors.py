"""A broken preset file is reported by name, on the backend of this run."""

import os
import shutil

import keras_hub
import pytest
from conftest import tiny_pretrainer

import keras_aimv2
from keras_aimv2.models import aimv2_presets
from keras_aimv2.models.aimv2_presets import BrokenPresetError
from keras_aimv2.models.aimv2_presets import check_preset_files

NAME = "aimv2_large_patch14_224"


def _truncate(path):
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])


def _overwrite_with(text):
    def overwrite(path):
        with open(path, "w") as file:
            file.write(text)

    return overwrite


# How each preset is broken: the file changed, and what is done to it.
BREAKS = {
    "missing config": ("config.json", os.remove),
    "invalid config": ("config.json", _overwrite_with('{"module": ')),
    "missing weights": ("model.weights.h5", os.remove),
    "truncated weights": ("model.weights.h5", _truncate),
    "missing task config": ("task.json", os.remove),
    "invalid task config": ("task.json", _overwrite_with('{"config" 1}')),
    "missing task weights": ("task.weights.h5", os.remove),
    "truncated task weights": ("task.weights.h5", _truncate),
}
EXPECTED = {
    "missing config": "does not exist",
    "invalid config": "is not valid JSON: Expecting value: line 1",
    "missing weights": "does not exist",
    "truncated weights": "is truncated or not an HDF5 file",
    "missing task config": "does not exist",
    "invalid task config": "is not valid JSON: Expecting ':' delimiter",
    "missing task weights": "does not exist",
    "truncated task weights": "is truncated or not an HDF5 file",
}
BACKBONE_BREAKS = [k for k in BREAKS if "task" not in k]


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """Intact backbone and pretrainer presets of the tiny configuration."""
    root = tmp_path_factory.mktemp("intact")
    pretrainer = tiny_pretrainer()
    pretrainer.backbone.save_to_preset(str(root / "backbone"))
    pretrainer.save_to_preset(str(root / "pretrainer"))
    return root


def _broken(presets, kind, tmp_path, which="backbone", name=None):
    directory = tmp_path / (name or which)
    shutil.copytree(presets / which, directory)
    filename, damage = BREAKS[kind]
    damage(str(directory / filename))
    return str(directory), str(directory / filename)


@pytest.mark.parametrize("kind", BACKBONE_BREAKS)
def test_backbone_preset_errors_name_the_file(presets, kind, tmp_path):
    directory, path = _broken(presets, kind, tmp_path)
    with pytest.raises(BrokenPresetError) as error:
        keras_aimv2.AIMV2Backbone.from_preset(directory)
    assert path in str(error.value)
    assert EXPECTED[kind] in str(error.value)


@pytest.mark.parametrize("kind", ["missing config", "truncated weights"])
def test_keras_hub_backbone_preset_errors_name_the_file(
    presets, kind, tmp_path
):
    # keras-hub reads and reports `config.json` itself (an invalid one as a
    # bare JSONDecodeError, which only `AIMV2Backbone.from_preset` or a
    # preset name improves); the weights go through
    # `AIMV2Backbone.load_weights`.
    directory, path = _broken(presets, kind, tmp_path)
    with pytest.raises(ValueError) as error:
        keras_hub.models.Backbone.from_preset(directory)
    assert os.path.basename(path) in str(error.value)
    assert directory in str(error.value)


def test_truncated_backbone_weights_of_a_pretrainer_preset(presets, tmp_path):
    directory, path = _broken(
        presets, "truncated weights", tmp_path, which="pretrainer"
    )
    with pytest.raises(BrokenPresetError, match="truncated") as error:
        keras_aimv2.AIMV2Pretrainer.from_preset(directory)
    assert path in str(error.value)


@pytest.mark.parametrize("kind", list(BREAKS))
def test_task_preset_check_names_the_file(presets, kind, tmp_path):
    directory, path = _broken(presets, kind, tmp_path, which="pretrainer")
    with pytest.raises(BrokenPresetError) as error:
        check_preset_files(directory, task=True)
    assert path in str(error.value)
    assert EXPECTED[kind] in str(error.value)


@pytest.mark.parametrize("kind", BACKBONE_BREAKS)
def test_named_preset_errors_name_the_file(
    presets, kind, tmp_path, monkeypatch
):
    monkeypatch.setenv(aimv2_presets.PRESETS_ENV_VARIABLE, str(tmp_path))
    _, path = _broken(presets, kind, tmp_path, name=NAME)
    # Names resolve through the package's classes (not keras-hub's tables).
    for cls in (keras_aimv2.AIMV2Backbone, keras_aimv2.AIMV2ImageConverter):
        with pytest.raises(BrokenPresetError) as error:
            cls.from_preset(NAME)
        assert path in str(error.value)
        assert EXPECTED[kind] in str(error.value)


def test_intact_and_weightless_loads_pass_the_checks(presets, tmp_path):
    check_preset_files(str(presets / "pretrainer"), task=True)
    directory, _ = _broken(presets, "missing weights", tmp_path)
    backbone = keras_aimv2.AIMV2Backbone.from_preset(
        directory, load_weights=False
    )
    assert isinstance(backbone, keras_aimv2.AIMV2Backbone)
    # Not a local directory: left to keras-hub.
    check_preset_files("kaggle://owner/model/keras/variant")


def test_sharded_weights_name_a_missing_or_truncated_shard(tmp_path):
    directory = tmp_path / "sharded"
    tiny_pretrainer().backbone.save_to_preset(
        str(directory), max_shard_size=0.0001
    )
    assert keras_aimv2.AIMV2Backbone.from_preset(str(directory))
    shard = directory / "model_00001.weights.h5"
    _truncate(str(shard))
    with pytest.raises(BrokenPresetError, match="truncated") as error:
        keras_aimv2.AIMV2Backbone.from_preset(str(directory))
    assert str(shard) in str(error.value)
    os.remove(shard)
    with pytest.raises(BrokenPresetError, match="does not exist") as error:
        keras_aimv2.AIMV2Backbone.from_preset(str(directory))
    assert str(shard) in str(error.value)
