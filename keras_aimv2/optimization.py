"""The AIMv2 optimizer: AdamW with fully decoupled weight decay."""

import keras

# Weights that are never decayed: biases, norm scales, position embeddings
# and the BOS token (AIMv2, Table A1).
NO_DECAY = ("bias", "scale", "position_embedding", "bos_token")


def aimv2_adamw(
    learning_rate=1e-3,
    peak_learning_rate=None,
    weight_decay=1e-4,
    beta_1=0.9,
    beta_2=0.95,
    epsilon=1e-8,
    clipnorm=1.0,
):
    """AdamW as in AIMv2's recipe, with the paper's exclusions from decay.

    The paper decays "fully decoupled": `p <- p * (1 - wd * lr_t /
    lr_peak)`. Keras's AdamW applies `p <- p * (1 - lr_t * decay)`, so the
    decay passed to Keras is `wd / lr_peak`.

    Args:
        learning_rate: float or `keras.optimizers.schedules`. Defaults to
            `1e-3`, the peak rate of AIMv2-L.
        peak_learning_rate: float. Peak of the schedule; defaults to
            `learning_rate` when that is a float.
        weight_decay: float. Fully decoupled decay. Defaults to `1e-4`.
        beta_1: float. Defaults to `0.9`.
        beta_2: float. Defaults to `0.95`.
        epsilon: float. Defaults to `1e-8`.
        clipnorm: float. Gradient clipping. Defaults to `1.0`.

    Example:

    >>> optimizer = aimv2_adamw(learning_rate=1e-3)
    """
    if peak_learning_rate is None:
        if not isinstance(learning_rate, (int, float)):
            raise ValueError(
                "`peak_learning_rate` is needed when `learning_rate` is a "
                f"schedule. Received: learning_rate={learning_rate!r}"
            )
        peak_learning_rate = learning_rate
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay / peak_learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        clipnorm=clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer
