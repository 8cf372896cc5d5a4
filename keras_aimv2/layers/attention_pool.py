"""Attention pooling: AIMv2's probe and the LiT model's image head."""

import keras
from keras import ops

from keras_aimv2.api import register


@register
class AttentionPool(keras.layers.Layer):
    """Pool patch features with learned queries, then project them.

    Learned query tokens (used directly, without a query projection)
    attend over all patch tokens through key and value projections, with
    multi-head scaled dot-product attention; the query outputs are averaged
    and mapped by a linear layer with bias. With one query this is the
    attentive probe of AIMv2 (Section 4) and the image head of its LiT
    model.

    Args:
        num_heads: int. Attention heads; must divide the feature width.
        output_dim: int or `None`. Width of the output projection (the
            number of classes for a probe). `None` keeps the feature width.
            Defaults to `None`.
        num_queries: int. Learned query tokens. Defaults to `1`.
        use_bias: bool. Biases on the key and value projections. Defaults
            to `False`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> pool = AttentionPool(num_heads=2, output_dim=10)
    >>> pool(np.random.rand(4, 16, 64).astype("float32")).shape
    (4, 10)
    """

    def __init__(
        self,
        num_heads,
        output_dim=None,
        num_queries=1,
        use_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.output_dim = output_dim
        self.num_queries = num_queries
        self.use_bias = use_bias

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"The feature width {hidden_dim} must be divisible by "
                f"num_heads={self.num_heads}."
            )
        self.head_dim = hidden_dim // self.num_heads
        self.query = self.add_weight(
            name="query",
            shape=(self.num_queries, hidden_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        projections = {}
        for name in ("key", "value"):
            projections[name] = keras.layers.Dense(
                hidden_dim,
                use_bias=self.use_bias,
                dtype=self.dtype_policy,
                name=name,
            )
            projections[name].build(input_shape)
        self.key, self.value = projections["key"], projections["value"]
        self.output_projection = keras.layers.Dense(
            self.output_dim or hidden_dim,
            dtype=self.dtype_policy,
            name="output_projection",
        )
        self.output_projection.build((None, hidden_dim))

    def call(self, features):
        shape = ops.shape(features)
        batch, length = shape[0], shape[1]
        heads = (self.num_heads, self.head_dim)
        key = ops.reshape(self.key(features), (batch, length, *heads))
        value = ops.reshape(self.value(features), (batch, length, *heads))
        query = ops.cast(self.query, key.dtype)
        query = ops.broadcast_to(
            ops.reshape(query, (1, self.num_queries, *heads)),
            (batch, self.num_queries, *heads),
        )
        pooled = ops.dot_product_attention(
            query, key, value, scale=self.head_dim**-0.5
        )
        pooled = ops.reshape(
            pooled, (batch, self.num_queries, self.num_heads * self.head_dim)
        )
        return self.output_projection(ops.mean(pooled, axis=1))

    def compute_output_shape(self, features_shape):
        return (features_shape[0], self.output_dim or features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "output_dim": self.output_dim,
                "num_queries": self.num_queries,
                "use_bias": self.use_bias,
            }
        )
        return config
