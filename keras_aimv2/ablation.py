"""`ablate`: AIMv2's objective ablation (paper Table 9) in one command.

AIMv2 ("Multimodal Autoregressive Pre-training of Large Vision Encoders",
Fini et al., CVPR 2025, Table 9) pre-trains the same ViT-L with several
objectives and compares the frozen encoders by an attentive probe on
ImageNet-1k: pixels only (AIMv1) 72.0, captions only 85.1-85.4, both
(AIMv2) 85.6. `ablate` runs that comparison at any scale from an ablation
recipe (`keras_aimv2.recipes.AblationRecipe`, e.g. the packaged
`ablation_fashion_mnist` and `ablation_scenes`): the same pre-training
recipe (same encoder, data, steps, batch and seed) is run once per
objective,

- `"aimv2"`: the recipe's objective, `text + pixel_loss_weight * pixel`;
- `"captions"`: `training.pixel_loss_weight=0`, captioning alone;
- `"pixels"`: `training.text_loss_weight=0`, next-patch regression alone
  (AIMv1's objective: the image comes first in the causal decoder, so no
  image position ever sees the caption);
- `"untrained"`: no pre-training, the encoder at the initialization every
  other run starts from;

then each encoder is probed with the probe recipe, its `backbone` the
pre-trained one. Each part runs in its own folder of the output directory
through `keras_aimv2.training.pretrain` and `keras_aimv2.transfer.probe`,
so an interrupted pre-training resumes; a finished part records what it
ran (`ablation-part.json`) and a rerun of the same recipe skips it. The
results are one table (`ablation.md`, `ablation.json`) and one bar chart
(`ablation.png`), written atomically.
"""

import functools
import json
import math
import os
import shutil
import time

import keras

from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.outputs import RunOutput
from keras_aimv2.outputs import atomic_path
from keras_aimv2.outputs import write_json_atomically
from keras_aimv2.recipes import AblationRecipe
from keras_aimv2.recipes import PretrainingRecipe
from keras_aimv2.recipes import ProbeBackboneSection
from keras_aimv2.recipes import ProbeRecipe
from keras_aimv2.recipes import set_entry
from keras_aimv2.recipes import typed_recipe
from keras_aimv2.recipes._sections import OBJECTIVES

__all__ = ["OBJECTIVES", "ablate", "objective_recipe", "probe_recipe"]

# What each pre-trained objective changes in the pre-training recipe.
OBJECTIVE_OVERRIDES = {
    "aimv2": {},
    "captions": {"training.pixel_loss_weight": 0.0},
    "pixels": {"training.text_loss_weight": 0.0},
}
# ImageNet-1k top-1 of ViT-L's frozen trunk per objective (Table 9).
PAPER_TOP1 = {
    "aimv2": "85.6",
    "captions": "85.1-85.4",
    "pixels": "72.0",
    "untrained": None,
}
# The record of a finished part, in its folder.
PART_RECORD = "ablation-part.json"
# Entries that change how a run reports, not what it computes.
_QUIET_ENTRIES = (("training", "verbose"), ("training", "rebuild"))


def log(message):
    """A log line of `aimv2 ablate`."""
    print(f"[ablate] {message}", flush=True)


def objective_recipe(pretrain, objective):
    """The pre-training recipe of one objective.

    Args:
        pretrain: `keras_aimv2.recipes.PretrainingRecipe`. The ablation's.
        objective: str. `"aimv2"`, `"captions"` or `"pixels"`.

    Returns:
        A `PretrainingRecipe`, `pretrain` with the objective's loss weights
        (`OBJECTIVE_OVERRIDES`).
    """
    if objective not in OBJECTIVE_OVERRIDES:
        raise ValueError(
            f"No pre-training for objective {objective!r}: expected one of "
            f"{list(OBJECTIVE_OVERRIDES)}."
        )
    values = pretrain.to_dict()
    for key, value in OBJECTIVE_OVERRIDES[objective].items():
        set_entry(values, PretrainingRecipe, key, value)
    values["name"] = f"{pretrain.name}:{objective}"
    return PretrainingRecipe.from_dict(values)


def probe_recipe(probe, pretrain, objective, preset):
    """The probe recipe of one objective's encoder.

    Args:
        probe: `keras_aimv2.recipes.ProbeRecipe`. The ablation's.
        pretrain: `keras_aimv2.recipes.PretrainingRecipe`. The encoder's
            architecture.
        objective: str. Names the recipe.
        preset: str. The encoder's backbone preset directory.

    Returns:
        A `ProbeRecipe` whose `backbone` is the pre-training's, loaded from
        `preset`.
    """
    values = probe.to_dict()
    values["backbone"] = ProbeBackboneSection(
        **pretrain.backbone.to_dict(), preset=preset
    ).to_dict()
    values["name"] = f"{probe.name}:{objective}"
    return ProbeRecipe.from_dict(values)


