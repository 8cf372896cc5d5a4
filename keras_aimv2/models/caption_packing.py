"""Captions to fixed-length token ids, as the AIMv2 preprocessors pack them.

A caption is tokenized, gets the end token appended (and a start token
prepended, for tokenizers that use one, such as CLIP's), and is cut and
right-padded with the pad token to `sequence_length`: a caption too long
keeps its first tokens and still ends with the end token.
"""

import keras
import tensorflow as tf
from keras_hub.layers import StartEndPacker


class CaptionPacking:
    """Mixin of a keras-hub preprocessor: pack captions into token ids.

    The preprocessor calls `init_caption_packing` in its constructor and
    `pack_captions` in its `call`; the packer is made in `build`, once the
    tokenizer's vocabulary (and so its special ids) is known, as when a
    preset's assets are loaded after construction. Setting
    `sequence_length` also updates a built packer. `add_start_token`
    prepends the tokenizer's start token.
    """

    add_start_token = False

    def init_caption_packing(self, tokenizer, sequence_length):
        """Check `tokenizer` and keep it with `sequence_length`.

        Args:
            tokenizer: a keras-hub tokenizer with `end_token_id` and
                `pad_token_id`, adding no special tokens and no padding
                itself.
            sequence_length: int, at least 2. Length of the token ids.
        """
        if tokenizer is None or not hasattr(tokenizer, "end_token_id"):
            raise ValueError(
                "`tokenizer` must be a tokenizer with an end token, such as "
                f"`keras_aimv2.AIMV2Tokenizer`. Received: tokenizer={tokenizer}"
            )
        for option in ("add_bos", "add_eos", "sequence_length"):
            if getattr(tokenizer, option, None):
                raise ValueError(
                    f"The tokenizer must not set `{option}`: the preprocessor "
                    "appends the end token and pads to `sequence_length` "
                    f"itself. Received: {option}="
                    f"{getattr(tokenizer, option)!r}"
                )
        self.tokenizer = tokenizer
        self.packer = None
        self.sequence_length = sequence_length

    def build(self, input_shape):
        # Built here rather than in `__init__`: when loading a preset the
        # tokenizer's proto, and so its ids, arrive after construction.
        start_value = None
        if self.add_start_token:
            start_value = self.tokenizer.start_token_id
        self.packer = StartEndPacker(
            sequence_length=self.sequence_length,
            start_value=start_value,
            end_value=self.tokenizer.end_token_id,
            pad_value=self.tokenizer.pad_token_id,
            name="packer",
        )
        self.built = True

    @property
    def sequence_length(self):
        """Settable int. The length of the token sequences."""
        return self._sequence_length

    @sequence_length.setter
    def sequence_length(self, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(
                "`sequence_length` must be an int of at least 2 (one token "
                f"and the end token). Received: sequence_length={value!r}"
            )
        self._sequence_length = value
        if self.packer is not None:
            self.packer.sequence_length = value

    def pack_captions(self, captions):
        """Token ids `(batch, sequence_length)` (or `(sequence_length,)`
        for one caption) of string `captions`, as a TensorFlow tensor."""
        if not self.built:
            self.build(None)
        return self.packer(self.tokenizer(to_tensorflow(captions)))


def to_tensorflow(x):
    """`x` as a TensorFlow tensor: TensorFlow's own, or converted."""
    if isinstance(x, (tf.Tensor, tf.RaggedTensor)):
        return x
    if keras.ops.is_tensor(x):
        x = keras.ops.convert_to_numpy(x)
    return tf.convert_to_tensor(x)
