"""Image converter and pre-training preprocessor: values, graph mode, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _data_helpers import VOCABULARY_SIZE
from _data_helpers import make_captions
from _data_helpers import train_tiny_tokenizer
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER
from conftest import to_numpy
from keras_hub.src.tests.test_case import TestCase

import keras_aimv2
from keras_aimv2.models.aimv2_image_converter import IMAGENET_MEAN
from keras_aimv2.models.aimv2_image_converter import IMAGENET_STD
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_image_converter import normalization_scale_offset
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer

CONTEXT = 8
SIZE = TINY_BACKBONE["image_shape"][:2]
PATCH = TINY_BACKBONE["patch_size"]
NUM_PATCHES = (SIZE[0] // PATCH) * (SIZE[1] // PATCH)


@pytest.fixture(scope="module")
def proto_path(tmp_path_factory):
    return train_tiny_tokenizer(str(tmp_path_factory.mktemp("tokenizer")))


def _preprocessor(proto, **kwargs):
    return AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=proto, **kwargs),
        image_converter=AIMV2ImageConverter(image_size=SIZE),
        sequence_length=CONTEXT,
        patch_size=PATCH,
    )


def _inputs(batch_size=4, seed=0):
    rng = np.random.default_rng(seed)
    captions = make_captions(batch_size, seed=seed)
    # One caption long enough to be truncated, one very short.
    captions[0] = " ".join([captions[0]] * 4)
    captions[1] = "Ab"
    images = rng.uniform(0, 255, size=(batch_size, *SIZE, 3))
    return {"images": images.astype("float32"), "captions": captions}


def test_converter_normalizes_with_imagenet_statistics():
    converter = AIMV2ImageConverter(image_size=(4, 6))
    assert converter.image_size == (4, 6)
    assert AIMV2ImageConverter().image_size == (224, 224)
    mean = np.array(IMAGENET_MEAN, "float32") * 255
    std = np.array(IMAGENET_STD, "float32") * 255
    images = np.broadcast_to(mean, (2, 4, 6, 3)).copy()
    images[1] = mean + std  # One standard deviation above the mean.
    out = to_numpy(converter(images))
    assert out.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-4)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-4)


def test_converter_resizes_and_takes_other_statistics():
    scale, offset = normalization_scale_offset((0.5, 0.5, 0.5), (0.5,) * 3)
    converter = AIMV2ImageConverter(
        image_size=(8, 8), scale=scale, offset=offset
    )
    out = to_numpy(converter(np.full((1, 16, 20, 3), 255.0)))
    assert out.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-4)
    restored = AIMV2ImageConverter.from_config(converter.get_config())
    assert restored.image_size == (8, 8)
    assert restored.interpolation == "bicubic"
    np.testing.assert_allclose(restored.scale, scale)
    with pytest.raises(ValueError, match="image_size=\\(0, 8\\)"):
        AIMV2ImageConverter(image_size=(0, 8))
    with pytest.raises(ValueError, match="std=\\[0.5, 0.0, 0.5\\]"):
        normalization_scale_offset((0.5,) * 3, (0.5, 0.0, 0.5))


def test_outputs_follow_the_model_contract(proto_path):
    preprocessor = _preprocessor(proto_path)
    inputs = _inputs()
    x = preprocessor(inputs)
    assert sorted(x) == [
        "images",
        "padding_mask",
        "prefix_lengths",
        "token_ids",
    ]
    assert tuple(x["images"].shape) == (4, *SIZE, 3)
    assert keras.backend.standardize_dtype(x["images"].dtype) == "float32"
    assert keras.backend.standardize_dtype(x["token_ids"].dtype) == "int32"
    assert keras.backend.standardize_dtype(x["padding_mask"].dtype) == "bool"
    assert keras.backend.standardize_dtype(x["prefix_lengths"].dtype) == "int32"
    prefix_lengths = to_numpy(x["prefix_lengths"])
    assert prefix_lengths.shape == (4,)
    assert prefix_lengths.min() >= 1 and prefix_lengths.max() < NUM_PATCHES
    token_ids, mask = to_numpy(x["token_ids"]), to_numpy(x["padding_mask"])
    assert token_ids.shape == mask.shape == (4, CONTEXT)
    tokenizer = preprocessor.tokenizer
    for row, caption in enumerate(inputs["captions"]):
        ids = tokenizer(caption).tolist()[: CONTEXT - 1]
        length = len(ids) + 1  # The end token (1, not the pad 0) counts.
        assert token_ids[row, :length].tolist() == ids + [1]
        assert token_ids[row, length:].tolist() == [0] * (CONTEXT - length)
        assert mask[row].tolist() == [i < length for i in range(CONTEXT)]
    # Truncated captions keep the end token last; none starts with it.
    assert token_ids[0, -1] == 1 and mask[0].all()
    assert (token_ids[:, 0] != 1).all()
    expected = (inputs["images"] / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(to_numpy(x["images"]), expected, atol=1e-3)


def test_cleans_captions_in_both_workflows(proto_path):
    preprocessor = _preprocessor(proto_path)
    inputs = _inputs()
    messy = [
        f" {c.upper()}\t\n" if i % 2 else c.replace(" ", " &nbsp; ")
        for i, c in enumerate(inputs["captions"])
    ]
    expected = to_numpy(preprocessor(inputs)["token_ids"])
    messy_inputs = {**inputs, "captions": messy}
    np.testing.assert_array_equal(
        to_numpy(preprocessor(messy_inputs)["token_ids"]), expected
    )
    dataset = tf.data.Dataset.from_tensor_slices(messy_inputs).batch(4)
    graph = next(iter(dataset.map(preprocessor)))
    np.testing.assert_array_equal(graph["token_ids"].numpy(), expected)


def test_graph_mode_matches_eager(proto_path):
    preprocessor = _preprocessor(proto_path)
    inputs = _inputs()
    eager = preprocessor(inputs)
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(4)
    graph = next(iter(dataset.map(preprocessor)))
    for key in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(graph[key].numpy(), to_numpy(eager[key]))
    np.testing.assert_allclose(
        graph["images"].numpy(), to_numpy(eager["images"]), atol=1e-5
    )


def test_siglip_style_padding_makes_the_end_token_no_target(proto_path):
    # With pad == end (SigLIP as AIMv2's trainer uses it), a position is a
    # target iff its id is not the pad id: the end token never is.
    x = _preprocessor(proto_path, pad_token="</s>")(_inputs())
    token_ids, mask = to_numpy(x["token_ids"]), to_numpy(x["padding_mask"])
    np.testing.assert_array_equal(mask, token_ids != 1)
    length = mask[1].sum()
    assert token_ids[1, length] == 1 and not mask[1, length]
    # A truncated caption ends with the end token, which does not count.
    assert token_ids[0, -1] == 1 and not mask[0, -1] and mask[0, :-1].all()


def test_sequence_length_can_change(proto_path):
    preprocessor = _preprocessor(proto_path)
    preprocessor(_inputs())
    preprocessor.sequence_length = 5
    x = preprocessor(_inputs())
    assert tuple(x["token_ids"].shape) == (4, 5)
    assert to_numpy(x["token_ids"])[0, -1] == 1
    # Configs saved before the argument took keras-hub's name still load.
    config = {**preprocessor.get_config(), "context_length": 6}
    del config["sequence_length"]
    assert AIMV2PretrainerPreprocessor.from_config(config).sequence_length == 6


def test_unbatched_labels_and_prefix_lengths(proto_path):
    preprocessor = _preprocessor(proto_path)
    single = preprocessor(
        {"images": np.zeros((*SIZE, 3), "float32"), "captions": "Ab cd"}
    )
    assert tuple(single["images"].shape) == (*SIZE, 3)
    assert tuple(single["token_ids"].shape) == (CONTEXT,)
    inputs = {**_inputs(), "prefix_lengths": np.array([1, 2, 3, 4])}
    x, y = preprocessor(inputs, y=np.arange(4))
    np.testing.assert_array_equal(to_numpy(x["prefix_lengths"]), [1, 2, 3, 4])
    np.testing.assert_array_equal(to_numpy(y), np.arange(4))


def test_bad_arguments(proto_path):
    tokenizer = AIMV2Tokenizer(proto=proto_path)
    with pytest.raises(ValueError, match="sequence_length=1"):
        AIMV2PretrainerPreprocessor(tokenizer, sequence_length=1)
    for name, value in (("patch_size", 0), ("patch_size", 2.0), ("seed", "0")):
        with pytest.raises(ValueError, match=f"{name}={value!r}"):
            AIMV2PretrainerPreprocessor(tokenizer, **{name: value})
    with pytest.raises(ValueError, match="sequence_length=5"):
        AIMV2PretrainerPreprocessor(
            AIMV2Tokenizer(proto=proto_path, sequence_length=5)
        )
    with pytest.raises(ValueError, match="add_eos=True"):
        AIMV2PretrainerPreprocessor(
            AIMV2Tokenizer(proto=proto_path, add_eos=True)
        )
    preprocessor = AIMV2PretrainerPreprocessor(tokenizer)
    with pytest.raises(ValueError, match="sequence_length=0"):
        preprocessor.sequence_length = 0
    with pytest.raises(ValueError, match="Received: \\['images'\\]"):
        preprocessor({"images": np.zeros((1, *SIZE, 3))})


def test_config_round_trip(proto_path):
    preprocessor = _preprocessor(proto_path, pad_token="</s>")
    config = preprocessor.get_config()
    restored = AIMV2PretrainerPreprocessor.from_config(config)
    assert restored.sequence_length == CONTEXT
    assert (restored.patch_size, restored.seed) == (PATCH, 0)
    assert restored.image_converter.image_size == SIZE
    # The proto travels as an asset, not in the config.
    restored.tokenizer.set_proto(proto_path)
    assert restored.tokenizer.pad_token_id == 1
    inputs = _inputs()
    np.testing.assert_array_equal(
        to_numpy(restored(inputs)["token_ids"]),
        to_numpy(preprocessor(inputs)["token_ids"]),
    )


def test_saved_and_loaded_with_the_pretrainer(tmp_path, proto_path):
    preprocessor = _preprocessor(proto_path)
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
    decoder = {**TINY_DECODER, "vocabulary_size": VOCABULARY_SIZE}
    pretrainer = keras_aimv2.AIMV2Pretrainer(
        backbone, preprocessor=preprocessor, **decoder
    )
    preset = str(tmp_path / "preset")
    pretrainer.save_to_preset(preset)
    loaded = keras_aimv2.AIMV2Pretrainer.from_preset(preset)
    assert isinstance(loaded.preprocessor, AIMV2PretrainerPreprocessor)
    assert isinstance(loaded.preprocessor.tokenizer, AIMV2Tokenizer)
    assert isinstance(loaded.preprocessor.image_converter, AIMV2ImageConverter)
    inputs = _inputs()
    expected, actual = preprocessor(inputs), loaded.preprocessor(inputs)
    for key in ("images", "token_ids", "padding_mask", "prefix_lengths"):
        np.testing.assert_array_equal(
            to_numpy(actual[key]), to_numpy(expected[key])
        )
    alone = AIMV2PretrainerPreprocessor.from_preset(preset)
    np.testing.assert_array_equal(
        to_numpy(alone(inputs)["token_ids"]), to_numpy(expected["token_ids"])
    )


def test_prefix_draws_are_uniform_and_seeded_per_example(proto_path):
    preprocessor = _preprocessor(proto_path)
    rng = np.random.default_rng(0)
    count = 600
    images = rng.uniform(0, 255, size=(count, *SIZE, 3)).astype("float32")
    captions = make_captions(count, seed=1)
    draws = to_numpy(
        preprocessor({"images": images, "captions": captions})["prefix_lengths"]
    )
    # U{1, ..., I - 1}: every length, each about count / (I - 1) times.
    frequencies = np.bincount(draws, minlength=NUM_PATCHES)
    assert frequencies[0] == 0 and len(frequencies) == NUM_PATCHES
    expected = count / (NUM_PATCHES - 1)
    assert np.all(np.abs(frequencies[1:] - expected) < 4 * np.sqrt(expected))
    # The same example draws the same length in any batch and order...
    order = rng.permutation(count)[:32]
    again = to_numpy(
        preprocessor(
            {"images": images[order], "captions": [captions[i] for i in order]}
        )["prefix_lengths"]
    )
    np.testing.assert_array_equal(again, draws[order])
    # ... and in a tf.data pipeline.
    dataset = tf.data.Dataset.from_tensor_slices(
        {"images": images[:32], "captions": captions[:32]}
    )
    piped = next(iter(dataset.batch(32).map(preprocessor)))
    np.testing.assert_array_equal(piped["prefix_lengths"].numpy(), draws[:32])
    # Another seed, or another crop of the image, draws anew.
    reseeded = AIMV2PretrainerPreprocessor(
        tokenizer=preprocessor.tokenizer,
        image_converter=preprocessor.image_converter,
        sequence_length=CONTEXT,
        patch_size=PATCH,
        seed=1,
    )
    other = to_numpy(
        reseeded({"images": images, "captions": captions})["prefix_lengths"]
    )
    assert np.mean(other != draws) > 0.8
    shifted = to_numpy(
        preprocessor(
            {"images": np.roll(images, 1, axis=2), "captions": captions}
        )["prefix_lengths"]
    )
    assert np.mean(shifted != draws) > 0.8


class AIMV2PretrainerPreprocessorHarnessTest(TestCase):
    """keras-hub's preprocessor checks: eager, tf.data, Grain, config."""

    def setUp(self):
        proto = train_tiny_tokenizer(self.get_temp_dir())
        self.init_kwargs = {
            "tokenizer": AIMV2Tokenizer(proto=proto),
            "image_converter": AIMV2ImageConverter(image_size=SIZE),
            "sequence_length": CONTEXT,
            "patch_size": PATCH,
        }
        rng = np.random.default_rng(0)
        self.input_data = {
            "images": rng.uniform(0, 255, size=(3, *SIZE, 3)).astype("float32"),
            "captions": np.array(make_captions(3, seed=2)),
        }

    def test_preprocessor_basics(self):
        output = self.run_preprocessor_test(
            cls=AIMV2PretrainerPreprocessor,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
        )
        self.assertEqual(
            sorted(output),
            ["images", "padding_mask", "prefix_lengths", "token_ids"],
        )


