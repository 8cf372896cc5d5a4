"""Model FLOPs: the stated formula, and its match with the built model."""

import numpy as np

import keras_aimv2
from keras_aimv2.flops import encoder_flops
from keras_aimv2.flops import pretraining_flops


def test_small_workload_by_hand():
    # The benchmark's "small" workload, expanded term by term.
    backbone = {
        "image_shape": (224, 224, 3),
        "patch_size": 14,
        "hidden_dim": 384,
        "num_layers": 12,
        "num_heads": 6,
        "intermediate_dim": 1024,
    }
    decoder = {
        "decoder_hidden_dim": 384,
        "decoder_num_layers": 4,
        "decoder_intermediate_dim": 1024,
        "vocabulary_size": 32000,
        "context_length": 77,
    }
    n, p, d, h = 256, 588, 384, 1024
    t, c, v = 256 + 77 + 1, 77, 32000
    encoder = 2 * n * p * d + 12 * (
        8 * n * d * d + 6 * n * d * h + 4 * n * n * d
    )
    decoder_cost = 2 * n * d * d + 4 * (
        8 * t * d * d + 6 * t * d * h + 4 * t * t * d
    )
    heads = 2 * (c + 1) * d * v + 2 * n * d * p
    assert encoder_flops(backbone, batch_size=8) == 8 * encoder
    assert pretraining_flops(backbone, decoder, batch_size=8) == (
        3 * 8 * (encoder + decoder_cost + heads)
    )
    # 473 GFLOPs a step at batch 8, as the benchmark's table reports.
    assert round(pretraining_flops(backbone, decoder, 8) / 1e9) == 473


def test_encoder_formula_counts_every_encoder_kernel():
    """The linear terms are 2 * tokens * (kernel size) over all kernels."""
    config = keras_aimv2.BACKBONE_CONFIGS["tiny"]
    backbone = keras_aimv2.AIMV2Backbone(**config)
    tokens = (config["image_shape"][0] // config["patch_size"]) ** 2
    kernels = [w for w in backbone.weights if w.path.endswith("kernel")]
    assert len(kernels) == 1 + 4 * config["num_layers"]
    linear = sum(2 * tokens * int(np.prod(w.shape)) for w in kernels)
    attention = config["num_layers"] * 4 * tokens**2 * config["hidden_dim"]
    assert encoder_flops(config) == linear + attention
