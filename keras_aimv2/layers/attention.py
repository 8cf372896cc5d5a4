"""Multi-head self-attention of the AIMv2 encoder and decoder."""

import keras
from keras import ops

from keras_aimv2.api import register


@register
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention without biases.

    Queries, keys and values come from one fused projection whose output is
    laid out `[q | k | v]`; attention runs through
    `keras.ops.dot_product_attention` with scale `head_dim ** -0.5`. The
    caller chooses the mask: none (bidirectional), `is_causal=True`, or a
    boolean `attention_mask` (for prefix attention).

    Args:
        num_heads: int. Number of attention heads; must divide the width.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> x = np.random.rand(2, 10, 64).astype("float32")
    >>> SelfAttention(num_heads=2)(x, is_causal=True).shape
    (2, 10, 64)
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"The width {hidden_dim} must be divisible by num_heads="
                f"{self.num_heads}."
            )
        self.head_dim = hidden_dim // self.num_heads
        self.qkv = keras.layers.Dense(
            3 * hidden_dim,
            use_bias=False,
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.qkv.build(input_shape)
        self.output_projection = keras.layers.Dense(
            hidden_dim,
            use_bias=False,
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="output_projection",
        )
        self.output_projection.build(input_shape)

    def call(self, x, attention_mask=None, is_causal=False):
        shape = ops.shape(x)
        batch, length = shape[0], shape[1]
        qkv = ops.reshape(
            self.qkv(x), (batch, length, 3, self.num_heads, self.head_dim)
        )
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        x = ops.dot_product_attention(
            query,
            key,
            value,
            mask=attention_mask,
            scale=self.head_dim**-0.5,
            is_causal=is_causal,
        )
        x = ops.reshape(x, (batch, length, self.num_heads * self.head_dim))
        return self.output_projection(x)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config
