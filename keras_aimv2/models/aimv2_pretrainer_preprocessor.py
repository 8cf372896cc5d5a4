"""Preprocessor of AIMv2 pre-training: images and captions to model inputs."""

import keras
import tensorflow as tf
from keras_hub.models import Preprocessor

from keras_aimv2.api import register
from keras_aimv2.compat import preprocessing_function
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer
from keras_aimv2.models.caption_packing import CaptionPacking
from keras_aimv2.models.caption_packing import to_tensorflow
from keras_aimv2.patches import image_layout
from keras_aimv2.patches import standardize_data_format

INPUT_KEYS = ("images", "captions")


def draw_prefix_lengths(images, captions, num_patches, seed=0):
    """AIMv2's prefix lengths, `M ~ U{1, ..., num_patches - 1}` per example.

    Stateless and seeded per example: each length is a 64-bit fingerprint
    of `seed`, the example's image and its caption, reduced to the range.
    The same example always draws the same length, in any batch, order,
    process or replica, so draws need no random state and no coordination
    between replicas; the training pipeline's random crops and flips make
    each pass over the data a new image, and so a new draw, while
    evaluation's fixed center crops keep the same prefixes from run to run.
    Runs in TensorFlow (inside `tf.data` as eagerly).

    Args:
        images: float tensor `(batch, height, width, channels)`.
        captions: string tensor `(batch,)`, or any per-example tensor.
        num_patches: int or int scalar tensor, at least 2.
        seed: int. Seed of the draws. Defaults to `0`.

    Returns:
        Int32 tensor `(batch,)` in `[1, num_patches - 1]`.

    Example:

    >>> draw_prefix_lengths(np.zeros((2, 32, 32, 3)), ["a", "b"], 16)
    """
    images = to_tensorflow(images)
    captions = to_tensorflow(captions)
    batch = tf.shape(images)[0]
    seed_bytes = tf.bitcast(tf.constant([seed], tf.int64), tf.uint8)
    key = tf.concat(
        [
            tf.tile(seed_bytes, [batch, 1]),
            tf.fingerprint(images),
            tf.fingerprint(captions),
        ],
        axis=1,
    )
    # 31 bits of the example's fingerprint: a modulo bias below 1e-7.
    halves = tf.bitcast(tf.reshape(tf.fingerprint(key), (-1, 2, 4)), tf.int32)
    draws = tf.bitwise.bitwise_and(halves[:, 0], 0x7FFFFFFF)
    num_patches = tf.cast(num_patches, tf.int32)
    return 1 + tf.math.floormod(draws, num_patches - 1)


