"""Recipes: one plain-Python file per experiment, typed, and overrides.

A recipe file defines `RECIPE`, a dict with a `name`, the `paper`
configuration it follows, its `output_dir`, and its sections. A
pre-training recipe (`aimv2 pretrain`) has the sections `backbone`
(`AIMV2Backbone` arguments), `decoder` (the decoder of `AIMV2Pretrainer`),
`data`, `tokenizer`, `training`, and optionally `distribution` and
`initialize`; a probe recipe (`aimv2 probe`) has `backbone`, `data`, `head`
and `training`; a LiT recipe (`aimv2 lit`) has `backbone` (the locked
encoder), `text`, `data`, `tokenizer`, `training` and `zero_shot`.
Nothing is hidden in code: a run reads every number from its recipe.

Loading a recipe makes it typed (`PretrainingRecipe` or `ProbeRecipe`, one
frozen dataclass per section; see `keras_aimv2.recipes._sections`): every
entry is checked against its type and rule, an unknown entry (a misspelled
key) or a missing one without a default is an error naming it, and the
entries that recipes written before them lack take their type's default.
Entries read as attributes, `recipe.training.steps`.

The recipes of this package are the `.py` files of this folder, installed
with it; `load_recipe` takes one by name (`tiny_scenes_cpu`) from any
working directory, or any recipe file by its path. `packaged_recipes` lists
them (`aimv2 recipes` prints the list).
"""

import ast
import os
import runpy
import traceback

from keras_aimv2.recipes._sections import RECIPE_TYPES
from keras_aimv2.recipes._sections import AblationRecipe
from keras_aimv2.recipes._sections import AblationSection
from keras_aimv2.recipes._sections import BackboneSection
from keras_aimv2.recipes._sections import DecoderSection
from keras_aimv2.recipes._sections import DistributionSection
from keras_aimv2.recipes._sections import HeadSection
from keras_aimv2.recipes._sections import InitializeSection
from keras_aimv2.recipes._sections import LiTRecipe
from keras_aimv2.recipes._sections import LiTTraining
from keras_aimv2.recipes._sections import PretrainingData
from keras_aimv2.recipes._sections import PretrainingRecipe
from keras_aimv2.recipes._sections import PretrainingTraining
from keras_aimv2.recipes._sections import ProbeBackboneSection
from keras_aimv2.recipes._sections import ProbeData
from keras_aimv2.recipes._sections import ProbeRecipe
from keras_aimv2.recipes._sections import ProbeTraining
from keras_aimv2.recipes._sections import Recipe
from keras_aimv2.recipes._sections import RecipeReference
from keras_aimv2.recipes._sections import Section
from keras_aimv2.recipes._sections import TextTowerSection
from keras_aimv2.recipes._sections import TokenizerSection
from keras_aimv2.recipes._sections import ZeroShotSection
from keras_aimv2.recipes._sections import backbone_arguments
from keras_aimv2.recipes._sections import convert
from keras_aimv2.recipes._sections import convert_entry
from keras_aimv2.recipes._sections import field_type
from keras_aimv2.recipes._sections import recipe_type
from keras_aimv2.recipes._sections import set_entry
from keras_aimv2.recipes._sections import unknown_key_error

__all__ = [
    "AblationRecipe",
    "AblationSection",
    "BackboneSection",
    "DecoderSection",
    "DistributionSection",
    "HeadSection",
    "InitializeSection",
    "LiTRecipe",
    "LiTTraining",
    "PretrainingData",
    "PretrainingRecipe",
    "PretrainingTraining",
    "ProbeBackboneSection",
    "ProbeData",
    "ProbeRecipe",
    "ProbeTraining",
    "RECIPE_TYPES",
    "Recipe",
    "RecipeReference",
    "Section",
    "TextTowerSection",
    "TokenizerSection",
    "ZeroShotSection",
    "apply_overrides",
    "backbone_arguments",
    "convert",
    "convert_entry",
    "field_type",
    "load_recipe",
    "packaged_recipes",
    "recipe_from_dict",
    "recipe_names",
    "recipe_path",
    "set_entry",
    "typed_recipe",
    "unknown_key_error",
]

