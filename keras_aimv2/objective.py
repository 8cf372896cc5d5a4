"""The AIMv2 pre-training objective: next-patch regression and captioning.

`L = L_text + alpha * L_img` (AIMv2, Section 3). The decoder runs over
`[I image tokens][BOS][text tokens]`. The output at image position `t - 1`
regresses the normalized pixels of patch `t`, counted only for patches after
the prefix (`t >= M`); the output at BOS predicts the first text token and
text position `j` the token `j + 1`. Both losses average over every counted
patch or token of the batch, as the released trainer does, so images with a
short prefix weigh more. Optional per-example weights (`sample_weight`,
e.g. 0 for the padding that completes a last evaluation batch) scale every
patch and token of an example.

The functions here return the sums over a batch and their counts, not
means: a mean divides a sum by the count of the whole batch, which under
data parallelism no single replica holds. `BatchMeans` divides on one
device; `keras_aimv2.distribution` replaces it with the reduction over
replicas when it prepares a model for a multi-replica run, so that each
replica contributes its share of the global batch's mean.
"""

from keras import ops

from keras_aimv2.patches import normalize_patches
from keras_aimv2.patches import patchify


def pixel_targets(images, patch_size, data_format=None):
    """Per-patch normalized pixel targets of `images`, `(batch, I, P)`.

    `data_format` is the images' layout (`keras_aimv2.patches.patchify`).
    """
    return normalize_patches(patchify(images, patch_size, data_format))


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


def pixel_error_sum(pixel_predictions, targets, weights):
    """Weighted sum of the per-patch mean squared errors, and its count.

    Args:
        pixel_predictions: `(batch, I - 1, P)`, prediction `i` for patch
            `i + 1`.
        targets: `(batch, I, P)`, normalized patches.
        weights: `(batch, I - 1)`, the weight of each prediction
            (`pixel_target_weights`).

    Returns:
        `(sum, count)`: float32 scalars, the weighted sum over the batch of
        each counted patch's mean squared error over its values, and the
        sum of the weights.
    """
    error = ops.cast(pixel_predictions, "float32") - targets[:, 1:]
    per_patch = ops.mean(ops.square(error), axis=-1)
    return ops.sum(per_patch * weights), ops.sum(weights)


def text_sums(text_logits, token_ids, weights):
    """Weighted sums of next-token cross-entropy and of correct guesses.

    Args:
        text_logits: `(batch, T, vocabulary)`, logits at `[BOS] t_1 ...
            t_{T-1}`, each predicting the next token.
        token_ids: `(batch, T)`, the tokens `t_1 ... t_T`.
        weights: `(batch, T)`, the weight of each target
            (`text_target_weights`).

    Returns:
        `(cross_entropy_sum, correct_sum, count)`: float32 scalars.
    """
    logits = ops.cast(text_logits, "float32")
    cross_entropy = ops.sparse_categorical_crossentropy(
        token_ids, logits, from_logits=True
    )
    correct = ops.cast(
        ops.equal(ops.argmax(logits, axis=-1), ops.cast(token_ids, "int32")),
        "float32",
    )
    return (
        ops.sum(cross_entropy * weights),
        ops.sum(correct * weights),
        ops.sum(weights),
    )


def mean(total, count):
    """`total / count`, dividing by at least 1 (a batch without targets adds
    nothing)."""
    return total / ops.maximum(count, 1.0)


class BatchMeans:
    """How a batch's sums and counts become its means, on one device.

    `total` turns a statistic of the examples at hand into the batch's (the
    identity here); `tracked` is what a `keras.metrics.Mean` records for a
    mean, and `returned` what `compute_loss` returns for the loss. Replicas
    that each hold a slice of the batch need the count of the whole batch
    and contribute their share of its mean: `keras_aimv2.distribution`
    subclasses this for them, and sets it on the model it prepares.
    """

    def total(self, value):
        """The sum of a statistic over the whole batch."""
        return value

    def split(self, value):
        """This device's share of a value every device computes in full."""
        return value

    def tracked(self, share):
        """What a `keras.metrics.Mean` records for this share of a mean."""
        return share

    def returned(self, share, training):
        """What `compute_loss` returns for this share of the loss."""
        return share


def _per_example(weights, sample_weight):
    if sample_weight is None:
        return weights
    sample_weight = ops.cast(ops.reshape(sample_weight, (-1, 1)), "float32")
    return weights * sample_weight
