"""`pretrain`: run a recipe from data to a saved, pictured AIMv2 encoder.

The steps, each resumable: build the recipe's data shards if it names a
built-in source, train a SentencePiece tokenizer on the training captions
unless one is given, build the model, train with `fit` (progress lines,
CSV and TensorBoard logs, the training state saved every epoch, resumption
after an interruption), save the backbone and the pre-training task as
keras-hub presets, evaluate on the held-out split against the same model
untrained, and draw the pictures. The recipe it ran and the results are
recorded in `recipe.json` and `metrics.json` (`keras_aimv2.outputs`).

A run is a transaction on its output directory (`keras_aimv2.run_directory`):
it holds the directory's lock, refuses data, a tokenizer or a training
state built from other recipe entries, saves its state only from finite
weights and atomically, stops on a non-finite loss, and on SIGINT or
SIGTERM saves its state and stops.
"""

import inspect
import json
import math
import os
import shutil
import time
import types

import keras

from keras_aimv2 import distribution
from keras_aimv2.compat import TASK_CONFIG_FILE
from keras_aimv2.compat import check_config_class
from keras_aimv2.compat import check_file_exists
from keras_aimv2.compat import load_json
from keras_aimv2.data.pipeline import pretraining_dataset
from keras_aimv2.data.schema_gate import DataValidationError
from keras_aimv2.data.schema_gate import validate_shards
from keras_aimv2.data.shards import read_manifest
from keras_aimv2.data.shards import write_shards
from keras_aimv2.data.tokenizer_training import iter_captions
from keras_aimv2.data.tokenizer_training import train_sentencepiece
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_backbone import copy_weights
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_presets import check_preset_files
from keras_aimv2.models.aimv2_pretrainer import AIMV2Pretrainer
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer
from keras_aimv2.optimization import aimv2_adamw
from keras_aimv2.outputs import FitProgress
from keras_aimv2.outputs import RunOutput
from keras_aimv2.outputs import log as log_line
from keras_aimv2.recipes import PretrainingRecipe
from keras_aimv2.recipes import typed_recipe
from keras_aimv2.run_directory import RecipeMismatchError
from keras_aimv2.run_directory import RunError
from keras_aimv2.run_directory import RunGuard
from keras_aimv2.run_directory import RunLock
from keras_aimv2.run_directory import RunStopped
from keras_aimv2.run_directory import StopRequests
from keras_aimv2.run_directory import TrainingState
from keras_aimv2.run_directory import check_finite
from keras_aimv2.run_directory import check_origin
from keras_aimv2.run_directory import origin_path
from keras_aimv2.run_directory import recipe_entries
from keras_aimv2.run_directory import record_origin
from keras_aimv2.validation import check_positive_int

# The `--set` that lets a run rebuild what a changed recipe invalidates.
REBUILD = "training.rebuild"
# The recipe entries the data shards are built from.
DATA_ENTRIES = (
    "data.source",
    "data.source_size",
    "data.train_examples",
    "data.eval_examples",
    "data.seed",
    "data.train_dir",
    "data.eval_dir",
)
# Those the tokenizer is trained with, besides the data's.
TOKENIZER_ENTRIES = (
    "tokenizer.vocabulary_size",
    "tokenizer.remove_punctuation",
)


def log(message):
    """A log line of `aimv2 pretrain` (`keras_aimv2.outputs.log`)."""
    log_line("pretrain", message)


def prepare_data(data, output_dir):
    """Shard directories `(train, eval)`, built from a built-in source.

    A recipe either names directories (`train_dir`, `eval_dir`) or a
    built-in `source` (`"scenes"` or `"fashion-mnist"`), whose shards are
    written under `output_dir/data` once and reused afterwards.

    Args:
        data: `keras_aimv2.recipes.PretrainingData`. The recipe's `data`.
        output_dir: str. The run's (work) directory.
    """
    if data.train_dir:
        return data.train_dir, data.eval_dir
    splits = {
        "train": (data.train_examples, data.seed),
        "eval": (data.eval_examples, data.seed + 1),
    }
    directories = []
    for split, (count, seed) in splits.items():
        directory = os.path.join(output_dir, "data", split)
        directories.append(directory)
        if os.path.isfile(os.path.join(directory, "manifest.json")):
            continue
        log(f"building {count or 'all'} {data.source} examples in {directory}")
        write_shards(
            _source_examples(data, split, count, seed),
            directory,
            split=split,
            source=data.source,
            overwrite=True,
            metadata={"seed": seed},
        )
    return tuple(directories)


def _source_examples(data, split, count, seed):
    if data.source == "scenes":
        from keras_aimv2.data.scenes import scenes_source

        size = (
            {} if data.source_size is None else {"image_size": data.source_size}
        )
        return scenes_source(count, seed, **size)
    # `PretrainingData` admits no other source.
    from keras_aimv2.data.fashion_mnist import fashion_mnist_source

    source_split = "train" if split == "train" else "test"
    return fashion_mnist_source(source_split, seed=seed, limit=count)


def prepare_tokenizer(settings, train_dir, output_dir):
    """Path of the SentencePiece model: given, or trained on the captions.

    Args:
        settings: `keras_aimv2.recipes.TokenizerSection`.
        train_dir: str. The training shards, whose captions train it.
        output_dir: str. The run's (work) directory.
    """
    if settings.model:
        return settings.model
    path = os.path.join(output_dir, "tokenizer.model")
    if not os.path.isfile(path):
        log(f"training a {settings.vocabulary_size}-token tokenizer")
        train_sentencepiece(
            iter_captions(train_dir, split="train"),
            path,
            vocabulary_size=settings.vocabulary_size,
            remove_punctuation=settings.remove_punctuation,
        )
    return path


def check_schema(data, train_dir, eval_dir, tokenizer_path, output_dir):
    """Validate the shards against `data.schema` with TFDV, if one is set.

    Data that do not match stop the run, unless `data.allow_anomalies`.
    """
    if not data.schema:
        return
    for split, directory in (("train", train_dir), ("eval", eval_dir)):
        if not directory:
            continue
        report_dir = os.path.join(output_dir, "validation", split)
        log(f"validating {directory} against {data.schema}")
        try:
            validate_shards(directory, data.schema, report_dir, tokenizer_path)
        except DataValidationError as error:
            if not data.allow_anomalies:
                raise DataValidationError(
                    f"{directory} does not match {data.schema}; see "
                    f"{report_dir}/report.txt, or set "
                    f"data.allow_anomalies=True to train anyway.\n{error}"
                ) from None
            log(f"training on {directory} despite anomalies: {report_dir}")


def build_pretrainer(recipe, tokenizer_path, distributed=None):
    """The backbone, preprocessor and pre-training task of a recipe.

    Build it inside `distributed.scope()` when the run is distributed.

    Args:
        recipe: `keras_aimv2.recipes.PretrainingRecipe`.
        tokenizer_path: str. The SentencePiece model.
        distributed: `keras_aimv2.distribution.Distributed` or `None`.
    """
    training, decoder = recipe.training, recipe.decoder
    keras.utils.set_random_seed(training.seed)
    tokenizer = AIMV2Tokenizer(
        proto=tokenizer_path,
        pad_token=recipe.tokenizer.pad_token,
        remove_punctuation=recipe.tokenizer.remove_punctuation,
    )
    arguments = recipe.backbone.arguments()
    if distributed is not None and distributed.mesh_shape:
        distribution.check_shardable(
            {
                "hidden_dim": _backbone_argument(arguments, "hidden_dim"),
                "intermediate_dim": _backbone_argument(
                    arguments, "intermediate_dim"
                ),
                "decoder_hidden_dim": decoder.decoder_hidden_dim,
                "decoder_intermediate_dim": decoder.decoder_intermediate_dim,
            },
            distributed.mesh_shape[1],
        )
    backbone = AIMV2Backbone(**arguments, dtype=training.dtype_policy)
    height, width = backbone.image_size
    preprocessor = AIMV2PretrainerPreprocessor(
        tokenizer=tokenizer,
        image_converter=AIMV2ImageConverter(image_size=(height, width)),
        sequence_length=decoder.context_length,
        patch_size=backbone.patch_size,
        seed=training.seed,
    )
    pretrainer = AIMV2Pretrainer(
        backbone,
        **decoder.to_dict(),
        vocabulary_size=tokenizer.vocabulary_size(),
        pixel_loss_weight=training.pixel_loss_weight,
        text_loss_weight=training.text_loss_weight,
        remat=training.remat,
        preprocessor=preprocessor,
    )
    initial = recipe.initialize.preset
    if initial:
        log(f"initializing from {initial}")
        initialize_from_preset(pretrainer, initial)
    return pretrainer


