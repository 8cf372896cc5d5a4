"""Infer the `AIMV2Backbone` configuration of a checkpoint.

Shapes give everything but the head count: width, channels and patch size
from the patch projection, depth from the block indices, SwiGLU width from
the first gate projection, image size from the position embedding. A
`config.json` beside the weights gives the head count and RMSNorm epsilon,
and must agree with the shapes. The configuration of a LiT model's
attention-pool head, the rest of a whole LiT model's configuration
(`infer_lit_config`: text tower, projection, logit-scale bound), and the
check of a configuration against a named preset, are here too.
"""

from keras_aimv2.conversion.errors import CheckpointError
from keras_aimv2.conversion.layouts import block_indices
from keras_aimv2.conversion.layouts import key_names
from keras_aimv2.conversion.layouts import lit_key
from keras_aimv2.conversion.layouts import source_key
from keras_aimv2.conversion.layouts import text_prefix
from keras_aimv2.models.aimv2_presets import backbone_presets

# Head width of every released AIMv2 model, used to infer the number of
# heads when neither the caller nor a config.json gives it.
RELEASED_HEAD_DIM = 128
# RMSNorm epsilon of the released models, when no config.json gives one.
DEFAULT_EPSILON = 1e-5
# Upper bound of the LiT model's logit scale (apple/ml-aim's `AIMv2LiT`
# and transformers' `Aimv2Config` default), when no config.json gives one.
DEFAULT_MAX_LOGIT_SCALE = 100.0


def shape_of(array):
    """The shape of an array as a tuple of Python ints."""
    return tuple(int(d) for d in array.shape)


def _require(tensors, key, ndim, form):
    if key not in tensors:
        raise CheckpointError(
            f"Missing key {key!r}, needed to infer the configuration."
        )
    shape = shape_of(tensors[key])
    if len(shape) != ndim:
        raise CheckpointError(
            f"Key {key!r} has shape {shape}; expected a shape of the form "
            f"{form}."
        )
    return shape


def _config_value(config_json, name, inferred, key):
    """Check a config.json entry against the value the weights give."""
    if config_json is None or config_json.get(name) is None:
        return
    value = config_json[name]
    if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        value = value[0]
    if value != inferred:
        raise CheckpointError(
            f"config.json says {name}={value!r} but the weights give "
            f"{inferred!r} (from {key!r})."
        )


