"""Apple's released AIMv2 checkpoints, named as presets of this package.

No weights are shipped with this package. A preset becomes loadable once
Apple's safetensors checkpoint has been converted into a local keras-hub
preset directory, `$KERAS_AIMV2_PRESETS/<name>` (by default
`~/.keras_aimv2/presets/<name>`):

```
aimv2 convert /path/to/aimv2-large-patch14-224 \
    ~/.keras_aimv2/presets/aimv2_large_patch14_224 \
    --preset-name aimv2_large_patch14_224
```

after which `AIMV2Backbone.from_preset("aimv2_large_patch14_224")` and
`AIMV2ImageConverter.from_preset("aimv2_large_patch14_224")` load it. The
names are this package's own: the `from_preset` of its classes
(`NamedPresets`) resolves them to their directories, and nothing is
registered in keras-hub's preset tables; keras-hub's own classes
(`keras_hub.models.Backbone.from_preset`) load the directory.

Sizes and accuracies come from the table of named sizes,
`keras_aimv2.configs.ENCODER_SIZES`. The parameter counts are those of the
backbone without any head, computed from the configuration; the ImageNet-1k
top-1 accuracies are the frozen-trunk attentive-probe results reported in
"Multimodal Autoregressive Pre-training of Large Vision Encoders" (Fini et
al., CVPR 2025, arXiv:2411.14402), `None` where the paper reports none.
"""

import json
import os

import h5py

from keras_aimv2.compat import CONFIG_FILE
from keras_aimv2.compat import MODEL_WEIGHTS_FILE
from keras_aimv2.compat import SHARDED_MODEL_WEIGHTS_CONFIG_FILE
from keras_aimv2.compat import TASK_CONFIG_FILE
from keras_aimv2.compat import TASK_WEIGHTS_FILE
from keras_aimv2.configs import ENCODER_SIZES
from keras_aimv2.configs import parameter_count

PRESETS_ENV_VARIABLE = "KERAS_AIMV2_PRESETS"
DEFAULT_PRESETS_DIR = os.path.join("~", ".keras_aimv2", "presets")
CONVERSION_COMMAND = "aimv2 convert"

# Resolutions (pixels) every released size has a checkpoint at.
RELEASED_RESOLUTIONS = (224, 336, 448)
# Reported top-1 of the native-resolution AIMv2-L (frozen trunk).
_NATIVE_TOP1 = 87.3


def backbone_parameter_count(
    hidden_dim,
    num_layers,
    intermediate_dim,
    patch_size=14,
    num_patches=None,
    num_channels=3,
):
    """Parameter count of an `AIMV2Backbone` of the given configuration.

    The count of `keras_aimv2.configs.parameter_count`, from the sizes
    rather than a configuration.

    Args:
        hidden_dim: int. Width of the tokens.
        num_layers: int. Number of transformer blocks.
        intermediate_dim: int. SwiGLU hidden width.
        patch_size: int. Side of a square patch. Defaults to `14`.
        num_patches: int or `None`. Entries of the learned position
            embedding; `None` for the sine-cosine (native) model, which has
            none. Defaults to `None`.
        num_channels: int. Image channels. Defaults to `3`.

    Returns:
        The number of parameters, an int.

    Example:

    >>> backbone_parameter_count(1024, 24, 2816, num_patches=256)
    309197824
    """
    config = {
        # One row of `num_patches` patches: any grid of that many will do.
        "image_shape": (patch_size, patch_size * (num_patches or 0))
        + (num_channels,),
        "patch_size": patch_size,
        "hidden_dim": hidden_dim,
        "num_layers": num_layers,
        "intermediate_dim": intermediate_dim,
        "position_embedding": "sincos" if num_patches is None else "learned",
    }
    return parameter_count(config)


def _preset(size_name, resolution, suffix=""):
    size = ENCODER_SIZES[size_name]
    native = resolution is None
    config = size.config(image_size=resolution)
    if native:
        config["image_shape"] = (None, None, 3)
    config["position_embedding"] = "sincos" if native else "learned"
    config["layer_norm_epsilon"] = 1e-5
    hf_id = f"aimv2-{size.checkpoint_size}-patch{size.patch_size}-"
    hf_id += "native" if native else str(resolution)
    hf_id += f"-{suffix}" if suffix else ""
    if native:
        description = (
            f"{size.release} vision encoder at native resolution: 2D "
            "sine-cosine positions, images of any size whose sides are "
            f"multiples of {size.patch_size} pixels."
        )
        top1 = _NATIVE_TOP1
    else:
        description = (
            f"{size.release} vision encoder, patch {size.patch_size}, "
            f"pre-trained at {resolution}x{resolution} pixels"
        )
        top1 = None if suffix else size.imagenet_top1[resolution]
    if suffix == "distilled":
        description += ", distilled from a larger AIMv2 encoder."
    elif suffix == "lit":
        description += (
            ", tuned as the image tower of a LiT image-text model; its "
            "attention-pool head is saved beside the backbone."
        )
    elif not native:
        description += "."
    return {
        "metadata": {
            "description": description,
            "params": parameter_count(config),
            "resolution": resolution,
            "imagenet_top1": top1,
            "source": f"apple/{hf_id}",
            "has_head": suffix == "lit",
            "path": "aimv2",
        },
        "config": config,
    }


