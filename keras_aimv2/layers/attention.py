"""Multi-head self-attention of the AIMv2 encoder and decoder."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers.initializers import XavierUniform


@register
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention without biases.

    Queries, keys and values come from one fused projection whose output is
    laid out `[q | k | v]`; attention is `keras.ops.dot_product_attention`
    with scale `head_dim ** -0.5`, on every backend, so each picks its own
    kernel (PyTorch's fused `scaled_dot_product_attention`, cuDNN or flash
    attention on GPUs, XLA's on TPUs). The caller chooses the mask: none
    (bidirectional), `is_causal=True`, or a boolean `attention_mask`
    broadcastable to `(batch, heads, length, length)` (prefix attention,
    `keras_aimv2.layers.prefix.prefix_attention_mask`). Both projections
    run on the tokens flattened to `(batch * length, width)`: one plain
    GEMM each way, forward and backward.

    As in AIMv2's trainer, queries, keys and values are three separate
    `width -> width` maps, each Xavier-uniform on its own (each third of the
    fused kernel, `XavierUniform(num_kernels=3)`), and the output
    projection is Xavier-uniform.

    Args:
        num_heads: int. Number of attention heads; must divide the width.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        x: float tensor `(batch, length, width)`.
        attention_mask: bool tensor broadcastable to `(batch, num_heads,
            length, length)`, True where a query may attend a key, or
            `None`. Defaults to `None`.
        is_causal: bool. Causal attention (with no `attention_mask`).
            Defaults to `False`.

    Example:

    >>> x = np.random.rand(2, 10, 64).astype("float32")
    >>> SelfAttention(num_heads=2)(x, is_causal=True).shape
    (2, 10, 64)
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, x_shape, attention_mask_shape=None):
        hidden_dim = x_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"The width {hidden_dim} must be divisible by num_heads="
                f"{self.num_heads}."
            )
        self.head_dim = hidden_dim // self.num_heads
        self.qkv = keras.layers.Dense(
            3 * hidden_dim,
            use_bias=False,
            kernel_initializer=XavierUniform(num_kernels=3),
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.qkv.build(x_shape)
        self.output_projection = keras.layers.Dense(
            hidden_dim,
            use_bias=False,
            kernel_initializer=XavierUniform(),
            dtype=self.dtype_policy,
            name="output_projection",
        )
        self.output_projection.build(x_shape)

    def call(self, x, attention_mask=None, is_causal=False):
        shape = ops.shape(x)
        batch, length, width = shape[0], shape[1], x.shape[-1]
        qkv = self.qkv(ops.reshape(x, (-1, width)))
        qkv = ops.reshape(
            qkv, (batch, length, 3, self.num_heads, self.head_dim)
        )
        x = ops.dot_product_attention(
            qkv[:, :, 0],
            qkv[:, :, 1],
            qkv[:, :, 2],
            mask=attention_mask,
            scale=self.head_dim**-0.5,
            is_causal=is_causal,
        )
        x = self.output_projection(ops.reshape(x, (-1, width)))
        return ops.reshape(x, (batch, length, width))

    def compute_output_shape(self, x_shape, attention_mask_shape=None):
        return x_shape

    def compute_output_spec(self, x, attention_mask=None, is_causal=False):
        # Also for NumPy inputs, whose shapes Keras does not collect.
        return keras.KerasTensor(
            self.compute_output_shape(x.shape), self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config
