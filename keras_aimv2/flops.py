"""Model FLOPs of AIMv2 pre-training and encoder inference.

Only matrix multiplications count, a multiply-add as 2 FLOPs, and attention
over the full square of its sequence, with no discount for causal or prefix
masks; a training step costs 3 forward passes (the forward, and a backward
of twice its cost). For `N` patches of `P = 3 p^2` values, an encoder of
width `d`, `L_e` blocks and SwiGLU hidden `h`, and a decoder of width `D`,
`L_d` blocks and hidden `h_d` over `T = N + C + 1` positions (`C` the
context length), a forward pass per example costs

    encoder  2 N P d + L_e (8 N d^2 + 6 N d h + 4 N^2 d)
    decoder  2 N d D + L_d (8 T D^2 + 6 T D h_d + 4 T^2 D)
    heads    2 (C + 1) D V + 2 N D P

with `V` the vocabulary. The counts are a property of the model, not of
its implementation: use them to compare an achieved FLOP rate with a
device's peak (model FLOPs utilisation).

Example:

>>> backbone = BACKBONE_CONFIGS["large"]
>>> round(encoder_flops(backbone) / 1e9, 1)  # GFLOPs per 224 px image
164.6
"""


def _num_patches(backbone_config):
    height, width = backbone_config["image_shape"][:2]
    return (height // backbone_config["patch_size"]) * (
        width // backbone_config["patch_size"]
    )


def _patch_dim(backbone_config):
    channels = backbone_config["image_shape"][-1]
    return backbone_config["patch_size"] ** 2 * channels


def _blocks(tokens, width, hidden, depth):
    return depth * (
        8 * tokens * width**2
        + 6 * tokens * width * hidden
        + 4 * tokens**2 * width
    )


def encoder_flops(backbone_config, batch_size=1):
    """Forward FLOPs of the encoder (patch projection and blocks).

    Args:
        backbone_config: dict of `AIMV2Backbone` arguments
            (`keras_aimv2.BACKBONE_CONFIGS` entries).
        batch_size: int. Images. Defaults to `1`.
    """
    tokens = _num_patches(backbone_config)
    width = backbone_config["hidden_dim"]
    per_image = 2 * tokens * _patch_dim(backbone_config) * width + _blocks(
        tokens,
        width,
        backbone_config["intermediate_dim"],
        backbone_config["num_layers"],
    )
    return batch_size * per_image


def pretraining_flops(backbone_config, decoder_config, batch_size=1):
    """FLOPs of one pre-training step (3 forward passes).

    Args:
        backbone_config: dict of `AIMV2Backbone` arguments.
        decoder_config: dict of `AIMV2Pretrainer` decoder arguments
            (`keras_aimv2.DECODER_CONFIGS` entries).
        batch_size: int. Examples per step. Defaults to `1`.
    """
    tokens = _num_patches(backbone_config)
    width = backbone_config["hidden_dim"]
    decoder_width = decoder_config["decoder_hidden_dim"]
    context = decoder_config["context_length"]
    sequence = tokens + context + 1
    decoder = 2 * tokens * width * decoder_width + _blocks(
        sequence,
        decoder_width,
        decoder_config["decoder_intermediate_dim"],
        decoder_config["decoder_num_layers"],
    )
    heads = 2 * (context + 1) * decoder_width * decoder_config[
        "vocabulary_size"
    ] + 2 * tokens * decoder_width * _patch_dim(backbone_config)
    forward = encoder_flops(backbone_config) + decoder + heads
    return 3 * batch_size * forward
