"""Load a released AIMv2 checkpoint into Keras objects.

`load_checkpoint` puts the pieces together: it reads the safetensors files
(`safetensors_reader`), recognizes their layout (`layouts`), infers the
configuration (`config_inference`), checks every tensor against the weight
rules (`weight_rules`), and only then builds the `AIMV2Backbone` (and the
LiT model's `AttentionPool` head) and sets their weights. The image
converter reproducing the checkpoints' preprocessing is made here too.
"""

import dataclasses
import os

from keras_aimv2.conversion.config_inference import check_preset_config
from keras_aimv2.conversion.config_inference import head_config
from keras_aimv2.conversion.config_inference import infer_config
from keras_aimv2.conversion.layouts import detect_layout
from keras_aimv2.conversion.layouts import skipped_keys
from keras_aimv2.conversion.layouts import skipped_message
from keras_aimv2.conversion.safetensors_reader import read_config_json
from keras_aimv2.conversion.safetensors_reader import read_safetensors
from keras_aimv2.conversion.weight_rules import assign
from keras_aimv2.conversion.weight_rules import backbone_variables
from keras_aimv2.conversion.weight_rules import check_finite
from keras_aimv2.conversion.weight_rules import check_rules
from keras_aimv2.conversion.weight_rules import encoder_rules
from keras_aimv2.conversion.weight_rules import head_rules
from keras_aimv2.conversion.weight_rules import pool_variables
from keras_aimv2.layers.attention_pool import AttentionPool
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_image_converter import normalization_scale_offset

# The preprocessing of Apple's released checkpoints (CLIP statistics).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass
class ConvertedCheckpoint:
    """A checkpoint loaded into Keras objects, before it is saved.

    Attributes:
        backbone: `AIMV2Backbone` holding the checkpoint's encoder weights.
        attention_pool: `AttentionPool` holding the checkpoint's head, or
            `None` when the checkpoint has none.
        image_converter: `AIMV2ImageConverter` with the checkpoint's
            preprocessing.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the encoder's keys: `""`, or that of a LiT
            model's image tower (`"image_encoder."` or `"vision_model."`).
        config: dict. The `AIMV2Backbone` arguments inferred.
        num_heads_from: str. Where the number of heads came from.
        source_files: list of str. The safetensors files read.
        skipped_keys: list of str. Keys outside the vision encoder (a
            LiT model's text tower and projections) or holding no
            parameters, left out on purpose.
    """

    backbone: AIMV2Backbone
    attention_pool: AttentionPool | None
    image_converter: AIMV2ImageConverter
    layout: str
    prefix: str
    config: dict
    num_heads_from: str
    source_files: list
    skipped_keys: list


def checkpoint_image_converter(image_size):
    """The image converter reproducing the released checkpoints' inputs.

    Apple's checkpoints take images resized (bicubic, shorter side, then a
    full-size centre crop, i.e. crop ratio 1.0) to their resolution and
    normalized with CLIP's mean and standard deviation.

    Args:
        image_size: tuple `(height, width)` or `None`. The checkpoint's
            resolution; `None` (native-resolution model) keeps images at
            their size.

    Returns:
        An `AIMV2ImageConverter`.

    Example:

    >>> converter = checkpoint_image_converter((224, 224))
    >>> converter(np.zeros((1, 256, 320, 3), "uint8")).shape
    (1, 224, 224, 3)
    """
    scale, offset = normalization_scale_offset(CLIP_MEAN, CLIP_STD)
    return AIMV2ImageConverter(
        image_size=None if image_size is None else tuple(image_size),
        scale=scale,
        offset=offset,
        interpolation="bicubic",
        antialias=True,
        crop_to_aspect_ratio=True,
    )


def load_checkpoint(
    source, num_heads=None, preset_name=None, log=None, dtype="float32"
):
    """Load a released AIMv2 checkpoint into an `AIMV2Backbone`.

    Reads the safetensors weights, recognizes their layout, infers the
    configuration and checks every tensor (no key missing, none left
    over, every shape as the configuration requires, no NaN or infinite
    value in those converted) before building any Keras object; then sets
    every weight of the backbone (and of an `AttentionPool` for a
    `head.*`). Of a whole LiT checkpoint only the image tower and its head
    are converted: the text tower and the projections are skipped (listed
    in `skipped_keys` and logged); `load_lit_checkpoint` converts them
    all. bfloat16 weights are read exactly, as
    float32.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory.
        num_heads: int or `None`. Number of attention heads; `None` reads
            config.json beside the weights, else assumes head width 128.
            Defaults to `None`.
        preset_name: str or `None`. A preset name of `backbone_presets`; the
            checkpoint must then have that preset's configuration (checked
            before anything is built). Defaults to `None`.
        log: callable or `None`. Called with progress messages. Defaults
            to `None`.
        dtype: str or `keras.DTypePolicy`. Dtype policy of the backbone and
            head built, e.g. `"mixed_bfloat16"` to compute in bfloat16
            (the weights stay float32 under a mixed policy). Defaults to
            `"float32"`.

    Returns:
        A `ConvertedCheckpoint`.

    Raises:
        CheckpointError: when the checkpoint cannot be converted exactly.

    Example:

    >>> converted = load_checkpoint("aimv2-large-patch14-224")  # doctest: +SKIP
    >>> converted.backbone(images).shape
    (1, 256, 1024)
    """
    log = log or (lambda message: None)
    source = os.fspath(source)
    tensors, files = read_safetensors(source)
    log(f"Read {len(tensors)} tensors from {len(files)} file(s).")
    layout, prefix = detect_layout(tensors)
    config, num_heads_from = infer_config(
        tensors, layout, prefix, num_heads, read_config_json(source)
    )
    log(
        f"Layout: {layout}{f' (prefix {prefix!r})' if prefix else ''}; "
        f"configuration: {config} (heads from {num_heads_from})."
    )
    rules = encoder_rules(layout, prefix, config)
    head = head_config(tensors, layout, prefix)
    pool_rules = []
    if head is not None:
        pool_rules = head_rules(layout, prefix, config["hidden_dim"], *head)
    skipped = skipped_keys(tensors, layout, prefix)
    check_rules(rules + pool_rules, tensors, skipped, "AIMV2Backbone")
    check_finite(
        tensors,
        [key for rule in rules + pool_rules for key in rule.keys],
        files,
    )
    if preset_name is not None:
        check_preset_config(preset_name, config, head is not None)
    if skipped:
        log(skipped_message(skipped, prefix))

    backbone = AIMV2Backbone(**config, dtype=dtype)
    assign(backbone, backbone_variables(backbone), rules, tensors)
    pool = None
    if head is not None:
        output_dim, use_bias = head
        pool = AttentionPool(
            num_heads=config["num_heads"],
            output_dim=output_dim,
            use_bias=use_bias,
            dtype=dtype,
            name="attention_pool",
        )
        pool.build((None, None, config["hidden_dim"]))
        assign(pool, pool_variables(pool), pool_rules, tensors)
    log(
        f"Set {len(backbone.weights)} backbone weights "
        f"({backbone.count_params():,} parameters)"
        + (
            f" and the attention-pool head's {len(pool.weights)}."
            if pool
            else "."
        )
    )
    learned = config["position_embedding"] == "learned"
    image_size = config["image_shape"][:2] if learned else None
    return ConvertedCheckpoint(
        backbone=backbone,
        attention_pool=pool,
        image_converter=checkpoint_image_converter(image_size),
        layout=layout,
        prefix=prefix,
        config=config,
        num_heads_from=num_heads_from,
        source_files=[os.path.abspath(f) for f in files],
        skipped_keys=skipped,
    )
