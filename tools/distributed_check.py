"""Train the tiny AIMv2 a few steps under each strategy and compare them.

Runs `keras_aimv2.distribution` end to end on whatever devices this
process has (or virtual CPU devices), on fixed synthetic batches, and
writes, per strategy, the losses of every step, the time of every step,
the updated weights and, on JAX, how the weights were laid out; with
`--clip-probe`, also the gradient one update applied, unclipped and clipped
to a quarter of its global norm (`applied_gradients`). The tests and the
scaling benchmark read what it writes.

    # JAX, 8 virtual CPU devices: one device, data parallel, sharded
    python tools/distributed_check.py --backend jax --cpu-devices 8 \\
        --strategies none data_parallel sharded --mesh-shape 2,4 --output r
    # TensorFlow, 4 logical CPU devices under MirroredStrategy
    python tools/distributed_check.py --backend tensorflow --cpu-devices 4 \\
        --strategies none data_parallel --output r
    # 2 local processes (torchrun for PyTorch, keras.distribution.initialize
    # for JAX), after a one-process run
    python tools/distributed_check.py --backend torch --processes 2 \\
        --strategies none data_parallel --output r

Each process writes `OUTPUT.STRATEGY.processN.npz`.
"""

import argparse
import os
import socket
import subprocess
import sys
import time


def _arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow", "torch"))
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["none", "data_parallel"],
        help="Run in this order; with --processes, 'none' runs first in a "
        "process of its own.",
    )
    parser.add_argument("--mesh-shape", help="data,model of 'sharded'")
    parser.add_argument("--steps", type=int, default=3, help="Updates.")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Global batch (default 8, or the recipe's).",
    )
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--dtype-policy", default="float32")
    parser.add_argument(
        "--clip-probe",
        action="store_true",
        help="Also record the gradient of one update, unclipped and clipped "
        "to a quarter of its global norm (`applied_gradients`).",
    )
    parser.add_argument("--remat", action="store_true")
    parser.add_argument(
        "--fixed-prefix",
        action="store_true",
        help="Give every example prefix length 2 and a full caption.",
    )
    parser.add_argument(
        "--recipe",
        help="Take the model and batch size from this recipe (e.g. "
        "tiny_scenes_cpu) instead of the tiny test configuration.",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=0,
        help="Virtual CPU devices (JAX) or logical ones (TensorFlow).",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Start this many local processes (JAX or PyTorch); write it "
        "as `--processes N`.",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--output", required=True, help="Path prefix.")
    return parser.parse_args(argv)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args, argv):
    """Run "none" in one process, then the other strategies in several."""
    index = argv.index("--processes")
    child = argv[:index] + argv[index + 2 :]
    index = child.index("--strategies")
    options = child[:index] + child[index + 1 + len(args.strategies) :]
    codes = []
    if "none" in args.strategies:
        single = [sys.executable, __file__, *options, "--strategies", "none"]
        codes.append(subprocess.run(single).returncode)
    others = [s for s in args.strategies if s != "none"]
    if others:
        options += ["--strategies", *others]
        codes.append(_start_processes(args, options))
    return max(codes)


def _start_processes(args, options):
    port = _free_port()
    if args.backend == "torch":
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={args.processes}",
            f"--master-port={port}",
            __file__,
            *options,
        ]
        return subprocess.run(command).returncode
    if args.backend != "jax":
        raise SystemExit("--processes is for --backend jax or torch")
    processes = []
    for index in range(args.processes):
        env = dict(
            os.environ,
            KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
            KERAS_DISTRIBUTION_NUM_PROCESSES=str(args.processes),
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
        )
        command = [sys.executable, __file__, *options]
        processes.append(subprocess.Popen(command, env=env))
    return max(p.wait() for p in processes)


def _configure_devices(args):
    """Before Keras is imported: the backend, threads, virtual devices."""
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if args.threads:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[name] = str(args.threads)
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if args.cpu_devices:
            flags += (
                f" --xla_force_host_platform_device_count={args.cpu_devices}"
            )
        if args.threads:
            flags += " --xla_cpu_multi_thread_eigen=false"
        os.environ["XLA_FLAGS"] = flags.strip()
        # And JAX's XLA:CPU tuning on a CPU host, as `aimv2 pretrain`.
        from keras_aimv2 import xla_cpu

        xla_cpu.configure()
    if backend == "tensorflow":
        import tensorflow as tf

        if args.cpu_devices:
            (cpu,) = tf.config.list_physical_devices("CPU")
            tf.config.set_logical_device_configuration(
                cpu,
                [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices,
            )
        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if backend == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)