def _backbone_argument(arguments, name):
    """An `AIMV2Backbone` argument: the recipe's, else the default."""
    if name in arguments:
        return arguments[name]
    return inspect.signature(AIMV2Backbone).parameters[name].default


def initialize_from_preset(pretrainer, preset):
    """Continue pre-training from a saved model, at any resolution.

    From a pre-training preset every weight (encoder, decoder, heads) is
    copied; from a backbone preset, the encoder's. A learned position
    embedding of another patch grid is resampled bicubically, as AIMv2's
    336 and 448 pixel models continue the 224 pixel ones; any other shape
    difference (another vocabulary, width or depth) is an error.

    Args:
        pretrainer: `AIMV2Pretrainer`. The model to initialize.
        preset: str. A preset directory of an `AIMV2Pretrainer` or an
            `AIMV2Backbone`.
    """
    check_preset_files(preset, task=check_file_exists(preset, TASK_CONFIG_FILE))
    if check_file_exists(preset, TASK_CONFIG_FILE) and issubclass(
        check_config_class(load_json(preset, TASK_CONFIG_FILE)),
        AIMV2Pretrainer,
    ):
        source = AIMV2Pretrainer.from_preset(preset)
        source_backbone, target = source.backbone, pretrainer
    else:
        source = source_backbone = AIMV2Backbone.from_preset(preset)
        target = pretrainer.backbone
    copy_weights(
        source,
        target,
        source_backbone,
        pretrainer.backbone,
        origin=f"The preset {preset!r}",
    )


def _schedule_entries(training):
    """A `training` section, or a dict of (some of) its entries, read by
    attribute."""
    if isinstance(training, dict):
        return types.SimpleNamespace(**training)
    return training


def learning_rate_schedule(training):
    """Linear warm-up from 1e-6 to the peak, then cosine to the final rate.

    Steps count optimizer updates (`aimv2_adamw` reads the schedule per
    update under gradient accumulation).

    Args:
        training: `keras_aimv2.recipes.PretrainingTraining`, or a dict with
            its `steps`, `warmup_steps`, `peak_learning_rate` and
            `final_learning_rate`.
    """
    training = _schedule_entries(training)
    peak = training.peak_learning_rate
    warmup = min(training.warmup_steps, training.steps - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=1e-6,
        warmup_target=peak,
        warmup_steps=warmup,
        decay_steps=max(training.steps - warmup, 1),
        alpha=training.final_learning_rate / peak,
    )


def compile_pretrainer(pretrainer, training):
    """Compile with the recipe's AdamW, schedule and gradient accumulation.

    With `gradient_accumulation_steps` `N > 1`, each update averages the
    gradients of `N` consecutive batches: the effective batch is `N *
    batch_size`. `clipnorm` bounds the global norm of each update's
    gradient, all weights together.

    Args:
        pretrainer: `AIMV2Pretrainer`.
        training: `keras_aimv2.recipes.PretrainingTraining`, or a dict with
            the entries of `learning_rate_schedule`, `weight_decay`,
            `clipnorm` and `gradient_accumulation_steps`.
    """
    schedule = learning_rate_schedule(training)
    training = _schedule_entries(training)
    accumulation = training.gradient_accumulation_steps
    check_positive_int("training.gradient_accumulation_steps", accumulation)
    pretrainer.compile(
        optimizer=aimv2_adamw(
            learning_rate=schedule,
            peak_learning_rate=training.peak_learning_rate,
            weight_decay=training.weight_decay,
            clipnorm=training.clipnorm,
            gradient_accumulation_steps=accumulation,
        )
    )


def _datasets(recipe, image_size, train_dir, eval_dir):
    data, training = recipe.data, recipe.training
    train = pretraining_dataset(
        train_dir,
        training.batch_size,
        image_size,
        seed=training.seed,
        split=read_manifest(train_dir)["split"],
        crop_scale=data.crop_scale,
        flip_probability=data.flip_probability,
    )
    evaluation = None
    if eval_dir:
        # Every held-out example counts: the last batch is completed with
        # padding of weight 0, not dropped.
        evaluation = pretraining_dataset(
            eval_dir,
            training.eval_batch_size,
            image_size,
            training=False,
            split=read_manifest(eval_dir)["split"],
            complete_last_batch=True,
        )
    return train, evaluation


