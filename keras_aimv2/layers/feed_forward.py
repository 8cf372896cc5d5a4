"""SwiGLU feed-forward network of the AIMv2 blocks."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers.initializers import XavierUniform


@register
class SwiGLUFeedForward(keras.layers.Layer):
    """SwiGLU: `down(silu(gate(x)) * up(x))`, without biases.

    The gate and up projections are fused into one kernel laid out
    `[gate | up]`. AIMv2 sizes the hidden layer as
    `round_up(2 / 3 * 4 * width, 256)`. As in AIMv2's trainer, gate, up
    and down are each Xavier-uniform on their own (each half of the fused
    kernel, `XavierUniform(num_kernels=2)`).

    Args:
        intermediate_dim: int. Width of the hidden layer.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> x = np.random.rand(2, 10, 64).astype("float32")
    >>> SwiGLUFeedForward(intermediate_dim=256)(x).shape
    (2, 10, 64)
    """

    def __init__(self, intermediate_dim, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim = intermediate_dim

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        self.gate_up = keras.layers.Dense(
            2 * self.intermediate_dim,
            use_bias=False,
            kernel_initializer=XavierUniform(num_kernels=2),
            dtype=self.dtype_policy,
            name="gate_up",
        )
        self.gate_up.build(input_shape)
        self.down = keras.layers.Dense(
            hidden_dim,
            use_bias=False,
            kernel_initializer=XavierUniform(),
            dtype=self.dtype_policy,
            name="down",
        )
        self.down.build((*input_shape[:-1], self.intermediate_dim))

    def call(self, x):
        # Flattened tokens: the projections are plain 2D GEMMs, whose
        # gradients are too (a 3D matmul's kernel gradient is slower on XLA).
        tokens = ops.reshape(x, (-1, x.shape[-1]))
        gate, up = ops.split(self.gate_up(tokens), 2, axis=-1)
        return ops.reshape(self.down(ops.silu(gate) * up), ops.shape(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"intermediate_dim": self.intermediate_dim})
        return config
