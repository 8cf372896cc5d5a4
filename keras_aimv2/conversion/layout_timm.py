"""Key names of timm's layout (`timm`'s `aimv2_*` vision transformers).

`patch_embed.proj.weight`, `blocks.N.attn.qkv.weight` (query, key and
value fused), `blocks.N.mlp.fc1_g.weight` and `fc1_x` (SwiGLU gate and
up), `norm.weight`; a `(1, num_patches, hidden_dim)` position embedding.
Apple's `AIMv2LiT` may also hold its image tower in these names, under
`image_encoder.`, with Apple's names for the head, the text tower and the
projections.
"""

from keras_aimv2.conversion import layout_apple

NAME = "timm"

# Source tensor name of each role (see `layout_apple.KEY_NAMES`).
KEY_NAMES = {
    "patch_weight": "patch_embed.proj.weight",
    "patch_bias": "patch_embed.proj.bias",
    "patch_norm": "patch_embed.norm.weight",
    "pos_embed": "pos_embed",
    "block": "blocks.{}.",
    "attn_norm": "norm1.weight",
    "qkv": "attn.qkv.weight",
    "proj": "attn.proj.weight",
    "ffn_norm": "norm2.weight",
    "gate": "mlp.fc1_g.weight",
    "up": "mlp.fc1_x.weight",
    "down": "mlp.fc2.weight",
    "final_norm": "norm.weight",
    **layout_apple.HEAD_NAMES,
}
QKV_ROLES = ("qkv",)
POSITION_EMBEDDING_BATCH_AXIS = True
# `AIMv2LiT` in timm's names: as in Apple's layout.
LIT_PREFIX = layout_apple.LIT_PREFIX
LIT_OTHER_NAMES = layout_apple.LIT_OTHER_NAMES
BUFFERS = ()
# Its text tower and projections keep Apple's names.
TEXT_PREFIX = layout_apple.TEXT_PREFIX
TEXT_KEY_NAMES = layout_apple.TEXT_KEY_NAMES
TEXT_QKV_ROLES = layout_apple.TEXT_QKV_ROLES
TEXT_BUFFERS = layout_apple.TEXT_BUFFERS
LIT_KEY_NAMES = layout_apple.LIT_KEY_NAMES
