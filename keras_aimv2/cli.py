"""The `aimv2` command: pre-train, probe, draw pictures, build data, tokenizers.

    aimv2 recipes
    aimv2 pretrain tiny_scenes_cpu --set training.steps=200
    aimv2 pretrain aimv2_1b --strategy sharded --mesh-shape 8,8
    aimv2 pretrain my_recipe.py
    aimv2 probe probe_fashion_mnist --set backbone.preset=DIR
    aimv2 lit lit_fashion_mnist --set backbone.preset=DIR
    aimv2 ablate ablation_fashion_mnist --set pretrain.training.steps=20
    aimv2 pictures runs/tiny/preset/pretrainer --data DIR --output DIR
    aimv2 --backend torch info
    aimv2 build-dataset scenes --num-examples 1000 --output data/scenes
    aimv2 train-tokenizer --captions data/scenes --vocabulary-size 512 ...
    aimv2 validate data/scenes --output runs/validation
    aimv2 convert aimv2-large-patch14-224/ presets/aimv2_large_patch14_224

Recipes are named by the packaged ones (`aimv2 recipes` lists them) or
given as the path of a recipe file.

`--backend` (or the `KERAS_BACKEND` variable) picks JAX, TensorFlow or
PyTorch; it must be chosen before Keras is imported, which this module
does only after reading the command line.
"""

import argparse
import os
import sys

# Subcommands whose options their own parser reads.
FORWARDING = {
    "build-dataset": "Write TFRecord shards of images and captions.",
    "train-tokenizer": "Train a SentencePiece model on captions.",
    "convert": "Convert a released AIMv2 checkpoint (safetensors) into a "
    "keras-hub preset directory.",
    "validate": "Validate TFRecord shards with TensorFlow Data Validation, "
    "in its own environment made on first use (`--setup` only makes it).",
}


def _parser():
    parser = argparse.ArgumentParser(
        prog="aimv2", description="AIMv2 pre-training with Keras 3."
    )
    parser.add_argument(
        "--backend",
        choices=("jax", "tensorflow", "torch"),
        help="Keras backend (default: $KERAS_BACKEND, else jax).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "recipes",
        help="List the packaged recipes (name, paper, summary) that "
        "pretrain and probe take by name.",
    )
    recipe_commands = (
        ("pretrain", "Run a recipe; rerun the same command to resume it."),
        (
            "probe",
            "Train an attentive probe on an encoder (recipe) and report its "
            "test top-1 accuracy.",
        ),
        (
            "lit",
            "LiT-tune a text tower on a locked encoder (recipe), then "
            "classify zero-shot; rerun to resume.",
        ),
        (
            "ablate",
            "Pre-train one encoder with AIMv2's objective, captions only, "
            "pixels only (and none), probe each, tabulate (paper Table 9); "
            "rerun to resume.",
        ),
    )
    for name, help_text in recipe_commands:
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "recipe",
            help="The name of a packaged recipe (see `aimv2 recipes`), e.g. "
            "tiny_scenes_cpu, or the path of a recipe file.",
        )
        command.add_argument(
            "--set",
            dest="overrides",
            nargs="+",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="Override recipe entries, e.g. training.steps=100."
            + (
                " An ablation's sub-recipes take pretrain.SECTION.KEY=VALUE "
                "and probe.SECTION.KEY=VALUE, e.g. "
                "pretrain.training.steps=20 probe.training.epochs=1."
                if name == "ablate"
                else ""
            ),
        )
        command.add_argument("--output-dir", help="Default: the recipe's.")
        if name == "ablate":
            command.add_argument(
                "--objectives",
                nargs="+",
                metavar="OBJECTIVE",
                help="The objectives to run, in order, of aimv2, captions, "
                "pixels, untrained (ablation.objectives).",
            )
        if name in ("pretrain", "lit"):
            command.add_argument(
                "--strategy",
                choices=("none", "data_parallel", "sharded"),
                help="Distribution (distribution.strategy): one device, "
                "every device a replica, or (JAX) weights split over a mesh.",
            )
            command.add_argument(
                "--mesh-shape",
                metavar="DATA,MODEL",
                help="Device mesh of --strategy sharded, e.g. 2,4 "
                "(distribution.mesh_shape).",
            )

    commands.add_parser(
        "info", help="Print the Keras backend, versions and devices."
    )
    pictures = commands.add_parser(
        "pictures", help="Draw the pictures of a saved pre-training preset."
    )
    pictures.add_argument("preset", help="A saved AIMV2Pretrainer preset.")
    pictures.add_argument("--data", required=True, help="Shard directory.")
    pictures.add_argument("--split", default="eval")
    pictures.add_argument("--output", required=True, help="Output folder.")
    pictures.add_argument("--log", help="CSV training log for the curves.")

    for name, help_text in FORWARDING.items():
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv=None):
    parser = _parser()
    # `build-dataset`, `train-tokenizer`, `validate` and `convert` take their
    # own options (`--help` included), which the subcommand's parser cannot
    # see: they pass on.
    args, forwarded = parser.parse_known_args(argv)
    if args.command in FORWARDING:
        forwarded += args.args
    elif forwarded:
        parser.error(f"unrecognized arguments: {' '.join(forwarded)}")
    os.environ.setdefault("KERAS_BACKEND", args.backend or "jax")
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
        keras = sys.modules.get("keras")
        if keras is not None and keras.config.backend() != args.backend:
            # Importing this module imported Keras with the old backend
            # (through the package): start again with the chosen one.
            command = sys.argv[1:] if argv is None else list(argv)
            os.execv(
                sys.executable,
                [sys.executable, "-m", "keras_aimv2.cli", *command],
            )
    if args.command in ("pretrain", "probe", "lit", "ablate"):
        # On a CPU host, JAX's XLA:CPU tuning (`keras_aimv2.xla_cpu`): in
        # time, since nothing has started JAX's backends yet.
        from keras_aimv2 import xla_cpu

        xla_cpu.configure()
    if args.command == "info":
        return _info()
    if args.command == "build-dataset":
        from keras_aimv2.data.build import main as build_main

        return build_main(forwarded, prog="aimv2 build-dataset")
    if args.command == "train-tokenizer":
        from keras_aimv2.data.tokenizer_training import main as tokenizer_main

        return tokenizer_main(forwarded, prog="aimv2 train-tokenizer")
    if args.command == "validate":
        from keras_aimv2.data.validation_env import main as validate_main

        return validate_main(forwarded, prog="aimv2 validate")
    if args.command == "convert":
        from keras_aimv2.conversion import main as convert_main

        return convert_main(forwarded, prog="aimv2 convert")
    if args.command == "recipes":
        return _recipes()
    if args.command == "pretrain":
        from keras_aimv2.training import pretrain

        return _run_recipe("pretrain", pretrain, args)
    if args.command == "probe":
        from keras_aimv2.transfer import probe

        return _run_recipe("probe", probe, args)
    if args.command == "lit":
        from keras_aimv2.lit_tuning import lit_tune

        return _run_recipe("lit", lit_tune, args)
    if args.command == "ablate":
        from keras_aimv2.ablation import ablate

        return _run_recipe("ablate", ablate, args)
    return _pictures(args)


