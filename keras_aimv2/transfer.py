"""`probe`: AIMv2's attentive probe of an encoder on Fashion-MNIST or scenes.

AIMv2 evaluates its encoders with an attentive probe on frozen last-layer
features ("Multimodal Autoregressive Pre-training of Large Vision Encoders",
Fini et al., CVPR 2025, Section 4 and Table A2): a learned query attends
over the patch features and a linear layer classifies, trained with AdamW,
a cosine schedule and weight decay 0.05 or 0.1, on RandomResizedCrop
(scale 0.08 to 1) and flipped images. `probe` runs this protocol from a
recipe (the packaged `probe_fashion_mnist`): it loads an encoder from a
preset, or builds a randomly initialised one, trains the probe on
Fashion-MNIST training images resized to the encoder's resolution (gray
copied into 3 channels), or on procedural scenes labelled by a question
about them (`data.source="scenes"`, `keras_aimv2.data.scenes.PROBE_TASKS`),
reports top-1 accuracy on the test images and writes `recipe.json` and
`metrics.json` (atomically, as `aimv2 pretrain` does:
`keras_aimv2.outputs.RunOutput`). Setting `head.freeze_backbone=False`
fine-tunes instead, optionally with layer-wise learning-rate decay
(`training.layer_decay`).
"""

import math
import time

import keras
import tensorflow as tf

from keras_aimv2.data.fashion_mnist import DEFAULT_ROOT
from keras_aimv2.data.fashion_mnist import load_fashion_mnist
from keras_aimv2.data.pipeline import augment_image
from keras_aimv2.data.pipeline import resize_image
from keras_aimv2.layer_decay import LayerDecayAdamW
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_classifier import HEAD_NO_DECAY
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier
from keras_aimv2.models.aimv2_image_classifier_preprocessor import (
    AIMV2ImageClassifierPreprocessor,
)
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.outputs import FitProgress
from keras_aimv2.outputs import RunOutput
from keras_aimv2.recipes import ProbeBackboneSection
from keras_aimv2.recipes import ProbeData
from keras_aimv2.recipes import ProbeRecipe
from keras_aimv2.recipes import typed_recipe


def build_encoder(section, seed=0):
    """The encoder of a probe recipe's `backbone` section.

    With `preset` set, the backbone is loaded from that keras-hub preset
    directory (a saved `AIMV2Backbone`, or any preset holding one, such as
    a pre-training preset); a non-`None` `image_shape` different from the
    preset's resamples its learned position embedding. Otherwise a randomly
    initialised backbone is built from the other entries (`size` or the
    `AIMV2Backbone` arguments), seeded by `seed`.

    Args:
        section: `keras_aimv2.recipes.ProbeBackboneSection` (the recipe's
            `backbone`), or a dict of its entries.
        seed: int. Seed of a random initialisation. Defaults to `0`.

    Returns:
        An `AIMV2Backbone`.
    """
    if not isinstance(section, ProbeBackboneSection):
        section = ProbeBackboneSection.from_dict(section)
    if section.preset:
        image_shape = section.image_shape
        kwargs = {} if image_shape is None else {"image_shape": image_shape}
        return AIMV2Backbone.from_preset(section.preset, **kwargs)
    keras.utils.set_random_seed(seed)
    return AIMV2Backbone(**section.arguments())


def _gray_to_rgb(image):
    """A float RGB image: gray (`(height, width)`) copied into 3 channels."""
    image = tf.cast(image, tf.float32)
    if image.shape.rank == 3:
        return image
    return tf.tile(image[..., None], [1, 1, 3])


def probe_arrays(data, image_size):
    """The training and test images and labels of a probe's `data`.

    Args:
        data: `keras_aimv2.recipes.ProbeData`.
        image_size: tuple `(height, width)`. The encoder's input size;
            scenes are drawn at `data.source_size`, else at its height.

    Returns:
        `(train_images, train_labels, test_images, test_labels)`, NumPy
        arrays: uint8 images (Fashion-MNIST's gray `(N, 28, 28)`, scenes'
        RGB `(N, size, size, 3)`) and int64 labels.
    """
    if data.source == "scenes":
        from keras_aimv2.data.scenes import scene_arrays

        size = data.source_size or image_size[0]
        train = scene_arrays(data.train_examples, data.seed, size, data.task)
        test = scene_arrays(data.test_examples, data.seed + 1, size, data.task)
        return (*train, *test)
    root = data.root or DEFAULT_ROOT
    train_images, train_labels, _ = load_fashion_mnist("train", root)
    test_images, test_labels, _ = load_fashion_mnist("test", root)
    if data.train_examples:
        train_images = train_images[: data.train_examples]
        train_labels = train_labels[: data.train_examples]
    if data.test_examples:
        test_images = test_images[: data.test_examples]
        test_labels = test_labels[: data.test_examples]
    return train_images, train_labels, test_images, test_labels