# The folder of the packaged recipe files: this package's own.
RECIPE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def recipe_names():
    """The names of the recipes packaged with `keras_aimv2`, sorted.

    Returns:
        A list of str, e.g. `["aimv2_1b", ..., "tiny_scenes_cpu"]`: the
        `.py` files of `RECIPE_DIRECTORY` without their suffix (those
        starting with `_` are the package's own modules).
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
                "command": recipe_type(recipe).KIND,
                "path": path,
            }
        )
    return listing


def load_recipe(name_or_path):
    """Read `RECIPE` from a recipe file, or a packaged recipe by name.

    Args:
        name_or_path: str. The path of a `.py` file defining `RECIPE`, used
            as it is when the file exists; otherwise the name of a recipe
            packaged with `keras_aimv2` (`"tiny_scenes_cpu"`, or
            `"tiny_scenes_cpu.py"`), found from any working directory.

    Returns:
        The typed recipe: a `PretrainingRecipe`, or a `ProbeRecipe` when
        `RECIPE` has a `head` section.

    Raises:
        ValueError: naming the file, when no such file or packaged recipe
            exists (the message lists the packaged names), the file is not
            valid Python or fails (the message gives `path:line`), defines
            no dict `RECIPE`, or its recipe has an unknown entry, lacks one
            without a default, or holds a value its type refuses (the
            message names the entry, the value and what was expected).

    Example:

    >>> recipe = load_recipe("tiny_scenes_cpu")  # doctest: +SKIP
    >>> recipe.training.steps  # doctest: +SKIP
    600
    """
    found = recipe_path(name_or_path)
    values = _run_recipe_file(found).get("RECIPE")
    if not isinstance(values, dict):
        raise ValueError(
            f"Recipe file {found!r} must define a dict RECIPE. Received: "
            f"RECIPE={values!r:.200}"
        )
    try:
        return recipe_from_dict(values)
    except ValueError as error:
        raise ValueError(f"Recipe file {found!r}: {error}") from None


def recipe_from_dict(values):
    """The typed recipe of `values`, a recipe's dict.

    `values` may be a recipe file's `RECIPE` or the `recipe.json` a run
    wrote (its tuples written as lists), from this version or an earlier
    one: entries an earlier version did not write take their defaults.

    Args:
        values: dict. The recipe's entries, by section.

    Returns:
        A `ProbeRecipe` when `values` has a `head` section, else a
        `PretrainingRecipe`.

    Raises:
        ValueError: naming the entry that is unknown, missing, or of a
            value its type refuses.
    """
    return recipe_type(values).from_dict(values)


def typed_recipe(recipe, recipe_class):
    """`recipe` as a `recipe_class`: a typed recipe as it is, a dict typed.

    Args:
        recipe: a typed recipe, or a dict of a recipe's entries.
        recipe_class: `PretrainingRecipe` or `ProbeRecipe`. The kind of
            recipe the caller runs.

    Raises:
        ValueError: for a recipe of the other kind (naming the command that
            runs it), or a dict that is not a valid recipe.
    """
    if isinstance(recipe, dict):
        found = recipe_type(recipe)
        if found is recipe_class:
            return recipe_class.from_dict(recipe)
    elif isinstance(recipe, recipe_class):
        return recipe
    else:
        found = type(recipe)
    if found in RECIPE_TYPES:
        name = recipe.get("name") if isinstance(recipe, dict) else recipe.name
        raise ValueError(
            f"Recipe {name!r} is a {found.KIND} recipe: run it with `aimv2 "
            f"{found.KIND}`, not `aimv2 {recipe_class.KIND}`."
        )
    raise ValueError(
        f"A recipe must be a {recipe_class.__name__} (see `load_recipe`) or "
        f"a dict. Received: {type(recipe).__name__}"
    )


def _run_recipe_file(path):
    """The globals of recipe file `path`; a `ValueError` naming the file
    and line of a syntax error or of the error the file raised."""
    try:
        return runpy.run_path(path)
    except SyntaxError as error:
        raise ValueError(
            f"Recipe file {path!r} is not valid Python: "
            f"{error.filename}:{error.lineno}: {error.msg}"
        ) from None
    except Exception as error:
        frames = [
            frame
            for frame in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(frame.filename) == os.path.abspath(path)
        ]
        where = f"{path}:{frames[-1].lineno}" if frames else path
        raise ValueError(
            f"Recipe file {path!r} failed at {where}: "
            f"{type(error).__name__}: {error}"
        ) from None


def apply_overrides(recipe, overrides):
    """The recipe with `section.key=value` entries set, checked whole.

    Each value is read as a Python literal (`100`, `1e-3`, `(64, 64, 3)`,
    `None`, `True`), or kept as text when it is not one (`runs/x`), then
    converted to the entry's type: an int for an int (not a bool), a
    number for a float, a tuple or list of the right length and element
    types for a tuple, text for a str, `None` only where the type allows
    it. The new recipe is then checked whole (entries that depend on each
    other), before anything is built.

    Args:
        recipe: `PretrainingRecipe` or `ProbeRecipe`. Left unchanged.
        overrides: list of str, each `section.key=value` (or `key=value`
            for a top-level entry, such as `output_dir`).

    Returns:
        A new recipe of the same type.

    Raises:
        ValueError: naming the entry, the value and what was expected, or
            the unknown section or key (with the known ones).

    Example:

    >>> recipe = load_recipe("tiny_scenes_cpu")  # doctest: +SKIP
    >>> overrides = ["training.steps=200"]
    >>> recipe = apply_overrides(recipe, overrides)  # doctest: +SKIP
    >>> recipe.training.steps  # doctest: +SKIP
    200

    `training.steps=abc` (or `=0`) raises "`training.steps` must be a
    positive int. Received: training.steps='abc'".
    """
    values = recipe.to_dict()
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator:
            raise ValueError(
                f"Overrides are `section.key=value`. Received: {override!r}"
            )
        key = key.strip()
        value = _literal(text.strip())
        set_entry(values, type(recipe), key, value, where=override)
    return type(recipe).from_dict(values)


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
