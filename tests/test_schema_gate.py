"""`pretrain` refuses shards that do not match a validated TFDV schema."""

import dataclasses
import io
import os
import subprocess

import pytest
from PIL import Image

from keras_aimv2.data import validation_env
from keras_aimv2.data.scenes import scenes_source
from keras_aimv2.data.schema_gate import DataValidationError
from keras_aimv2.data.schema_gate import validate_shards
from keras_aimv2.data.shards import write_shards
from keras_aimv2.recipes import load_recipe
from keras_aimv2.training import check_schema


def _grayscale_png():
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def validation_python():
    """The validation environment's Python; tests do not create it."""
    try:
        return validation_env.environment_python(create=False)
    except validation_env.ValidationEnvironmentError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, validation_python):
    root = tmp_path_factory.mktemp("gate")
    clean, bad = str(root / "clean"), str(root / "bad")
    write_shards(scenes_source(40, seed=0), clean, verbose=False)
    examples = list(scenes_source(40, seed=1))
    examples[3] = ("gray", _grayscale_png(), "a gray square")
    write_shards(examples, bad, verbose=False)
    inferred = str(root / "inferred")
    command = validation_env.validator_command(
        [clean, "--output", inferred], validation_python
    )
    subprocess.run(command, check=True, capture_output=True)
    return clean, bad, os.path.join(inferred, "schema.pbtxt"), str(root)


def _data(schema, **entries):
    """The `data` section of a packaged recipe, validated against `schema`."""
    data = load_recipe("tiny_scenes_cpu").data
    return dataclasses.replace(data, schema=schema, **entries)


def test_clean_shards_pass_the_gate(datasets):
    clean, _, schema, root = datasets
    check_schema(_data(schema), clean, None, None, os.path.join(root, "a"))
    report = os.path.join(root, "a", "validation", "train", "report.txt")
    assert "NO ANOMALIES" in open(report).read()


def test_mismatching_shards_are_refused_unless_allowed(datasets):
    _, bad, schema, root = datasets
    output = os.path.join(root, "b")
    with pytest.raises(DataValidationError, match="image_channels"):
        check_schema(_data(schema), bad, None, None, output)
    # Told to proceed, the run goes on; the report stays for a person.
    check_schema(_data(schema, allow_anomalies=True), bad, None, None, output)
    report = os.path.join(output, "validation", "train", "report.txt")
    assert "image_channels" in open(report).read()


def test_a_missing_schema_is_refused_before_the_environment_is_made(
    tmp_path, monkeypatch
):
    def refuse(**kwargs):
        raise AssertionError("the environment was looked up")

    monkeypatch.setattr(validation_env, "environment_python", refuse)
    missing = str(tmp_path / "schema.pbtxt")
    with pytest.raises(ValueError, match="`data.schema` is not a file"):
        validate_shards(str(tmp_path), missing, str(tmp_path / "report"))
