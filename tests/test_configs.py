"""The table of named sizes: official sizes, parameter counts, derivations."""

import importlib.util
import os

import keras
import pytest

import keras_aimv2
from keras_aimv2.configs import DECODER_SIZES
from keras_aimv2.configs import ENCODER_SIZES
from keras_aimv2.configs import parameter_count
from keras_aimv2.configs import swiglu_hidden_dim
from keras_aimv2.models import aimv2_presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Width, depth, heads and SwiGLU width of the official encoders
# (apple/ml-aim), written out here to check the table against.
OFFICIAL = {
    "base": (768, 12, 6, 2048),
    "large": (1024, 24, 8, 2816),
    "huge": (1536, 24, 12, 4096),
    "1b": (2048, 24, 16, 5632),
    "3b": (3072, 24, 24, 8192),
}
# Sizes small enough to build in a test; the others are checked against
# the count from their definition (and `large` against a built model).
BUILT = ("tiny", "mini", "small")


def encoder_parameters(config):
    """Parameters of an AIMv2 encoder, counted from its definition."""
    width, hidden = config["hidden_dim"], config["intermediate_dim"]
    patch = config["patch_size"]
    height, image_width, channels = config["image_shape"]
    patches = (height // patch) * (image_width // patch)
    embedding = patch * patch * channels * width + 2 * width + patches * width
    block = 4 * width * width + 3 * width * hidden + 2 * width
    return embedding + config["num_layers"] * block + width


def decoder_parameters(backbone_config, decoder_config):
    """Parameters of the pre-training decoder and heads, by definition."""
    width = backbone_config["hidden_dim"]
    pixels = (
        backbone_config["patch_size"] ** 2 * backbone_config["image_shape"][-1]
    )
    dim = decoder_config["decoder_hidden_dim"]
    hidden = decoder_config["decoder_intermediate_dim"]
    vocabulary = decoder_config["vocabulary_size"]
    context = decoder_config["context_length"]
    block = 4 * dim * dim + 3 * dim * hidden + 2 * dim
    decoder = (
        width * dim
        + dim  # projection of the encoder features, with bias
        + vocabulary * dim  # token embedding
        + dim  # BOS
        + (context + 1) * dim  # positions over BOS + context
        + decoder_config["decoder_num_layers"] * block
        + dim  # final norm
    )
    heads = dim * pixels + dim * vocabulary
    return decoder + heads


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
    assert config["image_shape"] == (224, 224, 3)
    assert config["patch_size"] == 14


def test_configs_are_derived_from_the_table():
    assert list(keras_aimv2.BACKBONE_CONFIGS) == list(ENCODER_SIZES)
    assert list(keras_aimv2.DECODER_CONFIGS) == list(DECODER_SIZES)
    for name, size in ENCODER_SIZES.items():
        assert keras_aimv2.BACKBONE_CONFIGS[name] == size.config()
        assert size.hidden_dim % size.num_heads == 0
    for name, size in DECODER_SIZES.items():
        assert keras_aimv2.DECODER_CONFIGS[name] == size.config()
        assert size.hidden_dim % size.num_heads == 0
    # The pre-training decoder of every released size (AIMv2, Table A1).
    aimv2 = keras_aimv2.DECODER_CONFIGS["aimv2"]
    assert aimv2["decoder_hidden_dim"] == 1024
    assert aimv2["decoder_num_layers"] == 12


@pytest.mark.parametrize("name", list(ENCODER_SIZES))
def test_recorded_parameter_counts_match_the_definition(name):
    size = ENCODER_SIZES[name]
    config = size.config()
    assert size.parameters == encoder_parameters(config)
    assert size.parameters == parameter_count(config)
    # No learned positions in the sine-cosine (native-resolution) model.
    native = {**config, "position_embedding": "sincos"}
    patches = (size.image_size // size.patch_size) ** 2
    assert parameter_count(native) == size.parameters - patches * (
        size.hidden_dim
    )


@pytest.mark.parametrize("name", BUILT)
def test_recorded_parameter_counts_match_built_models(name):
    backbone = keras_aimv2.AIMV2Backbone(**keras_aimv2.BACKBONE_CONFIGS[name])
    assert backbone.count_params() == ENCODER_SIZES[name].parameters


def test_large_backbone_has_the_official_parameter_count():
    keras.config.disable_traceback_filtering()
    config = keras_aimv2.BACKBONE_CONFIGS["large"]
    backbone = keras_aimv2.AIMV2Backbone(**config)
    assert backbone.count_params() == ENCODER_SIZES["large"].parameters
    assert backbone.count_params() == encoder_parameters(config)


def test_tiny_pretrainer_parameter_count(pretrainer):
    backbone = pretrainer.backbone
    backbone_config = keras_aimv2.BACKBONE_CONFIGS["tiny"]
    assert backbone.count_params() == ENCODER_SIZES["tiny"].parameters
    assert pretrainer.count_params() == (
        backbone.count_params()
        + decoder_parameters(
            backbone_config, keras_aimv2.DECODER_CONFIGS["tiny"]
        )
    )


def test_presets_are_derived_from_the_released_sizes():
    presets = aimv2_presets.backbone_presets
    released = {n: s for n, s in ENCODER_SIZES.items() if s.release}
    assert set(released) == {"large", "huge", "1b", "3b"}
    for name, size in released.items():
        for resolution in aimv2_presets.RELEASED_RESOLUTIONS:
            preset = presets[f"aimv2_{name}_patch14_{resolution}"]
            config = preset["config"]
            assert config == {
                **size.config(image_size=resolution),
                "position_embedding": "learned",
                "layer_norm_epsilon": 1e-5,
            }
            metadata = preset["metadata"]
            assert metadata["params"] == encoder_parameters(config)
            assert metadata["imagenet_top1"] == size.imagenet_top1[resolution]
            assert metadata["source"] == (
                f"apple/aimv2-{size.checkpoint_size}-patch14-{resolution}"
            )
            assert metadata["description"].startswith(size.release)
        at_224 = presets[f"aimv2_{name}_patch14_224"]["metadata"]
        assert at_224["params"] == size.parameters
    native = presets["aimv2_large_patch14_native"]
    assert native["metadata"]["params"] == parameter_count(native["config"])


def _benchmark_workloads():
    path = os.path.join(ROOT, "tools", "benchmark.py")
    spec = importlib.util.spec_from_file_location("_benchmark_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_workloads_name_sizes_of_the_table():
    benchmark = _benchmark_workloads()
    for name, workload in benchmark.WORKLOADS.items():
        assert workload["backbone"] in ENCODER_SIZES, name
        assert workload["decoder"] in DECODER_SIZES, name
        backbone, decoder = benchmark.workload_configs(name)
        assert backbone == ENCODER_SIZES[workload["backbone"]].config()
        assert decoder == DECODER_SIZES[workload["decoder"]].config()
