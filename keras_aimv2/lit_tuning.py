"""`lit`: LiT-tune a text tower on a locked AIMv2 encoder, then zero-shot.

AIMv2's zero-shot model (arXiv:2411.14402, Section 4.4) follows LiT
("Locked-image Tuning", Zhai et al., CVPR 2022): the pre-trained image
encoder is frozen, and a text tower trained from scratch learns to map
captions next to the images' embeddings with the contrastive loss of
CLIP, under a learned temperature. The encoder has no pooled output of
its own, so an attention-pool head (`AttentionPool`) and both projections
train with the text tower (`AIMV2LiT`).

A LiT recipe reads the same image-caption shards as pre-training (or
builds them from a built-in source), trains or takes the same kind of
SentencePiece tokenizer, and runs as a pre-training run does
(`keras_aimv2.training.run_training`): resumable, locked, stopped cleanly
by a signal, on one device or under the recipe's distribution strategy.
At the end it saves the LiT model as keras-hub presets and, with
`zero_shot.source="fashion-mnist"`, classifies Fashion-MNIST's test images
zero-shot: each class is the average embedding of the class name in the
recipe's prompt templates (`AIMV2ZeroShotClassifier`).
"""

import os

import keras
import numpy as np

from keras_aimv2.data.fashion_mnist import class_phrase
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_lit import LIT_NO_DECAY
from keras_aimv2.models.aimv2_lit import AIMV2LiT
from keras_aimv2.models.aimv2_lit_backbone import AIMV2LiTBackbone
from keras_aimv2.models.aimv2_lit_preprocessor import AIMV2LiTPreprocessor
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer
from keras_aimv2.models.aimv2_zero_shot_classifier import (
    AIMV2ZeroShotClassifier,
)
from keras_aimv2.outputs import log as _log
from keras_aimv2.recipes import LiTRecipe
from keras_aimv2.training import TrainingJob
from keras_aimv2.training import compile_pretrainer
from keras_aimv2.training import run_training
from keras_aimv2.transfer import build_encoder
from keras_aimv2.transfer import probe_datasets


def log(message):
    """A log line of `aimv2 lit`."""
    _log("lit", message)


def build_lit(recipe, tokenizer_path):
    """The LiT model of a recipe: the locked encoder and a new text tower.

    Args:
        recipe: `keras_aimv2.recipes.LiTRecipe`.
        tokenizer_path: str. The SentencePiece model of the captions.

    Returns:
        An `AIMV2LiT` with its preprocessor, not compiled.
    """
    training, text = recipe.training, recipe.text
    # The encoder comes first: a random one is seeded as a probe's is.
    encoder = build_encoder(recipe.backbone, seed=training.seed)
    if training.dtype_policy != "float32":
        encoder = _with_dtype(encoder, training.dtype_policy)
    keras.utils.set_random_seed(training.seed)
    tokenizer = AIMV2Tokenizer(
        proto=tokenizer_path,
        pad_token=recipe.tokenizer.pad_token,
        remove_punctuation=recipe.tokenizer.remove_punctuation,
    )
    backbone = AIMV2LiTBackbone(
        vision_encoder=encoder,
        text_vocabulary_size=tokenizer.vocabulary_size(),
        text_sequence_length=text.context_length,
        text_hidden_dim=text.hidden_dim,
        text_num_layers=text.num_layers,
        text_num_heads=text.num_heads,
        text_intermediate_dim=text.intermediate_dim,
        end_token_id=tokenizer.end_token_id,
        projection_dim=text.projection_dim,
        pool_num_heads=text.pool_num_heads,
        dtype=training.dtype_policy,
    )
    preprocessor = AIMV2LiTPreprocessor(
        tokenizer=tokenizer,
        image_converter=AIMV2ImageConverter(
            image_size=tuple(encoder.image_size)
        ),
        sequence_length=text.context_length,
    )
    return AIMV2LiT(backbone, preprocessor=preprocessor)


def _with_dtype(encoder, dtype_policy):
    """A copy of `encoder` computing under `dtype_policy`."""
    config = {**encoder.get_config(), "dtype": dtype_policy}
    copy = encoder.__class__.from_config(config)
    copy.set_weights(encoder.get_weights())
    return copy


def zero_shot_classifier(model, class_names, templates):
    """An `AIMV2ZeroShotClassifier` over a LiT model's towers.

    Args:
        model: `AIMV2LiT`, with its preprocessor.
        class_names: list of str. What each class is called in a prompt.
        templates: list of str. Prompts, each with one `{}`.
    """
    return AIMV2ZeroShotClassifier(
        backbone=model.backbone,
        preprocessor=model.preprocessor,
        class_names=list(class_names),
        templates=list(templates),
    )


