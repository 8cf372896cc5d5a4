"""Input pipeline: decoding, augmentation, determinism and training on it."""

import numpy as np
import pytest
import tensorflow as tf
from _data_helpers import VOCABULARY_SIZE
from _data_helpers import encode_image
from _data_helpers import train_tiny_tokenizer
from _data_helpers import write_tiny_shards
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER

import keras_aimv2
from keras_aimv2.data.pipeline import eval_transform
from keras_aimv2.data.pipeline import measure_throughput
from keras_aimv2.data.pipeline import pretraining_dataset
from keras_aimv2.data.pipeline import random_resized_crop_box
from keras_aimv2.data.pipeline import train_transform
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer

NUM_EXAMPLES = 20


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards") / "train"
    captions = write_tiny_shards(directory, count=NUM_EXAMPLES)
    return str(directory), captions


def _batches(dataset, count):
    batches = []
    for batch in dataset.take(count):
        batches.append({key: value.numpy() for key, value in batch.items()})
    return batches


def test_training_batches(shards):
    directory, captions = shards
    dataset = pretraining_dataset(directory, batch_size=6, image_size=16)
    batches = _batches(dataset, 5)  # 30 images: repeats past 20 examples.
    assert len(batches) == 5
    for batch in batches:
        assert sorted(batch) == ["captions", "images"]
        assert batch["images"].shape == (6, 16, 16, 3)
        assert batch["images"].dtype == np.float32
        assert batch["images"].min() >= 0 and batch["images"].max() <= 255
        assert batch["images"].max() > 100  # [0, 255], not [0, 1].
        assert batch["captions"].shape == (6,)
    seen = [c.decode() for batch in batches[:3] for c in batch["captions"]]
    assert set(seen) <= set(captions)
    assert seen != captions[:18]  # Shuffled.
    assert tuple(dataset.element_spec["images"].shape) == (6, 16, 16, 3)


def test_evaluation_keeps_order_and_drops_remainder(shards):
    directory, captions = shards
    dataset = pretraining_dataset(
        directory, batch_size=6, image_size=(12, 16), training=False
    )
    batches = _batches(dataset, 10)
    assert len(batches) == NUM_EXAMPLES // 6  # Two examples dropped.
    read = [c.decode() for batch in batches for c in batch["captions"]]
    assert read == captions[:18]
    assert batches[0]["images"].shape == (6, 12, 16, 3)
    again = _batches(dataset, 10)
    np.testing.assert_array_equal(again[0]["images"], batches[0]["images"])
    twice = pretraining_dataset(
        directory, batch_size=5, image_size=8, training=False, repeat=2
    )
    assert len(_batches(twice, 100)) == 2 * NUM_EXAMPLES // 5


def test_same_seed_same_batches_other_seed_differs(shards):
    directory, _ = shards

    def first_batches(seed):
        dataset = pretraining_dataset(
            directory, batch_size=4, image_size=16, seed=seed
        )
        return _batches(dataset, 3)

    first, second, other = first_batches(7), first_batches(7), first_batches(8)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["captions"], b["captions"])
    assert not all(
        np.array_equal(a["images"], b["images"])
        for a, b in zip(first, other, strict=True)
    )


def test_augmentation_differs_between_passes(shards):
    # With a single example per pass, the same image comes back with a new
    # crop and flip at every pass.
    directory, _ = shards
    dataset = pretraining_dataset(
        directory, batch_size=NUM_EXAMPLES, image_size=16, seed=3
    )
    first, second = _batches(dataset, 2)
    order = np.argsort(first["captions"])
    again = np.argsort(second["captions"])
    np.testing.assert_array_equal(
        first["captions"][order], second["captions"][again]
    )
    assert not np.allclose(first["images"][order], second["images"][again])


