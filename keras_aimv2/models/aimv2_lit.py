"""Locked-image text tuning (LiT) of an AIMv2 encoder."""

import keras
from keras_hub.models import Task

from keras_aimv2 import contrastive
from keras_aimv2 import objective
from keras_aimv2.api import register
from keras_aimv2.compat import VariablesKeptOnFailure
from keras_aimv2.models.aimv2_lit_backbone import AIMV2LiTBackbone
from keras_aimv2.models.aimv2_lit_preprocessor import AIMV2LiTPreprocessor
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.optimization import NO_DECAY

# The attention pool's learned query and the temperature are not decayed.
LIT_NO_DECAY = (*NO_DECAY, "query", "log_logit_scale")


@register
class AIMV2LiT(VariablesKeptOnFailure, NamedPresets, Task):
    """Contrastive image-text tuning of an `AIMV2LiTBackbone`.

    LiT ("LiT: Zero-Shot Transfer with Locked-image text Tuning", Zhai et
    al., CVPR 2022) teaches a text tower to read out a pre-trained image
    encoder: the image encoder is locked and the text side learns, with
    CLIP's symmetric contrastive loss over the batch
    (`keras_aimv2.contrastive.contrastive_loss`). AIMv2's released LiT model
    tunes this way ("Multimodal Autoregressive Pre-training of Large Vision
    Encoders", Fini et al., CVPR 2025). With `freeze_image_encoder=True`
    the AIMv2 trunk (`backbone.vision_encoder`) is non-trainable; the
    attention pool, both projections, the text tower and the temperature
    train, since the pre-trained AIMv2 encoder comes without a pool head.

    Inputs are a dict with `"images"` and `"token_ids"` (matching pairs:
    caption `i` describes image `i`), or, with a `preprocessor` attached,
    `{"images", "captions"}` batches as `keras_aimv2.pretraining_dataset`
    yields them. Outputs are the backbone's logits. `fit` takes no labels:
    the targets are the pairs themselves; a `y` in the batches (the
    pipeline's placeholder) is ignored, and a `sample_weight` weighs each
    pair (0 removes it, see `contrastive_loss`). It reports `loss` and
    `accuracy`, the top-1 image-to-text retrieval accuracy within the
    batch.

    Args:
        backbone: `keras_aimv2.AIMV2LiTBackbone`. The model to tune.
        preprocessor: `keras_aimv2.AIMV2LiTPreprocessor` or `None`. Turns
            images and captions into the inputs above. Defaults to `None`.
        freeze_image_encoder: bool. Lock the AIMv2 image encoder. Defaults
            to `True`.
        **kwargs: other keyword arguments passed to `keras_hub.models.Task`
            (`compile=False` leaves the model uncompiled, `name`, ...).

    Example:

    >>> vision_encoder = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
    >>> backbone = AIMV2LiTBackbone(vision_encoder, **LIT_CONFIGS["tiny"])
    >>> lit = AIMV2LiT(backbone)
    >>> batch = {
    ...     "images": np.random.rand(4, 32, 32, 3).astype("float32"),
    ...     "token_ids": np.array([[5, 1, 0], [6, 1, 0], [7, 8, 1], [9, 1, 0]]),
    ... }
    >>> history = lit.fit(batch, batch_size=4, epochs=2, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    """

    backbone_cls = AIMV2LiTBackbone
    preprocessor_cls = AIMV2LiTPreprocessor

    def __init__(
        self, backbone, preprocessor=None, freeze_image_encoder=True, **kwargs
    ):
        # === Layers ===
        self.backbone = backbone
        self.backbone.vision_encoder.trainable = not freeze_image_encoder
        self.preprocessor = preprocessor

        # === Functional Model ===
        inputs = backbone.input
        outputs = backbone(inputs)
        compile_model = kwargs.pop("compile", True)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            dtype=backbone.dtype_policy,
            compile=False,
            **kwargs,
        )

        # === Training ===
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # How the loss meets replicas (`keras_aimv2.distribution.wrap`).
        self.batch_means = objective.BatchMeans()
        if compile_model:
            self.compile()

    @property
    def freeze_image_encoder(self):
        """Whether the image encoder is locked (not trainable)."""
        return not self.backbone.vision_encoder.trainable

    def compile(
        self,
        optimizer="auto",
        *,
        learning_rate=1e-3,
        weight_decay=1e-4,
        **kwargs,
    ):
        """Configure training. The loss is the contrastive loss, built in.

        Args:
            optimizer: `"auto"` or a `keras.optimizers.Optimizer`. `"auto"`
                is AdamW with `learning_rate` and `weight_decay` (LiT's
                defaults), without decay of biases, norm scales, position
                embeddings, the pool's query and the temperature. Defaults
                to `"auto"`.
            learning_rate: float or schedule. Rate of the `"auto"`
                optimizer. Defaults to `1e-3`.
            weight_decay: float. Decoupled weight decay of the `"auto"`
                optimizer. Defaults to `1e-4`.
            **kwargs: other keyword arguments passed to
                `keras.Model.compile` (`metrics`, `jit_compile`, ...).
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(
                learning_rate=learning_rate, weight_decay=weight_decay
            )
            optimizer.exclude_from_weight_decay(var_names=list(LIT_NO_DECAY))
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompile from a saved `.keras` file, optimizer state included."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The contrastive loss of the batch's image-caption pairs.

        `y` is ignored: the targets are the pairs. `sample_weight`, one
        weight per pair, weighs its terms. Also records the image-to-text
        top-1 accuracy.
        """
        logits = y_pred["vision_logits"]
        loss = contrastive.contrastive_loss(logits, sample_weight)
        correct = contrastive.image_to_text_correct(logits, sample_weight)
        self.accuracy_tracker.update_state(correct, sample_weight=sample_weight)
        if self.losses:
            loss = loss + keras.ops.sum(self.losses)
        # Replicas each contrast their own share of the batch; the loss of
        # the step is the mean of theirs.
        means = self.batch_means
        return means.returned(means.split(loss), training)

    def get_config(self):
        config = super().get_config()
        config.update({"freeze_image_encoder": self.freeze_image_encoder})
        return config
