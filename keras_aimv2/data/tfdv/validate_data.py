"""Validate image-caption TFRecord shards with TFDV before training on them.

Reads every example of a dataset directory written by
`keras_aimv2.data.shards.write_shards`, computes per-example features that
TFDV cannot see in the raw bytes (decoded image size, aspect ratio, colour
channels and format; caption length in characters, words and tokens; blank
captions), computes TFDV statistics over them, and validates them against a
schema: the one given with `--schema`, or one inferred from the data and
curated (see `data_validation/schema.py`). With `--reference` it also
checks the drift of caption token length, image size and formats against
another dataset. Results go to the report directory (`report.txt`,
`anomalies.pbtxt`, `schema.pbtxt`, `statistics.pb`, `examples.csv`,
`summary.png`).

It runs in the separate TFDV environment (TensorFlow 2.16, no Keras 3) that
`keras_aimv2.data.validation_env` creates on first use, by file path, so
that this folder is on the import path and `data_validation` is found. Run
it with `aimv2 validate`, which forwards its arguments here:

    aimv2 validate data/scenes/train --tokenizer tokenizer.model \
        --output runs/validation

The package never imports this file. Its module level imports only the
standard library and `data_validation.dataset` (standard library too), so
that `--help` and argument errors work in any Python; TensorFlow and TFDV
are imported once the arguments are checked. A first argument pair
`--prog NAME` names the command in usage and error messages.

Save the `schema.pbtxt` of a clean run, review it, and pass it with
`--schema` afterwards so that every new dataset meets the same rules.

Exit status: 0 when there are no anomalies, 1 when there are (or the shards
cannot be read), 2 for bad arguments, 3 when the tool itself fails.
"""

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time
import traceback
import warnings

from data_validation import dataset as dataset_lib

EXIT_OK = 0
EXIT_ANOMALIES = 1
EXIT_BAD_ARGUMENTS = 2
EXIT_FAILURE = 3
DEFAULT_LIMITS = {"context_length": 77, "min_image_size": 32, "max_aspect": 3.0}
PROG = "validate_data.py"


@dataclasses.dataclass(frozen=True)
class Config:
    """Checked arguments of a validation.

    Args:
        dataset: `Dataset`. The shards to validate.
        reference: `Dataset` or `None`. Shards to compare for drift.
        schema_path: str or `None`. A schema to load instead of inferring.
        tokenizer: str or `None`. A SentencePiece model file.
        limits: dict. `context_length`, `min_image_size` and `max_aspect`
            for an inferred schema.
        output: str. The report directory.
    """

    dataset: object
    reference: object
    schema_path: str | None
    tokenizer: str | None
    limits: dict
    output: str


