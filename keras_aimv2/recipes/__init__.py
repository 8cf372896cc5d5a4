"""Recipes: one plain-Python file per experiment, and overrides of them.

A recipe file defines `RECIPE`, a dict with the sections `backbone`
(`AIMV2Backbone` arguments), `decoder` (the decoder arguments of
`AIMV2Pretrainer`), `data`, `tokenizer`, `training` and `output_dir`, and
names the paper configuration it follows under `paper`. Nothing is hidden in
code: `pretrain` reads every number from the recipe.

The recipes of this package are the `.py` files of this folder, installed
with it; `load_recipe` takes one by name (`tiny_scenes_cpu`) from any
working directory, or any recipe file by its path. `packaged_recipes` lists
them (`aimv2 recipes` prints the list).
"""

import ast
import copy
import math
import os
import runpy

from keras_aimv2.validation import check_positive_int

SECTIONS = ("backbone", "decoder", "data", "tokenizer", "training")
# The folder of the packaged recipe files: this package's own.
RECIPE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))

# Entries a pre-training recipe written before they existed may lack: one
# device, float32, no accumulation, no rematerialization, the tokenizer's
# own pad piece and punctuation kept; and `training.rebuild`, a switch
# given on the command line (`--set training.rebuild=True`) that lets a run
# rebuild what a changed recipe invalidates in its output directory.
PRETRAINING_DEFAULTS = {
    "tokenizer": {"pad_token": None, "remove_punctuation": False},
    "training": {
        "dtype_policy": "float32",
        "gradient_accumulation_steps": 1,
        "remat": False,
        "rebuild": False,
    },
    "distribution": {"strategy": "none", "mesh_shape": None},
}


def _rule(expected, test):
    """A check of one entry: raises a `ValueError` unless `test(value)`."""

    def check(name, value):
        if not test(value):
            raise ValueError(
                f"`{name}` must be {expected}. Received: {name}={value!r}"
            )

    return check


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


_COUNT = _rule("an int >= 0", lambda v: _is_int(v) and v >= 0)
_POSITIVE = _rule("a number > 0", lambda v: _is_number(v) and v > 0)
_NON_NEGATIVE = _rule("a number >= 0", lambda v: _is_number(v) and v >= 0)
_PROBABILITY = _rule(
    "a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1
)
_FRACTION = _rule("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
_CROP_SCALE = _rule(
    "a pair (low, high) with 0 < low <= high <= 1",
    lambda v: (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(_is_number(x) for x in v)
        and 0 < v[0] <= v[1] <= 1
    ),
)
_IMAGE_SHAPE = _rule(
    "(height, width, channels), three positive ints",
    lambda v: (
        isinstance(v, (tuple, list))
        and len(v) == 3
        and all(_is_int(x) and x >= 1 for x in v)
    ),
)
_FLAG = _rule("a bool", lambda v: isinstance(v, bool))
_TEXT = _rule("a str", lambda v: isinstance(v, str))

# The rules of recipe entries, as `"section.key": (check, may_be_none)`.
# `check_recipe` applies them to every entry present and not `None` (a recipe
# lacking an entry, or leaving it `None`, is not checked here). An override
# may set `None` only where the recipe's value is `None` or `may_be_none`.
RECIPE_RULES = {
    "backbone.preset": (_TEXT, True),
    "backbone.image_shape": (_IMAGE_SHAPE, True),
    "backbone.patch_size": (check_positive_int, False),
    "backbone.hidden_dim": (check_positive_int, False),
    "backbone.num_layers": (check_positive_int, False),
    "backbone.num_heads": (check_positive_int, False),
    "backbone.intermediate_dim": (check_positive_int, False),
    "decoder.decoder_hidden_dim": (check_positive_int, False),
    "decoder.decoder_num_layers": (check_positive_int, False),
    "decoder.decoder_num_heads": (check_positive_int, False),
    "decoder.decoder_intermediate_dim": (check_positive_int, False),
    "decoder.context_length": (check_positive_int, False),
    "data.source": (_TEXT, True),
    "data.source_size": (check_positive_int, False),
    "data.train_examples": (check_positive_int, True),
    "data.eval_examples": (check_positive_int, True),
    "data.test_examples": (check_positive_int, True),
    "data.num_classes": (check_positive_int, False),
    "data.train_dir": (_TEXT, True),
    "data.eval_dir": (_TEXT, True),
    "data.root": (_TEXT, True),
    "data.schema": (_TEXT, True),
    "data.allow_anomalies": (_FLAG, False),
    "data.crop_scale": (_CROP_SCALE, False),
    "data.flip_probability": (_PROBABILITY, False),
    "tokenizer.vocabulary_size": (check_positive_int, False),
    "tokenizer.model": (_TEXT, True),
    "tokenizer.pad_token": (_TEXT, True),
    "tokenizer.remove_punctuation": (_FLAG, False),
    "head.num_heads": (check_positive_int, True),
    "head.freeze_backbone": (_FLAG, False),
    "head.dropout": (_FRACTION, False),
    "training.batch_size": (check_positive_int, False),
    "training.eval_batch_size": (check_positive_int, False),
    "training.steps": (check_positive_int, False),
    "training.steps_per_epoch": (check_positive_int, False),
    "training.epochs": (check_positive_int, False),
    "training.warmup_steps": (_COUNT, False),
    "training.warmup_epochs": (_NON_NEGATIVE, False),
    "training.gradient_accumulation_steps": (check_positive_int, False),
    "training.peak_learning_rate": (_POSITIVE, False),
    "training.final_learning_rate": (_NON_NEGATIVE, False),
    "training.weight_decay": (_NON_NEGATIVE, False),
    "training.layer_decay": (_POSITIVE, True),
    "training.clipnorm": (_POSITIVE, True),
    "training.pixel_loss_weight": (_NON_NEGATIVE, False),
    "training.remat": (_FLAG, False),
    "training.rebuild": (_FLAG, False),
    "initialize.preset": (_TEXT, True),
    # Its form is checked by `keras_aimv2.distribution.check_strategy`.
    "distribution.mesh_shape": (None, True),
}


def recipe_names():
    """The names of the recipes packaged with `keras_aimv2`, sorted.

    Returns:
        A list of str, e.g. `["aimv2_1b", ..., "tiny_scenes_cpu"]`: the
        `.py` files of `RECIPE_DIRECTORY` without their suffix.
    """
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(RECIPE_DIRECTORY)
        if name.endswith(".py") and not name.startswith("_")
    )


def recipe_path(name_or_path):
    """The file of a recipe, given its path or the name of a packaged one.

    Args:
        name_or_path: str. The path of an existing recipe file, used as it
            is, or the name of a recipe packaged with `keras_aimv2`
            (`"tiny_scenes_cpu"`; a `.py` suffix is accepted).

    Returns:
        The path of the recipe file.

    Raises:
        ValueError: when `name_or_path` is neither an existing file nor the
            name of a packaged recipe; the message lists the names.
    """
    if os.path.isfile(name_or_path):
        return name_or_path
    name = os.fspath(name_or_path)
    if name.endswith(".py"):
        name = name[: -len(".py")]
    names = recipe_names()
    if name not in names:
        raise ValueError(
            f"No recipe file or packaged recipe named {name_or_path!r}. "
            f"Pass the path of a .py file that defines RECIPE, or one of "
            f"the packaged recipes: {names} (`aimv2 recipes` lists them)."
        )
    return os.path.join(RECIPE_DIRECTORY, f"{name}.py")


