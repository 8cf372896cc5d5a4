"""Image classification with an AIMv2 encoder: attentive probe, fine-tuning."""

import keras
from keras_hub.models import ImageClassifier
from keras_hub.models import Task

from keras_aimv2.api import register
from keras_aimv2.compat import TASK_CONFIG_FILE
from keras_aimv2.compat import check_config_class
from keras_aimv2.compat import check_file_exists
from keras_aimv2.compat import load_json
from keras_aimv2.layer_decay import LayerDecayAdamW
from keras_aimv2.layers.attention_pool import AttentionPool
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_classifier_preprocessor import (
    AIMV2ImageClassifierPreprocessor,
)
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.models.aimv2_presets import resolve_preset
from keras_aimv2.optimization import NO_DECAY
from keras_aimv2.validation import check_positive_int

POOLINGS = ("attention", "mean")
# The probe's learned query is a class token: it is not decayed either.
HEAD_NO_DECAY = (*NO_DECAY, "query")


@register
class AIMV2ImageClassifier(NamedPresets, ImageClassifier):
    """Classifies images with an `AIMV2Backbone`: probe or fine-tune.

    The defaults build AIMv2's attentive probe ("Multimodal Autoregressive
    Pre-training of Large Vision Encoders", Fini et al., CVPR 2025,
    Section 4): the encoder is frozen (`backbone.trainable = False`), and
    one learned query attends over all patch features with multi-head
    attention (keys and values projected, no query projection) before a
    linear classifier (`keras_aimv2.layers.AttentionPool`). With
    `freeze_backbone=False` the whole model is fine-tuned; pooling is then
    either the same attention pool or the mean of the patch features
    followed by a linear layer. `compile(layer_decay=...)` adds layer-wise
    learning-rate decay (`keras_aimv2.layer_decay.LayerDecayAdamW`).

    The features are those of the last block by default, as AIMv2 probes;
    `feature_layers` averages chosen blocks instead (each through the
    encoder's final RMSNorm, see `AIMV2Backbone.extract_features`).

    Inputs are images in the backbone's data format (`(batch, height,
    width, channels)` by default), normalized, or raw images in `[0, 255]`
    when a `preprocessor` is attached (as through `from_preset`); outputs
    are logits `(batch, num_classes)` unless `activation` is set. `fit`
    takes integer labels.

    Args:
        backbone: `keras_aimv2.AIMV2Backbone`. The encoder.
        num_classes: int. Number of classes.
        preprocessor: `AIMV2ImageClassifierPreprocessor` or `None`. Resizes
            and normalizes raw images. Defaults to `None`.
        pooling: str. `"attention"` (one learned query, multi-head attention
            pooling) or `"mean"` (average of the patch features). Defaults
            to `"attention"`.
        freeze_backbone: bool. Whether to freeze the encoder (the attentive
            probe) or fine-tune it. Defaults to `True`.
        feature_layers: tuple of ints or `None`. Blocks whose features are
            averaged; negative indices count from the end. Defaults to
            `None`, the last block.
        num_heads: int or `None`. Heads of the attention pool; must divide
            the backbone's width. Defaults to `None`, the backbone's.
        activation: `None`, str or callable. Activation of the outputs.
            Defaults to `None`, logits.
        dropout: float. Dropout on the patch features entering the head.
            Defaults to `0.0`.
        head_dtype: `None`, str or `keras.mixed_precision.DTypePolicy`.
            Dtype of the head's computations and weights. Defaults to the
            backbone's.
        **kwargs: other keyword arguments passed to `keras_hub.models.Task`.

    Example:

    >>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
    >>> probe = AIMV2ImageClassifier(backbone, num_classes=10)
    >>> images = np.random.rand(8, 32, 32, 3).astype("float32")
    >>> labels = np.arange(8) % 10
    >>> history = probe.fit(images, labels, batch_size=4, verbose=0)
    >>> probe.predict(images, verbose=0).shape
    (8, 10)

    Fine-tuning with layer-wise learning-rate decay:

    >>> model = AIMV2ImageClassifier(
    ...     backbone, num_classes=10, pooling="mean", freeze_backbone=False
    ... )
    >>> model.compile(learning_rate=1e-4, layer_decay=0.75)
    """

    backbone_cls = AIMV2Backbone
    preprocessor_cls = AIMV2ImageClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        pooling="attention",
        freeze_backbone=True,
        feature_layers=None,
        num_heads=None,
        activation=None,
        dropout=0.0,
        head_dtype=None,
        **kwargs,
    ):
        check_positive_int("num_classes", num_classes)
        if pooling not in POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {POOLINGS}. Received: "
                f"pooling={pooling!r}"
            )
        if feature_layers is not None:
            feature_layers = tuple(feature_layers)
            backbone.encoder.check_feature_layers(feature_layers)
        num_heads = num_heads or backbone.num_heads
        if backbone.hidden_dim % num_heads:
            raise ValueError(
                f"`num_heads` must divide the backbone's width "
                f"{backbone.hidden_dim}. Received: num_heads={num_heads}"
            )
        head_dtype = head_dtype or backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.backbone.trainable = not freeze_backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=head_dtype, name="output_dropout"
        )
        if pooling == "attention":
            self.pooler = AttentionPool(
                num_heads,
                output_dim=num_classes,
                dtype=head_dtype,
                name="attention_pool",
            )
            self.output_dense = None
        else:
            self.pooler = keras.layers.GlobalAveragePooling1D(
                dtype=head_dtype, name="pooler"
            )
            self.output_dense = keras.layers.Dense(
                num_classes, dtype=head_dtype, name="predictions"
            )
        self.output_activation = keras.layers.Activation(
            activation, dtype=head_dtype, name="output_activation"
        )

        # === Functional Model ===
        inputs = self.backbone.input
        if feature_layers is None:
            features = self.backbone(inputs)
        else:
            features = self.backbone.encoder(
                self.backbone.patch_embedding(inputs),
                feature_layers=feature_layers,
            )
        x = self.pooler(self.output_dropout(features))
        if self.output_dense is not None:
            x = self.output_dense(x)
        outputs = self.output_activation(x)
        # Skip the functional model of `ImageClassifier`, as keras-hub's
        # ViT classifier does, and compile once the config is set.
        compile_model = kwargs.pop("compile", True)
        Task.__init__(
            self, inputs=inputs, outputs=outputs, compile=False, **kwargs
        )

        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.feature_layers = feature_layers
        self.num_heads = num_heads
        self.activation = activation
        self.dropout = dropout
        if compile_model:
            self.compile()

    @property
    def freeze_backbone(self):
        """Whether the encoder is frozen (`not backbone.trainable`)."""
        return not self.backbone.trainable

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        metrics="auto",
        learning_rate=None,
        weight_decay=0.05,
        layer_decay=None,
        **kwargs,
    ):
        """Configure training: AdamW, cross-entropy, top-1 accuracy.

        Args:
            optimizer: `"auto"` or a `keras.optimizers.Optimizer`. `"auto"`
                is AdamW (`LayerDecayAdamW`) with `learning_rate`,
                `weight_decay` and `layer_decay`, without decay of biases,
                norm scales, position embeddings and the probe's query.
                Defaults to `"auto"`.
            loss: `"auto"` or a `keras.losses.Loss`. `"auto"` is sparse
                categorical cross-entropy on the outputs (logits unless
                `activation="softmax"`). Defaults to `"auto"`.
            metrics: `"auto"` or a list of metrics. `"auto"` is top-1
                accuracy. Defaults to `"auto"`.
            learning_rate: float, schedule or `None`. Rate of the head with
                `"auto"`. Defaults to `None`: 1e-3 for a frozen encoder
                (AIMv2's probe sweep spans 5e-5 to 2e-3), 1e-4 otherwise.
            weight_decay: float. Decoupled weight decay with `"auto"`, as
                PyTorch's AdamW applies it (AIMv2 probes with 0.05 or 0.1).
                Defaults to `0.05`.
            layer_decay: float or `None`. Layer-wise learning-rate decay
                with `"auto"`: block `i` of `L` trains at `layer_decay **
                (L - i)` times the rate. Defaults to `None`, no decay.
            **kwargs: other keyword arguments passed to
                `keras.Model.compile`.
        """
        if optimizer == "auto":
            if learning_rate is None:
                learning_rate = 1e-3 if self.freeze_backbone else 1e-4
            optimizer = LayerDecayAdamW(
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                layer_decay=1.0 if layer_decay is None else layer_decay,
                num_layers=self.backbone.num_layers,
            )
            optimizer.exclude_from_weight_decay(var_names=list(HEAD_NO_DECAY))
        elif learning_rate is not None or layer_decay is not None:
            raise ValueError(
                "`learning_rate` and `layer_decay` configure the 'auto' "
                "optimizer; set them on your optimizer instead (e.g. "
                "`keras_aimv2.layer_decay.LayerDecayAdamW`). Received: "
                f"optimizer={optimizer!r}, learning_rate={learning_rate!r}, "
                f"layer_decay={layer_decay!r}"
            )
        if loss == "auto":
            from_logits = (
                keras.activations.get(self.activation)
                != keras.activations.softmax
            )
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=from_logits
            )
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        Task.compile(
            self, optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def compile_from_config(self, config):
        """Recompile from a saved `.keras` file, optimizer state included.

        Keras skips this for a model whose `compile` is overridden, and a
        loaded classifier would come back uncompiled; `config` holds the
        optimizer, loss and metrics this classifier was compiled with.
        """
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Instantiate an `AIMV2ImageClassifier` from a preset.

        As `keras_hub.models.Task.from_preset`; pass `num_classes` to put a
        new head on a backbone or pre-training preset. An `image_shape`
        different from the preset's loads the backbone through
        `AIMV2Backbone.from_preset` (resampling learned positions) and
        resizes to it in the preprocessor; a saved classifier is moved to
        another size with `backbone.with_image_shape` instead.

        Args:
            preset: str. A preset directory or handle, or the name of a
                released checkpoint converted with `aimv2 convert`
                (`keras_aimv2.models.aimv2_presets`).
            load_weights: bool. Whether to load the preset's weights.
                Defaults to `True`.
            **kwargs: other keyword arguments passed to the classifier
                (`num_classes`, `pooling`, `image_shape`, ...).

        Example:

        >>> probe = AIMV2ImageClassifier.from_preset(
        ...     "runs/tiny/preset/backbone", num_classes=10
        ... )
        """
        image_shape = kwargs.pop("image_shape", None)
        preset = resolve_preset(preset)
        if image_shape is None:
            return super().from_preset(preset, load_weights, **kwargs)
        if check_file_exists(preset, TASK_CONFIG_FILE) and issubclass(
            check_config_class(load_json(preset, TASK_CONFIG_FILE)), cls
        ):
            raise ValueError(
                f"{preset!r} holds a saved {cls.__name__}; `image_shape` "
                "only applies to backbone or pre-training presets. Load it, "
                "then build a classifier on "
                "`classifier.backbone.with_image_shape(image_shape)`. "
                f"Received: image_shape={image_shape}"
            )
        backbone = cls.backbone_cls.from_preset(
            preset,
            load_weights=load_weights,
            image_shape=image_shape,
            dtype=kwargs.pop("dtype", None),
        )
        if "preprocessor" not in kwargs:
            preprocessor = cls.preprocessor_cls.from_preset(preset)
            converter = preprocessor.image_converter
            if converter is not None and converter.image_size is not None:
                config = converter.get_config()
                config["image_size"] = tuple(backbone.image_size)
                preprocessor.image_converter = type(converter).from_config(
                    config
                )
            kwargs["preprocessor"] = preprocessor
        return super().from_preset(
            preset, load_weights, backbone=backbone, **kwargs
        )

    def get_config(self):
        # The backbone and preprocessor are serialized by `Task`.
        config = Task.get_config(self)
        config.update(
            {
                "num_classes": self.num_classes,
                "pooling": self.pooling,
                "freeze_backbone": self.freeze_backbone,
                "feature_layers": self.feature_layers,
                "num_heads": self.num_heads,
                "activation": self.activation,
                "dropout": self.dropout,
            }
        )
        return config
