"""The on-disk format of image-caption training data: TFRecord shards.

A dataset is a directory holding the shards of one split and a
`manifest.json` that describes them:

```
data/scenes/train/
    manifest.json
    train-00000-of-00010.tfrecord
    ...
    train-00009-of-00010.tfrecord
```

Each record is a `tf.train.Example` with three bytes features: `"image"`, an
encoded JPEG or PNG file, `"caption"`, UTF-8 text, and `"key"`, the
identifier of the example in its source. `write_shards` validates every
example before writing it and counts the ones it skips by reason;
`read_shards` reads the records back as a `tf.data.Dataset`.

Writes are atomic: shards are written under temporary names and renamed
when every example has been written, and the manifest is written last. A
directory with a `manifest.json` is therefore always a complete dataset.
"""

import datetime
import io
import json
import os
import secrets
import sys
import time

import tensorflow as tf
from PIL import Image

FORMAT = "keras_aimv2.shards"
VERSION = 1
MANIFEST_NAME = "manifest.json"
FEATURES = ("image", "caption", "key")

# Formats stored as they are. Pillow reads multi-picture JPEGs from phones
# as "MPO"; their bytes are a valid JPEG whose first picture decoders read.
_KEPT_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}
_TEMPORARY_MARK = ".partial-"
_PROGRESS_SECONDS = 10.0


