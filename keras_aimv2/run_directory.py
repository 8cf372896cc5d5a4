"""A pre-training run as a transaction on its output directory.

A long run must never lose work nor train on the wrong data. Its output
directory belongs to one run at a time and to one recipe:

- `RunLock`: a lock file names the process that runs there; a second run
  is refused, and a lock left by a killed process is taken over.
- `check_origin` and `record_origin`: the data shards, the tokenizer and
  the training state record the recipe entries they were built from; a
  rerun whose recipe changed any of them is refused, listing the
  differences and the two ways out (`RecipeMismatchError`).
- `TrainingState`: the resumable state (weights and optimizer), written
  only from finite weights, atomically (`keras_aimv2.outputs.atomic_path`:
  a temporary file renamed into place), so that a kill at any moment
  leaves the previous or the new state whole.
- `StopRequests` and `RunGuard`: SIGINT or SIGTERM asks the run to stop
  after the current step (a second one stops at once); a non-finite loss
  or weight stops it with a `DivergenceError`; the planned step ends it.

Every failure is a `RunError` with a message saying what to do and the
exit status of the `aimv2` command.
"""

import json
import math
import os
import signal
import socket
import threading
import time

import keras

from keras_aimv2.outputs import WRITING_PREFIX
from keras_aimv2.outputs import atomic_path
from keras_aimv2.outputs import write_json_atomically

LOCK_NAME = ".lock"
ORIGIN_NAME = "origin.json"
STATE_NAME = "state.json"
STATE_PREFIX = "state-"
# Before Keras 3's BackupAndRestore was replaced by `TrainingState`.
LEGACY_WEIGHTS = "latest.weights.h5"


class RunError(RuntimeError):
    """A run that cannot go on; `exit_status` is the command's status."""

    exit_status = 1


class RunDirectoryError(RunError):
    """The output directory cannot host this run as it is."""


class RecipeMismatchError(RunDirectoryError):
    """Something in the output directory was built from another recipe."""


class DivergenceError(RunError):
    """The loss or the weights stopped being finite."""


class RunStopped(RunError):
    """A signal asked the run to stop; it saved what it could first."""

    def __init__(self, signum, message=None):
        self.signum = signum
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(message or f"stopped by {name}")


# === The lock ===