def fashion_mnist_zero_shot(model, section, image_size):
    """Zero-shot top-1 accuracy on Fashion-MNIST's test images.

    Each class is named as its captions name it first ("a t-shirt", "an
    ankle boot"); test images are resized whole to `image_size`, as the
    attentive probe's are (`keras_aimv2.transfer.probe_datasets`).

    Args:
        model: `AIMV2LiT`, with its preprocessor.
        section: `keras_aimv2.recipes.ZeroShotSection`.
        image_size: tuple `(height, width)`. The encoder's input size.

    Returns:
        A dict: `top1`, the number of test images, the class names and
        templates used, and the accuracy per class.
    """
    from keras_aimv2.data.fashion_mnist import CLASS_NAMES

    data = {
        "num_classes": len(CLASS_NAMES),
        "crop_scale": (1.0, 1.0),
        "flip_probability": 0.0,
        "test_examples": section.test_examples,
        "root": section.root,
    }
    _, test, _, num_test = probe_datasets(
        data, image_size, batch_size=1, eval_batch_size=section.batch_size
    )
    names = [class_phrase(label) for label in range(len(CLASS_NAMES))]
    classifier = zero_shot_classifier(model, names, section.templates)
    correct = np.zeros(len(names))
    counts = np.zeros(len(names))
    for images, labels in test.as_numpy_iterator():
        logits = keras.ops.convert_to_numpy(classifier.predict_on_batch(images))
        hits = np.argmax(logits, axis=-1) == labels
        np.add.at(correct, labels, hits)
        np.add.at(counts, labels, 1)
    return {
        "dataset": "fashion-mnist",
        "top1": round(float(correct.sum() / counts.sum()), 4),
        "test_examples": num_test,
        "class_names": names,
        "templates": list(section.templates),
        "per_class_top1": {
            name: round(float(c / n), 4)
            for name, c, n in zip(names, correct, counts, strict=True)
            if n
        },
    }


class LiTJob(TrainingJob):
    """What `run_training` builds, saves and reports for a LiT recipe."""

    name = "lit"
    recipe_class = LiTRecipe
    model_sections = ("backbone", "text", "tokenizer")

    def build(self, recipe, tokenizer_path, distributed):
        model = build_lit(recipe, tokenizer_path)
        compile_pretrainer(model, recipe.training)
        # AIMv2's exclusions from weight decay, and the pool's query and
        # the temperature.
        model.optimizer.exclude_from_weight_decay(var_names=list(LIT_NO_DECAY))
        return model

    def describe(self, model):
        backbone = model.backbone
        frozen = backbone.vision_encoder.count_params()
        return (
            f"locked encoder {frozen:,} parameters, LiT model "
            f"{model.count_params():,} ({model.count_params() - frozen:,} "
            "trained)"
        )

    def image_size(self, model):
        return tuple(model.backbone.vision_encoder.image_size)

    def save(self, model, preset_dir):
        model.backbone.save_to_preset(os.path.join(preset_dir, "backbone"))
        model.save_to_preset(os.path.join(preset_dir, "lit"))

    def report(self, model, recipe, evaluation, output_dir):
        section = recipe.zero_shot
        if section.source is None:
            return {}
        log(f"zero-shot classification of {section.source}'s test images")
        results = fashion_mnist_zero_shot(
            model, section, self.image_size(model)
        )
        log(
            f"zero-shot top-1 on {results['test_examples']} test images: "
            f"{results['top1']:.2%}"
        )
        return {"zero_shot": results}


def lit_tune(recipe, output_dir=None):
    """Run a LiT recipe end to end; returns the summary of metrics.json.

    Args:
        recipe: `keras_aimv2.recipes.LiTRecipe` (see the packaged
            `lit_fashion_mnist`), or a dict of its entries.
        output_dir: str or `None`. Where everything is written; defaults to
            the recipe's `output_dir`. Running again in the same directory
            resumes an interrupted run.

    Returns:
        A dict: the held-out contrastive loss and accuracy before and after
        tuning, the zero-shot results, the presets and the wall time.

    Example:

    >>> from keras_aimv2.recipes import load_recipe  # doctest: +SKIP
    >>> summary = lit_tune(load_recipe("lit_fashion_mnist"))  # doctest: +SKIP
    >>> summary["zero_shot"]["top1"]  # doctest: +SKIP
    """
    return run_training(recipe, output_dir, LiTJob())
