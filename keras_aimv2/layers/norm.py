"""Root-mean-square normalization, as used throughout AIMv2."""

import keras
from keras import ops

from keras_aimv2.api import register


@register
class RMSNorm(keras.layers.Layer):
    """RMSNorm over the last axis, computed in float32.

    `y = x / sqrt(mean(x ** 2) + epsilon) * scale`. AIMv2 uses it before every
    attention and feed-forward block, after the patch projection and after the
    last block of both the encoder and the decoder.

    Args:
        epsilon: float. Added to the mean square for stability. Defaults to
            `1e-5`, the value of the released AIMv2 models.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name` and `dtype`.

    Example:

    >>> x = keras.random.normal((2, 4, 8))
    >>> RMSNorm()(x).shape
    (2, 4, 8)
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        # Gains start at one, as in AIMv2's trainer.
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],), initializer="ones"
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean_square = ops.mean(ops.square(x), axis=-1, keepdims=True)
        x = x * ops.rsqrt(mean_square + self.epsilon)
        x = x * ops.cast(self.scale, "float32")
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