def ablate(recipe, output_dir=None):
    """Run an ablation recipe; returns the rows written to ablation.json.

    Args:
        recipe: `keras_aimv2.recipes.AblationRecipe` (see the packaged
            `ablation_fashion_mnist`), or a dict of its entries.
        output_dir: str or `None`. Where every part and the results are
            written. Defaults to the recipe's `output_dir`. Running again
            resumes an interrupted pre-training and skips finished parts.

    Returns:
        A dict: the recipe's name, the backend, `rows` (one per objective:
        its probe top-1, held-out pre-training losses, wall times and
        encoder), whether the probe follows the paper's ordering, and the
        paths of the table and the chart.

    Raises:
        ValueError: the recipe is not a valid ablation recipe.
        keras_aimv2.run_directory.RunError: a pre-training cannot go on
            (see `keras_aimv2.training.pretrain`).

    Example:

    >>> from keras_aimv2.recipes import load_recipe
    >>> recipe = load_recipe("ablation_fashion_mnist")
    >>> results = ablate(recipe)  # doctest: +SKIP
    >>> [row["objective"] for row in results["rows"]]  # doctest: +SKIP
    ['aimv2', 'captions', 'pixels', 'untrained']
    """
    from keras_aimv2.training import pretrain as run_pretraining
    from keras_aimv2.transfer import probe as run_probe

    started = time.time()
    recipe = typed_recipe(recipe, AblationRecipe)
    recipe.check_runnable()
    output = RunOutput(recipe.output_directory(output_dir), "ablate").create()
    output.write_recipe(recipe)
    pretrain, probe = recipe.pretrain.resolve(), recipe.probe.resolve()
    objectives = recipe.ablation.objectives
    log(
        f"recipe {recipe.name!r} on {keras.config.backend()}: "
        f"{', '.join(objectives)} -> {output.directory}"
    )
    rows = []
    for number, objective in enumerate(objectives, 1):
        folder = output.path(objective)
        log(f"objective {objective!r} ({number}/{len(objectives)})")
        if objective == "untrained":
            directory = os.path.join(folder, "encoder")
            key = _identity(pretrain, keep=("backbone", "training"))
            run = functools.partial(_save_untrained, pretrain, directory)
            trained = _part(directory, key, run, "untrained encoder")
        else:
            directory = os.path.join(folder, "pretrain")
            pretraining = objective_recipe(pretrain, objective)
            key = _identity(pretraining)
            run = functools.partial(run_pretraining, pretraining, directory)
            trained = _part(directory, key, run, "pre-training")
        preset = os.path.join(trained["presets"], "backbone")
        probing = probe_recipe(probe, pretrain, objective, preset)
        directory = os.path.join(folder, "probe")
        run = functools.partial(run_probe, probing, directory)
        key = {"probe": _identity(probing), "encoder": key}
        probed = _part(directory, key, run, "probe")
        rows.append(_row(objective, pretrain, trained, probed, preset))
        log(f"objective {objective!r}: probe top-1 {probed['top1']:.2%}")
    _fill_untrained_losses(rows)
    return _write_results(recipe, probe, rows, output, started)


def _identity(recipe, keep=None):
    """What a part computes from `recipe`: its entries (those of the
    sections `keep`, if given) but those that only change its reports, as
    plain JSON."""
    values = recipe.to_dict()
    values.pop("output_dir", None)
    for section, name in _QUIET_ENTRIES:
        values.get(section, {}).pop(name, None)
    if keep is not None:
        values = {name: values[name] for name in keep}
    return json.loads(json.dumps(values, default=str))


def _part(directory, key, run, what):
    """Run a part unless its record says it finished with the same `key`.

    Returns:
        The part's summary: recorded, or returned by `run`.
    """
    record_path = os.path.join(directory, PART_RECORD)
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as file:
            record = json.load(file)
        if record.get("key") == key:
            log(f"{what} finished before, skipped: {directory}")
            return record["summary"]
    log(f"{what} -> {directory}")
    summary = run()
    os.makedirs(directory, exist_ok=True)
    write_json_atomically(record_path, {"key": key, "summary": summary})
    return summary


def _save_untrained(pretrain, directory):
    """Save the encoder every pre-training of `pretrain` starts from.

    `keras_aimv2.training.build_pretrainer` seeds with `training.seed` and
    builds the backbone first, in the recipe's dtype policy: the same
    calls give the same weights (a recipe's `initialize.preset` is not
    applied: "untrained" is no pre-training at all).
    """
    started = time.time()
    keras.utils.set_random_seed(pretrain.training.seed)
    backbone = AIMV2Backbone(
        **pretrain.backbone.arguments(),
        dtype=pretrain.training.dtype_policy,
    )
    presets = os.path.join(directory, "preset")
    final = os.path.join(presets, "backbone")
    writing = os.path.join(presets, ".writing-backbone")
    shutil.rmtree(writing, ignore_errors=True)
    backbone.save_to_preset(writing)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(writing, final)
    return {
        "presets": presets,
        "wall_time_s": round(time.time() - started, 1),
    }