def test_prefix_draws_follow_the_converters_data_format(proto_path):
    preprocessor = AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=proto_path),
        image_converter=AIMV2ImageConverter(
            image_size=SIZE, data_format="channels_first"
        ),
        sequence_length=CONTEXT,
        patch_size=PATCH,
    )
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, size=(200, 3, *SIZE)).astype("float32")
    x = preprocessor({"images": images, "captions": make_captions(200)})
    draws = to_numpy(x["prefix_lengths"])
    # 4 x 4 patches of 8 x 8 pixels: every length in [1, 15] is drawn.
    assert set(draws.tolist()) == set(range(1, NUM_PATCHES))


def test_the_pretrainer_matches_the_preprocessors_patch_size(proto_path):
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
    decoder = {**TINY_DECODER, "vocabulary_size": VOCABULARY_SIZE}
    wrong = AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=proto_path), patch_size=14
    )
    with pytest.raises(ValueError, match="patch_size=14 .* are 8 pixels"):
        keras_aimv2.AIMV2Pretrainer(backbone, preprocessor=wrong, **decoder)
    # A config saved before the preprocessor drew prefixes names no patch
    # size: unknown alone, the pretrainer's backbone gives it.
    config = _preprocessor(proto_path).get_config()
    del config["patch_size"]
    old = AIMV2PretrainerPreprocessor.from_config(config)
    old.tokenizer.set_proto(proto_path)
    assert old.patch_size is None
    with pytest.raises(ValueError, match="`patch_size`.* unknown"):
        old(_inputs())
    keras_aimv2.AIMV2Pretrainer(backbone, preprocessor=old, **decoder)
    assert old.patch_size == PATCH
    draws = to_numpy(old(_inputs())["prefix_lengths"])
    expected = to_numpy(_preprocessor(proto_path)(_inputs())["prefix_lengths"])
    np.testing.assert_array_equal(draws, expected)
