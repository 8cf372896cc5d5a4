"""Named configurations of the AIMv2 encoder and pre-training decoder.

Sizes follow the released models (AIMv2, Table 1 and apple/ml-aim): patch
14, 224 pixels, head width 128, SwiGLU hidden `round_up(8 / 3 * width,
256)`. Every encoder size is pre-trained with the same decoder. The `tiny`
entries are for tests and CPU runs.

Example:

>>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
>>> pretrainer = AIMV2Pretrainer(backbone, **DECODER_CONFIGS["tiny"])
"""


def _encoder(width, depth, heads, image_size=224, patch_size=14):
    return {
        "image_shape": (image_size, image_size, 3),
        "patch_size": patch_size,
        "hidden_dim": width,
        "num_layers": depth,
        "num_heads": heads,
        "intermediate_dim": swiglu_hidden_dim(width),
    }


def swiglu_hidden_dim(width, multiple=256):
    """AIMv2's SwiGLU hidden width: `8 / 3 * width`, rounded up."""
    hidden = int(8 * width / 3)
    return -(-hidden // multiple) * multiple


BACKBONE_CONFIGS = {
    "tiny": {
        "image_shape": (32, 32, 3),
        "patch_size": 8,
        "hidden_dim": 64,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_dim": 128,
    },
    "base": _encoder(768, 12, 6),
    "large": _encoder(1024, 24, 8),
    "huge": _encoder(1536, 24, 12),
    "1b": _encoder(2048, 24, 16),
    "3b": _encoder(3072, 24, 24),
}

DECODER_CONFIGS = {
    "tiny": {
        "decoder_hidden_dim": 64,
        "decoder_num_layers": 2,
        "decoder_num_heads": 2,
        "decoder_intermediate_dim": 128,
        "vocabulary_size": 100,
        "context_length": 8,
    },
    # The decoder of every AIMv2 size (AIMv2, Section 3 and Table A1).
    "aimv2": {
        "decoder_hidden_dim": 1024,
        "decoder_num_layers": 12,
        "decoder_num_heads": 8,
        "decoder_intermediate_dim": 2816,
        "vocabulary_size": 32000,
        "context_length": 77,
    },
}
