"""The layouts AIMv2 checkpoints are published in, and their recognition.

Each layout has a module of its key names (`layout_apple`,
`layout_transformers`, `layout_timm`); this module recognizes a
checkpoint's layout from its keys, spells the key of each role (of the
image tower, of a LiT model's text tower, of its projections), tells a
whole LiT checkpoint from an image tower alone, and sets aside the keys
that are not converted (a LiT model's text tower and projections when
only its image tower is, buffers holding no parameters).
"""

import re

from keras_aimv2.conversion import layout_apple
from keras_aimv2.conversion import layout_timm
from keras_aimv2.conversion import layout_transformers
from keras_aimv2.conversion.errors import CheckpointError

_MODULES = {
    module.NAME: module
    for module in (layout_apple, layout_transformers, layout_timm)
}
LAYOUTS = tuple(_MODULES)
# The towers whose keys `source_key` spells: the image encoder and a LiT
# model's text encoder.
TOWERS = ("image", "text")


def layout_module(layout):
    """The module of a layout's key names.

    Args:
        layout: str. One of `LAYOUTS`.

    Returns:
        The module (`layout_apple`, `layout_transformers` or
        `layout_timm`).

    Example:

    >>> layout_module("timm").KEY_NAMES["final_norm"]
    'norm.weight'
    """
    if layout not in _MODULES:
        raise ValueError(
            f"Unknown checkpoint `layout`: {layout!r}. Expected one of "
            f"{LAYOUTS}."
        )
    return _MODULES[layout]


def key_prefixes(layout):
    """The prefixes the encoder's keys may have in a layout.

    Args:
        layout: str. One of `LAYOUTS`.

    Returns:
        A tuple: `""` (the vision encoder alone) and the prefix of the
        image tower in the layout's whole LiT checkpoint.

    Example:

    >>> key_prefixes("transformers")
    ('', 'vision_model.')
    """
    return ("", layout_module(layout).LIT_PREFIX)


def key_names(layout, tower="image"):
    """The key name of each role of a tower, in a layout.

    Args:
        layout: str. One of `LAYOUTS`.
        tower: str. `"image"` (the vision encoder) or `"text"` (a LiT
            model's text encoder). Defaults to `"image"`.

    Returns:
        A dict from role (`"patch_weight"`, `"gate"`, ...) to key name;
        `"block"` is the prefix of block `i` (`"...{}."`).

    Example:

    >>> key_names("apple", "text")["token_embedding"]
    'preprocessor.text_embedding.weight'
    """
    module = layout_module(layout)
    if tower == "image":
        return module.KEY_NAMES
    if tower == "text":
        return module.TEXT_KEY_NAMES
    raise ValueError(f"Unknown `tower`: {tower!r}. Expected one of {TOWERS}.")


def source_key(layout, prefix, role, block=None, tower="image"):
    """The checkpoint key of a role, in a block or outside any.

    Args:
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the tower's keys.
        role: str. A key of the layout's `KEY_NAMES` (`"patch_weight"`,
            `"gate"`, ...) or, for the text tower, of its
            `TEXT_KEY_NAMES`.
        block: int or `None`. The block index of a per-block role.
            Defaults to `None`.
        tower: str. `"image"` or `"text"`. Defaults to `"image"`.

    Returns:
        The key (str).

    Example:

    >>> source_key("apple", "", "gate", block=3)
    'trunk.blocks.3.mlp.fc1.weight'
    >>> source_key("transformers", "text_model.", "q", 0, tower="text")
    'text_model.encoder.layers.0.attention.q_proj.weight'
    """
    names = key_names(layout, tower)
    start = prefix if block is None else prefix + names["block"].format(block)
    return start + names[role]


def block_indices(keys, layout, prefix, tower="image"):
    """The block indices present among a checkpoint's keys.

    Args:
        keys: iterable of str. The checkpoint's keys.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the tower's keys.
        tower: str. `"image"` or `"text"`. Defaults to `"image"`.

    Returns:
        A set of ints.

    Example:

    >>> keys = ["blocks.0.norm1.weight", "blocks.1.norm1.weight"]
    >>> sorted(block_indices(keys, "timm", ""))
    [0, 1]
    """
    block = key_names(layout, tower)["block"]
    pattern = re.compile(re.escape(prefix + block).replace(r"\{\}", r"(\d+)"))
    return {int(m.group(1)) for m in map(pattern.match, keys) if m}


