"""The classifier: probe and fine-tuning heads, features, saving, presets.

The classifier, its preprocessor and its image converter also run through
keras-hub's harness (`AIMV2ImageClassifierHarnessTest` and the classes
after it): config and serialization round trips, `predict` and `fit` on
arrays, a `tf.data` pipeline and split preprocessing, the `compile=False`
error, `.keras` files, and the preprocessing layers on direct calls,
`tf.data` and Grain.
"""

import keras
import numpy as np
import pytest
from conftest import HARNESS_BACKBONE
from conftest import TINY_BACKBONE
from conftest import to_numpy
from keras_hub.src.tests.test_case import TestCase

import keras_aimv2
from keras_aimv2.layer_decay import LayerDecayAdamW
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier
from keras_aimv2.models.aimv2_image_classifier_preprocessor import (
    AIMV2ImageClassifierPreprocessor,
)
from keras_aimv2.models.aimv2_image_converter import IMAGENET_OFFSET
from keras_aimv2.models.aimv2_image_converter import IMAGENET_SCALE


def _backbone(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)


def _images(count=4, seed=0, size=32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, size, size, 3)).astype("float32")


def test_probe_is_an_attention_pool_on_a_frozen_encoder():
    backbone = _backbone()
    probe = AIMV2ImageClassifier(backbone, num_classes=5)
    assert probe.freeze_backbone and not backbone.trainable
    assert {w.path for w in probe.trainable_weights} == {
        "attention_pool/query",
        "attention_pool/key/kernel",
        "attention_pool/value/kernel",
        "attention_pool/output_projection/kernel",
        "attention_pool/output_projection/bias",
    }
    images = _images()
    logits = to_numpy(probe(images))
    assert logits.shape == (4, 5)
    # The head alone on the encoder's features gives the same logits.
    pooled = probe.pooler(backbone(images))
    np.testing.assert_allclose(to_numpy(pooled), logits, atol=1e-5)


def test_mean_pooling_is_a_linear_layer_on_averaged_features():
    backbone = _backbone()
    model = AIMV2ImageClassifier(
        backbone, num_classes=3, pooling="mean", freeze_backbone=False
    )
    assert backbone.trainable
    images = _images()
    features = to_numpy(backbone(images)).mean(axis=1)
    kernel, bias = (to_numpy(w) for w in model.output_dense.weights)
    np.testing.assert_allclose(
        to_numpy(model(images)), features @ kernel + bias, atol=1e-5
    )


def test_feature_layers_average_normalized_block_outputs():
    backbone = _backbone()
    images = _images()
    np.testing.assert_array_equal(
        to_numpy(backbone.extract_features(images, feature_layers=(-1,))),
        to_numpy(backbone(images)),
    )
    # By hand: each block's output through the final norm, averaged.
    x = backbone.patch_embedding(images)
    normed = []
    for block in backbone.encoder.blocks:
        x = block(x)
        normed.append(to_numpy(backbone.encoder.final_norm(x)))
    averaged = to_numpy(backbone.extract_features(images, (1, 0)))
    np.testing.assert_allclose(averaged, np.mean(normed, axis=0), atol=1e-5)
    first = to_numpy(backbone.extract_features(images, (-2,)))
    np.testing.assert_allclose(first, normed[0], atol=1e-5)
    assert not np.allclose(first, normed[1], atol=1e-3)

    model = AIMV2ImageClassifier(
        backbone, num_classes=3, pooling="mean", feature_layers=(0, 1)
    )
    kernel, bias = (to_numpy(w) for w in model.output_dense.weights)
    np.testing.assert_allclose(
        to_numpy(model(images)),
        averaged.mean(axis=1) @ kernel + bias,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"pooling": "max"}, "pooling='max'"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"num_heads": 3}, "num_heads=3"),
        ({"feature_layers": (2,)}, r"\[-2, 2\).*feature_layers=\(2,\)"),
        ({"feature_layers": (0, -2)}, "twice"),
        ({"feature_layers": ()}, "non-empty"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        AIMV2ImageClassifier(_backbone(), **{"num_classes": 4, **arguments})


def test_compile_options():
    model = AIMV2ImageClassifier(
        _backbone(), num_classes=4, freeze_backbone=False
    )
    model.compile(learning_rate=3e-4, layer_decay=0.5)
    assert model.optimizer.layer_decay == 0.5
    assert model.optimizer.num_layers == 2
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 3e-4)
    with pytest.raises(ValueError, match="layer_decay=0.5"):
        model.compile(optimizer=keras.optimizers.Adam(), layer_decay=0.5)


def test_preset_round_trip(tmp_path):
    backbone = _backbone()
    preprocessor = AIMV2ImageClassifierPreprocessor(
        keras_aimv2.AIMV2ImageConverter(image_size=(32, 32))
    )
    model = AIMV2ImageClassifier(
        backbone,
        num_classes=4,
        preprocessor=preprocessor,
        feature_layers=(0, 1),
        num_heads=4,
    )
    images = _images()
    model.save_to_preset(str(tmp_path))
    loaded = AIMV2ImageClassifier.from_preset(str(tmp_path))
    assert loaded.freeze_backbone and loaded.num_heads == 4
    np.testing.assert_allclose(
        to_numpy(loaded(images)), to_numpy(model(images)), atol=1e-6
    )
    raw = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3))
    np.testing.assert_allclose(
        loaded.predict(raw, verbose=0),
        model.predict(raw, verbose=0),
        atol=1e-5,
    )


