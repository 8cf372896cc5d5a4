"""The AIMv2 multimodal decoder, used in pre-training only."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers import initializers
from keras_aimv2.layers.transformer import build_blocks
from keras_aimv2.layers.transformer import run_block
from keras_aimv2.validation import check_range


@register
class MultimodalCausalDecoder(keras.layers.Layer):
    """Causal decoder over `[image tokens][BOS][text tokens]`.

    Encoder features are projected to the decoder width (a linear layer with
    bias; image tokens get no further position embedding). The text is
    embedded, a learned BOS token is prepended, and a learned position
    embedding over `[BOS] + context_length` positions is added. One causal
    stack of pre-norm SwiGLU/RMSNorm blocks then runs over the whole
    sequence, so every text token sees every image patch, and a final
    RMSNorm closes it (AIMv2, Section 3).

    Parameters start as in AIMv2's trainer (see
    `keras_aimv2.layers.initializers`): the image projection keeps PyTorch's
    `nn.Linear` default (kernel and bias `U(-b, b)`, `b = 1 /
    sqrt(encoder_width)`), the token embedding and BOS token are drawn from
    `N(0, 0.02**2)`, the position embedding from `N(0, 0.01**2)`, and the
    blocks as in the encoder.

    Args:
        hidden_dim: int. Decoder width.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Hidden width of the SwiGLU feed-forward.
        vocabulary_size: int. Number of text tokens.
        context_length: int. Most text tokens per caption. Defaults to `77`.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        image_features: float tensor `(batch, num_patches, encoder_width)`.
        token_ids: int tensor `(batch, length)`, `length <= context_length`.
        remat: bool. Recompute each block in the backward pass (see
            `run_block`). Defaults to `False`.

    Returns:
        A tuple `(image_outputs, text_outputs)`: the outputs at the image
        positions, `(batch, num_patches, hidden_dim)` (output `i` predicts
        patch `i + 1`), and at `[BOS] + text`, `(batch, 1 + length,
        hidden_dim)` (output `j` predicts text token `j + 1`).

    Example:

    >>> decoder = MultimodalCausalDecoder(
    ...     hidden_dim=64, num_layers=2, num_heads=2, intermediate_dim=128,
    ...     vocabulary_size=100, context_length=8,
    ... )
    >>> features = np.random.rand(2, 16, 32).astype("float32")
    >>> image, text = decoder(features, np.ones((2, 7), "int32"))
    >>> image.shape, text.shape
    ((2, 16, 64), (2, 8, 64))
    """

    def __init__(
        self,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        vocabulary_size,
        context_length=77,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.vocabulary_size = vocabulary_size
        self.context_length = context_length
        self.layer_norm_epsilon = layer_norm_epsilon
        self.image_projection = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=initializers.torch_linear_kernel(),
            dtype=self.dtype_policy,
            name="image_projection",
        )
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

    def build(self, image_features_shape, token_ids_shape=None):
        # The bias's bound depends on the encoder width, known only now.
        bias_initializer = initializers.torch_linear_bias(
            image_features_shape[-1]
        )
        self.image_projection.bias_initializer = bias_initializer
        self.image_projection.build(image_features_shape)
        self.token_embedding.build(token_ids_shape)
        self.bos_token = self.add_weight(
            name="bos_token",
            shape=(self.hidden_dim,),
            initializer=initializers.normal(0.02),
        )
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.context_length + 1, self.hidden_dim),
            initializer=initializers.normal(0.01),
        )
        for layer in (*self.blocks, self.final_norm):
            layer.build((None, None, self.hidden_dim))

    def check_token_ids(self, token_ids):
        """Raise a clear error for too many tokens or ids out of range."""
        length = token_ids.shape[-1]
        if length is not None and length > self.context_length:
            raise ValueError(
                f"`token_ids` may hold at most context_length="
                f"{self.context_length} tokens. Received: "
                f"token_ids.shape={tuple(token_ids.shape)}"
            )
        return check_range(
            "token_ids",
            token_ids,
            0,
            self.vocabulary_size - 1,
            f"ids of a vocabulary of {self.vocabulary_size} tokens",
        )

    def call(self, image_features, token_ids, remat=False):
        token_ids = self.check_token_ids(token_ids)
        image = self.image_projection(image_features)
        text = self.token_embedding(token_ids)
        batch = ops.shape(text)[0]
        bos = ops.broadcast_to(
            ops.cast(self.bos_token, text.dtype), (batch, 1, self.hidden_dim)
        )
        text = ops.concatenate([bos, text], axis=1)
        positions = self.position_embedding[: ops.shape(text)[1]]
        text = text + ops.cast(positions, text.dtype)[None]
        x = ops.concatenate([image, text], axis=1)
        for block in self.blocks:
            x = run_block(block, x, remat, is_causal=True)
        x = self.final_norm(x)
        num_patches = ops.shape(image)[1]
        return x[:, :num_patches], x[:, num_patches:]

    def compute_output_shape(self, image_features_shape, token_ids_shape):
        batch, num_patches, _ = image_features_shape
        length = token_ids_shape[-1]
        text_length = None if length is None else length + 1
        return (
            (batch, num_patches, self.hidden_dim),
            (batch, text_length, self.hidden_dim),
        )

    def compute_output_spec(self, image_features, token_ids, remat=False):
        # Also for NumPy inputs, whose shapes Keras does not collect.
        shapes = self.compute_output_shape(
            image_features.shape, token_ids.shape
        )
        return tuple(
            keras.KerasTensor(shape, self.compute_dtype) for shape in shapes
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "vocabulary_size": self.vocabulary_size,
                "context_length": self.context_length,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
