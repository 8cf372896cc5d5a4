"""Load a whole released AIMv2-LiT checkpoint into an `AIMV2LiTBackbone`.

The image-text checkpoint (`aimv2-large-patch14-224-lit`; Apple's
`AIMv2LiT` or transformers' `Aimv2Model`) holds, beside the image tower
and its attention-pool head that `load_checkpoint` converts, a causal
text tower, the two projections into the shared embedding space and the
logit scale. `load_lit_checkpoint` converts them all: it recognizes the
layout, infers the image tower's configuration (`infer_config`) and the
rest (`infer_lit_config`), checks every tensor against the weight rules
(`lit_rules`), reads the checkpoint's CLIP BPE tokenizer when its
`vocab.json` and `merges.txt` lie beside the weights, and only then
builds the model and sets its weights.
"""

import dataclasses
import json
import os

import keras_hub

from keras_aimv2.conversion.checkpoint_loader import checkpoint_image_converter
from keras_aimv2.conversion.config_inference import check_preset_config
from keras_aimv2.conversion.config_inference import infer_config
from keras_aimv2.conversion.config_inference import infer_lit_config
from keras_aimv2.conversion.errors import CheckpointError
from keras_aimv2.conversion.layouts import detect_layout
from keras_aimv2.conversion.layouts import is_whole_lit
from keras_aimv2.conversion.layouts import layout_module
from keras_aimv2.conversion.layouts import skipped_keys
from keras_aimv2.conversion.layouts import skipped_message
from keras_aimv2.conversion.safetensors_reader import read_checkpoint_config
from keras_aimv2.conversion.safetensors_reader import read_config_json
from keras_aimv2.conversion.safetensors_reader import read_safetensors
from keras_aimv2.conversion.weight_rules import assign
from keras_aimv2.conversion.weight_rules import check_finite
from keras_aimv2.conversion.weight_rules import check_rules
from keras_aimv2.conversion.weight_rules import lit_rules
from keras_aimv2.conversion.weight_rules import lit_variables
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_lit_backbone import AIMV2LiTBackbone

# The files of a CLIP BPE tokenizer in transformers' checkpoint
# directories (`CLIPTokenizer`'s `vocab_file` and `merges_file`).
TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclasses.dataclass
class ConvertedLiTCheckpoint:
    """A whole LiT checkpoint loaded into Keras objects, before saving.

    Attributes:
        model: `AIMV2LiTBackbone` holding every weight of the checkpoint.
        image_converter: `AIMV2ImageConverter` with the checkpoint's
            preprocessing.
        tokenizer: `keras_hub.tokenizers.CLIPTokenizer` built from the
            checkpoint's `vocab.json` and `merges.txt`, or `None` when
            the checkpoint directory has none.
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the image tower's keys.
        vision_config: dict. The image tower's `AIMV2Backbone` arguments.
        config: dict. The other `AIMV2LiTBackbone` arguments.
        num_heads_from: str. Where the image tower's head count came from.
        sources: dict. Where each LiT argument no shape shows came from.
        source_files: list of str. The safetensors files read.
        tokenizer_files: list of str. The tokenizer files read (empty
            without a tokenizer).
        skipped_keys: list of str. Buffers holding no parameters.
    """

    model: AIMV2LiTBackbone
    image_converter: AIMV2ImageConverter
    tokenizer: object
    layout: str
    prefix: str
    vision_config: dict
    config: dict
    num_heads_from: str
    sources: dict
    source_files: list
    tokenizer_files: list
    skipped_keys: list


def _require_whole_lit(tensors, layout, prefix):
    if is_whole_lit(tensors, layout, prefix):
        return
    module = layout_module(layout)
    where = f"under the prefix {prefix!r}" if prefix else "alone"
    raise CheckpointError(
        "`lit=True` (`--lit`) converts a whole LiT checkpoint, but this one "
        f"holds an image tower only ({layout} layout, {where}): expected "
        f"its image tower under {module.LIT_PREFIX!r} and its text tower "
        f"under {module.TEXT_PREFIX!r}, with the keys "
        f"{sorted(module.LIT_KEY_NAMES.values())}. Convert it without "
        "`lit` to get its image tower."
    )


