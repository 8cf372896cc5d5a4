"""Recipes: one plain-Python file per experiment, and overrides of them.

A recipe file defines `RECIPE`, a dict with the sections `backbone`
(`AIMV2Backbone` arguments), `decoder` (the decoder arguments of
`AIMV2Pretrainer`), `data`, `tokenizer`, `training` and `output_dir`, and
names the paper configuration it follows under `paper`. Nothing is hidden in
code: `pretrain` reads every number from the recipe.
"""

import ast
import copy
import os
import runpy

SECTIONS = ("backbone", "decoder", "data", "tokenizer", "training")

# Entries a pre-training recipe written before they existed may lack: one
# device, float32, no accumulation, no rematerialization, the tokenizer's
# own pad piece and punctuation kept.
PRETRAINING_DEFAULTS = {
    "tokenizer": {"pad_token": None, "remove_punctuation": False},
    "training": {
        "dtype_policy": "float32",
        "gradient_accumulation_steps": 1,
        "remat": False,
    },
    "distribution": {"strategy": "none", "mesh_shape": None},
}


def load_recipe(path):
    """Read `RECIPE` from a recipe file (a path, or a name in `recipes/`).

    Args:
        path: str. A `.py` file defining `RECIPE`, or the name of one in the
            `recipes/` folder of the working directory.

    Returns:
        A deep copy of the recipe dict.
    """
    candidates = [path, os.path.join("recipes", f"{path}.py")]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise ValueError(
            f"No recipe file at {path!r} (looked for {candidates}). Pass the "
            "path of a .py file that defines RECIPE."
        )
    recipe = runpy.run_path(found).get("RECIPE")
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe file {found!r} must define a dict RECIPE.")
    missing = [s for s in SECTIONS if s not in recipe]
    if missing:
        raise ValueError(f"Recipe {found!r} lacks sections {missing}.")
    return copy.deepcopy(recipe)


def apply_overrides(recipe, overrides):
    """Set `section.key=value` entries in a recipe, checking each key.

    Values are read as Python literals (`100`, `1e-3`, `(64, 64, 3)`,
    `None`), or kept as strings when they are not one.

    Args:
        recipe: dict. The recipe, changed in place and returned.
        overrides: list of str, each `dotted.key=value`.
    """
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator:
            raise ValueError(
                f"Overrides are `section.key=value`. Received: {override!r}"
            )
        *parents, leaf = key.strip().split(".")
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
        node[leaf] = _literal(text.strip())
    return recipe


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


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
