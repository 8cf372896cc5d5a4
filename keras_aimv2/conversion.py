"""Convert released AIMv2 checkpoints (safetensors) into keras-hub presets.

Reads the weights of an AIMv2 vision encoder in any of the three layouts
it is published in: Apple's own (`preprocessor.patchifier.proj.weight`,
`trunk.blocks.N...`), Hugging Face transformers' `Aimv2VisionModel`
(`embeddings.patch_embed.weight`, `encoder.layers.N...`) and timm's
(`patch_embed.proj.weight`, `blocks.N...`). The LiT model's image tower
is also read out of the whole image-text checkpoint: under
`image_encoder.` in Apple's `AIMv2LiT` (Apple's or timm's names; its
attention-pool head as `head.cls_token`, `head.k`, `head.v`,
`head.linear`) and under `vision_model.` in transformers' CLIP-style
`Aimv2Model` (head `head.cls_token`, `head.k_proj`, `head.v_proj`,
`head.output_proj`). Their text towers and projections are not converted:
they are skipped, and listed in `conversion.json`.

The configuration is inferred from the tensor shapes (and from a
`config.json` beside the weights when there is one), every tensor is
checked and mapped onto `AIMV2Backbone`, and the result is written as a
keras-hub preset directory together with the checkpoint's image converter
(CLIP mean and standard deviation, bicubic resize, crop 1.0). Only
safetensors files are read; pickled checkpoints are refused.

Command line (`python -m keras_aimv2.conversion` takes the same
arguments):

```
aimv2 convert SOURCE OUTPUT_DIR [--num-heads N] [--preset-name NAME]
    [--overwrite]
```
"""

import argparse
import dataclasses
import glob
import json
import os
import re
import shutil
import struct
import sys
import tempfile

import keras
import numpy as np
from safetensors import safe_open

from keras_aimv2.layers.attention_pool import AttentionPool
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_image_converter import normalization_scale_offset
from keras_aimv2.models.aimv2_presets import backbone_presets
from keras_aimv2.models.aimv2_presets import preset_directory

# The preprocessing of Apple's released checkpoints (CLIP statistics).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

LAYOUTS = ("apple", "transformers", "timm")
CONVERSION_FILE = "conversion.json"
ATTENTION_POOL_CONFIG_FILE = "attention_pool.json"
ATTENTION_POOL_WEIGHTS_FILE = "attention_pool.weights.h5"
# Head width of every released AIMv2 model, used to infer the number of
# heads when neither the caller nor a config.json gives it.
RELEASED_HEAD_DIM = 128

