"""Key names of Hugging Face transformers' layout (`Aimv2VisionModel`).

`embeddings.patch_embed.weight`, `encoder.layers.N.attention.q_proj.weight`
(and `k_proj`, `v_proj`: separate projections), `rms_norm.weight`; a
`(num_patches, hidden_dim)` position embedding. The image tower of the
CLIP-style `Aimv2Model` (the LiT checkpoint) lies under `vision_model.`,
with an attention-pool head `head.cls_token`, `head.k_proj`, `head.v_proj`,
`head.output_proj`; its causal text tower (`Aimv2TextModel`) under
`text_model.` (`embeddings.token_embedding.weight`,
`embeddings.position_embedding.weight`, the same `encoder.layers.N` and
`rms_norm` as the image tower's), then `visual_projection.weight`,
`text_projection.weight` and the scalar `logit_scale` (a logarithm,
despite its name).
"""

NAME = "transformers"

# The encoder (`Aimv2Encoder` and the final `rms_norm`), the same in the
# image and the text towers (see `layout_apple.TRUNK_NAMES`).
TRUNK_NAMES = {
    "block": "encoder.layers.{}.",
    "attn_norm": "rms_norm1.weight",
    "q": "attention.q_proj.weight",
    "k": "attention.k_proj.weight",
    "v": "attention.v_proj.weight",
    "proj": "attention.out_proj.weight",
    "ffn_norm": "rms_norm2.weight",
    "gate": "ffn.gate_proj.weight",
    "up": "ffn.up_proj.weight",
    "down": "ffn.down_proj.weight",
    "final_norm": "rms_norm.weight",
}
# Source tensor name of each role of the image tower (see
# `layout_apple.KEY_NAMES`).
KEY_NAMES = {
    "patch_weight": "embeddings.patch_embed.weight",
    "patch_bias": "embeddings.patch_embed.bias",
    "patch_norm": "embeddings.rms_norm.weight",
    "pos_embed": "embeddings.position_embedding.weight",
    **TRUNK_NAMES,
    "head_query": "head.cls_token",
    "head_key": "head.k_proj.",
    "head_value": "head.v_proj.",
    "head_output": "head.output_proj.",
}
# Separate query, key and value projections, fused in this order.
QKV_ROLES = ("q", "k", "v")
POSITION_EMBEDDING_BATCH_AXIS = False
# Prefix of the image tower in the CLIP-style `Aimv2Model`.
LIT_PREFIX = "vision_model."
# Top-level names of `Aimv2Model` outside its image tower (skipped unless
# the whole LiT model is converted).
LIT_OTHER_NAMES = (
    "text_model",
    "text_projection",
    "visual_projection",
    "logit_scale",
)
# Buffers some exports store that hold no parameters.
BUFFERS = ("embeddings.position_ids",)

# The text tower of `Aimv2Model` (`Aimv2TextModel`).
TEXT_PREFIX = "text_model."
TEXT_KEY_NAMES = {
    "token_embedding": "embeddings.token_embedding.weight",
    "text_pos_embed": "embeddings.position_embedding.weight",
    **TRUNK_NAMES,
}
TEXT_QKV_ROLES = QKV_ROLES
TEXT_BUFFERS = ("embeddings.position_ids",)
# The projections and the logit scale (see `layout_apple.LIT_KEY_NAMES`).
LIT_KEY_NAMES = {
    "image_projection": "visual_projection.weight",
    "text_projection": "text_projection.weight",
    "log_logit_scale": "logit_scale",
}
