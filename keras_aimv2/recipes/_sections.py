"""The types of recipes: one frozen dataclass per section, checked whole.

A recipe is a `PretrainingRecipe` (`aimv2 pretrain`) or a `ProbeRecipe`
(`aimv2 probe`); each section (`training`, `data`, ...) is a `Section`, a
frozen dataclass whose fields are the section's entries. Each entry has a
type (`int`, `float`, `bool`, `str`, a tuple, a choice, or any of them or
`None`), maybe a rule (a positive int, a number in [0, 1], ...) and maybe
a default, which an older recipe lacking the entry gets. Creating a section
checks every entry and converts it to its type (an int where a float is
expected becomes a float, a list where a tuple is expected a tuple); a
value of another type, out of range, an unknown entry or a missing one
without a default raises a `ValueError` naming the entry, the value and
what was expected. A section can therefore never hold a value its type
refuses.

Sections read as attributes (`recipe.training.steps`) and, for code
written against the dict recipes of earlier versions, as read-only
mappings (`recipe["training"]["steps"]`, `dict(recipe.decoder)`).
"""

import collections.abc
import copy
import dataclasses
import difflib
import math
import typing
from typing import Literal

from keras_aimv2.configs import BACKBONE_CONFIGS
from keras_aimv2.data.scenes import DEFAULT_PROBE_TASK
from keras_aimv2.data.scenes import PROBE_TASKS
from keras_aimv2.distribution import STRATEGIES
from keras_aimv2.distribution import check_strategy
from keras_aimv2.layers.patch_embedding import POSITION_EMBEDDINGS
from keras_aimv2.models.aimv2_image_classifier import POOLINGS


class Rule:
    """A condition on an entry's value (after conversion), in words.

    Args:
        expected: str. What the entry must be, for messages ("a positive
            int").
        test: callable. Takes the converted value; `True` if it is valid.
    """

    def __init__(self, expected, test):
        self.expected = expected
        self.test = test


POSITIVE_INT = Rule("a positive int", lambda v: v >= 1)
COUNT = Rule("an int >= 0", lambda v: v >= 0)
POSITIVE = Rule("a number > 0", lambda v: v > 0)
NON_NEGATIVE = Rule("a number >= 0", lambda v: v >= 0)
PROBABILITY = Rule("a number in [0, 1]", lambda v: 0 <= v <= 1)
FRACTION = Rule("a number in [0, 1)", lambda v: 0 <= v < 1)
DECAY = Rule("a number in (0, 1]", lambda v: 0 < v <= 1)
CROP_SCALE = Rule(
    "a pair (low, high) with 0 < low <= high <= 1",
    lambda v: 0 < v[0] <= v[1] <= 1,
)
IMAGE_SHAPE = Rule(
    "(height, width, channels), three positive ints", lambda v: min(v) >= 1
)
MESH_SHAPE = Rule("two positive ints (data, model)", lambda v: min(v) >= 1)
VERBOSITY = Rule(
    "0 (silent), 1 (progress lines and epochs) or 2 (epochs only)",
    lambda v: v in (0, 1, 2),
)


def entry(default=dataclasses.MISSING, rule=None):
    """A field of a `Section`: its default (none: required) and rule.

    A `Section` class as the default gives each recipe a fresh section of
    that class, with its own defaults.
    """
    metadata = {"rule": rule}
    if isinstance(default, type) and issubclass(default, Section):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def entry_error(key, expected, value):
    """The `ValueError` of entry `key`: what it must be, what it holds."""
    return ValueError(f"`{key}` must be {expected}. Received: {key}={value!r}")


