"""XLA:CPU settings for JAX that make AIMv2's training step faster.

JAX 0.10's XLA:CPU hands matmuls and their neighbours to the YNNPACK and
XNNPACK libraries by default. On AIMv2's steps these fusions are slower
than XLA's own Eigen GEMMs: the "small" pre-training step of
`tools/benchmark.py` takes 4.9 s with them and 3.7 s without, on a 2-core
x86 CPU. `configure()` turns them off through `XLA_FLAGS`.

Nothing here runs at import: `aimv2 pretrain` and `aimv2 probe` call
`configure()` on a CPU host, and so do the benchmark tools. JAX reads
`XLA_FLAGS` once, when it starts its backends (the first computation or
`jax.devices()`); importing Keras, keras-hub, TensorFlow or `keras_aimv2`
does not start them, so `configure()` works after those imports, up to
JAX's first computation. Elsewhere, set the variable yourself before
JAX starts:

    XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= \
        --xla_cpu_use_xnnpack=false"

`configure()` changes nothing when the Keras backend is not JAX, when JAX
computes on an accelerator (`runs_on_cpu`), when JAX has already started,
or when `XLA_FLAGS` already names either flag (name one yourself to keep
XLA's default). GPU and TPU compilation ignore these flags.

bfloat16 on XLA:CPU (JAX 0.10, measured on AMD Zen 4 with AVX512-BF16):
a bfloat16 dot with a bfloat16 result, which is what `mixed_bfloat16`
layers compute, runs as a float32 Eigen GEMM between conversions (a
2048^3 matmul: 160-170 GFLOP/s, float32 200), whichever of these flags are
set, `--xla_cpu_use_onednn=true` and its fusion types included. Only a
bfloat16 dot that accumulates into float32 (`preferred_element_type`)
reaches bfloat16 matrix kernels, YNNPACK's (360-380 GFLOP/s at 2048^3
with YNN fusions on). At the training step's shapes (2,048 tokens by
384-wide layers, forward and backward) such dots ran slower than
float32 Eigen GEMMs (120 against 210 GFLOP/s over an MLP's step), so
`mixed_bfloat16` on JAX's CPU backend stays on XLA's bfloat16 path and
gains nothing over float32 there; train in float32 on a CPU with JAX, or
use TensorFlow or PyTorch, whose oneDNN kernels use the bf16 units.
"""

import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

import keras

from keras_aimv2 import compat

FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type": "",
    "--xla_cpu_use_xnnpack": "false",
}
# JAX's TPU runtime, found by JAX without a `jax_plugins` entry.
TPU_RUNTIME = "libtpu"


def accelerator_plugins():
    """The installed JAX accelerator plugins (GPU, TPU), found as JAX does.

    JAX loads PJRT plugins from the `jax_plugins` namespace package and the
    `jax_plugins` entry points, and the TPU runtime from `libtpu`; this
    lists them without importing JAX's backends.

    Returns:
        A sorted list of plugin names; empty on a CPU-only installation.
    """
    names = set()
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        for module in pkgutil.iter_modules(spec.submodule_search_locations):
            names.add(module.name)
    for entry_point in importlib.metadata.entry_points(group="jax_plugins"):
        names.add(entry_point.name)
    if importlib.util.find_spec(TPU_RUNTIME) is not None:
        names.add(TPU_RUNTIME)
    return sorted(names)


def runs_on_cpu(environ=None):
    """Whether JAX will compute on the CPU, judged before JAX starts.

    When `JAX_PLATFORMS` (or JAX's `jax_platforms` setting) names
    platforms, JAX uses the first: a CPU host iff that is `cpu`. Otherwise
    JAX uses an accelerator when one of its plugins is installed
    (`accelerator_plugins`), so a host with none is a CPU host. A host
    with a plugin but no device counts as an accelerator host; set
    `JAX_PLATFORMS=cpu` there to get the flags.

    Args:
        environ: mapping or `None`. The environment to read; `None` reads
            `os.environ`. Defaults to `None`.

    Returns:
        bool.
    """
    environ = os.environ if environ is None else environ
    platforms = environ.get("JAX_PLATFORMS", "")
    jax = sys.modules.get("jax")
    if not platforms and environ is os.environ and jax is not None:
        platforms = jax.config.jax_platforms or ""
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not accelerator_plugins()


def flags_named(xla_flags):
    """Whether the `XLA_FLAGS` value `xla_flags` names any of `FLAGS`."""
    return any(name in (xla_flags or "") for name in FLAGS)


def configure():
    """Add `FLAGS` to `XLA_FLAGS` for a JAX run on the CPU, before JAX starts.

    Changes nothing (and returns `False`) when the Keras backend is not
    JAX, when JAX is to compute on an accelerator (`runs_on_cpu`), when
    JAX has already read `XLA_FLAGS`, or when `XLA_FLAGS` names either
    flag already.

    Returns:
        bool. Whether `XLA_FLAGS` was changed.

    Example:

    >>> configure()  # in a fresh process, before JAX's first computation
    True
    """
    if keras.config.backend() != "jax" or not runs_on_cpu():
        return False
    current = os.environ.get("XLA_FLAGS", "")
    if flags_named(current) or compat.jax_backends_initialized():
        return False
    added = " ".join(f"{name}={value}" for name, value in FLAGS.items())
    os.environ["XLA_FLAGS"] = f"{current} {added}".strip()
    return True


def prefers_tensorflow_kernels(compute_dtype):
    """Whether TensorFlow's own kernels beat XLA:CPU at `compute_dtype`.

    On a host without a GPU or TPU, XLA:CPU computes bfloat16 matmuls as
    float32 GEMMs, while TensorFlow's oneDNN kernels use the processor's
    bfloat16 units: there a bfloat16 step is faster without XLA
    (`AIMV2Pretrainer.compile` chooses so). In float32 XLA is faster.

    Args:
        compute_dtype: str. The compute dtype of the model's layers.

    Returns:
        bool. True for bfloat16 on a TensorFlow host with no accelerator.

    Example:

    >>> prefers_tensorflow_kernels("float32")
    False
    """
    if compute_dtype != "bfloat16":
        return False
    import tensorflow as tf

    return not any(
        tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU")
    )
