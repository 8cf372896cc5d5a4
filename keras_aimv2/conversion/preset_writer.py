"""Write a converted checkpoint as a keras-hub preset directory.

The directory holds the backbone (`AIMV2Backbone.from_preset`), the
checkpoint's image converter, `conversion.json` (source files, layout,
configuration, parameter counts, skipped keys) and, for the LiT
checkpoint, its attention-pool head (`load_attention_pool`). With
`lit=True` the whole LiT checkpoint is converted instead: the directory
holds an `AIMV2LiTBackbone` and, when the checkpoint has its CLIP
tokenizer, an `AIMV2LiTPreprocessor` (tokenizer and image converter). It
is written to a temporary directory beside the target and renamed into
place, so a failed conversion leaves nothing behind.
"""

import json
import os
import shutil
import tempfile

import keras

from keras_aimv2.conversion.checkpoint_loader import CLIP_MEAN
from keras_aimv2.conversion.checkpoint_loader import CLIP_STD
from keras_aimv2.conversion.checkpoint_loader import load_checkpoint
from keras_aimv2.conversion.config_inference import check_preset_name
from keras_aimv2.conversion.lit_loader import load_lit_checkpoint
from keras_aimv2.models.aimv2_presets import backbone_presets
from keras_aimv2.models.aimv2_presets import preset_directory

CONVERSION_FILE = "conversion.json"
ATTENTION_POOL_CONFIG_FILE = "attention_pool.json"
ATTENTION_POOL_WEIGHTS_FILE = "attention_pool.weights.h5"


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


def _write_lit_preset(converted, directory, source, preset_name):
    """Save the LiT model, its preprocessing and the conversion record."""
    model = converted.model
    model.save_to_preset(directory)
    if converted.tokenizer is not None:
        from keras_aimv2.models.aimv2_lit_preprocessor import (
            AIMV2LiTPreprocessor,
        )

        preprocessor = AIMV2LiTPreprocessor(
            tokenizer=converted.tokenizer,
            image_converter=converted.image_converter,
            sequence_length=converted.config["text_sequence_length"],
        )
        preprocessor.save_to_preset(directory)
    else:
        converted.image_converter.save_to_preset(directory)
    image_size = converted.image_converter.image_size
    record = {
        "source": os.path.abspath(os.fspath(source)),
        "source_files": converted.source_files,
        "tokenizer_files": converted.tokenizer_files,
        "layout": converted.layout,
        "key_prefix": converted.prefix,
        "whole_lit": True,
        "skipped_keys": converted.skipped_keys,
        "preset_name": preset_name,
        "vision_config": converted.vision_config,
        "config": converted.config,
        "num_heads_from": converted.num_heads_from,
        "inferred_from": converted.sources,
        "parameter_count": model.count_params(),
        "vision_encoder_parameter_count": (model.vision_encoder.count_params()),
        "preprocessing": {
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "interpolation": "bicubic",
            "crop_ratio": 1.0,
            "image_size": list(image_size),
            "tokenizer": (
                None
                if converted.tokenizer is None
                else type(converted.tokenizer).__name__
            ),
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
    lit=False,
    num_text_heads=None,
):
    """Convert a released AIMv2 checkpoint into a keras-hub preset directory.

    The directory holds the backbone (`AIMV2Backbone.from_preset`), the
    checkpoint's image converter (`AIMV2ImageConverter.from_preset` or
    `keras_hub.layers.ImageConverter.from_preset`), `conversion.json`
    (source files, layout, configuration, parameter counts) and, for the
    LiT checkpoint, its attention-pool head (`load_attention_pool`). It
    is written to a temporary directory and renamed into place, so a
    failed conversion leaves nothing behind.

    With `lit=True` a whole LiT checkpoint (`aimv2-large-patch14-224-lit`,
    Apple's `AIMv2LiT` or transformers' `Aimv2Model`) is converted
    instead, image and text towers, projections and logit scale, into an
    `AIMV2LiTBackbone` (`AIMV2LiTBackbone.from_preset`); when the
    checkpoint directory has its CLIP tokenizer (`vocab.json`,
    `merges.txt`) the preset also holds an `AIMV2LiTPreprocessor`
    (`keras_hub.tokenizers.CLIPTokenizer` and the image converter).
    Without it, a LiT checkpoint gives its image tower and head, as any
    other.

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
        lit: bool. Convert the whole LiT model into an
            `AIMV2LiTBackbone`; the checkpoint must be a whole LiT one.
            With it, `preset_name` names the preset of the image tower
            (`"aimv2_large_patch14_224_lit"`). Defaults to `False`.
        num_text_heads: int or `None`. Attention heads of the LiT text
            tower; see `load_lit_checkpoint`. Only with `lit=True`.
            Defaults to `None`.

    Returns:
        The absolute path of the preset directory (str).

    Raises:
        FileExistsError: when `output_dir` exists and `overwrite` is
            `False`.
        CheckpointError: when the checkpoint cannot be converted exactly.

    Example:

    >>> convert_checkpoint(  # doctest: +SKIP
    ...     "aimv2-large-patch14-224", "presets/aimv2_large_patch14_224"
    ... )
    >>> AIMV2Backbone.from_preset("presets/aimv2_large_patch14_224")
    >>> convert_checkpoint(  # doctest: +SKIP
    ...     "aimv2-large-patch14-224-lit", "presets/lit", lit=True
    ... )
    >>> AIMV2LiTBackbone.from_preset("presets/lit")
    """
    log = log or (lambda message: None)
    output_dir = os.path.abspath(os.fspath(output_dir))
    if preset_name is not None:
        check_preset_name(preset_name)
    if num_text_heads is not None and not lit:
        raise ValueError(
            "`num_text_heads` sets the heads of a LiT text tower, converted "
            "only with lit=True (`--lit`). Received: "
            f"num_text_heads={num_text_heads!r}, lit={lit!r}"
        )
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"`output_dir` already exists: {output_dir}. Remove it or pass "
            "overwrite=True (`--overwrite`)."
        )
    if lit:
        converted = load_lit_checkpoint(
            source,
            num_heads=num_heads,
            num_text_heads=num_text_heads,
            preset_name=preset_name,
            log=log,
        )
        write = _write_lit_preset
    else:
        converted = load_checkpoint(
            source, num_heads=num_heads, preset_name=preset_name, log=log
        )
        write = _write_preset

    parent = os.path.dirname(output_dir)
    created = _make_parents(parent)
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(output_dir)}.partial-", dir=parent
    )
    try:
        log(f"Writing the preset to {output_dir} ...")
        write(converted, staging, source, preset_name)
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

    Raises:
        ValueError: when `preset` is neither a directory nor a preset name.
        FileNotFoundError: when the preset has no attention-pool head.

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