def detect_layout(keys):
    """Recognize the layout of a checkpoint from its keys.

    Args:
        keys: iterable of str. The checkpoint's tensor names.

    Returns:
        A tuple `(layout, prefix)`: one of `LAYOUTS` and the prefix of the
        encoder's keys (`"image_encoder."` for Apple's `AIMv2LiT`,
        `"vision_model."` for transformers' CLIP-style `Aimv2Model`, else
        `""`).

    Raises:
        CheckpointError: when no layout, or more than one, matches.

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
        for prefix in key_prefixes(layout)
        if source_key(layout, prefix, "patch_weight") in keys
    ]
    if len(found) != 1:
        seen = sorted(keys)[:8]
        markers = {
            layout: source_key(layout, "", "patch_weight") for layout in LAYOUTS
        }
        prefixes = {
            layout: [p for p in key_prefixes(layout) if p] for layout in LAYOUTS
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


def lit_key(layout, role):
    """The key of a LiT model's projection or logit scale, in a layout.

    Args:
        layout: str. One of `LAYOUTS`.
        role: str. `"image_projection"`, `"text_projection"` or
            `"log_logit_scale"`.

    Returns:
        The key (str).

    Example:

    >>> lit_key("transformers", "log_logit_scale")
    'logit_scale'
    """
    names = layout_module(layout).LIT_KEY_NAMES
    if role not in names:
        raise ValueError(
            f"Unknown LiT `role`: {role!r}. Expected one of {tuple(names)}."
        )
    return names[role]


def text_prefix(layout):
    """The prefix of a LiT model's text tower in a layout.

    Args:
        layout: str. One of `LAYOUTS`.

    Returns:
        The prefix (str): `"text_encoder."` (Apple's `AIMv2LiT`) or
        `"text_model."` (transformers' `Aimv2Model`).

    Example:

    >>> text_prefix("apple")
    'text_encoder.'
    """
    return layout_module(layout).TEXT_PREFIX


def is_whole_lit(keys, layout, prefix):
    """Whether a checkpoint holds a whole LiT model, not an image tower.

    A whole LiT checkpoint has its image tower under the layout's LiT
    prefix and, beside it, any key of the text tower, the projections or
    the logit scale.

    Args:
        keys: iterable of str. The checkpoint's keys.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the image tower's keys (`detect_layout`).

    Returns:
        bool.

    Example:

    >>> is_whole_lit(["vision_model.rms_norm.weight", "logit_scale"],
    ...              "transformers", "vision_model.")
    True
    >>> is_whole_lit(["rms_norm.weight"], "transformers", "")
    False
    """
    module = layout_module(layout)
    if not prefix or prefix != module.LIT_PREFIX:
        return False
    others = set(module.LIT_KEY_NAMES.values())
    return any(
        key.startswith(module.TEXT_PREFIX) or key in others for key in keys
    )


def skipped_keys(tensors, layout, prefix, whole_lit=False):
    """The keys left out on purpose: outside the image tower, or buffers.

    Args:
        tensors: dict or iterable of str. The checkpoint's keys.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the image tower's keys.
        whole_lit: bool. Whether the whole LiT model is converted: then
            only buffers are left out, of either tower. Defaults to
            `False`.

    Returns:
        A sorted list of keys: under a LiT model's text tower, projections
        or logit scale (unless `whole_lit`), and buffers holding no
        parameters.

    Example:

    >>> skipped_keys(["vision_model.rms_norm.weight", "logit_scale"],
    ...              "transformers", "vision_model.")
    ['logit_scale']
    """
    module = layout_module(layout)
    buffers = {prefix + name for name in module.BUFFERS}
    if whole_lit:
        buffers |= {module.TEXT_PREFIX + name for name in module.TEXT_BUFFERS}
    skipped = []
    for key in tensors:
        if key in buffers:
            skipped.append(key)
        elif (
            not whole_lit
            and prefix
            and not key.startswith(prefix)
            and key.split(".")[0] in module.LIT_OTHER_NAMES
        ):
            skipped.append(key)
    return sorted(skipped)


def skipped_message(skipped, prefix, whole_lit=False):
    """Say which keys are skipped, and why, in one log line.

    Args:
        skipped: list of str. Keys from `skipped_keys`.
        prefix: str. Prefix of the image tower's keys.
        whole_lit: bool. Whether the whole LiT model is converted (every
            skipped key is then a buffer). Defaults to `False`.

    Returns:
        The message (str).

    Example:

    >>> skipped_message(["logit_scale"], "vision_model.")[:20]
    'Skipping 1 key: the '
    """
    outside, buffers = {}, []
    for key in skipped:
        if whole_lit or key.startswith(prefix):
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
            f"converted (only its image tower `{prefix}*` is; pass `--lit` "
            f"to convert the whole model): {groups}"
        )
    if buffers:
        parts.append(f"buffers holding no parameters: {', '.join(buffers)}")
    noun = "key" if len(skipped) == 1 else "keys"
    return f"Skipping {len(skipped)} {noun}: {'; '.join(parts)}."
