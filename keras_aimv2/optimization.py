"""The AIMv2 optimizer: AdamW with fully decoupled weight decay."""

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.compat import FusedTorchAdamW
from keras_aimv2.compat import GradientClippingHooks
from keras_aimv2.distribution import tf_replica_context

# Weights that are never decayed: biases, norm scales, position embeddings
# and the BOS token (AIMv2, Table A1).
NO_DECAY = ("bias", "scale", "position_embedding", "bos_token")


@register
class AIMV2AdamW(
    GradientClippingHooks, FusedTorchAdamW, keras.optimizers.AdamW
):
    """Keras's AdamW, clipping the gradient one device would see.

    `global_clipnorm` clips the global norm of the gradient of the whole
    batch, as AIMv2's trainer does, on every backend. Keras's own
    `global_clipnorm` does the clipping; this class changes what it clips
    (through `keras_aimv2.compat.GradientClippingHooks`):

    - Under `tf.distribute`, Keras clips each replica's gradients before it
      sums them over the replicas. This class sums first (the same single
      all-reduce, moved) and then clips.
    - On TensorFlow an embedding's gradient arrives as `tf.IndexedSlices`
      with a row per looked-up token, repeated tokens repeated; Keras would
      take the norm of those rows, not of the gradient they add up to.
      This class adds repeated rows up first.

    Elsewhere it is Keras's AdamW: JAX differentiates the global loss, and
    PyTorch DDP averages the gradients in `backward`, before the optimizer
    sees them.

    On the torch backend the update is Keras's AdamW computed in place by
    PyTorch's fused AdamW kernel (`keras_aimv2.compat.FusedTorchAdamW`):
    no copy of the gradients or variables is made, so a step needs no
    memory beyond the variables, their gradients and the two moments. The
    gradients given to `apply` are then scaled in place by clipping (as
    `torch.nn.utils.clip_grad_norm_` does). With `amsgrad`, `use_ema`,
    `clipnorm` or `clipvalue`, under `torch.compile`, or with `fused=False`,
    Keras's own update runs instead.

    Args:
        fused: bool. Whether to use the fused update on the torch backend
            (no effect on the others). Defaults to `True`.
        **kwargs: the arguments of `keras.optimizers.AdamW`.
    """

    def __init__(self, *args, fused=True, **kwargs):
        if not isinstance(fused, bool):
            raise ValueError(
                f"`fused` must be True or False. Received: fused={fused!r}"
            )
        super().__init__(*args, **kwargs)
        self.fused = fused

    def uses_fused_update(self):
        """Whether to update with the fused kernel on torch.

        Returns:
            bool. The `fused` argument.
        """
        return self.fused

    def get_config(self):
        config = super().get_config()
        config["fused"] = self.fused
        return config

    def gradients_to_clip(self, grads):
        """The replicas' summed gradients, repeated rows added up.

        Args:
            grads: list of this replica's gradients.

        Returns:
            The list of gradients to clip and apply.
        """
        context = tf_replica_context()
        if context is not None:
            grads = context.all_reduce("sum", grads)
        if keras.config.backend() == "tensorflow":
            grads = [_add_up_repeated_rows(g) for g in grads]
        return grads

    def sums_replicas_before_clipping(self):
        """Whether `gradients_to_clip` summed the replicas' gradients.

        Returns:
            bool. True inside a step of several `tf.distribute` replicas.
        """
        return tf_replica_context() is not None


def _add_up_repeated_rows(gradient):
    """A `tf.IndexedSlices` with each row once, holding its total."""
    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    rows, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(
        gradient.values, positions, tf.shape(rows)[0]
    )
    return tf.IndexedSlices(values, rows, gradient.dense_shape)


@register
class PerUpdateSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule over updates, under gradient accumulation.

    Keras reads a schedule at every batch; with `batches_per_update`
    batches accumulated into each update, this one reads `schedule` at the
    update's index, so that the schedule is the same with or without
    accumulation.

    Args:
        schedule: `keras.optimizers.schedules.LearningRateSchedule`.
        batches_per_update: int. Batches accumulated into one update.
    """

    def __init__(self, schedule, batches_per_update):
        self.schedule = schedule
        self.batches_per_update = batches_per_update

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.batches_per_update))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "batches_per_update": self.batches_per_update,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"]
        )
        return cls(**config)


def aimv2_adamw(
    learning_rate=1e-3,
    peak_learning_rate=None,
    weight_decay=1e-4,
    beta_1=0.9,
    beta_2=0.95,
    epsilon=1e-8,
    clipnorm=1.0,
    gradient_accumulation_steps=1,
    fused=True,
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
        clipnorm: float or `None`. The largest global norm of the gradient:
            when the norm of all gradients together, as one vector, exceeds
            it, every gradient is scaled by the same factor, which keeps the
            update's direction (PyTorch's `clip_grad_norm_` over the whole
            model, as AIMv2's trainer does; not Keras's per-variable
            `clipnorm`). The gradient clipped is the global one under every
            distribution strategy, and under accumulation the accumulated
            gradient of each update, once. `None` disables clipping.
            Defaults to `1.0`.
        gradient_accumulation_steps: int. Batches whose gradients are
            averaged into each update; a schedule is then read per update
            (`PerUpdateSchedule`). Defaults to `1`.
        fused: bool. On the torch backend, update in place with PyTorch's
            fused AdamW kernel (see `AIMV2AdamW`); the same update as
            Keras's AdamW. Defaults to `True`.

    Returns:
        An `AIMV2AdamW`.

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
    accumulate = gradient_accumulation_steps > 1
    if accumulate and isinstance(
        learning_rate, keras.optimizers.schedules.LearningRateSchedule
    ):
        learning_rate = PerUpdateSchedule(
            learning_rate, gradient_accumulation_steps
        )
    optimizer = AIMV2AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay / peak_learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=clipnorm,
        gradient_accumulation_steps=(
            gradient_accumulation_steps if accumulate else None
        ),
        fused=fused,
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer
