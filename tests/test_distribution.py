"""Distributed pre-training: every strategy agrees with one device.

The multi-device runs happen in fresh processes of `tools/distributed_check.py`
(virtual devices must be set before a backend starts), on the backend of
this test run; each compares its losses and updated weights with a run of
the same steps on one device. Tolerances: losses to 1e-4 relative; weights
to 1e-5 for 99.9% of the values and, everywhere, to half an AdamW step at
the 1e-3 learning rate (Adam divides by the gradients' root mean square,
so a weight whose gradient is a rounding error apart can move by up to a
step: TensorFlow's sparse embedding gradients show one such value).
"""

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER
from conftest import load_tool
from conftest import make_batch
from conftest import only_on
from conftest import tiny_pretrainer
from conftest import to_numpy

import keras_aimv2
from keras_aimv2 import distribution
from keras_aimv2 import objective
from keras_aimv2.cli import main
from keras_aimv2.models.aimv2_pretrainer_preprocessor import draw_prefix_lengths
from keras_aimv2.training import compile_pretrainer

CHECK = os.path.join(ROOT, "tools", "distributed_check.py")


check_tool = load_tool("distributed_check")
BACKEND = keras.config.backend()
ADAMW_STEP = 1e-3
# A one-process run, then the same steps in two local processes.
TWO_PROCESSES_AND_ONE = (
    "--processes",
    "2",
    "--threads",
    "1",
    "--strategies",
    "none",
    "data_parallel",
)


def distributed_check(tmp_path, *arguments):
    """Run the check in fresh processes; its results by strategy."""
    output = str(tmp_path / "run")
    command = [sys.executable, CHECK, "--backend", BACKEND]
    command += [*arguments, "--output", output]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = {}
    for path in sorted(glob.glob(f"{output}.*.npz")):
        strategy, process = path[len(output) + 1 : -4].split(".")
        results.setdefault(strategy, {})[process] = dict(np.load(path))
    return results


def assert_same_training(single, distributed):
    for key in ("metric/loss", "metric/pixel_loss", "metric/text_loss"):
        np.testing.assert_allclose(distributed[key], single[key], rtol=1e-4)
    weights = [k for k in single if k.startswith("weight/")]
    assert weights and set(weights) <= set(distributed)
    for key in weights:
        difference = np.abs(distributed[key] - single[key])
        assert difference.max() < ADAMW_STEP / 2, key
        assert np.mean(difference > 1e-5) < 1e-3, key


def probe(result):
    """The `--clip-probe` gradients of a run: raw, clipped, clipnorm."""
    gradients = {"raw": {}, "clipped": {}}
    for key, value in result.items():
        kind, _, path = key.partition("/")[2].partition("/")
        if key.startswith("probe/") and kind in gradients:
            gradients[kind][path] = value
    return (
        gradients["raw"],
        gradients["clipped"],
        float(result["probe/clipnorm"]),
    )


def global_norm(gradients):
    return np.sqrt(sum(np.sum(np.square(g)) for g in gradients.values()))


def assert_clipped_as_one_vector(raw, clipped, clipnorm):
    """`clipped` is `raw` scaled by one factor, to the global norm `clipnorm`.

    Per-variable clipping (Keras's `clipnorm`) would leave the variables
    whose own norm is below the threshold unscaled; the check asserts that
    some are, so that it would fail.
    """
    norm = global_norm(raw)
    assert norm > clipnorm > 0
    scale = clipnorm / norm
    assert set(clipped) == set(raw)
    unclipped_alone = 0
    for path, gradient in raw.items():
        own = np.linalg.norm(gradient)
        error = np.linalg.norm(clipped[path] - scale * gradient)
        assert error <= 1e-3 * scale * own + 1e-6, path
        if 0.01 * clipnorm < own < clipnorm:
            # Per-variable clipping would have kept this one whole.
            unclipped_alone += 1
            assert np.linalg.norm(clipped[path] - gradient) > 100 * error
    assert unclipped_alone >= 3
    assert global_norm(clipped) == pytest.approx(clipnorm, rel=1e-3)


