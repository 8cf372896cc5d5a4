"""XLA:CPU settings for JAX that make AIMv2's training step faster.

JAX 0.10's XLA:CPU hands matmuls and their neighbours to the YNNPACK and
XNNPACK libraries by default. On AIMv2's steps these fusions are slower
than XLA's own Eigen GEMMs: the "small" pre-training step of
`tools/benchmark.py` takes 4.9 s with them and 3.7 s without, on a 2-core
x86 CPU. `configure()` turns them off through `XLA_FLAGS`, which XLA reads
once per process: when TensorFlow is imported (as Keras and keras-hub do)
or JAX starts its CPU client, whichever comes first. `import keras_aimv2`
calls it, so it takes effect when `keras_aimv2` is imported before Keras
(the `aimv2` command and the tools do so); otherwise set the variable
yourself:

    XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= \
        --xla_cpu_use_xnnpack=false"

It changes nothing when the backend is not JAX, when it is too late, or
when `XLA_FLAGS` already names either flag (name one yourself to keep
XLA's default). GPU and TPU compilation ignore these flags.
"""

import os
import sys

FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type": "",
    "--xla_cpu_use_xnnpack": "false",
}


def _flags_read():
    if "tensorflow" in sys.modules:
        return True
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(xla_bridge._backends)


def configure():
    """Add the flags above to `XLA_FLAGS` if XLA has not read it yet.

    Returns:
        bool. Whether `XLA_FLAGS` was changed.
    """
    if os.environ.get("KERAS_BACKEND", "jax") != "jax" or _flags_read():
        return False
    current = os.environ.get("XLA_FLAGS", "")
    if any(name in current for name in FLAGS):
        return False
    added = " ".join(f"{name}={value}" for name, value in FLAGS.items())
    os.environ["XLA_FLAGS"] = f"{current} {added}".strip()
    return True