def _image_shape(tensors, pos_key, patch, channels, config_json):
    """`(image_shape, position_embedding)` from the position embedding."""
    if pos_key not in tensors:
        return (None, None, channels), "sincos"
    shape = shape_of(tensors[pos_key])
    if len(shape) not in (2, 3):
        raise CheckpointError(
            f"Key {pos_key!r} has shape {shape}; expected (num_patches, "
            "hidden_dim) or (1, num_patches, hidden_dim)."
        )
    num_patches = shape[-2]
    size = (config_json or {}).get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        height, width = (int(s) for s in size)
    else:
        side = int(round(num_patches**0.5))
        height = width = side * patch
        if isinstance(size, int):
            height = width = size
    if (height // patch) * (width // patch) != num_patches:
        raise CheckpointError(
            f"Key {pos_key!r} holds {num_patches} positions, which is "
            f"not the grid of a {height}x{width} image at patch "
            f"{patch}; give the image size in config.json "
            "(`image_size`)."
        )
    if (config_json or {}).get("is_native"):
        raise CheckpointError(
            f"config.json says is_native=True but the checkpoint has a "
            f"learned position embedding {pos_key!r}."
        )
    return (height, width, channels), "learned"


def _num_heads(num_heads, config_json, width):
    """`(num_heads, where it came from)`, checked to divide `width`."""
    if num_heads is not None:
        num_heads_from = "the num_heads argument"
    elif config_json and config_json.get("num_attention_heads"):
        num_heads = int(config_json["num_attention_heads"])
        num_heads_from = "config.json"
    elif width % RELEASED_HEAD_DIM == 0:
        num_heads = width // RELEASED_HEAD_DIM
        num_heads_from = (
            f"the released head width {RELEASED_HEAD_DIM} (no num_heads "
            "argument, no config.json)"
        )
    else:
        raise CheckpointError(
            f"Cannot tell the number of heads of a {width}-wide model: pass "
            "`num_heads` (`--num-heads`) or put its config.json beside the "
            "weights."
        )
    if not isinstance(num_heads, int) or num_heads <= 0 or width % num_heads:
        raise CheckpointError(
            f"`num_heads` must be a positive divisor of the width {width}. "
            f"Received: num_heads={num_heads!r} (from {num_heads_from})."
        )
    return num_heads, num_heads_from


def infer_config(tensors, layout, prefix="", num_heads=None, config_json=None):
    """Infer the `AIMV2Backbone` arguments of a checkpoint.

    Width, channels and patch size come from the patch projection, the
    depth from the block indices, the SwiGLU width from the first gate
    projection and the image size from the position-embedding count (no
    position embedding means the native-resolution model: sine-cosine
    positions, any image size). The head count, which no shape shows, is
    `num_heads`, else config.json's `num_attention_heads`, else
    `width // 128` (the head width of every released model). The RMSNorm
    epsilon is config.json's `rms_norm_eps`, else `1e-5`.

    Args:
        tensors: dict from key to array. The checkpoint.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the encoder's keys. Defaults to `""`.
        num_heads: int or `None`. Number of attention heads. Defaults to
            `None`.
        config_json: dict or `None`. The checkpoint's (vision) config.
            Defaults to `None`.

    Returns:
        A tuple `(config, num_heads_from)`: the backbone arguments and a
        string saying where the head count came from.

    Raises:
        CheckpointError: when a shape needed is missing or malformed, or
            config.json contradicts the weights.

    Example:

    >>> tensors, _ = read_safetensors("model.safetensors")  # doctest: +SKIP
    >>> config, _ = infer_config(tensors, *detect_layout(tensors))
    """
    key = source_key(layout, prefix, "patch_weight")
    width, channels, patch, patch_w = _require(
        tensors, key, 4, "(hidden_dim, channels, patch, patch)"
    )
    if patch != patch_w:
        raise CheckpointError(
            f"Key {key!r} has shape {(width, channels, patch, patch_w)}; "
            "expected a square patch (hidden_dim, channels, patch, patch)."
        )
    _config_value(config_json, "hidden_size", width, key)
    _config_value(config_json, "patch_size", patch, key)
    _config_value(config_json, "num_channels", channels, key)

    indices = block_indices(tensors, layout, prefix)
    if not indices:
        block = key_names(layout)["block"]
        raise CheckpointError(
            "The checkpoint has no transformer blocks: no key starts with "
            f"{prefix + block.format('N')!r}."
        )
    num_layers = max(indices) + 1
    _config_value(
        config_json, "num_hidden_layers", num_layers, "the block indices"
    )

    gate_key = source_key(layout, prefix, "gate", block=0)
    intermediate_dim = _require(
        tensors, gate_key, 2, "(intermediate_dim, hidden_dim)"
    )[0]
    _config_value(config_json, "intermediate_size", intermediate_dim, gate_key)

    image_shape, position_embedding = _image_shape(
        tensors,
        source_key(layout, prefix, "pos_embed"),
        patch,
        channels,
        config_json,
    )
    num_heads, num_heads_from = _num_heads(num_heads, config_json, width)
    epsilon = DEFAULT_EPSILON
    if config_json and config_json.get("rms_norm_eps") is not None:
        epsilon = float(config_json["rms_norm_eps"])
    config = {
        "image_shape": image_shape,
        "patch_size": patch,
        "hidden_dim": width,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "intermediate_dim": intermediate_dim,
        "position_embedding": position_embedding,
        "layer_norm_epsilon": epsilon,
    }
    return config, num_heads_from


def head_config(tensors, layout, prefix):
    """`(output_dim, use_bias)` of a LiT model's attention-pool head.

    Args:
        tensors: dict from key to array. The checkpoint.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the encoder's keys.

    Returns:
        A tuple `(output_dim, use_bias)`, or `None` when the checkpoint
        has no `head.*` key.

    Example:

    >>> head_config(tensors, "transformers", "vision_model.")  # doctest: +SKIP
    (768, False)
    """
    if not any(k.startswith(prefix + "head.") for k in tensors):
        return None
    key = source_key(layout, prefix, "head_output") + "weight"
    output_dim = _require(tensors, key, 2, "(output_dim, hidden_dim)")[0]
    use_bias = any(
        source_key(layout, prefix, role) + "bias" in tensors
        for role in ("head_key", "head_value")
    )
    return output_dim, use_bias


def _text_num_heads(num_heads, text_json, width):
    """`(num_heads, where it came from)` of the text tower."""
    if num_heads is not None:
        num_heads_from = "the num_text_heads argument"
    elif text_json.get("num_attention_heads"):
        num_heads = int(text_json["num_attention_heads"])
        num_heads_from = "config.json (text_config.num_attention_heads)"
    elif width % RELEASED_HEAD_DIM == 0:
        num_heads = width // RELEASED_HEAD_DIM
        num_heads_from = (
            f"the released head width {RELEASED_HEAD_DIM} (no "
            "num_text_heads argument, no text_config in config.json)"
        )
    else:
        raise CheckpointError(
            f"Cannot tell the number of heads of a {width}-wide text tower: "
            "pass `num_text_heads` (`--num-text-heads`) or put the "
            "checkpoint's config.json (with a `text_config`) beside the "
            "weights."
        )
    if not isinstance(num_heads, int) or num_heads <= 0 or width % num_heads:
        raise CheckpointError(
            "`num_text_heads` must be a positive divisor of the text width "
            f"{width}. Received: num_text_heads={num_heads!r} (from "
            f"{num_heads_from})."
        )
    return num_heads, num_heads_from


def _end_token_id(text_json, vocabulary_size):
    """`(end_token_id, where it came from)` of the text tower."""
    value = text_json.get("eos_token_id")
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if value is None:
        return vocabulary_size - 1, (
            "the last id of the vocabulary (CLIP's `<|endoftext|>`, as in "
            "the released model; no eos_token_id in config.json)"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(
            "config.json's text_config.eos_token_id must be one integer id. "
            f"Received: eos_token_id={value!r}"
        )
    if not 0 <= value < vocabulary_size:
        raise CheckpointError(
            f"config.json says text_config.eos_token_id={value}, outside "
            f"the text vocabulary of {vocabulary_size} tokens."
        )
    return value, "config.json (text_config.eos_token_id)"


def infer_lit_config(
    tensors,
    layout,
    vision_config,
    num_text_heads=None,
    checkpoint_config=None,
):
    """Infer the `AIMV2LiTBackbone` arguments other than its image tower.

    From the shapes: the text vocabulary and width (token embedding), the
    context length (text position embedding), the depth (text block
    indices), the SwiGLU width (first text gate projection) and the
    projection width (image projection). No shape shows the rest, which
    come from config.json's `text_config` (and top level) when there is
    one, else from the released model's values:

    - `text_num_heads`: `num_text_heads`, else
      `text_config.num_attention_heads`, else `width // 128` (the released
      text tower: 6 heads of 128 at width 768);
    - `end_token_id`: `text_config.eos_token_id`, else the last id of the
      vocabulary (CLIP's `<|endoftext|>`, 49407 of 49408);
    - `max_logit_scale`: `max_logit_scale`, else 100;
    - `layer_norm_epsilon`: `text_config.rms_norm_eps`, else `1e-5`;
    - `pool_num_heads`: the image tower's head count (both Apple's
      `AIMv2LiT` and transformers' `Aimv2Model` pool with it).

    Args:
        tensors: dict from key to array. The checkpoint.
        layout: str. One of `LAYOUTS`.
        vision_config: dict. The image tower's `AIMV2Backbone` arguments
            (`infer_config`).
        num_text_heads: int or `None`. Number of attention heads of the
            text tower. Defaults to `None`.
        checkpoint_config: dict or `None`. The checkpoint's whole
            config.json (`read_checkpoint_config`). Defaults to `None`.

    Returns:
        A tuple `(config, sources)`: the `AIMV2LiTBackbone` arguments but
        `vision_encoder` (and `dtype`), and a dict saying where each value
        no shape shows came from.

    Raises:
        CheckpointError: when a shape needed is missing or malformed, or
            config.json contradicts the weights.

    Example:

    >>> config, sources = infer_lit_config(  # doctest: +SKIP
    ...     tensors, "apple", vision_config
    ... )
    >>> config["text_num_heads"], sources["text_num_heads"]
    (6, 'the released head width 128 (...)')
    """
    whole_json = checkpoint_config or {}
    text_json = whole_json.get("text_config") or {}
    prefix = text_prefix(layout)

    def key(role, block=None):
        return source_key(layout, prefix, role, block, tower="text")

    embedding_key = key("token_embedding")
    vocabulary_size, width = _require(
        tensors, embedding_key, 2, "(vocabulary_size, hidden_dim)"
    )
    _config_value(text_json, "vocab_size", vocabulary_size, embedding_key)
    _config_value(text_json, "hidden_size", width, embedding_key)
    position_key = key("text_pos_embed")
    sequence_length, position_width = _require(
        tensors, position_key, 2, "(context_length, hidden_dim)"
    )
    if position_width != width:
        raise CheckpointError(
            f"Key {position_key!r} has shape "
            f"{(sequence_length, position_width)}; expected "
            f"(context_length, {width}), the width of {embedding_key!r}."
        )
    _config_value(
        text_json, "max_position_embeddings", sequence_length, position_key
    )
    indices = block_indices(tensors, layout, prefix, tower="text")
    if not indices:
        block = key_names(layout, "text")["block"]
        raise CheckpointError(
            "The text tower has no transformer blocks: no key starts with "
            f"{prefix + block.format('N')!r}."
        )
    num_layers = max(indices) + 1
    _config_value(
        text_json, "num_hidden_layers", num_layers, "the text block indices"
    )
    gate_key = key("gate", 0)
    intermediate_dim = _require(
        tensors, gate_key, 2, "(intermediate_dim, hidden_dim)"
    )[0]
    _config_value(text_json, "intermediate_size", intermediate_dim, gate_key)
    projection_key = lit_key(layout, "image_projection")
    projection_dim = _require(
        tensors, projection_key, 2, "(projection_dim, image_width)"
    )[0]
    _config_value(whole_json, "projection_dim", projection_dim, projection_key)

    num_heads, num_heads_from = _text_num_heads(
        num_text_heads, text_json, width
    )
    end_token_id, end_token_from = _end_token_id(text_json, vocabulary_size)
    max_logit_scale = DEFAULT_MAX_LOGIT_SCALE
    max_logit_scale_from = "the released model's value (no config.json)"
    if whole_json.get("max_logit_scale") is not None:
        max_logit_scale = float(whole_json["max_logit_scale"])
        max_logit_scale_from = "config.json"
    epsilon = DEFAULT_EPSILON
    if text_json.get("rms_norm_eps") is not None:
        epsilon = float(text_json["rms_norm_eps"])
    config = {
        "text_vocabulary_size": vocabulary_size,
        "text_sequence_length": sequence_length,
        "text_hidden_dim": width,
        "text_num_layers": num_layers,
        "text_num_heads": num_heads,
        "text_intermediate_dim": intermediate_dim,
        "end_token_id": end_token_id,
        "projection_dim": projection_dim,
        "pool_num_heads": vision_config["num_heads"],
        "max_logit_scale": max_logit_scale,
        "layer_norm_epsilon": epsilon,
    }
    sources = {
        "text_num_heads": num_heads_from,
        "end_token_id": end_token_from,
        "max_logit_scale": max_logit_scale_from,
        "pool_num_heads": "the image tower's head count",
    }
    return config, sources


def check_preset_name(name):
    """Raise unless `name` is a preset name of `backbone_presets`.

    Args:
        name: str. The `preset_name` given.

    Example:

    >>> check_preset_name("aimv2_large_patch14_224")
    """
    if name not in backbone_presets:
        raise CheckpointError(
            f"Unknown `preset_name`: {name!r}. Expected one of "
            f"{sorted(backbone_presets)}."
        )


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def check_preset_config(name, config, has_head):
    """The checkpoint must have the configuration of preset `name`.

    Args:
        name: str. A preset name of `backbone_presets`.
        config: dict. The inferred `AIMV2Backbone` arguments.
        has_head: bool. Whether the checkpoint has an attention-pool head.

    Raises:
        CheckpointError: naming every field that differs from the
            preset's.

    Example:

    >>> check_preset_config(  # doctest: +SKIP
    ...     "aimv2_large_patch14_224", config, has_head=False
    ... )
    """
    check_preset_name(name)
    entry = backbone_presets[name]
    expected = entry["config"]
    differences = [
        f"{field}={config[field]!r} (expected {expected[field]!r})"
        for field in expected
        if _as_tuple(config[field]) != _as_tuple(expected[field])
    ]
    if has_head != entry["metadata"]["has_head"]:
        differences.append(
            f"attention-pool head {'present' if has_head else 'absent'}"
        )
    if differences:
        raise CheckpointError(
            f"The checkpoint is not {entry['metadata']['source']}, the "
            f"source of preset {name!r}: {', '.join(differences)}."
        )