def assert_same_gradients(single, distributed):
    """The gradient a strategy applied is the one device's, the global one."""
    assert set(distributed) == set(single)
    for path, gradient in single.items():
        error = np.linalg.norm(distributed[path] - gradient)
        assert error <= 1e-4 * np.linalg.norm(gradient) + 1e-6, path


def assert_clipping_matches_one_device(single, distributed):
    raw, clipped, clipnorm = probe(distributed)
    assert_clipped_as_one_vector(raw, clipped, clipnorm)
    assert_same_gradients(probe(single)[0], raw)


TRAINING = {
    "steps": 2,
    "warmup_steps": 1,
    "peak_learning_rate": 1e-3,
    "final_learning_rate": 1e-5,
    "weight_decay": 1e-4,
    "clipnorm": 1.0,
    "gradient_accumulation_steps": 1,
}


# === Multi-device runs, one per backend ===


@only_on("jax")
def test_jax_data_parallel_and_sharded_on_8_devices_match_one(tmp_path):
    results = distributed_check(
        tmp_path,
        "--cpu-devices",
        "8",
        "--strategies",
        "none",
        "data_parallel",
        "sharded",
        "--mesh-shape",
        "1,8",
        "--clip-probe",
    )
    single = results["none"]["process0"]
    parallel = results["data_parallel"]["process0"]
    sharded = results["sharded"]["process0"]
    assert int(parallel["num_replicas"]) == 8
    assert_same_training(single, parallel)
    assert_same_training(single, sharded)
    assert_clipped_as_one_vector(*probe(single))
    assert_clipping_matches_one_device(single, parallel)
    assert_clipping_matches_one_device(single, sharded)
    # Under "sharded" each device holds 1/8 of every weight of the layout
    # map, and all of the others (norm scales, biases, BOS).
    shares = {
        k[len("share/") :]: float(v)
        for k, v in sharded.items()
        if k.startswith("share/")
    }
    for path, share in shares.items():
        expected = 1 / 8 if distribution.sharded_axis(path) is not None else 1
        assert share == pytest.approx(expected), path
    assert sum(v == pytest.approx(1 / 8) for v in shares.values()) >= 20
    # The layout's accounting matches the bytes the first device holds,
    # weights and AdamW moments, here and replicated.
    for run in (sharded, parallel):
        np.testing.assert_array_equal(run["bytes/held"], run["bytes/expected"])
    assert sharded["bytes/held"][0] < parallel["bytes/held"][0] / 4


@only_on("jax")
def test_jax_two_processes_through_keras_distribution_initialize(tmp_path):
    results = distributed_check(
        tmp_path,
        *TWO_PROCESSES_AND_ONE,
    )
    processes = results["data_parallel"]
    assert set(processes) == {"process0", "process1"}
    assert all(int(p["process_count"]) == 2 for p in processes.values())
    # Process 0 reads the weights, gathered from both, in its local copy.
    assert_same_training(results["none"]["process0"], processes["process0"])
    np.testing.assert_allclose(
        processes["process1"]["metric/loss"],
        processes["process0"]["metric/loss"],
    )


@only_on("tensorflow")
def test_tensorflow_mirrored_strategy_on_4_devices_matches_one(tmp_path):
    results = distributed_check(
        tmp_path,
        "--cpu-devices",
        "4",
        "--strategies",
        "none",
        "data_parallel",
        "--clip-probe",
    )
    single = results["none"]["process0"]
    parallel = results["data_parallel"]["process0"]
    assert int(parallel["num_replicas"]) == 4
    assert_same_training(single, parallel)
    assert_clipping_matches_one_device(single, parallel)


