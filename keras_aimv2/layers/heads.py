"""The two output heads of the AIMv2 decoder."""

import keras

from keras_aimv2.api import register
from keras_aimv2.layers.initializers import head_kernel


class _LinearHead(keras.layers.Layer):
    """A linear map without bias, initialised by `head_kernel`."""

    def __init__(self, units, decoder_num_layers=12, **kwargs):
        super().__init__(**kwargs)
        self.decoder_num_layers = decoder_num_layers
        self.dense = keras.layers.Dense(
            units,
            use_bias=False,
            kernel_initializer=head_kernel(decoder_num_layers),
            dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def compute_output_shape(self, input_shape):
        return self.dense.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"decoder_num_layers": self.decoder_num_layers})
        return config


@register
class PixelHead(_LinearHead):
    """Regresses the next patch's normalized pixels from a decoder state.

    The kernel starts from a truncated normal of standard deviation
    `sqrt(1 / ((1 + decoder_num_layers) * decoder_width))`, as in AIMv2's
    trainer (`keras_aimv2.layers.initializers.head_kernel`).

    Args:
        patch_dim: int. Values per patch, `patch_size**2 * channels` (588
            for 14-pixel RGB patches).
        decoder_num_layers: int. Blocks of the decoder whose states the head
            reads; only its initialisation depends on it. Defaults to `12`,
            the depth of AIMv2's decoder.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> PixelHead(patch_dim=588)(np.zeros((2, 5, 64))).shape
    (2, 5, 588)
    """

    def __init__(self, patch_dim, decoder_num_layers=12, **kwargs):
        super().__init__(patch_dim, decoder_num_layers, **kwargs)
        self.patch_dim = patch_dim

    def get_config(self):
        config = super().get_config()
        config.update({"patch_dim": self.patch_dim})
        return config


@register
class TextHead(_LinearHead):
    """Predicts the next text token's logits from a decoder state.

    The kernel starts from a truncated normal of standard deviation
    `sqrt(1 / ((1 + decoder_num_layers) * decoder_width))`, as in AIMv2's
    trainer (`keras_aimv2.layers.initializers.head_kernel`).

    Args:
        vocabulary_size: int. Number of text tokens.
        decoder_num_layers: int. Blocks of the decoder whose states the head
            reads; only its initialisation depends on it. Defaults to `12`,
            the depth of AIMv2's decoder.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Example:

    >>> TextHead(vocabulary_size=100)(np.zeros((2, 5, 64))).shape
    (2, 5, 100)
    """

    def __init__(self, vocabulary_size, decoder_num_layers=12, **kwargs):
        super().__init__(vocabulary_size, decoder_num_layers, **kwargs)
        self.vocabulary_size = vocabulary_size

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary_size": self.vocabulary_size})
        return config
