"""Native-resolution batches with a constant patch budget, as in AIMv2.

AIMv2's native-resolution model ("Multimodal Autoregressive Pre-training of
Large Vision Encoders", Fini et al., CVPR 2025, Section 4) is trained on
images at their own aspect ratio: for each mini-batch a patch count
`A = 2 ** e` is drawn, with `e` the standard normal truncated to `[-1, 1]`
and mapped linearly to `[7, 12]` (128 to 4096 patches); every image is
resized, keeping its aspect ratio, to about `A` patches, and the batch
holds `B = C // A` images, so that the patches per batch stay near the
budget `C`. Positions come from the 2D sine-cosine table of an
`AIMV2Backbone(position_embedding="sincos", image_shape=(None, None, 3))`.

Here the images of one batch share a canvas of `rows x cols` patches,
`rows * cols <= A`, whose aspect ratio is the median of the batch's
images; each image is resized bicubically to the largest size with its own
aspect ratio that fits the canvas and padded at the bottom and right. So
`B * rows * cols <= C` always, with less than `A` patches per image
unused. Shapes change from batch to batch; on JAX and TensorFlow each new
shape compiles the training step once.

Everything random comes from one seeded NumPy generator, so the same seed
gives the same batches.
"""

import io
import math

import numpy as np
from PIL import Image

from keras_aimv2.validation import check_positive_int

# AIMv2's exponents of the per-batch patch count: 2**7 to 2**12 patches.
PATCH_EXPONENT_RANGE = (7.0, 12.0)


def sample_patch_count(rng, exponent_range=PATCH_EXPONENT_RANGE):
    """Draw a mini-batch's patch count `A = 2 ** e`.

    `e` is a standard normal draw truncated to `[-1, 1]` (by rejection)
    and mapped linearly onto `exponent_range`.

    Args:
        rng: `np.random.Generator`. Source of randomness.
        exponent_range: tuple of two floats `(low, high)`. Bounds of `e`.
            Defaults to `(7, 12)`, AIMv2's.

    Returns:
        An int in `[round(2 ** low), round(2 ** high)]`.

    Example:

    >>> sample_patch_count(np.random.default_rng(0))
    """
    low, high = _check_exponent_range(exponent_range)
    while True:
        draw = float(rng.standard_normal())
        if -1.0 <= draw <= 1.0:
            break
    exponent = low + (draw + 1.0) / 2.0 * (high - low)
    return max(1, int(round(2.0**exponent)))