@only_on("torch")
def test_torch_ddp_with_two_gloo_processes_matches_one(tmp_path):
    results = distributed_check(
        tmp_path, *TWO_PROCESSES_AND_ONE, "--clip-probe"
    )
    single = results["none"]["process0"]
    for process in ("process0", "process1"):
        assert int(results["data_parallel"][process]["process_count"]) == 2
        assert_same_training(single, results["data_parallel"][process])
        assert_clipping_matches_one_device(
            single, results["data_parallel"][process]
        )


def _small_pretrain(tmp_path, *extra, environment=None, launcher=()):
    """`aimv2 pretrain` of a small tiny_scenes_cpu in fresh processes."""
    from test_cli import RECIPE
    from test_cli import SMALL

    output = str(tmp_path / "run")
    command = [*launcher] or [sys.executable]
    command += ["-m", "keras_aimv2.cli", "pretrain", RECIPE, *extra]
    command += ["--output-dir", output, "--set", *SMALL]
    command += ["data.train_examples=32", "training.steps=2"]
    command += ["training.steps_per_epoch=2"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", **(environment or {}))
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=environment
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert os.path.isdir(os.path.join(output, "preset", "pretrainer"))
    metrics = os.path.join(output, "metrics.json")
    with open(metrics) as file:
        assert json.load(file)["steps"] == 2
    return output, completed.stdout


@only_on("jax")
def test_pretrain_sharded_over_two_jax_devices(tmp_path):
    flags = "--xla_force_host_platform_device_count=2"
    _, stdout = _small_pretrain(
        tmp_path,
        "--strategy",
        "sharded",
        "--mesh-shape",
        "1,2",
        environment={"XLA_FLAGS": flags},
    )
    assert "strategy 'sharded', 1 replica(s), mesh (1, 2)" in stdout


@only_on("tensorflow")
def test_pretrain_under_mirrored_strategy(tmp_path):
    _, stdout = _small_pretrain(tmp_path, "--strategy", "data_parallel")
    assert "strategy 'data_parallel', 1 replica(s)" in stdout


@only_on("torch")
def test_torchrun_pretrain_writes_presets_from_process_0(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    launcher += ["--nproc-per-node=2", f"--master-port={_free_port()}"]
    output, stdout = _small_pretrain(
        tmp_path, "--strategy", "data_parallel", launcher=launcher
    )
    other = os.path.join(output, "processes", "1")
    assert os.path.isdir(os.path.join(other, "backup"))
    assert not os.path.exists(os.path.join(output, "processes", "0"))
    # Process 1 built the same data and tokenizer in its own folder.
    for name in ("tokenizer.model", "data/train/manifest.json"):
        with open(os.path.join(output, name), "rb") as mine:
            with open(os.path.join(other, name), "rb") as theirs:
                assert mine.read() == theirs.read(), name
    assert "process 0 of 2" in stdout and "process 1 of 2" in stdout


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# === Mixed precision and gradient accumulation, in this process ===


def _train(steps, batch_size, batches, dtype="float32", accumulation=1):
    keras.utils.set_random_seed(0)
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE, dtype=dtype)
    pretrainer = keras_aimv2.AIMV2Pretrainer(backbone, **TINY_DECODER)
    compile_pretrainer(
        pretrainer, {**TRAINING, "gradient_accumulation_steps": accumulation}
    )
    losses = []
    for step in range(steps):
        start = step * batch_size
        batch = {k: v[start : start + batch_size] for k, v in batches.items()}
        logs = pretrainer.train_on_batch(batch, return_dict=True)
        losses.append(logs["loss"])
    return pretrainer, np.array(losses)


def test_mixed_bfloat16_trains_close_to_float32_with_float32_losses():
    batches = make_batch(12, seed=3)
    _, float32 = _train(3, 4, batches)
    pretrainer, bfloat16 = _train(3, 4, batches, dtype="mixed_bfloat16")
    assert pretrainer.backbone.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in pretrainer.trainable_weights)
    outputs = pretrainer(make_batch(2), training=False)
    assert keras.backend.standardize_dtype(
        outputs["pixel_predictions"].dtype
    ) == ("bfloat16")
    loss = pretrainer.compute_loss(
        make_batch(2), y_pred=outputs, training=False
    )
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    np.testing.assert_allclose(bfloat16, float32, rtol=2e-2)
    assert not np.allclose(bfloat16, float32, rtol=1e-6)


