"""Multi-head self-attention of the AIMv2 encoder and decoder."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers.initializers import XavierUniform


def causal_mask(length):
    """Boolean `(length, length)` mask, True where query `i` sees key `j <= i`.

    Built once per call from two `arange`s; under XLA it folds to a constant.
    """
    positions = ops.arange(length, dtype="int32")
    return positions[None, :] <= positions[:, None]


def scaled_dot_product_attention(query, key, value, mask=None, is_causal=False):
    """Softmax attention over `(batch, heads, length, head_dim)` tensors.

    The mask is boolean (True = attend) and broadcasts over heads, so one
    `(batch, 1, length, length)` prefix mask or one `(length, length)` causal
    mask serves every head and every block. On PyTorch this is
    `scaled_dot_product_attention`, whose fused CPU and GPU kernels take the
    boolean mask or the causal flag directly. On JAX and TensorFlow it is two
    batched matmuls in the heads-major layout around a float32 softmax,
    which XLA compiles to plain GEMMs, and differentiates to plain GEMMs,
    without the layout copies of an `einsum` over `(batch, length, heads)`.

    Args:
        query: tensor `(batch, heads, length, head_dim)`.
        key: tensor `(batch, heads, length, head_dim)`.
        value: tensor `(batch, heads, length, head_dim)`.
        mask: boolean tensor broadcastable to `(batch, heads, length,
            length)`, or `None`.
        is_causal: bool. Whether to apply the causal mask (with no `mask`).

    Returns:
        Tensor `(batch, heads, length, head_dim)`.
    """
    scale = query.shape[-1] ** -0.5
    if keras.config.backend() == "torch":
        import torch

        return torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=is_causal, scale=scale
        )
    scores = ops.matmul(
        query * ops.cast(scale, query.dtype), ops.swapaxes(key, -1, -2)
    )
    scores = ops.cast(scores, "float32")
    if is_causal:
        mask = causal_mask(ops.shape(query)[2])
    if mask is not None:
        scores = ops.where(mask, scores, -1e30)
    probs = ops.softmax(scores, axis=-1)
    return ops.matmul(ops.cast(probs, value.dtype), value)


@register
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention without biases.

    Queries, keys and values come from one fused projection whose output is
    laid out `[q | k | v]`; attention runs through
    `scaled_dot_product_attention` with scale `head_dim ** -0.5`. The
    caller chooses the mask: none (bidirectional), `is_causal=True`, or a
    boolean `attention_mask` (for prefix attention). Both projections run
    on the tokens flattened to `(batch * length, width)`: one plain GEMM
    each way, forward and backward.

    As in AIMv2's trainer, queries, keys and values are three separate
    `width -> width` maps, each Xavier-uniform on its own (each third of the
    fused kernel, `XavierUniform(num_kernels=3)`), and the output
    projection is Xavier-uniform.

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
            kernel_initializer=XavierUniform(num_kernels=3),
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.qkv.build(input_shape)
        self.output_projection = keras.layers.Dense(
            hidden_dim,
            use_bias=False,
            kernel_initializer=XavierUniform(),
            dtype=self.dtype_policy,
            name="output_projection",
        )
        self.output_projection.build(input_shape)

    def call(self, x, attention_mask=None, is_causal=False):
        shape = ops.shape(x)
        batch, length, width = shape[0], shape[1], x.shape[-1]
        qkv = self.qkv(ops.reshape(x, (-1, width)))
        qkv = ops.reshape(
            qkv, (batch, length, 3, self.num_heads, self.head_dim)
        )
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        x = scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], mask=attention_mask, is_causal=is_causal
        )
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, width))
        return ops.reshape(self.output_projection(x), (batch, length, width))

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config
