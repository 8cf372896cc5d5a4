"""The two output heads of the AIMv2 decoder."""

import keras

from keras_aimv2.api import register


class _LinearHead(keras.layers.Layer):
    """A linear map without bias, initialised from a fan-in scaled normal."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(
            units,
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="truncated_normal"
            ),
            dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def compute_output_shape(self, input_shape):
        return self.dense.compute_output_shape(input_shape)


@register
class PixelHead(_LinearHead):
    """Regresses the next patch's normalized pixels from a decoder state.

    Args:
        patch_dim: int. Values per patch, `patch_size**2 * channels` (588
            for 14-pixel RGB patches).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> PixelHead(patch_dim=588)(np.zeros((2, 5, 64))).shape
    (2, 5, 588)
    """

    def __init__(self, patch_dim, **kwargs):
        super().__init__(patch_dim, **kwargs)
        self.patch_dim = patch_dim

    def get_config(self):
        config = super().get_config()
        config.update({"patch_dim": self.patch_dim})
        return config


@register
class TextHead(_LinearHead):
    """Predicts the next text token's logits from a decoder state.

    Args:
        vocabulary_size: int. Number of text tokens.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> TextHead(vocabulary_size=100)(np.zeros((2, 5, 64))).shape
    (2, 5, 100)
    """

    def __init__(self, vocabulary_size, **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        self.vocabulary_size = vocabulary_size

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary_size": self.vocabulary_size})
        return config