def synthetic_batches(args, batch_size, backbone, decoder):
    """Fixed batches: random images, captions of random length."""
    import numpy as np

    rng = np.random.default_rng(0)
    count = args.steps * batch_size * args.gradient_accumulation_steps
    height, width, channels = backbone["image_shape"]
    length = decoder["context_length"]
    real = rng.integers(2, length + 1, size=count)
    if args.fixed_prefix:
        real[:] = length
    mask = np.arange(length)[None, :] < real[:, None]
    tokens = rng.integers(2, decoder["vocabulary_size"], size=(count, length))
    batches = {
        "images": rng.normal(size=(count, height, width, channels)).astype(
            "float32"
        ),
        "token_ids": np.where(mask, tokens, 0).astype("int32"),
        "padding_mask": mask,
    }
    patch_size = backbone["patch_size"]
    num_patches = (height // patch_size) * (width // patch_size)
    batches["prefix_lengths"] = rng.integers(1, num_patches, count).astype(
        "int32"
    )
    if args.fixed_prefix:
        batches["prefix_lengths"] = np.full((count,), 2, "int32")
    return batches


class StepRecorder:
    """Losses and wall time of every training batch (one batch per epoch)."""

    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(inner, epoch, logs=None):
                inner.started = time.perf_counter()

            def on_epoch_end(inner, epoch, logs=None):
                self.seconds.append(time.perf_counter() - inner.started)
                for key in ("loss", "pixel_loss", "text_loss"):
                    self.values.setdefault(key, []).append(float(logs[key]))

        self.values, self.seconds = {}, []
        self.callback = Callback()


def _model(args):
    """Backbone and decoder arguments and the global batch size."""
    import keras_aimv2
    from keras_aimv2.recipes import PretrainingRecipe
    from keras_aimv2.recipes import load_recipe
    from keras_aimv2.recipes import typed_recipe

    if not args.recipe:
        backbone = keras_aimv2.BACKBONE_CONFIGS["tiny"]
        return (
            backbone,
            keras_aimv2.DECODER_CONFIGS["tiny"],
            args.batch_size or 8,
        )
    recipe = typed_recipe(load_recipe(args.recipe), PretrainingRecipe)
    decoder = dict(
        recipe.decoder.to_dict(),
        vocabulary_size=recipe.tokenizer.vocabulary_size,
    )
    batch_size = args.batch_size or recipe.training.batch_size
    return recipe.backbone.arguments(), decoder, batch_size


def seeded_pretrainer(backbone_config, decoder_config, dtype, remat=False):
    """The pre-training model, with the same initial weights every time."""
    import keras

    import keras_aimv2

    keras.utils.set_random_seed(0)
    backbone = keras_aimv2.AIMV2Backbone(**backbone_config, dtype=dtype)
    return keras_aimv2.AIMV2Pretrainer(backbone, **decoder_config, remat=remat)


# AdamW's first update of a weight is `-lr * sqrt(1 - beta_2) * g /
# (sqrt(1 - beta_2) * |g| + epsilon)`. With an epsilon that dwarfs every
# gradient and `lr = epsilon / sqrt(1 - beta_2)`, it is `-g` to about 1e-6:
# one update shows the gradient the optimizer applied, after the replicas
# combined theirs and after clipping.
PROBE_EPSILON = 1e6
PROBE_BETA_2 = 0.95


def probe_optimizer(clipnorm, gradient_accumulation_steps=1):
    """`aimv2_adamw` whose first update is minus the applied gradient."""
    from keras_aimv2.optimization import aimv2_adamw

    return aimv2_adamw(
        learning_rate=PROBE_EPSILON / (1 - PROBE_BETA_2) ** 0.5,
        weight_decay=0.0,
        beta_2=PROBE_BETA_2,
        epsilon=PROBE_EPSILON,
        clipnorm=clipnorm,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def applied_gradient(
    new_pretrainer, one_update, clipnorm=None, gradient_accumulation_steps=1
):
    """The gradient the optimizer applies in one update, after clipping.

    Args:
        new_pretrainer: callable taking an optimizer and returning a
            compiled model, with the same initial weights at every call.
        one_update: callable training a model for one update.
        clipnorm: float or `None`. The optimizer's clipping threshold.
        gradient_accumulation_steps: int. Batches per update.

    Returns:
        A dict from weight path to the gradient applied to it.
    """
    optimizer = probe_optimizer(clipnorm, gradient_accumulation_steps)
    pretrainer = new_pretrainer(optimizer)
    before = _trainable_values(pretrainer)
    one_update(pretrainer)
    after = _trainable_values(pretrainer)
    return {path: before[path] - after[path] for path in before}


def applied_gradients(
    new_pretrainer, one_update, gradient_accumulation_steps=1, fraction=0.25
):
    """One update's gradient unclipped, and clipped below its global norm.

    Arguments as `applied_gradient`'s; `fraction` is the clipping threshold
    as a fraction of the unclipped gradient's global norm.

    Returns:
        `(raw, clipped, clipnorm)`: the gradients applied without clipping
        and with `clipnorm`, each a dict from weight path to array.
    """
    import numpy as np

    arguments = (new_pretrainer, one_update)
    raw = applied_gradient(*arguments, None, gradient_accumulation_steps)
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in raw.values()))
    clipnorm = float(fraction * norm)
    clipped = applied_gradient(
        *arguments, clipnorm, gradient_accumulation_steps
    )
    return raw, clipped, clipnorm


def _trainable_values(pretrainer):
    import keras
    import numpy as np

    return {
        v.path: np.asarray(keras.ops.convert_to_numpy(v.value), "float64")
        for v in pretrainer.trainable_weights
    }


