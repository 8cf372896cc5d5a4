"""Distributed pre-training with each backend's own machinery.

One switch, `strategy`, takes a recipe from one device to many:

- `"none"`: one device (the backend's default).
- `"data_parallel"`: every device holds the whole model and computes on a
  slice of the global batch; gradients are combined by the backend. JAX:
  `keras.distribution.DataParallel` over every device of every process.
  TensorFlow: `tf.distribute.TPUStrategy` on a TPU,
  `MultiWorkerMirroredStrategy` when `TF_CONFIG` names several workers
  (refused under Keras 3.15.1, whose `fit` fails there), else
  `MirroredStrategy` over the GPUs (or the CPUs when there is none).
  PyTorch: `DistributedDataParallel`, one process per device, started by
  `torchrun`.
- `"sharded"` (JAX): `keras.distribution.ModelParallel` on a
  `(data, model)` device mesh. The large weights (attention and SwiGLU
  kernels, embeddings, heads) are split over the `model` axis, FSDP-style,
  and the batch over the `data` axis, so that AIMv2-1B and 3B fit.

Several processes (hosts, or one per GPU) start from the environment: JAX
through `keras.distribution.initialize` (`KERAS_DISTRIBUTION_*` variables,
or a TPU pod's own), TensorFlow through `TF_CONFIG`, PyTorch through
`torchrun`'s `RANK`/`WORLD_SIZE`.

Every loss is normalized by the global count of what it averages, and every
replica draws its own slice of one global draw of prefix lengths, so a
distributed step computes the same loss and gradients as one device seeing
the whole batch.
"""

import contextlib
import functools
import math
import os
import re
import weakref

import keras
import numpy as np

from keras_aimv2 import objective
from keras_aimv2.compat import register_torch_parameters

STRATEGIES = ("none", "data_parallel", "sharded")
MESH_AXES = ("data", "model")

# The weights split over the mesh's `model` axis under "sharded", by path,
# with the axis split: each holds `hidden_dim`, `intermediate_dim` or the
# decoder's widths. Norm scales, biases and the BOS token stay replicated.
SHARDED_WEIGHTS = {
    r".*/attention/(qkv|output_projection)/kernel": 0,
    r".*/feed_forward/(gate_up|down)/kernel": 0,
    r"(pixel|text)_head/dense/kernel": 0,
    r".*position_embedding": 1,
    r"patch_embedding/projection/kernel": 1,
    r"decoder/image_projection/kernel": 1,
    r"decoder/token_embedding/embeddings": 1,
}

_TORCH_DDP = weakref.WeakKeyDictionary()


