"""Key names of Apple's own layout (apple/ml-aim's `AIMv2`, `AIMv2LiT`).

`preprocessor.patchifier.proj.weight`, `trunk.blocks.N.attn.qkv.weight`
(query, key and value fused), `trunk.post_trunk_norm.weight`; a
`(1, num_patches, hidden_dim)` position embedding. The image tower of
`AIMv2LiT` lies under `image_encoder.`, with an attention-pool head
`head.cls_token`, `head.k`, `head.v`, `head.linear`; its causal text
tower under `text_encoder.` (`preprocessor.text_embedding.weight`, a
`(context_length, hidden_dim)` `preprocessor.positional_embedding`, the
same `trunk` as the image tower's), then `image_projector.weight`,
`text_projector.weight` and the scalar `log_logit_scale`.
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
# The transformer trunk (`aim.v1.torch.models.Transformer`), the same in
# the image and the text towers. `block` is the prefix of block `i`; the
# per-block names follow it.
TRUNK_NAMES = {
    "block": "trunk.blocks.{}.",
    "attn_norm": "norm_1.weight",
    "qkv": "attn.qkv.weight",
    "proj": "attn.proj.weight",
    "ffn_norm": "norm_2.weight",
    "gate": "mlp.fc1.weight",
    "up": "mlp.fc3.weight",
    "down": "mlp.fc2.weight",
    "final_norm": "trunk.post_trunk_norm.weight",
}
# Source tensor name of each role of the image tower.
KEY_NAMES = {
    "patch_weight": "preprocessor.patchifier.proj.weight",
    "patch_bias": "preprocessor.patchifier.proj.bias",
    "patch_norm": "preprocessor.patchifier.norm.weight",
    "pos_embed": "preprocessor.pos_embed",
    **TRUNK_NAMES,
    **HEAD_NAMES,
}
# The roles of the query, key and value projections: one fused tensor.
QKV_ROLES = ("qkv",)
# Whether the position embedding has a leading axis of 1.
POSITION_EMBEDDING_BATCH_AXIS = True
# Prefix of the image tower in the whole LiT checkpoint (`AIMv2LiT`).
LIT_PREFIX = "image_encoder."
# Top-level names of `AIMv2LiT` outside its image tower: the text tower,
# the projections and the logit scale (skipped unless the whole LiT model
# is converted).
LIT_OTHER_NAMES = (
    "text_encoder",
    "image_projector",
    "text_projector",
    "log_logit_scale",
)
# Keys that hold no parameters.
BUFFERS = ()

# The text tower of `AIMv2LiT` (`AIMv2TextEncoder`).
TEXT_PREFIX = "text_encoder."
# Source tensor name of each role of the text tower. `text_pos_embed` is
# `(context_length, hidden_dim)`: no leading axis, unlike the image
# tower's.
TEXT_KEY_NAMES = {
    "token_embedding": "preprocessor.text_embedding.weight",
    "text_pos_embed": "preprocessor.positional_embedding",
    **TRUNK_NAMES,
}
TEXT_QKV_ROLES = QKV_ROLES
TEXT_BUFFERS = ()
# The projections into the shared embedding space and the logit scale
# (stored as its logarithm, a 0-d tensor), at the top level.
LIT_KEY_NAMES = {
    "image_projection": "image_projector.weight",
    "text_projection": "text_projector.weight",
    "log_logit_scale": "log_logit_scale",
}
