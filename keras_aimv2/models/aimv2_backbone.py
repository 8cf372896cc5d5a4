"""The AIMv2 vision encoder as a keras-hub backbone."""

import keras
from keras_hub.models import Backbone

from keras_aimv2.api import register
from keras_aimv2.layers.encoder import PrefixViTEncoder
from keras_aimv2.layers.patch_embedding import PatchEmbedding


@register
class AIMV2Backbone(Backbone):
    """AIMv2 vision encoder: images in, patch features out.

    A plain ViT without class token (patch embedding with RMSNorm, pre-norm
    SwiGLU/RMSNorm blocks, final RMSNorm) from "Multimodal Autoregressive
    Pre-training of Large Vision Encoders" (Fini et al., CVPR 2025,
    arXiv:2411.14402). Called on images it attends bidirectionally, as the
    encoder is used after pre-training. `AIMV2Pretrainer` runs the same
    layers with prefix attention.

    The defaults build AIMv2-L at 224 pixels (309.2M parameters);
    `keras_aimv2.BACKBONE_CONFIGS` holds every released size.

    Args:
        image_shape: tuple `(height, width, channels)`. Use `(None, None, 3)`
            with `position_embedding="sincos"` for images of any size.
            Defaults to `(224, 224, 3)`.
        patch_size: int. Side of a square patch. Defaults to `14`.
        hidden_dim: int. Width of the tokens. Defaults to `1024`.
        num_layers: int. Number of transformer blocks. Defaults to `24`.
        num_heads: int. Number of attention heads. Defaults to `8`.
        intermediate_dim: int. SwiGLU hidden width. Defaults to `2816`.
        position_embedding: str. `"learned"` or `"sincos"` (2D sine-cosine,
            for the native-resolution model). Defaults to `"learned"`.
        layer_norm_epsilon: float. RMSNorm epsilon. Defaults to `1e-5`.
        dtype: string or `keras.mixed_precision.DTypePolicy`. The dtype of
            the layers' computations and weights. Defaults to `None`.
        **kwargs: other keyword arguments passed to `keras.Model`.

    Example:

    >>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
    >>> backbone(np.zeros((2, 32, 32, 3))).shape
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
        dtype=None,
        **kwargs,
    ):
        image_shape = tuple(image_shape)
        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            hidden_dim=hidden_dim,
            patch_size=patch_size,
            position_embedding=position_embedding,
            layer_norm_epsilon=layer_norm_epsilon,
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

    @property
    def num_channels(self):
        return self.image_shape[-1]

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
            }
        )
        return config