class RunLock:
    """The lock of a run directory: one run at a time.

    `acquire` creates `.lock` atomically, holding the process id and host;
    if it exists and names a process of this host that no longer runs (a
    run killed without releasing it), the lock is taken over. `release`
    removes it. Use it as a context manager.

    Args:
        directory: str. The run's output (or work) directory.

    Example:

    >>> with RunLock("runs/tiny"):
    ...     ...  # train
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_NAME)
        self.held = False

    def acquire(self):
        os.makedirs(self.directory, exist_ok=True)
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(3):
            try:
                descriptor = os.open(
                    self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644
                )
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # It vanished, or it was stale and removed.
                raise RunDirectoryError(
                    f"{self.directory} is in use by process {holder['pid']} "
                    f"on {holder['host']} (since {holder['started']}): "
                    "only one run may write to an output directory. Wait "
                    "for it to end, stop it, or choose another "
                    f"--output-dir. If that process is gone, delete "
                    f"{self.path}."
                ) from None
            with os.fdopen(descriptor, "w") as file:
                json.dump(mine, file)
            self.held = True
            return self
        raise RunDirectoryError(
            f"Could not take the lock {self.path}: it keeps appearing. "
            "Another run is starting in this directory."
        )

    def _holder(self):
        """The live holder of the lock, or `None` after removing a stale
        one (its process is gone) or finding none."""
        try:
            with open(self.path, encoding="utf-8") as file:
                holder = json.load(file)
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # Being written right now, or left empty by a killed process.
            if time.time() - _mtime(self.path) < 10:
                return {"pid": "?", "host": "?", "started": "just now"}
            pid, host = None, socket.gethostname()
        if host == socket.gethostname() and not _process_alive(pid):
            _remove(self.path)
            return None
        return {"pid": pid, "host": host, "started": holder.get("started")}

    def release(self):
        if self.held:
            _remove(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _process_alive(pid):
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Another user's process.
    return True


def _mtime(path):
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# === What each artefact was built from ===


def recipe_entries(recipe, sections, keys=None):
    """Entries `section.key` of `recipe`, JSON-normalized, for an origin.

    Every entry of a typed section is listed, those its recipe file left to
    their defaults included. Origins recorded before recipes were typed
    list only the entries the file gave; `check_origin` reads an entry
    absent from a record as `None`, the default of every entry added
    since, so that such records still match.

    Args:
        recipe: `keras_aimv2.recipes.Recipe`. The recipe.
        sections: iterable of str. Sections taken whole.
        keys: iterable of str or `None`. Further single entries, as
            `"section.key"`. Defaults to `None`.
    """
    values = recipe.to_dict()
    entries = {}
    for section in sections:
        for key, value in values[section].items():
            entries[f"{section}.{key}"] = value
    for dotted in keys or ():
        section, key = dotted.split(".", 1)
        entries[dotted] = values[section][key]
    return json.loads(json.dumps(entries, default=str))


def origin_path(artefact):
    """Where the origin of `artefact` is kept: inside a directory (a path
    without an extension), beside a file."""
    artefact = os.fspath(artefact).rstrip(os.sep)
    if os.path.isdir(artefact) or not os.path.splitext(artefact)[1]:
        return os.path.join(artefact, ORIGIN_NAME)
    return f"{artefact}.{ORIGIN_NAME}"


def record_origin(artefact, entries):
    """Record that `artefact` was built from `entries` (atomically)."""
    write_json_atomically(origin_path(artefact), {"entries": entries})


def check_origin(artefact, entries, what, rebuild_entry):
    """Refuse `artefact` if it was built from other recipe entries.

    Args:
        artefact: str. A directory or file that `record_origin` described.
        entries: dict. The entries of this run's recipe it depends on.
        what: str. What the artefact is, for the message.
        rebuild_entry: str. The `--set` that allows rebuilding it.

    Returns:
        `True` if it was built from `entries`, `None` if it records no
        origin (built before origins were recorded, or not by this
        package).

    Raises:
        RecipeMismatchError: listing each differing entry.
    """
    path = origin_path(artefact)
    if not os.path.isfile(path):
        return None
    recorded = _read_json(path, what)["entries"]
    differences = [
        f"  {key}: {json.dumps(recorded.get(key))} (built) -> "
        f"{json.dumps(entries.get(key))} (this recipe)"
        for key in sorted(set(recorded) | set(entries))
        if recorded.get(key) != entries.get(key)
    ]
    if not differences:
        return True
    raise RecipeMismatchError(
        f"The {what} in {artefact} was built from another recipe:\n"
        + "\n".join(differences)
        + "\nEither run in a new --output-dir, or rerun with "
        f"--set {rebuild_entry}=True to rebuild what these entries change "
        "(and start training again where the model or its data change)."
    )


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise RunDirectoryError(
            f"{path}, the record of the {what}, cannot be read ({error}). "
            "Delete it (and what it describes) to rebuild, or run in a new "
            "--output-dir."
        ) from None


# === Finite values ===


def non_finite_variables(variables):
    """Paths of the variables holding NaN or an infinity (each checked
    where it lives; only one flag per variable comes back)."""
    floating = [v for v in variables if "float" in str(v.dtype)]
    flags = [keras.ops.all(keras.ops.isfinite(v.value)) for v in floating]
    return [
        variable.path
        for variable, finite in zip(floating, flags, strict=True)
        if not bool(keras.ops.convert_to_numpy(finite))
    ]


def check_finite(model, when):
    """Raise a `DivergenceError` if any weight of `model` is not finite.

    Args:
        model: `keras.Model`.
        when: str. When the weights were checked, for the message.
    """
    found = non_finite_variables(model.weights)
    if found:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise DivergenceError(
            f"The weights are not finite {when} ({len(found)} variables: "
            f"{shown}); nothing was saved from them."
        )


# === The training state ===


class TrainingState:
    """The resumable state of a run: weights and optimizer, kept atomically.

    `save` writes `state-NNNNNNNNN.weights.h5` (the optimizer's step in
    the name) through a temporary file renamed into place, then points
    `state.json` at it the same way, then removes older states: killed at
    any moment, the directory holds the previous state or the new one,
    whole. Weights that are not finite are never saved.

    Args:
        directory: str. The backup directory of the run.
        origin: dict. The recipe entries the state depends on (model,
            tokenizer, data, optimizer structure), recorded with it
            (`record_origin`) for `check_origin`.
    """

    def __init__(self, directory, origin):
        self.directory = os.fspath(directory)
        self.origin = origin
        self.pointer = os.path.join(self.directory, STATE_NAME)

    def load(self, model):
        """Restore `model`'s weights and optimizer; the optimizer's step.

        Returns:
            The number of batches trained (the optimizer's iterations), or
            `None` when there is no state yet.
        """
        self._remove_leftovers(keep=None)
        if os.path.isfile(self.pointer):
            name = _read_json(self.pointer, "training state")["weights"]
        elif os.path.isfile(os.path.join(self.directory, LEGACY_WEIGHTS)):
            name = LEGACY_WEIGHTS
        else:
            return None
        path = os.path.join(self.directory, name)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except Exception as error:  # h5py, shape or missing-file errors.
            raise RunDirectoryError(
                f"The training state {path} cannot be read "
                f"({type(error).__name__}: {str(error)[:300]}). Delete "
                f"{self.directory} to start training again from the "
                "beginning (the data and tokenizer are kept), or run in a "
                "new --output-dir."
            ) from None
        return int(keras.ops.convert_to_numpy(model.optimizer.iterations))

    def save(self, model, batches, when):
        """Save `model` after `batches` batches, if its weights are finite.

        Raises:
            DivergenceError: if a weight is not finite (nothing is written).
        """
        check_finite(model, when)
        os.makedirs(self.directory, exist_ok=True)
        name = f"{STATE_PREFIX}{batches:09d}.weights.h5"
        with atomic_path(os.path.join(self.directory, name)) as temporary:
            model.save_weights(temporary, overwrite=True)
        record_origin(self.directory, self.origin)
        write_json_atomically(
            self.pointer, {"weights": name, "batches": batches}
        )
        self._remove_leftovers(keep=name)

    def _remove_leftovers(self, keep):
        """Remove interrupted writes and, after a save, older states."""
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            old_state = keep is not None and (
                (name.startswith(STATE_PREFIX) and name != keep)
                or name == LEGACY_WEIGHTS
            )
            if name.startswith(WRITING_PREFIX) or old_state:
                _remove(os.path.join(self.directory, name))


# === Stopping ===


class StopRequests:
    """SIGINT and SIGTERM, turned into a request to stop between steps.

    Inside the `with` block the first signal only records the request
    (`RunGuard` acts on it after the current step, and `check` raises it
    at other points); a second one stops the process at once, calling
    `on_abort` first. Outside the main thread nothing is installed.

    Args:
        log: callable. Prints a message. Defaults to `print`.
        on_abort: callable or `None`. Called before exiting at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, log=print, on_abort=None):
        self.log = log
        self.on_abort = on_abort
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            self.log(
                f"{name}: stopping after this step, saving the training "
                "state first; send it again to stop at once"
            )
            return
        self.log(f"{name} again: stopping at once")
        if self.on_abort is not None:
            self.on_abort()
        os._exit(128 + signum)

    def check(self):
        """Raise `RunStopped` if a stop was asked for."""
        if self.signum is not None:
            raise RunStopped(self.signum)


