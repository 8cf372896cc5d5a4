"""The pre-norm transformer block shared by the AIMv2 encoder and decoder."""

import keras

from keras_aimv2.api import register
from keras_aimv2.layers.attention import SelfAttention
from keras_aimv2.layers.feed_forward import SwiGLUFeedForward
from keras_aimv2.layers.norm import RMSNorm


@register
class TransformerBlock(keras.layers.Layer):
    """`x + attention(norm(x))`, then `x + swiglu(norm(x))`.

    Args:
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Hidden width of the SwiGLU feed-forward.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        x: float tensor `(batch, length, width)`.
        attention_mask: bool tensor broadcastable to `(batch, num_heads,
            length, length)`, or `None`. Defaults to `None`.
        is_causal: bool. Causal attention. Defaults to `False`.

    Example:

    >>> x = np.random.rand(2, 10, 64).astype("float32")
    >>> TransformerBlock(num_heads=2, intermediate_dim=128)(x).shape
    (2, 10, 64)
    """

    def __init__(
        self, num_heads, intermediate_dim, layer_norm_epsilon=1e-5, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_norm = RMSNorm(
            layer_norm_epsilon, dtype=self.dtype_policy, name="attention_norm"
        )
        self.attention = SelfAttention(
            num_heads, dtype=self.dtype_policy, name="attention"
        )
        self.feed_forward_norm = RMSNorm(
            layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="feed_forward_norm",
        )
        self.feed_forward = SwiGLUFeedForward(
            intermediate_dim, dtype=self.dtype_policy, name="feed_forward"
        )

    def build(self, x_shape, attention_mask_shape=None):
        for layer in (
            self.attention_norm,
            self.attention,
            self.feed_forward_norm,
            self.feed_forward,
        ):
            layer.build(x_shape)

    def call(self, x, attention_mask=None, is_causal=False):
        x = x + self.attention(
            self.attention_norm(x),
            attention_mask=attention_mask,
            is_causal=is_causal,
        )
        return x + self.feed_forward(self.feed_forward_norm(x))

    def compute_output_shape(self, x_shape, attention_mask_shape=None):
        return x_shape

    def compute_output_spec(self, x, attention_mask=None, is_causal=False):
        # Also for NumPy inputs, whose shapes Keras does not collect.
        return keras.KerasTensor(
            self.compute_output_shape(x.shape), self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


def run_block(block, x, remat=False, **kwargs):
    """`block(x, **kwargs)`; with `remat`, recomputed in the backward pass.

    Rematerialization keeps only each block's input for the backward pass
    and runs the block's forward again there (`keras.remat`: `jax.checkpoint`,
    `tf.recompute_grad` or `torch.utils.checkpoint`), trading about a third
    more compute for most of the activation memory.
    """
    if not remat:
        return block(x, **kwargs)
    return keras.remat(lambda x: block(x, **kwargs))(x)


def build_blocks(layer, num_layers, num_heads, intermediate_dim, epsilon):
    """The block stack and final RMSNorm of an encoder or decoder `layer`."""
    blocks = [
        TransformerBlock(
            num_heads,
            intermediate_dim,
            epsilon,
            dtype=layer.dtype_policy,
            name=f"block_{i}",
        )
        for i in range(num_layers)
    ]
    norm = RMSNorm(epsilon, dtype=layer.dtype_policy, name="final_norm")
    return blocks, norm
