"""The AIMv2 pre-training objective: next-patch regression and captioning.

`L = L_text + alpha * L_img` (AIMv2, Section 3). The decoder runs over
`[I image tokens][BOS][text tokens]`. The output at image position `t - 1`
regresses the normalized pixels of patch `t`, counted only for patches after
the prefix (`t >= M`); the output at BOS predicts the first text token and
text position `j` the token `j + 1`. Both losses average over every counted
patch or token of the batch, as the released trainer does. Under data
parallelism the count is the global batch's (`sum_over_replicas`), so each
replica returns its share of the global average and the combined gradient
is that of one device seeing the whole batch. Each mean comes with its
count, so that means over several batches stay exact (weighted by counts),
and optional per-example weights (`sample_weight`, e.g. 0 for the padding
that completes a last evaluation batch) scale every patch and token of an
example.
"""

from keras import ops

from keras_aimv2.distribution import sum_over_replicas
from keras_aimv2.patches import normalize_patches
from keras_aimv2.patches import patchify


def pixel_targets(images, patch_size):
    """Per-patch normalized pixel targets of `images`, `(batch, I, P)`."""
    return normalize_patches(patchify(images, patch_size))


def pixel_target_weights(prefix_lengths, num_patches, sample_weight=None):
    """Which next-patch predictions count, `(batch, num_patches - 1)`.

    Prediction `i` (made at image position `i`) targets patch `i + 1`, and
    counts iff that patch lies outside the prefix: `i + 1 >= M`; an
    example's `sample_weight` scales its predictions.
    """
    targets = ops.arange(1, num_patches, dtype="int32")
    prefix_lengths = ops.cast(prefix_lengths, "int32")
    weights = ops.cast(targets[None, :] >= prefix_lengths[:, None], "float32")
    return _per_example(weights, sample_weight)


def text_target_weights(padding_mask, sample_weight=None):
    """Which next-token predictions count, `(batch, T)`: the target tokens
    (`padding_mask`), scaled by their example's `sample_weight`."""
    return _per_example(ops.cast(padding_mask, "float32"), sample_weight)


def pixel_loss(pixel_predictions, targets, weights):
    """Mean squared error over the counted patches and their values.

    Args:
        pixel_predictions: `(batch, I - 1, P)`, prediction `i` for patch
            `i + 1`.
        targets: `(batch, I, P)`, normalized patches.
        weights: `(batch, I - 1)`, the weight of each prediction
            (`pixel_target_weights`).

    Returns:
        `(mean, count)`: the weighted mean over the global batch, and the
        weights' global sum (the mean's weight when batches are averaged).
    """
    error = ops.cast(pixel_predictions, "float32") - targets[:, 1:]
    per_patch = ops.mean(ops.square(error), axis=-1)
    count = _global_count(weights)
    return ops.sum(per_patch * weights) / ops.maximum(count, 1.0), count


def text_loss_and_accuracy(text_logits, token_ids, weights):
    """Next-token cross-entropy and accuracy over the target tokens.

    Args:
        text_logits: `(batch, T, vocabulary)`, logits at `[BOS] t_1 ...
            t_{T-1}`, each predicting the next token.
        token_ids: `(batch, T)`, the tokens `t_1 ... t_T`.
        weights: `(batch, T)`, the weight of each target
            (`text_target_weights`).

    Returns:
        `(loss, accuracy, count)`: weighted means over the global batch,
        and the weights' global sum.
    """
    logits = ops.cast(text_logits, "float32")
    cross_entropy = ops.sparse_categorical_crossentropy(
        token_ids, logits, from_logits=True
    )
    correct = ops.cast(
        ops.equal(ops.argmax(logits, axis=-1), ops.cast(token_ids, "int32")),
        "float32",
    )
    # One count (and, distributed, one all-reduce) serves both means.
    count = _global_count(weights)
    denominator = ops.maximum(count, 1.0)
    return (
        ops.sum(cross_entropy * weights) / denominator,
        ops.sum(correct * weights) / denominator,
        count,
    )


def _per_example(weights, sample_weight):
    if sample_weight is None:
        return weights
    sample_weight = ops.cast(ops.reshape(sample_weight, (-1, 1)), "float32")
    return weights * sample_weight


def _global_count(weights):
    """The weights' sum over the global batch (a mean divides by at least
    1, so that a batch without targets adds nothing)."""
    return sum_over_replicas(ops.sum(weights))
