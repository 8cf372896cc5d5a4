"""The on-disk format of image-caption training data: TFRecord shards.

A dataset is a directory holding the shards of one split and a
`manifest.json` that describes them:

```
data/scenes/train/
    manifest.json
    skipped.jsonl
    train-00000-of-00010.tfrecord
    ...
    train-00009-of-00010.tfrecord
```

Each record is a `tf.train.Example` with three bytes features: `"image"`, an
encoded JPEG or PNG file, `"caption"`, UTF-8 text, and `"key"`, the
identifier of the example in its source. `write_shards` validates every
example before writing it, counts the ones it skips by reason in the
manifest and lists them in `skipped.jsonl`, one JSON object per line:

```
{"key": "cat.png", "reason": "empty_caption", "where": "captions.jsonl:7"}
{"key": "00003.tar", "reason": "unreadable_tar", "where": "web/00003.tar",
 "detail": "unexpected end of data; kept the 412 example(s) before; ..."}
```

(`"where"` and `"detail"` only when known; the second object is on one
line in the file). `read_shards` reads the records back as a
`tf.data.Dataset`, and fails naming the shard when one is truncated.

Writes are atomic: shards and the list of skipped examples are written
under temporary names and renamed when every example has been written, and
the manifest is written last (`keras_aimv2.outputs.write_json_atomically`).
A directory with a `manifest.json` is therefore always a complete dataset.
"""

import datetime
import io
import json
import os
import secrets

import tensorflow as tf
from PIL import Image

from keras_aimv2.data.sources import SkippedExample
from keras_aimv2.outputs import Progress
from keras_aimv2.outputs import write_json_atomically

FORMAT = "keras_aimv2.shards"
VERSION = 1
MANIFEST_NAME = "manifest.json"
SKIPPED_NAME = "skipped.jsonl"
FEATURES = ("image", "caption", "key")