def checkpoint_tokenizer(source, end_token_id, vocabulary_size):
    """The CLIP tokenizer saved beside a checkpoint's weights, if any.

    transformers' LiT checkpoint directory ships CLIP's byte-level BPE
    tokenizer as `vocab.json` and `merges.txt`; keras-hub's
    `CLIPTokenizer` is built from them. Its `<|endoftext|>` id must be the
    text tower's `end_token_id`, and its vocabulary must fit the token
    embedding.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory.
        end_token_id: int. The text tower's end token id.
        vocabulary_size: int. Rows of the text tower's token embedding.

    Returns:
        A tuple `(tokenizer, files)`: a `keras_hub.tokenizers.CLIPTokenizer`
        and the two files read, or `(None, [])` when neither file is
        there.

    Raises:
        CheckpointError: when only one of the files is there, they do not
            make a CLIP tokenizer, or the tokenizer does not match the
            text tower.

    Example:

    >>> tokenizer, files = checkpoint_tokenizer(  # doctest: +SKIP
    ...     "aimv2-large-patch14-224-lit", 49407, 49408
    ... )
    >>> tokenizer.end_token_id
    49407
    """
    source = os.fspath(source)
    directory = source if os.path.isdir(source) else os.path.dirname(source)
    paths = [os.path.join(directory, name) for name in TOKENIZER_FILES]
    found = [
        n for n in TOKENIZER_FILES if os.path.exists(os.path.join(directory, n))
    ]
    if not found:
        return None, []
    if len(found) < len(TOKENIZER_FILES):
        missing = [n for n in TOKENIZER_FILES if n not in found]
        raise CheckpointError(
            f"The checkpoint directory {directory} has {found} but not "
            f"{missing}: a CLIP tokenizer needs both {list(TOKENIZER_FILES)}."
        )
    vocabulary_path, merges_path = paths
    try:
        with open(vocabulary_path, encoding="utf-8") as f:
            vocabulary = json.load(f)
        if not isinstance(vocabulary, dict) or not vocabulary:
            raise ValueError("expected a JSON object from token to id")
        with open(merges_path, encoding="utf-8") as f:
            merges = [line.rstrip("\n") for line in f if line.strip()]
        tokenizer = keras_hub.tokenizers.CLIPTokenizer(
            vocabulary=vocabulary, merges=merges
        )
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(
            f"{vocabulary_path} and {merges_path} do not make a CLIP "
            f"tokenizer: {e}"
        ) from e
    if tokenizer.end_token_id != end_token_id:
        raise CheckpointError(
            f"The tokenizer's end token `<|endoftext|>` has id "
            f"{tokenizer.end_token_id} in {vocabulary_path}, but the text "
            f"tower pools at end_token_id={end_token_id}."
        )
    largest = max(vocabulary.values())
    if largest >= vocabulary_size:
        raise CheckpointError(
            f"{vocabulary_path} holds token id {largest}, outside the text "
            f"tower's token embedding of {vocabulary_size} rows."
        )
    return tokenizer, paths


