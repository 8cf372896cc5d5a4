"""Patch embedding of the AIMv2 encoder."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers.norm import RMSNorm
from keras_aimv2.patches import patchify
from keras_aimv2.patches import sincos_position_embedding

POSITION_EMBEDDINGS = ("learned", "sincos")


@register
class PatchEmbedding(keras.layers.Layer):
    """Embed images as patch tokens: projection, RMSNorm, positions.

    The projection is a linear map of each flattened patch with a bias,
    which is exactly a convolution with kernel and stride `patch_size`; its
    kernel is stored as `(patch_size * patch_size * channels, hidden_dim)` in
    (row, column, channel) order. AIMv2 then applies RMSNorm and adds either
    a learned absolute position embedding (the released fixed-resolution
    models) or a fixed 2D sine-cosine table computed for the input's grid
    (the native-resolution model, any image size).

    Args:
        hidden_dim: int. Width of the patch tokens.
        patch_size: int. Side of a square patch in pixels.
        position_embedding: str. `"learned"` (one vector per patch of a fixed
            grid, initialised from N(0, 0.02)) or `"sincos"`. Defaults to
            `"learned"`.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> layer = PatchEmbedding(hidden_dim=64, patch_size=8)
    >>> layer(np.zeros((2, 32, 32, 3))).shape
    (2, 16, 64)
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        position_embedding="learned",
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                "`position_embedding` must be one of "
                f"{POSITION_EMBEDDINGS}. Received: "
                f"position_embedding={position_embedding!r}"
            )
        self.hidden_dim = hidden_dim
        self.patch_size = patch_size
        self.position_embedding_type = position_embedding
        self.layer_norm_epsilon = layer_norm_epsilon
        self.projection = keras.layers.Dense(
            hidden_dim,
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="projection",
        )
        self.norm = RMSNorm(
            layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if channels is None:
            raise ValueError(
                "The channel count of the images must be known. Received "
                f"images of shape {tuple(input_shape)}."
            )
        self.num_channels = channels
        self.projection.build((None, None, self.patch_dim))
        self.norm.build((None, None, self.hidden_dim))
        self.grid_size = None
        if self.position_embedding_type == "learned":
            if height is None or width is None:
                raise ValueError(
                    "Learned position embeddings need a fixed image size; "
                    "use position_embedding='sincos' for images of any "
                    f"size. Received images of shape {tuple(input_shape)}."
                )
            self._check_sides(height, width)
            self.grid_size = (
                height // self.patch_size,
                width // self.patch_size,
            )
            self.position_embedding = self.add_weight(
                name="position_embedding",
                shape=(self.grid_size[0] * self.grid_size[1], self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

    @property
    def patch_dim(self):
        return self.patch_size * self.patch_size * self.num_channels

    def _check_sides(self, height, width):
        for side, value in (("height", height), ("width", width)):
            if value is not None and value % self.patch_size:
                raise ValueError(
                    f"The image {side} must be a multiple of patch_size="
                    f"{self.patch_size}. Received images with {side}={value}."
                )

    def _check_images(self, shape):
        if len(shape) != 4:
            raise ValueError(
                "`images` must have shape (batch, height, width, channels). "
                f"Received: images.shape={tuple(shape)}"
            )
        if shape[-1] != self.num_channels:
            raise ValueError(
                f"`images` must have {self.num_channels} channels. "
                f"Received: images.shape={tuple(shape)}"
            )
        self._check_sides(shape[1], shape[2])
        if self.grid_size is not None:
            expected = tuple(g * self.patch_size for g in self.grid_size)
            if tuple(shape[1:3]) not in (expected, (None, None)):
                raise ValueError(
                    f"`images` must be {expected[0]}x{expected[1]} pixels, "
                    "the size of the learned position embedding. Received: "
                    f"images.shape={tuple(shape)}"
                )

    def call(self, images):
        self._check_images(images.shape)
        x = self.projection(patchify(images, self.patch_size))
        x = self.norm(x)
        if self.position_embedding_type == "learned":
            return x + self.position_embedding[None]
        shape = ops.shape(images)
        table = sincos_position_embedding(
            shape[1] // self.patch_size,
            shape[2] // self.patch_size,
            self.hidden_dim,
        )
        return x + ops.cast(table, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if height is None or width is None:
            return (batch, None, self.hidden_dim)
        num_patches = (height // self.patch_size) * (width // self.patch_size)
        return (batch, num_patches, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "patch_size": self.patch_size,
                "position_embedding": self.position_embedding_type,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
