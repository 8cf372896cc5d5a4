"""The causal text tower of the AIMv2 LiT image-text model."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers import initializers
from keras_aimv2.layers.transformer import build_blocks
from keras_aimv2.validation import check_range


@register
class CausalTextEncoder(keras.layers.Layer):
    """CLIP-style causal text encoder, pooled at the end token.

    The text tower of AIMv2's LiT model (apple/ml-aim `AIMv2LiT`): token
    embedding plus a learned position embedding, pre-norm SwiGLU/RMSNorm
    blocks identical to the image encoder's (attention and feed-forward
    without biases) under a causal mask, and a final RMSNorm. The output is
    the feature at the first position whose token is `end_token_id`, which
    under the causal mask has read the whole caption and nothing after it
    (padding included). A sequence without the end token is pooled at
    position 0, as the reference implementations' `argmax` does; the
    preprocessor (`AIMV2LiTPreprocessor`) always appends it.

    Parameters start as in the AIMv2 decoder's text input (see
    `keras_aimv2.layers.initializers`): token embedding `N(0, 0.02**2)`,
    position embedding `N(0, 0.01**2)` (CLIP's choice as well), blocks as
    in the encoder.

    Args:
        vocabulary_size: int. Number of text tokens.
        sequence_length: int. Most tokens per caption: the number of
            learned positions (77 for the released model).
        hidden_dim: int. Width of the tokens.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Hidden width of the SwiGLU feed-forward.
        end_token_id: int. Id of the end (EOS) token, where the caption is
            pooled.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        token_ids: int tensor `(batch, length)`, `length <= sequence_length`.

    Returns:
        Float tensor `(batch, hidden_dim)`, the pooled text features.

    Example:

    >>> encoder = CausalTextEncoder(
    ...     vocabulary_size=100, sequence_length=8, hidden_dim=32,
    ...     num_layers=2, num_heads=2, intermediate_dim=64, end_token_id=1,
    ... )
    >>> encoder(np.array([[5, 6, 1, 0, 0], [7, 1, 0, 0, 0]])).shape
    (2, 32)
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        end_token_id,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.end_token_id = end_token_id
        self.layer_norm_epsilon = layer_norm_epsilon
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=initializers.normal(0.02),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.blocks, self.final_norm = build_blocks(
            self, num_layers, num_heads, intermediate_dim, layer_norm_epsilon
        )

    def build(self, token_ids_shape):
        self.token_embedding.build(token_ids_shape)
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.sequence_length, self.hidden_dim),
            initializer=initializers.normal(0.01),
        )
        for layer in (*self.blocks, self.final_norm):
            layer.build((None, None, self.hidden_dim))

    def check_token_ids(self, token_ids):
        """Raise a clear error for too many tokens or ids out of range.

        The length is checked where it is known; the ids where their values
        are (see `keras_aimv2.validation.check_range`).

        Args:
            token_ids: int tensor `(batch, length)`.

        Returns:
            `token_ids`, checked.
        """
        self._check_length(tuple(token_ids.shape))
        return check_range(
            "token_ids",
            token_ids,
            0,
            self.vocabulary_size - 1,
            f"ids of a vocabulary of {self.vocabulary_size} tokens",
        )

    def _check_length(self, shape):
        if len(shape) != 2:
            raise ValueError(
                "`token_ids` must have shape (batch, length). Received: "
                f"token_ids.shape={shape}"
            )
        if shape[1] is not None and shape[1] > self.sequence_length:
            raise ValueError(
                f"`token_ids` may hold at most sequence_length="
                f"{self.sequence_length} tokens. Received: "
                f"token_ids.shape={shape}"
            )

    def call(self, token_ids):
        token_ids = self.check_token_ids(token_ids)
        x = self.token_embedding(token_ids)
        length = ops.shape(x)[1]
        positions = self.position_embedding[:length]
        x = x + ops.cast(positions, x.dtype)[None]
        for block in self.blocks:
            x = block(x, is_causal=True)
        x = self.final_norm(x)
        # The first end token (argmax returns the first maximum); position
        # 0 when there is none.
        is_end = ops.cast(ops.equal(token_ids, self.end_token_id), "int32")
        end_positions = ops.argmax(is_end, axis=-1)
        selector = ops.one_hot(end_positions, length, dtype=x.dtype)
        return ops.einsum("bl,bld->bd", selector, x)

    def compute_output_shape(self, token_ids_shape):
        return (token_ids_shape[0], self.hidden_dim)

    def compute_output_spec(self, token_ids):
        # Also for NumPy inputs, whose shapes Keras does not collect.
        self._check_length(tuple(token_ids.shape))
        return keras.KerasTensor(
            self.compute_output_shape(token_ids.shape), self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "end_token_id": self.end_token_id,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
