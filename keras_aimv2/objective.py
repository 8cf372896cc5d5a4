"""The AIMv2 pre-training objective: next-patch regression and captioning.

`L = L_text + alpha * L_img` (AIMv2, Section 3). The decoder runs over
`[I image tokens][BOS][text tokens]`. The output at image position `t - 1`
regresses the normalized pixels of patch `t`, counted only for patches after
the prefix (`t >= M`); the output at BOS predicts the first text token and
text position `j` the token `j + 1`. Both losses average over every counted
patch or token of the batch, as the released trainer does. Under data
parallelism the count is the global batch's (`sum_over_replicas`), so each
replica returns its share of the global average and the combined gradient
is that of one device seeing the whole batch.
"""

from keras import ops

from keras_aimv2.distribution import sum_over_replicas
from keras_aimv2.patches import normalize_patches
from keras_aimv2.patches import patchify


def pixel_targets(images, patch_size):
    """Per-patch normalized pixel targets of `images`, `(batch, I, P)`."""
    return normalize_patches(patchify(images, patch_size))


def pixel_target_weights(prefix_lengths, num_patches):
    """Which next-patch predictions count, `(batch, num_patches - 1)`.

    Prediction `i` (made at image position `i`) targets patch `i + 1`, and
    counts iff that patch lies outside the prefix: `i + 1 >= M`.
    """
    targets = ops.arange(1, num_patches, dtype="int32")
    prefix_lengths = ops.cast(prefix_lengths, "int32")
    return ops.cast(targets[None, :] >= prefix_lengths[:, None], "float32")


def pixel_loss(pixel_predictions, targets, weights):
    """Mean squared error over the counted patches and their values.

    Args:
        pixel_predictions: `(batch, I - 1, P)`, prediction `i` for patch
            `i + 1`.
        targets: `(batch, I, P)`, normalized patches.
        weights: `(batch, I - 1)`, 1 where a prediction counts.
    """
    error = ops.cast(pixel_predictions, "float32") - targets[:, 1:]
    per_patch = ops.mean(ops.square(error), axis=-1)
    return _weighted_mean(per_patch, weights)


def text_loss_and_accuracy(text_logits, token_ids, padding_mask):
    """Next-token cross-entropy and accuracy over the non-padding tokens.

    Args:
        text_logits: `(batch, T, vocabulary)`, logits at `[BOS] t_1 ...
            t_{T-1}`, each predicting the next token.
        token_ids: `(batch, T)`, the tokens `t_1 ... t_T`.
        padding_mask: `(batch, T)`, true for real tokens.
    """
    logits = ops.cast(text_logits, "float32")
    cross_entropy = ops.sparse_categorical_crossentropy(
        token_ids, logits, from_logits=True
    )
    weights = ops.cast(padding_mask, "float32")
    correct = ops.cast(
        ops.equal(ops.argmax(logits, axis=-1), ops.cast(token_ids, "int32")),
        "float32",
    )
    # One count (and, distributed, one all-reduce) serves both means.
    count = _global_count(weights)
    return (
        ops.sum(cross_entropy * weights) / count,
        ops.sum(correct * weights) / count,
    )


def _weighted_mean(values, weights):
    return ops.sum(values * weights) / _global_count(weights)


def _global_count(weights):
    """The weights' sum over the global batch, at least 1."""
    return ops.maximum(sum_over_replicas(ops.sum(weights)), 1.0)