# The attention-pool head in apple/ml-aim's names (`AIMv2LiT`'s image
# head); the `head_key`, `head_value` and `head_output` linear layers are
# followed by `weight` or `bias`.
_ML_AIM_HEAD = {
    "head_query": "head.cls_token",
    "head_key": "head.k.",
    "head_value": "head.v.",
    "head_output": "head.linear.",
}
# Source tensor names of each layout. `block` is the prefix of block `i`;
# the per-block names follow it; the `head_*` names are those of the
# LiT model's attention-pool head.
_NAMES = {
    "apple": {
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
        **_ML_AIM_HEAD,
    },
    "transformers": {
        "patch_weight": "embeddings.patch_embed.weight",
        "patch_bias": "embeddings.patch_embed.bias",
        "patch_norm": "embeddings.rms_norm.weight",
        "pos_embed": "embeddings.position_embedding.weight",
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
        "head_query": "head.cls_token",
        "head_key": "head.k_proj.",
        "head_value": "head.v_proj.",
        "head_output": "head.output_proj.",
    },
    "timm": {
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
        **_ML_AIM_HEAD,
    },
}
# Prefixes under which each layout may be stored: the image tower of a
# LiT model, Apple's `AIMv2LiT` or transformers' `Aimv2Model`.
_PREFIXES = {
    "apple": ("", "image_encoder."),
    "transformers": ("", "vision_model."),
    "timm": ("", "image_encoder."),
}
# Top-level names of a LiT model outside its image tower, by the prefix
# of that tower: its text tower and projections (and logit scale), skipped
# (and recorded).
_NON_VISION_NAMES = {
    "image_encoder.": (
        "text_encoder",
        "image_projector",
        "text_projector",
        "log_logit_scale",
    ),
    "vision_model.": (
        "text_model",
        "text_projection",
        "visual_projection",
        "logit_scale",
    ),
}
# Buffers some exports store that hold no parameters.
_BUFFERS = {"transformers": ("embeddings.position_ids",)}


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted exactly into `AIMV2Backbone`."""


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


# === Reading safetensors ===


def safetensors_files(source):
    """The safetensors files of a checkpoint file or directory.

    Args:
        source: str. A `.safetensors` file, or a directory holding
            `model.safetensors`, or the shards `model-0000x-of-0000y
            .safetensors` with or without `model.safetensors.index.json`.

    Returns:
        A list of file paths (str).

    Example:

    >>> safetensors_files("aimv2-large-patch14-224")  # doctest: +SKIP
    ['aimv2-large-patch14-224/model.safetensors']
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(
            f"The checkpoint `source` does not exist. Received: "
            f"source={source!r}"
        )
    if os.path.isfile(source):
        if not source.endswith(".safetensors"):
            raise CheckpointError(
                "Only safetensors checkpoints are read (pickled `.bin`, "
                "`.pt` or `.pth` files are refused). Received: "
                f"source={source!r}"
            )
        return [source]
    index = os.path.join(source, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(
                f"{index} has no `weight_map` naming the shard of each key."
            )
        files = sorted(set(weight_map.values()))
        paths = [os.path.join(source, name) for name in files]
        absent = [p for p in paths if not os.path.exists(p)]
        if absent:
            raise CheckpointError(
                f"{index} names shards that do not exist: {absent}"
            )
        return paths
    single = os.path.join(source, "model.safetensors")
    if os.path.exists(single):
        return [single]
    shards = sorted(glob.glob(os.path.join(source, "model-*-of-*.safetensors")))
    if shards:
        totals = {
            re.search(r"-of-(\d+)\.safetensors$", s).group(1) for s in shards
        }
        if len(totals) != 1 or int(totals.pop()) != len(shards):
            raise CheckpointError(
                f"Incomplete set of shards in {source}: found "
                f"{[os.path.basename(s) for s in shards]}."
            )
        return shards
    others = sorted(glob.glob(os.path.join(source, "*.safetensors")))
    if len(others) == 1:
        return others
    raise CheckpointError(
        f"No checkpoint found in {source}: expected `model.safetensors` or "
        "sharded `model-0000x-of-0000y.safetensors` files. Found: "
        f"{sorted(os.listdir(source))[:10]}"
    )


def _read_bfloat16(path, keys):
    """Read bfloat16 tensors as float32 (NumPy has no bfloat16 type)."""
    tensors = {}
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
        for key in keys:
            start, end = header[key]["data_offsets"]
            f.seek(8 + header_size + start)
            raw = np.frombuffer(f.read(end - start), dtype="<u2")
            values = (raw.astype(np.uint32) << 16).view(np.float32)
            tensors[key] = values.reshape(header[key]["shape"])
    return tensors


def read_safetensors(source):
    """Read every tensor of a checkpoint as NumPy arrays.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory (see
            `safetensors_files`).

    Returns:
        A tuple `(tensors, files)`: a dict from key to `np.ndarray` and the
        list of files read.

    Example:

    >>> tensors, files = read_safetensors("model.safetensors")  # doctest: +SKIP
    """
    files = safetensors_files(source)
    tensors, origin = {}, {}
    for path in files:
        bfloat16_keys = []
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():
                if key in tensors or key in bfloat16_keys:
                    raise CheckpointError(
                        f"Key {key!r} is stored twice: in {origin[key]} and "
                        f"in {path}."
                    )
                origin[key] = path
                if f.get_slice(key).get_dtype() == "BF16":
                    bfloat16_keys.append(key)
                else:
                    tensors[key] = f.get_tensor(key)
        tensors.update(_read_bfloat16(path, bfloat16_keys))
    index = os.path.join(source, "model.safetensors.index.json")
    if os.path.isdir(source) and os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            indexed = set(json.load(f)["weight_map"])
        if indexed != set(tensors):
            raise CheckpointError(
                f"{index} does not list the keys of its shards: indexed but "
                f"absent {sorted(indexed - set(tensors))[:10]}, present but "
                f"not indexed {sorted(set(tensors) - indexed)[:10]}."
            )
    return tensors, files


def _read_config_json(source):
    """The (vision) config.json beside the weights, or `None`."""
    directory = source if os.path.isdir(source) else os.path.dirname(source)
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict) or "registered_name" in config:
        return None  # Not a checkpoint's config (e.g. a keras-hub preset).
    if isinstance(config.get("vision_config"), dict):
        config = config["vision_config"]
    return config