class RunGuard(keras.callbacks.Callback):
    """Watches a training run between steps.

    After every training step it stops the run with a `DivergenceError`
    when the loss is not finite (naming the step and the last finite
    loss), with `RunStopped` when a stop was asked for, and gracefully when
    the planned number of batches is reached. After every evaluation step
    it honours stop requests too. At the end of every epoch it saves the
    `TrainingState` (which refuses non-finite weights).

    Args:
        stops: `StopRequests`.
        state: `TrainingState`.
        first_batch: int. Batches trained before this `fit`.
        last_batch: int. Batches to train in all.
        batches_per_update: int. Gradient accumulation steps, to name
            steps in updates.
    """

    def __init__(
        self, stops, state, first_batch, last_batch, batches_per_update=1
    ):
        super().__init__()
        self.stops = stops
        self.state = state
        self.batches = first_batch
        self.last_batch = last_batch
        self.batches_per_update = batches_per_update
        self.last_finite = None

    @property
    def step(self):
        """Optimizer updates done."""
        return self.batches // self.batches_per_update

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        loss = (logs or {}).get("loss")
        if loss is not None:
            loss = float(keras.ops.convert_to_numpy(loss))
            if not math.isfinite(loss):
                raise self._diverged(f"The training loss became {loss}")
            self.last_finite = (loss, self.step)
        self.stops.check()
        if self.batches >= self.last_batch:
            self.model.stop_training = True

    def _diverged(self, what):
        last = (
            "no finite loss was seen in this run"
            if self.last_finite is None
            else "the last finite loss was {:.6g} at step {}".format(
                *self.last_finite
            )
        )
        return DivergenceError(
            f"{what} at step {self.step} ({last}). Training stopped; nothing "
            "was saved from the diverged weights, and the last saved "
            "training state is kept: rerun to resume from it, e.g. with a "
            "lower learning rate (--set training.peak_learning_rate=...)."
        )

    def on_test_batch_end(self, batch, logs=None):
        self.stops.check()

    def on_epoch_end(self, epoch, logs=None):
        try:
            self.state.save(self.model, self.batches, f"after step {self.step}")
        except DivergenceError:
            raise self._diverged("The weights stopped being finite") from None