# Formats stored as they are. Pillow reads multi-picture JPEGs from phones
# as "MPO"; their bytes are a valid JPEG whose first picture decoders read.
_KEPT_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}
_TEMPORARY_MARK = ".partial-"
_REBUILD_ADVICE = (
    "Rebuild the split (`aimv2 build-dataset ... --overwrite`) or restore "
    "the file from a copy."
)


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

    Every example is checked before it is written. It is skipped when its
    image is `None` (`"missing_image"`) or does not decode completely
    (`"undecodable_image"`; truncated files included), or when its caption
    is `None` (`"missing_caption"`), neither text nor bytes
    (`"caption_not_string"`), not UTF-8 (`"undecodable_caption"`) or empty
    or only whitespace (`"empty_caption"`). A `SkippedExample` that a source
    yields for what it could not read is skipped with its own reason. Every
    skipped example is counted under its reason in the manifest and listed
    in `skipped.jsonl` beside it, with its key, reason, and where it comes
    from when the example says so. JPEG and PNG files are stored byte for
    byte; images in any other format Pillow reads (BMP, GIF, WebP, TIFF,
    ...) are converted to PNG, keeping their first frame, so that a reader
    only ever meets JPEG and PNG. Captions are stored with surrounding
    whitespace removed.

    Args:
        examples: iterable of `(key, image_bytes, caption)` or `(key,
            image_bytes, caption, where)` tuples, or of
            `keras_aimv2.data.sources.SkippedExample`s. `key` is a str or
            bytes, `image_bytes` the encoded image file or `None`, `caption`
            a str, UTF-8 bytes or `None`, and `where` a str saying where the
            example comes from, e.g. `"captions.jsonl:12"`.
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
        image_formats = _write_examples(examples, writer, verbose)
    except BaseException:
        writer.abort()
        raise
    skipped = writer.skipped
    if writer.num_examples == 0:
        writer.abort()
        example = ""
        if writer.first_skipped is not None:
            example = f"; the first: {_describe(writer.first_skipped)}"
        raise ValueError(
            f"No valid examples to write to {output_dir!r}: the examples "
            f"were empty or all skipped ({_format_counts(skipped) or 'none'})"
            f"{example}."
        )
    manifest = {
        "format": f"{FORMAT}/{VERSION}",
        "split": split,
        "source": source,
        "num_examples": writer.num_examples,
        "shards": writer.publish(overwrite),
        "skipped": dict(sorted(skipped.items())),
        "skipped_examples": SKIPPED_NAME,
        "image_formats": dict(sorted(image_formats.items())),
        "parameters": {
            "examples_per_shard": examples_per_shard,
            **(metadata or {}),
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
    }
    write_json_atomically(
        os.path.join(output_dir, MANIFEST_NAME),
        manifest,
        # Named as the dataset's other temporary files, which a later
        # write removes if this one is interrupted.
        temporary=f"{MANIFEST_NAME}{_TEMPORARY_MARK}{secrets.token_hex(4)}",
        allow_nan=True,
    )
    if verbose:
        print(summary_line(manifest))
    return manifest


def _write_examples(examples, writer, verbose):
    """Write the valid examples and list the skipped ones; count image
    formats."""
    progress = Progress("write_shards", "examples", enabled=verbose)
    image_formats = {}
    for example in examples:
        record, image_format, skipped = _validate(example)
        if skipped is None:
            writer.write(record)
            image_formats[image_format] = image_formats.get(image_format, 0) + 1
        else:
            writer.skip(skipped)
        progress.update(
            writer.num_examples + writer.num_skipped,
            written=writer.num_examples,
            skipped=writer.num_skipped,
        )
    writer.close()
    return image_formats


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

    The manifest is checked: its shards must be files of `directory`, named
    without a folder, so that a manifest never makes a reader open a file
    elsewhere (`"../other/x.tfrecord"`, an absolute path).

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
            "`aimv2 build-dataset` (an interrupted build leaves none)."
        )
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}") from None
    _check_format(path, manifest)
    _check_shard_entries(path, manifest)
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
    files = _check_shard_files(directory, manifest["shards"])
    counts = [entry["num_examples"] for entry in manifest["shards"]]
    shards = tf.data.Dataset.from_tensor_slices(
        (files, tf.constant(counts, tf.int64))
    )
    if not shuffle_files or len(files) < 2:
        records = shards.flat_map(_shard_records)
    else:
        records = shards.shuffle(
            len(files), seed=seed, reshuffle_each_iteration=True
        ).interleave(
            _shard_records,
            cycle_length=min(len(files), 16),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    # The manifest's count makes the size known downstream (Keras then
    # knows how many batches an evaluation has).
    records = records.apply(
        tf.data.experimental.assert_cardinality(sum(counts))
    )
    return records.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)


def _check_shard_files(directory, entries):
    """Return the paths of the shards; raise if one is missing or has not
    the size the manifest records."""
    files = [os.path.join(directory, entry["file"]) for entry in entries]
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"The manifest of {directory!r} lists {len(missing)} shard(s) "
            f"that are missing, e.g. {missing[0]!r}. {_REBUILD_ADVICE}"
        )
    for path, entry in zip(files, entries, strict=True):
        # Manifests of older versions record no size.
        size = entry.get("bytes")
        if size is not None and os.path.getsize(path) != size:
            raise ValueError(
                f"The shard {path!r} has {os.path.getsize(path)} bytes, but "
                f"the manifest of {directory!r} records {size}: it is "
                f"truncated or was changed. {_REBUILD_ADVICE}"
            )
    return files