def _run_recipe(command, run, args):
    """Load a recipe, apply the overrides and run it; errors exit cleanly."""
    from keras_aimv2.data.schema_gate import DataValidationError
    from keras_aimv2.recipes import apply_overrides
    from keras_aimv2.recipes import load_recipe
    from keras_aimv2.run_directory import RunError

    overrides = list(args.overrides)
    if getattr(args, "strategy", None):
        overrides.append(f"distribution.strategy={args.strategy}")
    if getattr(args, "mesh_shape", None):
        overrides.append(f"distribution.mesh_shape=({args.mesh_shape})")
    if getattr(args, "objectives", None):
        overrides.append(f"ablation.objectives={tuple(args.objectives)!r}")
    try:
        recipe = load_recipe(args.recipe)
        if recipe.KIND != command:
            raise ValueError(
                f"{args.recipe!r} is a {recipe.KIND} recipe: run it with "
                f"`aimv2 {recipe.KIND} {args.recipe}`."
            )
        # Typed, the recipe holds every entry (those a recipe written
        # before them lacks at their defaults): `--set` reaches them all.
        recipe = apply_overrides(recipe, overrides)
        recipe.check_runnable()
        recipe.output_directory(args.output_dir)
    except ValueError as error:
        print(f"aimv2 {command}: {error}", file=sys.stderr)
        return 2
    try:
        run(recipe, args.output_dir)
    except DataValidationError as error:
        print(f"aimv2 {command}: {error}", file=sys.stderr)
        return 1
    except RunError as error:
        print(f"aimv2 {command}: {error}", file=sys.stderr)
        return error.exit_status
    return 0


def _recipes():
    """Print the packaged recipes and how to run one."""
    from keras_aimv2.recipes import packaged_recipes

    listing = packaged_recipes()
    width = max(len(r["name"]) for r in listing)
    print("Packaged recipes:\n")
    for recipe in listing:
        command = f"aimv2 {recipe['command']} {recipe['name']}"
        print(f"  {recipe['name']:<{width}}  {recipe['summary']}")
        print(f"  {'':<{width}}  paper: {recipe['paper']}")
        print(f"  {'':<{width}}  run:   {command}")
    print(
        "\nRun one by name, e.g. `aimv2 pretrain tiny_scenes_cpu --set "
        "training.steps=200`,\nor pass the path of your own recipe file "
        "(a .py file defining RECIPE),\ne.g. `aimv2 pretrain "
        "my_recipe.py`; copy a packaged recipe to start one:\n"
        f"  {os.path.dirname(listing[0]['path'])}"
    )
    return 0


def _info():
    import json

    import keras
    import keras_hub

    import keras_aimv2

    print(
        json.dumps(
            {
                "backend": keras.config.backend(),
                "keras": keras.__version__,
                "keras_hub": keras_hub.__version__,
                "keras_aimv2": keras_aimv2.__version__,
                "devices": _devices(keras.config.backend()),
            },
            indent=2,
        )
    )
    return 0


def _devices(backend):
    if backend == "torch":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    import jax

    return [str(d) for d in jax.devices()]


def _pictures(args):
    from keras_aimv2.data.pipeline import pretraining_dataset
    from keras_aimv2.models.aimv2_pretrainer import AIMV2Pretrainer
    from keras_aimv2.visualize import draw_loss_curves
    from keras_aimv2.visualize import draw_reconstructions

    pretrainer = AIMV2Pretrainer.from_preset(args.preset)
    size = pretrainer.backbone.image_size
    evaluation = pretraining_dataset(
        args.data, 8, size, training=False, split=args.split
    )
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "reconstructions.png")
    batch = next(evaluation.as_numpy_iterator())
    for generated in draw_reconstructions(pretrainer, batch, path):
        print(generated)
    print(f"wrote {path}")
    if args.log:
        curves = os.path.join(args.output, "loss_curves.png")
        draw_loss_curves(args.log, curves)
        print(f"wrote {curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