@register
class AIMV2PretrainerPreprocessor(NamedPresets, CaptionPacking, Preprocessor):
    """Turns images and captions into `AIMV2Pretrainer` inputs.

    Images go through the image converter (resizing and mean/std
    normalization). Captions are cleaned and tokenized (`AIMV2Tokenizer`),
    get the end token appended and are right-padded with the pad token to
    `sequence_length`, as in AIMv2 ("Multimodal Autoregressive Pre-training
    of Large Vision Encoders", Fini et al., CVPR 2025). A caption longer
    than `sequence_length - 1` tokens is cut to that many and still ends
    with the end token, so every sequence is terminated. No start token is
    added: the AIMv2 decoder prepends its own. The text targets follow
    AIMv2's trainer: a position counts iff its token is not the pad token,
    so the end token is a target when its id differs from the pad id and
    never when they share one (as with SigLIP's tokenizer).

    It also draws each image's prefix length, the pre-training's
    randomness (`draw_prefix_lengths`: stateless, seeded per example), for
    images of `patch_size` patches; lengths given as `"prefix_lengths"`
    pass through instead.

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
    (int32, `(batch, sequence_length)`), `"padding_mask"` (bool, true
    where the token is not the pad token: the text targets) and
    `"prefix_lengths"` (int32, `(batch,)`), packed with `y` and
    `sample_weight` as keras does.

    Args:
        tokenizer: `keras_aimv2.AIMV2Tokenizer`. Tokenizes the captions;
            must add neither start nor end tokens nor pad by itself.
        image_converter: `keras_aimv2.AIMV2ImageConverter` or `None`.
            Converts the images; `None` passes them unchanged, as float32.
            Defaults to `None`.
        sequence_length: int. Length of the token sequences, the decoder's
            `context_length`. Defaults to `77`, AIMv2's.
        patch_size: int or `None`. Side of the backbone's patches, which
            sets the number of patches of an image; `None` takes the
            backbone's when the preprocessor is attached to an
            `AIMV2Pretrainer`. Defaults to `14`, AIMv2's.
        seed: int. Seed of the prefix draws. Defaults to `0`.
        **kwargs: other keyword arguments passed to
            `keras_hub.models.Preprocessor`.

    Example:

    >>> preprocessor = AIMV2PretrainerPreprocessor(
    ...     tokenizer=AIMV2Tokenizer(proto="tokenizer.model"),
    ...     image_converter=AIMV2ImageConverter(image_size=(32, 32)),
    ...     sequence_length=8,
    ...     patch_size=8,
    ... )
    >>> x = preprocessor(
    ...     {"images": np.zeros((2, 32, 32, 3)), "captions": ["A dog", "Sky"]}
    ... )
    >>> x["token_ids"].shape, x["prefix_lengths"].shape
    ((2, 8), (2,))
    """

    backbone_cls = AIMV2Backbone
    tokenizer_cls = AIMV2Tokenizer
    image_converter_cls = AIMV2ImageConverter

    def __init__(
        self,
        tokenizer,
        image_converter=None,
        sequence_length=77,
        patch_size=14,
        seed=0,
        **kwargs,
    ):
        # The name of this argument before it took keras-hub's.
        sequence_length = kwargs.pop("context_length", sequence_length)
        super().__init__(**kwargs)
        self.init_caption_packing(tokenizer, sequence_length)
        for name, value in (("patch_size", patch_size), ("seed", seed)):
            if name == "patch_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"`{name}` must be an int. Received: {name}={value!r}"
                )
        if patch_size is not None and patch_size < 1:
            raise ValueError(
                f"`patch_size` must be positive. Received: patch_size="
                f"{patch_size}"
            )
        self.image_converter = image_converter
        self.patch_size = patch_size
        self.seed = seed

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
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
        images = tf.cast(to_tensorflow(images), tf.float32)
        captions = to_tensorflow(x["captions"])
        token_ids = self.pack_captions(captions)
        outputs = {
            "images": images,
            "token_ids": token_ids,
            "padding_mask": tf.not_equal(
                token_ids, self.tokenizer.pad_token_id
            ),
        }
        prefix_lengths = x.get("prefix_lengths")
        if prefix_lengths is None:
            prefix_lengths = self._draw(images, captions)
        outputs["prefix_lengths"] = tf.cast(
            to_tensorflow(prefix_lengths), tf.int32
        )
        return keras.utils.pack_x_y_sample_weight(outputs, y, sample_weight)

    def _draw(self, images, captions):
        if self.patch_size is None:
            raise ValueError(
                "The preprocessor draws prefix lengths for images of "
                "`patch_size` patches, which is unknown (`None`): pass "
                "`patch_size`, or attach the preprocessor to an "
                "`AIMV2Pretrainer`, which gives it its backbone's."
            )
        unbatched = images.shape.rank == 3
        if unbatched:
            images, captions = images[None], captions[None]
        # The images are in the converter's layout (Keras's default without
        # a converter).
        data_format = standardize_data_format(
            getattr(self.image_converter, "data_format", None)
        )
        shape = tuple(tf.unstack(tf.shape(images)))
        _, height, width, _ = image_layout(shape, data_format)
        num_patches = (height // self.patch_size) * (width // self.patch_size)
        draws = draw_prefix_lengths(images, captions, num_patches, self.seed)
        return draws[0] if unbatched else draws

    @classmethod
    def from_config(cls, config):
        # Configs saved before the preprocessor drew the prefix lengths
        # name no patch size: the model it is attached to gives it.
        return super().from_config({"patch_size": None, **config})

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "patch_size": self.patch_size,
                "seed": self.seed,
            }
        )
        return config
