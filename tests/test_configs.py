"""Named configurations: the official sizes and their parameter counts."""

import keras
import pytest

import keras_aimv2
from keras_aimv2.configs import swiglu_hidden_dim

# Width, heads and SwiGLU width of the released encoders (apple/ml-aim).
OFFICIAL = {
    "base": (768, 12, 6, 2048),
    "large": (1024, 24, 8, 2816),
    "huge": (1536, 24, 12, 4096),
    "1b": (2048, 24, 16, 5632),
    "3b": (3072, 24, 24, 8192),
}


def encoder_parameters(width, depth, intermediate, patch=14, patches=256):
    """Parameters of an AIMv2 encoder, counted from its definition."""
    embedding = patch * patch * 3 * width + width + width + patches * width
    block = 4 * width * width + 3 * width * intermediate + 2 * width
    return embedding + depth * block + width


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_sizes(name):
    width, depth, heads, intermediate = OFFICIAL[name]
    config = keras_aimv2.BACKBONE_CONFIGS[name]
    assert config["hidden_dim"] == width
    assert config["num_layers"] == depth
    assert config["num_heads"] == heads
    assert config["hidden_dim"] // config["num_heads"] == 128
    assert config["intermediate_dim"] == intermediate
    assert swiglu_hidden_dim(width) == intermediate


def test_large_backbone_has_the_official_parameter_count():
    keras.config.disable_traceback_filtering()
    backbone = keras_aimv2.AIMV2Backbone(
        **keras_aimv2.BACKBONE_CONFIGS["large"]
    )
    assert backbone.count_params() == 309_197_824
    assert backbone.count_params() == encoder_parameters(1024, 24, 2816)


def test_tiny_pretrainer_parameter_count(pretrainer):
    backbone = pretrainer.backbone
    assert backbone.count_params() == encoder_parameters(
        64, 2, 128, patch=8, patches=16
    )
    decoder = (
        64 * 64
        + 64  # Projection of the encoder features, with bias.
        + 100 * 64
        + 64
        + 9 * 64  # Tokens, BOS, positions over BOS + 8.
        + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64)
        + 64
    )
    heads = 64 * 192 + 64 * 100
    assert (
        pretrainer.count_params() == backbone.count_params() + decoder + heads
    )
