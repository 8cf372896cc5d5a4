"""Native resolution: sin-cos encoders on any size, patch-budget batches."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _data_helpers import write_tiny_shards
from conftest import TINY_BACKBONE
from conftest import to_numpy

import keras_aimv2
from keras_aimv2.data.native import native_resolution_batches
from keras_aimv2.data.native import native_resolution_dataset
from keras_aimv2.data.native import patch_grid
from keras_aimv2.data.native import resize_and_pad
from keras_aimv2.data.native import sample_patch_count
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier

PATCH = 4
BUDGET = 64
EXPONENTS = (2, 4)  # 4 to 16 patches per image, 4 to 16 images per batch.


def _examples(count=120, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.integers(
                0, 256, (rng.integers(8, 40), rng.integers(8, 40), 3)
            ).astype("uint8"),
            "label": index % 5,
        }
        for index in range(count)
    ]


def _batches(seed=0, count=120):
    return list(
        native_resolution_batches(
            _examples(count),
            BUDGET,
            PATCH,
            seed=seed,
            exponent_range=EXPONENTS,
        )
    )


def _sincos_backbone(**overrides):
    return keras_aimv2.AIMV2Backbone(
        **{
            **TINY_BACKBONE,
            "image_shape": (None, None, 3),
            "patch_size": 4,
            **overrides,
        },
        position_embedding="sincos",
    )


def test_sincos_backbone_takes_any_multiple_of_the_patch_size():
    backbone = _sincos_backbone()
    for height, width in ((8, 8), (12, 28), (40, 4)):
        features = backbone(np.zeros((2, height, width, 3), "float32"))
        assert tuple(features.shape) == (2, height * width // 16, 64)
    assert backbone.image_shape == (None, None, 3)
    with pytest.raises(ValueError, match="multiple of patch_size=4"):
        backbone(np.zeros((1, 10, 8, 3), "float32"))


def test_patch_counts_follow_the_truncated_normal_exponent():
    rng = np.random.default_rng(0)
    counts = np.array([sample_patch_count(rng) for _ in range(3000)])
    assert counts.min() >= 128 and counts.max() <= 4096
    assert counts.min() < 150 and counts.max() > 3500
    exponents = np.log2(counts)
    # Symmetric around the middle of [7, 12]; a truncated N(0, 1) on
    # [-1, 1] has standard deviation 0.54, here scaled by 2.5.
    assert abs(exponents.mean() - 9.5) < 0.06
    assert abs(exponents.std() - 0.54 * 2.5) < 0.06


def test_patch_grid_and_resize_keep_the_aspect_ratio():
    for ratio, count in ((1.0, 128), (0.5, 200), (3.0, 16), (0.01, 7)):
        rows, cols = patch_grid(ratio, count)
        assert 1 <= rows * cols <= count
        assert rows * cols > count / 2
    assert patch_grid(0.5, 200) == (10, 20)
    image = np.full((20, 40, 3), 255, "uint8")
    canvas = resize_and_pad(image, (32, 32))
    assert canvas.shape == (32, 32, 3)
    np.testing.assert_allclose(canvas[:16], 255.0, atol=1e-3)
    np.testing.assert_array_equal(canvas[16:], 0.0)


def test_batches_keep_the_patch_budget():
    batches = _batches()
    assert len(batches) >= 10
    rng = np.random.default_rng(0)
    shapes = set()
    for batch in batches:
        count = sample_patch_count(rng, EXPONENTS)
        images = batch["images"]
        size, height, width, channels = images.shape
        assert images.dtype == np.float32 and channels == 3
        assert height % PATCH == 0 and width % PATCH == 0
        grid = (height // PATCH) * (width // PATCH)
        assert size == BUDGET // count
        assert grid <= count
        assert BUDGET // 2 < size * grid <= BUDGET
        assert batch["label"].shape == (size,)
        assert 0.0 <= images.min() and images.max() <= 255.0
        shapes.add(images.shape)
    assert len(shapes) > 3


def test_batches_are_deterministic_from_the_seed():
    first, again, other = _batches(seed=3), _batches(seed=3), _batches(seed=4)
    assert len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert [b["images"].shape for b in first] != [
        b["images"].shape for b in other
    ]


def test_budget_must_hold_the_largest_image():
    with pytest.raises(ValueError, match="patches_per_batch=8"):
        native_resolution_batches(_examples(4), 8, PATCH, exponent_range=(2, 4))
    with pytest.raises(ValueError, match="exponent_range"):
        native_resolution_batches(
            _examples(4), 64, PATCH, exponent_range=(3, 1)
        )


def test_fit_on_native_batches():
    batches = _batches(seed=1)
    # Two batches of different shapes.
    chosen = [batches[0]]
    chosen += [
        b
        for b in batches
        if b["images"].shape[1:] != chosen[0]["images"].shape[1:]
    ][:1]
    assert len(chosen) == 2

    def generate():
        for batch in chosen:
            yield batch["images"] / 255.0, batch["label"]

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, None, None, 3), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    ).apply(tf.data.experimental.assert_cardinality(2))
    keras.utils.set_random_seed(0)
    model = AIMV2ImageClassifier(
        _sincos_backbone(num_layers=1, hidden_dim=32),
        num_classes=5,
        freeze_backbone=False,
    )
    before = to_numpy(model.backbone.weights[0])
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(to_numpy(model.optimizer.iterations)) == 2
    assert not np.array_equal(to_numpy(model.backbone.weights[0]), before)
    for batch in chosen:
        logits = model(batch["images"] / 255.0)
        assert tuple(logits.shape) == (len(batch["images"]), 5)


def test_native_dataset_reads_shards(tmp_path):
    write_tiny_shards(str(tmp_path), count=40)

    def read(seed):
        dataset = native_resolution_dataset(
            str(tmp_path),
            BUDGET,
            PATCH,
            seed=seed,
            exponent_range=EXPONENTS,
            repeat=False,
        )
        return list(dataset.as_numpy_iterator())

    batches = read(seed=0)
    assert batches
    for batch in batches:
        size, height, width, _ = batch["images"].shape
        assert size * (height // PATCH) * (width // PATCH) <= BUDGET
        assert batch["captions"].shape == (size,)
        assert isinstance(batch["captions"][0], bytes)
    again = read(seed=0)
    assert len(again) == len(batches)
    for a, b in zip(again, batches, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["captions"], b["captions"])