def pretrain(recipe, output_dir=None):
    """Run a recipe end to end; returns the summary written to metrics.json.

    The recipe's `distribution` section picks the strategy (see
    `keras_aimv2.distribution`). With several processes every process runs
    this function; process 0 writes the logs, presets and pictures.

    Args:
        recipe: `keras_aimv2.recipes.PretrainingRecipe` (see
            `keras_aimv2.recipes.load_recipe`), or a dict of its entries.
        output_dir: str or `None`. Where everything is written; defaults to
            the recipe's `output_dir`. Running again in the same directory
            resumes an interrupted run from its last saved state.

    Raises:
        ValueError: the recipe is not a valid pre-training recipe, or
            lacks what a run needs (training data, an output directory).
        keras_aimv2.run_directory.RunError: the run cannot go on (another
            run holds the directory, its contents come from another
            recipe, the loss diverged, a signal stopped it); the message
            says what to do and `exit_status` is the command's status.
    """
    return run_training(recipe, output_dir, PretrainingJob())


class TrainingJob:
    """What a command that trains through `run_training` builds and keeps.

    `aimv2 pretrain` (`PretrainingJob`) and `aimv2 lit`
    (`keras_aimv2.lit_tuning.LiTJob`) share everything else: the data
    shards, the tokenizer, the run directory's lock and origins, the
    training state, resumption, signals, logs and the held-out evaluation.

    Attributes:
        name: str. The command, in log lines and progress.
        recipe_class: the recipe type the command runs.
        model_sections: tuple of str. The recipe sections a saved training
            state depends on (with the data entries and accumulation).
    """

    name = None
    recipe_class = None
    model_sections = ()

    def build(self, recipe, tokenizer_path, distributed):
        """The compiled model, built inside the distribution's scope."""
        raise NotImplementedError

    def describe(self, model):
        """A log line about the model's size."""
        return f"{model.count_params():,} parameters"

    def image_size(self, model):
        """`(height, width)` of the model's input images."""
        return tuple(model.backbone.image_size)

    def save(self, model, preset_dir):
        """Save the trained model's presets under `preset_dir`."""
        raise NotImplementedError

    def report(self, model, recipe, evaluation, output_dir):
        """Results beyond the held-out means, for `metrics.json`."""
        return {}


class PretrainingJob(TrainingJob):
    """`aimv2 pretrain`: AIMv2's pre-training task, saved as the backbone
    and pre-training presets, pictured on the held-out split."""

    name = "pretrain"
    recipe_class = PretrainingRecipe
    model_sections = ("backbone", "decoder", "tokenizer")

    def build(self, recipe, tokenizer_path, distributed):
        pretrainer = build_pretrainer(recipe, tokenizer_path, distributed)
        compile_pretrainer(pretrainer, recipe.training)
        return pretrainer

    def describe(self, model):
        return (
            f"encoder {model.backbone.count_params():,} parameters, "
            f"pre-training model {model.count_params():,}"
        )

    def save(self, model, preset_dir):
        model.backbone.save_to_preset(os.path.join(preset_dir, "backbone"))
        model.save_to_preset(os.path.join(preset_dir, "pretrainer"))

    def report(self, model, recipe, evaluation, output_dir):
        if evaluation is None:
            return {}
        from keras_aimv2.visualize import draw_pictures

        pictures = draw_pictures(
            model,
            evaluation,
            os.path.join(output_dir, "logs", "training.csv"),
            os.path.join(output_dir, "pictures"),
        )
        return {"pictures": pictures}


