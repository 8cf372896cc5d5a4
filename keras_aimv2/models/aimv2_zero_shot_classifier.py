"""Zero-shot image classification with the AIMv2 LiT model."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import Task

from keras_aimv2.api import register
from keras_aimv2.compat import replace_weight
from keras_aimv2.models.aimv2_lit_backbone import AIMV2LiTBackbone
from keras_aimv2.models.aimv2_lit_preprocessor import AIMV2LiTPreprocessor
from keras_aimv2.models.aimv2_presets import NamedPresets

# CLIP's plain prompt.
DEFAULT_TEMPLATES = ("a photo of a {}.",)
PLACEHOLDER = "{}"
# Prompts embedded per call of the text tower.
_PROMPT_BATCH_SIZE = 256


def _check_strings(name, values, what):
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(
            f"`{name}` must be a list or tuple of {what}. Received: "
            f"{name}={values!r}"
        )
    if not values:
        raise ValueError(
            f"`{name}` must hold at least one of {what}. Received: "
            f"{name}={values!r}"
        )
    bad = [value for value in values if not isinstance(value, str) or not value]
    if bad:
        raise ValueError(
            f"`{name}` must hold non-empty strings ({what}). Received: "
            f"{name}={values!r}, with {bad[:4]!r}"
        )
    return list(values)


def check_classes(class_names, templates):
    """Raise a clear error for bad class names or prompt templates.

    Args:
        class_names: list or tuple of non-empty strings, without repeats.
        templates: list or tuple of strings, each with a `"{}"`
            placeholder for the class name.

    Returns:
        A tuple `(class_names, templates)` of lists.
    """
    class_names = _check_strings("class_names", class_names, "class names")
    repeated = sorted(
        {name for name in class_names if class_names.count(name) > 1}
    )
    if repeated:
        raise ValueError(
            "`class_names` must not repeat a class. Received: "
            f"class_names={class_names!r}, repeating {repeated[:4]!r}"
        )
    templates = _check_strings("templates", templates, "prompt templates")
    missing = [
        template for template in templates if PLACEHOLDER not in template
    ]
    if missing:
        raise ValueError(
            f"Every template must hold the placeholder {PLACEHOLDER!r} for "
            f"the class name. Received: templates={templates!r}, without "
            f"it: {missing[:4]!r}"
        )
    return class_names, templates


@register
class AIMV2ZeroShotClassifier(NamedPresets, Task):
    """Classifies images by their similarity to class prompts (zero-shot).

    CLIP-style zero-shot classification with an `AIMV2LiTBackbone`: every
    class name is put into each prompt template (`"a photo of a {}."`),
    each prompt is embedded by the text tower and L2-normalized, a class's
    prompts are averaged (prompt ensembling, as in CLIP, Radford et al.,
    2021) and the mean is normalized again. These class embeddings are
    kept in the non-trainable weight `class_embeddings` `(num_classes,
    projection_dim)`; `set_classes` recomputes them for other classes. An
    image's logits are `logit_scale * image_embedding @
    class_embeddings.T`, the backbone's own scale.

    Inputs are images (or a dict with `"images"`) normalized as the
    backbone expects, or raw images in `[0, 255]`, which the attached
    preprocessor's image converter normalizes in `predict` and `evaluate`.
    Outputs are logits `(batch, num_classes)`; `evaluate` takes integer
    labels in the order of `class_names` and reports top-1 `accuracy`.

    Args:
        backbone: `keras_aimv2.AIMV2LiTBackbone`. The image-text model.
        preprocessor: `keras_aimv2.AIMV2LiTPreprocessor`. Tokenizes the
            prompts (and converts images in `predict`).
        class_names: list or tuple of strings. The classes, without
            repeats.
        templates: list or tuple of strings, each with a `"{}"`
            placeholder for the class name. Defaults to `("a photo of a
            {}.",)`.
        compute_class_embeddings: bool. Embed the prompts now. `False`
            leaves zeros until `set_classes` is called or saved weights are
            loaded (as when a saved classifier is loaded); not part of the
            config. Defaults to `True`.
        **kwargs: other keyword arguments passed to `keras_hub.models.Task`.

    Example:

    >>> classifier = AIMV2ZeroShotClassifier(
    ...     backbone,
    ...     preprocessor,
    ...     class_names=["dog", "cat"],
    ...     templates=["a photo of a {}.", "a drawing of a {}."],
    ... )
    >>> classifier.predict(np.zeros((4, 32, 32, 3)), verbose=0).shape
    (4, 2)
    >>> classifier.set_classes(["dog", "cat", "bird"])
    >>> classifier.predict(np.zeros((4, 32, 32, 3)), verbose=0).shape
    (4, 3)
    """

    backbone_cls = AIMV2LiTBackbone
    preprocessor_cls = AIMV2LiTPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor,
        class_names,
        templates=DEFAULT_TEMPLATES,
        compute_class_embeddings=True,
        **kwargs,
    ):
        if not isinstance(backbone, AIMV2LiTBackbone):
            raise ValueError(
                "`backbone` must be a `keras_aimv2.AIMV2LiTBackbone`. "
                f"Received: backbone={type(backbone).__name__}"
            )
        if preprocessor is None or not hasattr(preprocessor, "tokenizer"):
            raise ValueError(
                "`preprocessor` must be a `keras_aimv2.AIMV2LiTPreprocessor`, "
                "which tokenizes the class prompts. Received: "
                f"preprocessor={preprocessor!r}"
            )
        class_names, templates = check_classes(class_names, templates)
        compile_model = kwargs.pop("compile", True)
        super().__init__(dtype=backbone.dtype_policy, compile=False, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.class_embeddings = None
        if compute_class_embeddings:
            self.set_classes(class_names, templates)
        else:
            self.class_names, self.templates = class_names, templates
            self._replace_class_embeddings(
                np.zeros((len(class_names), backbone.projection_dim))
            )
        self.built = True
        if compile_model:
            self.compile()

    @property
    def num_classes(self):
        """The number of classes."""
        return len(self.class_names)

    def set_classes(self, class_names, templates=None):
        """Embed the prompts of new classes and use them from now on.

        Args:
            class_names: list or tuple of strings. The classes, without
                repeats.
            templates: list or tuple of strings with a `"{}"` placeholder,
                or `None` to keep the current templates. Defaults to
                `None`.

        Example:

        >>> classifier.set_classes(["red", "green"], ["a {} square."])
        """
        if templates is None:
            templates = getattr(self, "templates", DEFAULT_TEMPLATES)
        class_names, templates = check_classes(class_names, templates)
        self._replace_class_embeddings(
            self.embed_classes(class_names, templates)
        )
        self.class_names, self.templates = class_names, templates

    def embed_classes(self, class_names, templates):
        """Prompt-ensembled, L2-normalized class embeddings, a NumPy array.

        Each prompt is embedded and normalized (`encode_text`); a class's
        prompts are averaged and the mean normalized.

        Args:
            class_names: list of strings.
            templates: list of strings with a `"{}"` placeholder.

        Returns:
            Float32 array `(len(class_names), projection_dim)`.
        """
        prompts = [
            template.replace(PLACEHOLDER, name)
            for name in class_names
            for template in templates
        ]
        embeddings = []
        for start in range(0, len(prompts), _PROMPT_BATCH_SIZE):
            batch = prompts[start : start + _PROMPT_BATCH_SIZE]
            token_ids = self.preprocessor({"captions": batch})["token_ids"]
            token_ids = np.asarray(token_ids, "int32")
            embedding = self.backbone.encode_text(token_ids)
            embeddings.append(
                ops.convert_to_numpy(ops.cast(embedding, "float32"))
            )
        embeddings = np.concatenate(embeddings).reshape(
            len(class_names), len(templates), -1
        )
        means = embeddings.mean(axis=1)
        return means / np.linalg.norm(means, axis=-1, keepdims=True)

    def _replace_class_embeddings(self, values):
        values = np.asarray(values, "float32")
        old = self.class_embeddings
        if old is not None and tuple(old.shape) == values.shape:
            old.assign(values)
            return
        self.class_embeddings = replace_weight(
            self, old, "class_embeddings", values.shape
        )
        self.class_embeddings.assign(values)

    def call(self, inputs):
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        image_embeddings = ops.cast(
            self.backbone.encode_images(images), "float32"
        )
        class_embeddings = ops.cast(self.class_embeddings, "float32")
        logits = self.backbone.logit_scale() * ops.matmul(
            image_embeddings, ops.transpose(class_embeddings)
        )
        return ops.cast(logits, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["images"]
        return (input_shape[0], self.num_classes)

    def preprocess_samples(self, x, y=None, sample_weight=None):
        # Bare images reach the preprocessor as its `"images"`.
        if not isinstance(x, dict):
            x = {"images": x}
        return super().preprocess_samples(x, y=y, sample_weight=sample_weight)

    def compile(
        self, optimizer="rmsprop", loss="auto", *, metrics="auto", **kwargs
    ):
        """Configure `evaluate`: cross-entropy on the logits and top-1
        accuracy with integer labels.

        Args:
            optimizer: a `keras.optimizers.Optimizer` or its name. The
                classifier is not meant to be trained (its class embeddings
                are fixed); Keras's default. Defaults to `"rmsprop"`.
            loss: `"auto"` or a loss. `"auto"` is sparse categorical
                cross-entropy from logits. Defaults to `"auto"`.
            metrics: `"auto"` or a list of metrics. `"auto"` is top-1
                accuracy. Defaults to `"auto"`.
            **kwargs: other keyword arguments passed to
                `keras.Model.compile`.
        """
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"class_names": self.class_names, "templates": self.templates}
        )
        return config

    @classmethod
    def from_config(cls, config):
        # The saved weights hold the class embeddings: no need to embed the
        # prompts with a backbone whose weights are not loaded yet.
        return super().from_config(
            {**config, "compute_class_embeddings": False}
        )
