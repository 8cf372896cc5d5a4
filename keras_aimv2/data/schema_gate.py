"""Refuse training data that do not match a validated TFDV schema.

TensorFlow Data Validation needs TensorFlow 2.16, so it runs in its own
environment, which `keras_aimv2.data.validation_env` creates on first use
(about 1.5 minutes and 2.9 GB, once); this module runs the packaged
validator there and turns its verdict into an exception.
"""

import os
import subprocess

from keras_aimv2.data import validation_env


class DataValidationError(ValueError):
    """The shards do not match the schema; the message is TFDV's report."""


def validate_shards(shards_dir, schema, output_dir, tokenizer=None):
    """Validate TFRecord shards against a schema before training on them.

    Creates the validation environment first if it is missing.

    Args:
        shards_dir: str. A dataset directory written by `write_shards`.
        schema: str. A reviewed `schema.pbtxt` from a clean validation run.
        output_dir: str. Where the report is written.
        tokenizer: str or `None`. The SentencePiece model, for exact caption
            lengths in tokens; `None` counts words plus one.

    Returns:
        The path of `report.txt` when the data match the schema.

    Raises:
        DataValidationError: with the report, when there are anomalies.
        ValueError: when `schema` is not a file.
        RuntimeError: when the validation cannot run (a
            `validation_env.ValidationEnvironmentError` when its environment
            cannot be created).
    """
    if not os.path.isfile(schema):
        raise ValueError(f"`data.schema` is not a file. Received: {schema!r}")
    python = validation_env.environment_python(create=True)
    arguments = [shards_dir, "--schema", schema, "--output", output_dir]
    if tokenizer:
        arguments += ["--tokenizer", tokenizer]
    command = validation_env.validator_command(arguments, python)
    result = subprocess.run(command, capture_output=True, text=True)
    report = os.path.join(output_dir, "report.txt")
    if result.returncode == 0:
        return report
    if result.returncode == 1 and os.path.isfile(report):
        with open(report, encoding="utf-8") as file:
            raise DataValidationError(file.read())
    raise RuntimeError(
        f"{validation_env.SCRIPT} exited with status {result.returncode}:\n"
        f"{result.stderr[-2000:]}"
    )