def test_random_crop_boxes_follow_the_recipe():
    height, width = 90, 120
    shares, ratios = [], []
    for index in range(200):
        top, left, crop_height, crop_width = (
            int(v)
            for v in random_resized_crop_box(
                height, width, tf.constant([5, index], tf.int64)
            )
        )
        assert 0 <= top and top + crop_height <= height
        assert 0 <= left and left + crop_width <= width
        shares.append(crop_height * crop_width / (height * width))
        ratios.append(crop_width / crop_height)
    # Rounding to whole pixels moves the bounds slightly.
    assert 0.38 <= min(shares) and max(shares) <= 1.0
    assert 0.72 <= min(ratios) and max(ratios) <= 1.37
    assert max(shares) - min(shares) > 0.4
    assert min(ratios) < 0.85 and max(ratios) > 1.2


def test_random_crop_falls_back_to_a_center_crop():
    # No window of a 3/4..4/3 ratio covers 40% of a 10 x 400 strip.
    box = random_resized_crop_box(10, 400, tf.constant([0, 1], tf.int64))
    assert [int(v) for v in box] == [0, (400 - 13) // 2, 10, 13]


def test_flip_happens_about_half_the_time():
    gradient = np.tile(np.arange(0, 240, 15, dtype=np.uint8), (16, 1))
    encoded = encode_image(np.stack([gradient] * 3, axis=-1))
    flipped = 0
    for index in range(40):
        image = train_transform(
            tf.constant(encoded),
            tf.constant([0, index], tf.int64),
            (16, 16),
            scale=(1.0, 1.0),
            ratio=(1.0, 1.0),
        ).numpy()
        # The full image is kept: only the flip changes the gradient.
        left, right = image[:, 0].mean(), image[:, -1].mean()
        flipped += bool(left > right)
    assert 10 <= flipped <= 30


def test_evaluation_center_crops():
    # Left quarter black, the rest white: the central square is all white
    # but for its first quarter.
    pixels = np.full((32, 64, 3), 255, np.uint8)
    pixels[:, :16] = 0
    image = eval_transform(tf.constant(encode_image(pixels)), (16, 16))
    image = image.numpy()
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image, 255.0, atol=1.0)


def test_throughput_and_errors(shards):
    directory, _ = shards
    dataset = pretraining_dataset(directory, batch_size=4, image_size=16)
    result = measure_throughput(dataset, num_batches=3)
    assert result["images"] == 12
    assert result["images_per_second"] > 0 and result["seconds"] > 0
    once = pretraining_dataset(
        directory, batch_size=4, image_size=16, repeat=False
    )
    with pytest.raises(ValueError, match="ran out after 5 batches"):
        measure_throughput(once, num_batches=10)
    with pytest.raises(ValueError, match="image_size=0"):
        pretraining_dataset(directory, batch_size=4, image_size=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        pretraining_dataset(directory, batch_size=0, image_size=8)
    with pytest.raises(ValueError, match="repeat=-1"):
        pretraining_dataset(directory, batch_size=4, image_size=8, repeat=-1)
    with pytest.raises(ValueError, match="crop_scale=\\(0.5, 0.1\\)"):
        pretraining_dataset(directory, 4, 8, crop_scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="holds the split 'train'"):
        pretraining_dataset(directory, 4, 8, split="validation")


def test_fit_on_the_pipeline_with_the_preprocessor(shards, tmp_path):
    directory, _ = shards
    image_size = TINY_BACKBONE["image_shape"][:2]
    preprocessor = AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=train_tiny_tokenizer(str(tmp_path))),
        image_converter=AIMV2ImageConverter(image_size=image_size),
        sequence_length=TINY_DECODER["context_length"],
        patch_size=TINY_BACKBONE["patch_size"],
    )
    pretrainer = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(**TINY_BACKBONE),
        preprocessor=preprocessor,
        **{**TINY_DECODER, "vocabulary_size": VOCABULARY_SIZE},
    )
    dataset = pretraining_dataset(directory, batch_size=4, image_size=32)
    history = pretrainer.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    for name in ("loss", "pixel_loss", "text_loss"):
        assert np.isfinite(history.history[name][0]), name
    assert history.history["text_loss"][0] > 1.0