def shard_name(split, index, count):
    """Return the file name of shard `index` of `count` of a split.

    Args:
        split: str. Name of the split, e.g. `"train"`.
        index: int. Zero-based index of the shard.
        count: int. Number of shards in the split.

    Returns:
        The file name, e.g. `"train-00003-of-00010.tfrecord"`.
    """
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def write_shards(
    examples,
    output_dir,
    examples_per_shard=1000,
    split="train",
    source="unknown",
    metadata=None,
    overwrite=False,
    verbose=True,
):
    """Validate image-caption examples and write them as TFRecord shards.

    Every example is checked before it is written. It is skipped, and
    counted under its reason in the manifest, when its image is `None`
    (`"missing_image"`) or does not decode completely
    (`"undecodable_image"`; truncated files included), or when its caption
    is `None` (`"missing_caption"`), is not UTF-8 (`"undecodable_caption"`)
    or is empty or only whitespace (`"empty_caption"`). JPEG and PNG files
    are stored byte for byte; images in any other format Pillow reads (BMP,
    GIF, WebP, TIFF, ...) are converted to PNG, keeping their first frame,
    so that a reader only ever meets JPEG and PNG. Captions are stored with
    surrounding whitespace removed.

    Args:
        examples: iterable of `(key, image_bytes, caption)` tuples. `key` is a
            str or bytes, `image_bytes` the encoded image file or `None`, and
            `caption` a str, UTF-8 bytes or `None`.
        output_dir: str or path. Directory of the dataset; created if needed.
            It must be empty or absent unless `overwrite` is set.
        examples_per_shard: int. Number of examples in every shard but the
            last. Defaults to `1000`.
        split: str. Name of the split, the prefix of the shard file names.
            Defaults to `"train"`.
        source: str. Description of where the examples come from, recorded in
            the manifest. Defaults to `"unknown"`.
        metadata: dict or `None`. Parameters of the build (seed, image size,
            ...), recorded in the manifest; must be JSON serializable.
            Defaults to `None`.
        overwrite: bool. Whether to replace the dataset already in
            `output_dir`. Its files are removed only once the new shards are
            complete; other files in the directory are left alone. Defaults
            to `False`.
        verbose: bool. Whether to print progress to stderr and a summary line
            to stdout. Defaults to `True`.

    Returns:
        The manifest, as a dict.
    """
    _check_write_arguments(examples_per_shard, split, metadata)
    output_dir = os.fspath(output_dir)
    _prepare_output_dir(output_dir, overwrite)
    writer = _ShardWriter(output_dir, split, examples_per_shard)
    try:
        skipped, image_formats = _write_examples(examples, writer, verbose)
    except BaseException:
        writer.abort()
        raise
    if writer.num_examples == 0:
        writer.abort()
        raise ValueError(
            f"No valid examples to write to {output_dir!r}: the examples "
            f"were empty or all skipped ({_format_counts(skipped) or 'none'})."
        )
    manifest = {
        "format": f"{FORMAT}/{VERSION}",
        "split": split,
        "source": source,
        "num_examples": writer.num_examples,
        "shards": writer.publish(overwrite),
        "skipped": dict(sorted(skipped.items())),
        "image_formats": dict(sorted(image_formats.items())),
        "parameters": {
            "examples_per_shard": examples_per_shard,
            **(metadata or {}),
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
    }
    _write_json_atomically(os.path.join(output_dir, MANIFEST_NAME), manifest)
    if verbose:
        print(summary_line(manifest))
    return manifest


def _write_examples(examples, writer, verbose):
    """Write the valid examples; count skipped ones and image formats."""
    progress = _Progress(verbose)
    skipped, image_formats = {}, {}
    for example in examples:
        record, reason, image_format = _validate(example)
        if reason is None:
            writer.write(record)
            image_formats[image_format] = image_formats.get(image_format, 0) + 1
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
        progress.update(writer.num_examples, sum(skipped.values()))
    writer.close()
    return skipped, image_formats


def summary_line(manifest):
    """Return a one-line summary of a dataset from its manifest.

    Args:
        manifest: dict. A manifest, as returned by `read_manifest`.

    Returns:
        A str such as `"wrote 4998 examples in 5 shards; skipped 2
        (empty_caption: 1, undecodable_image: 1)"`.
    """
    skipped = manifest["skipped"]
    num_shards = len(manifest["shards"])
    line = (
        f"wrote {manifest['num_examples']} examples in {num_shards} "
        f"shard{'' if num_shards == 1 else 's'}; skipped "
        f"{sum(skipped.values())}"
    )
    if skipped:
        line += f" ({_format_counts(skipped)})"
    return line


def read_manifest(directory):
    """Read the manifest of a dataset directory.

    Args:
        directory: str or path. A directory written by `write_shards`.

    Returns:
        The manifest, as a dict.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Dataset directory {directory!r} does not exist."
        )
    if not os.path.isfile(path):
        raise ValueError(
            f"{directory!r} is not a dataset directory: it has no "
            f"{MANIFEST_NAME}. Write one with `write_shards` or "
            "`tools/build_dataset.py` (an interrupted build leaves none)."
        )
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}") from None
    _check_format(path, manifest)
    return manifest


def read_shards(directory, split="train", shuffle_files=False, seed=None):
    """Read the examples of a dataset directory as a `tf.data.Dataset`.

    With `shuffle_files=False` the examples come in the order they were
    written. With `shuffle_files=True` the order of the shards is shuffled
    anew on every iteration and records of several shards are interleaved;
    the order is still reproducible when `seed` is set.

    Args:
        directory: str or path. A directory written by `write_shards`.
        split: str. The split to read; must be the split of the directory.
            Defaults to `"train"`.
        shuffle_files: bool. Whether to shuffle and interleave the shards.
            Defaults to `False`.
        seed: int or `None`. Seed of the shard shuffle. Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of dicts with `tf.string` scalars `"image"` (the
        encoded JPEG or PNG file), `"caption"` and `"key"`.
    """
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    if manifest["split"] != split:
        raise ValueError(
            f"`split` is {split!r}, but {directory!r} holds the split "
            f"{manifest['split']!r}. Pass split={manifest['split']!r}."
        )
    files = [os.path.join(directory, s["file"]) for s in manifest["shards"]]
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"The manifest of {directory!r} lists {len(missing)} shard(s) "
            f"that are missing, e.g. {missing[0]!r}."
        )
    if not shuffle_files or len(files) < 2:
        records = tf.data.TFRecordDataset(files)
    else:
        records = (
            tf.data.Dataset.from_tensor_slices(files)
            .shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
            .interleave(
                tf.data.TFRecordDataset,
                cycle_length=min(len(files), 16),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        )
    return records.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)


_FEATURE_SPEC = {
    name: tf.io.FixedLenFeature([], tf.string) for name in FEATURES
}


def _parse(record):
    return tf.io.parse_single_example(record, _FEATURE_SPEC)


def _check_write_arguments(examples_per_shard, split, metadata):
    if (
        not isinstance(examples_per_shard, int)
        or isinstance(examples_per_shard, bool)
        or examples_per_shard < 1
    ):
        raise ValueError(
            "`examples_per_shard` must be a positive int. Received: "
            f"examples_per_shard={examples_per_shard!r}"
        )
    if not isinstance(split, str) or not split or not split.isidentifier():
        raise ValueError(
            "`split` must be a non-empty name of letters, digits and "
            f"underscores, such as 'train'. Received: split={split!r}"
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(
            f"`metadata` must be a dict or None. Received: {metadata!r}"
        )
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise ValueError(
            f"`metadata` must be JSON serializable: {error}"
        ) from None


def _prepare_output_dir(output_dir, overwrite):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(
            f"`output_dir` {output_dir!r} exists and is not a directory."
        )
    os.makedirs(output_dir, exist_ok=True)
    if os.listdir(output_dir) and not overwrite:
        raise FileExistsError(
            f"`output_dir` {output_dir!r} is not empty. Choose another "
            "directory, or pass overwrite=True (--overwrite) to replace the "
            "dataset in it."
        )


def _validate(example):
    """Return `(serialized record, None, format)` or `(None, reason, None)`."""
    try:
        key, image, caption = example
    except (TypeError, ValueError):
        raise ValueError(
            "Each example must be a `(key, image_bytes, caption)` tuple. "
            f"Received: {example!r:.200}"
        ) from None
    if image is None:
        return None, "missing_image", None
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"The image of example {key!r} must be the bytes of an encoded "
            f"image file or None. Received a {type(image).__name__}."
        )
    image, image_format = _checked_image(image)
    if image is None:
        return None, "undecodable_image", None
    if caption is None:
        return None, "missing_caption", None
    if isinstance(caption, bytes):
        try:
            caption = caption.decode("utf-8")
        except UnicodeDecodeError:
            return None, "undecodable_caption", None
    caption = caption.strip()
    if not caption:
        return None, "empty_caption", None
    if not isinstance(key, bytes):
        key = str(key).encode("utf-8")
    record = _serialize(image, caption.encode("utf-8"), key)
    return record, None, image_format


def _checked_image(data):
    """Return `(bytes, format)` of a decodable image, `(None, None)` if not."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            # `verify` checks little of a JPEG; a full decode finds
            # truncated and corrupt image data.
            image.load()
            image_format = _KEPT_FORMATS.get(image.format)
            if image_format is None:
                return _to_png(image), "PNG"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None, None
    return bytes(data), image_format


def _to_png(image):
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        "transparency" in image.info
    )
    image = image.convert("RGBA" if has_alpha else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _serialize(image, caption, key):
    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": feature(image),
                "caption": feature(caption),
                "key": feature(key),
            }
        )
    )
    return example.SerializeToString()


