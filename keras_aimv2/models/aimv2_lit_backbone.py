"""The AIMv2 LiT image-text model as a keras-hub backbone."""

import math

import keras
from keras import ops
from keras_hub.models import Backbone

from keras_aimv2.api import register
from keras_aimv2.layers.attention_pool import AttentionPool
from keras_aimv2.layers.text_encoder import CausalTextEncoder
from keras_aimv2.models.aimv2_presets import NamedPresets

# CLIP's initial temperature, 0.07, as apple/ml-aim's LiT model starts.
INITIAL_TEMPERATURE = 0.07


def l2_normalize(x):
    """`x / ||x||` along the last axis, computed in float32, cast back."""
    normalized = ops.normalize(ops.cast(x, "float32"), axis=-1, order=2)
    return ops.cast(normalized, x.dtype)


@register
class ContrastiveHead(keras.layers.Layer):
    """Scaled cosine similarities of image and text embeddings.

    Both embeddings are L2-normalized; the similarities are multiplied by
    the learned logit scale `exp(clip(log_logit_scale, 0,
    log(max_logit_scale)))` (CLIP's temperature, clamped as in AIMv2's LiT
    model). `log_logit_scale` starts at `log(1 / 0.07)`.

    Args:
        max_logit_scale: float. Largest logit scale. Defaults to `100.0`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        image_embeddings: float tensor `(num_images, dim)`.
        text_embeddings: float tensor `(num_texts, dim)`.

    Returns:
        A tuple `(vision_logits, text_logits)` of shapes `(num_images,
        num_texts)` and `(num_texts, num_images)`.

    Example:

    >>> head = ContrastiveHead()
    >>> images, texts = np.eye(3, 4), np.eye(2, 4)
    >>> [tuple(x.shape) for x in head(images, texts)]
    [(3, 2), (2, 3)]
    """

    def __init__(self, max_logit_scale=100.0, **kwargs):
        super().__init__(**kwargs)
        self.max_logit_scale = max_logit_scale

    def build(self, image_embeddings_shape=None, text_embeddings_shape=None):
        self.log_logit_scale = self.add_weight(
            name="log_logit_scale",
            shape=(),
            initializer=keras.initializers.Constant(
                math.log(1.0 / INITIAL_TEMPERATURE)
            ),
        )

    def logit_scale(self):
        """The clamped, exponentiated logit scale, a float32 scalar."""
        log_scale = ops.cast(self.log_logit_scale, "float32")
        return ops.exp(ops.clip(log_scale, 0.0, math.log(self.max_logit_scale)))

    def call(self, image_embeddings, text_embeddings):
        images = ops.cast(l2_normalize(image_embeddings), "float32")
        texts = ops.cast(l2_normalize(text_embeddings), "float32")
        text_logits = self.logit_scale() * ops.matmul(
            texts, ops.transpose(images)
        )
        text_logits = ops.cast(text_logits, self.compute_dtype)
        return ops.transpose(text_logits), text_logits

    def compute_output_shape(
        self, image_embeddings_shape, text_embeddings_shape
    ):
        num_images, num_texts = (
            image_embeddings_shape[0],
            text_embeddings_shape[0],
        )
        return (num_images, num_texts), (num_texts, num_images)

    def get_config(self):
        config = super().get_config()
        config.update({"max_logit_scale": self.max_logit_scale})
        return config


