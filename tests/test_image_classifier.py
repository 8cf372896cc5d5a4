"""The classifier: probe and fine-tuning heads, features, saving, presets."""

import keras
import numpy as np
import pytest
from conftest import TINY_BACKBONE
from conftest import to_numpy

import keras_aimv2
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier
from keras_aimv2.models.aimv2_image_classifier_preprocessor import (
    AIMV2ImageClassifierPreprocessor,
)


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


def test_config_and_preset_round_trip(tmp_path):
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
    restored = AIMV2ImageClassifier.from_config(model.get_config())
    assert restored.get_config()["feature_layers"] == (0, 1)
    assert restored.freeze_backbone
    assert restored.count_params() == model.count_params()

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