# === Layout and configuration ===


def detect_layout(keys):
    """Recognize the layout of a checkpoint from its keys.

    Args:
        keys: iterable of str. The checkpoint's tensor names.

    Returns:
        A tuple `(layout, prefix)`: one of `LAYOUTS` and the prefix of the
        encoder's keys (`"image_encoder."` for Apple's `AIMv2LiT`,
        `"vision_model."` for transformers' CLIP-style `Aimv2Model`, else
        `""`).

    Example:

    >>> detect_layout(["trunk.post_trunk_norm.weight",
    ...                "preprocessor.patchifier.proj.weight"])
    ('apple', '')
    >>> detect_layout(["image_encoder.patch_embed.proj.weight",
    ...                "text_encoder.trunk.post_trunk_norm.weight"])
    ('timm', 'image_encoder.')
    """
    keys = set(keys)
    found = [
        (layout, prefix)
        for layout in LAYOUTS
        for prefix in _PREFIXES[layout]
        if prefix + _NAMES[layout]["patch_weight"] in keys
    ]
    if len(found) != 1:
        seen = sorted(keys)[:8]
        markers = {layout: _NAMES[layout]["patch_weight"] for layout in LAYOUTS}
        prefixes = {
            layout: [p for p in _PREFIXES[layout] if p] for layout in LAYOUTS
        }
        problem = (
            f"matches several layouts {found}" if found else "is not recognized"
        )
        raise CheckpointError(
            f"The checkpoint layout {problem}: expected exactly one of the "
            f"keys {markers}, either alone or under the prefix of a LiT "
            f"model's image tower {prefixes}. "
            f"Keys seen ({len(keys)} in all): {seen}"
        )
    return found[0]


def _shape(array):
    return tuple(int(d) for d in array.shape)