class Section(collections.abc.Mapping):
    """A section of a recipe: a frozen dataclass of checked entries.

    Subclasses are `@dataclasses.dataclass(frozen=True, kw_only=True)`
    classes with `NAME`, the section's name in a recipe (`"training"`);
    their fields are built with `entry`.
    """

    NAME = ""
    # The recipe type a section refers to (`RecipeReference`), else None.
    RECIPE_CLASS = None

    def __post_init__(self):
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            key = self.key(field.name)
            kind = hints[field.name]
            value = getattr(self, field.name)
            if _is_section(kind):
                value = _section_value(kind, key, value)
            else:
                value = convert(key, kind, field.metadata.get("rule"), value)
            object.__setattr__(self, field.name, value)
        self.check()

    def check(self):
        """Checks between entries; raise a `ValueError` naming them."""

    @classmethod
    def key(cls, name):
        """The dotted name of entry `name` (`"training.steps"`)."""
        return f"{cls.NAME}.{name}" if cls.NAME else name

    @classmethod
    def entry_names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values):
        """The section of the entries `values` (a dict), checked.

        Raises:
            ValueError: for an unknown entry (with the known ones and the
                closest), a missing one that has no default, or a value
                its type or rule refuses.
        """
        where = f"`{cls.NAME}`" if cls.NAME else "the recipe"
        if not isinstance(values, collections.abc.Mapping):
            raise ValueError(
                f"{where} must be a dict of entries. Received: {values!r:.200}"
            )
        names = cls.entry_names()
        for name in values:
            if name not in names:
                raise unknown_key_error(cls, name)
        missing = [
            _describe_missing(cls, field)
            for field in dataclasses.fields(cls)
            if field.name not in values
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(
                f"{where} lacks {', '.join(missing)}, which "
                f"{'has' if len(missing) == 1 else 'have'} no default."
            )
        return cls(**values)

    def to_dict(self):
        """The entries as a plain dict (sections as nested dicts)."""
        values = {}
        for name in self.entry_names():
            value = getattr(self, name)
            if isinstance(value, Section):
                value = value.to_dict()
            elif isinstance(value, dict):
                value = copy.deepcopy(value)
            values[name] = value
        return values

    def replace(self, **changes):
        """A copy with `changes` (entry names to values), checked again."""
        return dataclasses.replace(self, **changes)

    # A read-only mapping of the entries.

    def __getitem__(self, name):
        if isinstance(name, str) and name in self.entry_names():
            return getattr(self, name)
        raise KeyError(name)

    def __iter__(self):
        return iter(self.entry_names())

    def __len__(self):
        return len(self.entry_names())


def unknown_key_error(cls, name, override=None, prefix=""):
    """The `ValueError` of an entry `name` that section `cls` lacks
    (`prefix`: written before its key, for a referenced recipe's)."""
    names = cls.entry_names()
    key = prefix + cls.key(name) if isinstance(name, str) else repr(name)
    where = f" in {override!r}" if override else ""
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {prefix + cls.key(close[0])!r}?" if close else ""
    return ValueError(
        f"Unknown recipe key {key!r}{where}.{hint} Known keys here: "
        f"{sorted(names)}"
    )


def _describe_missing(cls, field):
    kind = _type_hints(cls)[field.name]
    if _is_section(kind):
        return f"the section `{cls.key(field.name)}`"
    rule = field.metadata.get("rule")
    expected = rule.expected if rule else describe(kind)
    return f"`{cls.key(field.name)}` ({expected})"


def _section_value(kind, key, value):
    if isinstance(value, kind):
        return value
    if isinstance(value, collections.abc.Mapping):
        return kind.from_dict(value)
    raise ValueError(
        f"`{key}` is a section: it must be a dict of its entries. "
        f"Received: {key}={value!r:.200}"
    )


def _is_section(kind):
    return isinstance(kind, type) and issubclass(kind, Section)


_HINTS = {}


def _type_hints(cls):
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


# === Types ===


def field_type(section, name):
    """The type and rule of entry `name` of a `Section` class."""
    field = {f.name: f for f in dataclasses.fields(section)}[name]
    return _type_hints(section)[name], field.metadata.get("rule")


def convert(key, kind, rule, value):
    """`value` as entry `key` of type `kind` under `rule`, or an error.

    Args:
        key: str. The entry's dotted name, for the message.
        kind: a type: `int`, `float`, `bool`, `str`, `tuple[X, ...]`,
            `tuple[X, Y]`, `Literal[...]`, or any of them `| None`.
        rule: `Rule` or `None`. A further condition on the value.
        value: the value to convert.

    Returns:
        The value, converted to the type: an int as a float where a number
        is expected, a list as a tuple.

    Raises:
        ValueError: naming `key`, the value and what was expected.
    """
    base, optional = _without_none(kind)
    expected = rule.expected if rule is not None else describe(base)
    if optional:
        expected += ", or None"
    if value is None:
        if optional:
            return None
        raise entry_error(key, expected, value)
    try:
        converted = _convert(base, value)
    except (TypeError, ValueError):
        raise entry_error(key, expected, value) from None
    if rule is not None and not rule.test(converted):
        raise entry_error(key, expected, value)
    return converted


def convert_entry(recipe_class, key, value, where=None, prefix=""):
    """`value` as entry `key` of a recipe class, converted to its type.

    Args:
        recipe_class: a `Recipe` class (`PretrainingRecipe`, ...).
        key: str. The entry, `section.key` or a top-level `key`; in a
            section referring to another recipe (`RecipeReference`),
            `section.section.key` is an entry of that recipe.
        value: the value, converted as `convert` does.
        where: str or `None`. The override the entry comes from, for
            messages.
        prefix: str. Written before `key` in messages (`"pretrain."` for
            an entry of a referenced recipe).

    Returns:
        The converted value.

    Raises:
        ValueError: naming the entry, the value and what was expected, or
            the unknown section or key (with the known ones).
    """
    head, dot, rest = key.partition(".")
    sections = _section_names(recipe_class)
    if dot and "." in rest and head in sections:
        kind = field_type(recipe_class, head)[0]
        if kind.RECIPE_CLASS is not None:
            return convert_entry(
                kind.RECIPE_CLASS, rest, value, where, f"{prefix}{head}."
            )
    section_name, dot, name = key.rpartition(".")
    section = recipe_class
    if dot:
        if section_name not in sections:
            close = difflib.get_close_matches(section_name, sections, n=1)
            hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
            raise ValueError(
                f"Unknown recipe section {prefix + section_name!r} in "
                f"{where or prefix + key!r}.{hint} Known: "
                f"{sorted(prefix + name for name in sections)}"
            )
        section = field_type(recipe_class, section_name)[0]
    if name not in section.entry_names():
        raise unknown_key_error(section, name, where, prefix)
    kind, rule = field_type(section, name)
    if _is_section(kind):
        raise ValueError(
            f"`{prefix}{key}` is a section: set its entries, e.g. "
            f"{prefix}{key}.{kind.entry_names()[0]}=... Received: "
            f"{where or prefix + key!r}"
        )
    return convert(prefix + key, kind, rule, value)


def set_entry(values, recipe_class, key, value, where=None):
    """Set entry `key` of a recipe's `values` (a dict, changed in place).

    The value is converted as `convert_entry` does. An entry of a
    referenced recipe (`pretrain.training.steps` of an ablation recipe)
    becomes an entry of that section's `overrides`.

    Args:
        values: dict. A recipe's entries by section (`Recipe.to_dict`).
        recipe_class: the `Recipe` class of `values`.
        key: str. The entry (see `convert_entry`).
        value: the value.
        where: str or `None`. The override it comes from, for messages.
    """
    converted = convert_entry(recipe_class, key, value, where)
    head, _, rest = key.partition(".")
    kind = field_type(recipe_class, head)[0] if "." in rest else None
    if _is_section(kind) and kind.RECIPE_CLASS is not None:
        section = dict(values.get(head) or {})
        overrides = dict(section.get("overrides") or {})
        overrides[rest] = converted
        section["overrides"] = overrides
        values[head] = section
        return
    section_name, dot, name = key.rpartition(".")
    if dot:
        values[section_name] = dict(values.get(section_name) or {})
        values[section_name][name] = converted
    else:
        values[name] = converted


def _section_names(recipe_class):
    """The entries of `recipe_class` that are sections."""
    return [
        name
        for name in recipe_class.entry_names()
        if _is_section(field_type(recipe_class, name)[0])
    ]


def describe(kind):
    """What a value of type `kind` is, in words ("a positive int")."""
    base, optional = _without_none(kind)
    origin, arguments = typing.get_origin(base), typing.get_args(base)
    if base is bool:
        text = "a bool"
    elif base is int:
        text = "an int"
    elif base is float:
        text = "a number"
    elif base is str:
        text = "a str"
    elif base is dict:
        text = "a dict"
    elif origin is Literal:
        text = f"one of {list(arguments)}"
    elif origin is tuple and arguments[-1] is Ellipsis:
        text = f"a tuple of {_plural(arguments[0])}"
    elif origin is tuple:
        parts = ", ".join(describe(a) for a in arguments)
        text = f"a tuple of {len(arguments)} values ({parts})"
    else:
        text = f"a {getattr(base, '__name__', base)}"
    return f"{text} or None" if optional else text


def _plural(kind):
    return {bool: "bools", int: "ints", float: "numbers", str: "strs"}.get(
        kind, describe(kind)
    )


def _without_none(kind):
    """`(type without None, whether None is allowed)`."""
    arguments = typing.get_args(kind)
    if type(None) in arguments and typing.get_origin(kind) is not Literal:
        rest = [a for a in arguments if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"Unsupported recipe entry type {kind!r}")
        return rest[0], True
    return kind, False


def _convert(kind, value):
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        if not math.isfinite(value):
            raise ValueError
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    if kind is dict:
        if not isinstance(value, collections.abc.Mapping):
            raise TypeError
        return copy.deepcopy(dict(value))
    if origin is Literal:
        for choice in arguments:
            if type(value) is type(choice) and value == choice:
                return value
        raise ValueError
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise TypeError
        if arguments[-1] is Ellipsis:
            return tuple(_convert(arguments[0], v) for v in value)
        if len(value) != len(arguments):
            raise ValueError
        return tuple(
            _convert(a, v) for a, v in zip(arguments, value, strict=True)
        )
    raise TypeError(f"Unsupported recipe entry type {kind!r}")


# === The sections ===


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackboneSection(Section):
    """`backbone`: the encoder, as `AIMV2Backbone` arguments.

    `size` names a configuration of `keras_aimv2.BACKBONE_CONFIGS`
    (`"large"`, ...), which the other entries, where given, override; an
    entry left `None` takes the size's value, or without a size
    `AIMV2Backbone`'s default.
    """

    NAME = "backbone"
    size: Literal[tuple(BACKBONE_CONFIGS)] | None = entry(None)
    image_shape: tuple[int, int, int] | None = entry(None, IMAGE_SHAPE)
    patch_size: int | None = entry(None, POSITIVE_INT)
    hidden_dim: int | None = entry(None, POSITIVE_INT)
    num_layers: int | None = entry(None, POSITIVE_INT)
    num_heads: int | None = entry(None, POSITIVE_INT)
    intermediate_dim: int | None = entry(None, POSITIVE_INT)
    position_embedding: Literal[POSITION_EMBEDDINGS] | None = entry(None)
    layer_norm_epsilon: float | None = entry(None, POSITIVE)

    def arguments(self):
        """The `AIMV2Backbone` arguments: the size's, then the entries set."""
        return backbone_arguments(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeBackboneSection(BackboneSection):
    """`backbone` of a probe: an encoder built as in `BackboneSection`, or
    loaded from the keras-hub preset directory `preset` (a saved
    `AIMV2Backbone`, or a preset holding one); with a preset, a non-`None`
    `image_shape` other than the preset's resamples its position
    embedding."""

    preset: str | None = entry(None)


def backbone_arguments(section):
    """`AIMV2Backbone` arguments of a `backbone` section.

    Args:
        section: `BackboneSection`, or a dict of its entries.

    Returns:
        A dict: the configuration of `size` (if any), overridden by every
        entry that is not `None`; `size` and `preset` are not arguments.

    Raises:
        ValueError: for an unknown size, listing the known ones.
    """
    arguments = {
        name: value
        for name, value in section.items()
        if value is not None and name not in ("size", "preset")
    }
    size = section.get("size")
    if size is None:
        return arguments
    if size not in BACKBONE_CONFIGS:
        raise ValueError(
            f"Unknown backbone size {size!r}. Known sizes: "
            f"{sorted(BACKBONE_CONFIGS)}"
        )
    return {**BACKBONE_CONFIGS[size], **arguments}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderSection(Section):
    """`decoder`: the multimodal decoder of `AIMV2Pretrainer`, and
    `context_length`, the tokens of a caption (its end token included)."""

    NAME = "decoder"
    decoder_hidden_dim: int = entry(rule=POSITIVE_INT)
    decoder_num_layers: int = entry(rule=POSITIVE_INT)
    decoder_num_heads: int = entry(rule=POSITIVE_INT)
    decoder_intermediate_dim: int = entry(rule=POSITIVE_INT)
    context_length: int = entry(rule=POSITIVE_INT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerSection(Section):
    """`tokenizer`: the caption tokenizer.

    `model` is a SentencePiece model file; `None` trains one of
    `vocabulary_size` pieces on the training captions. `pad_token` is the
    piece captions are padded with (`None`: the model's own pad piece), and
    `remove_punctuation` deletes punctuation before tokenizing (SigLIP's
    tokenizer does).
    """

    NAME = "tokenizer"
    vocabulary_size: int = entry(rule=POSITIVE_INT)
    model: str | None = entry(None)
    pad_token: str | None = entry(None)
    remove_punctuation: bool = entry(False)


# The built-in sources of pre-training examples (`data.source`).
SOURCES = ("scenes", "fashion-mnist")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainingData(Section):
    """`data` of pre-training: shard directories or a built-in source.

    `train_dir` and `eval_dir` are directories of shards
    (`aimv2 build-dataset`); without `train_dir`, the built-in `source`
    (`"scenes"` or `"fashion-mnist"`) writes `train_examples` and
    `eval_examples` examples (of `source_size` pixels for scenes) from
    `seed` into the run's directory. `crop_scale` and `flip_probability`
    are the training augmentation; `schema` a TFDV schema the shards are
    validated against (`allow_anomalies` trains anyway).
    """

    NAME = "data"
    source: Literal[SOURCES] | None = entry(None)
    source_size: int | None = entry(None, POSITIVE_INT)
    train_examples: int | None = entry(None, POSITIVE_INT)
    eval_examples: int | None = entry(None, POSITIVE_INT)
    seed: int | None = entry(None)
    train_dir: str | None = entry(None)
    eval_dir: str | None = entry(None)
    crop_scale: tuple[float, float] = entry(rule=CROP_SCALE)
    flip_probability: float = entry(rule=PROBABILITY)
    schema: str | None = entry(None)
    allow_anomalies: bool = entry(False)

    def check(self):
        if self.train_dir or self.source is None:
            return
        needed = ["seed"]
        if self.source == "scenes":
            needed += ["train_examples", "eval_examples"]
        for name in needed:
            if getattr(self, name) is None:
                raise ValueError(
                    f"`data.source`={self.source!r} builds its examples "
                    f"from `{self.key(name)}`, which must be set. Received: "
                    f"{self.key(name)}=None"
                )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSection(Section):
    """`training` of a run of `keras_aimv2.training.run_training`: the
    optimization and its schedule.

    `steps` counts optimizer updates, each averaging
    `gradient_accumulation_steps` batches of `batch_size`; the learning
    rate rises linearly for `warmup_steps` to `peak_learning_rate`, then
    follows a cosine to `final_learning_rate`. `dtype_policy` is a Keras
    dtype policy (`"mixed_bfloat16"` computes in bfloat16), and `rebuild`
    (usually given as `--set training.rebuild=True`) lets a run rebuild
    what a changed recipe invalidates in its output directory.
    """

    NAME = "training"
    batch_size: int = entry(rule=POSITIVE_INT)
    eval_batch_size: int = entry(rule=POSITIVE_INT)
    steps: int = entry(rule=POSITIVE_INT)
    steps_per_epoch: int = entry(rule=POSITIVE_INT)
    warmup_steps: int = entry(rule=COUNT)
    peak_learning_rate: float = entry(rule=POSITIVE)
    final_learning_rate: float = entry(rule=NON_NEGATIVE)
    weight_decay: float = entry(rule=NON_NEGATIVE)
    clipnorm: float | None = entry(rule=POSITIVE)
    seed: int = entry()
    verbose: int = entry(1, VERBOSITY)
    dtype_policy: str = entry("float32")
    gradient_accumulation_steps: int = entry(1, POSITIVE_INT)
    rebuild: bool = entry(False)

    def check(self):
        _check_dtype_policy(self.key("dtype_policy"), self.dtype_policy)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainingTraining(TrainingSection):
    """`training` of pre-training: a `TrainingSection` with the objective's
    weights and `remat`.

    The objective is `text_loss_weight * L_text + pixel_loss_weight *
    L_img` (AIMv2: 1 and 0.4; 0 drops a loss, as `aimv2 ablate` does).
    `remat` recomputes block activations in the backward pass.
    """

    pixel_loss_weight: float = entry(rule=NON_NEGATIVE)
    remat: bool = entry(False)
    text_loss_weight: float = entry(1.0, NON_NEGATIVE)

    def check(self):
        super().check()
        if not self.pixel_loss_weight and not self.text_loss_weight:
            raise ValueError(
                f"`{self.key('pixel_loss_weight')}` and "
                f"`{self.key('text_loss_weight')}` are both 0: the "
                "objective would train nothing. Give one a weight > 0. "
                f"Received: {self.key('pixel_loss_weight')}=0.0, "
                f"{self.key('text_loss_weight')}=0.0"
            )


def _check_dtype_policy(key, name):
    import keras

    try:
        keras.dtype_policies.get(name)
    except (ValueError, TypeError):
        raise entry_error(
            key,
            "the name of a Keras dtype policy, such as 'float32' or "
            "'mixed_bfloat16'",
            name,
        ) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributionSection(Section):
    """`distribution`: `"none"` (one device), `"data_parallel"` (every
    device a replica) or `"sharded"` (JAX: weights split over a `(data,
    model)` device mesh of `mesh_shape`; see `keras_aimv2.distribution`)."""

    NAME = "distribution"
    strategy: Literal[STRATEGIES] = entry("none")
    mesh_shape: tuple[int, int] | None = entry(None, MESH_SHAPE)

    def check(self):
        check_strategy(self.strategy, self.mesh_shape)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitializeSection(Section):
    """`initialize`: `preset`, a pre-training or backbone preset directory
    whose weights a run starts from (its position embedding resampled to
    another resolution); `None` starts from a random initialization."""

    NAME = "initialize"
    preset: str | None = entry(None)


# The sources of probe images and labels (`data.source` of a probe).
PROBE_SOURCES = ("fashion-mnist", "scenes")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeData(Section):
    """`data` of a probe: labelled images, and the training augmentation.

    `source` is `"fashion-mnist"` (the default: its first `train_examples`
    and `test_examples` images, `None` for all, read from `root`, `None`
    for Debian's dataset-fashion-mnist) or `"scenes"`: procedural scenes
    (`keras_aimv2.data.scenes`) labelled by `task`, one of
    `keras_aimv2.data.scenes.PROBE_TASKS` (`"large_count"`, the number of
    large shapes, by default), `train_examples` of them from `seed` and
    `test_examples` from `seed + 1`, drawn at `source_size` pixels (`None`:
    the encoder's size). Scenes depend only on their seed and index, so a
    probe's `seed` other than a pre-training's `data.seed` and `data.seed +
    1` keeps its scenes out of that pre-training. `num_classes` is the
    classifier's (for scenes, the task's number of classes).
    """

    NAME = "data"
    train_examples: int | None = entry(None, POSITIVE_INT)
    test_examples: int | None = entry(None, POSITIVE_INT)
    num_classes: int = entry(rule=POSITIVE_INT)
    crop_scale: tuple[float, float] = entry(rule=CROP_SCALE)
    flip_probability: float = entry(rule=PROBABILITY)
    root: str | None = entry(None)
    source: Literal[PROBE_SOURCES] = entry("fashion-mnist")
    task: Literal[tuple(PROBE_TASKS)] = entry(DEFAULT_PROBE_TASK)
    seed: int | None = entry(None, COUNT)
    source_size: int | None = entry(None, POSITIVE_INT)

    def check(self):
        if self.source != "scenes":
            return
        for name in ("seed", "train_examples", "test_examples"):
            if getattr(self, name) is None:
                raise ValueError(
                    f"`{self.key('source')}`='scenes' draws its examples "
                    f"from `{self.key(name)}`, which must be set. Received: "
                    f"{self.key(name)}=None"
                )
        classes = PROBE_TASKS[self.task].num_classes
        if self.num_classes != classes:
            raise ValueError(
                f"The scenes task {self.task!r} has {classes} classes: set "
                f"`{self.key('num_classes')}` to {classes}. Received: "
                f"{self.key('num_classes')}={self.num_classes}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadSection(Section):
    """`head`: the classifier on the encoder (`AIMV2ImageClassifier`).

    `pooling` is `"attention"` (AIMv2's attentive probe) or `"mean"`;
    `freeze_backbone` trains the head alone (a probe) or, `False`, the
    whole model; `feature_layers` averages chosen blocks (`None`: the
    last); `num_heads` of the attention pool (`None`: the encoder's).
    """

    NAME = "head"
    pooling: Literal[POOLINGS] = entry("attention")
    freeze_backbone: bool = entry(True)
    feature_layers: tuple[int, ...] | None = entry(None)
    num_heads: int | None = entry(None, POSITIVE_INT)
    dropout: float = entry(0.0, FRACTION)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeTraining(Section):
    """`training` of a probe: AdamW, linear warm-up for `warmup_epochs`
    then a cosine to `final_learning_rate`, `epochs` of `steps_per_epoch`
    steps (`None`: one pass over the training images), and layer-wise
    learning-rate decay `layer_decay` when fine-tuning (`None`: none)."""

    NAME = "training"
    batch_size: int = entry(rule=POSITIVE_INT)
    eval_batch_size: int = entry(rule=POSITIVE_INT)
    epochs: int = entry(rule=POSITIVE_INT)
    steps_per_epoch: int | None = entry(None, POSITIVE_INT)
    warmup_epochs: float = entry(rule=NON_NEGATIVE)
    peak_learning_rate: float = entry(rule=POSITIVE)
    final_learning_rate: float = entry(rule=NON_NEGATIVE)
    weight_decay: float = entry(rule=NON_NEGATIVE)
    layer_decay: float | None = entry(None, DECAY)
    seed: int = entry()
    verbose: int = entry(1, VERBOSITY)


# === Recipes ===


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe(Section):
    """A recipe: its `name`, the `paper` configuration it follows, where it
    writes (`output_dir`; `--output-dir` overrides it), and its sections.

    `KIND` is the `aimv2` command that runs it.
    """

    KIND = None
    # The sections, any of which makes a recipe's values of this type
    # (`recipe_type`).
    MARKERS = ()
    # Sections that recipes of this kind written before typed recipes may
    # hold empty, and that are dropped.
    UNUSED = ()
    name: str = entry()
    paper: str | None = entry(None)
    output_dir: str | None = entry(None)

    @classmethod
    def from_dict(cls, values):
        if isinstance(values, collections.abc.Mapping):
            values = dict(values)
            for name in cls.UNUSED:
                if name in values and not values[name]:
                    del values[name]
        return super().from_dict(values)

    def output_directory(self, output_dir=None):
        """`output_dir` if given, else the recipe's; an error if neither."""
        chosen = output_dir or self.output_dir
        if not chosen:
            raise ValueError(
                f"Recipe {self.name!r} sets no `output_dir`: give one "
                "(--output-dir DIR, or `output_dir` in the recipe)."
            )
        return chosen

    def check_runnable(self):
        """Raise a `ValueError` for what a run needs and the recipe lacks
        (loading accepts templates, such as a data directory to set)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainingRecipe(Recipe):
    """A recipe of `aimv2 pretrain` (`keras_aimv2.training.pretrain`)."""

    KIND = "pretrain"
    backbone: BackboneSection = entry()
    decoder: DecoderSection = entry()
    data: PretrainingData = entry()
    tokenizer: TokenizerSection = entry()
    training: PretrainingTraining = entry()
    distribution: DistributionSection = entry(DistributionSection)
    initialize: InitializeSection = entry(InitializeSection)

    def check_runnable(self):
        if not self.data.train_dir and self.data.source is None:
            raise ValueError(
                f"Recipe {self.name!r} names no training data: set "
                "`data.train_dir` to a shard directory (`aimv2 "
                "build-dataset`), e.g. --set data.train_dir=DIR, or "
                f"`data.source` to one of {list(SOURCES)}. Received: "
                "data.train_dir=None, data.source=None"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeRecipe(Recipe):
    """A recipe of `aimv2 probe` (`keras_aimv2.transfer.probe`); its
    `head` section makes it one."""

    KIND = "probe"
    MARKERS = ("head",)
    # A probe has no decoder and trains no tokenizer.
    UNUSED = ("decoder", "tokenizer")
    backbone: ProbeBackboneSection = entry()
    data: ProbeData = entry()
    head: HeadSection = entry()
    training: ProbeTraining = entry()


# === The objective ablation (`aimv2 ablate`) ===


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecipeReference(Section):
    """A section naming another recipe, with entries of it changed.

    `recipe` is a packaged recipe's name or a recipe file's path, or
    `entries` the recipe's entries inline (a dict, as a recipe file's
    `RECIPE`); exactly one is given. `overrides` maps that recipe's entries
    (`"training.steps"`) to values, applied as `--set` would. Creating the
    section loads and checks the recipe it names (`resolve` returns it), so
    a wrong name, entry or value is an error naming it.
    """

    recipe: str | None = entry(None)
    entries: dict | None = entry(None)
    overrides: dict | None = entry(None)

    def check(self):
        if (self.recipe is None) == (self.entries is None):
            raise ValueError(
                f"`{self.NAME}` names its {self.RECIPE_CLASS.KIND} recipe "
                f"by `{self.key('recipe')}` (a packaged name or a file) or "
                f"by `{self.key('entries')}` (its entries), exactly one. "
                f"Received: {self.key('recipe')}={self.recipe!r}, "
                f"{self.key('entries')}="
                f"{'None' if self.entries is None else 'a dict'}"
            )
        object.__setattr__(self, "_resolved", None)
        object.__setattr__(self, "_resolved", self.resolve())
        if self.entries is not None:
            # The entries as their recipe holds them (tuples, defaults), so
            # that a recipe read back from JSON equals the one written.
            base = self.RECIPE_CLASS.from_dict(self.entries)
            object.__setattr__(self, "entries", base.to_dict())
        overrides = {
            key: convert_entry(
                self.RECIPE_CLASS, key, value, prefix=f"{self.NAME}."
            )
            for key, value in (self.overrides or {}).items()
        }
        object.__setattr__(self, "overrides", overrides or None)

    def resolve(self):
        """The referenced recipe, its overrides applied.

        Returns:
            A recipe of `RECIPE_CLASS`.

        Raises:
            ValueError: for a missing or invalid recipe, one of another
                kind, or an override it refuses; the message names this
                section's entry.
        """
        if getattr(self, "_resolved", None) is not None:
            return self._resolved
        from keras_aimv2.recipes import load_recipe

        where = f"`{self.key('recipe')}`={self.recipe!r}"
        try:
            if self.entries is not None:
                where = f"`{self.key('entries')}`"
                base = recipe_type(self.entries).from_dict(self.entries)
            else:
                base = load_recipe(self.recipe)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if not isinstance(base, self.RECIPE_CLASS):
            raise ValueError(
                f"{where} is a {base.KIND} recipe; `{self.NAME}` needs a "
                f"{self.RECIPE_CLASS.KIND} recipe."
            )
        values = base.to_dict()
        for key, value in (self.overrides or {}).items():
            if not isinstance(key, str):
                raise entry_error(
                    self.key("overrides"),
                    "a dict of `section.key` strs to values",
                    self.overrides,
                )
            set_entry(values, self.RECIPE_CLASS, key, value, where=key)
        try:
            return self.RECIPE_CLASS.from_dict(values)
        except ValueError as error:
            raise ValueError(f"`{self.NAME}`: {error}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainReference(RecipeReference):
    """`pretrain` of an ablation: the pre-training recipe each objective
    runs (`RecipeReference`)."""

    NAME = "pretrain"
    RECIPE_CLASS = PretrainingRecipe


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeReference(RecipeReference):
    """`probe` of an ablation: the probe of each encoder
    (`RecipeReference`); its `backbone` is the pre-training's."""

    NAME = "probe"
    RECIPE_CLASS = ProbeRecipe


# The objectives of AIMv2's ablation (Table 9), in the paper's order of
# ImageNet-1k top-1 (85.6, about 85.2, 72.0), and the encoder at its
# initialization.
OBJECTIVES = ("aimv2", "captions", "pixels", "untrained")
OBJECTIVE_NAMES = Rule(
    f"a tuple of distinct objectives, each one of {list(OBJECTIVES)}",
    lambda v: len(v) >= 1 and len(set(v)) == len(v),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationSection(Section):
    """`ablation`: the `objectives` to compare, in order, of `OBJECTIVES`:
    `"aimv2"` (the pre-training recipe's objective), `"captions"` (its
    `pixel_loss_weight` 0), `"pixels"` (its `text_loss_weight` 0) and
    `"untrained"` (the encoder at its initialization)."""

    NAME = "ablation"
    objectives: tuple[Literal[OBJECTIVES], ...] = entry(rule=OBJECTIVE_NAMES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationRecipe(Recipe):
    """A recipe of `aimv2 ablate` (`keras_aimv2.ablation.ablate`): the
    same pre-training under several objectives, each encoder probed.

    `pretrain` and `probe` name their recipes (`RecipeReference`); `--set
    pretrain.training.steps=20` sets an entry of the pre-training recipe,
    `--set probe.training.epochs=1` one of the probe's, and `--set
    ablation.objectives=...` the ablation's own.
    """

    KIND = "ablate"
    MARKERS = ("ablation", "pretrain", "probe")
    pretrain: PretrainReference = entry()
    probe: ProbeReference = entry()
    ablation: AblationSection = entry()

    def check(self):
        pretrain, probe = self.pretrain.resolve(), self.probe.resolve()
        scenes = (pretrain.data.source, probe.data.source) == ("scenes",) * 2
        if scenes and not pretrain.data.train_dir:
            used = {pretrain.data.seed, pretrain.data.seed + 1}
            if used & {probe.data.seed, probe.data.seed + 1}:
                raise ValueError(
                    "The probe's scenes (seeds `probe.data.seed` and + 1) "
                    "must be held out from the pre-training's (seeds "
                    "`pretrain.data.seed` and + 1): choose another "
                    f"probe.data.seed. Received: probe.data.seed="
                    f"{probe.data.seed}, pretrain.data.seed="
                    f"{pretrain.data.seed}"
                )

    def check_runnable(self):
        self.pretrain.resolve().check_runnable()
        self.probe.resolve().check_runnable()


# === LiT ===

TEMPLATES = Rule(
    "one or more prompt templates, each with one '{}' for the class name",
    lambda v: len(v) >= 1 and all(t.count("{}") == 1 for t in v),
)
# The built-in data sets of zero-shot classification (`zero_shot.source`).
ZERO_SHOT_SOURCES = ("fashion-mnist",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextTowerSection(Section):
    """`text`: the LiT model's text tower (`CausalTextEncoder`), its
    `context_length` (the tokens of a caption, its end token included),
    the width of both projections, and the heads of the image tower's
    attention pool (`None`: the encoder's)."""

    NAME = "text"
    hidden_dim: int = entry(rule=POSITIVE_INT)
    num_layers: int = entry(rule=POSITIVE_INT)
    num_heads: int = entry(rule=POSITIVE_INT)
    intermediate_dim: int = entry(rule=POSITIVE_INT)
    context_length: int = entry(rule=POSITIVE_INT)
    projection_dim: int = entry(rule=POSITIVE_INT)
    pool_num_heads: int | None = entry(None, POSITIVE_INT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LiTTraining(TrainingSection):
    """`training` of LiT tuning: a `TrainingSection` (steps of
    `batch_size` image-caption pairs, AdamW with warm-up and cosine decay,
    global-norm clipping), without the pre-training objective's weights.
    The contrastive loss takes its negatives from the batch (from each
    replica's share of it under TensorFlow and PyTorch replicas)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZeroShotSection(Section):
    """`zero_shot`: after tuning, classify the test images of `source`
    (`None`: none) zero-shot, each class the mean embedding of its name in
    every one of `templates`; the first `test_examples` images (`None`:
    all), read from `root` (`None`: Debian's dataset-fashion-mnist)."""

    NAME = "zero_shot"
    source: Literal[ZERO_SHOT_SOURCES] | None = entry("fashion-mnist")
    templates: tuple[str, ...] = entry(("{}", "a photo of {}"), TEMPLATES)
    test_examples: int | None = entry(None, POSITIVE_INT)
    batch_size: int = entry(500, POSITIVE_INT)
    root: str | None = entry(None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LiTRecipe(Recipe):
    """A recipe of `aimv2 lit` (`keras_aimv2.lit_tuning.lit_tune`); its
    `text` section makes it one. `backbone` is the locked image encoder:
    a preset (usually a pre-training run's `preset/backbone`) or a random
    initialisation, as a probe's."""

    KIND = "lit"
    MARKERS = ("text",)
    backbone: ProbeBackboneSection = entry()
    text: TextTowerSection = entry()
    data: PretrainingData = entry()
    tokenizer: TokenizerSection = entry()
    training: LiTTraining = entry()
    zero_shot: ZeroShotSection = entry(ZeroShotSection)
    distribution: DistributionSection = entry(DistributionSection)

    def check_runnable(self):
        PretrainingRecipe.check_runnable(self)


# Every recipe type; a recipe's type is the first with a `MARKERS` section
# in it (`recipe_type`), else a pre-training recipe.
RECIPE_TYPES = (PretrainingRecipe, ProbeRecipe, AblationRecipe, LiTRecipe)


def recipe_type(values):
    """The recipe type of a recipe's values: the first of `RECIPE_TYPES`
    with one of its `MARKERS` sections in them (a probe has `head`, an
    ablation `ablation`, `pretrain` and `probe`, a LiT recipe `text`), else
    `PretrainingRecipe`."""
    if isinstance(values, collections.abc.Mapping):
        for kind in RECIPE_TYPES:
            if any(name in values for name in kind.MARKERS):
                return kind
    return PretrainingRecipe