def load_lit_checkpoint(
    source,
    num_heads=None,
    num_text_heads=None,
    preset_name=None,
    log=None,
    dtype="float32",
):
    """Load a whole released AIMv2-LiT checkpoint into `AIMV2LiTBackbone`.

    Converts every tensor of the image-text checkpoint: image tower and
    attention-pool head, text tower, image and text projections and
    logit scale (only buffers holding no parameters are skipped). Every
    tensor is checked (no key missing, none left over, every shape as the
    configuration requires, no NaN or infinite value) before any Keras
    object is built. The checkpoint's CLIP tokenizer is read too when its
    `vocab.json` and `merges.txt` lie beside the weights.

    Args:
        source: str. A `.safetensors` file or a checkpoint directory.
        num_heads: int or `None`. Attention heads of the image tower; see
            `load_checkpoint`. Defaults to `None`.
        num_text_heads: int or `None`. Attention heads of the text tower;
            `None` reads config.json's `text_config`, else assumes head
            width 128. Defaults to `None`.
        preset_name: str or `None`. A preset name of `backbone_presets`
            (`"aimv2_large_patch14_224_lit"`): the image tower must then
            have that preset's configuration. Defaults to `None`.
        log: callable or `None`. Called with progress messages. Defaults
            to `None`.
        dtype: str or `keras.DTypePolicy`. Dtype policy of the model
            built. Defaults to `"float32"`.

    Returns:
        A `ConvertedLiTCheckpoint`.

    Raises:
        CheckpointError: when the checkpoint is not a whole LiT checkpoint
            or cannot be converted exactly.

    Example:

    >>> converted = load_lit_checkpoint(  # doctest: +SKIP
    ...     "aimv2-large-patch14-224-lit"
    ... )
    >>> converted.model.encode_text(token_ids).shape
    (1, 768)
    """
    log = log or (lambda message: None)
    source = os.fspath(source)
    tensors, files = read_safetensors(source)
    log(f"Read {len(tensors)} tensors from {len(files)} file(s).")
    layout, prefix = detect_layout(tensors)
    _require_whole_lit(tensors, layout, prefix)
    vision_config, num_heads_from = infer_config(
        tensors, layout, prefix, num_heads, read_config_json(source)
    )
    config, sources = infer_lit_config(
        tensors,
        layout,
        vision_config,
        num_text_heads=num_text_heads,
        checkpoint_config=read_checkpoint_config(source),
    )
    log(
        f"Layout: {layout} (whole LiT model, image tower {prefix!r}); "
        f"image tower: {vision_config} (heads from {num_heads_from}); "
        f"text tower and projections: {config} ({sources})."
    )
    # `AIMV2LiTBackbone`'s pool keeps the image width, without key or
    # value biases, as the released model's.
    head = (vision_config["hidden_dim"], False)
    rules = lit_rules(layout, prefix, vision_config, head, config)
    skipped = skipped_keys(tensors, layout, prefix, whole_lit=True)
    check_rules(rules, tensors, skipped, "AIMV2LiTBackbone")
    check_finite(tensors, [k for rule in rules for k in rule.keys], files)
    if preset_name is not None:
        check_preset_config(preset_name, vision_config, True)
    tokenizer, tokenizer_files = checkpoint_tokenizer(
        source, config["end_token_id"], config["text_vocabulary_size"]
    )
    log(
        "Tokenizer: "
        + (
            f"CLIP BPE from {', '.join(tokenizer_files)}."
            if tokenizer
            else "none beside the weights (no vocab.json and merges.txt)."
        )
    )
    if skipped:
        log(skipped_message(skipped, prefix, whole_lit=True))

    vision_encoder = AIMV2Backbone(**vision_config, dtype=dtype)
    model = AIMV2LiTBackbone(vision_encoder, **config, dtype=dtype)
    assign(model, lit_variables(model), rules, tensors)
    log(
        f"Set {len(model.weights)} weights "
        f"({model.count_params():,} parameters)."
    )
    return ConvertedLiTCheckpoint(
        model=model,
        image_converter=checkpoint_image_converter(
            vision_config["image_shape"][:2]
        ),
        tokenizer=tokenizer,
        layout=layout,
        prefix=prefix,
        vision_config=vision_config,
        config=config,
        num_heads_from=num_heads_from,
        sources=sources,
        source_files=[os.path.abspath(f) for f in files],
        tokenizer_files=[os.path.abspath(f) for f in tokenizer_files],
        skipped_keys=skipped,
    )
