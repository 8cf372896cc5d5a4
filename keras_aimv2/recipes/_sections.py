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
import dataclasses
import difflib
import math
import typing
from typing import Literal

from keras_aimv2.configs import BACKBONE_CONFIGS
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
            values[name] = (
                value.to_dict() if isinstance(value, Section) else value
            )
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


def unknown_key_error(cls, name, override=None):
    """The `ValueError` of an entry `name` that section `cls` lacks."""
    names = cls.entry_names()
    key = cls.key(name) if isinstance(name, str) else repr(name)
    where = f" in {override!r}" if override else ""
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {cls.key(close[0])!r}?" if close else ""
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
class PretrainingTraining(Section):
    """`training` of pre-training: the optimization and its schedule.

    `steps` counts optimizer updates, each averaging
    `gradient_accumulation_steps` batches of `batch_size`; the learning
    rate rises linearly for `warmup_steps` to `peak_learning_rate`, then
    follows a cosine to `final_learning_rate`. `dtype_policy` is a Keras
    dtype policy (`"mixed_bfloat16"` computes in bfloat16), `remat`
    recomputes block activations in the backward pass, and `rebuild`
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
    pixel_loss_weight: float = entry(rule=NON_NEGATIVE)
    seed: int = entry()
    verbose: int = entry(1, VERBOSITY)
    dtype_policy: str = entry("float32")
    gradient_accumulation_steps: int = entry(1, POSITIVE_INT)
    remat: bool = entry(False)
    rebuild: bool = entry(False)

    def check(self):
        _check_dtype_policy(self.key("dtype_policy"), self.dtype_policy)


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeData(Section):
    """`data` of a probe: Fashion-MNIST from `root` (`None`: Debian's
    dataset-fashion-mnist), the first `train_examples` and `test_examples`
    images (`None`: all), `num_classes`, and the training augmentation."""

    NAME = "data"
    train_examples: int | None = entry(None, POSITIVE_INT)
    test_examples: int | None = entry(None, POSITIVE_INT)
    num_classes: int = entry(rule=POSITIVE_INT)
    crop_scale: tuple[float, float] = entry(rule=CROP_SCALE)
    flip_probability: float = entry(rule=PROBABILITY)
    root: str | None = entry(None)


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
    # A probe has no decoder and trains no tokenizer.
    UNUSED = ("decoder", "tokenizer")
    backbone: ProbeBackboneSection = entry()
    data: ProbeData = entry()
    head: HeadSection = entry()
    training: ProbeTraining = entry()


RECIPE_TYPES = (PretrainingRecipe, ProbeRecipe)


def recipe_type(values):
    """The recipe type of a recipe's values: a probe if it has `head`."""
    is_probe = isinstance(values, collections.abc.Mapping) and "head" in values
    return ProbeRecipe if is_probe else PretrainingRecipe
