"""What the package writes as it works: files, progress and run directories.

Three helpers, each the only one of its kind in the package:

- `atomic_path` and `write_json_atomically`: a file is written under a
  temporary name beside its final one, flushed to disk and renamed into
  place, so that a reader (or a run resumed after a kill) finds the old
  file or the new one, whole, never a torn one. A write that fails removes
  its temporary file and leaves the old file as it was.
- `Progress` (and `FitProgress`, its `fit` callback): the progress of a
  long loop (shards written, captions read, training steps) as a plain
  line every few seconds on stderr, with the rate and the time left.
- `RunOutput`: the output directory of an `aimv2 pretrain` or `aimv2
  probe` run: created on demand, with the recipe it ran (`recipe.json`),
  its results (`metrics.json`), both written atomically, and its log lines.
"""

import contextlib
import json
import math
import os
import sys
import time

import keras

# Temporary files of atomic writes start with this (hidden), unless the
# writer names them otherwise.
WRITING_PREFIX = ".writing-"
RECIPE_NAME = "recipe.json"
METRICS_NAME = "metrics.json"
# Seconds between two progress lines.
PROGRESS_SECONDS = 10.0


# === Atomic writes ===


@contextlib.contextmanager
def atomic_path(path, temporary=None):
    """A temporary path to write `path` through, renamed into place after.

    The body of the `with` block writes the file at the path it is given;
    when the block ends without an error, the file is flushed to disk and
    renamed to `path` (replacing the old file in one step), then the
    directory entry is flushed too. When the block raises, the temporary
    file is removed and `path` is left as it was.

    Args:
        path: str or path. The file to write.
        temporary: str or `None`. The name of the temporary file, in the
            directory of `path` (so that the rename stays on one file
            system). Defaults to `None`: `.writing-` and the name of `path`.

    Yields:
        str. The path to write.

    Example:

    >>> with atomic_path("model.weights.h5") as temporary:  # doctest: +SKIP
    ...     model.save_weights(temporary)
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or os.curdir
    name = temporary or f"{WRITING_PREFIX}{os.path.basename(path)}"
    if os.path.basename(name) != name:
        raise ValueError(
            "`temporary` must be a file name without a folder (it is "
            f"written beside {path!r}). Received: temporary={temporary!r}"
        )
    temporary_path = os.path.join(directory, name)
    try:
        yield temporary_path
        _fsync_file(temporary_path)
    except BaseException:
        _remove_quietly(temporary_path)
        raise
    os.replace(temporary_path, path)
    _fsync_directory(directory)


def write_json_atomically(path, value, temporary=None, allow_nan=False):
    """Write `value` as indented JSON to `path`, atomically (`atomic_path`).

    Args:
        path: str or path. The file to write.
        value: a JSON-serializable value.
        temporary: str or `None`. The temporary file's name (see
            `atomic_path`). Defaults to `None`.
        allow_nan: bool. Whether NaN and infinities may be written (as
            JSON's non-standard `NaN`, `Infinity`). Defaults to `False`:
            such a value raises a `ValueError` and nothing is written.
    """
    with atomic_path(path, temporary) as temporary_path:
        with open(temporary_path, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=2, allow_nan=allow_nan)
            file.write("\n")


def _fsync_file(path):
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _fsync_directory(directory):
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # A platform without directory descriptors.
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# === Progress ===


class Progress:
    """Progress of a long loop: one line every `every` seconds.

    Each line gives the count done (of the total, when known), the rate,
    the time left (with a total) and the details given to `update`:

        [write_shards] 12000 examples: written 11998, skipped 2; 812/s

    Nothing is printed for a loop shorter than `every` seconds, unless
    `finish` is called. Lines go to stderr, flushed, so that they appear
    in order with other output and never mix with a command's results on
    stdout.

    Args:
        name: str. Who reports, shown in brackets.
        unit: str. What is counted, e.g. `"examples"` or `"steps"`.
        total: int or `None`. The count at the end, if known. Defaults to
            `None`.
        start: int. The count already done before this process started
            (a resumed run); the rate counts only this process's work.
            Defaults to `0`.
        every: float or `None`. Seconds between two lines. Defaults to
            `None`: `PROGRESS_SECONDS` (10).
        enabled: bool. `False` prints nothing. Defaults to `True`.
        stream: a text file or `None`. Defaults to `None`: `sys.stderr` at
            the time of printing.
    """

    def __init__(
        self,
        name,
        unit,
        total=None,
        start=0,
        every=None,
        enabled=True,
        stream=None,
    ):
        self.name = name
        self.unit = unit
        self.total = total
        self.start = start
        self.every = PROGRESS_SECONDS if every is None else every
        self.enabled = enabled
        self.stream = stream
        self.started = time.monotonic()
        self.last = self.started

    def update(self, done, **details):
        """Report `done` units (and `details`) if a line is due."""
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every:
            return
        self.last = now
        self._print(done, details, now)

    def finish(self, done, **details):
        """Report `done` units (and `details`) now."""
        if self.enabled:
            self.last = time.monotonic()
            self._print(done, details, self.last)

    def line(self, done, details, now=None):
        """The text of a progress line, without the trailing newline."""
        now = time.monotonic() if now is None else now
        count = f"{done}/{self.total}" if self.total else f"{done}"
        text = f"[{self.name}] {count} {self.unit}"
        if details:
            text += ": " + ", ".join(
                f"{key} {_format_value(value)}"
                for key, value in details.items()
            )
        elapsed = now - self.started
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            text += f"; {_format_rate(rate)} {self.unit}/s"
            if self.total and done < self.total:
                left = (self.total - done) / rate
                text += f", {_format_duration(left)} left"
        return text

    def _print(self, done, details, now):
        stream = self.stream or sys.stderr
        print(self.line(done, details, now), file=stream, flush=True)


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _format_rate(rate):
    return f"{rate:.3g}" if rate < 100 else f"{rate:.0f}"


def _format_duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class FitProgress(keras.callbacks.Callback):
    """The progress of `fit` as `Progress` lines, in optimizer steps.

    Use it with `fit(..., verbose=0)`: it replaces Keras' progress bar with
    the package's one display. `verbose=1` prints a line every few seconds
    (the step, the epoch's running losses, the rate and the time left) and
    one at the end of each epoch (with the validation losses);
    `verbose=2` prints only the epoch lines; `verbose=0` nothing.

    Args:
        name: str. Who reports, e.g. `"pretrain"`.
        steps: int. The steps (optimizer updates) of the whole run.
        verbose: int. `0`, `1` or `2`, as above. Defaults to `1`.
        first_step: int. Steps done before this `fit` (a resumed run).
            Defaults to `0`.
        batches_per_step: int. Batches per optimizer update (gradient
            accumulation). Defaults to `1`.
        every: float or `None`. Seconds between two lines within an
            epoch. Defaults to `None`: `PROGRESS_SECONDS` (10).
    """

    def __init__(
        self,
        name,
        steps,
        verbose=1,
        first_step=0,
        batches_per_step=1,
        every=None,
    ):
        super().__init__()
        if verbose not in (0, 1, 2):
            raise ValueError(
                f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}"
            )
        self.verbose = verbose
        self.batches_per_step = batches_per_step
        self.batches = first_step * batches_per_step
        self.epochs = None
        self.progress = Progress(
            name,
            "steps",
            total=steps,
            start=first_step,
            every=every,
            enabled=verbose > 0,
        )

    @property
    def step(self):
        return self.batches // self.batches_per_step

    def set_params(self, params):
        super().set_params(params)
        self.epochs = (params or {}).get("epochs")

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.verbose == 1:
            due = time.monotonic() - self.progress.last >= self.progress.every
            if due:
                self.progress.update(self.step, **_numbers(logs))

    def on_epoch_end(self, epoch, logs=None):
        epochs = f"/{self.epochs}" if self.epochs else ""
        self.progress.finish(
            self.step, epoch=f"{epoch + 1}{epochs}", **_numbers(logs)
        )


def _numbers(logs):
    """The scalar entries of Keras logs, as floats (computed values are
    fetched from the device only here, when a line is printed)."""
    numbers = {}
    for key, value in (logs or {}).items():
        try:
            numbers[key] = float(keras.ops.convert_to_numpy(value))
        except (TypeError, ValueError):
            continue
    return numbers


# === A run's output directory ===


def log(name, message):
    """Print a log line of `name` (`"[pretrain] message"`) on stdout."""
    print(f"[{name}] {message}", flush=True)


class RunOutput:
    """The output directory of a run, and what every run writes in it.

    `aimv2 pretrain` and `aimv2 probe` both record the recipe they ran in
    `recipe.json` (a plain JSON of all its values) when they start, and
    their results in `metrics.json` when they end; both files are written
    atomically, so that an interrupted run never leaves a torn one. Log
    lines name the command.

    Args:
        directory: str or path. The run's output directory.
        name: str. The command, shown in log lines (`"pretrain"`).

    Example:

    >>> output = RunOutput("runs/probe", "probe").create()  # doctest: +SKIP
    >>> output.write_recipe(recipe)  # doctest: +SKIP
    >>> output.log("training")  # doctest: +SKIP
    [probe] training
    """

    def __init__(self, directory, name):
        self.directory = os.fspath(directory)
        self.name = name

    def path(self, *names):
        """A path inside the directory."""
        return os.path.join(self.directory, *names)

    def create(self):
        """Create the directory (and its parents) if needed; return self."""
        os.makedirs(self.directory, exist_ok=True)
        return self

    def write_recipe(self, recipe):
        """Write `recipe.json`: the recipe's values (a typed recipe of
        `keras_aimv2.recipes`, or a dict), as plain JSON."""
        values = recipe.to_dict() if hasattr(recipe, "to_dict") else recipe
        values = json.loads(json.dumps(values, default=str))
        write_json_atomically(self.path(RECIPE_NAME), values)
        return self.path(RECIPE_NAME)

    def write_metrics(self, metrics):
        """Write `metrics.json`; a value that is not finite is refused."""
        write_json_atomically(self.path(METRICS_NAME), metrics)
        return self.path(METRICS_NAME)

    def read_recipe(self):
        """The values of `recipe.json` as a dict, or `None` if absent."""
        path = self.path(RECIPE_NAME)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as file:
            return json.load(file)

    def log(self, message):
        """Print a log line of this run."""
        log(self.name, message)
