"""The probe end to end, frozen and fine-tuned encoders, layer-wise decay."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from conftest import TINY_BACKBONE
from conftest import to_numpy

from keras_aimv2 import outputs
from keras_aimv2.cli import main
from keras_aimv2.layer_decay import LayerDecayAdamW
from keras_aimv2.layer_decay import aimv2_layer_id
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier
from keras_aimv2.recipes import ProbeBackboneSection
from keras_aimv2.recipes import apply_overrides
from keras_aimv2.recipes import load_recipe
from keras_aimv2.recipes import recipe_from_dict
from keras_aimv2.transfer import build_encoder
from keras_aimv2.transfer import probe_datasets

# The packaged probe recipe, by name.
RECIPE = "probe_fashion_mnist"
SMALL = [
    "backbone.hidden_dim=32",
    "backbone.num_layers=1",
    "backbone.intermediate_dim=64",
    "data.train_examples=256",
    "data.test_examples=200",
    "training.batch_size=64",
    "training.eval_batch_size=100",
    "training.epochs=2",
    "training.verbose=0",
]


def _backbone_weights(model):
    return [to_numpy(w) for w in model.backbone.weights]


@pytest.fixture(scope="module")
def fashion_batch():
    """32 augmented Fashion-MNIST images, roughly normalized, and labels."""
    recipe = load_recipe(RECIPE)
    data = recipe.data.replace(train_examples=32, test_examples=8)
    train, _, _, _ = probe_datasets(data, (32, 32), 32, 8, seed=0)
    images, labels = next(iter(train.take(1)))
    return np.asarray(images) / 127.5 - 1.0, np.asarray(labels)


def test_probe_recipe_follows_the_paper_protocol():
    recipe = load_recipe(RECIPE)
    assert recipe.data.crop_scale == (0.08, 1.0)
    assert recipe.data.flip_probability == 0.5
    assert recipe.training.weight_decay in (0.05, 0.1)
    assert 5e-5 <= recipe.training.peak_learning_rate <= 2e-3
    assert recipe.head.pooling == "attention"
    assert recipe.head.freeze_backbone is True
    assert recipe.head.feature_layers is None
    assert recipe.backbone.preset is None


def test_probe_command_end_to_end(tmp_path, monkeypatch, capsys):
    output = str(tmp_path / "probe")
    # Its recipe.json and metrics.json go through the package's one atomic
    # writer, as those of `aimv2 pretrain`.
    written = []
    atomic_path = outputs.atomic_path

    def recording(path, temporary=None):
        written.append(os.path.relpath(path, output))
        return atomic_path(path, temporary)

    monkeypatch.setattr(outputs, "atomic_path", recording)
    monkeypatch.setattr(outputs, "PROGRESS_SECONDS", 0.0)
    arguments = ["probe", RECIPE, "--output-dir", output, "--set"] + SMALL
    assert main(arguments[:-1] + ["training.verbose=2"]) == 0
    assert written == ["recipe.json", "metrics.json"]
    assert not [n for n in os.listdir(output) if n.startswith(".")]
    # Progress: one line per epoch (verbose=2), from the package's display.
    lines = capsys.readouterr().err.splitlines()
    epochs = [line for line in lines if line.startswith("[probe] ")]
    assert len(epochs) == 2, lines[-10:]
    assert epochs[-1].startswith("[probe] 8/8 steps: epoch 2/2, ")
    assert "accuracy" in epochs[-1]
    with open(os.path.join(output, "metrics.json")) as file:
        metrics = json.load(file)
    assert metrics["encoder"] == "random initialisation"
    assert metrics["frozen_encoder"] is True
    assert metrics["train_examples"] == 256
    assert metrics["test_examples"] == 200
    assert metrics["steps"] == 2 * 256 // 64
    assert 0.0 <= metrics["top1"] <= 1.0
    assert len(metrics["history"]["loss"]) == 2
    with open(os.path.join(output, "training.csv")) as file:
        assert len(list(csv.DictReader(file))) == 2
    with open(os.path.join(output, "recipe.json")) as file:
        recorded = json.load(file)
    assert recorded["training"]["epochs"] == 2
    # All the recipe's values: the loaded recipe with the overrides.
    ran = apply_overrides(
        load_recipe(RECIPE), SMALL[:-1] + ["training.verbose=2"]
    )
    assert recipe_from_dict(recorded) == ran
    assert os.path.isfile(os.path.join(output, "preset", "task.json"))
    # Bad overrides are refused with a message, not a traceback.
    assert main(["probe", RECIPE, "--set", "training.epoch=1"]) == 2


def test_probe_images_are_augmented_crops_of_fashion_mnist():
    recipe = load_recipe(RECIPE)
    # The recipe's section, or a dict of its entries.
    data = {**recipe.data.to_dict(), "train_examples": 64, "test_examples": 16}
    train, test, num_train, num_test = probe_datasets(
        data, (32, 32), 16, 16, seed=0
    )
    assert (num_train, num_test) == (64, 16)
    images, labels = next(iter(train))
    images = np.asarray(images)
    assert images.shape == (16, 32, 32, 3)
    assert 0.0 <= images.min() and images.max() <= 255.0
    # Gray copied into three channels.
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert set(np.asarray(labels).tolist()) <= set(range(10))
    again, _ = next(iter(probe_datasets(data, (32, 32), 16, 16, seed=0)[0]))
    np.testing.assert_array_equal(np.asarray(again), images)
    test_images, _ = next(iter(test))
    assert np.asarray(test_images).shape == (16, 32, 32, 3)


def test_probe_leaves_a_random_frozen_encoder_unchanged(fashion_batch):
    backbone = build_encoder(
        ProbeBackboneSection(**{**TINY_BACKBONE, "num_layers": 1}), seed=3
    )
    model = AIMV2ImageClassifier(backbone, num_classes=10)
    before = _backbone_weights(model)
    head = [to_numpy(w) for w in model.trainable_weights]
    images, labels = fashion_batch
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    for old, new in zip(before, _backbone_weights(model), strict=True):
        np.testing.assert_array_equal(old, new)
    changed = [
        not np.array_equal(old, to_numpy(w))
        for old, w in zip(head, model.trainable_weights, strict=True)
    ]
    assert all(changed)


def test_layer_ids_and_multipliers():
    assert aimv2_layer_id("patch_embedding/projection/kernel", 24) == 0
    assert aimv2_layer_id("patch_embedding/position_embedding", 24) == 0
    assert aimv2_layer_id("encoder/block_0/attention/qkv/kernel", 24) == 1
    assert aimv2_layer_id("encoder/block_23/feed_forward/down/kernel", 24) == 24
    assert aimv2_layer_id("encoder/final_norm/scale", 24) == 25
    assert aimv2_layer_id("attention_pool/query", 24) == 25
    # A decoder's blocks are not the encoder's.
    assert aimv2_layer_id("decoder/block_0/attention/qkv/kernel", 24) == 25
    optimizer = LayerDecayAdamW(layer_decay=0.5, num_layers=2)
    multipliers = [
        optimizer.learning_rate_multiplier(path)
        for path in (
            "patch_embedding/norm/scale",
            "encoder/block_0/attention/qkv/kernel",
            "encoder/block_1/attention/qkv/kernel",
            "predictions/kernel",
        )
    ]
    assert multipliers == [0.125, 0.25, 0.5, 1.0]
    with pytest.raises(ValueError, match="layer_decay=1.5"):
        LayerDecayAdamW(layer_decay=1.5)
    with pytest.raises(ValueError, match="num_layers=0"):
        LayerDecayAdamW(num_layers=0)


def test_fine_tuning_with_layer_decay_moves_deeper_layers_more(
    fashion_batch,
):
    # A dict of the section's entries works as well.
    backbone = build_encoder({"preset": None, **TINY_BACKBONE}, seed=0)
    model = AIMV2ImageClassifier(
        backbone, num_classes=10, pooling="mean", freeze_backbone=False
    )
    learning_rate = 1e-3
    model.compile(
        learning_rate=learning_rate, weight_decay=0.0, layer_decay=0.5
    )
    before = {w.path: to_numpy(w) for w in model.trainable_weights}
    assert len(before) == len(backbone.weights) + 2
    images, labels = fashion_batch
    model.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    steps = {}
    for weight in model.trainable_weights:
        # Fine-tuning changes every weight, the encoder's included.
        step = np.abs(to_numpy(weight) - before[weight.path]).max()
        assert step > 0, weight.path
        steps[weight.path] = step
        # Adam's first step moves every weight by about its rate.
        expected = learning_rate * 0.5 ** (
            3 - aimv2_layer_id(weight.path, num_layers=2)
        )
        np.testing.assert_allclose(step, expected, rtol=0.02)
    qkv = "encoder/block_{}/attention/qkv/kernel"
    assert (
        steps["patch_embedding/projection/kernel"]
        < steps[qkv.format(0)]
        < steps[qkv.format(1)]
        < steps["predictions/kernel"]
    )


def test_layer_decay_is_adamw_at_each_layers_rate():
    # With weight decay on, the scaled step is AdamW run at the scaled rate.
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    gradients = [rng.normal(size=(3, 4)).astype("float32") for _ in range(3)]

    def train(optimizer, scope):
        with keras.name_scope(scope[0]):
            with keras.name_scope(scope[1]):
                variable = keras.Variable(start, name="kernel")
        for gradient in gradients:
            optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
        return to_numpy(variable)

    decayed = train(
        LayerDecayAdamW(
            learning_rate=1e-2, layer_decay=0.5, num_layers=3, weight_decay=0.1
        ),
        ("encoder", "block_0"),
    )
    reference = train(
        keras.optimizers.AdamW(learning_rate=1e-2 * 0.125, weight_decay=0.1),
        ("encoder", "block_0"),
    )
    np.testing.assert_allclose(decayed, reference, rtol=1e-5, atol=1e-7)
    assert not np.allclose(decayed, start)
