"""The AIMv2 caption tokenizer: SigLIP-style SentencePiece, lowercased."""

import numpy as np
from keras_hub.tokenizers import SentencePieceTokenizer

from keras_aimv2.api import register
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone

try:
    import tensorflow as tf
except ImportError:
    tf = None


@register
class AIMV2Tokenizer(SentencePieceTokenizer):
    """SentencePiece tokenizer of AIMv2 captions.

    AIMv2 tokenizes captions with SigLIP's SentencePiece model (32000 pieces)
    after lowercasing them, appends the end-of-sequence token and pads to 77
    tokens ("Multimodal Autoregressive Pre-training of Large Vision
    Encoders", Fini et al., CVPR 2025). This layer does the lowercasing and
    the SentencePiece step and knows the end and pad ids; appending the end
    token and padding is left to `AIMV2PretrainerPreprocessor`, as in
    keras-hub. It never adds a start token: the AIMv2 decoder prepends its
    own learned one.

    The end and pad tokens default to the pieces the proto declares
    (`eos_id` and `pad_id`). A proto without a pad piece pads with the end
    token. AIMv2 pads SigLIP's captions with `</s>` (id 1), which is also
    their end token: pass `pad_token="</s>"` to reproduce that whatever pad
    piece the proto declares; the end token is then never a training
    target. `keras_aimv2.data.tokenizer_training` trains protos with
    distinct ids (pad 0, end 1, unknown 2).

    The proto is saved as an asset of keras-hub presets. Lowercasing uses
    `str.lower` eagerly and `tf.strings.lower(..., encoding="utf-8")` inside
    `tf.data`; the two agree except for the few characters whose Unicode
    lowercase takes more than one code point.

    Args:
        proto: str, bytes or `None`. Path to a SentencePiece model file or
            its serialized bytes; `None` until assets are loaded from a
            preset. Defaults to `None`.
        end_token: str or `None`. Piece appended to every caption. `None`
            uses the proto's end-of-sequence piece. Defaults to `None`.
        pad_token: str or `None`. Piece that pads captions. `None` uses the
            proto's pad piece, or the end token when the proto has none.
            Defaults to `None`.
        lowercase: bool. Lowercase text before tokenizing it. Defaults to
            `True`.
        **kwargs: other keyword arguments passed to
            `keras_hub.tokenizers.SentencePieceTokenizer` (`sequence_length`,
            `dtype`, `name`).

    Example:

    >>> tokenizer = AIMV2Tokenizer(proto="tokenizer.model")
    >>> ids = tokenizer("A Photo of a Dog")
    >>> tokenizer.detokenize(ids)
    'a photo of a dog'
    >>> tokenizer.end_token_id, tokenizer.pad_token_id
    (1, 0)
    """

    backbone_cls = AIMV2Backbone

    def __init__(
        self,
        proto=None,
        end_token=None,
        pad_token=None,
        lowercase=True,
        **kwargs,
    ):
        for name, value in (("end_token", end_token), ("pad_token", pad_token)):
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"`{name}` must be a string piece of the vocabulary or "
                    f"`None`. Received: {name}={value!r}"
                )
        if kwargs.get("add_bos"):
            raise ValueError(
                "`add_bos=True` is not supported: the AIMv2 decoder "
                "prepends its own learned start token. Received: "
                "add_bos=True"
            )
        self.lowercase = bool(lowercase)
        self._requested_end_token = end_token
        self._requested_pad_token = pad_token
        self._add_special_token(end_token, "end_token")
        self._add_special_token(pad_token, "pad_token")
        super().__init__(proto=proto, **kwargs)

    def _update_special_token_ids(self):
        # Runs each time a proto is set: resolve the pieces it declares.
        processor = self._sentence_piece_spm
        end_token = self._requested_end_token
        if end_token is None:
            end_id = processor.eos_id()
            if end_id < 0:
                raise ValueError(
                    "The SentencePiece proto declares no end-of-sequence "
                    "piece (eos_id=-1). Pass `end_token=` with the piece to "
                    "append to every caption. Received: end_token=None"
                )
            end_token = processor.id_to_piece(end_id)
        pad_token = self._requested_pad_token
        if pad_token is None:
            pad_id = processor.pad_id()
            pad_token = processor.id_to_piece(pad_id) if pad_id >= 0 else None
            pad_token = pad_token or end_token
        self.end_token = end_token
        self.pad_token = pad_token
        super()._update_special_token_ids()

    def tokenize(self, inputs):
        if self.lowercase:
            if self._use_tf_workflow():
                inputs = tf.strings.lower(
                    tf.convert_to_tensor(inputs), encoding="utf-8"
                )
            else:
                inputs = _lowercase_python(inputs)
        return super().tokenize(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "end_token": self._requested_end_token,
                "pad_token": self._requested_pad_token,
                "lowercase": self.lowercase,
            }
        )
        return config


def _lowercase_python(inputs):
    """Lowercase a string, or a list or 0/1-d array of strings."""
    if isinstance(inputs, bytes):
        return inputs.decode("utf-8").lower()
    if isinstance(inputs, str):
        return inputs.lower()
    if isinstance(inputs, (list, tuple)):
        return [_lowercase_python(item) for item in inputs]
    if tf is not None and isinstance(inputs, tf.Tensor):
        if inputs.dtype != tf.string:
            return inputs
        return _lowercase_python(inputs.numpy())
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "OSU":
        if inputs.ndim > 1:
            # Left as is: the tokenizer raises its own error for this rank.
            return inputs
        return _lowercase_python(inputs.tolist())
    return inputs
