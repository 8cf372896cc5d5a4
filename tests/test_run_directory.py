"""A pre-training run is a transaction on its output directory.

Divergence, a second run, a changed recipe, signals, a kill during a write
and a failing `fit` each leave the directory and the model usable. Runs
are the tiny `tiny_scenes_cpu` of `test_cli`; behaviour that does not
depend on the backend is tested in the JAX test process only.
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import make_batch
from conftest import only_on
from conftest import tiny_pretrainer
from conftest import to_numpy
from test_cli import RECIPE
from test_cli import SMALL

from keras_aimv2 import outputs
from keras_aimv2.cli import main
from keras_aimv2.optimization import aimv2_adamw
from keras_aimv2.outputs import FitProgress
from keras_aimv2.outputs import Progress
from keras_aimv2.outputs import RunOutput
from keras_aimv2.outputs import atomic_path
from keras_aimv2.outputs import write_json_atomically
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import load_recipe
from keras_aimv2.recipes import recipe_path
from keras_aimv2.run_directory import RecipeMismatchError
from keras_aimv2.run_directory import RunDirectoryError
from keras_aimv2.run_directory import RunLock
from keras_aimv2.run_directory import RunStopped
from keras_aimv2.run_directory import StopRequests
from keras_aimv2.run_directory import TrainingState
from keras_aimv2.run_directory import check_origin
from keras_aimv2.run_directory import recipe_entries
from keras_aimv2.run_directory import record_origin
from keras_aimv2.training import DATA_ENTRIES
from keras_aimv2.training import REBUILD

BACKEND = keras.config.backend()
TWO_STEPS = ["data.train_examples=32", "training.steps_per_epoch=2"]


def pretrain(output, *overrides, capsys=None):
    """`aimv2 pretrain` in this process; its exit status (and stderr)."""
    arguments = ["pretrain", RECIPE, "--output-dir", str(output), "--set"]
    status = main(arguments + SMALL + TWO_STEPS + list(overrides))
    if capsys is None:
        return status
    return status, capsys.readouterr().err


def written_text(directory):
    """Every JSON and CSV file's text under `directory`."""
    texts = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name.endswith((".json", ".csv")):
                path = os.path.join(root, name)
                with open(path) as file:
                    texts[path] = file.read()
    return texts


def state_batches(output):
    with open(os.path.join(output, "backup", "state.json")) as file:
        return json.load(file)["batches"]


# === Divergence ===


@only_on("jax")
def test_divergence_stops_the_run_and_keeps_the_last_good_state(
    tmp_path, capsys
):
    output = tmp_path / "run"
    # An evaluation split smaller than one evaluation batch is evaluated.
    assert pretrain(output, "training.steps=2", "data.eval_examples=5") == 0
    assert state_batches(output) == 2
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["held_out"]["trained"]["loss"] > 0
    status, error = pretrain(
        output,
        "training.steps=8",
        "training.peak_learning_rate=1e30",
        "data.eval_examples=5",
        capsys=capsys,
    )
    assert status == 1
    assert "stopped being finite" in error or "loss became" in error
    assert "at step" in error and "last finite loss" in error
    assert "peak_learning_rate" in error
    # Nothing was saved from the diverged weights; nothing holds a NaN.
    assert state_batches(output) == 2
    for path, text in written_text(output).items():
        for word in ("NaN", "nan", "Infinity", "inf,"):
            assert word not in text, path
    # A rerun with a sane learning rate resumes from the kept state.
    assert pretrain(output, "training.steps=4", "data.eval_examples=5") == 0
    assert json.loads((output / "metrics.json").read_text())["steps"] == 4


# === One run, one recipe ===


@only_on("jax")
def test_a_second_run_on_a_directory_is_refused(tmp_path, capsys):
    output = tmp_path / "run"
    with RunLock(output):
        status, error = pretrain(output, "training.steps=2", capsys=capsys)
    assert status == 1
    assert f"in use by process {os.getpid()}" in error
    assert not (output / "recipe.json").exists()