def _require(tensors, key, ndim, form):
    if key not in tensors:
        raise CheckpointError(
            f"Missing key {key!r}, needed to infer the configuration."
        )
    shape = _shape(tensors[key])
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

    Example:

    >>> tensors, _ = read_safetensors("model.safetensors")  # doctest: +SKIP
    >>> config, _ = infer_config(tensors, *detect_layout(tensors))
    """
    names = _NAMES[layout]
    key = prefix + names["patch_weight"]
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

    block_pattern = re.compile(
        re.escape(prefix + names["block"]).replace(r"\{\}", r"(\d+)")
    )
    indices = {int(m.group(1)) for m in map(block_pattern.match, tensors) if m}
    if not indices:
        raise CheckpointError(
            "The checkpoint has no transformer blocks: no key starts with "
            f"{prefix + names['block'].format('N')!r}."
        )
    num_layers = max(indices) + 1
    _config_value(
        config_json, "num_hidden_layers", num_layers, "the block indices"
    )

    gate_key = prefix + names["block"].format(0) + names["gate"]
    intermediate_dim = _require(
        tensors, gate_key, 2, "(intermediate_dim, hidden_dim)"
    )[0]
    _config_value(config_json, "intermediate_size", intermediate_dim, gate_key)

    pos_key = prefix + names["pos_embed"]
    if pos_key in tensors:
        shape = _shape(tensors[pos_key])
        if len(shape) not in (2, 3):
            raise CheckpointError(
                f"Key {pos_key!r} has shape {shape}; expected (num_patches, "
                "hidden_dim) or (1, num_patches, hidden_dim)."
            )
        num_patches = shape[-2]
        size = (config_json or {}).get("image_size")
        if isinstance(size, (list, tuple)) and len(size) == 2:
            height, width_px = (int(s) for s in size)
        else:
            side = int(round(num_patches**0.5))
            height = width_px = side * patch
            if isinstance(size, int):
                height = width_px = size
        if (height // patch) * (width_px // patch) != num_patches:
            raise CheckpointError(
                f"Key {pos_key!r} holds {num_patches} positions, which is "
                f"not the grid of a {height}x{width_px} image at patch "
                f"{patch}; give the image size in config.json "
                "(`image_size`)."
            )
        image_shape = (height, width_px, channels)
        position_embedding = "learned"
        if (config_json or {}).get("is_native"):
            raise CheckpointError(
                f"config.json says is_native=True but the checkpoint has a "
                f"learned position embedding {pos_key!r}."
            )
    else:
        image_shape = (None, None, channels)
        position_embedding = "sincos"

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

    epsilon = 1e-5
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


# === Mapping rules ===


@dataclasses.dataclass
class _Rule:
    """One Keras weight, made from source tensors of known shapes."""

    target: str
    keys: tuple
    shapes: tuple
    combine: object


def _linear(w):
    return w.T  # torch (out, in) -> Keras (in, out)


def _fused_linear(*ws):
    return np.concatenate(ws, axis=0).T


def _same(w):
    return w


def _encoder_rules(layout, prefix, config, has_pos_embed):
    names = _NAMES[layout]
    d = config["hidden_dim"]
    h = config["intermediate_dim"]
    p = config["patch_size"]
    c = config["image_shape"][-1]

    def conv(w):
        # (D, C, p, p) -> (p, p, C, D) -> rows in (row, column, channel).
        return w.transpose(2, 3, 1, 0).reshape(p * p * c, d)

    def key(name, block=None):
        start = (
            prefix if block is None else prefix + names["block"].format(block)
        )
        return start + names[name]

    rules = [
        _Rule(
            "patch_embedding.projection.kernel",
            (key("patch_weight"),),
            ((d, c, p, p),),
            conv,
        ),
        _Rule(
            "patch_embedding.projection.bias",
            (key("patch_bias"),),
            ((d,),),
            _same,
        ),
        _Rule(
            "patch_embedding.norm.scale", (key("patch_norm"),), ((d,),), _same
        ),
    ]
    if has_pos_embed:
        height, width, _ = config["image_shape"]
        n = (height // p) * (width // p)
        shape = (n, d) if layout == "transformers" else (1, n, d)
        rules.append(
            _Rule(
                "patch_embedding.position_embedding",
                (key("pos_embed"),),
                (shape,),
                lambda w: w.reshape(n, d),
            )
        )
    for i in range(config["num_layers"]):
        block = f"encoder.block_{i}."
        if layout == "transformers":
            qkv_keys = tuple(key(n, i) for n in ("q", "k", "v"))
            qkv_shapes = ((d, d),) * 3
        else:
            qkv_keys, qkv_shapes = (key("qkv", i),), ((3 * d, d),)
        rules += [
            _Rule(
                block + "attention_norm.scale",
                (key("attn_norm", i),),
                ((d,),),
                _same,
            ),
            _Rule(
                block + "attention.qkv.kernel",
                qkv_keys,
                qkv_shapes,
                _fused_linear,
            ),
            _Rule(
                block + "attention.output_projection.kernel",
                (key("proj", i),),
                ((d, d),),
                _linear,
            ),
            _Rule(
                block + "feed_forward_norm.scale",
                (key("ffn_norm", i),),
                ((d,),),
                _same,
            ),
            _Rule(
                block + "feed_forward.gate_up.kernel",
                (key("gate", i), key("up", i)),
                ((h, d), (h, d)),
                _fused_linear,
            ),
            _Rule(
                block + "feed_forward.down.kernel",
                (key("down", i),),
                ((d, h),),
                _linear,
            ),
        ]
    rules.append(
        _Rule("encoder.final_norm.scale", (key("final_norm"),), ((d,),), _same)
    )
    return rules


def _head_config(tensors, layout, prefix):
    """`(output_dim, use_bias)` of a `head.*` attention pool, or `None`."""
    names = _NAMES[layout]
    if not any(k.startswith(prefix + "head.") for k in tensors):
        return None
    key = prefix + names["head_output"] + "weight"
    output_dim = _require(tensors, key, 2, "(output_dim, hidden_dim)")[0]
    use_bias = any(
        prefix + names[name] + "bias" in tensors
        for name in ("head_key", "head_value")
    )
    return output_dim, use_bias


def _head_rules(layout, prefix, hidden_dim, output_dim, use_bias):
    names, d = _NAMES[layout], hidden_dim
    output = prefix + names["head_output"]
    rules = [
        _Rule(
            "head.query",
            (prefix + names["head_query"],),
            ((1, 1, d),),
            lambda w: w.reshape(1, d),
        ),
        _Rule(
            "head.output_projection.kernel",
            (output + "weight",),
            ((output_dim, d),),
            _linear,
        ),
        _Rule(
            "head.output_projection.bias",
            (output + "bias",),
            ((output_dim,),),
            _same,
        ),
    ]
    for ours, theirs in (("key", "head_key"), ("value", "head_value")):
        linear = prefix + names[theirs]
        rules.append(
            _Rule(
                f"head.{ours}.kernel", (linear + "weight",), ((d, d),), _linear
            )
        )
        if use_bias:
            rules.append(
                _Rule(f"head.{ours}.bias", (linear + "bias",), ((d,),), _same)
            )
    return rules


def _skipped_keys(tensors, layout, prefix):
    skipped = []
    for key in tensors:
        if prefix and not key.startswith(prefix):
            if key.split(".")[0] in _NON_VISION_NAMES[prefix]:
                skipped.append(key)
        elif key[len(prefix) :] in _BUFFERS.get(layout, ()):
            skipped.append(key)
    return sorted(skipped)


def _skipped_message(skipped, prefix):
    """Say which keys are skipped, and why, in one log line."""
    outside, buffers = {}, []
    for key in skipped:
        if key.startswith(prefix):
            buffers.append(key)
        else:
            outside.setdefault(key.split(".")[0], []).append(key)
    parts = []
    if outside:
        groups = ", ".join(
            keys[0] if len(keys) == 1 else f"{name}.* ({len(keys)} keys)"
            for name, keys in outside.items()
        )
        parts.append(
            "the LiT model's text tower and projections, which are not "
            f"converted (only its image tower `{prefix}*` is): {groups}"
        )
    if buffers:
        parts.append(f"buffers holding no parameters: {', '.join(buffers)}")
    noun = "key" if len(skipped) == 1 else "keys"
    return f"Skipping {len(skipped)} {noun}: {'; '.join(parts)}."


def _check_rules(rules, tensors, skipped, description):
    """Every rule's keys present with their shapes; no key left over."""
    problems = []
    used = set()
    for rule in rules:
        for key, shape in zip(rule.keys, rule.shapes, strict=True):
            used.add(key)
            if key not in tensors:
                problems.append(
                    f"missing key {key!r}: expected shape {shape} for "
                    f"{description} weight {rule.target!r}"
                )
            elif _shape(tensors[key]) != shape:
                problems.append(
                    f"key {key!r} has shape {_shape(tensors[key])}; expected "
                    f"{shape} for {description} weight {rule.target!r}"
                )
    extra = sorted(set(tensors) - used - set(skipped))
    for key in extra:
        problems.append(
            f"unexpected key {key!r} with shape {_shape(tensors[key])}: "
            f"{description} has no weight for it"
        )
    if problems:
        raise CheckpointError(
            f"The checkpoint does not match {description} "
            f"({len(problems)} problems):{_listed(problems)}"
        )