def patch_grid(aspect_ratio, num_patches):
    """A `rows x cols` patch grid of about `num_patches` and a given shape.

    Args:
        aspect_ratio: float. Height over width of the grid wanted.
        num_patches: int. Most patches of the grid.

    Returns:
        A tuple `(rows, cols)` with `rows * cols <= num_patches` and
        `rows / cols` close to `aspect_ratio`.

    Example:

    >>> patch_grid(1.0, 128)
    (11, 11)
    """
    check_positive_int("num_patches", num_patches)
    if not aspect_ratio > 0:
        raise ValueError(
            "`aspect_ratio` must be positive. Received: "
            f"aspect_ratio={aspect_ratio!r}"
        )
    rows = int(round(math.sqrt(num_patches * aspect_ratio)))
    rows = min(max(rows, 1), num_patches)
    cols = max(num_patches // rows, 1)
    return rows, cols


def resize_and_pad(image, canvas_size, pad_value=0.0):
    """Resize an image to fit a canvas, keeping its aspect ratio, and pad.

    The image is resized bicubically to the largest size with its own
    aspect ratio within `canvas_size`, then padded at the bottom and right.

    Args:
        image: uint8 or float array `(height, width, channels)` with values
            in `[0, 255]`.
        canvas_size: tuple `(height, width)` of the output.
        pad_value: float. Value of the padding. Defaults to `0.0`.

    Returns:
        A float32 array of shape `(*canvas_size, channels)` in `[0, 255]`.

    Example:

    >>> resize_and_pad(np.zeros((30, 60, 3), "uint8"), (32, 32)).shape
    (32, 32, 3)
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(
            "`image` must have shape (height, width, channels). Received: "
            f"image.shape={image.shape}"
        )
    height, width, channels = image.shape
    canvas_height, canvas_width = canvas_size
    scale = min(canvas_height / height, canvas_width / width)
    new_height = min(max(int(round(height * scale)), 1), canvas_height)
    new_width = min(max(int(round(width * scale)), 1), canvas_width)
    resized = np.empty((new_height, new_width, channels), np.float32)
    for channel in range(channels):
        plane = Image.fromarray(image[..., channel].astype(np.float32))
        plane = plane.resize((new_width, new_height), Image.Resampling.BICUBIC)
        resized[..., channel] = np.asarray(plane)
    canvas = np.full(
        (canvas_height, canvas_width, channels), pad_value, np.float32
    )
    canvas[:new_height, :new_width] = np.clip(resized, 0.0, 255.0)
    return canvas


def native_resolution_batches(
    examples,
    patches_per_batch,
    patch_size,
    seed=0,
    exponent_range=PATCH_EXPONENT_RANGE,
    pad_value=0.0,
):
    """Batch examples at native aspect ratio under a constant patch budget.

    For each batch: draw `A` (`sample_patch_count`), take the next `B =
    patches_per_batch // A` examples, choose a canvas of `rows x cols <= A`
    patches with their median aspect ratio (`patch_grid`), and resize and
    pad every image onto it (`resize_and_pad`). A last, incomplete batch is
    dropped.

    Args:
        examples: iterable of dicts with an `"image"` array `(height, width,
            channels)` in `[0, 255]` and any other entries (captions,
            labels), which are gathered per batch.
        patches_per_batch: int. The budget `C`; must be at least the
            largest `A`, `round(2 ** exponent_range[1])`.
        patch_size: int. Side of a patch in pixels.
        seed: int. Seed of the patch-count draws. Defaults to `0`.
        exponent_range: tuple of two floats. Bounds of the exponent of `A`.
            Defaults to `(7, 12)`, AIMv2's.
        pad_value: float. Value of the padding pixels. Defaults to `0.0`.

    Returns:
        A generator of dicts: `"images"`, float32 `(B, rows * patch_size,
        cols * patch_size, channels)` in `[0, 255]`, and for every other
        key of the examples a NumPy array of its `B` values (the key
        `"image"` becomes `"images"`; others keep their names).

    Example:

    >>> examples = [{"image": np.zeros((48, 64, 3)), "label": 1}] * 100
    >>> batches = native_resolution_batches(
    ...     examples, patches_per_batch=64, patch_size=8,
    ...     exponent_range=(2, 4),
    ... )
    >>> next(batches)["images"].shape
    """
    check_positive_int("patches_per_batch", patches_per_batch)
    check_positive_int("patch_size", patch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    low, high = _check_exponent_range(exponent_range)
    largest = int(round(2.0**high))
    if patches_per_batch < largest:
        raise ValueError(
            "`patches_per_batch` must hold at least one image of the "
            f"largest patch count 2**{high} = {largest}. Received: "
            f"patches_per_batch={patches_per_batch}"
        )
    return _batches(
        iter(examples),
        patches_per_batch,
        patch_size,
        np.random.default_rng(seed),
        (low, high),
        pad_value,
    )


def _batches(examples, budget, patch_size, rng, exponent_range, pad_value):
    while True:
        num_patches = sample_patch_count(rng, exponent_range)
        batch_size = budget // num_patches
        chunk = []
        for example in examples:
            chunk.append(example)
            if len(chunk) == batch_size:
                break
        if len(chunk) < batch_size:
            return
        images = [np.asarray(example["image"]) for example in chunk]
        ratios = [image.shape[0] / image.shape[1] for image in images]
        rows, cols = patch_grid(float(np.median(ratios)), num_patches)
        canvas = (rows * patch_size, cols * patch_size)
        batch = {
            "images": np.stack(
                [resize_and_pad(image, canvas, pad_value) for image in images]
            )
        }
        for key in chunk[0]:
            if key != "image":
                batch[key] = np.asarray([example[key] for example in chunk])
        yield batch


def native_resolution_dataset(
    shards_dir,
    patches_per_batch,
    patch_size,
    seed=0,
    split="train",
    exponent_range=PATCH_EXPONENT_RANGE,
    shuffle_buffer_size=4096,
    repeat=True,
):
    """Native-resolution pre-training batches from TFRecord shards.

    Reads the shards (shuffled with `seed`), decodes each image to RGB and
    batches them with `native_resolution_batches`. Attach an
    `AIMV2PretrainerPreprocessor` whose image converter has
    `image_size=None` (normalization only) to an `AIMV2Pretrainer` on a
    sine-cosine backbone with `image_shape=(None, None, 3)`.

    Args:
        shards_dir: str or path. A directory written by
            `keras_aimv2.data.shards.write_shards`.
        patches_per_batch: int. The patch budget `C` of a batch.
        patch_size: int. Side of a patch in pixels.
        seed: int. Seed of the shuffle and the patch counts. Defaults to
            `0`.
        split: str. The split to read. Defaults to `"train"`.
        exponent_range: tuple of two floats. Bounds of the exponent of the
            per-batch patch count. Defaults to `(7, 12)`, AIMv2's.
        shuffle_buffer_size: int. Examples in the shuffle buffer. Defaults
            to `4096`.
        repeat: bool. Read the shards again and again. Defaults to `True`.

    Returns:
        A `tf.data.Dataset` of dicts `{"images": float32 (batch, height,
        width, 3) in [0, 255], "captions": tf.string (batch,)}` whose batch
        size and image size vary between batches.

    Example:

    >>> dataset = native_resolution_dataset(
    ...     "shards/", patches_per_batch=8192, patch_size=14
    ... )
    >>> pretrainer.fit(dataset, steps_per_epoch=100, epochs=1)
    """
    import tensorflow as tf

    from keras_aimv2.data.shards import read_shards

    check_positive_int("shuffle_buffer_size", shuffle_buffer_size)
    records = read_shards(
        shards_dir, split=split, shuffle_files=True, seed=seed
    )
    records = records.shuffle(
        shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True
    )
    records = records.repeat(-1 if repeat else 1)

    def examples():
        for record in records.as_numpy_iterator():
            with Image.open(io.BytesIO(record["image"])) as image:
                pixels = np.asarray(image.convert("RGB"))
            yield {"image": pixels, "captions": record["caption"]}

    def generate():
        return native_resolution_batches(
            examples(),
            patches_per_batch,
            patch_size,
            seed=seed,
            exponent_range=exponent_range,
        )

    signature = {
        "images": tf.TensorSpec((None, None, None, 3), tf.float32),
        "captions": tf.TensorSpec((None,), tf.string),
    }
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def _check_exponent_range(exponent_range):
    try:
        low, high = (float(value) for value in exponent_range)
    except (TypeError, ValueError):
        raise ValueError(
            "`exponent_range` must be two numbers (low, high). Received: "
            f"exponent_range={exponent_range!r}"
        ) from None
    if not 0.0 <= low <= high:
        raise ValueError(
            "`exponent_range` must satisfy 0 <= low <= high. Received: "
            f"exponent_range={exponent_range!r}"
        )
    return low, high
