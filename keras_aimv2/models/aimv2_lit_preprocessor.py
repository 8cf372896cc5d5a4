"""Preprocessor of the AIMv2 LiT model: images and captions to its inputs."""

import keras
import tensorflow as tf
from keras_hub.models import Preprocessor
from keras_hub.tokenizers import CLIPTokenizer

from keras_aimv2.api import register
from keras_aimv2.compat import preprocessing_function
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_lit_backbone import AIMV2LiTBackbone
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer
from keras_aimv2.models.caption_packing import CaptionPacking
from keras_aimv2.models.caption_packing import to_tensorflow

INPUT_KEYS = ("images", "captions")


@register
class AIMV2LiTPreprocessor(NamedPresets, CaptionPacking, Preprocessor):
    """Turns images and captions into `AIMV2LiTBackbone` inputs.

    Images go through the image converter (resizing and mean/std
    normalization). Captions are tokenized, get the end token appended,
    where the text tower pools them, and are right-padded with the pad
    token to `sequence_length`; a caption too long is cut and still ends
    with the end token. With keras-hub's `CLIPTokenizer` (the BPE
    vocabulary of the released AIMv2 LiT model) the captions are first
    lowercased and get CLIP's start token prepended, as keras-hub's
    `CLIPPreprocessor` does (`add_start_token` and `lowercase` follow from
    the tokenizer); `AIMV2Tokenizer` cleans the text itself and has no
    start token.

    Attached to `AIMV2LiT` or `AIMV2ZeroShotClassifier`, it runs inside the
    `tf.data` pipeline of `fit`, `evaluate` and `predict`; called directly,
    it also takes Python strings and NumPy arrays.

    Call arguments:
        x: dict. `"images"`: float images in `[0, 255]`, shape `(batch,
            height, width, 3)`; `"captions"`: strings, shape `(batch,)`;
            either may be left out (`keras_aimv2.pretraining_dataset`
            yields both). Unbatched inputs are accepted too.
        y: passed through. Defaults to `None`.
        sample_weight: passed through. Defaults to `None`.

    Returns a dict with `"images"` (float32) and `"token_ids"` (int32,
    `(batch, sequence_length)`), for the keys given, packed with `y` and
    `sample_weight` as keras does.

    Args:
        tokenizer: `keras_aimv2.AIMV2Tokenizer` or
            `keras_hub.tokenizers.CLIPTokenizer`. Tokenizes the captions;
            must add no special tokens and no padding by itself.
        image_converter: `keras_aimv2.AIMV2ImageConverter` or `None`.
            Converts the images; `None` passes them unchanged, as float32.
            Defaults to `None`.
        sequence_length: int. Length of the token sequences, at most the
            text tower's `text_sequence_length`. Defaults to `77`.
        **kwargs: other keyword arguments passed to
            `keras_hub.models.Preprocessor`.

    Example:

    >>> preprocessor = AIMV2LiTPreprocessor(
    ...     tokenizer=AIMV2Tokenizer(proto="tokenizer.model"),
    ...     image_converter=AIMV2ImageConverter(image_size=(32, 32)),
    ...     sequence_length=8,
    ... )
    >>> x = preprocessor(
    ...     {"images": np.zeros((2, 32, 32, 3)), "captions": ["A dog", "Sky"]}
    ... )
    >>> x["images"].shape, x["token_ids"].shape
    (TensorShape([2, 32, 32, 3]), TensorShape([2, 8]))
    """

    backbone_cls = AIMV2LiTBackbone
    tokenizer_cls = AIMV2Tokenizer
    image_converter_cls = AIMV2ImageConverter

    def __init__(
        self, tokenizer, image_converter=None, sequence_length=77, **kwargs
    ):
        super().__init__(**kwargs)
        self.init_caption_packing(tokenizer, sequence_length)
        self.image_converter = image_converter

    @property
    def add_start_token(self):
        """Whether captions get a start token: the tokenizer declares one
        (CLIP's `<|startoftext|>`)."""
        return getattr(self.tokenizer, "start_token", None) is not None

    @property
    def lowercase(self):
        """Whether captions are lowercased here: for `CLIPTokenizer`, which
        does not lowercase itself (`AIMV2Tokenizer` cleans its text)."""
        return isinstance(self.tokenizer, CLIPTokenizer)

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if (
            not isinstance(x, dict)
            or not x
            or any(key not in INPUT_KEYS for key in x)
        ):
            received = list(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                "AIMV2LiTPreprocessor takes a dict with keys "
                f"{list(INPUT_KEYS)}, or one of them. Received: {received}"
            )
        outputs = {}
        if "images" in x:
            images = x["images"]
            if self.image_converter is not None:
                images = self.image_converter(images)
            outputs["images"] = tf.cast(to_tensorflow(images), tf.float32)
        if "captions" in x:
            captions = to_tensorflow(x["captions"])
            if self.lowercase:
                captions = tf.strings.lower(captions)
            outputs["token_ids"] = self.pack_captions(captions)
        return keras.utils.pack_x_y_sample_weight(outputs, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length})
        return config