def packaged_recipes():
    """The recipes packaged with `keras_aimv2`, with what each follows.

    Every packaged recipe file is run (they only build dicts) to read its
    `paper` entry and its docstring.

    Returns:
        A list of dicts, one per recipe in the order of `recipe_names`, with
        `name` (what `load_recipe` and `aimv2 pretrain NAME` take), `paper`
        (the recipe's `paper` entry, or `None`), `summary` (the first line
        of the recipe file's docstring, or `""`), `command` (the `aimv2`
        command that runs it: `"probe"` for a recipe with a `head` section,
        else `"pretrain"`) and `path` (its file).

    Example:

    >>> [r["name"] for r in packaged_recipes()]  # doctest: +SKIP
    ['aimv2_1b', 'aimv2_3b', ..., 'probe_fashion_mnist', 'tiny_scenes_cpu']
    """
    listing = []
    for name in recipe_names():
        path = os.path.join(RECIPE_DIRECTORY, f"{name}.py")
        namespace = _run_recipe_file(path)
        recipe = namespace.get("RECIPE")
        if not isinstance(recipe, dict):
            recipe = {}
        lines = (namespace.get("__doc__") or "").strip().splitlines()
        listing.append(
            {
                "name": name,
                "paper": recipe.get("paper"),
                "summary": lines[0].strip() if lines else "",
                "command": "probe" if "head" in recipe else "pretrain",
                "path": path,
            }
        )
    return listing


def load_recipe(name_or_path):
    """Read `RECIPE` from a recipe file, or from a packaged recipe by name.

    Args:
        name_or_path: str. The path of a `.py` file defining `RECIPE`, used
            as it is when the file exists; otherwise the name of a recipe
            packaged with `keras_aimv2` (`"tiny_scenes_cpu"`, or
            `"tiny_scenes_cpu.py"`), found from any working directory.

    Returns:
        A deep copy of the recipe dict, its values checked by
        `check_recipe`.

    Raises:
        ValueError: when no such file or packaged recipe exists (the
            message lists the packaged names), or the file is not valid
            Python (the message gives `path:line`), or defines no valid
            `RECIPE`.

    Example:

    >>> recipe = load_recipe("tiny_scenes_cpu")  # doctest: +SKIP
    >>> recipe["paper"]  # doctest: +SKIP
    'AIMv2 (arXiv:2411.14402), Table A1 scaled down for a CPU'
    """
    found = recipe_path(name_or_path)
    recipe = _run_recipe_file(found).get("RECIPE")
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe file {found!r} must define a dict RECIPE.")
    missing = [s for s in SECTIONS if s not in recipe]
    if missing:
        raise ValueError(f"Recipe {found!r} lacks sections {missing}.")
    try:
        check_recipe(recipe)
    except ValueError as error:
        raise ValueError(f"Recipe file {found!r}: {error}") from None
    return copy.deepcopy(recipe)


def _run_recipe_file(path):
    """The globals of recipe file `path`; a `ValueError` on a syntax error."""
    try:
        return runpy.run_path(path)
    except SyntaxError as error:
        raise ValueError(
            f"Recipe file {path!r} is not valid Python: "
            f"{error.filename}:{error.lineno}: {error.msg}"
        ) from None


def apply_overrides(recipe, overrides):
    """Set `section.key=value` entries in a recipe, then check the recipe.

    Values are read as Python literals (`100`, `1e-3`, `(64, 64, 3)`,
    `None`), or kept as strings when they are not one. Each must have the
    type of the recipe's entry: an int for an int (not a bool), a number
    for a float, a tuple or list of the same length (and element types) for
    a tuple, a str for a str, anything for an entry the recipe leaves
    `None`; `None` only where `RECIPE_RULES` allows it. The whole recipe is
    then checked by `check_recipe`, before anything is built.

    Args:
        recipe: dict. The recipe, changed in place and returned.
        overrides: list of str, each `dotted.key=value`.

    Raises:
        ValueError: naming the entry, the value and what was expected.

    Example:

    >>> recipe = load_recipe("tiny_scenes_cpu")  # doctest: +SKIP
    >>> apply_overrides(recipe, ["training.steps=200"])  # doctest: +SKIP
    >>> recipe["training"]["steps"]  # doctest: +SKIP
    200

    `training.steps=abc` (or `=0`) raises "`training.steps` must be a
    positive int. Received: training.steps='abc'".
    """
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator:
            raise ValueError(
                f"Overrides are `section.key=value`. Received: {override!r}"
            )
        key = key.strip()
        *parents, leaf = key.split(".")
        node = recipe
        for part in parents:
            if not isinstance(node.get(part), dict):
                sections = sorted(
                    k for k, v in node.items() if isinstance(v, dict)
                )
                raise ValueError(
                    f"Unknown recipe section {part!r} in {override!r}. "
                    f"Known: {sections}"
                )
            node = node[part]
        if leaf not in node:
            raise ValueError(
                f"Unknown recipe key {key!r} in {override!r}. Known keys "
                f"here: {sorted(node)}"
            )
        node[leaf] = _overridden(key, node[leaf], _literal(text.strip()))
    check_recipe(recipe)
    return recipe


