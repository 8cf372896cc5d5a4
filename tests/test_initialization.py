"""Every parameter starts as in Apple's AIMv2 trainer.

The expectations are those of `tools/init_table.py`, written from the
trainer's rules; the statistics are measured on a freshly built model wide
enough for them to be tight (one block each, so that it builds in seconds).
"""

import math

import keras
import numpy as np
import pytest
from conftest import load_tool

from keras_aimv2.layers import PixelHead
from keras_aimv2.layers import TextHead
from keras_aimv2.layers import initializers

init_table = load_tool("init_table")

# Different encoder and decoder widths, so that a fan taken from the wrong
# side shows; 1,000 tokens.
BACKBONE = {
    "image_shape": (112, 112, 3),
    "patch_size": 14,
    "hidden_dim": 768,
    "num_layers": 1,
    "num_heads": 6,
    "intermediate_dim": 2048,
}
DECODER = {
    "decoder_hidden_dim": 1024,
    "decoder_num_layers": 1,
    "decoder_num_heads": 8,
    "decoder_intermediate_dim": 2816,
    "vocabulary_size": 1000,
    "context_length": 77,
}
FAMILIES = [
    "patch projection kernel",
    "patch projection bias",
    "patch position embedding",
    "patch RMSNorm gain",
    *(
        f"{stack} {name}"
        for stack in ("encoder", "decoder")
        for name in (
            "query",
            "key",
            "value",
            "attention output",
            "gate",
            "up",
            "down",
            "RMSNorm gains",
        )
    ),
    "decoder image projection kernel",
    "decoder image projection bias",
    "decoder token embedding",
    "decoder BOS token",
    "decoder text position embedding",
    "pixel head",
    "text head",
]


def std_tolerance(count):
    """Relative tolerance on a standard deviation measured over `count`.

    The sample standard deviation of a normal errs by `0.71 / sqrt(count)`
    (a uniform's by `0.45 / sqrt(count)`): 2% for matrices, about 6% for
    vectors of a thousand values.
    """
    return max(0.02, 2.0 / math.sqrt(count))


def mismatches(rows):
    """The families whose statistics break their rule, with the reason."""
    found = {}
    for row in rows:
        name, count, bound = row["family"], row["count"], row["bound"]
        std, expected = row["std"], row["expected_std"]
        mean_error = abs(row["mean"] - row["expected_mean"])
        if expected == 0.0:
            if std > 1e-6 or mean_error > 1e-6:
                found[name] = f"not constant: {row}"
        elif abs(std / expected - 1.0) > std_tolerance(count):
            found[name] = f"std {std:.5f}, expected {expected:.5f}"
        elif mean_error > 4.0 * expected / math.sqrt(count):
            found[name] = f"mean {row['mean']:.5f}"
        elif bound is not None and row["max_abs"] > bound * (1 + 1e-6):
            found[name] = f"max {row['max_abs']:.5f} > bound {bound:.5f}"
        # The largest of `count` uniform draws is within `10 / count` of
        # the bound but for a chance of `exp(-10)`.
        elif row["distribution"] == "uniform" and row["max_abs"] < bound * (
            1 - 10 / count
        ):
            found[name] = f"max {row['max_abs']:.5f} << bound {bound:.5f}"
    return found


@pytest.fixture(scope="module")
def weights():
    model = init_table.build_pretrainer(BACKBONE, DECODER, seed=0)
    return {
        path: keras.ops.convert_to_numpy(value)
        for path, value in init_table.weights_by_path(model).items()
    }


def test_every_parameter_starts_as_in_apples_trainer(weights):
    rows = init_table.measure_rows(weights, BACKBONE, DECODER)
    assert sorted(row["family"] for row in rows) == sorted(FAMILIES)
    assert mismatches(rows) == {}