def _row(objective, pretrain, trained, probed, preset):
    weights = None
    if objective in OBJECTIVE_OVERRIDES:
        run = objective_recipe(pretrain, objective)
        weights = {
            "text": run.training.text_loss_weight,
            "pixel": run.training.pixel_loss_weight,
        }
    held_out = (trained.get("held_out") or {}).get("trained")
    return {
        "objective": objective,
        "loss_weights": weights,
        "probe_top1": probed["top1"],
        "probe_test_loss": probed.get("test_loss"),
        "held_out": _losses(held_out),
        "pretraining_steps": trained.get("steps", 0),
        "pretraining_wall_time_s": trained.get("wall_time_s"),
        "probe_wall_time_s": probed.get("wall_time_s"),
        "encoder": preset,
        "paper_top1": PAPER_TOP1[objective],
        "_initial": _losses((trained.get("held_out") or {}).get("untrained")),
    }


def _losses(values):
    if not values:
        return None
    names = ("text_loss", "pixel_loss", "text_accuracy")
    return {name: values.get(name) for name in names}


def _fill_untrained_losses(rows):
    """The untrained row's held-out losses: those every pre-training
    measured at its start (the same initialization)."""
    initial = next((row["_initial"] for row in rows if row["_initial"]), None)
    for row in rows:
        del row["_initial"]
        if row["objective"] == "untrained":
            row["held_out"] = initial


def paper_ordering_holds(rows):
    """Whether the probe ranks the objectives as the paper does.

    Args:
        rows: list of dicts with `objective` and `probe_top1`.

    Returns:
        `True` if the accuracies of the paper's objectives present
        (`aimv2` >= `captions` >= `pixels`) do not increase in that order,
        `None` if fewer than two of them ran.
    """
    top1 = {row["objective"]: row["probe_top1"] for row in rows}
    ranked = [top1[name] for name in OBJECTIVE_OVERRIDES if name in top1]
    if len(ranked) < 2:
        return None
    return all(a >= b for a, b in zip(ranked, ranked[1:], strict=False))


def _write_results(recipe, probe, rows, output, started):
    from keras_aimv2.visualize import draw_ablation

    task = (
        f"scenes task {probe.data.task!r}"
        if probe.data.source == "scenes"
        else probe.data.source
    )
    results = {
        "recipe": recipe.name,
        "backend": keras.config.backend(),
        "probe": task,
        "rows": rows,
        "paper_ordering_holds": paper_ordering_holds(rows),
        "table": output.path("ablation.md"),
        "plot": output.path("ablation.png"),
        "wall_time_s": round(time.time() - started, 1),
    }
    write_json_atomically(output.path("ablation.json"), results)
    with atomic_path(results["table"]) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(markdown_table(recipe.name, task, rows))
    draw_ablation(
        rows, results["plot"], f"{recipe.name}: probe top-1 on {task}"
    )
    for line in markdown_table(recipe.name, task, rows).splitlines()[2:]:
        if line.startswith("|"):
            log(line)
    log(f"wrote {results['table']}, ablation.json and {results['plot']}")
    return results


def markdown_table(name, task, rows):
    """The ablation's table in Markdown.

    Args:
        name: str. The recipe's name.
        task: str. What the probe classifies.
        rows: list of dicts, as `ablate` returns them.

    Returns:
        The text of `ablation.md`.
    """
    lines = [
        f"# Objective ablation: {name}",
        "",
        f"Attentive probe of each frozen encoder on {task}; held-out "
        "losses of the pre-training (for `untrained`: of the model at "
        "its initialization).",
        "",
        "| objective | loss weights (text, pixel) | probe top-1 | held-out "
        "text loss | held-out pixel loss | pre-training s | probe s | "
        "paper IN-1k top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        weights = row["loss_weights"]
        held_out = row["held_out"] or {}
        cells = [
            row["objective"],
            f"{weights['text']:g}, {weights['pixel']:g}" if weights else "-",
            f"{100 * row['probe_top1']:.2f}%",
            _number(held_out.get("text_loss")),
            _number(held_out.get("pixel_loss")),
            _number(row["pretraining_wall_time_s"], "{:.0f}"),
            _number(row["probe_wall_time_s"], "{:.0f}"),
            row["paper_top1"] or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    holds = paper_ordering_holds(rows)
    if holds is not None:
        lines += [
            "",
            "The paper's ordering (aimv2 >= captions >= pixels) "
            + ("holds." if holds else "does not hold at this scale."),
        ]
    return "\n".join(lines) + "\n"


def _number(value, form="{:.4f}"):
    if value is None or not math.isfinite(value):
        return "-"
    return form.format(value)