def _listed(problems, shown=20):
    """The first `shown` problems, each on an indented line, and the rest."""
    more = len(problems) - shown
    return "".join(f"\n  {problem}" for problem in problems[:shown]) + (
        f"\n  ... and {more} more" if more > 0 else ""
    )


def _check_finite(tensors, keys, files):
    """Refuse NaN or infinite values in the tensors `keys` to convert."""
    bad = {}
    for key in keys:
        value = tensors[key]
        if np.issubdtype(value.dtype, np.floating):
            finite = np.count_nonzero(np.isfinite(value))
            if finite < value.size:
                bad[key] = value.size - finite
    if not bad:
        return
    origin = dict.fromkeys(bad, files[0])
    if len(files) > 1:
        for path in files:
            with safe_open(path, framework="numpy") as f:
                origin.update({key: path for key in f.keys() if key in bad})
    problems = [
        f"{key!r} in {origin[key]}: {count} of {tensors[key].size} values"
        for key, count in sorted(bad.items())
    ]
    raise CheckpointError(
        f"The checkpoint holds NaN or infinite values in {len(bad)} "
        "tensor(s), so it is not converted (the file is damaged or the "
        f"training it comes from diverged):{_listed(problems)}"
    )


def _backbone_variables(backbone):
    """Every weight of the backbone under its conversion name."""
    embedding = backbone.patch_embedding
    variables = {
        "patch_embedding.projection.kernel": embedding.projection.kernel,
        "patch_embedding.projection.bias": embedding.projection.bias,
        "patch_embedding.norm.scale": embedding.norm.scale,
    }
    if embedding.position_embedding_type == "learned":
        variables["patch_embedding.position_embedding"] = (
            embedding.position_embedding
        )
    for i, block in enumerate(backbone.encoder.blocks):
        prefix = f"encoder.block_{i}."
        variables.update(
            {
                prefix + "attention_norm.scale": block.attention_norm.scale,
                prefix + "attention.qkv.kernel": block.attention.qkv.kernel,
                prefix + "attention.output_projection.kernel": (
                    block.attention.output_projection.kernel
                ),
                prefix
                + "feed_forward_norm.scale": block.feed_forward_norm.scale,
                prefix + "feed_forward.gate_up.kernel": (
                    block.feed_forward.gate_up.kernel
                ),
                prefix
                + "feed_forward.down.kernel": block.feed_forward.down.kernel,
            }
        )
    variables["encoder.final_norm.scale"] = backbone.encoder.final_norm.scale
    return variables