def check_strategy(strategy, mesh_shape=None):
    """Raise a clear error for an unknown strategy or a bad mesh shape."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"`distribution.strategy` must be one of {list(STRATEGIES)}. "
            f"Received: strategy={strategy!r}"
        )
    if mesh_shape is None:
        return
    if strategy != "sharded":
        raise ValueError(
            "`distribution.mesh_shape` applies to strategy='sharded' only. "
            f"Received: mesh_shape={mesh_shape!r} with strategy={strategy!r}"
        )
    if (
        not isinstance(mesh_shape, (tuple, list))
        or len(mesh_shape) != 2
        or not all(isinstance(n, int) and n >= 1 for n in mesh_shape)
    ):
        raise ValueError(
            "`distribution.mesh_shape` must be two positive ints (data, "
            f"model). Received: mesh_shape={mesh_shape!r}"
        )


def layout_map(device_mesh):
    """The FSDP-style `keras.distribution.LayoutMap` of AIMv2's weights.

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with axes
            `("data", "model")`.

    Example:

    >>> mesh = keras.distribution.DeviceMesh((1, 8), ("data", "model"))
    >>> layouts = layout_map(mesh)
    """
    layouts = keras.distribution.LayoutMap(device_mesh)
    for pattern, axis in SHARDED_WEIGHTS.items():
        layouts[pattern] = ("model", None) if axis == 0 else (None, "model")
    return layouts


def sharded_axis(path):
    """Axis of the weight at `path` split under "sharded", or `None`."""
    for pattern, axis in SHARDED_WEIGHTS.items():
        if re.fullmatch(pattern, path):
            return axis
    return None


def check_shardable(widths, model_size):
    """Raise a clear error when a width does not split over `model_size`.

    Args:
        widths: dict of the model's widths by argument name
            (`hidden_dim`, `intermediate_dim`, `decoder_hidden_dim`,
            `decoder_intermediate_dim`).
        model_size: int. Devices along the mesh's `model` axis.
    """
    uneven = {k: v for k, v in widths.items() if v % model_size}
    if uneven:
        raise ValueError(
            f"strategy='sharded' splits weights over the {model_size} "
            f"devices of the mesh's model axis, but {uneven} do not divide "
            f"by {model_size}. Choose `distribution.mesh_shape` with a "
            "model axis dividing every width."
        )


class Distributed:
    """The distribution of one run: devices, processes and their roles.

    Build it with `setup(strategy, mesh_shape)` before creating the model;
    build, compile and fit inside `scope()`.

    Attributes:
        strategy: str. One of `STRATEGIES`.
        mesh_shape: tuple `(data, model)` under "sharded", else `None`.
        num_replicas: int. Model replicas whose batches are combined.
        process_index: int. This process among `process_count`.
        process_count: int. Processes of the run.
        tf_strategy: the `tf.distribute.Strategy` (TensorFlow) or `None`.
        keras_distribution: the `keras.distribution.Distribution` (JAX) or
            `None`.
    """

    def __init__(self, strategy="none", mesh_shape=None):
        check_strategy(strategy, mesh_shape)
        self.strategy = strategy
        self.mesh_shape = None
        self.num_replicas = 1
        self.process_index = 0
        self.process_count = 1
        self.tf_strategy = None
        self.keras_distribution = None
        if strategy == "none":
            return
        backend = keras.config.backend()
        if backend == "jax":
            self._setup_jax(mesh_shape)
        elif strategy == "sharded":
            raise ValueError(
                "strategy='sharded' shards weights with keras.distribution, "
                f"which Keras implements on JAX only; on {backend}, use "
                "strategy='data_parallel' (with training.remat or "
                "gradient accumulation to save memory), or the JAX backend."
            )
        elif backend == "tensorflow":
            self._setup_tensorflow()
        else:
            self._setup_torch()

    @property
    def is_chief(self):
        """Whether this process writes the run's outputs."""
        return self.process_index == 0

    def _setup_jax(self, mesh_shape):
        import jax

        if _multi_process_requested():
            # CPU processes exchange tensors through gloo.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            keras.distribution.initialize()
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        devices = keras.distribution.list_devices()
        if self.strategy == "data_parallel":
            self.keras_distribution = keras.distribution.DataParallel(
                devices=devices
            )
            self.num_replicas = len(devices)
            return
        mesh_shape = tuple(mesh_shape or (1, len(devices)))
        if math.prod(mesh_shape) != len(devices):
            raise ValueError(
                f"`distribution.mesh_shape` {mesh_shape} needs "
                f"{math.prod(mesh_shape)} devices; this run has "
                f"{len(devices)}."
            )
        mesh = keras.distribution.DeviceMesh(mesh_shape, MESH_AXES, devices)
        self.keras_distribution = keras.distribution.ModelParallel(
            layout_map=layout_map(mesh), batch_dim_name="data"
        )
        self.mesh_shape = mesh_shape
        self.num_replicas = mesh_shape[0]

    def _setup_tensorflow(self):
        import json

        import tensorflow as tf

        cluster = json.loads(os.environ.get("TF_CONFIG", "{}"))
        workers = cluster.get("cluster", {}).get("worker", [])
        # Collective ops must be set up before anything starts TensorFlow's
        # runtime (listing logical devices does): multi-worker first.
        if len(workers) > 1:
            if keras.version() == "3.15.1":
                # Its TensorFlow trainer reduces each step's scalar logs
                # over the workers along an axis 0 they lack.
                raise ValueError(
                    "TF_CONFIG names several workers, but Keras 3.15.1's "
                    "`fit` fails under MultiWorkerMirroredStrategy "
                    "(`reduce_per_replica` reduces scalar logs along axis "
                    "0). Train on several hosts with the JAX or PyTorch "
                    "backend."
                )
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            self.process_index = cluster.get("task", {}).get("index", 0)
            self.process_count = len(workers)
        elif os.environ.get("TPU_NAME") or tf.config.list_physical_devices(
            "TPU"
        ):
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME", "local")
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy = tf.distribute.TPUStrategy(resolver)
        else:
            devices = tf.config.list_logical_devices("GPU")
            devices = devices or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy(
                [device.name for device in devices]
            )
        self.tf_strategy = strategy
        self.num_replicas = strategy.num_replicas_in_sync

    def _setup_torch(self):
        import torch
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                cuda = torch.cuda.is_available()
                if cuda:
                    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
                dist.init_process_group("nccl" if cuda else "gloo")
            self.process_index = dist.get_rank()
            self.process_count = dist.get_world_size()
        self.num_replicas = self.process_count

    @contextlib.contextmanager
    def scope(self):
        """Where the model is built, compiled and trained."""
        if self.tf_strategy is not None:
            with self.tf_strategy.scope():
                yield
        elif self.keras_distribution is not None:
            with self.keras_distribution.scope():
                yield
        else:
            yield

    def distribute_dataset(self, dataset):
        """This process's share of a global-batch `tf.data.Dataset`.

        JAX and TensorFlow split the global batches themselves. Under
        PyTorch DDP each process keeps, of every global batch, its own
        consecutive `batch / processes` examples.
        """
        if keras.config.backend() != "torch" or self.process_count == 1:
            return dataset
        import tensorflow as tf

        batch = tf.data.experimental.get_structure(dataset)
        global_batch = next(iter(tf.nest.flatten(batch))).shape[0]
        if global_batch is None or global_batch % self.process_count:
            raise ValueError(
                f"The global batch size ({global_batch}) must be known and "
                f"divide by the {self.process_count} processes."
            )
        local = global_batch // self.process_count
        return dataset.rebatch(local).shard(
            self.process_count, self.process_index
        )

    def wrap(self, model):
        """Prepare `model` for this run's replicas, in place; returns it.

        With several replicas under `tf.distribute` or PyTorch DDP, the
        model's `batch_means` becomes `ReplicaMeans` (each replica's share
        of the global batch's means); under PyTorch DDP the model is also
        wrapped in `DistributedDataParallel`, whose `backward` averages the
        processes' gradients, and trains through it (`ddp_train_step`).
        JAX runs one global program per step and needs neither.
        """
        backend = keras.config.backend()
        if backend == "torch" and self.process_count > 1:
            import torch

            device_ids = None
            if torch.cuda.is_available():
                device_ids = [torch.cuda.current_device()]
            ddp = torch.nn.parallel.DistributedDataParallel(
                register_torch_parameters(model), device_ids=device_ids
            )
            _TORCH_DDP[model] = ddp
            model.batch_means = ReplicaMeans()
            model.train_step = functools.partial(ddp_train_step, model, ddp)
        elif backend == "tensorflow" and self.num_replicas > 1:
            model.batch_means = ReplicaMeans()
        return model

    def local_copy(self, model):
        """`model`, or on the first of several JAX processes a local copy.

        Weights laid out over several JAX processes cannot be read by one
        alone: every process joins in gathering them, and process 0 gets a
        copy of the model on its own devices (to save or draw), the others
        `model` itself. Elsewhere every process can read its weights.
        """
        if keras.config.backend() != "jax" or self.process_count == 1:
            return model
        from jax.experimental import multihost_utils

        values = [
            np.asarray(multihost_utils.process_allgather(v.value, tiled=True))
            for v in model.weights
        ]
        if not self.is_chief:
            return model
        active = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            copy = model.__class__.from_config(model.get_config())
            copy.set_weights(values)
        finally:
            keras.distribution.set_distribution(active)
        return copy


