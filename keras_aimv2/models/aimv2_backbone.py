"""The AIMv2 vision encoder as a keras-hub backbone."""

import os

import keras
from keras_hub.models import Backbone

from keras_aimv2.api import register
from keras_aimv2.layers.encoder import PrefixViTEncoder
from keras_aimv2.layers.patch_embedding import PatchEmbedding
from keras_aimv2.layers.patch_embedding import resample_position_embedding
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.models.aimv2_presets import check_preset_files
from keras_aimv2.models.aimv2_presets import check_weights_file
from keras_aimv2.models.aimv2_presets import resolve_preset
from keras_aimv2.patches import image_layout
from keras_aimv2.patches import standardize_data_format


@register
class AIMV2Backbone(NamedPresets, Backbone):
    """AIMv2 vision encoder: images in, patch features out.

    A plain ViT without class token (patch embedding with RMSNorm, pre-norm
    SwiGLU/RMSNorm blocks, final RMSNorm) from "Multimodal Autoregressive
    Pre-training of Large Vision Encoders" (Fini et al., CVPR 2025,
    arXiv:2411.14402). Called on images it attends bidirectionally, as the
    encoder is used after pre-training. `AIMV2Pretrainer` runs the same
    layers with prefix attention.

    The defaults build AIMv2-L at 224 pixels (309.2M parameters);
    `keras_aimv2.BACKBONE_CONFIGS` holds every released size.

    A learned-position model moves to another resolution with
    `AIMV2Backbone.from_preset(preset, image_shape=(336, 336, 3))` or
    `backbone.with_image_shape(...)`, which resample the position embedding
    bicubically on its 2D grid, as AIMv2's 336 and 448 pixel models are
    continued from the 224 pixel ones. `extract_features` averages the
    features of chosen blocks.

    Images are channels-last by default; with
    `data_format="channels_first"` (or `keras.config.image_data_format()`
    set so) they are `(batch, channels, height, width)` and `image_shape`
    is `(channels, height, width)`. The patch embedding reads them in that
    layout (`keras_aimv2.patches.patchify`), so the features, the weights
    and the patch order are the same for the same images in either layout.

    Args:
        image_shape: tuple `(height, width, channels)`, or `(channels,
            height, width)` with `data_format="channels_first"`. Use
            `(None, None, 3)` with `position_embedding="sincos"` for images
            of any size. Defaults to `(224, 224, 3)`.
        patch_size: int. Side of a square patch. Defaults to `14`.
        hidden_dim: int. Width of the tokens. Defaults to `1024`.
        num_layers: int. Number of transformer blocks. Defaults to `24`.
        num_heads: int. Number of attention heads. Defaults to `8`.
        intermediate_dim: int. SwiGLU hidden width. Defaults to `2816`.
        position_embedding: str. `"learned"` or `"sincos"` (2D sine-cosine,
            for the native-resolution model). Defaults to `"learned"`.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        data_format: str or `None`. `"channels_last"` or
            `"channels_first"`, the layout of the images and of
            `image_shape`. Defaults to `None`,
            `keras.config.image_data_format()`.
        dtype: string or `keras.mixed_precision.DTypePolicy`. The dtype of
            the layers' computations and weights. Defaults to `None`.
        **kwargs: other keyword arguments passed to `keras.Model`.

    Example:

    >>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
    >>> backbone(np.zeros((2, 32, 32, 3))).shape
    (2, 16, 64)

    Channels-first images:

    >>> backbone = AIMV2Backbone(
    ...     **{**BACKBONE_CONFIGS["tiny"], "image_shape": (3, 32, 32)},
    ...     data_format="channels_first",
    ... )
    >>> backbone(np.zeros((2, 3, 32, 32))).shape
    (2, 16, 64)
    """

    def __init__(
        self,
        image_shape=(224, 224, 3),
        patch_size=14,
        hidden_dim=1024,
        num_layers=24,
        num_heads=8,
        intermediate_dim=2816,
        position_embedding="learned",
        layer_norm_epsilon=1e-5,
        data_format=None,
        dtype=None,
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        image_shape = tuple(image_shape)
        if len(image_shape) != 3:
            raise ValueError(
                "`image_shape` must have three entries, "
                f"{_layout_name(data_format)} for data_format="
                f"{data_format!r}. Received: image_shape={image_shape}"
            )
        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            hidden_dim=hidden_dim,
            patch_size=patch_size,
            position_embedding=position_embedding,
            layer_norm_epsilon=layer_norm_epsilon,
            data_format=data_format,
            dtype=dtype,
            name="patch_embedding",
        )
        self.encoder = PrefixViTEncoder(
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="encoder",
        )

        # === Functional Model ===
        images = keras.Input(shape=image_shape, name="images")
        features = self.encoder(self.patch_embedding(images))
        super().__init__(inputs=images, outputs=features, dtype=dtype, **kwargs)

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.position_embedding = position_embedding
        self.layer_norm_epsilon = layer_norm_epsilon
        self.data_format = data_format

    @property
    def num_channels(self):
        """Channels of the images, wherever `data_format` puts them."""
        return image_layout((None, *self.image_shape), self.data_format)[3]

    @property
    def image_size(self):
        """`(height, width)` of `image_shape`, in either data format."""
        return image_layout((None, *self.image_shape), self.data_format)[1:3]

    def extract_features(self, images, feature_layers=None):
        """Patch features of the last block, or averaged over chosen blocks.

        Each chosen block's output passes through the encoder's final
        RMSNorm before the average (see `PrefixViTEncoder`), so
        `feature_layers=None` or `(-1,)` gives exactly `backbone(images)`.
        AIMv2 probes the last layer's features.

        Args:
            images: float tensor `(batch, height, width, channels)`, or
                `(batch, channels, height, width)` with
                `data_format="channels_first"`, normalized.
            feature_layers: tuple of ints or `None`. Block indices, negative
                ones counting from the end. Defaults to `None`, the last
                block.

        Returns:
            Tensor `(batch, num_patches, hidden_dim)`.

        Example:

        >>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
        >>> images = np.zeros((2, 32, 32, 3))
        >>> backbone.extract_features(images, feature_layers=(0, 1)).shape
        (2, 16, 64)
        """
        return self.encoder(
            self.patch_embedding(images), feature_layers=feature_layers
        )

    def with_image_shape(self, image_shape):
        """A copy of this backbone for images of another size.

        Every weight is copied; a learned position embedding is resampled
        bicubically from the old patch grid to the new one
        (`keras_aimv2.layers.patch_embedding.resample_position_embedding`),
        and is left unchanged when the grid is the same. A sine-cosine
        backbone needs no resampling.

        Args:
            image_shape: tuple `(height, width, channels)`, or `(channels,
                height, width)` for a channels-first backbone. The new
                input shape; sides must be multiples of `patch_size` for
                learned positions, and the channels must not change.

        Returns:
            A new `AIMV2Backbone`.

        Example:

        >>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
        >>> larger = backbone.with_image_shape((48, 48, 3))
        >>> larger(np.zeros((1, 48, 48, 3))).shape
        (1, 36, 64)
        """
        image_shape = tuple(image_shape)
        if (
            len(image_shape) != 3
            or image_layout((None, *image_shape), self.data_format)[3]
            != self.num_channels
        ):
            raise ValueError(
                f"`image_shape` must be {_layout_name(self.data_format)} "
                f"with the backbone's {self.num_channels} channels. "
                f"Received: image_shape={image_shape}"
            )
        config = {**self.get_config(), "image_shape": image_shape}
        resized = type(self).from_config(config)
        copy_weights(self, resized, self, resized, origin="this backbone")
        return resized

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Instantiate an `AIMV2Backbone` from a preset, at any image size.

        As `keras_hub.models.Backbone.from_preset`, except that an
        `image_shape` different from the preset's builds the backbone at
        the preset's size, loads its weights and returns
        `with_image_shape(image_shape)`: a learned position embedding is
        resampled bicubically to the new patch grid. A missing or broken
        file of a preset directory raises a `BrokenPresetError` naming it
        (see `check_preset_files`).

        Args:
            preset: str. A preset directory or handle, or the name of a
                released checkpoint converted with `aimv2 convert`
                (`keras_aimv2.models.aimv2_presets`).
            load_weights: bool. Whether to load the preset's weights.
                Defaults to `True`.
            **kwargs: other keyword arguments passed to the backbone
                (`image_shape`, `dtype`, ...).

        Example:

        >>> backbone = AIMV2Backbone.from_preset(
        ...     "runs/tiny/preset/backbone", image_shape=(48, 48, 3)
        ... )
        """
        image_shape = kwargs.pop("image_shape", None)
        preset = resolve_preset(preset)
        check_preset_files(preset, load_weights)
        backbone = super().from_preset(preset, load_weights, **kwargs)
        if image_shape is None or tuple(image_shape) == backbone.image_shape:
            return backbone
        return backbone.with_image_shape(image_shape)

    def load_weights(self, filepath, *args, **kwargs):
        """As `keras.Model.load_weights`, naming a missing or broken file.

        keras-hub loads a preset's backbone weights through this method,
        also under `keras_hub.models.Backbone.from_preset` and a task's
        `from_preset`: a truncated `model.weights.h5` raises a
        `BrokenPresetError` naming it (see `check_weights_file`). A file
        that does not exist is left to Keras's own error.
        """
        if os.path.isfile(filepath):
            check_weights_file(filepath)
        return super().load_weights(filepath, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "position_embedding": self.position_embedding,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "data_format": self.data_format,
            }
        )
        return config


def _layout_name(data_format):
    if data_format == "channels_first":
        return "(channels, height, width)"
    return "(height, width, channels)"


def copy_weights(source, target, source_backbone, target_backbone, origin):
    """Assign `source`'s weights to `target`'s, matched by path.

    A learned position embedding is resampled bicubically from the patch
    grid of `source_backbone` to that of `target_backbone`; every other
    weight must have the same shape on both sides.

    Args:
        source: a Keras layer or model holding the weights to copy.
        target: a Keras layer or model receiving them; each of its weights
            must exist in `source` under the same path.
        source_backbone: `AIMV2Backbone` within (or equal to) `source`.
        target_backbone: `AIMV2Backbone` within (or equal to) `target`.
        origin: str. Names `source` in error messages.
    """
    values = {weight.path: weight for weight in source.weights}
    grids = (
        source_backbone.patch_embedding.grid_size,
        target_backbone.patch_embedding.grid_size,
    )
    for weight in target.weights:
        if weight.path not in values:
            raise ValueError(f"{origin} has no weight {weight.path!r}.")
        value = keras.ops.convert_to_numpy(values[weight.path])
        if weight.path.endswith("patch_embedding/position_embedding"):
            value = resample_position_embedding(value, *grids)
        if tuple(value.shape) != tuple(weight.shape):
            raise ValueError(
                f"{origin} holds {weight.path!r} of shape "
                f"{tuple(value.shape)}, but the model needs "
                f"{tuple(weight.shape)}. Only the image size may differ."
            )
        weight.assign(value)
