"""Prefix attention: the encoder's mask during AIMv2 pre-training.

AIMv2 draws a prefix length `M ~ U{1, ..., I - 1}` per image (`I` patches):
the first `M` patches attend to each other bidirectionally, the rest
causally, and only the patches after the prefix are regressed. The draws
are training randomness, so they are made where keras-hub makes it, in the
preprocessor (`AIMV2PretrainerPreprocessor`), and reach the model as its
`prefix_lengths` input. This module turns them into the attention mask.
"""

from keras import ops

from keras_aimv2.validation import check_range


def causal_mask(length):
    """Boolean `(length, length)` mask, True where query `i` sees key `j <= i`.

    The one causal mask of the library: prefix attention widens it, and the
    decoder's causal attention asks the attention kernel for the same
    pattern (`is_causal=True`).
    """
    positions = ops.arange(length, dtype="int32")
    return positions[None, :] <= positions[:, None]


def prefix_attention_mask(prefix_lengths, num_tokens):
    """Boolean attention mask of prefix attention (True = may attend).

    Query `i` of example `b` may attend key `j` iff `j <= i` or
    `j < prefix_lengths[b]`: the prefix is seen bidirectionally, the rest
    causally (AIMv2, Section 3).

    Args:
        prefix_lengths: int tensor of shape `(batch,)`.
        num_tokens: int or scalar tensor. Sequence length.

    Returns:
        Bool tensor of shape `(batch, 1, num_tokens, num_tokens)`,
        broadcastable over attention heads.

    Example:

    >>> mask = prefix_attention_mask(np.array([2]), 4)
    >>> mask.shape
    (1, 1, 4, 4)
    """
    prefix_lengths = ops.cast(prefix_lengths, "int32")
    positions = ops.arange(num_tokens, dtype="int32")
    in_prefix = positions[None, None, :] < prefix_lengths[:, None, None]
    return ops.logical_or(causal_mask(num_tokens)[None], in_prefix)[:, None]


def check_prefix_lengths(prefix_lengths, num_patches):
    """Raise a clear error for lengths outside `[1, num_patches - 1]`.

    At least one patch must be visible and one predicted. Known values are
    checked eagerly, and in a `tf.data` pipeline by an assertion that fails
    the batch (`keras_aimv2.validation.check_range`).

    Args:
        prefix_lengths: int tensor `(batch,)`.
        num_patches: int. Patches per image.

    Returns:
        `prefix_lengths`.
    """
    return check_range(
        "prefix_lengths",
        prefix_lengths,
        1,
        num_patches - 1,
        f"at least one patch visible and one predicted of {num_patches}",
    )