def test_gradient_accumulation_matches_one_batch_of_twice_the_size():
    # Full captions and fixed prefixes: every half-batch counts as many
    # tokens and patches, so the mean of two halves is the whole's mean.
    full = [TINY_DECODER["context_length"]] * 8
    batches = make_batch(8, seed=4, num_real_tokens=full)
    batches["prefix_lengths"] = np.full((8,), 3, "int32")
    whole, _ = _train(1, 8, batches)
    halves, _ = _train(2, 4, batches, accumulation=2)
    assert int(to_numpy(halves.optimizer.iterations)) == 1
    for a, b in zip(
        whole.trainable_weights, halves.trainable_weights, strict=True
    ):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), atol=1e-6)


def _probe(batches, batch_size=None):
    """Arguments of `applied_gradient(s)`: the tiny model over `batches`."""

    def new_pretrainer(optimizer):
        pretrainer = check_tool.seeded_pretrainer(
            TINY_BACKBONE, TINY_DECODER, "float32"
        )
        pretrainer.compile(optimizer=optimizer)
        return pretrainer

    def one_update(pretrainer):
        size = batch_size or len(batches["images"])
        for start in range(0, len(batches["images"]), size):
            pretrainer.train_on_batch(
                {k: v[start : start + size] for k, v in batches.items()}
            )

    return new_pretrainer, one_update


def test_clipping_scales_the_global_gradient_as_one_vector():
    gradients = check_tool.applied_gradients(*_probe(make_batch(4, seed=5)))
    assert_clipped_as_one_vector(*gradients)


def test_the_accumulated_gradient_of_an_update_is_clipped_once():
    # Full captions and fixed prefixes: the update's gradient is the mean
    # of the halves' and the whole batch's. Clipping each half (their
    # gradients are not parallel) would give an update of a smaller norm.
    full = [TINY_DECODER["context_length"]] * 8
    batches = make_batch(8, seed=6, num_real_tokens=full)
    batches["prefix_lengths"] = np.full((8,), 3, "int32")
    raw, clipped, clipnorm = check_tool.applied_gradients(
        *_probe(batches, batch_size=4), gradient_accumulation_steps=2
    )
    assert_clipped_as_one_vector(raw, clipped, clipnorm)
    assert_same_gradients(check_tool.applied_gradient(*_probe(batches)), raw)


# === The pieces ===


def test_replicas_draw_the_prefixes_of_their_own_examples():
    # Drawn per example, a replica's slice of a global batch draws what the
    # whole batch draws for those examples: no replica arithmetic needed.
    batch = make_batch(8, seed=7)
    captions = tf.constant([f"caption {i}" for i in range(8)])
    whole = draw_prefix_lengths(batch["images"], captions, 16, seed=5)
    halves = [
        draw_prefix_lengths(
            batch["images"][i : i + 4], captions[i : i + 4], 16, seed=5
        )
        for i in (0, 4)
    ]
    np.testing.assert_array_equal(np.concatenate(halves), whole.numpy())
    assert not np.array_equal(halves[0], halves[1])


def test_layout_map_covers_the_large_weights_and_nothing_else():
    pretrainer = tiny_pretrainer()
    axes = {
        v.path: distribution.sharded_axis(v.path) for v in pretrainer.weights
    }
    for path, axis in axes.items():
        large = path.endswith(("kernel", "embeddings", "position_embedding"))
        assert (axis is not None) == large, path
    # Every pattern names weights that exist.
    import re

    for pattern in distribution.SHARDED_WEIGHTS:
        assert any(re.fullmatch(pattern, path) for path in axes), pattern
    # The split axis is a width, never the vocabulary or the patch size.
    widths = {64, 128}
    for variable in pretrainer.weights:
        axis = axes[variable.path]
        if axis is not None:
            assert variable.shape[axis] in widths, variable.path


