"""Images as sequences of patches: the unit AIMv2 embeds and regresses."""

from keras import ops


def patchify(images, patch_size):
    """Cut images into non-overlapping square patches in raster order.

    Each patch is flattened in (row, column, channel) order with the channel
    fastest, which is the layout of the pixel targets of AIMv2 and of a
    channels-last convolution kernel of size and stride `patch_size`.

    Args:
        images: tensor of shape `(batch, height, width, channels)`, with height
            and width multiples of `patch_size`.
        patch_size: int. Side of a patch in pixels.

    Returns:
        Tensor of shape `(batch, num_patches, patch_size**2 * channels)`.

    Example:

    >>> patchify(np.zeros((2, 28, 28, 3)), 14).shape
    (2, 4, 588)
    """
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows, cols = height // patch_size, width // patch_size
    x = ops.reshape(
        images, (batch, rows, patch_size, cols, patch_size, channels)
    )
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(
        x, (batch, rows * cols, patch_size * patch_size * channels)
    )


def unpatchify(patches, grid_size, patch_size, channels=3):
    """Invert `patchify`: patches in raster order back to images.

    Args:
        patches: tensor of shape `(batch, rows * cols, patch_size**2 *
            channels)`.
        grid_size: tuple `(rows, cols)`, the number of patches per side.
        patch_size: int. Side of a patch in pixels.
        channels: int. Channels per pixel. Defaults to `3`.

    Returns:
        Tensor of shape `(batch, rows * patch_size, cols * patch_size,
        channels)`.
    """
    rows, cols = grid_size
    batch = ops.shape(patches)[0]
    x = ops.reshape(
        patches, (batch, rows, cols, patch_size, patch_size, channels)
    )
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(
        x, (batch, rows * patch_size, cols * patch_size, channels)
    )


def normalize_patches(patches, epsilon=1e-6):
    """Normalize each patch over all its values, as AIMv2's pixel targets.

    Subtracts the patch mean and divides by `sqrt(unbiased variance +
    epsilon)`, the per-patch normalization introduced by MAE.

    Args:
        patches: tensor of shape `(..., patch_dim)`.
        epsilon: float. Added to the variance. Defaults to `1e-6`.

    Returns:
        Float32 tensor of the same shape.
    """
    x = ops.cast(patches, "float32")
    count = ops.shape(x)[-1]
    mean = ops.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / (
        ops.cast(count, "float32") - 1.0
    )
    return centered * ops.rsqrt(variance + epsilon)


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
