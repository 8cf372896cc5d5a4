"""Read a checkpoint's safetensors files (and its config.json) into NumPy.

Every tensor is read by the `safetensors` library's own loader
(`safetensors.safe_open(..., framework="numpy")`). NumPy has no bfloat16
type of its own: importing `ml_dtypes` (a dependency of Keras) registers
one, with which the loader returns bfloat16 tensors; they are then upcast
to float32, which holds every bfloat16 value exactly. Pickled checkpoints
(`.bin`, `.pt`, `.pth`) are refused: loading them runs arbitrary code.
"""

import glob
import json
import os
import re

# Registers `bfloat16` with NumPy, for safetensors' NumPy loader.
import ml_dtypes  # noqa: F401
import numpy as np
from safetensors import safe_open

from keras_aimv2.conversion.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# safetensors dtype codes read in a wider NumPy dtype: NumPy's arithmetic
# (the finiteness check, the layout changes) does not cover bfloat16.
_UPCAST = {"BF16": np.float32}


def safetensors_files(source):
    """The safetensors files of a checkpoint file or directory.

    Args:
        source: str. A `.safetensors` file, or a directory holding
            `model.safetensors`, or the shards `model-0000x-of-0000y
            .safetensors` with or without `model.safetensors.index.json`.

    Returns:
        A list of file paths (str).

    Raises:
        FileNotFoundError: when `source` does not exist.
        CheckpointError: when `source` is not a safetensors file, or a
            directory without a complete set of them.

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
    index = os.path.join(source, INDEX_FILE)
    if os.path.exists(index):
        paths = [
            os.path.join(source, name)
            for name in sorted(set(_weight_map(index).values()))
        ]
        absent = [p for p in paths if not os.path.exists(p)]
        if absent:
            raise CheckpointError(
                f"{index} names shards that do not exist: {absent}"
            )
        return paths
    single = os.path.join(source, SINGLE_FILE)
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


def _weight_map(index):
    """The `weight_map` (key -> shard file) of a shard index file."""
    with open(index, encoding="utf-8") as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{index} has no `weight_map` naming the shard of each key."
        )
    return weight_map


def _read_tensor(handle, key, path):
    """One tensor through safetensors' NumPy loader, bfloat16 upcast."""
    dtype = handle.get_slice(key).get_dtype()
    try:
        tensor = handle.get_tensor(key)
    except (TypeError, AttributeError) as error:
        raise CheckpointError(
            f"Key {key!r} in {path} has dtype {dtype}, which is not read: "
            "expected a float (F64, F32, F16 or BF16) or integer tensor "
            f"({error})."
        ) from None
    if dtype in _UPCAST:
        tensor = tensor.astype(_UPCAST[dtype])
    return tensor


def read_safetensors(source):
    """Read every tensor of a checkpoint as NumPy arrays.

    bfloat16 tensors are returned as float32 (their exact values).

    Args:
        source: str. A `.safetensors` file or a checkpoint directory (see
            `safetensors_files`).

    Returns:
        A tuple `(tensors, files)`: a dict from key to `np.ndarray` and the
        list of files read.

    Raises:
        CheckpointError: when a key is stored twice, a tensor has a dtype
            NumPy cannot hold, or a shard index does not list the keys of
            its shards.

    Example:

    >>> tensors, files = read_safetensors("model.safetensors")  # doctest: +SKIP
    >>> tensors["rms_norm.weight"].dtype
    dtype('float32')
    """
    source = os.fspath(source)
    files = safetensors_files(source)
    tensors, origin = {}, {}
    for path in files:
        with safe_open(path, framework="numpy") as handle:
            for key in handle.keys():
                if key in tensors:
                    raise CheckpointError(
                        f"Key {key!r} is stored twice: in {origin[key]} and "
                        f"in {path}."
                    )
                origin[key] = path
                tensors[key] = _read_tensor(handle, key, path)
    index = os.path.join(source, INDEX_FILE)
    if os.path.isdir(source) and os.path.exists(index):
        indexed = set(_weight_map(index))
        if indexed != set(tensors):
            raise CheckpointError(
                f"{index} does not list the keys of its shards: indexed but "
                f"absent {sorted(indexed - set(tensors))[:10]}, present but "
                f"not indexed {sorted(set(tensors) - indexed)[:10]}."
            )
    return tensors, files


def locate_keys(files, keys):
    """The file holding each of `keys`, for messages about them.

    Args:
        files: list of str. The checkpoint's safetensors files.
        keys: iterable of str. Keys of the checkpoint.

    Returns:
        A dict from key to the path of the file holding it.

    Example:

    >>> locate_keys(files, ["rms_norm.weight"])  # doctest: +SKIP
    {'rms_norm.weight': 'checkpoint/model-00002-of-00002.safetensors'}
    """
    keys = set(keys)
    if len(files) == 1:
        return dict.fromkeys(keys, files[0])
    found = {}
    for path in files:
        with safe_open(path, framework="numpy") as handle:
            found.update({key: path for key in handle.keys() if key in keys})
    return found


def read_checkpoint_config(source):
    """The whole config.json beside a checkpoint's weights, or `None`.

    Of a CLIP-style image-text config (transformers' `Aimv2Model`) the
    whole dict is returned, `text_config` and `vision_config` included. A
    keras-hub preset's config.json (which names a `registered_name`) is
    not a checkpoint's, and gives `None`.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory.

    Returns:
        A dict, or `None` when there is no checkpoint config.json.

    Example:

    >>> read_checkpoint_config("aimv2-large-patch14-224-lit")  # doctest: +SKIP
    {'projection_dim': 768, 'text_config': {...}, 'vision_config': {...}}
    """
    source = os.fspath(source)
    directory = source if os.path.isdir(source) else os.path.dirname(source)
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict) or "registered_name" in config:
        return None  # Not a checkpoint's config (e.g. a keras-hub preset).
    return config


def read_config_json(source):
    """The (vision) config.json beside a checkpoint's weights, or `None`.

    Of a CLIP-style image-text config (transformers' `Aimv2Model`) its
    `vision_config` is returned. A keras-hub preset's config.json (which
    names a `registered_name`) is not a checkpoint's, and gives `None`.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory.

    Returns:
        A dict, or `None` when there is no checkpoint config.json.

    Example:

    >>> read_config_json("aimv2-large-patch14-224")  # doctest: +SKIP
    {'hidden_size': 1024, 'num_attention_heads': 8, ...}
    """
    config = read_checkpoint_config(source)
    if config is not None and isinstance(config.get("vision_config"), dict):
        config = config["vision_config"]
    return config