def _pool_variables(pool):
    variables = {
        "head.query": pool.query,
        "head.key.kernel": pool.key.kernel,
        "head.value.kernel": pool.value.kernel,
        "head.output_projection.kernel": pool.output_projection.kernel,
        "head.output_projection.bias": pool.output_projection.bias,
    }
    if pool.use_bias:
        variables["head.key.bias"] = pool.key.bias
        variables["head.value.bias"] = pool.value.bias
    return variables


def _assign(layer, variables, rules, tensors):
    """Set every weight of `layer` from its rule, after checking coverage.

    The source tensors used are removed from `tensors`.
    """
    covered = {id(v) for v in variables.values()}
    unmapped = [w.path for w in layer.weights if id(w) not in covered]
    targets = {rule.target for rule in rules}
    if unmapped or targets != set(variables):
        raise RuntimeError(
            f"Internal error: the conversion rules do not cover "
            f"{type(layer).__name__} exactly. Weights without a rule: "
            f"{unmapped + sorted(set(variables) - targets)}; rules without "
            f"a weight: {sorted(targets - set(variables))}."
        )
    for rule in rules:
        # Each source tensor feeds one weight: release it once used.
        value = rule.combine(*(tensors.pop(k) for k in rule.keys))
        value = np.ascontiguousarray(value, dtype="float32")
        variable = variables[rule.target]
        if _shape(value) != tuple(variable.shape):
            raise RuntimeError(
                f"Internal error: {rule.target!r} converts to shape "
                f"{_shape(value)}, but the Keras weight has shape "
                f"{tuple(variable.shape)}."
            )
        variable.assign(value)


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


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _check_preset_name(name, config, has_head):
    """The checkpoint must have the configuration of preset `name`."""
    if name not in backbone_presets:
        raise CheckpointError(
            f"Unknown `preset_name`: {name!r}. Expected one of "
            f"{sorted(backbone_presets)}."
        )
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