def _name(hf_id):
    return hf_id.removeprefix("apple/").lower().replace("-", "_")


def _all_presets():
    presets = []
    for name, size in ENCODER_SIZES.items():
        if size.release is None:
            continue
        for resolution in RELEASED_RESOLUTIONS:
            presets.append(_preset(name, resolution))
    presets.append(_preset("large", None))
    presets.append(_preset("large", 224, "distilled"))
    presets.append(_preset("large", 336, "distilled"))
    presets.append(_preset("large", 224, "lit"))
    return {_name(p["metadata"]["source"]): p for p in presets}


# Every released AIMv2 checkpoint: preset name -> metadata and the
# `AIMV2Backbone` configuration it converts to, from the released sizes of
# `keras_aimv2.configs.ENCODER_SIZES`.
backbone_presets = _all_presets()


def presets_root():
    """Directory holding the converted presets, one subdirectory per name.

    `$KERAS_AIMV2_PRESETS` when set, else `~/.keras_aimv2/presets`; read
    on every call, so changing the variable takes effect immediately.

    Returns:
        An absolute path (str).

    Example:

    >>> presets_root()  # doctest: +SKIP
    '/root/.keras_aimv2/presets'
    """
    root = os.environ.get(PRESETS_ENV_VARIABLE) or DEFAULT_PRESETS_DIR
    return os.path.abspath(os.path.expanduser(root))


def conversion_command(name, source="SOURCE"):
    """The shell command that converts the checkpoint of preset `name`.

    Args:
        name: str. A key of `backbone_presets`.
        source: str. Path of the downloaded checkpoint (its
            `model.safetensors`, or the directory holding it). Defaults to
            the placeholder `"SOURCE"`.

    Returns:
        The command line (str), writing to `presets_root()/<name>`.

    Example:

    >>> print(conversion_command("aimv2_large_patch14_224"))  # doctest: +SKIP
    aimv2 convert SOURCE /root/.keras_aimv2/presets/aimv2_large_patch14_224 \
        --preset-name aimv2_large_patch14_224
    """
    _check_name(name)
    target = os.path.join(presets_root(), name)
    return f"{CONVERSION_COMMAND} {source} {target} --preset-name {name}"


def _check_name(name):
    if name not in backbone_presets:
        raise ValueError(
            f"Unknown AIMv2 preset name: {name!r}. Expected one of "
            f"{sorted(backbone_presets)}."
        )


class PresetNotConvertedError(ValueError):
    """A named AIMv2 preset whose local directory does not exist."""


def preset_directory(name):
    """The local directory of a converted preset, checked to be complete.

    Args:
        name: str. A key of `backbone_presets`.

    Returns:
        `presets_root()/<name>` (str).

    Raises:
        ValueError: when `name` is unknown.
        PresetNotConvertedError: when the directory does not exist; the
            message gives the command that creates it.
        BrokenPresetError: when a file of the directory is missing or
            broken (see `check_preset_files`).

    Example:

    >>> preset_directory("aimv2_large_patch14_224")  # doctest: +SKIP
    '/root/.keras_aimv2/presets/aimv2_large_patch14_224'
    """
    _check_name(name)
    directory = os.path.join(presets_root(), name)
    if not os.path.isdir(directory):
        raise PresetNotConvertedError(
            f"The AIMv2 preset {name!r} has not been converted: the "
            f"directory {directory} does not exist (set "
            f"${PRESETS_ENV_VARIABLE} to change where presets are looked "
            "for). Convert Apple's checkpoint with:\n"
            f"    {conversion_command(name)}\n"
            "where SOURCE is a local copy of "
            f"{backbone_presets[name]['metadata']['source']} (its "
            "model.safetensors, or the directory holding it)."
        )
    check_preset_files(directory)
    return directory


class BrokenPresetError(ValueError):
    """A preset directory with a missing, invalid or truncated file."""


