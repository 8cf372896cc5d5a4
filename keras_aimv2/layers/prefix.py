"""Prefix attention: the encoder's mask during AIMv2 pre-training."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.distribution import replica
from keras_aimv2.validation import check_range


def prefix_attention_mask(prefix_lengths, num_tokens):
    """Boolean attention mask of prefix attention (True = may attend).

    Query `i` of example `b` may attend key `j` iff `j <= i` or
    `j < prefix_lengths[b]`: the prefix is seen bidirectionally, the rest
    causally (AIMv2, Section 3).

    Args:
        prefix_lengths: int tensor of shape `(batch,)`.
        num_tokens: int. Sequence length.

    Returns:
        Bool tensor of shape `(batch, 1, num_tokens, num_tokens)`,
        broadcastable over attention heads.
    """
    positions = ops.arange(num_tokens, dtype="int32")
    causal = positions[None, :] <= positions[:, None]
    prefix_lengths = ops.cast(prefix_lengths, "int32")
    in_prefix = positions[None, None, :] < prefix_lengths[:, None, None]
    return ops.logical_or(causal[None], in_prefix)[:, None]


@register
class PrefixSampler(keras.layers.Layer):
    """Prefix length per example: given, or drawn from U{1, ..., I - 1}.

    AIMv2 draws the prefix length `M` of every image independently and
    uniformly from `{1, ..., I - 1}`, where `I` is the number of patches, so
    that at least one patch is visible and at least one is predicted. In
    training the draw changes at every step (a `keras.random.SeedGenerator`,
    which also works under `jit`); in inference it uses the fixed
    `evaluation_seed`, so validation losses are comparable between runs.
    Under data parallelism each replica takes its own slice of one draw for
    the global batch: no two replicas draw the same prefixes, and the draws
    are those of one device seeing the whole batch.
    Explicit lengths, when passed, are checked and returned instead.

    Args:
        seed: int or `None`. Seed of the training draws. Defaults to `None`.
        evaluation_seed: int. Seed of the inference draws. Defaults to `0`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> tokens = np.zeros((4, 16, 8))
    >>> PrefixSampler(seed=1)(tokens, training=True).shape
    (4,)
    """

    def __init__(self, seed=None, evaluation_seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.evaluation_seed = evaluation_seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def check_prefix_lengths(self, prefix_lengths, num_tokens):
        """Raise a clear error for lengths outside `[1, num_tokens - 1]`."""
        return check_range(
            "prefix_lengths",
            prefix_lengths,
            1,
            num_tokens - 1,
            f"at least one patch visible and one predicted of {num_tokens}",
        )

    def call(self, tokens, prefix_lengths=None, training=None):
        num_tokens = tokens.shape[1]
        if prefix_lengths is not None:
            if num_tokens is not None:
                prefix_lengths = self.check_prefix_lengths(
                    prefix_lengths, num_tokens
                )
            return ops.cast(ops.convert_to_tensor(prefix_lengths), "int32")
        if num_tokens is None:
            num_tokens = ops.shape(tokens)[1]
        seed = self.seed_generator if training else self.evaluation_seed
        batch = ops.shape(tokens)[0]
        index, count = replica()
        draws = keras.random.randint(
            (batch * count,),
            minval=1,
            maxval=num_tokens,
            dtype="int32",
            seed=seed,
        )
        if count == 1:
            return draws
        return ops.slice(draws, (index * batch,), (batch,))

    def compute_output_shape(self, tokens_shape, prefix_lengths_shape=None):
        return (tokens_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"seed": self.seed, "evaluation_seed": self.evaluation_seed}
        )
        return config