def setup(strategy="none", mesh_shape=None):
    """Start the distribution of a run; see `Distributed`.

    Args:
        strategy: str. `"none"`, `"data_parallel"` or `"sharded"`.
            Defaults to `"none"`.
        mesh_shape: tuple of two ints `(data, model)` or `None`. The device
            mesh of "sharded"; defaults to every device on the model axis.

    Example:

    >>> distributed = setup("data_parallel")
    >>> with distributed.scope():
    ...     pretrainer = AIMV2Pretrainer(...)
    ...     pretrainer.compile()
    ... pretrainer.fit(distributed.distribute_dataset(dataset))
    """
    return Distributed(strategy, mesh_shape)


def _multi_process_requested():
    return any(
        os.environ.get(name)
        for name in (
            "KERAS_DISTRIBUTION_JOB_ADDRESSES",
            "KERAS_DISTRIBUTION_NUM_PROCESSES",
        )
    )


# === Inside the training step ===


def tf_replica_context():
    """The replica context of a multi-replica `tf.distribute` step, or None."""
    if keras.config.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica():
    """`(index, count)` of this replica among those combining gradients.

    On JAX a step is one global program: `(0, 1)`. Under `tf.distribute`
    the replica context's id (a tensor) and size; under PyTorch, once a
    model is wrapped in DDP (`Distributed.wrap`), the process rank and
    count.
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        context = tf_replica_context()
        if context is not None:
            return (
                context.replica_id_in_sync_group,
                context.num_replicas_in_sync,
            )
    elif backend == "torch":
        import torch.distributed as dist

        if len(_TORCH_DDP) and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ReplicaMeans(objective.BatchMeans):
    """`objective.BatchMeans` for replicas that each hold a slice of a batch.

    The one place where the objective meets the replicas: counts are summed
    over them (`total`), so each replica's mean is its share of the global
    batch's, and the shares sum to the mean of one device seeing the whole
    batch. Metrics and the returned loss are adjusted to what each
    backend's training step does with them (see `tracked`, `returned`).
    """

    def total(self, value):
        """Sum of a statistic (no gradient) over the replicas of a step."""
        backend = keras.config.backend()
        if backend == "tensorflow":
            context = tf_replica_context()
            if context is not None:
                return context.all_reduce("sum", value)
        elif backend == "torch" and replica()[1] > 1:
            import torch.distributed as dist

            value = value.detach().clone()
            dist.all_reduce(value)
        return value

    def split(self, value):
        """This replica's share of a value every replica computes in full."""
        return value / replica()[1]

    def tracked(self, share):
        """What a replica records in a `Mean` metric for its share.

        The metric then reads the global batch's value: `tf.distribute`
        sums the replicas' metric states (so the share times the replica
        count); under PyTorch DDP every process records the sum of the
        shares.
        """
        _, count = replica()
        if count == 1:
            return share
        if keras.config.backend() == "torch":
            return self.total(share)
        return share * count

    def returned(self, share, training):
        """What `compute_loss` returns for this replica's share of the loss.

        `tf.distribute` sums the replicas' gradients and Keras's loss
        metric undoes its own scaling: the share. PyTorch DDP averages the
        gradients, so a training step returns the share times the process
        count, and an evaluation step the global loss, which Keras's metric
        records as is.
        """
        _, count = replica()
        if keras.config.backend() != "torch" or count == 1:
            return share
        return share * count if training else self.total(share)