def build_parser(prog=PROG):
    """Return the command line parser of the tool.

    Args:
        prog: str. The name of the command in usage and error messages.

    Returns:
        An `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Validate image-caption TFRecord shards with TensorFlow "
        "Data Validation. Exit status: 0 no anomalies, 1 anomalies, 2 bad "
        "arguments, 3 failure of the tool.",
    )
    parser.add_argument("shards_dir", metavar="SHARDS_DIR")
    parser.add_argument(
        "--reference",
        metavar="DIR",
        help="dataset directory to compare with for drift",
    )
    parser.add_argument(
        "--schema",
        metavar="FILE",
        help="schema.pbtxt to validate against (default: infer and curate)",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="MODEL",
        help="SentencePiece model that counts caption tokens (default: "
        "words + 1)",
    )
    _add_limit_arguments(parser)
    parser.add_argument(
        "--output",
        metavar="REPORT_DIR",
        help="report directory (default: SHARDS_DIR-validation)",
    )
    return parser


def _add_limit_arguments(parser):
    limits = parser.add_argument_group(
        "limits of an inferred schema (with --schema, edit its domains)"
    )
    limits.add_argument(
        "--context-length",
        type=int,
        help="most caption tokens, end token included (default 77)",
    )
    limits.add_argument(
        "--min-image-size",
        type=int,
        help="least image width and height in pixels (default 32)",
    )
    limits.add_argument(
        "--max-aspect",
        type=float,
        help="largest ratio of the longer image side to the shorter "
        "(default 3.0)",
    )


def check_arguments(args):
    """Check parsed arguments and resolve them into a `Config`.

    Args:
        args: `argparse.Namespace` from `build_parser`.

    Returns:
        A `Config`.

    Raises:
        ArgumentError: naming the argument, its value and what it must be.
    """
    dataset = dataset_lib.find_dataset(args.shards_dir, "SHARDS_DIR")
    reference = None
    if args.reference is not None:
        reference = dataset_lib.find_dataset(args.reference, "--reference")
    _check_file(args.schema, "--schema")
    _check_file(args.tokenizer, "--tokenizer")
    limits = _check_limits(args)
    output = args.output or dataset.directory.rstrip(os.sep) + "-validation"
    if os.path.exists(output) and not os.path.isdir(output):
        raise dataset_lib.ArgumentError(
            f"--output must be a directory. Received: {output!r}, which is "
            "a file."
        )
    return Config(
        dataset, reference, args.schema, args.tokenizer, limits, output
    )


def _check_file(path, argument):
    if path is not None and not os.path.isfile(path):
        raise dataset_lib.ArgumentError(
            f"{argument} must name an existing file. Received: {path!r}"
        )


def _check_limits(args):
    given = {
        name: getattr(args, name)
        for name in DEFAULT_LIMITS
        if getattr(args, name) is not None
    }
    if args.schema is not None and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise dataset_lib.ArgumentError(
            f"{flags} set the domains of an inferred schema, but --schema "
            f"{args.schema!r} was given: edit the domains in that schema "
            "instead, or drop --schema."
        )
    limits = {**DEFAULT_LIMITS, **given}
    minimums = {"context_length": 2, "min_image_size": 1, "max_aspect": 1.0}
    for name, minimum in minimums.items():
        if not limits[name] >= minimum:
            flag = "--" + name.replace("_", "-")
            raise dataset_lib.ArgumentError(
                f"{flag} must be at least {minimum}. Received: "
                f"{flag}={limits[name]}"
            )
    return limits


def main(argv=None, prog=PROG):
    """Run the tool.

    Args:
        argv: list of str or `None`. The arguments; `None` reads
            `sys.argv`.
        prog: str. The name of the command in usage and error messages,
            e.g. `"aimv2 validate"`.

    Returns:
        The exit status: 0 no anomalies, 1 anomalies or unreadable shards,
        2 bad arguments, 3 failure of the tool.
    """
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as stop:
        return stop.code
    try:
        config = check_arguments(args)
        return run(config, prog)
    except dataset_lib.ArgumentError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    except Exception:
        traceback.print_exc()
        print(f"{prog}: the tool failed (see above).", file=sys.stderr)
        return EXIT_FAILURE


def run(config, prog=PROG):
    """Validate a dataset and write the report.

    Args:
        config: `Config`.
        prog: str. The name of the command in error messages.

    Returns:
        The exit status: 0 no anomalies, 1 anomalies or unreadable shards.

    Raises:
        ArgumentError: if the schema or tokenizer file cannot be read.
    """
    begin = time.monotonic()
    _quiet_libraries()
    # TensorFlow and TFDV take seconds to import: arguments are checked
    # before. TFDV writes a notice about IPython (needed only by its
    # notebook views) to stderr on import; it is hidden.
    with contextlib.redirect_stderr(io.StringIO()):
        from data_validation import pipeline
        from data_validation import records

    start = time.monotonic()
    _remove_stale_report(config.output)
    try:
        validation = pipeline.validate(config)
    except records.DataError as error:
        print(f"{prog}: unreadable data: {error}", file=sys.stderr)
        return EXIT_ANOMALIES
    report_path = pipeline.write_report(validation, config.output)
    _print_result(
        validation, report_path, time.monotonic() - start, start - begin
    )
    return EXIT_ANOMALIES if validation.anomaly_count else EXIT_OK


def _remove_stale_report(output):
    """Remove the report of an earlier run, which could be taken for ours."""
    path = os.path.join(output, "report.txt")
    if os.path.isfile(path):
        os.remove(path)


def _print_result(validation, report_path, seconds, import_seconds):
    examples = len(validation.frame)
    rate = f"{examples / max(seconds, 1e-9):.0f} examples/s"
    if validation.reference_frame is not None:
        examples += len(validation.reference_frame)
        rate = (
            f"{examples / max(seconds, 1e-9):.0f} examples/s with the "
            f"{len(validation.reference_frame)} of the reference"
        )
    count = validation.anomaly_count
    verdict = {0: "no anomalies", 1: "1 anomaly"}.get(
        count, f"{count} anomalies"
    )
    print(
        f"validated {len(validation.frame)} examples in {seconds:.1f} s "
        f"({rate}; importing TensorFlow and TFDV took {import_seconds:.1f} "
        f"s more): {verdict}. Report: {report_path}"
    )


def _quiet_libraries():
    """Silence TensorFlow's and Google libraries' start-up noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _split_prog(argv):
    """Take a leading `--prog NAME` off the command line.

    Args:
        argv: list of str. The arguments after the script's path.

    Returns:
        `(arguments, prog)`: the remaining arguments and the command name.
    """
    if len(argv) >= 2 and argv[0] == "--prog":
        return argv[2:], argv[1]
    return argv, PROG


if __name__ == "__main__":
    arguments, name = _split_prog(sys.argv[1:])
    sys.exit(main(arguments, name))