def probe_datasets(data, image_size, batch_size, eval_batch_size, seed=0):
    """Augmented training batches and plain test batches of a probe.

    The images are Fashion-MNIST's or labelled scenes (`data.source`, see
    `probe_arrays`). Training images get a random resized crop
    (`data.crop_scale`, aspect ratio 3/4 to 4/3) and a horizontal flip
    (`data.flip_probability`), each drawn statelessly from `(seed,
    element index)` so runs repeat exactly; test images are resized whole.
    Both are bicubically resized to `image_size`, gray copied into three
    channels, in `[0, 255]`. The training set repeats and is reshuffled
    every pass; its batches are complete.

    Args:
        data: `keras_aimv2.recipes.ProbeData` (the recipe's `data`), or a
            dict of its entries.
        image_size: tuple `(height, width)`. The encoder's input size.
        batch_size: int. Training batch size.
        eval_batch_size: int. Test batch size.
        seed: int. Seed of the shuffle and the augmentation. Defaults to
            `0`.

    Returns:
        A tuple `(train, test, num_train, num_test)`: two `tf.data.Dataset`
        of `(images, labels)` and the numbers of examples used.
    """
    if not isinstance(data, ProbeData):
        data = ProbeData.from_dict(data)
    train_images, train_labels, test_images, test_labels = probe_arrays(
        data, image_size
    )
    if len(train_images) < batch_size:
        raise ValueError(
            f"`training.batch_size`={batch_size} is larger than the "
            f"{len(train_images)} training examples."
        )
    crop_scale = data.crop_scale
    flip_probability = data.flip_probability

    def augment(index, image, label):
        element_seed = tf.stack([tf.constant(seed, tf.int64), index])
        image = augment_image(
            _gray_to_rgb(image),
            element_seed,
            image_size,
            scale=crop_scale,
            flip_probability=flip_probability,
        )
        return image, label

    train = tf.data.Dataset.from_tensor_slices((train_images, train_labels))
    train = train.shuffle(
        len(train_images), seed=seed, reshuffle_each_iteration=True
    )
    train = train.repeat().enumerate()
    train = train.map(
        lambda index, example: augment(index, *example),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    train = train.batch(batch_size, drop_remainder=True)
    train = train.prefetch(tf.data.AUTOTUNE)

    test = tf.data.Dataset.from_tensor_slices((test_images, test_labels))
    test = test.map(
        lambda image, label: (
            resize_image(_gray_to_rgb(image), image_size),
            label,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    test = test.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE)
    return train, test, len(train_images), len(test_images)


def probe_optimizer(training, steps_per_epoch, num_layers):
    """AdamW of a probe recipe: warm-up, cosine decay, layer-wise decay.

    The rate rises linearly from 0 to `peak_learning_rate` over
    `warmup_epochs` epochs, then follows a cosine to `final_learning_rate`
    at the end of `epochs`. Weight decay is decoupled (PyTorch's AdamW),
    without biases, norm scales, position embeddings and the probe's
    query. `layer_decay` (`None` for none) scales the rates of the
    encoder's blocks (`keras_aimv2.layer_decay.LayerDecayAdamW`).

    Args:
        training: `keras_aimv2.recipes.ProbeTraining`. The recipe's
            `training` section.
        steps_per_epoch: int. Optimizer steps per epoch.
        num_layers: int. Blocks of the encoder.

    Returns:
        A `LayerDecayAdamW`.
    """
    peak = training.peak_learning_rate
    steps = steps_per_epoch * training.epochs
    warmup = int(round(training.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, steps - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
        decay_steps=max(steps - warmup, 1),
        alpha=training.final_learning_rate / peak,
    )
    layer_decay = training.layer_decay
    optimizer = LayerDecayAdamW(
        learning_rate=schedule,
        weight_decay=training.weight_decay,
        layer_decay=1.0 if layer_decay is None else layer_decay,
        num_layers=num_layers,
    )
    optimizer.exclude_from_weight_decay(var_names=list(HEAD_NO_DECAY))
    return optimizer


def build_classifier(recipe, backbone):
    """The classifier (probe or fine-tuning head) of a probe recipe.

    Args:
        recipe: `keras_aimv2.recipes.ProbeRecipe`.
        backbone: `AIMV2Backbone`. The encoder.
    """
    head = recipe.head
    height, width = backbone.image_size
    preprocessor = AIMV2ImageClassifierPreprocessor(
        AIMV2ImageConverter(image_size=(height, width))
    )
    keras.utils.set_random_seed(recipe.training.seed + 1)
    return AIMV2ImageClassifier(
        backbone,
        num_classes=recipe.data.num_classes,
        preprocessor=preprocessor,
        pooling=head.pooling,
        freeze_backbone=head.freeze_backbone,
        feature_layers=head.feature_layers,
        num_heads=head.num_heads,
        dropout=head.dropout,
    )


def probe(recipe, output_dir=None):
    """Run a probe recipe; returns the summary written to metrics.json.

    Args:
        recipe: `keras_aimv2.recipes.ProbeRecipe` (see the packaged
            `probe_fashion_mnist`), or a dict of its entries.
        output_dir: str or `None`. Where `recipe.json`, `metrics.json` (both
            written atomically), the training log and the classifier preset
            are written. Defaults to the recipe's `output_dir`.

    Returns:
        A dict with the test top-1 accuracy (`top1`), the test loss, the
        encoder used, the numbers of examples and steps, the training
        history and the wall time.

    Example:

    >>> from keras_aimv2.recipes import load_recipe
    >>> summary = probe(load_recipe("probe_fashion_mnist"))
    >>> summary["top1"]
    """
    started = time.time()
    recipe = typed_recipe(recipe, ProbeRecipe)
    recipe.check_runnable()
    output = RunOutput(recipe.output_directory(output_dir), "probe").create()
    output.write_recipe(recipe)
    data, training = recipe.data, recipe.training
    output.log(
        f"recipe {recipe.name!r} on {keras.config.backend()} -> "
        f"{output.directory}"
    )

    backbone = build_encoder(recipe.backbone, seed=training.seed)
    encoder = recipe.backbone.preset or "random initialisation"
    image_size = tuple(backbone.image_size)
    if None in image_size:
        raise ValueError(
            "The probe needs an encoder of fixed image size; set "
            "`backbone.image_shape`. Received an encoder with image_shape="
            f"{backbone.image_shape}"
        )
    train, test, num_train, num_test = probe_datasets(
        data,
        image_size,
        training.batch_size,
        training.eval_batch_size,
        seed=training.seed,
    )
    steps_per_epoch = training.steps_per_epoch or (
        num_train // training.batch_size
    )
    classifier = build_classifier(recipe, backbone)
    classifier.compile(
        optimizer=probe_optimizer(
            training, steps_per_epoch, backbone.num_layers
        )
    )
    output.log(
        f"encoder: {encoder}, {backbone.count_params():,} parameters, "
        f"{'frozen' if classifier.freeze_backbone else 'fine-tuned'}; "
        f"trainable: {_count(classifier.trainable_weights):,}; "
        f"{num_train} training images at {image_size[0]}x{image_size[1]}, "
        f"{training.epochs} epochs of {steps_per_epoch} steps"
    )
    history = classifier.fit(
        train,
        epochs=training.epochs,
        steps_per_epoch=steps_per_epoch,
        # `FitProgress` shows it.
        verbose=0,
        callbacks=[
            FitProgress(
                "probe",
                training.epochs * steps_per_epoch,
                verbose=training.verbose,
            ),
            keras.callbacks.CSVLogger(output.path("training.csv")),
        ],
    )
    results = classifier.evaluate(test, verbose=0, return_dict=True)
    preset_dir = output.path("preset")
    classifier.save_to_preset(preset_dir)

    summary = {
        "recipe": recipe.name,
        "backend": keras.config.backend(),
        "encoder": encoder,
        "frozen_encoder": classifier.freeze_backbone,
        "pooling": recipe.head.pooling,
        "image_size": list(image_size),
        "train_examples": num_train,
        "test_examples": num_test,
        "epochs": training.epochs,
        "steps": int(
            keras.ops.convert_to_numpy(classifier.optimizer.iterations)
        ),
        "top1": round(float(results["accuracy"]), 4),
        "test_loss": _rounded(results["loss"]),
        "history": {
            key: [_rounded(value) for value in values]
            for key, values in history.history.items()
        },
        "preset": preset_dir,
        "wall_time_s": round(time.time() - started, 1),
    }
    output.write_metrics(summary)
    output.log(
        f"top-1 on {num_test} test images: {summary['top1']:.2%} "
        f"({summary['wall_time_s']} s)"
    )
    return summary


def _rounded(value):
    """`value` rounded, or `None` if it is not finite (JSON has no NaN)."""
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def _count(weights):
    return int(sum(math.prod(w.shape) for w in weights))
