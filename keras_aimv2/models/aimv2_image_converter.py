"""Image converter of AIMv2: resize and normalize images for the encoder."""

from keras_hub.layers import ImageConverter

from keras_aimv2.api import register
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.patches import standardize_data_format

# The normalization of AIMv2's released pre-training code (apple/ml-l3m).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization_scale_offset(mean, std, max_value=255.0):
    """`scale` and `offset` of an `ImageConverter` normalizing by mean/std.

    keras-hub converters compute `x * scale + offset`; with the returned
    values that is `(x / max_value - mean) / std` per channel.

    Args:
        mean: tuple of floats. Per-channel mean, in `[0, 1]` units.
        std: tuple of floats. Per-channel standard deviation, in `[0, 1]`
            units.
        max_value: float. The value of white in the input images. Defaults
            to `255.0`.

    Returns:
        A tuple `(scale, offset)` of per-channel lists of floats.

    Example:

    >>> scale, offset = normalization_scale_offset(IMAGENET_MEAN, IMAGENET_STD)
    >>> converter = AIMV2ImageConverter(scale=scale, offset=offset)
    """
    mean, std = list(mean), list(std)
    if len(mean) != len(std) or not mean:
        raise ValueError(
            "`mean` and `std` must hold one value per channel. Received: "
            f"mean={mean}, std={std}"
        )
    if min(std) <= 0 or max_value <= 0:
        raise ValueError(
            "`std` and `max_value` must be positive. Received: "
            f"std={std}, max_value={max_value}"
        )
    scale = [1.0 / (max_value * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std, strict=True)]
    return scale, offset


IMAGENET_SCALE, IMAGENET_OFFSET = normalization_scale_offset(
    IMAGENET_MEAN, IMAGENET_STD
)


@register
class AIMV2ImageConverter(NamedPresets, ImageConverter):
    """Turns images in `[0, 255]` into `AIMV2Backbone` inputs.

    Resizes images to `image_size` (bicubic) and normalizes them with
    `x * scale + offset`. The defaults are those of AIMv2 pre-training
    ("Multimodal Autoregressive Pre-training of Large Vision Encoders",
    Fini et al., CVPR 2025): 224 pixels and ImageNet's mean and standard
    deviation. Other normalizations are set through `scale` and `offset`,
    e.g. from `normalization_scale_offset(mean, std)`.

    Args:
        image_size: tuple `(height, width)` or `None`. Output size; `None`
            leaves images at their size. Defaults to `(224, 224)`.
        scale: float, tuple of floats or `None`. Multiplies the images.
            Defaults to ImageNet's `1 / (255 * std)`.
        offset: float, tuple of floats or `None`. Added after `scale`.
            Defaults to ImageNet's `-mean / std`.
        interpolation: str. Resizing method. Defaults to `"bicubic"`.
        data_format: str or `None`. `"channels_last"` or
            `"channels_first"`, the layout of the images in and out; it
            must match the backbone's. Defaults to `None`,
            `keras.config.image_data_format()`.
        **kwargs: other keyword arguments passed to
            `keras_hub.layers.ImageConverter` (`crop_to_aspect_ratio`,
            `antialias`, `name`, ...).

    Example:

    >>> converter = AIMV2ImageConverter(image_size=(32, 32))
    >>> converter(np.full((2, 32, 32, 3), 255.0)).shape
    (2, 32, 32, 3)
    """

    backbone_cls = AIMV2Backbone

    def __init__(
        self,
        image_size=(224, 224),
        scale=IMAGENET_SCALE,
        offset=IMAGENET_OFFSET,
        interpolation="bicubic",
        data_format=None,
        **kwargs,
    ):
        if image_size is not None:
            image_size = tuple(image_size)
            if len(image_size) != 2 or not all(
                isinstance(side, int) and side > 0 for side in image_size
            ):
                raise ValueError(
                    "`image_size` must be `None` or a tuple of two positive "
                    f"ints (height, width). Received: image_size={image_size}"
                )
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            interpolation=interpolation,
            data_format=standardize_data_format(data_format),
            **kwargs,
        )

    def get_config(self):
        # keras-hub's `ImageConverter` does not serialize its data format;
        # without it a channels-first converter would come back in the
        # global format.
        config = super().get_config()
        config.update({"data_format": self.data_format})
        return config
