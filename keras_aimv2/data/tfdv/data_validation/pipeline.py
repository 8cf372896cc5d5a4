"""The steps of a validation: features, statistics, schema, anomalies."""

import sys
import time

import tensorflow_data_validation as tfdv
from google.protobuf import text_format

from data_validation import features
from data_validation import records
from data_validation import report
from data_validation import schema as schema_lib
from data_validation.dataset import ArgumentError


def validate(config):
    """Compute the features and statistics of a dataset and validate them.

    Args:
        config: the `Config` of `validate_data.py`.

    Returns:
        A `report.Validation`.

    Raises:
        ArgumentError: if the schema or the tokenizer cannot be loaded.
        DataError: if the shards cannot be read or hold no examples.
    """
    counter = load_token_counter(config.tokenizer)
    schema = load_schema(config.schema_path)
    frame, statistics = describe(config.dataset, counter, "examples")
    reference_frame = reference_statistics = None
    if config.reference is not None:
        reference_frame, reference_statistics = describe(
            config.reference, counter, "reference examples"
        )
    if schema is None:
        limits = schema_lib.Limits(**config.limits)
        schema = schema_lib.curated_schema(statistics, limits)
        source = _inferred_source(limits)
    else:
        source = f"loaded from {config.schema_path}"
    anomalies = tfdv.validate_statistics(
        statistics, schema, previous_statistics=reference_statistics
    )
    return report.Validation(
        dataset=config.dataset,
        frame=frame,
        statistics=statistics,
        schema=schema,
        schema_source=source,
        anomalies=anomalies,
        token_description=counter.describe(),
        reference=config.reference,
        reference_frame=reference_frame,
        reference_statistics=reference_statistics,
    )


def _inferred_source(limits):
    return (
        "inferred from this data and curated (context length "
        f"{limits.context_length}, min image size {limits.min_image_size}, "
        f"max aspect {limits.max_aspect:g}); saved as schema.pbtxt: review "
        "it and pass it with --schema from now on"
    )


def load_token_counter(path):
    """Return a `TokenCounter` for a SentencePiece model file or `None`.

    Args:
        path: str or `None`. The value of `--tokenizer`.

    Raises:
        ArgumentError: if the file is not a SentencePiece model.
    """
    try:
        return features.TokenCounter(path)
    except (OSError, RuntimeError) as error:
        raise ArgumentError(
            f"--tokenizer must be a SentencePiece model file. Received: "
            f"{path!r}, which does not load ({error})."
        ) from None


def load_schema(path):
    """Return the schema in a text proto file, or `None` without a path.

    Args:
        path: str or `None`. The value of `--schema`.

    Raises:
        ArgumentError: if the file is not a text `Schema` proto.
    """
    if path is None:
        return None
    try:
        return tfdv.load_schema_text(path)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise ArgumentError(
            f"--schema must be a text Schema proto (a schema.pbtxt this tool "
            f"wrote). Received: {path!r}, which does not parse: {error}"
        ) from None


def describe(dataset, counter, label):
    """Return the per-example features of a dataset and their statistics.

    Args:
        dataset: `Dataset`.
        counter: `TokenCounter`.
        label: str. What to call the examples in progress messages.

    Returns:
        A tuple `(frame, statistics)`.

    Raises:
        DataError: if the shards cannot be read or hold no examples.
    """
    start = time.monotonic()
    raw = records.read_records(dataset, label)
    frame = features.feature_frame(raw, counter)
    if frame.empty:
        raise records.DataError(f"{dataset.describe()} holds no examples.")
    middle = time.monotonic()
    statistics = tfdv.generate_statistics_from_dataframe(frame)
    print(
        f"{label}: features of {len(frame)} in {middle - start:.1f} s, "
        f"TFDV statistics in {time.monotonic() - middle:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return frame, statistics


def write_report(validation, output_dir):
    """Write the outputs of a validation; return the report's path.

    Args:
        validation: `report.Validation`.
        output_dir: str. The report directory.
    """
    return report.write_outputs(validation, output_dir)
