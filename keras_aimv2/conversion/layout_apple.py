"""Key names of Apple's own layout (apple/ml-aim's `AIMv2`, `AIMv2LiT`).

`preprocessor.patchifier.proj.weight`, `trunk.blocks.N.attn.qkv.weight`
(query, key and value fused), `trunk.post_trunk_norm.weight`; a
`(1, num_patches, hidden_dim)` position embedding. The image tower of
`AIMv2LiT` lies under `image_encoder.`, with an attention-pool head
`head.cls_token`, `head.k`, `head.v`, `head.linear`.
"""

NAME = "apple"

# The attention-pool head in apple/ml-aim's names (`AIMv2LiT`'s image
# head); the `head_key`, `head_value` and `head_output` linear layers are
# followed by `weight` or `bias`.
HEAD_NAMES = {
    "head_query": "head.cls_token",
    "head_key": "head.k.",
    "head_value": "head.v.",
    "head_output": "head.linear.",
}
# Source tensor name of each role. `block` is the prefix of block `i`; the
# per-block names follow it.
KEY_NAMES = {
    "patch_weight": "preprocessor.patchifier.proj.weight",
    "patch_bias": "preprocessor.patchifier.proj.bias",
    "patch_norm": "preprocessor.patchifier.norm.weight",
    "pos_embed": "preprocessor.pos_embed",
    "block": "trunk.blocks.{}.",
    "attn_norm": "norm_1.weight",
    "qkv": "attn.qkv.weight",
    "proj": "attn.proj.weight",
    "ffn_norm": "norm_2.weight",
    "gate": "mlp.fc1.weight",
    "up": "mlp.fc3.weight",
    "down": "mlp.fc2.weight",
    "final_norm": "trunk.post_trunk_norm.weight",
    **HEAD_NAMES,
}
# The roles of the query, key and value projections: one fused tensor.
QKV_ROLES = ("qkv",)
# Whether the position embedding has a leading axis of 1.
POSITION_EMBEDDING_BATCH_AXIS = True
# Prefix of the image tower in the whole LiT checkpoint (`AIMv2LiT`).
LIT_PREFIX = "image_encoder."
# Top-level names of `AIMv2LiT` outside its image tower: the text tower,
# the projections and the logit scale, skipped.
LIT_OTHER_NAMES = (
    "text_encoder",
    "image_projector",
    "text_projector",
    "log_logit_scale",
)
# Keys that hold no parameters.
BUFFERS = ()
