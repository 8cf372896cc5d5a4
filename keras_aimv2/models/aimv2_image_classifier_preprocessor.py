"""Preprocessing of images for `AIMV2ImageClassifier`."""

from keras_hub.models import ImageClassifierPreprocessor

from keras_aimv2.api import register
from keras_aimv2.compat import IMAGE_CONVERTER_CONFIG_FILE
from keras_aimv2.compat import PresetArguments
from keras_aimv2.compat import check_file_exists
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.patches import image_layout
from keras_aimv2.patches import standardize_data_format


@register
class AIMV2ImageClassifierPreprocessor(
    NamedPresets, PresetArguments, ImageClassifierPreprocessor
):
    """Resizes and normalizes images for `AIMV2ImageClassifier`.

    Wraps an `AIMV2ImageConverter` (bicubic resize, then `x * scale +
    offset`); labels and sample weights pass through unchanged. Loaded from
    a preset that holds no image converter (a bare backbone preset), it
    builds the default converter for the backbone's image size, with
    ImageNet normalization as in AIMv2 pre-training, in the backbone's
    data format.

    Args:
        image_converter: `AIMV2ImageConverter` or `None`. Turns images in
            `[0, 255]` into model inputs. `None` passes images unchanged.
            Defaults to `None`.
        **kwargs: other keyword arguments passed to
            `keras_hub.models.ImageClassifierPreprocessor`.

    Example:

    >>> preprocessor = AIMV2ImageClassifierPreprocessor(
    ...     AIMV2ImageConverter(image_size=(32, 32))
    ... )
    >>> images, labels = preprocessor(np.zeros((2, 28, 28, 3)), [1, 3])
    >>> tuple(images.shape)
    (2, 32, 32, 3)
    """

    backbone_cls = AIMV2Backbone
    image_converter_cls = AIMV2ImageConverter

    @classmethod
    def preset_arguments(cls, preset, config, kwargs):
        """The default image converter when `preset` holds none.

        Args:
            preset: str. The preset being loaded.
            config: dict. Its backbone's serialized config.
            kwargs: dict. The arguments so far.

        Returns:
            `kwargs`, with an `image_converter` at the backbone's image
            size and data format when it had none and the preset holds no
            converter.
        """
        if "image_converter" not in kwargs and not check_file_exists(
            preset, IMAGE_CONVERTER_CONFIG_FILE
        ):
            backbone_config = config["config"]
            # As the backbone reads it: a config without `data_format`
            # takes Keras's image data format.
            data_format = standardize_data_format(
                backbone_config.get("data_format")
            )
            _, height, width, _ = image_layout(
                (None, *backbone_config["image_shape"]), data_format
            )
            size = None if height is None or width is None else (height, width)
            kwargs["image_converter"] = cls.image_converter_cls(
                image_size=size, data_format=data_format
            )
        return kwargs
