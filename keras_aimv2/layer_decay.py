"""Layer-wise learning-rate decay for fine-tuning AIMv2 encoders.

Fine-tuning a ViT usually gives the blocks near the input a smaller
learning rate than those near the head: with decay `d` and `L` blocks, the
patch embedding (layer 0) trains at `d ** (L + 1)` times the rate, block
`i` (layer `i + 1`) at `d ** (L - i)`, and the final norm and the head at
the full rate.

Scaling gradients cannot do this with Adam-type optimizers, whose steps do
not depend on the gradients' scale. `LayerDecayAdamW` instead scales each
variable's whole step (Adam update and decoupled weight decay, both
proportional to the learning rate), which is exactly AdamW run at the
variable's own rate, on every backend.
"""

import re

import keras
from keras import ops

from keras_aimv2.api import register
from keras_aimv2.compat import optimizer_trainable_variables
from keras_aimv2.validation import check_positive_int

_PATCH_EMBEDDING = re.compile(r"(?:^|/)patch_embedding/")
_ENCODER_BLOCK = re.compile(r"(?:^|/)encoder/block_(\d+)/")


def aimv2_layer_id(path, num_layers):
    """Depth of an AIMv2 weight for layer-wise learning-rate decay.

    Args:
        path: str. The weight's `variable.path`, e.g.
            `"encoder/block_3/attention/qkv/kernel"`.
        num_layers: int. Blocks of the encoder.

    Returns:
        `0` for the patch embedding (projection, norm and position
        embedding), `i + 1` for encoder block `i`, and `num_layers + 1`
        for anything else (the final norm and task heads).

    Example:

    >>> aimv2_layer_id("encoder/block_3/attention/qkv/kernel", 24)
    4
    """
    if _PATCH_EMBEDDING.search(path):
        return 0
    block = _ENCODER_BLOCK.search(path)
    if block:
        return int(block.group(1)) + 1
    return num_layers + 1


@register
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW with layer-wise learning-rate decay for AIMv2 encoders.

    Each variable trains at `learning_rate * layer_decay ** (num_layers + 1
    - aimv2_layer_id(variable.path, num_layers))`: the head and final norm
    at the full rate, each block below at `layer_decay` times the rate of
    the block above, the patch embedding lowest. The optimizer runs plain
    AdamW and then rescales each variable's change by its multiplier; AdamW
    steps (update and decoupled weight decay) are proportional to the rate
    and its moments do not depend on it, so this is exactly AdamW at each
    variable's own rate. With `layer_decay=1` it is plain AdamW. Each
    update briefly holds a copy of the variables whose rate is scaled. It
    relies on variable paths (`patch_embedding/...`, `encoder/block_i/...`),
    which `AIMV2Backbone` gives its weights.

    Args:
        learning_rate: float or `keras.optimizers.schedules` schedule. The
            rate of the head. Defaults to `1e-3`.
        layer_decay: float. Ratio of the rates of consecutive layers, in
            `(0, 1]`. Defaults to `0.75`.
        num_layers: int. Blocks of the encoder being fine-tuned. Defaults
            to `24`, AIMv2's.
        **kwargs: other keyword arguments passed to
            `keras.optimizers.AdamW` (`weight_decay`, `beta_1`, `beta_2`,
            `clipnorm`, ...).

    Example:

    >>> optimizer = LayerDecayAdamW(
    ...     learning_rate=1e-4, layer_decay=0.75, num_layers=24
    ... )
    >>> optimizer.learning_rate_multiplier("encoder/block_23/down/kernel")
    0.75
    """

    def __init__(
        self, learning_rate=1e-3, layer_decay=0.75, num_layers=24, **kwargs
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(
                "`layer_decay` must lie in (0, 1]. Received: "
                f"layer_decay={layer_decay!r}"
            )
        check_positive_int("num_layers", num_layers)
        self.layer_decay = layer_decay
        self.num_layers = num_layers

    def learning_rate_multiplier(self, path):
        """Factor of the learning rate of the variable at `path`."""
        depth = self.num_layers + 1 - aimv2_layer_id(path, self.num_layers)
        return float(self.layer_decay**depth)

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            variables = optimizer_trainable_variables(self)
        else:
            variables = list(trainable_variables)
        scaled = []
        for variable in variables:
            multiplier = self.learning_rate_multiplier(variable.path)
            if multiplier != 1.0:
                # A copy: on torch the optimizer updates values in place.
                scaled.append((variable, multiplier, ops.copy(variable.value)))
        super().apply(grads, trainable_variables)
        for variable, multiplier, before in scaled:
            step = ops.subtract(variable.value, before)
            variable.assign(ops.add(before, ops.multiply(step, multiplier)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"layer_decay": self.layer_decay, "num_layers": self.num_layers}
        )
        return config