def test_wrong_initialisers_are_caught(weights):
    # The rules this package had before (Xavier over the whole fused qkv
    # kernel, Glorot and a zero bias for the image projection, a zero patch
    # bias, heads at scale 1) and Xavier over the whole fused gate_up.
    keras.utils.set_random_seed(1)
    wrong = dict(weights)
    glorot = keras.initializers.GlorotUniform()
    unit_scale = keras.initializers.VarianceScaling(
        1.0, "fan_in", "truncated_normal"
    )
    for path in (
        "encoder/block_0/attention/qkv/kernel",
        "decoder/block_0/feed_forward/gate_up/kernel",
        "decoder/image_projection/kernel",
    ):
        wrong[path] = glorot(weights[path].shape)
    for path in (
        "patch_embedding/projection/bias",
        "decoder/image_projection/bias",
    ):
        wrong[path] = np.zeros_like(weights[path])
    for path in ("pixel_head/dense/kernel", "text_head/dense/kernel"):
        wrong[path] = unit_scale(weights[path].shape)
    rows = init_table.measure_rows(wrong, BACKBONE, DECODER)
    assert sorted(mismatches(rows)) == sorted(
        [
            "encoder query",
            "encoder key",
            "encoder value",
            "decoder gate",
            "decoder up",
            "decoder image projection kernel",
            "patch projection bias",
            "decoder image projection bias",
            "pixel head",
            "text head",
        ]
    )


def test_every_weight_belongs_to_a_family(weights):
    with pytest.raises(ValueError, match="extra/kernel"):
        init_table.measure_rows(
            {**weights, "extra/kernel": np.zeros((2, 2))}, BACKBONE, DECODER
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda: initializers.XavierUniform(num_kernels=3),
        initializers.torch_linear_kernel,
        lambda: initializers.torch_linear_bias(48),
        lambda: initializers.head_kernel(12),
        lambda: initializers.normal(0.02),
    ],
)
def test_initialisers_follow_the_global_seed(make):
    shape = (16, 48)
    keras.utils.set_random_seed(3)
    first = keras.ops.convert_to_numpy(make()(shape))
    keras.utils.set_random_seed(3)
    again = keras.ops.convert_to_numpy(make()(shape))
    keras.utils.set_random_seed(4)
    other = keras.ops.convert_to_numpy(make()(shape))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_xavier_uniform_bounds_each_fused_map_and_serializes():
    initializer = initializers.XavierUniform(num_kernels=2, seed=5)
    kernel = keras.ops.convert_to_numpy(initializer((256, 2 * 512)))
    bound = math.sqrt(6 / (256 + 512))
    assert bound * 0.99 < np.abs(kernel).max() <= bound
    copy = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(initializer)
    )
    assert copy.get_config() == {"num_kernels": 2, "seed": 5}
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(copy((256, 2 * 512))), kernel
    )
    with pytest.raises(ValueError, match="splits into that many maps"):
        initializers.XavierUniform(num_kernels=3)((4, 8))


def test_truncated_normal_is_truncated_exactly_on_every_backend():
    # A million draws: Keras's own truncated normal on PyTorch keeps about
    # four past the bound.
    initializer = initializers.TruncatedFanInNormal(scale=0.5, seed=2)
    kernel = keras.ops.convert_to_numpy(initializer((1000, 1000)))
    std = math.sqrt(0.5 / 1000)
    assert np.abs(kernel).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)
    assert abs(kernel.std() / std - 1) < 0.005
    assert abs(kernel.mean()) < 4 * std / 1000
    copy = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(initializer)
    )
    assert copy.get_config() == {"scale": 0.5, "seed": 2}


@pytest.mark.parametrize("head_class", [PixelHead, TextHead])
def test_heads_store_the_decoder_depth_and_default_to_the_papers(head_class):
    head = head_class(100, decoder_num_layers=3)
    config = head.get_config()
    assert config["decoder_num_layers"] == 3
    assert head.dense.kernel_initializer.scale == 1 / 4
    del config["decoder_num_layers"]
    restored = head_class.from_config(config)
    assert restored.decoder_num_layers == 12
    assert restored.dense.kernel_initializer.scale == 1 / 13