def load_checkpoint(source, num_heads=None, preset_name=None, log=None):
    """Load a released AIMv2 checkpoint into an `AIMV2Backbone`.

    Reads the safetensors weights, recognizes their layout, infers the
    configuration and checks every tensor (no key missing, none left
    over, every shape as the configuration requires, no NaN or infinite
    value in those converted) before building any Keras object; then sets
    every weight of the backbone (and of an `AttentionPool` for a
    `head.*`). Of a whole LiT checkpoint only the image tower and its head
    are converted: the text tower and the projections are skipped (listed
    in `skipped_keys` and logged).

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

    Returns:
        A `ConvertedCheckpoint`.

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
    config_json = _read_config_json(source)
    config, num_heads_from = infer_config(
        tensors, layout, prefix, num_heads, config_json
    )
    log(
        f"Layout: {layout}{f' (prefix {prefix!r})' if prefix else ''}; "
        f"configuration: {config} (heads from {num_heads_from})."
    )
    has_pos = config["position_embedding"] == "learned"
    rules = _encoder_rules(layout, prefix, config, has_pos)
    head = _head_config(tensors, layout, prefix)
    head_rules = []
    if head is not None:
        head_rules = _head_rules(layout, prefix, config["hidden_dim"], *head)
    skipped = _skipped_keys(tensors, layout, prefix)
    _check_rules(rules + head_rules, tensors, skipped, "AIMV2Backbone")
    _check_finite(
        tensors,
        [key for rule in rules + head_rules for key in rule.keys],
        files,
    )
    if preset_name is not None:
        _check_preset_name(preset_name, config, head is not None)
    if skipped:
        log(_skipped_message(skipped, prefix))

    backbone = AIMV2Backbone(**config, dtype="float32")
    _assign(backbone, _backbone_variables(backbone), rules, tensors)
    pool = None
    if head is not None:
        output_dim, use_bias = head
        pool = AttentionPool(
            num_heads=config["num_heads"],
            output_dim=output_dim,
            use_bias=use_bias,
            dtype="float32",
            name="attention_pool",
        )
        pool.build((None, None, config["hidden_dim"]))
        _assign(pool, _pool_variables(pool), head_rules, tensors)
    log(
        f"Set {len(backbone.weights)} backbone weights "
        f"({backbone.count_params():,} parameters)"
        + (
            f" and the attention-pool head's {len(pool.weights)}."
            if pool
            else "."
        )
    )
    image_size = config["image_shape"][:2] if has_pos else None
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


def _save_attention_pool(pool, directory, hidden_dim):
    with open(os.path.join(directory, ATTENTION_POOL_CONFIG_FILE), "w") as f:
        config = {
            "layer": keras.saving.serialize_keras_object(pool),
            "input_dim": hidden_dim,
        }
        json.dump(config, f, indent=4)
    keras.saving.save_weights(
        pool, os.path.join(directory, ATTENTION_POOL_WEIGHTS_FILE)
    )


def _make_parents(directory):
    """Create `directory` and its missing parents; return the topmost."""
    created = None
    path = directory
    while not os.path.exists(path):
        created, path = path, os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    return created


def _remove_empty_parents(directory, created):
    """Undo `_make_parents`: remove the directories it made, if empty."""
    if created is None:
        return
    path = directory
    while True:
        try:
            os.rmdir(path)
        except OSError:
            return
        if path == created:
            return
        path = os.path.dirname(path)


def _write_preset(converted, directory, source, preset_name):
    """Save the backbone, converter, head and conversion record."""
    converted.backbone.save_to_preset(directory)
    converted.image_converter.save_to_preset(directory)
    head_params = None
    if converted.attention_pool is not None:
        _save_attention_pool(
            converted.attention_pool,
            directory,
            converted.config["hidden_dim"],
        )
        head_params = converted.attention_pool.count_params()
    image_size = converted.image_converter.image_size
    record = {
        "source": os.path.abspath(os.fspath(source)),
        "source_files": converted.source_files,
        "layout": converted.layout,
        "key_prefix": converted.prefix,
        "skipped_keys": converted.skipped_keys,
        "preset_name": preset_name,
        "config": converted.config,
        "num_heads_from": converted.num_heads_from,
        "backbone_parameter_count": converted.backbone.count_params(),
        "head_parameter_count": head_params,
        "preprocessing": {
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "interpolation": "bicubic",
            "crop_ratio": 1.0,
            "image_size": None if image_size is None else list(image_size),
        },
    }
    with open(os.path.join(directory, CONVERSION_FILE), "w") as f:
        json.dump(record, f, indent=4)


def _move_into_place(staging, output_dir):
    """Rename `staging` to `output_dir`, replacing an existing one."""
    if not os.path.exists(output_dir):
        os.rename(staging, output_dir)
        return
    previous = staging + ".previous"
    os.rename(output_dir, previous)
    try:
        os.rename(staging, output_dir)
    except BaseException:
        os.rename(previous, output_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def convert_checkpoint(
    source,
    output_dir,
    num_heads=None,
    preset_name=None,
    overwrite=False,
    log=None,
):
    """Convert a released AIMv2 checkpoint into a keras-hub preset directory.

    The directory holds the backbone (`AIMV2Backbone.from_preset`), the
    checkpoint's image converter (`AIMV2ImageConverter.from_preset` or
    `keras_hub.layers.ImageConverter.from_preset`), `conversion.json`
    (source files, layout, configuration, parameter counts) and, for the
    LiT checkpoint, its attention-pool head (`load_attention_pool`). It
    is written to a temporary directory and renamed into place, so a
    failed conversion leaves nothing behind.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory.
        output_dir: str. The preset directory to create.
        num_heads: int or `None`. Number of attention heads; see
            `load_checkpoint`. Defaults to `None`.
        preset_name: str or `None`. A preset name of `backbone_presets` (e.g.
            `"aimv2_large_patch14_224"`); the checkpoint must then have that
            preset's configuration, and the name is recorded. Defaults to
            `None`.
        overwrite: bool. Replace an existing `output_dir`. Defaults to
            `False`.
        log: callable or `None`. Called with progress messages. Defaults
            to `None`.

    Returns:
        The absolute path of the preset directory (str).

    Example:

    >>> convert_checkpoint(  # doctest: +SKIP
    ...     "aimv2-large-patch14-224", "presets/aimv2_large_patch14_224"
    ... )
    >>> AIMV2Backbone.from_preset("presets/aimv2_large_patch14_224")
    """
    log = log or (lambda message: None)
    output_dir = os.path.abspath(os.fspath(output_dir))
    if preset_name is not None and preset_name not in backbone_presets:
        _check_preset_name(preset_name, None, None)  # Raises.
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"`output_dir` already exists: {output_dir}. Remove it or pass "
            "overwrite=True (`--overwrite`)."
        )
    converted = load_checkpoint(
        source, num_heads=num_heads, preset_name=preset_name, log=log
    )

    parent = os.path.dirname(output_dir)
    created = _make_parents(parent)
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(output_dir)}.partial-", dir=parent
    )
    try:
        log(f"Writing the preset to {output_dir} ...")
        _write_preset(converted, staging, source, preset_name)
        _move_into_place(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty_parents(parent, created)
        raise
    log(f"Done: {output_dir}")
    return output_dir


def load_attention_pool(preset):
    """Load the attention-pool head saved beside a converted backbone.

    Only the LiT checkpoint (`aimv2_large_patch14_224_lit`) has one: the
    image head of the LiT model, applied to the backbone's features.

    Args:
        preset: str. A preset directory, or a preset name of `backbone_presets`
            resolved under `$KERAS_AIMV2_PRESETS`.

    Returns:
        A built `AttentionPool` holding the checkpoint's weights.

    Example:

    >>> name = "aimv2_large_patch14_224_lit"  # doctest: +SKIP
    >>> backbone = AIMV2Backbone.from_preset(name)
    >>> pool = load_attention_pool(name)
    >>> embedding = pool(backbone(images))
    """
    preset = os.fspath(preset)
    if not os.path.isdir(preset):
        if preset not in backbone_presets:
            raise ValueError(
                "`preset` must be a preset directory or one of "
                f"{sorted(backbone_presets)}. Received: preset={preset!r}"
            )
        preset = preset_directory(preset)
    config_path = os.path.join(preset, ATTENTION_POOL_CONFIG_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"The preset {preset} has no attention-pool head "
            f"({ATTENTION_POOL_CONFIG_FILE}); among the released "
            "checkpoints only aimv2_large_patch14_224_lit has one."
        )
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    pool = keras.saving.deserialize_keras_object(config["layer"])
    if not pool.built:
        pool.build((None, None, config["input_dim"]))
    keras.saving.load_weights(
        pool, os.path.join(preset, ATTENTION_POOL_WEIGHTS_FILE)
    )
    return pool


def main(argv=None, prog="aimv2 convert"):
    """Command line: convert a checkpoint into a keras-hub preset.

    Args:
        argv: list of str or `None`. The arguments, without the program
            name; `None` reads `sys.argv`. Defaults to `None`.
        prog: str. The name of the command in usage and error messages.
            Defaults to `"aimv2 convert"`.

    Returns:
        The exit status: 0 on success, 1 with a message on stderr when the
        checkpoint cannot be converted.

    Example:

    >>> main(["model.safetensors", "presets/aimv2_large"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Convert a released AIMv2 checkpoint (safetensors; Apple's, "
            "Hugging Face transformers' or timm's layout) into a keras-hub "
            "preset directory."
        ),
    )
    parser.add_argument(
        "source", help="a .safetensors file or a checkpoint directory"
    )
    parser.add_argument("output_dir", help="the preset directory to create")
    parser.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads (default: config.json, else width / 128)",
    )
    parser.add_argument(
        "--preset-name",
        default=None,
        choices=sorted(backbone_presets),
        metavar="NAME",
        help="registered preset the checkpoint must match, e.g. "
        "aimv2_large_patch14_224",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output directory",
    )
    args = parser.parse_args(argv)
    try:
        convert_checkpoint(
            args.source,
            args.output_dir,
            num_heads=args.num_heads,
            preset_name=args.preset_name,
            overwrite=args.overwrite,
            log=lambda message: print(message, flush=True),
        )
    except (CheckpointError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