def run_training(recipe, output_dir, job):
    """Run a recipe of `job`'s kind end to end; returns its summary.

    See `pretrain`, whose steps every `TrainingJob` shares.

    Args:
        recipe: a recipe of `job.recipe_class`, or a dict of its entries.
        output_dir: str or `None`. Defaults to the recipe's `output_dir`.
        job: `TrainingJob`. What is built, saved and reported.
    """
    started = time.time()
    recipe = typed_recipe(recipe, job.recipe_class)
    recipe.check_runnable()
    output_dir = recipe.output_directory(output_dir)
    # First: several processes must meet before any computation.
    distributed = distribution.setup(
        strategy=recipe.distribution.strategy,
        mesh_shape=recipe.distribution.mesh_shape,
    )
    # Processes other than 0 build their (identical, seeded) data and
    # tokenizer in a folder of their own instead of racing for one.
    work_dir = output_dir
    if not distributed.is_chief:
        work_dir = os.path.join(
            output_dir, "processes", str(distributed.process_index)
        )
    lock = RunLock(work_dir)
    stops = StopRequests(log=log, on_abort=lock.release)
    with lock, stops, distributed.scope():
        return _train(
            recipe, output_dir, work_dir, distributed, stops, started, job
        )


def _train(recipe, output_dir, work_dir, distributed, stops, started, job):
    training = recipe.training
    accumulation = training.gradient_accumulation_steps
    # The work directory is the output directory on process 0, which alone
    # writes metrics.json.
    output = RunOutput(work_dir, job.name)
    state = TrainingState(
        os.path.join(work_dir, "backup"),
        recipe_entries(
            recipe,
            job.model_sections,
            DATA_ENTRIES + ("training.gradient_accumulation_steps",),
        ),
    )
    claim_directory(recipe, output_dir, work_dir, state)
    output.write_recipe(recipe)
    output.log(
        f"recipe {recipe.name!r} on {keras.config.backend()} -> {output_dir}"
    )
    train_dir, eval_dir = prepare_data(recipe.data, work_dir)
    stops.check()
    check_batches(training, train_dir, eval_dir)
    tokenizer_path = prepare_tokenizer(recipe.tokenizer, train_dir, work_dir)
    stops.check()
    check_schema(recipe.data, train_dir, eval_dir, tokenizer_path, work_dir)

    model = job.build(recipe, tokenizer_path, distributed)
    distributed.wrap(model)
    output.log(f"{job.describe(model)}; {_describe(distributed)}")
    image_size = job.image_size(model)
    train, evaluation = _datasets(recipe, image_size, train_dir, eval_dir)
    train = distributed.distribute_dataset(train)
    if evaluation is not None:
        evaluation = distributed.distribute_dataset(evaluation)
    held_out = {}
    if evaluation is not None:
        # Before the training state is restored: the initial weights.
        held_out["untrained"] = _evaluate(model, evaluation)
    done = state.load(model) or 0
    planned = training.steps * accumulation
    if done:
        output.log(
            f"resuming at step {done // accumulation} from {state.directory}"
        )
    logs_dir = os.path.join(output_dir, "logs")
    guard = RunGuard(stops, state, done, planned, accumulation)
    progress = FitProgress(
        job.name,
        training.steps,
        verbose=training.verbose if distributed.is_chief else 0,
        first_step=done // accumulation,
        batches_per_step=accumulation,
    )
    # `fit` counts batches: `gradient_accumulation_steps` per update.
    batches_per_epoch = training.steps_per_epoch * accumulation
    if done < planned:
        try:
            model.fit(
                train,
                epochs=math.ceil(planned / batches_per_epoch),
                initial_epoch=done // batches_per_epoch,
                steps_per_epoch=batches_per_epoch,
                # The dataset shuffles itself, seeded.
                shuffle=False,
                validation_data=evaluation,
                # `progress` shows it, in optimizer steps.
                verbose=0,
                callbacks=[guard, progress]
                + _log_callbacks(logs_dir, distributed),
            )
        except RunStopped as stopped:
            state.save(model, guard.batches, f"at step {guard.step}")
            raise RunStopped(
                stopped.signum,
                f"{stopped} at step {guard.step} of {training.steps}; "
                f"the training state is saved in {state.directory}: rerun "
                "the same command to resume.",
            ) from None
    stops.check()
    if evaluation is not None:
        held_out["trained"] = _evaluate(model, evaluation)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    steps //= accumulation
    # Every process takes part in gathering sharded weights.
    model = distributed.local_copy(model)
    if not distributed.is_chief:
        output.log("done; process 0 writes the presets and pictures")
        return {"process_index": distributed.process_index}

    check_finite(model, "after training")
    preset_dir = os.path.join(output_dir, "preset")
    job.save(model, preset_dir)
    output.log(f"saved presets in {preset_dir}")
    summary = {
        "recipe": recipe.name,
        "backend": keras.config.backend(),
        "steps": steps,
        "presets": preset_dir,
    }
    if evaluation is not None:
        summary["held_out"] = held_out
    summary.update(job.report(model, recipe, evaluation, output_dir))
    summary["wall_time_s"] = round(time.time() - started, 1)
    output.write_metrics(summary)
    output.log(json.dumps(summary, indent=2))
    return summary