@only_on("jax")
def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(child.stdout)
    lock = RunLock(tmp_path)
    with open(lock.path, "w") as file:
        json.dump(
            {"pid": dead, "host": os.uname().nodename, "started": "x"}, file
        )
    with lock:
        with open(lock.path) as file:
            assert json.load(file)["pid"] == os.getpid()
        with pytest.raises(RunDirectoryError, match=str(os.getpid())):
            RunLock(tmp_path).acquire()
    assert not os.path.exists(lock.path)


@only_on("jax")
def test_a_changed_recipe_is_refused_until_rebuild_is_allowed(tmp_path, capsys):
    output = tmp_path / "run"
    assert pretrain(output, "training.steps=2") == 0
    cases = (
        ("data.source=fashion-mnist", "data", "data.source"),
        ("tokenizer.vocabulary_size=50", "tokenizer", "vocabulary_size"),
        ("backbone.hidden_dim=48", "training state", "backbone.hidden_dim"),
    )
    for override, what, entry in cases:
        status, error = pretrain(
            output, "training.steps=4", override, capsys=capsys
        )
        assert status == 1, override
        assert f"The {what} in" in error and entry in error
        assert "new --output-dir" in error
        assert "--set training.rebuild=True" in error
    assert state_batches(output) == 2
    # Allowed, the tokenizer and the training state are built again.
    assert (
        pretrain(
            output,
            "training.steps=2",
            "tokenizer.vocabulary_size=50",
            "training.rebuild=True",
        )
        == 0
    )
    with open(output / "tokenizer.model.origin.json") as file:
        origin = json.load(file)["entries"]
    assert origin["tokenizer.vocabulary_size"] == 50
    assert json.loads((output / "metrics.json").read_text())["steps"] == 2


@only_on("jax")
def test_a_split_without_a_batch_is_refused_before_training(tmp_path, capsys):
    status, error = pretrain(
        tmp_path / "run",
        "training.steps=2",
        "data.train_examples=4",
        capsys=capsys,
    )
    assert status == 1
    assert "holds 4 examples" in error and "training.batch_size=8" in error


# === Interrupts ===


def _start(output, steps=40):
    command = [sys.executable, "-m", "keras_aimv2.cli", "pretrain", RECIPE]
    command += ["--output-dir", str(output), "--set", *SMALL]
    command += ["data.train_examples=64", "training.steps_per_epoch=2"]
    command += [f"training.steps={steps}"]
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, command, env


def _wait_for_training(process, output, epochs=1):
    log = os.path.join(output, "logs", "training.csv")
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if os.path.isfile(log):
            with open(log) as file:
                if len(file.readlines()) > epochs:
                    return
        time.sleep(0.05)
    raise AssertionError("the run did not start training in time")


def _rows(output):
    with open(os.path.join(output, "logs", "training.csv")) as file:
        return len(file.readlines()) - 1


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGINT,
        pytest.param(signal.SIGTERM, marks=only_on("jax")),
    ],
)
def test_a_signal_saves_the_state_stops_and_the_run_resumes(tmp_path, signum):
    output = tmp_path / "run"
    process, command, env = _start(output)
    _wait_for_training(process, output)
    process.send_signal(signum)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stdout[-3000:]
    assert "the training state is saved" in stdout
    stopped_at = state_batches(output)
    assert 2 <= stopped_at < 40
    assert not (output / "metrics.json").exists()
    assert not (output / ".lock").exists()
    resumed_at = stopped_at
    if signum == signal.SIGINT:
        # Resumed, then killed outright after its next epoch's state.
        process, _, _ = _start(output)
        _wait_for_training(process, output, epochs=_rows(output) + 1)
        process.kill()
        process.communicate(timeout=60)
        resumed_at = state_batches(output)
        assert stopped_at < resumed_at < 40, "the run was not killed mid-way"
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert f"resuming at step {resumed_at}" in completed.stdout
    assert json.loads((output / "metrics.json").read_text())["steps"] == 40


