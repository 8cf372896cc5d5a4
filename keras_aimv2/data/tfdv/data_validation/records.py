"""Read the raw features of every record of a dataset's shards."""

import sys
import time

import tensorflow as tf
from google.protobuf.message import DecodeError

RAW_FEATURES = ("image", "caption", "key")
PROGRESS_SECONDS = 10.0


class DataError(RuntimeError):
    """The shards cannot be read: a file is corrupt or not of Examples."""


def read_records(dataset, label="examples"):
    """Yield the raw features of every record of a dataset, shard by shard.

    A feature that is absent, empty or not a bytes list (the training
    pipeline cannot parse it as one) comes back as `None`, so that a
    malformed example shows as one with a missing feature.

    Args:
        dataset: `Dataset`. The shards to read.
        label: str. What to call the records in progress messages.

    Yields:
        A dict with the keys `"image"`, `"caption"` and `"key"`, each the
        first value of the feature (bytes) or `None`.

    Raises:
        DataError: if a shard is not a readable TFRecord file of
            `tf.train.Example` records.
    """
    progress = Progress(label)
    for path in dataset.files:
        for index, record in enumerate(_records(path)):
            yield _raw_features(record, path, index)
            progress.update()
    progress.finish()


def _records(path):
    try:
        yield from tf.data.TFRecordDataset(path).as_numpy_iterator()
    except tf.errors.OpError as error:
        raise DataError(
            f"Shard {path!r} is not a readable TFRecord file: {error.message}"
        ) from None


def _raw_features(record, path, index):
    try:
        example = tf.train.Example.FromString(record)
    except DecodeError:
        raise DataError(
            f"Record {index} of shard {path!r} is not a serialized "
            "tf.train.Example."
        ) from None
    features = example.features.feature
    values = {}
    for name in RAW_FEATURES:
        feature = features.get(name)
        is_bytes = feature is not None and (
            feature.WhichOneof("kind") == "bytes_list"
        )
        found = is_bytes and len(feature.bytes_list.value) > 0
        values[name] = feature.bytes_list.value[0] if found else None
    return values


class Progress:
    """Prints how many records were read to stderr every few seconds.

    Args:
        label: str. What to call the records.
    """

    def __init__(self, label):
        self.label = label
        self.count = 0
        self.start = time.monotonic()
        self.last = self.start

    def update(self):
        """Count one record; print progress when it is time."""
        self.count += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self._print(now)

    def finish(self):
        """Print the final count."""
        self._print(time.monotonic())

    def _print(self, now):
        rate = self.count / max(now - self.start, 1e-9)
        print(
            f"read {self.count} {self.label} ({rate:.0f}/s)",
            file=sys.stderr,
            flush=True,
        )