class _ShardWriter:
    """Writes records into shards under temporary names until published."""

    def __init__(self, directory, split, examples_per_shard):
        self.directory = directory
        self.split = split
        self.examples_per_shard = examples_per_shard
        self.token = secrets.token_hex(4)
        self.counts = []
        self.writer = None
        self.num_examples = 0

    def _temporary_path(self, index):
        name = f".{self.split}-{index:05d}.tfrecord{_TEMPORARY_MARK}"
        return os.path.join(self.directory, name + self.token)

    def write(self, record):
        if self.writer is None:
            path = self._temporary_path(len(self.counts))
            self.writer = tf.io.TFRecordWriter(path)
            self.counts.append(0)
        self.writer.write(record)
        self.counts[-1] += 1
        self.num_examples += 1
        if self.counts[-1] == self.examples_per_shard:
            self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self):
        self.close()
        for index in range(len(self.counts)):
            path = self._temporary_path(index)
            if os.path.exists(path):
                os.remove(path)

    def publish(self, overwrite):
        """Rename the shards to their final names; return their list."""
        if overwrite:
            _remove_dataset_files(self.directory, keep_token=self.token)
        shards = []
        for index, count in enumerate(self.counts):
            name = shard_name(self.split, index, len(self.counts))
            os.replace(
                self._temporary_path(index),
                os.path.join(self.directory, name),
            )
            shards.append({"file": name, "num_examples": count})
        return shards


def _remove_dataset_files(directory, keep_token):
    """Remove a previous dataset: its manifest first, then its shards."""
    manifest = os.path.join(directory, MANIFEST_NAME)
    if os.path.exists(manifest):
        os.remove(manifest)
    for name in os.listdir(directory):
        is_shard = name.endswith(".tfrecord")
        is_leftover = _TEMPORARY_MARK in name and not name.endswith(keep_token)
        if is_shard or is_leftover:
            os.remove(os.path.join(directory, name))


def _write_json_atomically(path, value):
    temporary = f"{path}{_TEMPORARY_MARK}{secrets.token_hex(4)}"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2)
        file.write("\n")
    os.replace(temporary, path)


def _check_format(path, manifest):
    found = manifest.get("format") if isinstance(manifest, dict) else None
    name, _, version = str(found).partition("/")
    if name != FORMAT:
        raise ValueError(
            f"{path!r} is not a manifest of {FORMAT!r} shards. Found format "
            f"{found!r}."
        )
    if not version.isdigit() or int(version) > VERSION:
        raise ValueError(
            f"{path!r} has format version {version!r}; this version of "
            f"keras_aimv2 reads versions up to {VERSION}."
        )


def _format_counts(counts):
    return ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))


class _Progress:
    """Prints the number of examples done to stderr every few seconds."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = self.start

    def update(self, written, skipped):
        now = time.monotonic()
        if not self.enabled or now - self.last < _PROGRESS_SECONDS:
            return
        self.last = now
        rate = (written + skipped) / (now - self.start)
        print(
            f"{written} examples written, {skipped} skipped "
            f"({rate:.0f} examples/s)",
            file=sys.stderr,
            flush=True,
        )
