"""Images as sequences of patches: the unit AIMv2 embeds and regresses."""

import keras
from keras import ops

DATA_FORMATS = ("channels_last", "channels_first")


def standardize_data_format(data_format):
    """`data_format` checked, or Keras's image data format when `None`.

    Args:
        data_format: str or `None`. `"channels_last"` (images `(batch,
            height, width, channels)`) or `"channels_first"` (`(batch,
            channels, height, width)`); `None` reads
            `keras.config.image_data_format()`.

    Returns:
        `"channels_last"` or `"channels_first"`.

    Example:

    >>> standardize_data_format("Channels_First")
    'channels_first'
    """
    if data_format is None:
        return keras.config.image_data_format()
    standardized = str(data_format).lower()
    if standardized not in DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be one of {DATA_FORMATS} or `None`. "
            f"Received: data_format={data_format!r}"
        )
    return standardized


def image_layout(shape, data_format):
    """`(batch, height, width, channels)` of an image shape in `data_format`.

    Args:
        shape: tuple of 4 ints or `None`s, in the order of `data_format`.
        data_format: `"channels_last"` or `"channels_first"`.

    Returns:
        A tuple `(batch, height, width, channels)`.

    Example:

    >>> image_layout((2, 3, 32, 48), "channels_first")
    (2, 32, 48, 3)
    """
    batch, *rest = tuple(shape)
    if data_format == "channels_first":
        channels, height, width = rest
    else:
        height, width, channels = rest
    return batch, height, width, channels


def patchify(images, patch_size, data_format=None):
    """Cut images into non-overlapping square patches in raster order.

    Each patch is flattened in (row, column, channel) order with the channel
    fastest, which is the layout of the pixel targets of AIMv2 and of a
    channels-last convolution kernel of size and stride `patch_size`,
    whatever the layout of `images`: channels-first images are transposed
    here, in the same transpose that gathers the patches.

    Args:
        images: tensor of shape `(batch, height, width, channels)`, or
            `(batch, channels, height, width)` with
            `data_format="channels_first"`; height and width multiples of
            `patch_size`.
        patch_size: int. Side of a patch in pixels.
        data_format: str or `None`. `"channels_last"` or
            `"channels_first"`. Defaults to `None`,
            `keras.config.image_data_format()`.

    Returns:
        Tensor of shape `(batch, num_patches, patch_size**2 * channels)`.

    Example:

    >>> patchify(np.zeros((2, 28, 28, 3)), 14).shape
    (2, 4, 588)
    >>> patchify(np.zeros((2, 3, 28, 28)), 14, "channels_first").shape
    (2, 4, 588)
    """
    data_format = standardize_data_format(data_format)
    batch, height, width, channels = image_layout(
        ops.shape(images), data_format
    )
    rows, cols = height // patch_size, width // patch_size
    if data_format == "channels_first":
        x = ops.reshape(
            images, (batch, channels, rows, patch_size, cols, patch_size)
        )
        x = ops.transpose(x, (0, 2, 4, 3, 5, 1))
    else:
        x = ops.reshape(
            images, (batch, rows, patch_size, cols, patch_size, channels)
        )
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(
        x, (batch, rows * cols, patch_size * patch_size * channels)
    )


def unpatchify(patches, grid_size, patch_size, channels=3, data_format=None):
    """Invert `patchify`: patches in raster order back to images.

    Args:
        patches: tensor of shape `(batch, rows * cols, patch_size**2 *
            channels)`.
        grid_size: tuple `(rows, cols)`, the number of patches per side.
        patch_size: int. Side of a patch in pixels.
        channels: int. Channels per pixel. Defaults to `3`.
        data_format: str or `None`. Layout of the returned images,
            `"channels_last"` or `"channels_first"`. Defaults to `None`,
            `keras.config.image_data_format()`.

    Returns:
        Tensor of shape `(batch, rows * patch_size, cols * patch_size,
        channels)`, or `(batch, channels, rows * patch_size, cols *
        patch_size)` for `"channels_first"`.

    Example:

    >>> unpatchify(np.zeros((2, 4, 588)), (2, 2), 14).shape
    (2, 28, 28, 3)
    """
    data_format = standardize_data_format(data_format)
    rows, cols = grid_size
    batch = ops.shape(patches)[0]
    x = ops.reshape(
        patches, (batch, rows, cols, patch_size, patch_size, channels)
    )
    if data_format == "channels_first":
        x = ops.transpose(x, (0, 5, 1, 3, 2, 4))
        shape = (batch, channels, rows * patch_size, cols * patch_size)
    else:
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        shape = (batch, rows * patch_size, cols * patch_size, channels)
    return ops.reshape(x, shape)


def patch_statistics(patches, epsilon=1e-6):
    """Mean and spread of each patch, the statistics of AIMv2's targets.

    The spread is `sqrt(unbiased variance + epsilon)` over all the patch's
    values, the per-patch normalization introduced by MAE.

    Args:
        patches: tensor of shape `(..., patch_dim)`.
        epsilon: float. Added to the variance. Defaults to `1e-6`.

    Returns:
        `(mean, spread)`: float32 tensors of shape `(..., 1)`.
    """
    x = ops.cast(patches, "float32")
    count = ops.shape(x)[-1]
    mean = ops.mean(x, axis=-1, keepdims=True)
    variance = ops.sum(ops.square(x - mean), axis=-1, keepdims=True) / (
        ops.cast(count, "float32") - 1.0
    )
    return mean, ops.sqrt(variance + epsilon)


def normalize_patches(patches, epsilon=1e-6):
    """Normalize each patch over all its values, as AIMv2's pixel targets.

    `(patch - mean) / spread` with the statistics of `patch_statistics`.

    Args:
        patches: tensor of shape `(..., patch_dim)`.
        epsilon: float. Added to the variance. Defaults to `1e-6`.

    Returns:
        Float32 tensor of the same shape.
    """
    mean, spread = patch_statistics(patches, epsilon)
    return (ops.cast(patches, "float32") - mean) / spread


def sincos_position_embedding(rows, cols, dim, temperature=10000.0):
    """Fixed 2D sine-cosine position table for a grid of patches.

    The channels are laid out as `[sin(col) | cos(col) | sin(row) |
    cos(row)]`, each `dim // 4` wide, with frequencies
    `1 / temperature ** (i / (dim // 4))`: the table of AIMv2's
    native-resolution model.

    Args:
        rows: int or scalar tensor. Patches per column of the grid.
        cols: int or scalar tensor. Patches per row of the grid.
        dim: int. Width of the table, a multiple of 4.
        temperature: float. Base of the frequencies. Defaults to `10000`.

    Returns:
        Float32 tensor of shape `(rows * cols, dim)`, in raster order.
    """
    if dim % 4:
        raise ValueError(
            f"`dim` must be a multiple of 4 for a 2D sine-cosine table. "
            f"Received: dim={dim}"
        )
    quarter = dim // 4
    omega = 1.0 / temperature ** (
        ops.arange(quarter, dtype="float32") / float(quarter)
    )
    row_ids, col_ids = ops.meshgrid(
        ops.arange(rows, dtype="float32"),
        ops.arange(cols, dtype="float32"),
        indexing="ij",
    )
    col_angles = ops.reshape(col_ids, (-1, 1)) * omega[None, :]
    row_angles = ops.reshape(row_ids, (-1, 1)) * omega[None, :]
    return ops.concatenate(
        [
            ops.sin(col_angles),
            ops.cos(col_angles),
            ops.sin(row_angles),
            ops.cos(row_angles),
        ],
        axis=-1,
    )
