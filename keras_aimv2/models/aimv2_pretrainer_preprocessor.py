"""Preprocessor of AIMv2 pre-training: images and captions to model inputs."""

import keras
from keras_hub.layers import StartEndPacker
from keras_hub.models import Preprocessor

from keras_aimv2.api import register
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer

INPUT_KEYS = ("images", "captions")


@register
class AIMV2PretrainerPreprocessor(NamedPresets, Preprocessor):
    """Turns images and captions into `AIMV2Pretrainer` inputs.

    Images go through the image converter (resizing and mean/std
    normalization). Captions are cleaned and tokenized (`AIMV2Tokenizer`),
    get the end token appended and are right-padded with the pad token to
    `context_length`, as in AIMv2 ("Multimodal Autoregressive Pre-training
    of Large Vision Encoders", Fini et al., CVPR 2025). A caption longer
    than `context_length - 1` tokens is cut to that many and still ends
    with the end token, so every sequence is terminated. No start token is
    added: the AIMv2 decoder prepends its own. The text targets follow
    AIMv2's trainer: a position counts iff its token is not the pad token,
    so the end token is a target when its id differs from the pad id and
    never when they share one (as with SigLIP's tokenizer).

    Attached to `AIMV2Pretrainer(..., preprocessor=...)`, it runs inside the
    `tf.data` pipeline of `fit`, `evaluate` and `predict`; called directly,
    it also takes Python strings and NumPy arrays.

    Call arguments:
        x: dict. `"images"`: float images in `[0, 255]`, shape `(batch,
            height, width, 3)`; `"captions"`: strings, shape `(batch,)`;
            optionally `"prefix_lengths"`, passed through. Unbatched inputs
            (one image and one caption) are accepted too.
        y: passed through. Defaults to `None`.
        sample_weight: passed through. Defaults to `None`.

    Returns a dict with `"images"` (normalized float32), `"token_ids"`
    (int32, `(batch, context_length)`) and `"padding_mask"` (bool, true
    where the token is not the pad token: the text targets), packed with
    `y` and `sample_weight` as keras does.

    Args:
        tokenizer: `keras_aimv2.AIMV2Tokenizer`. Tokenizes the captions;
            must add neither start nor end tokens nor pad by itself.
        image_converter: `keras_aimv2.AIMV2ImageConverter` or `None`.
            Converts the images; `None` passes them unchanged, as float32.
            Defaults to `None`.
        context_length: int. Length of the token sequences. Defaults to
            `77`, AIMv2's.
        **kwargs: other keyword arguments passed to
            `keras_hub.models.Preprocessor`.

    Example:

    >>> preprocessor = AIMV2PretrainerPreprocessor(
    ...     tokenizer=AIMV2Tokenizer(proto="tokenizer.model"),
    ...     image_converter=AIMV2ImageConverter(image_size=(32, 32)),
    ...     context_length=8,
    ... )
    >>> x = preprocessor(
    ...     {"images": np.zeros((2, 32, 32, 3)), "captions": ["A dog", "Sky"]}
    ... )
    >>> x["token_ids"].shape, x["padding_mask"].shape
    ((2, 8), (2, 8))
    """

    backbone_cls = AIMV2Backbone
    tokenizer_cls = AIMV2Tokenizer
    image_converter_cls = AIMV2ImageConverter

    def __init__(
        self,
        tokenizer,
        image_converter=None,
        context_length=77,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if tokenizer is None or not hasattr(tokenizer, "end_token_id"):
            raise ValueError(
                "`tokenizer` must be a tokenizer with an end token, such as "
                f"`keras_aimv2.AIMV2Tokenizer`. Received: tokenizer={tokenizer}"
            )
        for option in ("add_bos", "add_eos", "sequence_length"):
            if getattr(tokenizer, option, None):
                raise ValueError(
                    f"The tokenizer must not set `{option}`: the preprocessor "
                    "appends the end token and pads to `context_length` "
                    f"itself. Received: {option}="
                    f"{getattr(tokenizer, option)!r}"
                )
        self.tokenizer = tokenizer
        self.image_converter = image_converter
        self.packer = None
        self.context_length = context_length

    def build(self, input_shape):
        # Built here rather than in `__init__`: when loading a preset the
        # tokenizer's proto, and so its ids, arrive after construction.
        self.packer = StartEndPacker(
            sequence_length=self.context_length,
            end_value=self.tokenizer.end_token_id,
            pad_value=self.tokenizer.pad_token_id,
            name="packer",
        )
        self.built = True

    @property
    def context_length(self):
        """Settable int. The length of the token sequences."""
        return self._context_length

    @context_length.setter
    def context_length(self, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(
                "`context_length` must be an int of at least 2 (one token "
                f"and the end token). Received: context_length={value!r}"
            )
        self._context_length = value
        if self.packer is not None:
            self.packer.sequence_length = value

    def call(self, x, y=None, sample_weight=None):
        # One path for both workflows: the tokenizer, packer and converter
        # each pick TensorFlow ops inside `tf.data` and Python ones eagerly.
        if not isinstance(x, dict) or any(key not in x for key in INPUT_KEYS):
            received = list(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                f"AIMV2PretrainerPreprocessor takes a dict with keys "
                f"{list(INPUT_KEYS)} (and optionally 'prefix_lengths'). "
                f"Received: {received}"
            )
        if not self.built:
            self.build(None)
        images = x["images"]
        if self.image_converter is not None:
            images = self.image_converter(images)
        images = _ops_for(images).cast(images, "float32")
        token_ids = self.packer(self.tokenizer(x["captions"]))
        outputs = {
            "images": images,
            "token_ids": token_ids,
            "padding_mask": _ops_for(token_ids).not_equal(
                token_ids, self.tokenizer.pad_token_id
            ),
        }
        if x.get("prefix_lengths") is not None:
            outputs["prefix_lengths"] = x["prefix_lengths"]
        return keras.utils.pack_x_y_sample_weight(outputs, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"context_length": self.context_length})
        return config


def _ops_for(tensor):
    """TensorFlow for its own tensors (inside `tf.data`), else `keras.ops`."""
    if type(tensor).__module__.startswith("tensorflow"):
        import tensorflow as tf

        return tf
    return keras.ops
