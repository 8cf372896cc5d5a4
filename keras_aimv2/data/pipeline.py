"""Input pipeline of AIMv2 pre-training: shards to augmented image batches.

AIMv2 augments images with a random resized crop (scale `[0.4, 1]`, aspect
ratio `[3/4, 4/3]`, bicubic) and a horizontal flip, nothing else ("Multimodal
Autoregressive Pre-training of Large Vision Encoders", Fini et al., CVPR
2025, Table A1). The pipeline yields images in `[0, 255]` and raw captions;
`AIMV2PretrainerPreprocessor` normalizes and tokenizes them inside `fit`.

Every random draw is stateless and seeded by `(seed, element index)`, so
two pipelines with the same seed give identical batches even though images
are decoded and augmented in parallel.
"""

import math
import time

import tensorflow as tf

from keras_aimv2.data.shards import read_shards
from keras_aimv2.validation import check_positive_int

CROP_SCALE = (0.4, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# Tries of the random crop before falling back to a center crop, as in
# torchvision's RandomResizedCrop.
CROP_ATTEMPTS = 10


def random_resized_crop_box(
    height, width, seed, scale=CROP_SCALE, ratio=CROP_RATIO
):
    """A random crop window as drawn by `RandomResizedCrop`.

    Draws the window's area as a share of the image in `scale` and its
    aspect ratio (width / height) log-uniformly in `ratio`, with its
    position uniform over the image. Of `CROP_ATTEMPTS` draws made at
    once, the first that fits in the image is used; when none fits, the
    window is the largest centered one with a ratio in `ratio`.

    Args:
        height: int scalar tensor. Image height.
        width: int scalar tensor. Image width.
        seed: int tensor of shape `(2,)`. Seed of the stateless draws.
        scale: tuple of two floats. Bounds of the window's area share.
            Defaults to `(0.4, 1.0)`, AIMv2's.
        ratio: tuple of two floats. Bounds of the window's aspect ratio.
            Defaults to `(3 / 4, 4 / 3)`.

    Returns:
        A tuple `(top, left, crop_height, crop_width)` of int32 scalars.

    Example:

    >>> random_resized_crop_box(480, 640, seed=tf.constant([0, 1]))
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    area_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    area = tf.cast(height * width, tf.float32)
    target_area = area * tf.random.stateless_uniform(
        [CROP_ATTEMPTS], area_seed, scale[0], scale[1]
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            [CROP_ATTEMPTS],
            ratio_seed,
            math.log(ratio[0]),
            math.log(ratio[1]),
        )
    )
    crop_width = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_height = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (
        (crop_width > 0)
        & (crop_height > 0)
        & (crop_width <= width)
        & (crop_height <= height)
    )
    offsets = tf.random.stateless_uniform([CROP_ATTEMPTS, 2], offset_seed)
    room_height = height - crop_height
    room_width = width - crop_width
    top = tf.cast(offsets[:, 0] * tf.cast(room_height + 1, tf.float32), "int32")
    left = tf.cast(offsets[:, 1] * tf.cast(room_width + 1, tf.float32), "int32")
    # Rounding of the float product must never push the window out.
    top = tf.minimum(top, room_height)
    left = tf.minimum(left, room_width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    drawn = tf.stack(
        [top[first], left[first], crop_height[first], crop_width[first]]
    )

    fallback_height, fallback_width = _center_window(height, width, ratio)
    fallback = tf.stack(
        [
            (height - fallback_height) // 2,
            (width - fallback_width) // 2,
            fallback_height,
            fallback_width,
        ]
    )
    box = tf.where(tf.reduce_any(fits), drawn, fallback)
    return tuple(tf.unstack(box))


def _center_window(height, width, ratio):
    """Size of the largest window with the image's ratio clipped to `ratio`."""
    image_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    min_ratio, max_ratio = ratio
    narrow_height = tf.cast(
        tf.round(tf.cast(width, tf.float32) / min_ratio), tf.int32
    )
    wide_width = tf.cast(
        tf.round(tf.cast(height, tf.float32) * max_ratio), tf.int32
    )
    crop_height = tf.where(
        image_ratio < min_ratio, tf.minimum(narrow_height, height), height
    )
    crop_width = tf.where(
        image_ratio > max_ratio, tf.minimum(wide_width, width), width
    )
    return crop_height, crop_width


def resize_image(image, size, antialias=True):
    """Bicubic resize to `size`, clipped to `[0, 255]`."""

    def resize(antialias):
        return tf.image.resize(
            image, size, method="bicubic", antialias=antialias
        )

    if antialias:
        # The filter only changes downscaling, and costs twice the time:
        # upscaled crops take the plain kernel, with identical results.
        shape = tf.shape(image)
        shrinks = (shape[0] > size[0]) | (shape[1] > size[1])
        image = tf.cond(shrinks, lambda: resize(True), lambda: resize(False))
    else:
        image = resize(False)
    # Bicubic filters overshoot; keep the promised [0, 255].
    return tf.clip_by_value(image, 0.0, 255.0)


def _decode(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def train_transform(
    encoded,
    seed,
    image_size,
    scale=CROP_SCALE,
    ratio=CROP_RATIO,
    antialias=True,
    flip_probability=0.5,
):
    """Decode an image, crop it at random, resize it and maybe flip it.

    Args:
        encoded: string scalar tensor. An encoded image (JPEG, PNG, ...).
        seed: int tensor of shape `(2,)`. Seed of the stateless draws.
        image_size: tuple `(height, width)`. Output size.
        scale: tuple of two floats. Area share of the crop. Defaults to
            `(0.4, 1.0)`.
        ratio: tuple of two floats. Aspect ratio of the crop. Defaults to
            `(3 / 4, 4 / 3)`.
        antialias: bool. Low-pass filter when shrinking, as PIL does.
            Defaults to `True`.
        flip_probability: float. Chance of a horizontal flip. Defaults to
            `0.5`, AIMv2's.

    Returns:
        A float32 tensor of shape `(*image_size, 3)` with values in
        `[0, 255]`.

    Example:

    >>> image = train_transform(encoded, tf.constant([0, 7]), (224, 224))
    """
    return augment_image(
        _decode(encoded),
        seed,
        image_size,
        scale=scale,
        ratio=ratio,
        antialias=antialias,
        flip_probability=flip_probability,
    )


def augment_image(
    image,
    seed,
    image_size,
    scale=CROP_SCALE,
    ratio=CROP_RATIO,
    antialias=True,
    flip_probability=0.5,
):
    """RandomResizedCrop and horizontal flip of a decoded image.

    The augmentation of AIMv2's pre-training (and, with a wider `scale`, of
    its attentive probe), drawn statelessly from `seed`.

    Args:
        image: tensor `(height, width, 3)`, any real or integer dtype, with
            values in `[0, 255]`.
        seed: int tensor of shape `(2,)`. Seed of the stateless draws.
        image_size: tuple `(height, width)`. Output size.
        scale: tuple of two floats. Area share of the crop. Defaults to
            `(0.4, 1.0)`.
        ratio: tuple of two floats. Aspect ratio of the crop. Defaults to
            `(3 / 4, 4 / 3)`.
        antialias: bool. Low-pass filter when shrinking. Defaults to
            `True`.
        flip_probability: float. Chance of a horizontal flip. Defaults to
            `0.5`.

    Returns:
        A float32 tensor of shape `(*image_size, 3)` in `[0, 255]`.
    """
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    shape = tf.shape(image)
    top, left, crop_height, crop_width = random_resized_crop_box(
        shape[0], shape[1], crop_seed, scale=scale, ratio=ratio
    )
    image = tf.image.crop_to_bounding_box(
        image, top, left, crop_height, crop_width
    )
    image = resize_image(tf.cast(image, tf.float32), image_size, antialias)
    flip = tf.random.stateless_uniform([], flip_seed) < flip_probability
    image = tf.cond(
        flip, lambda: tf.image.flip_left_right(image), lambda: image
    )
    image.set_shape([*image_size, 3])
    return image


def eval_transform(encoded, image_size, antialias=True):
    """Decode an image, center-crop it to the output's shape and resize it.

    The crop is the largest centered window with the aspect ratio of
    `image_size` (for a square output, the central square), so the result
    equals resizing the shorter side then center cropping ("crop 1.0").

    Args:
        encoded: string scalar tensor. An encoded image.
        image_size: tuple `(height, width)`. Output size.
        antialias: bool. Low-pass filter when shrinking. Defaults to
            `True`.

    Returns:
        A float32 tensor of shape `(*image_size, 3)` in `[0, 255]`.

    Example:

    >>> image = eval_transform(encoded, (224, 224))
    """
    image = _decode(encoded)
    shape = tf.shape(image)
    target = image_size[1] / image_size[0]
    crop_height, crop_width = _center_window(
        shape[0], shape[1], (target, target)
    )
    image = tf.image.crop_to_bounding_box(
        image,
        (shape[0] - crop_height) // 2,
        (shape[1] - crop_width) // 2,
        crop_height,
        crop_width,
    )
    image = resize_image(tf.cast(image, tf.float32), image_size, antialias)
    image.set_shape([*image_size, 3])
    return image


def pretraining_dataset(
    shards_dir,
    batch_size,
    image_size,
    training=True,
    seed=0,
    split="train",
    repeat=None,
    shuffle_buffer_size=4096,
    crop_scale=CROP_SCALE,
    crop_ratio=CROP_RATIO,
    flip_probability=0.5,
    antialias=True,
    num_parallel_calls=tf.data.AUTOTUNE,
    complete_last_batch=False,
):
    """Batches of augmented images and raw captions for AIMv2 pre-training.

    In training, examples are shuffled (shard order and a buffer, both
    seeded and reshuffled at every pass), randomly crop-resized and flipped
    (`train_transform`); in evaluation they keep their order and are
    center-cropped and resized (`eval_transform`). Images are decoded and
    transformed in parallel; batches are complete (`drop_remainder=True`,
    as every replica of a distributed step needs its share) and
    prefetched. For an evaluation that must see every example,
    `complete_last_batch=True` completes the last batch with padding
    examples of weight 0 instead of dropping it. Attach an
    `AIMV2PretrainerPreprocessor` to the model to normalize and tokenize.

    Args:
        shards_dir: str or `os.PathLike`. A directory of TFRecord shards
            written by `keras_aimv2.data.shards.write_shards`.
        batch_size: int. Examples per batch.
        image_size: int or tuple `(height, width)`. Output image size.
        training: bool. Augment and shuffle. Defaults to `True`.
        seed: int. Seed of the shuffle and of every augmentation. Defaults
            to `0`.
        split: str. The split to read. Defaults to `"train"`.
        repeat: `None`, bool or int. Passes over the data: `None` repeats
            forever in training and reads once otherwise; `True` repeats
            forever, `False` reads once, an int `n` reads `n` times.
            Defaults to `None`.
        shuffle_buffer_size: int. Encoded examples in the shuffle buffer
            (training only). Defaults to `4096`.
        crop_scale: tuple of two floats. Area share of the random crop.
            Defaults to `(0.4, 1.0)`.
        crop_ratio: tuple of two floats. Aspect ratio of the random crop.
            Defaults to `(3 / 4, 4 / 3)`.
        flip_probability: float. Chance of a horizontal flip in training.
            Defaults to `0.5`; turn it off when captions name left and
            right.
        antialias: bool. Low-pass filter when shrinking, as PIL's bicubic
            does. Defaults to `True`.
        num_parallel_calls: int. Parallelism of decoding. Defaults to
            `tf.data.AUTOTUNE`.
        complete_last_batch: bool. Evaluation only: yield `(x, y,
            sample_weight)` where `sample_weight` is 1 for the split's
            examples and 0 for the padding (black images, empty captions)
            that completes the last batch, and `y` a placeholder (the
            targets come from `x`). Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of dicts `{"images": float32 (batch_size,
        height, width, 3) in [0, 255], "captions": tf.string
        (batch_size,)}`, or of `(dict, y, sample_weight)` with
        `complete_last_batch=True`.

    Example:

    >>> dataset = pretraining_dataset("shards/", batch_size=64, image_size=224)
    >>> pretrainer.fit(dataset, steps_per_epoch=1000, epochs=10)
    """
    image_size = _check_image_size(image_size)
    check_positive_int("batch_size", batch_size)
    check_positive_int("shuffle_buffer_size", shuffle_buffer_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    if not 0.0 <= flip_probability <= 1.0:
        raise ValueError(
            "`flip_probability` must lie in [0, 1]. Received: "
            f"flip_probability={flip_probability!r}"
        )
    for name, bounds in (
        ("crop_scale", crop_scale),
        ("crop_ratio", crop_ratio),
    ):
        if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
            raise ValueError(
                f"`{name}` must be two positive floats (low, high) with low "
                f"<= high. Received: {name}={bounds!r}"
            )
    if training and complete_last_batch:
        raise ValueError(
            "`complete_last_batch=True` is for evaluation: training batches "
            "are drawn from a repeated, shuffled stream. Received: "
            "training=True"
        )
    passes = _passes(repeat, training)

    examples = read_shards(
        shards_dir, split=split, shuffle_files=training, seed=seed
    )
    if training:
        examples = examples.shuffle(
            shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True
        )
    examples = examples.repeat(passes)

    def transform(index, example):
        if training:
            element_seed = tf.stack([tf.constant(seed, tf.int64), index])
            image = train_transform(
                example["image"],
                element_seed,
                image_size,
                scale=crop_scale,
                ratio=crop_ratio,
                flip_probability=flip_probability,
                antialias=antialias,
            )
        else:
            image = eval_transform(example["image"], image_size, antialias)
        return {"images": image, "captions": example["caption"]}

    dataset = examples.enumerate().map(
        transform, num_parallel_calls=num_parallel_calls, deterministic=True
    )
    if complete_last_batch:
        dataset = _with_padding(dataset, batch_size - 1, image_size)
    dataset = dataset.batch(
        batch_size,
        drop_remainder=True,
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def measure_throughput(dataset, num_batches, warmup_batches=1):
    """Images per second that a dataset delivers.

    Reads `warmup_batches` batches (filling buffers and starting threads),
    then times the next `num_batches`.

    Args:
        dataset: iterable of dicts with an `"images"` batch, such as
            `pretraining_dataset(...)`.
        num_batches: int. Batches to time.
        warmup_batches: int. Batches read before timing. Defaults to `1`.

    Returns:
        A dict with `"images_per_second"` (float), `"images"` (int) and
        `"seconds"` (float).

    Example:

    >>> dataset = pretraining_dataset("shards/", batch_size=64, image_size=64)
    >>> measure_throughput(dataset, num_batches=20)["images_per_second"]
    """
    check_positive_int("num_batches", num_batches)
    if isinstance(warmup_batches, bool) or not isinstance(warmup_batches, int):
        raise ValueError(
            "`warmup_batches` must be a non-negative int. Received: "
            f"warmup_batches={warmup_batches!r}"
        )
    if warmup_batches < 0:
        raise ValueError(
            "`warmup_batches` must be a non-negative int. Received: "
            f"warmup_batches={warmup_batches!r}"
        )
    iterator = iter(dataset)
    needed = warmup_batches + num_batches

    def next_batch(count):
        try:
            return next(iterator)
        except StopIteration:
            raise ValueError(
                f"The dataset ran out after {count} batches; "
                f"warmup_batches + num_batches = {needed} are needed."
            ) from None

    for count in range(warmup_batches):
        next_batch(count)
    images = 0
    start = time.perf_counter()
    for count in range(num_batches):
        images += int(next_batch(warmup_batches + count)["images"].shape[0])
    seconds = time.perf_counter() - start
    return {
        "images_per_second": images / seconds,
        "images": images,
        "seconds": seconds,
    }


def _with_padding(examples, count, image_size):
    """`(x, y, weight)` with weight 1, then `count` padding examples of 0.

    Batched with `drop_remainder=True`, the padding completes the last
    batch and the rest of it is dropped.
    """
    padding = {
        "images": tf.zeros((*image_size, 3), tf.float32),
        "captions": tf.constant(""),
    }
    padding = tf.data.Dataset.from_tensors((padding, 0.0, 0.0)).repeat(count)
    weighted = examples.map(lambda x: (x, 0.0, 1.0))
    return weighted.concatenate(padding)


def _passes(repeat, training):
    if repeat is None:
        return -1 if training else 1
    if isinstance(repeat, bool):
        return -1 if repeat else 1
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(
            "`repeat` must be None, a bool or a positive int. Received: "
            f"repeat={repeat!r}"
        )
    return repeat


def _check_image_size(image_size):
    size = image_size
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(
            isinstance(side, int) and not isinstance(side, bool) and side > 0
            for side in size
        )
    ):
        raise ValueError(
            "`image_size` must be a positive int or a tuple of two positive "
            f"ints (height, width). Received: image_size={image_size!r}"
        )
    return tuple(size)
