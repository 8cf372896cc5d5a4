"""Building blocks of AIMv2, usable on their own."""

from keras_aimv2.layers.attention import SelfAttention
from keras_aimv2.layers.attention_pool import AttentionPool
from keras_aimv2.layers.decoder import MultimodalCausalDecoder
from keras_aimv2.layers.encoder import PrefixViTEncoder
from keras_aimv2.layers.feed_forward import SwiGLUFeedForward
from keras_aimv2.layers.heads import PixelHead
from keras_aimv2.layers.heads import TextHead
from keras_aimv2.layers.norm import RMSNorm
from keras_aimv2.layers.patch_embedding import PatchEmbedding
from keras_aimv2.layers.prefix import prefix_attention_mask
from keras_aimv2.layers.text_encoder import CausalTextEncoder
from keras_aimv2.layers.transformer import TransformerBlock

__all__ = [
    "AttentionPool",
    "CausalTextEncoder",
    "MultimodalCausalDecoder",
    "PatchEmbedding",
    "PixelHead",
    "PrefixViTEncoder",
    "RMSNorm",
    "SelfAttention",
    "SwiGLUFeedForward",
    "TextHead",
    "TransformerBlock",
    "prefix_attention_mask",
]
