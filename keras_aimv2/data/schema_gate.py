"""Refuse training data that do not match a validated TFDV schema.

TensorFlow Data Validation needs TensorFlow 2.16, so it lives in its own
environment (`tools/setup_validation_env.sh` makes `.venv-tfdv`); this module
runs `tools/validate_data.py` there and turns its verdict into an exception.
"""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


class DataValidationError(ValueError):
    """The shards do not match the schema; the message is TFDV's report."""


def validate_shards(shards_dir, schema, output_dir, tokenizer=None):
    """Validate TFRecord shards against a schema before training on them.

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
        RuntimeError: when the validation cannot run.
    """
    python = os.path.join(ROOT, ".venv-tfdv", "bin", "python")
    if not os.path.isfile(python):
        raise RuntimeError(
            f"The validation environment {python} is missing: run "
            "`bash tools/setup_validation_env.sh` first."
        )
    if not os.path.isfile(schema):
        raise ValueError(f"`data.schema` is not a file. Received: {schema!r}")
    command = [
        python,
        os.path.join(ROOT, "tools", "validate_data.py"),
        os.fspath(shards_dir),
        "--schema",
        os.fspath(schema),
        "--output",
        os.fspath(output_dir),
    ]
    if tokenizer:
        command += ["--tokenizer", os.fspath(tokenizer)]
    result = subprocess.run(command, capture_output=True, text=True)
    report = os.path.join(output_dir, "report.txt")
    if result.returncode == 0:
        return report
    if result.returncode == 1 and os.path.isfile(report):
        with open(report, encoding="utf-8") as file:
            raise DataValidationError(file.read())
    raise RuntimeError(
        f"tools/validate_data.py exited with status {result.returncode}:\n"
        f"{result.stderr[-2000:]}"
    )