def run(args, strategy):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_aimv2 import distribution
    from keras_aimv2.training import compile_pretrainer

    backbone_config, decoder_config, batch_size = _model(args)
    mesh_shape = None
    if strategy == "sharded" and args.mesh_shape:
        mesh_shape = tuple(int(n) for n in args.mesh_shape.split(","))
    distributed = distribution.setup(strategy, mesh_shape)
    training = {
        "steps": args.steps,
        "warmup_steps": 1,
        "peak_learning_rate": 1e-3,
        "final_learning_rate": 1e-5,
        "weight_decay": 1e-4,
        "clipnorm": 1.0,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
    batches = synthetic_batches(
        args, batch_size, backbone_config, decoder_config
    )
    dataset = tf.data.Dataset.from_tensor_slices(batches)
    dataset = dataset.batch(batch_size, drop_remainder=True).repeat()

    def new_pretrainer(optimizer=None):
        """The seeded model, compiled and wrapped for the strategy."""
        pretrainer = seeded_pretrainer(
            backbone_config, decoder_config, args.dtype_policy, args.remat
        )
        if optimizer is None:
            compile_pretrainer(pretrainer, training)
        else:
            pretrainer.compile(optimizer=optimizer)
        return distributed.wrap(pretrainer)

    def one_update(pretrainer):
        pretrainer.fit(
            dataset,
            epochs=1,
            steps_per_epoch=args.gradient_accumulation_steps,
            verbose=0,
        )

    result = {}
    recorder = StepRecorder()
    with distributed.scope():
        dataset = distributed.distribute_dataset(dataset)
        if args.clip_probe:
            if (
                keras.config.backend() == "jax"
                and distributed.process_count > 1
            ):
                raise SystemExit("--clip-probe runs in one JAX process")
            raw, clipped, clipnorm = applied_gradients(
                new_pretrainer, one_update, args.gradient_accumulation_steps
            )
            result["probe/clipnorm"] = np.array(clipnorm)
            for path in raw:
                result[f"probe/raw/{path}"] = raw[path]
                result[f"probe/clipped/{path}"] = clipped[path]
        pretrainer = new_pretrainer()
        pretrainer.fit(
            dataset,
            epochs=args.steps * args.gradient_accumulation_steps,
            steps_per_epoch=1,
            verbose=0,
            callbacks=[recorder.callback],
        )
    result.update(
        {f"metric/{k}": np.array(v) for k, v in recorder.values.items()}
    )
    result["step_seconds"] = np.array(recorder.seconds)
    result["global_batch"] = np.array(batch_size)
    result["num_replicas"] = np.array(distributed.num_replicas)
    result["process_count"] = np.array(distributed.process_count)
    if keras.config.backend() == "jax" and strategy != "none":
        result.update(_layouts(pretrainer, distributed))
    # Weights over several JAX processes are readable in process 0's copy.
    local = distributed.local_copy(pretrainer)
    if distributed.is_chief or keras.config.backend() != "jax":
        for variable in local.trainable_weights:
            value = keras.ops.convert_to_numpy(variable.value)
            result[f"weight/{variable.path}"] = value.astype("float32")
    path = f"{args.output}.{strategy}.process{distributed.process_index}.npz"
    np.savez(path, **result)
    print(
        f"{strategy}: {distributed.num_replicas} replica(s), losses "
        f"{np.round(result['metric/loss'], 5).tolist()}, median step "
        f"{np.median(recorder.seconds[1:] or recorder.seconds):.3f} s -> "
        f"{path}",
        flush=True,
    )


def _layouts(pretrainer, distributed):
    """On JAX: each weight's share on the first device, and bytes there."""
    import numpy as np

    from keras_aimv2.distribution import per_device_bytes

    device = pretrainer.trainable_weights[0].value.addressable_shards[0].device
    shares, held = {}, {"parameters": 0, "optimizer": 0}
    optimizer_variables = [
        v
        for v in pretrainer.optimizer.variables
        if v.shape and v.path.split("/")[-1] != "iteration"
    ]
    groups = (
        ("parameters", pretrainer.weights),
        ("optimizer", optimizer_variables),
    )
    for group, variables in groups:
        for variable in variables:
            shards = [
                s
                for s in variable.value.addressable_shards
                if s.device == device
            ]
            nbytes = sum(s.data.nbytes for s in shards)
            held[group] += nbytes
            if group == "parameters":
                shares[f"share/{variable.path}"] = np.array(
                    nbytes / variable.value.nbytes
                )
    # AdamW's two moments, and the gradient accumulators when accumulating.
    slots = 3 if pretrainer.optimizer.gradient_accumulation_steps else 2
    expected = per_device_bytes(
        pretrainer,
        distributed.strategy,
        distributed.mesh_shape,
        optimizer_slots=slots,
    )
    shares["bytes/held"] = np.array([held["parameters"], held["optimizer"]])
    shares["bytes/expected"] = np.array(
        [expected["parameters"], expected["optimizer"]]
    )
    return shares


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _arguments(argv)
    if args.processes > 1:
        return launch(args, argv)
    _configure_devices(args)
    for strategy in args.strategies:
        run(args, strategy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
