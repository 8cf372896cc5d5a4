"""Named sizes of the AIMv2 encoder and pre-training decoder: one table.

`ENCODER_SIZES` and `DECODER_SIZES` (and `LIT_SIZES`, the text towers of
the LiT image-text model) are the only place a named size is written down.
Everything else is derived from them:

- `BACKBONE_CONFIGS` and `DECODER_CONFIGS`, the `AIMV2Backbone` and
  `AIMV2Pretrainer` arguments of each name, and `LIT_CONFIGS`, the
  `AIMV2LiTBackbone` arguments besides its vision encoder;
- the named presets of Apple's released checkpoints, their configurations
  and metadata (`keras_aimv2.models.aimv2_presets`), from the sizes that
  record a release;
- the workloads of `tools/benchmark.py`, which name their sizes.

The released sizes follow AIMv2 (Table 1) and apple/ml-aim: patch 14, 224
pixels, head width 128, SwiGLU hidden `round_up(8 / 3 * width, 256)`, all
pre-trained with the same decoder (`"aimv2"`). The smaller sizes serve
tests (`tiny`) and CPU benchmarks (`mini`, `small`). Each encoder
size records the parameter count of its backbone, which the tests check
against built models (small sizes) and against `parameter_count` (all).

Example:

>>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
>>> pretrainer = AIMV2Pretrainer(backbone, **DECODER_CONFIGS["tiny"])
>>> ENCODER_SIZES["large"].parameters
309197824
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class EncoderSize:
    """A named size of the AIMv2 encoder (`AIMV2Backbone`).

    Attributes:
        hidden_dim: int. Width of the tokens.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. SwiGLU hidden width.
        image_size: int. Side of the square images it is built for.
        patch_size: int. Side of a square patch.
        parameters: int. Parameters of the backbone built from `config()`
            (learned position embedding at `image_size`).
        release: str or `None`. The name Apple released the size under
            (`"AIMv2-L"`), `None` for the sizes of this package only.
        checkpoint_size: str or `None`. How the released checkpoints' ids
            spell the size (`"large"` in `apple/aimv2-large-patch14-224`,
            `"1B"`). Defaults to `None`.
        imagenet_top1: dict or `None`. Reported ImageNet-1k top-1 accuracy
            (frozen trunk, attentive probe) by resolution in pixels, for
            the released sizes. Defaults to `None`.

    Example:

    >>> size = ENCODER_SIZES["large"]
    >>> size.config()["hidden_dim"], size.parameters
    (1024, 309197824)
    >>> size.config(image_size=336)["image_shape"]
    (336, 336, 3)
    """

    hidden_dim: int
    num_layers: int
    num_heads: int
    intermediate_dim: int
    image_size: int
    patch_size: int
    parameters: int
    release: str | None = None
    checkpoint_size: str | None = None
    imagenet_top1: dict | None = None

    def config(self, image_size=None):
        """The `AIMV2Backbone` arguments of this size.

        Args:
            image_size: int or `None`. Side of the square images; `None`
                takes the size's `image_size`. Defaults to `None`.

        Returns:
            A new dict of `AIMV2Backbone` arguments.
        """
        side = self.image_size if image_size is None else image_size
        return {
            "image_shape": (side, side, 3),
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
        }


@dataclasses.dataclass(frozen=True)
class DecoderSize:
    """A named size of the pre-training decoder (`AIMV2Pretrainer`).

    Attributes:
        hidden_dim: int. Width of the decoder's tokens.
        num_layers: int. Number of decoder blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. SwiGLU hidden width.
        vocabulary_size: int. Size of the caption vocabulary.
        context_length: int. Caption tokens per example.

    Example:

    >>> DECODER_SIZES["aimv2"].config()["decoder_hidden_dim"]
    1024
    """

    hidden_dim: int
    num_layers: int
    num_heads: int
    intermediate_dim: int
    vocabulary_size: int
    context_length: int

    def config(self):
        """The decoder arguments of `AIMV2Pretrainer` for this size.

        Returns:
            A new dict of `AIMV2Pretrainer` keyword arguments.
        """
        return {
            "decoder_hidden_dim": self.hidden_dim,
            "decoder_num_layers": self.num_layers,
            "decoder_num_heads": self.num_heads,
            "decoder_intermediate_dim": self.intermediate_dim,
            "vocabulary_size": self.vocabulary_size,
            "context_length": self.context_length,
        }


@dataclasses.dataclass(frozen=True)
class LiTSize:
    """A named size of the LiT model's text side (`AIMV2LiTBackbone`).

    Attributes:
        encoder: str. The `ENCODER_SIZES` name of its image tower.
        hidden_dim: int. Width of the text tower.
        num_layers: int. Blocks of the text tower.
        num_heads: int. Attention heads of the text tower.
        intermediate_dim: int. SwiGLU hidden width of the text tower.
        vocabulary_size: int. Number of text tokens.
        sequence_length: int. Most tokens per caption.
        end_token_id: int. Id of the end token, where captions are pooled.
        projection_dim: int. Width of the shared embedding space.

    Example:

    >>> LIT_SIZES["large"].config()["projection_dim"]
    768
    """

    encoder: str
    hidden_dim: int
    num_layers: int
    num_heads: int
    intermediate_dim: int
    vocabulary_size: int
    sequence_length: int
    end_token_id: int
    projection_dim: int

    def config(self):
        """The `AIMV2LiTBackbone` arguments of this size, without its
        `vision_encoder` (an `AIMV2Backbone` of size `encoder`).

        Returns:
            A new dict of `AIMV2LiTBackbone` keyword arguments.
        """
        return {
            "text_vocabulary_size": self.vocabulary_size,
            "text_sequence_length": self.sequence_length,
            "text_hidden_dim": self.hidden_dim,
            "text_num_layers": self.num_layers,
            "text_num_heads": self.num_heads,
            "text_intermediate_dim": self.intermediate_dim,
            "end_token_id": self.end_token_id,
            "projection_dim": self.projection_dim,
        }


def swiglu_hidden_dim(width, multiple=256):
    """AIMv2's SwiGLU hidden width: `8 / 3 * width`, rounded up.

    Args:
        width: int. Width of the tokens.
        multiple: int. The hidden width is rounded up to a multiple of it.
            Defaults to `256`.

    Returns:
        The hidden width, an int.

    Example:

    >>> swiglu_hidden_dim(1024)
    2816
    """
    hidden = int(8 * width / 3)
    return -(-hidden // multiple) * multiple


def parameter_count(backbone_config):
    """Parameter count of an `AIMV2Backbone`, from its arguments.

    Args:
        backbone_config: dict of `AIMV2Backbone` arguments (a
            `BACKBONE_CONFIGS` entry or a preset's configuration). A
            `"sincos"` `position_embedding` has no parameters; a learned
            one (the default) has one vector per patch of `image_shape`.

    Returns:
        The number of parameters, an int.

    Example:

    >>> parameter_count(BACKBONE_CONFIGS["large"])
    309197824
    """
    height, width, channels = backbone_config["image_shape"]
    patch = backbone_config["patch_size"]
    dim = backbone_config["hidden_dim"]
    hidden = backbone_config["intermediate_dim"]
    positions = 0
    if backbone_config.get("position_embedding", "learned") == "learned":
        positions = (height // patch) * (width // patch)
    patch_embedding = (
        patch * patch * channels * dim  # projection
        + dim  # projection bias
        + dim  # RMSNorm
        + positions * dim  # learned positions
    )
    block = (
        4 * dim * dim  # qkv and output projections
        + 3 * dim * hidden  # gate, up and down
        + 2 * dim  # two RMSNorms
    )
    final_norm = dim
    return patch_embedding + backbone_config["num_layers"] * block + final_norm


# The named encoder sizes: released ones (apple/ml-aim) record their release.
ENCODER_SIZES = {
    # Tests: a two-block encoder of 32-pixel images.
    "tiny": EncoderSize(
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        intermediate_dim=128,
        image_size=32,
        patch_size=8,
        parameters=95_680,
    ),
    # The benchmark's `tiny` workload: 64-pixel images.
    "mini": EncoderSize(
        hidden_dim=192,
        num_layers=6,
        num_heads=3,
        intermediate_dim=512,
        image_size=64,
        patch_size=8,
        parameters=2_706_240,
    ),
    # The benchmark's `small` workload: ViT-S width at 224 pixels.
    "small": EncoderSize(
        hidden_dim=384,
        num_layers=12,
        num_heads=6,
        intermediate_dim=1024,
        image_size=224,
        patch_size=14,
        parameters=21_568_128,
    ),
    # ViT-B width with the released sizes' rules (no released checkpoint).
    "base": EncoderSize(
        hidden_dim=768,
        num_layers=12,
        num_heads=6,
        intermediate_dim=2048,
        image_size=224,
        patch_size=14,
        parameters=85_603_584,
    ),
    "large": EncoderSize(
        hidden_dim=1024,
        num_layers=24,
        num_heads=8,
        intermediate_dim=2816,
        image_size=224,
        patch_size=14,
        parameters=309_197_824,
        release="AIMv2-L",
        checkpoint_size="large",
        imagenet_top1={224: 86.6, 336: 87.6, 448: 87.9},
    ),
    "huge": EncoderSize(
        hidden_dim=1536,
        num_layers=24,
        num_heads=12,
        intermediate_dim=4096,
        image_size=224,
        patch_size=14,
        parameters=680_851_968,
        release="AIMv2-H",
        checkpoint_size="huge",
        imagenet_top1={224: 87.5, 336: 88.2, 448: 88.6},
    ),
    "1b": EncoderSize(
        hidden_dim=2048,
        num_layers=24,
        num_heads=16,
        intermediate_dim=5632,
        image_size=224,
        patch_size=14,
        parameters=1_234_958_336,
        release="AIMv2-1B",
        checkpoint_size="1B",
        imagenet_top1={224: 88.1, 336: 88.7, 448: 89.0},
    ),
    "3b": EncoderSize(
        hidden_dim=3072,
        num_layers=24,
        num_heads=24,
        intermediate_dim=8192,
        image_size=224,
        patch_size=14,
        parameters=2_720_658_432,
        release="AIMv2-3B",
        checkpoint_size="3B",
        imagenet_top1={224: 88.5, 336: 89.2, 448: 89.5},
    ),
}

# The named decoder sizes.
DECODER_SIZES = {
    # Tests, with `tiny` encoders.
    "tiny": DecoderSize(
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        intermediate_dim=128,
        vocabulary_size=100,
        context_length=8,
    ),
    # With `mini` encoders (the benchmark's `tiny` workload).
    "mini": DecoderSize(
        hidden_dim=192,
        num_layers=4,
        num_heads=3,
        intermediate_dim=512,
        vocabulary_size=1000,
        context_length=32,
    ),
    # With `small` encoders: the paper's vocabulary and context.
    "small": DecoderSize(
        hidden_dim=384,
        num_layers=4,
        num_heads=6,
        intermediate_dim=1024,
        vocabulary_size=32000,
        context_length=77,
    ),
    # The decoder of every AIMv2 size (AIMv2, Section 3 and Table A1).
    "aimv2": DecoderSize(
        hidden_dim=1024,
        num_layers=12,
        num_heads=8,
        intermediate_dim=2816,
        vocabulary_size=32000,
        context_length=77,
    ),
}

# The named sizes of the LiT model's text side.
LIT_SIZES = {
    # Tests, with `tiny` encoders and the test tokenizer (200 pieces, end 1).
    "tiny": LiTSize(
        encoder="tiny",
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        intermediate_dim=64,
        vocabulary_size=200,
        sequence_length=8,
        end_token_id=1,
        projection_dim=32,
    ),
    # The released aimv2-large-patch14-224-lit (apple/ml-aim
    # `aimv2_large_lit`): CLIP's BPE vocabulary, context and end token.
    "large": LiTSize(
        encoder="large",
        hidden_dim=768,
        num_layers=12,
        num_heads=6,
        intermediate_dim=2048,
        vocabulary_size=49408,
        sequence_length=77,
        end_token_id=49407,
        projection_dim=768,
    ),
}

# `AIMV2Backbone` arguments of each named encoder size.
BACKBONE_CONFIGS = {name: size.config() for name, size in ENCODER_SIZES.items()}

# `AIMV2Pretrainer` decoder arguments of each named decoder size.
DECODER_CONFIGS = {name: size.config() for name, size in DECODER_SIZES.items()}

# `AIMV2LiTBackbone` arguments (besides the vision encoder) of each LiT size.
LIT_CONFIGS = {name: size.config() for name, size in LIT_SIZES.items()}