def _shard_records(path, num_records):
    """The records of one shard; an error naming it if it ends early.

    TensorFlow reports a truncated or corrupt record with a `DataLossError`
    that does not name the file. The shard is read up to its first bad
    record instead, and an assertion on the number of records read raises
    an error that names the shard once it ends.
    """
    records = tf.data.TFRecordDataset(path).ignore_errors()
    end = tf.data.Dataset.from_tensors((tf.constant(b""), True))
    flagged = records.map(lambda record: (record, False)).concatenate(end)

    def check(index, item):
        record, is_end = item
        complete = tf.logical_or(
            tf.logical_not(is_end), tf.equal(index, num_records)
        )
        message = tf.strings.join(
            [
                "The shard ",
                path,
                " is truncated or corrupt: ",
                tf.strings.as_string(index),
                " of its ",
                tf.strings.as_string(num_records),
                f" records could be read. {_REBUILD_ADVICE}",
            ]
        )
        with tf.control_dependencies(
            [tf.debugging.Assert(complete, [message])]
        ):
            return tf.identity(record), is_end

    return (
        flagged.enumerate()
        .map(check)
        .filter(lambda record, is_end: tf.logical_not(is_end))
        .map(lambda record, is_end: record)
    )


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
    """Return `(serialized record, format, None)` or `(None, None, skipped)`
    with a `SkippedExample`."""
    if isinstance(example, SkippedExample):
        return None, None, example
    if not isinstance(example, (tuple, list)) or len(example) not in (3, 4):
        raise ValueError(
            "Each example must be a `(key, image_bytes, caption)` or `(key, "
            "image_bytes, caption, where)` tuple, or a SkippedExample. "
            f"Received: {example!r:.200}"
        )
    key, image, caption, where = (*example, None)[:4]
    if image is None:
        return None, None, SkippedExample(key, "missing_image", where)
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"The image of example {key!r} must be the bytes of an encoded "
            f"image file or None. Received a {type(image).__name__}."
        )
    image, image_format = _checked_image(image)
    if image is None:
        return None, None, SkippedExample(key, "undecodable_image", where)
    caption, reason = _checked_caption(caption)
    if reason is not None:
        return None, None, SkippedExample(key, reason, where)
    if not isinstance(key, bytes):
        key = str(key).encode("utf-8", "backslashreplace")
    return _serialize(image, caption, key), image_format, None


def _checked_caption(caption):
    """Return `(UTF-8 bytes, None)` of a valid caption, `(None, reason)` if
    not."""
    if caption is None:
        return None, "missing_caption"
    if isinstance(caption, (bytes, bytearray)):
        try:
            caption = bytes(caption).decode("utf-8")
        except UnicodeDecodeError:
            return None, "undecodable_caption"
    elif not isinstance(caption, str):
        return None, "caption_not_string"
    caption = caption.strip()
    if not caption:
        return None, "empty_caption"
    try:
        # Text decoded with errors="surrogateescape" keeps bytes that are
        # not UTF-8 as lone surrogates, which do not encode.
        return caption.encode("utf-8"), None
    except UnicodeEncodeError:
        return None, "undecodable_caption"


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
    """Writes records into shards, and skipped examples into their list,
    under temporary names until published."""

    def __init__(self, directory, split, examples_per_shard):
        self.directory = directory
        self.split = split
        self.examples_per_shard = examples_per_shard
        self.token = secrets.token_hex(4)
        self.counts = []
        self.writer = None
        self.num_examples = 0
        self.skipped = {}
        self.num_skipped = 0
        self.first_skipped = None
        self.skipped_file = None

    def _temporary_path(self, index):
        name = f".{self.split}-{index:05d}.tfrecord{_TEMPORARY_MARK}"
        return os.path.join(self.directory, name + self.token)

    def _temporary_skipped_path(self):
        name = f".{SKIPPED_NAME}{_TEMPORARY_MARK}{self.token}"
        return os.path.join(self.directory, name)

    def write(self, record):
        if self.writer is None:
            path = self._temporary_path(len(self.counts))
            self.writer = tf.io.TFRecordWriter(path)
            self.counts.append(0)
        self.writer.write(record)
        self.counts[-1] += 1
        self.num_examples += 1
        if self.counts[-1] == self.examples_per_shard:
            self.writer.close()
            self.writer = None

    def skip(self, skipped):
        """Count a `SkippedExample` under its reason and list it."""
        if self.skipped_file is None:
            self.skipped_file = open(
                self._temporary_skipped_path(), "w", encoding="utf-8"
            )
        self.skipped[skipped.reason] = self.skipped.get(skipped.reason, 0) + 1
        self.num_skipped += 1
        if self.first_skipped is None:
            self.first_skipped = skipped
        self.skipped_file.write(json.dumps(_skipped_record(skipped)) + "\n")

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.skipped_file is not None:
            self.skipped_file.close()

    def abort(self):
        self.close()
        paths = [self._temporary_path(i) for i in range(len(self.counts))]
        for path in [*paths, self._temporary_skipped_path()]:
            if os.path.exists(path):
                os.remove(path)

    def publish(self, overwrite):
        """Rename the shards and the list of skipped examples to their
        final names; return the list of shards."""
        if overwrite:
            _remove_dataset_files(self.directory, keep_token=self.token)
        shards = []
        for index, count in enumerate(self.counts):
            name = shard_name(self.split, index, len(self.counts))
            path = os.path.join(self.directory, name)
            os.replace(self._temporary_path(index), path)
            shards.append(
                {
                    "file": name,
                    "num_examples": count,
                    "bytes": os.path.getsize(path),
                }
            )
        skipped_path = os.path.join(self.directory, SKIPPED_NAME)
        if self.skipped_file is None:
            open(skipped_path, "w", encoding="utf-8").close()
        else:
            os.replace(self._temporary_skipped_path(), skipped_path)
        return shards


