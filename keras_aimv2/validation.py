"""Checks of input values, with errors that name the argument.

Shapes are checked where a layer sees them. Values (token ids, prefix
lengths) can only be checked where they are known: eagerly, when a model is
called directly, and in the input pipeline that feeds `fit`, `evaluate` and
`predict`, where TensorFlow assertions fail the batch with the same message.
Inside a compiled training step values are symbolic and no check is made.
"""

import keras
import numpy as np


def known_values(x):
    """Return `x` as a NumPy array, or `None` while it is being traced."""
    if x is None:
        return None
    if isinstance(x, (np.ndarray, np.generic, int, list, tuple)):
        return np.asarray(x)
    if _is_tf_symbolic(x):
        return None
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
    elif backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    return keras.ops.convert_to_numpy(x)


def _is_tf_symbolic(x):
    module = type(x).__module__
    if not module.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(x, tf.Tensor) and not hasattr(x, "numpy")


def range_error(name, values, low, high, meaning):
    """A `ValueError` for values of `name` outside `[low, high]`."""
    values = np.asarray(values)
    bad = values[(values < low) | (values > high)]
    return ValueError(
        f"`{name}` must lie in [{low}, {high}] ({meaning}). Received values "
        f"outside it: {sorted(set(bad.tolist()))[:8]}"
    )


def check_range(name, x, low, high, meaning):
    """Raise a clear error if the known values of `x` leave `[low, high]`.

    In a `tf.data` pipeline (symbolic TensorFlow tensors) the check becomes a
    TensorFlow assertion that fails the batch with the same message; while
    traced by a compiled step it does nothing. Returns `x`.
    """
    if _is_tf_symbolic(x):
        import tensorflow as tf

        message = f"`{name}` must lie in [{low}, {high}] ({meaning})."
        with tf.control_dependencies(
            [
                tf.debugging.assert_greater_equal(
                    x, tf.cast(low, x.dtype), message=message
                ),
                tf.debugging.assert_less_equal(
                    x, tf.cast(high, x.dtype), message=message
                ),
            ]
        ):
            return tf.identity(x)
    values = known_values(x)
    if values is not None and values.size:
        if values.min() < low or values.max() > high:
            raise range_error(name, values, low, high, meaning)
    return x


def check_positive_int(name, value):
    """Raise a `ValueError` naming `name` unless `value` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}"
        )
