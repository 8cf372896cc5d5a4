"""Other resolutions: resampled position embeddings, presets, recipes."""

import keras
import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER
from conftest import to_numpy

import keras_aimv2
from keras_aimv2.layers.patch_embedding import resample_position_embedding
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier
from keras_aimv2.recipes import backbone_arguments
from keras_aimv2.recipes import load_recipe
from keras_aimv2.training import initialize_from_preset

POSITIONS = "patch_embedding/position_embedding"


def _table(grid, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(grid[0] * grid[1], dim)).astype("float32")


def _weights(model):
    return {w.path: to_numpy(w) for w in model.weights}


def test_resampling_to_the_same_grid_is_the_identity():
    table = _table((16, 16))
    np.testing.assert_array_equal(
        resample_position_embedding(table, (16, 16), (16, 16)), table
    )


def test_constant_table_stays_constant():
    table = np.tile(np.linspace(-1, 1, 8, dtype="float32"), (256, 1))
    resized = resample_position_embedding(table, (16, 16), (24, 24))
    assert resized.shape == (576, 8)
    np.testing.assert_allclose(resized, np.tile(table[:1], (576, 1)), 1e-6)


def test_smooth_table_is_resampled_on_its_grid():
    # A smooth function of the patch centres, sampled on 16 x 16, resampled
    # to 24 x 24, matches the same function sampled there.
    def field(rows, cols):
        return np.stack(
            [np.sin(np.pi * rows / 16) * np.cos(np.pi * cols / 16), rows / 16],
            axis=-1,
        ).reshape(-1, 2)

    old = np.arange(16.0)
    new = (np.arange(24) + 0.5) * 16 / 24 - 0.5
    table = field(*np.meshgrid(old, old, indexing="ij"))
    expected = field(*np.meshgrid(new, new, indexing="ij"))
    resized = resample_position_embedding(table, (16, 16), (24, 24))
    np.testing.assert_allclose(resized, expected, atol=0.03)
    # Rows vary, columns don't: the grid's orientation is kept.
    second = resized[:, 1].reshape(24, 24)
    np.testing.assert_allclose(second[:, 0], second[:, -1], atol=1e-6)
    assert second[-1, 0] - second[0, 0] > 0.9


@pytest.mark.parametrize("target", [(24, 24), (32, 20), (8, 8)])
def test_resampling_matches_torch_bicubic_interpolation(target):
    table = _table((16, 16))
    grid = torch.tensor(table.reshape(16, 16, 8)).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(
        grid, size=target, mode="bicubic", align_corners=False
    )
    expected = expected[0].permute(1, 2, 0).reshape(-1, 8).numpy()
    np.testing.assert_allclose(
        resample_position_embedding(table, (16, 16), target),
        expected,
        atol=1e-5,
    )


def test_backbone_preset_loads_at_a_higher_resolution(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
    backbone.save_to_preset(str(tmp_path))
    original = _weights(backbone)

    same = keras_aimv2.AIMV2Backbone.from_preset(
        str(tmp_path), image_shape=(32, 32, 3)
    )
    for path, value in _weights(same).items():
        np.testing.assert_array_equal(value, original[path])

    larger = keras_aimv2.AIMV2Backbone.from_preset(
        str(tmp_path), image_shape=(48, 48, 3)
    )
    assert larger.image_shape == (48, 48, 3)
    assert larger.patch_embedding.grid_size == (6, 6)
    features = larger(np.zeros((2, 48, 48, 3), "float32"))
    assert tuple(features.shape) == (2, 36, 64)
    weights = _weights(larger)
    np.testing.assert_allclose(
        weights[POSITIONS],
        resample_position_embedding(original[POSITIONS], (4, 4), (6, 6)),
        atol=1e-6,
    )
    for path, value in weights.items():
        if path != POSITIONS:
            np.testing.assert_array_equal(value, original[path])


def test_channels_first_backbone_moves_to_another_resolution():
    keras.utils.set_random_seed(0)
    last = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
    first = keras_aimv2.AIMV2Backbone(
        **{**TINY_BACKBONE, "image_shape": (3, 32, 32)},
        data_format="channels_first",
    )
    first.set_weights(last.get_weights())
    larger_last = last.with_image_shape((48, 40, 3))
    larger_first = first.with_image_shape((3, 48, 40))
    assert larger_first.image_shape == (3, 48, 40)
    assert larger_first.patch_embedding.grid_size == (6, 5)
    images = np.random.default_rng(0).normal(size=(2, 48, 40, 3))
    np.testing.assert_allclose(
        to_numpy(larger_first(np.transpose(images, (0, 3, 1, 2)))),
        to_numpy(larger_last(images)),
        atol=1e-5,
    )


def test_resolution_errors_name_the_argument():
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
    with pytest.raises(ValueError, match="3 channels.*image_shape"):
        backbone.with_image_shape((48, 48, 1))
    with pytest.raises(ValueError, match="multiple of patch_size=8"):
        backbone.with_image_shape((44, 48, 3))
    with pytest.raises(ValueError, match="source_grid"):
        resample_position_embedding(_table((4, 4)), (4, 5), (6, 6))


def test_classifier_preset_at_a_higher_resolution(tmp_path):
    keras_aimv2.AIMV2Backbone(**TINY_BACKBONE).save_to_preset(str(tmp_path))
    model = AIMV2ImageClassifier.from_preset(
        str(tmp_path), num_classes=3, image_shape=(48, 48, 3)
    )
    assert model.backbone.image_shape == (48, 48, 3)
    assert tuple(model.preprocessor.image_converter.image_size) == (48, 48)
    raw = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3))
    assert model.predict(raw, verbose=0).shape == (2, 3)


def test_pretraining_continues_from_a_preset_at_a_higher_resolution(
    tmp_path,
):
    keras.utils.set_random_seed(0)
    source = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(**TINY_BACKBONE), **TINY_DECODER
    )
    source.save_to_preset(str(tmp_path))
    keras.utils.set_random_seed(1)
    target = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(
            **{**TINY_BACKBONE, "image_shape": (48, 48, 3)}
        ),
        **TINY_DECODER,
    )
    initialize_from_preset(target, str(tmp_path))
    before, after = _weights(source), _weights(target)
    np.testing.assert_allclose(
        after[POSITIONS],
        resample_position_embedding(before[POSITIONS], (4, 4), (6, 6)),
        atol=1e-6,
    )
    decoder = [path for path in after if path.startswith("decoder/")]
    assert decoder
    for path in decoder + ["encoder/block_1/attention/qkv/kernel"]:
        np.testing.assert_array_equal(after[path], before[path])

    wider = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(**{**TINY_BACKBONE, "hidden_dim": 32}),
        **TINY_DECODER,
    )
    with pytest.raises(ValueError, match="Only the image size may differ"):
        initialize_from_preset(wider, str(tmp_path))


def test_high_resolution_recipe_follows_the_paper():
    recipe = load_recipe("aimv2_large_336")
    assert backbone_arguments(recipe.backbone)["image_shape"] == (
        336,
        336,
        3,
    )
    assert backbone_arguments(recipe.backbone)["hidden_dim"] == 1024
    assert recipe.training.weight_decay == 0.0
    # 2B further pairs at batch 8192.
    steps = recipe.training.steps * recipe.training.batch_size
    assert 2.0e9 <= steps < 2.0e9 + 8192
    # The 224-pixel preset to continue is given on the command line.
    assert recipe.initialize.preset is None