def check_preset_files(preset, load_weights=True, task=False):
    """Check the files of a preset directory before keras-hub reads them.

    keras-hub reports some broken preset files without naming them (a bare
    `JSONDecodeError`, h5py's "truncated file"), or names another file
    (`model.weights.json` when `model.weights.h5` is missing). This raises
    a `BrokenPresetError` that names the file and says what is wrong:
    `config.json` missing or not valid JSON, the backbone weights
    (`model.weights.h5`, or the sharded `model.weights.json` and its
    shards) missing or not complete HDF5 files, and with `task=True` the
    same of `task.json` and `task.weights.h5`. A preset that is not a
    local directory (a `kaggle://` or `hf://` handle, a name of keras-hub)
    is left to keras-hub.

    Args:
        preset: str. The preset; only a local directory is checked.
        load_weights: bool. Whether the weights are to be loaded, and so
            must be present and complete. Defaults to `True`.
        task: bool. Whether a task (`task.json` and, with `load_weights`,
            `task.weights.h5`) is to be loaded from the preset. Defaults to
            `False`.

    Raises:
        BrokenPresetError: naming the missing or broken file.

    Example:

    >>> preset = "runs/tiny/preset/pretrainer"
    >>> check_preset_files(preset, task=True)  # doctest: +SKIP
    """
    if not isinstance(preset, (str, os.PathLike)) or not os.path.isdir(preset):
        return
    preset = os.fspath(preset)
    _check_json_file(os.path.join(preset, CONFIG_FILE))
    if task:
        _check_json_file(os.path.join(preset, TASK_CONFIG_FILE))
    if not load_weights:
        return
    if task:
        check_weights_file(os.path.join(preset, TASK_WEIGHTS_FILE))
    weights = os.path.join(preset, MODEL_WEIGHTS_FILE)
    sharded = os.path.join(preset, SHARDED_MODEL_WEIGHTS_CONFIG_FILE)
    if not os.path.exists(weights) and os.path.exists(sharded):
        weights = sharded
    check_weights_file(weights)


def check_weights_file(path):
    """Raise a `BrokenPresetError` naming `path` unless it can be loaded.

    A `.h5` file must open as a complete HDF5 file (a truncated copy does
    not); a sharded `.json` index must be valid JSON whose shards, beside
    it, pass the same check. Other files are only checked to exist.

    Args:
        path: str. A weights file, as passed to `load_weights`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BrokenPresetError(f"The weights file {path} does not exist.")
    if path.endswith(".json"):
        index = _check_json_file(path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else {}
        shards = set()
        for names in (weight_map or {}).values():
            shards.update([names] if isinstance(names, str) else names)
        for shard in sorted(shards):
            check_weights_file(os.path.join(os.path.dirname(path), shard))
    elif path.endswith(".h5"):
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as error:
            raise BrokenPresetError(
                f"The weights file {path} cannot be read: it is truncated or "
                f"not an HDF5 file ({error})."
            ) from None


def _check_json_file(path):
    """The contents of the JSON file `path`, or a `BrokenPresetError`."""
    if not os.path.isfile(path):
        raise BrokenPresetError(
            f"The preset file {path} does not exist; a keras-hub preset "
            "directory is written by `save_to_preset`."
        )
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BrokenPresetError(
            f"The preset file {path} is not valid JSON: {error}."
        ) from None


def resolve_preset(preset):
    """The preset keras-hub is to load for `preset`.

    A name of `backbone_presets` becomes its converted directory
    (`preset_directory`, which checks it); anything else (a directory, a
    `kaggle://` or `hf://` handle, a name of keras-hub's own presets) is
    returned unchanged, for keras-hub to resolve.

    Args:
        preset: str. A preset name, directory or handle.

    Returns:
        The preset (str).

    Raises:
        PresetNotConvertedError: when `preset` names a released checkpoint
            that has not been converted.
        BrokenPresetError: when its directory has a missing or broken file.

    Example:

    >>> resolve_preset("aimv2_large_patch14_224")  # doctest: +SKIP
    '/root/.keras_aimv2/presets/aimv2_large_patch14_224'
    >>> resolve_preset("runs/tiny/preset/backbone")
    'runs/tiny/preset/backbone'
    """
    if isinstance(preset, str) and preset in backbone_presets:
        return preset_directory(preset)
    return preset


class _ClassProperty:
    """A read-only property of a class (`cls.presets`)."""

    def __init__(self, getter):
        self.getter = getter
        self.__doc__ = getter.__doc__

    def __get__(self, instance, owner):
        return self.getter(owner)


class NamedPresets:
    """Mixin of a keras-hub class: load Apple's checkpoints by name.

    `from_preset` takes the names of `backbone_presets` besides what
    keras-hub's takes: a name is resolved to its converted directory
    (`resolve_preset`) before keras-hub loads it; anything else keeps
    keras-hub's behaviour. `presets` lists the names, with their metadata
    and configuration.
    """

    @_ClassProperty
    def presets(cls):
        """Apple's released checkpoints: name -> metadata and config."""
        return {name: dict(entry) for name, entry in backbone_presets.items()}

    @classmethod
    def from_preset(cls, preset, *args, **kwargs):
        """As keras-hub's `from_preset`; `preset` may also name a released
        AIMv2 checkpoint converted with `aimv2 convert` (see
        `keras_aimv2.models.aimv2_presets`)."""
        return super().from_preset(resolve_preset(preset), *args, **kwargs)
