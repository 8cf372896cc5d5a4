"""Building blocks: attention masks by perturbation, patches, positions.

Each public layer also runs through keras-hub's layer harness in
`tests/test_layer_harness.py`.
"""

import numpy as np
import pytest
from conftest import to_numpy

from keras_aimv2.layers import MultimodalCausalDecoder
from keras_aimv2.layers import PatchEmbedding
from keras_aimv2.layers import PrefixViTEncoder
from keras_aimv2.layers import prefix_attention_mask
from keras_aimv2.patches import normalize_patches
from keras_aimv2.patches import patchify
from keras_aimv2.patches import sincos_position_embedding
from keras_aimv2.patches import unpatchify

NUM_TOKENS = 12
WIDTH = 32


def _encoder():
    return PrefixViTEncoder(num_layers=2, num_heads=2, intermediate_dim=64)


def _changed_positions(before, after, tolerance=1e-6):
    """Sequence positions whose outputs differ in any example or channel."""
    difference = np.abs(to_numpy(after) - to_numpy(before)).max(axis=(0, 2))
    return set(np.flatnonzero(difference > tolerance).tolist())


def _perturb(tokens, position):
    perturbed = tokens.copy()
    perturbed[:, position] += np.random.default_rng(1).normal(
        size=perturbed[:, position].shape
    )
    return perturbed


@pytest.fixture
def tokens():
    rng = np.random.default_rng(0)
    return rng.normal(size=(1, NUM_TOKENS, WIDTH)).astype("float32")


@pytest.mark.parametrize("position", [5, 8, 11])
def test_prefix_attention_hides_later_patches(tokens, position):
    encoder, prefix = _encoder(), np.array([4])
    before = encoder(tokens, prefix_lengths=prefix)
    after = encoder(_perturb(tokens, position), prefix_lengths=prefix)
    assert _changed_positions(before, after) == set(range(position, NUM_TOKENS))


@pytest.mark.parametrize("position", [0, 3])
def test_prefix_patches_are_seen_by_every_position(tokens, position):
    encoder, prefix = _encoder(), np.array([4])
    before = encoder(tokens, prefix_lengths=prefix)
    after = encoder(_perturb(tokens, position), prefix_lengths=prefix)
    assert _changed_positions(before, after) == set(range(NUM_TOKENS))


@pytest.mark.parametrize("position", [0, 6, 11])
def test_without_prefix_the_encoder_is_bidirectional(tokens, position):
    encoder = _encoder()
    before = encoder(tokens)
    after = encoder(_perturb(tokens, position))
    assert _changed_positions(before, after) == set(range(NUM_TOKENS))


def test_prefix_lengths_apply_per_example():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, NUM_TOKENS, WIDTH)).astype("float32")
    encoder, prefix = _encoder(), np.array([2, 9])
    perturbed = tokens.copy()
    perturbed[:, 5] += 1.0
    before = to_numpy(encoder(tokens, prefix_lengths=prefix))
    after = to_numpy(encoder(perturbed, prefix_lengths=prefix))
    changed = np.abs(after - before).max(axis=-1) > 1e-6
    # Example 0 (M = 2): patch 5 is causal, so only positions >= 5 change.
    assert changed[0].tolist() == [i >= 5 for i in range(NUM_TOKENS)]
    # Example 1 (M = 9): patch 5 is in the prefix, so everything changes.
    assert changed[1].all()


def test_prefix_attention_mask_matches_definition():
    mask = to_numpy(prefix_attention_mask(np.array([1, 3]), 5))
    assert mask.shape == (2, 1, 5, 5)
    for b, m in enumerate([1, 3]):
        for i in range(5):
            for j in range(5):
                assert mask[b, 0, i, j] == (j <= i or j < m)


def _sequence(outputs):
    """The decoder's image and text outputs as one sequence again."""
    return np.concatenate([to_numpy(part) for part in outputs], axis=1)


def _decoder():
    return MultimodalCausalDecoder(
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        intermediate_dim=64,
        vocabulary_size=50,
        context_length=8,
    )


@pytest.mark.parametrize("position", [0, 3, 7])
def test_decoder_is_causal_over_text(position):
    decoder = _decoder()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 6, 16)).astype("float32")
    token_ids = rng.integers(0, 50, size=(2, 8)).astype("int32")
    changed_ids = token_ids.copy()
    changed_ids[:, position] = (changed_ids[:, position] + 1) % 50
    before = _sequence(decoder(features, token_ids))
    after = _sequence(decoder(features, changed_ids))
    # 6 image tokens, then BOS: text token k sits at sequence index 7 + k.
    assert _changed_positions(before, after) == set(range(7 + position, 15))


def test_decoder_text_sees_every_image_patch():
    decoder = _decoder()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 6, 16)).astype("float32")
    token_ids = rng.integers(0, 50, size=(1, 8)).astype("int32")
    changed = features.copy()
    changed[:, 5] += 1.0
    positions = _changed_positions(
        _sequence(decoder(features, token_ids)),
        _sequence(decoder(changed, token_ids)),
    )
    # The last image token: itself, BOS and every text token change.
    assert positions == set(range(5, 15))


def test_patchify_layout_and_inverse():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    patches = to_numpy(patchify(images, 4))
    assert patches.shape == (2, 6, 48)
    # Patch (row 1, column 2) in raster order is index 1 * 3 + 2 = 5, and is
    # flattened in (row, column, channel) order with the channel fastest.
    np.testing.assert_array_equal(
        patches[:, 5], images[:, 4:8, 8:12, :].reshape(2, -1)
    )
    restored = unpatchify(patches, (2, 3), 4, channels=3)
    np.testing.assert_array_equal(to_numpy(restored), images)
    # Channels-first images give the same patches, and come back so.
    transposed = np.transpose(images, (0, 3, 1, 2))
    np.testing.assert_array_equal(
        to_numpy(patchify(transposed, 4, "channels_first")), patches
    )
    restored = unpatchify(patches, (2, 3), 4, 3, "channels_first")
    np.testing.assert_array_equal(to_numpy(restored), transposed)


def test_normalize_patches_uses_unbiased_variance():
    rng = np.random.default_rng(0)
    patches = rng.normal(3.0, 2.0, size=(2, 5, 48)).astype("float32")
    normalized = to_numpy(normalize_patches(patches))
    expected = (patches - patches.mean(-1, keepdims=True)) / np.sqrt(
        patches.var(-1, ddof=1, keepdims=True) + 1e-6
    )
    np.testing.assert_allclose(normalized, expected, atol=1e-5)


def test_sincos_table_layout():
    table = to_numpy(sincos_position_embedding(2, 3, 8))
    assert table.shape == (6, 8)
    omega = 1.0 / 10000 ** (np.arange(2) / 2)
    # Token 4 is row 1, column 1 of the 2 x 3 grid; token 5 is column 2.
    for index, (row, col) in enumerate([(1, 1), (1, 2)], start=4):
        expected = np.concatenate(
            [
                np.sin(col * omega),
                np.cos(col * omega),
                np.sin(row * omega),
                np.cos(row * omega),
            ]
        )
        np.testing.assert_allclose(table[index], expected, atol=1e-6)


def test_sincos_patch_embedding_accepts_any_grid():
    layer = PatchEmbedding(
        hidden_dim=16, patch_size=4, position_embedding="sincos"
    )
    assert tuple(layer(np.zeros((1, 8, 16, 3))).shape) == (1, 8, 16)
    assert tuple(layer(np.zeros((1, 12, 4, 3))).shape) == (1, 3, 16)