def ddp_train_step(model, ddp, data):
    """Keras's PyTorch training step, with the forward pass under DDP.

    `DistributedDataParallel` averages the gradients of the processes
    during `backward`, so the optimizer applies the global gradient.
    """
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = ddp(x, training=True)
    model.zero_grad()
    loss = model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
    )
    share = loss.detach() / replica()[1]
    # Keras's own "loss" tracker, the first of `metrics` once compiled.
    loss_tracker = next(m for m in model.metrics if m.name == "loss")
    loss_tracker.update_state(
        model.batch_means.tracked(share), sample_weight=len(x["images"])
    )
    loss = model.optimizer.scale_loss(loss)
    loss.backward()
    variables = model.trainable_weights[:]
    with torch.no_grad():
        model.optimizer.apply([v.value.grad for v in variables], variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


# === Memory accounting ===


def per_device_bytes(
    model, strategy="none", mesh_shape=None, optimizer_slots=2
):
    """Bytes of weights and optimizer state one device holds, by layout.

    Computed from the variables' shapes and dtypes and the layout that
    `strategy` gives them, without touching their values, so a model built
    without memory (PyTorch backend, `with keras.device("meta"):`) can be
    measured.

    Args:
        model: a built `keras.Model`.
        strategy: str. One of `STRATEGIES`.
        mesh_shape: `(data, model)` of "sharded".
        optimizer_slots: int. Optimizer variables per trainable weight,
            in its shape and dtype: 2 for AdamW, 3 with gradient
            accumulation.

    Returns:
        dict with `"parameters"` and `"optimizer"` bytes.
    """
    check_strategy(strategy, mesh_shape)
    model_size = mesh_shape[1] if strategy == "sharded" else 1
    parameters = optimizer = 0
    for variable in model.weights:
        size = math.prod(variable.shape) * np.dtype(variable.dtype).itemsize
        if model_size > 1 and sharded_axis(variable.path) is not None:
            size //= model_size
        parameters += size
        if variable.trainable:
            optimizer += optimizer_slots * size
    return {"parameters": parameters, "optimizer": optimizer}
