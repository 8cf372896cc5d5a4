"""Find the shards of a dataset directory from its manifest.

A dataset directory, as `keras_aimv2/data/shards.py` writes it, holds the
TFRecord shards of one split and a `manifest.json` that names the split and
lists the shards. This module reads the manifest with the standard library
only, so that arguments are checked before TensorFlow is imported.
"""

import dataclasses
import json
import os

MANIFEST_NAME = "manifest.json"


class ArgumentError(ValueError):
    """An argument of the tool names input that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The shards of one split.

    Args:
        directory: str. The dataset directory.
        split: str. The split named by the manifest.
        files: tuple of str. Paths of the shards, in the manifest's order.
        num_examples: int or `None`. Examples the manifest declares.
    """

    directory: str
    split: str
    files: tuple
    num_examples: int | None

    def describe(self):
        """Return a one-line description, e.g. for the report."""
        count = len(self.files)
        return (
            f"{self.directory} (split {self.split!r}, {count} "
            f"shard{'' if count == 1 else 's'})"
        )


def find_dataset(directory, argument):
    """Read the manifest of a dataset directory and check its shards exist.

    Args:
        directory: str. The dataset directory.
        argument: str. Name of the argument that gave `directory`, used in
            error messages (e.g. `"SHARDS_DIR"` or `"--reference"`).

    Returns:
        A `Dataset`.

    Raises:
        ArgumentError: if the directory, its manifest or a shard it lists is
            missing, or the manifest is not valid.
    """
    if not os.path.isdir(directory):
        raise ArgumentError(
            f"{argument} must be a dataset directory. Received: {directory!r}"
            ", which does not exist or is not a directory."
        )
    manifest = _read_manifest(directory, argument)
    split = manifest.get("split")
    shards = manifest.get("shards")
    if (
        not isinstance(split, str)
        or not isinstance(shards, list)
        or not all(
            isinstance(shard, dict) and isinstance(shard.get("file"), str)
            for shard in shards
        )
    ):
        raise ArgumentError(
            f"The manifest of {argument} {directory!r} must have a 'split' "
            "string and a 'shards' list of {'file': name} objects, as "
            "keras_aimv2.data.shards.write_shards writes them."
        )
    files = tuple(os.path.join(directory, shard["file"]) for shard in shards)
    _check_files(files, argument, directory)
    num_examples = manifest.get("num_examples")
    if not isinstance(num_examples, int):
        num_examples = None
    return Dataset(directory, split, files, num_examples)


def _read_manifest(directory, argument):
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ArgumentError(
            f"{argument} {directory!r} is not a dataset directory: it has no "
            f"{MANIFEST_NAME} (write one with keras_aimv2's write_shards or "
            "`aimv2 build-dataset`; an interrupted build leaves none)."
        )
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArgumentError(f"{path!r} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise ArgumentError(f"{path!r} must hold a JSON object.")
    return manifest


def _check_files(files, argument, directory):
    if not files:
        raise ArgumentError(
            f"The manifest of {argument} {directory!r} lists no shards."
        )
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise ArgumentError(
            f"The manifest of {argument} {directory!r} lists {len(missing)} "
            f"shard(s) that are missing, e.g. {missing[0]!r}."
        )