@only_on("jax")
def test_a_second_sigint_stops_at_once(monkeypatch):
    class Exited(Exception):
        pass

    def exit_now(status):
        raise Exited(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    # Whatever handler the test process started with (a shell's background
    # job ignores SIGINT) comes back; inside, the run's own is used.
    previous = signal.getsignal(signal.SIGINT)
    messages, aborted = [], []
    requests = StopRequests(
        log=messages.append, on_abort=lambda: aborted.append(True)
    )
    with requests:
        os.kill(os.getpid(), signal.SIGINT)
        # The first request is recorded; the step in progress goes on.
        assert requests.signum == signal.SIGINT and not aborted
        with pytest.raises(RunStopped) as stopped:
            requests.check()
        assert stopped.value.exit_status == 130
        with pytest.raises(Exited) as exited:
            os.kill(os.getpid(), signal.SIGINT)
    assert exited.value.args == (130,)
    assert aborted == [True]
    assert "again: stopping at once" in messages[-1]
    # Outside the block the previous handler is back.
    assert signal.getsignal(signal.SIGINT) is previous


# === The training state on disk ===


def _compiled_pretrainer(seed):
    pretrainer = tiny_pretrainer(seed=seed)
    pretrainer.compile(optimizer=aimv2_adamw(learning_rate=1e-3))
    pretrainer.optimizer.build(pretrainer.trainable_variables)
    return pretrainer


def _weights(model):
    return [to_numpy(v.value).copy() for v in model.weights]


@only_on("jax")
def test_a_kill_between_the_write_and_the_rename_keeps_the_last_state(
    tmp_path, monkeypatch
):
    state = TrainingState(tmp_path / "backup", {"entry": 1})
    first = _compiled_pretrainer(seed=1)
    state.save(first, 2, "after step 2")
    second = _compiled_pretrainer(seed=2)

    def killed(*args):
        raise SystemExit("killed")

    # Killed after the new weights were written, before they were renamed.
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        with pytest.raises(SystemExit):
            state.save(second, 4, "after step 4")
    leftovers = [n for n in os.listdir(state.directory) if n.startswith(".")]
    assert leftovers  # The temporary file of the interrupted write.
    restored = _compiled_pretrainer(seed=3)
    assert state.load(restored) == 0  # The optimizer had not stepped.
    for a, b in zip(_weights(restored), _weights(first), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not [n for n in os.listdir(state.directory) if n.startswith(".")]
    # The next save succeeds and replaces the old state.
    state.save(second, 4, "after step 4")
    assert json.loads(open(state.pointer).read())["batches"] == 4
    assert sorted(os.listdir(state.directory)) == [
        "origin.json",
        "state-000000004.weights.h5",
        "state.json",
    ]
    # A state that cannot be read is named, with what to do.
    path = os.path.join(state.directory, "state-000000004.weights.h5")
    with open(path, "r+b") as file:
        file.truncate(100)
    with pytest.raises(RunDirectoryError, match="Delete") as error:
        state.load(_compiled_pretrainer(seed=3))
    assert path in str(error.value)


# === Origins recorded before recipes were typed ===

# The training state's origin, as `aimv2 pretrain` records it.
STATE_SECTIONS = ("backbone", "decoder", "tokenizer")
STATE_KEYS = DATA_ENTRIES + ("training.gradient_accumulation_steps",)


def _untyped_origin(name):
    """The training state's origin that the previous version recorded for
    packaged recipe `name`: the entries the recipe file gave, with the
    few defaults that version filled in."""
    values = runpy.run_path(recipe_path(name))["RECIPE"]
    values["tokenizer"] = {
        "pad_token": None,
        "remove_punctuation": False,
        **values["tokenizer"],
    }
    values["training"] = {
        "gradient_accumulation_steps": 1,
        **values["training"],
    }
    entries = {
        f"{section}.{key}": value
        for section in STATE_SECTIONS
        for key, value in values[section].items()
    }
    for dotted in STATE_KEYS:
        section, key = dotted.split(".")
        entries[dotted] = values[section].get(key)
    return json.loads(json.dumps(entries))


@pytest.mark.parametrize("name", ["tiny_scenes_cpu", "aimv2_large"])
def test_an_origin_recorded_before_typed_recipes_still_matches(tmp_path, name):
    # A run of the previous version resumes: the typed recipe lists every
    # entry, those its file leaves to their defaults (`None`) included.
    artefact = tmp_path / "backup"
    artefact.mkdir()
    record_origin(artefact, _untyped_origin(name))
    recipe = load_recipe(name)
    entries = recipe_entries(recipe, STATE_SECTIONS, STATE_KEYS)
    assert set(entries) > set(_untyped_origin(name))
    assert check_origin(artefact, entries, "training state", REBUILD) is True
    # A change is still refused.
    changed = apply_overrides(recipe, ["decoder.context_length=12"])
    entries = recipe_entries(changed, STATE_SECTIONS, STATE_KEYS)
    with pytest.raises(RecipeMismatchError, match="decoder.context_length"):
        check_origin(artefact, entries, "training state", REBUILD)


# === Atomic writes, run outputs and progress ===


def test_the_atomic_writer_keeps_the_old_file_when_writing_fails(
    tmp_path, monkeypatch
):
    path = tmp_path / "record.json"
    write_json_atomically(path, {"version": 1})
    assert json.loads(path.read_text()) == {"version": 1}

    def untouched():
        assert json.loads(path.read_text()) == {"version": 1}
        assert sorted(os.listdir(tmp_path)) == ["record.json"]

    # A value JSON refuses, found half-way through the write.
    with pytest.raises(ValueError, match="JSON"):
        write_json_atomically(path, {"version": 2, "loss": float("nan")})
    untouched()
    with pytest.raises(TypeError):
        write_json_atomically(path, {"version": 2, "what": object()})
    untouched()
    # Any failure (or interrupt) while the body writes.
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as temporary:
            with open(temporary, "w") as file:
                file.write('{"version": ')
            raise KeyboardInterrupt
    untouched()
    # Killed after the write, before the rename: the old file is whole, the
    # temporary one waits for its writer's cleanup.
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", lambda *args: sys.exit("killed"))
        with pytest.raises(SystemExit):
            write_json_atomically(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert ".writing-record.json" in os.listdir(tmp_path)
    # A named temporary file, beside the target only.
    write_json_atomically(path, {"version": 3}, temporary="record.partial-x")
    assert json.loads(path.read_text()) == {"version": 3}
    assert not (tmp_path / "record.partial-x").exists()
    with pytest.raises(ValueError, match="without a folder"):
        write_json_atomically(path, {}, temporary="../elsewhere.json")


def test_run_output_writes_the_recipe_and_metrics_atomically(tmp_path):
    output = RunOutput(tmp_path / "run", "probe").create()
    recipe = load_recipe("probe_fashion_mnist")
    path = output.write_recipe(recipe)
    with open(path) as file:
        assert json.load(file) == json.loads(json.dumps(recipe.to_dict()))
    output.write_metrics({"top1": 0.5})
    with pytest.raises(ValueError):
        output.write_metrics({"top1": float("nan")})
    with open(output.path("metrics.json")) as file:
        assert json.load(file) == {"top1": 0.5}
    assert sorted(os.listdir(output.directory)) == [
        "metrics.json",
        "recipe.json",
    ]


def test_progress_lines_give_the_count_rate_and_time_left(capsys):
    progress = Progress("build", "examples", total=100, every=3600)
    progress.update(10, written=9, skipped=1)
    assert capsys.readouterr().err == ""  # Not due yet.
    progress.started -= 10.0  # Ten seconds ago.
    line = progress.line(50, {"written": 49, "skipped": 1})
    assert line == (
        "[build] 50/100 examples: written 49, skipped 1; 5 examples/s, 10s left"
    )
    progress.finish(100, loss=0.123456)
    assert capsys.readouterr().err.startswith(
        "[build] 100/100 examples: loss 0.1235; "
    )
    quiet = Progress("build", "examples", every=0, enabled=False)
    quiet.update(5)
    quiet.finish(5)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("verbose", [1, 2])
def test_fit_progress_reports_steps_and_epochs(verbose, capsys, monkeypatch):
    monkeypatch.setattr(outputs, "PROGRESS_SECONDS", 0.0)
    pretrainer = _compiled_pretrainer(seed=0)
    batch = make_batch(4)
    progress = FitProgress("pretrain", 6, verbose=verbose, first_step=2)
    pretrainer.fit(
        {k: np.concatenate([v, v]) for k, v in batch.items()},
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[progress],
    )
    lines = capsys.readouterr().err.splitlines()
    epochs = [line for line in lines if "epoch" in line]
    assert [line.split(":")[0] for line in epochs] == [
        "[pretrain] 4/6 steps",
        "[pretrain] 6/6 steps",
    ]
    assert "epoch 2/2, loss " in epochs[-1] and "text_loss" in epochs[-1]
    steps = [line for line in lines if "epoch" not in line]
    assert len(steps) == (4 if verbose == 1 else 0)
    with pytest.raises(ValueError, match="verbose=3"):
        FitProgress("pretrain", 6, verbose=3)


# === A failing fit or evaluate keeps the model ===


def test_a_failing_first_batch_keeps_the_model_trainable(tmp_path):
    pretrainer = tiny_pretrainer()
    before = _weights(pretrainer)
    bad = make_batch(4)
    bad["images"] = np.zeros((4, 40, 40, 3), "float32")
    for method in (pretrainer.fit, pretrainer.evaluate):
        with pytest.raises(ValueError, match="32x32"):
            method(bad, verbose=0)
        for a, b in zip(_weights(pretrainer), before, strict=True):
            np.testing.assert_array_equal(a, b)
    pretrainer.save_to_preset(str(tmp_path / "preset"))
    history = pretrainer.fit(make_batch(4), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(_weights(pretrainer), before, strict=True)
    )


# === Evaluation sees every example ===


def test_evaluation_means_are_exact_over_a_padded_last_batch():
    pretrainer = tiny_pretrainer()
    real = make_batch(5, seed=3)
    real["prefix_lengths"] = np.array([1, 4, 8, 12, 15], "int32")
    padding = make_batch(3, seed=4)
    padding["prefix_lengths"] = np.array([2, 2, 2], "int32")
    batch = {k: np.concatenate([real[k], padding[k]]) for k in real}
    weights = np.array([1.0] * 5 + [0.0] * 3, "float32")
    dummy = np.zeros((8,), "float32")
    logs = pretrainer.evaluate(
        batch,
        dummy,
        sample_weight=weights,
        batch_size=8,
        return_dict=True,
        verbose=0,
    )
    # The same five examples one by one, combined by their counts.
    totals = {"pixel_loss": 0.0, "text_loss": 0.0, "text_accuracy": 0.0}
    counts = {"pixel": 0, "text": 0}
    for i in range(5):
        one = {k: v[i : i + 1] for k, v in real.items()}
        values = pretrainer.evaluate(one, return_dict=True, verbose=0)
        pixels = 16 - int(real["prefix_lengths"][i])
        tokens = int(real["padding_mask"][i].sum())
        totals["pixel_loss"] += values["pixel_loss"] * pixels
        totals["text_loss"] += values["text_loss"] * tokens
        totals["text_accuracy"] += values["text_accuracy"] * tokens
        counts["pixel"] += pixels
        counts["text"] += tokens
    expected = {
        "pixel_loss": totals["pixel_loss"] / counts["pixel"],
        "text_loss": totals["text_loss"] / counts["text"],
        "text_accuracy": totals["text_accuracy"] / counts["text"],
    }
    expected["loss"] = expected["text_loss"] + 0.4 * expected["pixel_loss"]
    for key, value in expected.items():
        np.testing.assert_allclose(logs[key], value, rtol=1e-5, err_msg=key)