def check_recipe(recipe):
    """Check the values of a recipe against `RECIPE_RULES`.

    Every entry of the table that the recipe holds, and that is not `None`,
    must pass its rule (a positive int, a learning rate > 0, ...). Entries
    the table does not name, and sections of another kind of recipe (a
    probe's `head`), are left as they are.

    Args:
        recipe: dict. A recipe.

    Raises:
        ValueError: naming the first bad entry, its value and what was
            expected.
    """
    for name, (check, _) in RECIPE_RULES.items():
        node = recipe
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and check is not None:
            check(name, node)


def with_pretraining_defaults(recipe):
    """A copy of a pre-training recipe with `PRETRAINING_DEFAULTS` filled in."""
    recipe = copy.deepcopy(recipe)
    for section, defaults in PRETRAINING_DEFAULTS.items():
        recipe[section] = {**defaults, **(recipe.get(section) or {})}
    return recipe


def backbone_arguments(section):
    """`AIMV2Backbone` arguments of a recipe's `backbone` section.

    The section lists the arguments, or names a size of
    `keras_aimv2.BACKBONE_CONFIGS` under `size`, optionally with overrides.
    """
    from keras_aimv2.configs import BACKBONE_CONFIGS

    arguments = dict(section)
    size = arguments.pop("size", None)
    if size is None:
        return arguments
    if size not in BACKBONE_CONFIGS:
        raise ValueError(
            f"Unknown backbone size {size!r}. Known sizes: "
            f"{sorted(BACKBONE_CONFIGS)}"
        )
    return {**BACKBONE_CONFIGS[size], **arguments}


def _overridden(name, old, value):
    """`value` as entry `name` holding `old`, after checking its type."""
    check, may_be_none = RECIPE_RULES.get(name, (None, False))
    if value is None and (old is None or may_be_none):
        return None
    if check is not None:
        check(name, value)
    try:
        return _like(old, value)
    except TypeError:
        raise ValueError(
            f"`{name}` must be {_kind(old)}, as in the recipe ({old!r}). "
            f"Received: {name}={value!r}"
        ) from None


def _like(old, value):
    """`value` in the form of `old`; a `TypeError` when it has another."""
    if old is None:
        return value
    if isinstance(old, bool) or isinstance(value, bool):
        fits = isinstance(old, bool) and isinstance(value, bool)
    elif isinstance(old, int):
        fits = isinstance(value, int)
    elif isinstance(old, float):
        fits = isinstance(value, (int, float))
        value = float(value) if fits else value
    elif isinstance(old, tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(old):
            raise TypeError
        return tuple(_like(o, v) for o, v in zip(old, value, strict=True))
    elif isinstance(old, list):
        fits = isinstance(value, (tuple, list))
        value = list(value) if fits else value
    else:
        fits = isinstance(value, type(old))
    if not fits:
        raise TypeError
    return value


def _kind(old):
    if isinstance(old, bool):
        return "a bool"
    if isinstance(old, int):
        return "an int"
    if isinstance(old, float):
        return "a number"
    if isinstance(old, tuple):
        return f"a tuple or list of {len(old)} values of the same types"
    if isinstance(old, list):
        return "a list or tuple"
    return f"a {type(old).__name__}"


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