@register
class AIMV2LiTBackbone(NamedPresets, Backbone):
    """AIMv2 LiT: an AIMv2 image tower and a causal text tower, contrasted.

    The image-text model released with AIMv2 ("Multimodal Autoregressive
    Pre-training of Large Vision Encoders", Fini et al., CVPR 2025,
    arXiv:2411.14402; apple/ml-aim `AIMv2LiT`), tuned as in LiT ("LiT:
    Zero-Shot Transfer with Locked-image text Tuning", Zhai et al., CVPR
    2022). Images go through the AIMv2 encoder (`vision_encoder`), an
    attention pool with one learned query whose output keeps the image
    width (`vision_pool`), and a linear projection without bias
    (`vision_projection`). Captions go through a CLIP-style causal text
    encoder pooled at the end token (`text_encoder`,
    `keras_aimv2.layers.CausalTextEncoder`) and a linear projection without
    bias (`text_projection`). Both embeddings are L2-normalized and
    compared by cosine similarity, scaled by the learned `logit_scale()`.

    Inputs are a dict with `"images"` (normalized, in the vision encoder's
    layout) and `"token_ids"` (`(num_texts, length)`, each caption ending
    with `end_token_id`, `length <= text_sequence_length`). Outputs are a
    dict, as keras-hub's `CLIPBackbone`: `"vision_logits"`
    (`(num_images, num_texts)`, logits per image) and `"text_logits"`
    (`(num_texts, num_images)`, its transpose).

    Args:
        vision_encoder: `keras_aimv2.AIMV2Backbone`. The image tower.
        text_vocabulary_size: int. Number of text tokens.
        text_sequence_length: int. Most tokens per caption.
        text_hidden_dim: int. Width of the text tower.
        text_num_layers: int. Blocks of the text tower.
        text_num_heads: int. Attention heads of the text tower.
        text_intermediate_dim: int. SwiGLU hidden width of the text tower.
        end_token_id: int. Id of the end token, where captions are pooled.
        projection_dim: int. Width of the shared embedding space.
        pool_num_heads: int or `None`. Heads of the attention pool; `None`
            takes the vision encoder's, as the released model. Defaults to
            `None`.
        max_logit_scale: float. Largest logit scale. Defaults to `100.0`.
        layer_norm_epsilon: float. RMSNorm epsilon of the text tower.
            Defaults to `1e-5`.
        dtype: string or `keras.mixed_precision.DTypePolicy`. The dtype of
            the layers' computations and weights. Defaults to `None`.
        **kwargs: other keyword arguments passed to `keras.Model`.

    Example:

    >>> vision_encoder = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
    >>> backbone = AIMV2LiTBackbone(vision_encoder, **LIT_CONFIGS["tiny"])
    >>> outputs = backbone(
    ...     {
    ...         "images": np.zeros((2, 32, 32, 3)),
    ...         "token_ids": np.array([[5, 6, 1, 0], [7, 1, 0, 0]]),
    ...     }
    ... )
    >>> outputs["vision_logits"].shape
    (2, 2)
    >>> backbone.encode_text(np.array([[5, 1]])).shape
    (1, 32)
    """

    def __init__(
        self,
        vision_encoder,
        text_vocabulary_size,
        text_sequence_length,
        text_hidden_dim,
        text_num_layers,
        text_num_heads,
        text_intermediate_dim,
        end_token_id,
        projection_dim,
        pool_num_heads=None,
        max_logit_scale=100.0,
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        num_heads = pool_num_heads or vision_encoder.num_heads
        if vision_encoder.hidden_dim % num_heads:
            raise ValueError(
                "`pool_num_heads` must divide the vision encoder's width "
                f"{vision_encoder.hidden_dim}. Received: pool_num_heads="
                f"{pool_num_heads}"
            )
        # === Layers ===
        self.vision_encoder = vision_encoder
        self.vision_pool = AttentionPool(
            num_heads, dtype=dtype, name="vision_pool"
        )
        self.vision_projection = keras.layers.Dense(
            projection_dim,
            use_bias=False,
            dtype=dtype,
            name="vision_projection",
        )
        self.text_encoder = CausalTextEncoder(
            vocabulary_size=text_vocabulary_size,
            sequence_length=text_sequence_length,
            hidden_dim=text_hidden_dim,
            num_layers=text_num_layers,
            num_heads=text_num_heads,
            intermediate_dim=text_intermediate_dim,
            end_token_id=end_token_id,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="text_encoder",
        )
        self.text_projection = keras.layers.Dense(
            projection_dim,
            use_bias=False,
            dtype=dtype,
            name="text_projection",
        )
        self.contrastive_head = ContrastiveHead(
            max_logit_scale, dtype=dtype, name="contrastive_head"
        )

        # === Functional Model ===
        images = keras.Input(shape=vision_encoder.image_shape, name="images")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        vision_logits, text_logits = self.contrastive_head(
            self._image_features(images), self._text_features(token_ids)
        )
        super().__init__(
            inputs={"images": images, "token_ids": token_ids},
            outputs={
                "vision_logits": vision_logits,
                "text_logits": text_logits,
            },
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.text_vocabulary_size = text_vocabulary_size
        self.text_sequence_length = text_sequence_length
        self.text_hidden_dim = text_hidden_dim
        self.text_num_layers = text_num_layers
        self.text_num_heads = text_num_heads
        self.text_intermediate_dim = text_intermediate_dim
        self.end_token_id = end_token_id
        self.projection_dim = projection_dim
        self.pool_num_heads = pool_num_heads
        self.max_logit_scale = max_logit_scale
        self.layer_norm_epsilon = layer_norm_epsilon

    @property
    def log_logit_scale(self):
        """The learned scalar `log` of the logit scale (before clamping)."""
        return self.contrastive_head.log_logit_scale

    def logit_scale(self):
        """`exp(clip(log_logit_scale, 0, log(max_logit_scale)))`, float32."""
        return self.contrastive_head.logit_scale()

    def _image_features(self, images):
        pooled = self.vision_pool(self.vision_encoder(images))
        return self.vision_projection(pooled)

    def _text_features(self, token_ids):
        return self.text_projection(self.text_encoder(token_ids))

    def encode_images(self, images):
        """L2-normalized image embeddings, `(batch, projection_dim)`.

        Args:
            images: float tensor in the vision encoder's layout,
                normalized.
        """
        return l2_normalize(self._image_features(images))

    def encode_text(self, token_ids):
        """L2-normalized text embeddings, `(batch, projection_dim)`.

        Args:
            token_ids: int tensor `(batch, length)`, each row holding the
                end token (the text is pooled at its first one).
        """
        return l2_normalize(self._text_features(token_ids))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vision_encoder": keras.layers.serialize(self.vision_encoder),
                "text_vocabulary_size": self.text_vocabulary_size,
                "text_sequence_length": self.text_sequence_length,
                "text_hidden_dim": self.text_hidden_dim,
                "text_num_layers": self.text_num_layers,
                "text_num_heads": self.text_num_heads,
                "text_intermediate_dim": self.text_intermediate_dim,
                "end_token_id": self.end_token_id,
                "projection_dim": self.projection_dim,
                "pool_num_heads": self.pool_num_heads,
                "max_logit_scale": self.max_logit_scale,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        vision_encoder = config["vision_encoder"]
        if isinstance(vision_encoder, dict):
            # A policy given to the whole model reaches the image tower too
            # when its own config names none, as in keras-hub's CLIP.
            vision_encoder = {
                **vision_encoder,
                "config": dict(vision_encoder["config"]),
            }
            if config.get("dtype") is not None:
                vision_encoder["config"].setdefault("dtype", config["dtype"])
            config["vision_encoder"] = keras.layers.deserialize(
                vision_encoder, custom_objects=custom_objects
            )
        return cls(**config)
