"""Shared fixtures: tiny models and batches, on the backend of this run."""

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_aimv2
from keras_aimv2 import xla_cpu

# The JAX tests run with the XLA:CPU tuning `aimv2 pretrain` applies on a
# CPU host (importing the package no longer sets it).
xla_cpu.configure()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BACKBONE = keras_aimv2.BACKBONE_CONFIGS["tiny"]
TINY_DECODER = keras_aimv2.DECODER_CONFIGS["tiny"]
# The backbone of the keras-hub harness tests: as many patches (16) as
# channels, which its channels-first check relies on (tests/test_backbone.py).
HARNESS_BACKBONE = {
    "image_shape": (32, 32, 3),
    "patch_size": 8,
    "hidden_dim": 16,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_dim": 32,
}


def make_batch(batch_size=4, seed=0, num_real_tokens=None):
    """A batch for the tiny configuration, with right-padded captions."""
    rng = np.random.default_rng(seed)
    height, width, channels = TINY_BACKBONE["image_shape"]
    length = TINY_DECODER["context_length"]
    vocabulary_size = TINY_DECODER["vocabulary_size"]
    if num_real_tokens is None:
        num_real_tokens = rng.integers(2, length + 1, size=batch_size)
    padding_mask = np.arange(length)[None, :] < np.asarray(
        num_real_tokens
    ).reshape(-1, 1)
    token_ids = rng.integers(2, vocabulary_size, size=(batch_size, length))
    patch_size = TINY_BACKBONE["patch_size"]
    num_patches = (height // patch_size) * (width // patch_size)
    return {
        "images": rng.normal(size=(batch_size, height, width, channels)).astype(
            "float32"
        ),
        "token_ids": np.where(padding_mask, token_ids, 0).astype("int32"),
        "padding_mask": padding_mask,
        "prefix_lengths": rng.integers(1, num_patches, size=batch_size).astype(
            "int32"
        ),
    }


def tiny_pretrainer(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
    return keras_aimv2.AIMV2Pretrainer(
        backbone, **{**TINY_DECODER, **overrides}
    )


@pytest.fixture
def pretrainer():
    return tiny_pretrainer()


@pytest.fixture
def batch():
    return make_batch()


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def load_tool(name):
    """A module of `tools/`, imported by path."""
    path = os.path.join(ROOT, "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def only_on(*backends):
    """Run a test in the test processes of these backends only (for
    behaviour that does not depend on the backend, or only one has)."""
    backend = keras.config.backend()
    return pytest.mark.skipif(
        backend not in backends, reason=f"runs in the {backends} test process"
    )