def claim_directory(recipe, output_dir, work_dir, state):
    """Check that the directory's contents come from this recipe.

    The data shards (of a built-in source), a trained tokenizer and the
    training state each record the recipe entries they were built from.
    Where the recipe changed one of them, the run is refused
    (`RecipeMismatchError`), unless `training.rebuild` allows rebuilding:
    then that artefact and everything built after it (the tokenizer after
    the data, the training state, logs, presets and pictures after either)
    are removed, to be built again. The entries of the data and tokenizer
    this run builds are recorded before they are built, so that a build
    interrupted and resumed with another recipe is refused too.
    """
    data_entries = recipe_entries(recipe, (), DATA_ENTRIES)
    chain = []
    if not recipe.data.train_dir:
        chain.append((os.path.join(work_dir, "data"), data_entries, "data"))
    if not recipe.tokenizer.model:
        path = os.path.join(work_dir, "tokenizer.model")
        entries = {
            **data_entries,
            **recipe_entries(recipe, (), TOKENIZER_ENTRIES),
        }
        chain.append((path, entries, "tokenizer"))
    chain.append((state.directory, state.origin, "training state"))
    for index, (artefact, entries, what) in enumerate(chain):
        try:
            check_origin(artefact, entries, what, REBUILD)
        except RecipeMismatchError as error:
            if not recipe.training.rebuild:
                raise
            log(f"{error}\nrebuilding, as {REBUILD}=True allows")
            stale = [path for path, _, _ in chain[index:]]
            stale += [os.path.join(output_dir, name) for name in RUN_OUTPUTS]
            for path in stale:
                _discard(path)
            break
    for artefact, entries, _ in chain[:-1]:
        os.makedirs(os.path.dirname(origin_path(artefact)), exist_ok=True)
        record_origin(artefact, entries)


# What a run writes after training, discarded with its training state.
RUN_OUTPUTS = ("logs", "preset", "pictures", "metrics.json")


def _discard(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    origin = origin_path(path)
    if os.path.exists(origin):
        os.remove(origin)


def check_batches(training, train_dir, eval_dir):
    """Refuse, before training, a split that yields no batch at all."""
    train = read_manifest(train_dir)["num_examples"]
    if train < training.batch_size:
        raise RunError(
            f"The training split {train_dir} holds {train} examples, "
            f"fewer than one batch (training.batch_size="
            f"{training.batch_size}): it yields no batch. Give more "
            "examples (e.g. data.train_examples) or a smaller batch."
        )
    if eval_dir and not read_manifest(eval_dir)["num_examples"]:
        raise RunError(
            f"The evaluation split {eval_dir} holds no example. Give some "
            "(e.g. data.eval_examples) or no evaluation split."
        )


def _log_callbacks(logs_dir, distributed):
    """CSV and TensorBoard logs, written by process 0."""
    if not distributed.is_chief:
        return []
    os.makedirs(logs_dir, exist_ok=True)
    return [
        keras.callbacks.CSVLogger(
            os.path.join(logs_dir, "training.csv"), append=True
        ),
        keras.callbacks.TensorBoard(os.path.join(logs_dir, "tensorboard")),
    ]


def _describe(distributed):
    text = (
        f"strategy {distributed.strategy!r}, "
        f"{distributed.num_replicas} replica(s)"
    )
    if distributed.mesh_shape:
        text += f", mesh {distributed.mesh_shape} (data, model)"
    if distributed.process_count > 1:
        text += (
            f", process {distributed.process_index} of "
            f"{distributed.process_count}"
        )
    return text


def _evaluate(model, evaluation):
    """Held-out means, rounded; a value that is not finite becomes `None`
    (JSON has no NaN)."""
    values = model.evaluate(evaluation, verbose=0, return_dict=True)
    return {
        key: round(float(value), 4) if math.isfinite(value) else None
        for key, value in values.items()
    }
