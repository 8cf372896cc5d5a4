"""Patch embedding of the AIMv2 encoder."""

import keras
import numpy as np
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.layers import initializers
from keras_aimv2.layers.norm import RMSNorm
from keras_aimv2.patches import image_layout
from keras_aimv2.patches import patchify
from keras_aimv2.patches import sincos_position_embedding
from keras_aimv2.patches import standardize_data_format

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

    Channels-first images are accepted with
    `data_format="channels_first"`: `keras_aimv2.patches.patchify` reads
    them in the transpose that gathers the patches, so the patch layout,
    the kernel and the outputs are those of the same images channels-last.

    As in AIMv2's trainer, the projection's kernel is Xavier-uniform (that
    of the flattened convolution weight, whose fans are the same) and its
    bias keeps PyTorch's `Conv2d` default, `U(-b, b)` with `b = 1 /
    sqrt(patch_size**2 * channels)`; see `keras_aimv2.layers.initializers`.

    Args:
        hidden_dim: int. Width of the patch tokens.
        patch_size: int. Side of a square patch in pixels.
        position_embedding: str. `"learned"` (one vector per patch of a fixed
            grid, initialised from N(0, 0.02)) or `"sincos"`. Defaults to
            `"learned"`.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        data_format: str or `None`. `"channels_last"` (images `(batch,
            height, width, channels)`) or `"channels_first"` (`(batch,
            channels, height, width)`). Defaults to `None`,
            `keras.config.image_data_format()`.
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
        data_format=None,
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
        self.data_format = standardize_data_format(data_format)
        self.projection = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=initializers.XavierUniform(),
            dtype=self.dtype_policy,
            name="projection",
        )
        self.norm = RMSNorm(
            layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )

    def build(self, input_shape):
        self._check_rank(input_shape)
        _, height, width, channels = image_layout(input_shape, self.data_format)
        if channels is None:
            raise ValueError(
                "The channel count of the images must be known. Received "
                f"images of shape {tuple(input_shape)}."
            )
        self.num_channels = channels
        # The bias's bound depends on the patch size, known only now.
        self.projection.bias_initializer = initializers.torch_linear_bias(
            self.patch_dim
        )
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
            self._check_sides(input_shape)
            self.grid_size = (
                height // self.patch_size,
                width // self.patch_size,
            )
            self.position_embedding = self.add_weight(
                name="position_embedding",
                shape=(self.grid_size[0] * self.grid_size[1], self.hidden_dim),
                initializer=initializers.normal(0.02),
            )

    @property
    def patch_dim(self):
        return self.patch_size * self.patch_size * self.num_channels

    def _layout_name(self):
        if self.data_format == "channels_first":
            return "(batch, channels, height, width)"
        return "(batch, height, width, channels)"

    def _check_rank(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"`images` must have shape {self._layout_name()} "
                f"(data_format={self.data_format!r}). Received: "
                f"images.shape={tuple(shape)}"
            )

    def _check_sides(self, shape):
        _, height, width, _ = image_layout(shape, self.data_format)
        for side, value in (("height", height), ("width", width)):
            if value is not None and value % self.patch_size:
                raise ValueError(
                    f"The image {side} must be a multiple of patch_size="
                    f"{self.patch_size}. Received images of shape "
                    f"{tuple(shape)}, read as {self._layout_name()} "
                    f"(data_format={self.data_format!r}): {side}={value}."
                )

    def check_images(self, shape):
        """Raise a clear error for images this built layer cannot embed.

        Args:
            shape: tuple. The images' shape, in `data_format` order.
        """
        self._check_rank(shape)
        _, height, width, channels = image_layout(shape, self.data_format)
        if channels != self.num_channels:
            raise ValueError(
                f"`images` must have {self.num_channels} channels in "
                f"{self._layout_name()} order (data_format="
                f"{self.data_format!r}). Received: images.shape="
                f"{tuple(shape)}"
            )
        self._check_sides(shape)
        if self.grid_size is not None:
            expected = tuple(g * self.patch_size for g in self.grid_size)
            if (height, width) not in (expected, (None, None)):
                raise ValueError(
                    f"`images` must be {expected[0]}x{expected[1]} pixels, "
                    "the size of the learned position embedding. Received: "
                    f"images.shape={tuple(shape)}"
                )

    def call(self, images):
        self.check_images(images.shape)
        patches = patchify(images, self.patch_size, self.data_format)
        x = self.norm(self.projection(patches))
        if self.position_embedding_type == "learned":
            return x + ops.cast(self.position_embedding, x.dtype)[None]
        _, height, width, _ = image_layout(ops.shape(images), self.data_format)
        table = sincos_position_embedding(
            height // self.patch_size, width // self.patch_size, self.hidden_dim
        )
        return x + ops.cast(table, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = image_layout(input_shape, self.data_format)
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
                "data_format": self.data_format,
            }
        )
        return config


# The cubic convolution coefficient of PyTorch's bicubic interpolation,
# which timm and the Hugging Face ports use to resize position embeddings.
CUBIC_COEFFICIENT = -0.75


def _cubic_weight(distance, a=CUBIC_COEFFICIENT):
    """Keys' cubic convolution kernel at `distance` (a NumPy array)."""
    d = np.abs(distance)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return np.where(d <= 1.0, near, np.where(d < 2.0, far, 0.0))


def bicubic_resize_matrix(source_size, target_size):
    """The linear map of a bicubic resize along one axis, as a matrix.

    Sample centers are aligned (`align_corners=False`): target sample `i`
    reads the source at `(i + 0.5) * source_size / target_size - 0.5`, with
    the four nearest source samples weighted by Keys' cubic kernel
    (coefficient `-0.75`, as `torch.nn.functional.interpolate`) and indices
    past the ends clamped to the border. Equal sizes give the identity.

    Args:
        source_size: int. Samples along the axis before resizing.
        target_size: int. Samples along the axis after resizing.

    Returns:
        A float64 NumPy array of shape `(target_size, source_size)`.

    Example:

    >>> bicubic_resize_matrix(16, 24).shape
    (24, 16)
    """
    for name, value in (
        ("source_size", source_size),
        ("target_size", target_size),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: {name}={value!r}"
            )
    if source_size == target_size:
        return np.eye(target_size)
    matrix = np.zeros((target_size, source_size))
    positions = (np.arange(target_size) + 0.5) * source_size / target_size
    positions = positions - 0.5
    base = np.floor(positions).astype(int)
    fraction = positions - base
    for offset in (-1, 0, 1, 2):
        weights = _cubic_weight(fraction - offset)
        columns = np.clip(base + offset, 0, source_size - 1)
        np.add.at(matrix, (np.arange(target_size), columns), weights)
    return matrix


def resample_position_embedding(table, source_grid, target_grid):
    """Resample a learned position embedding to another patch grid.

    The table is seen as a `(rows, cols)` grid of vectors in raster order
    and resized bicubically along both axes, as when AIMv2's 224-pixel
    models (16 x 16 patches) are continued at 336 or 448 pixels (24 x 24,
    32 x 32). The result depends only on NumPy, so it is the same on every
    backend; a grid of the same size is returned unchanged.

    Args:
        table: array of shape `(rows * cols, dim)`.
        source_grid: tuple `(rows, cols)` of the table.
        target_grid: tuple `(rows, cols)` of the result.

    Returns:
        A NumPy array of shape `(target_rows * target_cols, dim)`, of the
        dtype of `table`.

    Example:

    >>> table = np.random.normal(size=(256, 64))
    >>> resample_position_embedding(table, (16, 16), (24, 24)).shape
    (576, 64)
    """
    table = np.asarray(table)
    source_grid, target_grid = tuple(source_grid), tuple(target_grid)
    if table.ndim != 2 or len(source_grid) != 2 or len(target_grid) != 2:
        raise ValueError(
            "`table` must have shape (rows * cols, dim) and the grids must "
            f"be (rows, cols). Received: table.shape={table.shape}, "
            f"source_grid={source_grid}, target_grid={target_grid}"
        )
    if table.shape[0] != source_grid[0] * source_grid[1]:
        raise ValueError(
            f"`table` has {table.shape[0]} rows, but source_grid="
            f"{source_grid} holds {source_grid[0] * source_grid[1]} patches."
        )
    if source_grid == target_grid:
        return table.copy()
    rows = bicubic_resize_matrix(source_grid[0], target_grid[0])
    cols = bicubic_resize_matrix(source_grid[1], target_grid[1])
    grid = table.astype(np.float64).reshape(*source_grid, table.shape[1])
    resized = np.einsum("ir,jc,rcd->ijd", rows, cols, grid)
    return resized.reshape(-1, table.shape[1]).astype(table.dtype)