def _skipped_record(skipped):
    """The JSON object of a `SkippedExample` in the list of skipped
    examples."""
    key = skipped.key
    if isinstance(key, (bytes, bytearray)):
        key = bytes(key).decode("utf-8", "backslashreplace")
    record = {"key": None if key is None else str(key)}
    record["reason"] = skipped.reason
    for field in ("where", "detail"):
        value = getattr(skipped, field)
        if value is not None:
            record[field] = str(value)
    return record


def _describe(skipped):
    """One skipped example in words, for error messages."""
    record = _skipped_record(skipped)
    where = f" at {record['where']}" if "where" in record else ""
    detail = f" ({record['detail']})" if "detail" in record else ""
    return f"{record['key']!r}{where}: {record['reason']}{detail}"


def _remove_dataset_files(directory, keep_token):
    """Remove a previous dataset: its manifest first, then its shards and
    list of skipped examples."""
    manifest = os.path.join(directory, MANIFEST_NAME)
    if os.path.exists(manifest):
        os.remove(manifest)
    for name in os.listdir(directory):
        is_shard = name.endswith(".tfrecord") or name == SKIPPED_NAME
        is_leftover = _TEMPORARY_MARK in name and not name.endswith(keep_token)
        if is_shard or is_leftover:
            os.remove(os.path.join(directory, name))


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


def _check_shard_entries(path, manifest):
    """Raise unless the manifest lists its shards as file names of its own
    directory with their number of examples."""
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not isinstance(
        manifest.get("split"), str
    ):
        raise ValueError(
            f"{path!r} must hold a 'split' name and a 'shards' list, as "
            "`write_shards` writes them."
        )
    for entry in shards:
        name = entry.get("file") if isinstance(entry, dict) else None
        if (
            not isinstance(name, str)
            or name in ("", os.curdir, os.pardir)
            or os.path.basename(name) != name
            or (os.altsep is not None and os.altsep in name)
        ):
            raise ValueError(
                f"{path!r} lists the shard {entry!r:.200}, which is not a "
                "file of the dataset directory: a shard's 'file' must be a "
                "file name without a folder, such as "
                f"{shard_name('train', 0, 1)!r}. Refusing to read files "
                "outside the dataset directory."
            )
        for field in ("num_examples", "bytes"):
            value = entry.get(field)
            optional = field == "bytes" and value is None
            if not optional and (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < 0
            ):
                raise ValueError(
                    f"{path!r} lists the shard {name!r} with {field}="
                    f"{value!r}; expected a non-negative int."
                )


def _format_counts(counts):
    return ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))