def test_per_device_bytes_counts_weights_and_adamw_moments():
    real = tiny_pretrainer()
    replicated = distribution.per_device_bytes(real)
    sharded = distribution.per_device_bytes(real, "sharded", (2, 4))
    assert replicated["optimizer"] == 2 * replicated["parameters"]
    assert replicated["parameters"] == 4 * sum(
        int(np.prod(v.shape)) for v in real.weights
    )
    assert sharded["parameters"] < replicated["parameters"] / 3
    assert distribution.per_device_bytes(real, "data_parallel") == replicated
    if BACKEND == "torch":
        # The same from a model that holds no memory.
        with keras.device("meta"):
            abstract = tiny_pretrainer()
        assert abstract.weights[0].value.device.type == "meta"
        for strategy, mesh in (("none", None), ("sharded", (2, 4))):
            assert distribution.per_device_bytes(
                abstract, strategy, mesh
            ) == distribution.per_device_bytes(real, strategy, mesh)


def test_bad_strategies_and_meshes_are_clear_errors():
    with pytest.raises(ValueError, match="strategy.*'none'.*Received.*'ddp'"):
        distribution.setup("ddp")
    with pytest.raises(ValueError, match="two positive ints"):
        distribution.check_strategy("sharded", (8,))
    with pytest.raises(ValueError, match="strategy='sharded' only"):
        distribution.check_strategy("data_parallel", (2, 4))
    with pytest.raises(ValueError, match="hidden_dim.*divide by 3"):
        distribution.check_shardable({"hidden_dim": 64}, 3)
    if BACKEND != "jax":
        with pytest.raises(ValueError, match="JAX only"):
            distribution.setup("sharded")


@only_on("tensorflow")
def test_several_tensorflow_workers_are_refused_under_keras_3_15_1(
    monkeypatch,
):
    workers = ["localhost:1", "localhost:2"]
    config = {"cluster": {"worker": workers}, "task": {"index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    if keras.version() == "3.15.1":
        with pytest.raises(ValueError, match="JAX or PyTorch"):
            distribution.setup("data_parallel")


def test_one_device_runs_are_untouched_by_the_distribution_code():
    distributed = distribution.setup("none")
    assert distributed.num_replicas == 1 and distributed.is_chief
    assert distribution.replica() == (0, 1)
    dataset = object()
    assert distributed.distribute_dataset(dataset) is dataset
    pretrainer = tiny_pretrainer()
    assert distributed.wrap(pretrainer) is pretrainer
    assert type(pretrainer.batch_means) is objective.BatchMeans
    assert distributed.local_copy(pretrainer) is pretrainer


def test_cli_strategy_flags_set_the_recipe(capsys):
    arguments = ["pretrain", "tiny_scenes_cpu", "--strategy", "data_parallel"]
    assert main(arguments + ["--mesh-shape", "2,4"]) == 2
    assert "strategy='sharded' only" in capsys.readouterr().err
    assert main(["pretrain", "tiny_scenes_cpu", "--mesh-shape", "2,x"]) == 2


@only_on("torch")
def test_memory_table_sums_the_layouts_of_a_meta_device_model():
    table = load_tool("memory_table")
    replicated, sharded = table.memory_rows(["tiny"], [8])
    real = tiny_pretrainer()
    expected = distribution.per_device_bytes(real)
    trainable = 4 * sum(int(np.prod(v.shape)) for v in real.trainable_weights)
    assert replicated["weights_gib"] * table.GIB == expected["parameters"]
    assert replicated["gradients_gib"] * table.GIB == trainable
    assert replicated["adamw_gib"] == 2 * replicated["gradients_gib"]
    assert sharded["strategy"] == "sharded, model axis 8"
    assert 0.12 < sharded["total_gib"] / replicated["total_gib"] < 0.2
    assert "| tiny |" in table.markdown([replicated, sharded])