def test_new_head_on_a_backbone_preset_gets_a_default_preprocessor(tmp_path):
    backbone = _backbone()
    backbone.save_to_preset(str(tmp_path))
    model = AIMV2ImageClassifier.from_preset(
        str(tmp_path), num_classes=3, pooling="mean"
    )
    assert isinstance(model.preprocessor, AIMV2ImageClassifierPreprocessor)
    assert tuple(model.preprocessor.image_converter.image_size) == (32, 32)
    raw = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3))
    assert model.predict(raw, verbose=0).shape == (2, 3)
    images = _images()
    np.testing.assert_array_equal(
        to_numpy(model.backbone(images)), to_numpy(backbone(images))
    )


def test_keras_file_keeps_the_compiled_optimizer(tmp_path):
    model = AIMV2ImageClassifier(
        _backbone(), num_classes=3, pooling="mean", freeze_backbone=False
    )
    model.compile(learning_rate=3e-4, layer_decay=0.5)
    images, labels = _images(), np.array([0, 1, 2, 0])
    model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.compiled
    assert isinstance(restored.optimizer, LayerDecayAdamW)
    assert restored.optimizer.layer_decay == 0.5
    np.testing.assert_allclose(float(restored.optimizer.learning_rate), 3e-4)
    assert int(to_numpy(restored.optimizer.iterations)) == 2
    for saved, loaded in zip(
        model.optimizer.variables, restored.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(to_numpy(saved), to_numpy(loaded))


def test_channels_first_backbone_preset_gets_a_channels_first_converter(
    tmp_path,
):
    keras.utils.set_random_seed(0)
    backbone = keras_aimv2.AIMV2Backbone(
        **{**TINY_BACKBONE, "image_shape": (3, 32, 32)},
        data_format="channels_first",
    )
    backbone.save_to_preset(str(tmp_path))
    model = AIMV2ImageClassifier.from_preset(str(tmp_path), num_classes=3)
    converter = model.preprocessor.image_converter
    assert converter.data_format == "channels_first"
    assert tuple(converter.image_size) == (32, 32)
    # The data format survives the converter's config.
    restored = keras_aimv2.AIMV2ImageConverter.from_config(
        converter.get_config()
    )
    assert restored.data_format == "channels_first"
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32))
    expected = model(converter(raw.astype("float32")))
    np.testing.assert_allclose(
        model.predict(raw, verbose=0), to_numpy(expected), atol=1e-5
    )


def _channel_constant_images(shape, values=(10.0, 128.0, 250.0)):
    """Images whose channels are constant: resizing leaves them unchanged.

    Keras's bicubic kernels differ between backends (the torch backend's
    has `a = -0.75`; TensorFlow's, which runs in `tf.data` pipelines on
    every backend, `a = -0.5`), so only such images give the same
    preprocessed pixels on a direct call and in a pipeline on torch.
    """
    return np.broadcast_to(np.asarray(values, "float32"), shape).copy()


def _normalized(values, size):
    scale, offset = np.asarray(IMAGENET_SCALE), np.asarray(IMAGENET_OFFSET)
    pixel = np.asarray(values) * scale + offset
    return np.broadcast_to(pixel, (2, *size, 3)).astype("float32")


class AIMV2ImageClassifierHarnessTest(TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)
        self.backbone = keras_aimv2.AIMV2Backbone(**HARNESS_BACKBONE)
        converter = keras_aimv2.AIMV2ImageConverter(image_size=(32, 32))
        self.preprocessor = AIMV2ImageClassifierPreprocessor(converter)
        # Raw images at the backbone's size, so that the converter's resize
        # is the identity on every backend (see `_channel_constant_images`).
        rng = np.random.default_rng(0)
        self.images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        self.labels = np.array([0, 1])

    def test_classifier_basics(self):
        # The probe on averaged blocks, with its own head count; a
        # fine-tuned mean-pooling classifier is trained, saved and loaded in
        # `test_keras_file_keeps_the_compiled_optimizer`.
        self.run_task_test(
            cls=AIMV2ImageClassifier,
            init_kwargs={
                "backbone": self.backbone,
                "num_classes": 2,
                "preprocessor": self.preprocessor,
                "feature_layers": (0, 1),
                "num_heads": 4,
            },
            train_data=(self.images, self.labels),
            expected_output_shape=(2, 2),
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=AIMV2ImageClassifier,
            init_kwargs={
                "backbone": self.backbone,
                "num_classes": 2,
                "preprocessor": self.preprocessor,
                "feature_layers": (0, 1),
            },
            input_data=self.images,
        )

    def test_head_dtype(self):
        model = AIMV2ImageClassifier(
            self.backbone, num_classes=2, head_dtype="bfloat16"
        )
        self.assertEqual(model.pooler.compute_dtype, "bfloat16")
        self.assertEqual(model.backbone.compute_dtype, "float32")


class AIMV2ImageClassifierPreprocessorTest(TestCase):
    def test_preprocessor_basics(self):
        # `run_preprocessor_test` adds checks of a `sequence_length` of token
        # ids; an image classifier's preprocessor has none, so the
        # preprocessing-layer harness is the whole of it here.
        values = (10.0, 128.0, 250.0)
        images = _channel_constant_images((2, 20, 24, 3), values)
        labels = np.array([3, 1])
        self.run_preprocessing_layer_test(
            cls=AIMV2ImageClassifierPreprocessor,
            init_kwargs={
                "image_converter": keras_aimv2.AIMV2ImageConverter(
                    image_size=(16, 16)
                )
            },
            input_data=(images, labels),
            expected_output=(_normalized(values, (16, 16)), labels),
        )


class AIMV2ImageConverterTest(TestCase):
    def test_converter_basics(self):
        values = (0.0, 100.0, 255.0)
        self.run_preprocessing_layer_test(
            cls=keras_aimv2.AIMV2ImageConverter,
            init_kwargs={"image_size": (16, 16)},
            input_data=_channel_constant_images((2, 20, 24, 3), values),
            expected_output=_normalized(values, (16, 16)).tolist(),
        )
