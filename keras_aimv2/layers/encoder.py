"""The AIMv2 vision encoder trunk."""

import keras

from keras_aimv2.api import register
from keras_aimv2.layers.prefix import prefix_attention_mask
from keras_aimv2.layers.transformer import build_blocks
from keras_aimv2.layers.transformer import run_block


@register
class PrefixViTEncoder(keras.layers.Layer):
    """ViT trunk with prefix attention in pre-training, full attention after.

    A stack of pre-norm SwiGLU/RMSNorm transformer blocks followed by a
    final RMSNorm, whose output is the image's patch features. Given
    per-example `prefix_lengths` it applies prefix attention (the first `M`
    patches attend to each other, the rest causally), as during AIMv2
    pre-training; given none it is bidirectional, as when the encoder is
    used after pre-training, with no further tuning.

    With `feature_layers`, a tuple of block indices (negative ones count
    from the end), the output is instead the average of those blocks'
    outputs, each passed through the final RMSNorm: the shared norm puts
    the residual streams of different depths on the scale of the last
    layer's features, and `feature_layers=(-1,)` is exactly the default
    output. Blocks after the deepest chosen one are not run. `remat=True`
    recomputes each block in the backward pass (see `run_block`).

    Args:
        num_layers: int. Number of transformer blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Hidden width of the SwiGLU feed-forward.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        tokens: float tensor `(batch, num_patches, width)`, the embedded
            patches.
        prefix_lengths: int tensor `(batch,)` or `None`. Prefix attention
            with these prefixes, or bidirectional attention. Defaults to
            `None`.
        feature_layers: tuple of ints or `None`. Average these blocks'
            outputs instead of returning the last one's. Defaults to `None`.
        remat: bool. Recompute each block in the backward pass. Defaults
            to `False`.

    Example:

    >>> encoder = PrefixViTEncoder(
    ...     num_layers=2, num_heads=2, intermediate_dim=128
    ... )
    >>> tokens = np.random.rand(2, 16, 64).astype("float32")
    >>> encoder(tokens, prefix_lengths=np.array([3, 9])).shape
    (2, 16, 64)
    """

    def __init__(
        self,
        num_layers,
        num_heads,
        intermediate_dim,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.blocks, self.final_norm = build_blocks(
            self, num_layers, num_heads, intermediate_dim, layer_norm_epsilon
        )

    def build(self, tokens_shape, prefix_lengths_shape=None):
        for layer in (*self.blocks, self.final_norm):
            layer.build(tokens_shape)

    def call(
        self, tokens, prefix_lengths=None, feature_layers=None, remat=False
    ):
        mask = None
        if prefix_lengths is not None:
            mask = prefix_attention_mask(
                prefix_lengths, keras.ops.shape(tokens)[1]
            )
        x = tokens
        if feature_layers is None:
            for block in self.blocks:
                x = run_block(block, x, remat, attention_mask=mask)
            return self.final_norm(x)
        chosen = self.check_feature_layers(feature_layers)
        features = []
        for index, block in enumerate(self.blocks[: max(chosen) + 1]):
            x = run_block(block, x, remat, attention_mask=mask)
            if index in chosen:
                features.append(self.final_norm(x))
        if len(features) == 1:
            return features[0]
        return keras.ops.mean(keras.ops.stack(features), axis=0)

    def check_feature_layers(self, feature_layers):
        """Block indices of `feature_layers`, made non-negative and sorted.

        Args:
            feature_layers: tuple of ints. Indices of blocks in
                `[-num_layers, num_layers)`, without repeats.

        Returns:
            A sorted tuple of indices in `[0, num_layers)`.
        """
        if isinstance(feature_layers, int) or not feature_layers:
            raise ValueError(
                "`feature_layers` must be a non-empty tuple of block "
                f"indices. Received: feature_layers={feature_layers!r}"
            )
        indices = []
        for index in feature_layers:
            if (
                isinstance(index, bool)
                or not isinstance(index, int)
                or not -self.num_layers <= index < self.num_layers
            ):
                raise ValueError(
                    "`feature_layers` must hold block indices in "
                    f"[{-self.num_layers}, {self.num_layers}) for an encoder "
                    f"of {self.num_layers} blocks. Received: "
                    f"feature_layers={feature_layers!r}"
                )
            indices.append(index % self.num_layers)
        if len(set(indices)) != len(indices):
            raise ValueError(
                "`feature_layers` must not name a block twice. Received: "
                f"feature_layers={feature_layers!r}"
            )
        return tuple(sorted(indices))

    def compute_output_shape(self, tokens_shape, prefix_lengths_shape=None):
        return tokens_shape

    def compute_output_spec(
        self, tokens, prefix_lengths=None, feature_layers=None, remat=False
    ):
        # Also for NumPy inputs, whose shapes Keras does not collect.
        return keras.KerasTensor(
            self.compute_output_shape(tokens.shape), self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
