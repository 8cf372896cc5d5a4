"""The LiT objective: CLIP's symmetric contrastive loss.

LiT ("LiT: Zero-Shot Transfer with Locked-image text Tuning", Zhai et al.,
CVPR 2022) trains the text tower (and here the image tower's pool and
projection) with the contrastive loss of CLIP (Radford et al., 2021): in a
batch of `n` matching image-caption pairs, image `i` should pick caption
`i` among the `n` captions and caption `i` image `i` among the `n` images.
The loss is the mean of the two cross-entropies, over the rows of
`logits_per_image` and over the rows of `logits_per_text` (its
transpose), with the diagonal as targets. The batch is each call's: under
data parallelism, each replica's examples are contrasted among themselves.

Per-example weights scale each pair's two terms; a pair of weight 0 (the
padding that completes a last evaluation batch) also leaves the
alternatives of the others, so that it changes nothing.
"""

from keras import ops

# Logit given to the pairs of weight 0, so that softmax ignores them.
_MASKED_LOGIT = -1e9


def _masked_logits(logits_per_image, sample_weight):
    logits = ops.cast(logits_per_image, "float32")
    if sample_weight is None:
        return logits, None
    weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    present = weights > 0
    # Masked columns are alternatives for the image rows, masked rows for
    # the text rows.
    logits = ops.where(present[None, :], logits, _MASKED_LOGIT)
    logits = ops.where(present[:, None], logits, _MASKED_LOGIT)
    return logits, weights


def contrastive_loss(logits_per_image, sample_weight=None):
    """CLIP's symmetric contrastive loss, the objective of LiT.

    `(image_to_text + text_to_image) / 2`, where `image_to_text` is the
    cross-entropy of each row of `logits_per_image` against its diagonal
    entry and `text_to_image` that of each column (each row of
    `logits_per_text`), averaged over the pairs. Computed in float32.

    Args:
        logits_per_image: float tensor `(n, n)`; entry `[i, j]` scores
            image `i` with caption `j`, and caption `i` matches image `i`
            (`AIMV2LiTBackbone`'s `"vision_logits"`).
        sample_weight: float tensor `(n,)` or `None`. Weight of each pair:
            its two terms are scaled by it and the mean divides by the sum
            of the weights; a pair of weight 0 is also removed from the
            alternatives of the others. Defaults to `None`, all ones.

    Returns:
        A float32 scalar.

    Example:

    >>> logits = np.array([[10.0, 0.0], [0.0, 10.0]])
    >>> float(contrastive_loss(logits)) < 1e-4
    True
    """
    logits, weights = _masked_logits(logits_per_image, sample_weight)
    matches = ops.diagonal(logits)
    image_to_text = ops.logsumexp(logits, axis=1) - matches
    text_to_image = ops.logsumexp(logits, axis=0) - matches
    per_pair = (image_to_text + text_to_image) / 2.0
    if weights is None:
        return ops.mean(per_pair)
    # Masked pairs have a finite loss (their own row and column are
    # masked alike); weight 0 removes it.
    total = ops.sum(weights * per_pair)
    return total / ops.maximum(ops.sum(weights), 1e-12)


def image_to_text_correct(logits_per_image, sample_weight=None):
    """Whether each image ranks its own caption first, float32 `(n,)`.

    The top-1 image-to-text retrieval accuracy of the batch is the mean
    (weighted by `sample_weight`) of these values; pairs of weight 0 are
    no alternatives, as in `contrastive_loss`.

    Args:
        logits_per_image: float tensor `(n, n)`.
        sample_weight: float tensor `(n,)` or `None`. Defaults to `None`.

    Returns:
        A float32 tensor `(n,)` of ones and zeros.

    Example:

    >>> image_to_text_correct(np.array([[2.0, 1.0], [3.0, 0.0]]))
    [1.0, 0.0]
    """
    logits, _ = _masked_logits(logits_per_image, sample_weight)
    predictions = ops.argmax(logits, axis=1)
    targets = ops.arange(ops.shape(logits)[0], dtype=predictions.dtype)
    return ops.cast(ops.equal(predictions, targets), "float32")
