"""AIMv2 pre-training: encoder, multimodal decoder, heads and objective."""

import math
import numbers

import keras
from keras import ops
from keras_hub.models import Task

from keras_aimv2 import objective
from keras_aimv2 import xla_cpu
from keras_aimv2.api import register
from keras_aimv2.compat import FirstReplicaSymbolicBuild
from keras_aimv2.compat import VariablesKeptOnFailure
from keras_aimv2.layers.decoder import MultimodalCausalDecoder
from keras_aimv2.layers.heads import PixelHead
from keras_aimv2.layers.heads import TextHead
from keras_aimv2.layers.prefix import check_prefix_lengths
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_presets import NamedPresets
from keras_aimv2.models.aimv2_presets import check_preset_files
from keras_aimv2.models.aimv2_presets import resolve_preset
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.optimization import aimv2_adamw

INPUT_KEYS = ("images", "token_ids", "padding_mask", "prefix_lengths")


@register
class AIMV2Pretrainer(
    FirstReplicaSymbolicBuild, VariablesKeptOnFailure, NamedPresets, Task
):
    """Pre-trains an `AIMV2Backbone` with AIMv2's multimodal objective.

    The encoder reads the image under prefix attention with a prefix length
    `M ~ U{1, ..., I - 1}` per example; a causal multimodal decoder reads
    `[image features][BOS][caption]`; a pixel head regresses each next
    normalized patch after the prefix and a text head predicts each next
    caption token. The loss is `text_loss_weight * text + pixel_loss_weight
    * pixel` ("Multimodal Autoregressive Pre-training of Large Vision
    Encoders", Fini et al., CVPR 2025; the paper's objective has text weight
    1 and `alpha = 0.4`). After training, keep `pretrainer.backbone`.

    The weights select the objectives of the paper's ablation (Table 9):
    `pixel_loss_weight=0` trains by captioning alone, `text_loss_weight=0`
    by next-patch regression alone. With the image first and a causal
    decoder, no image position ever sees the text, so the pixel-only
    objective is exactly AIMv1's (an autoregressive image model): the
    caption tokens then only add unused computation.

    Inputs are a dict with `"images"` (`(batch, height, width, channels)`,
    normalized), `"token_ids"` (`(batch, T)`, the caption right-padded to at
    most `context_length`), `"padding_mask"` (`(batch, T)`, true for the
    text targets) and `"prefix_lengths"` (`(batch,)`, in `[1, I - 1]`). The
    prefix lengths are training randomness: `AIMV2PretrainerPreprocessor`
    draws them, per example and statelessly, so attach it (or draw them
    with `draw_prefix_lengths` of
    `keras_aimv2.models.aimv2_pretrainer_preprocessor`).
    Outputs are a dict: `"pixel_predictions"` (`(batch, I - 1,
    patch_dim)`, prediction `i` for patch `i + 1`) and `"text_logits"`
    (`(batch, T, vocabulary_size)`, logit `j` for token `j`). `fit`
    reports `loss`, `pixel_loss`, `text_loss` and `text_accuracy`, exact
    means over every counted patch and token.

    Under data parallelism each replica holds a slice of the global batch;
    `keras_aimv2.distribution.Distributed.wrap` sets `batch_means` so that
    the losses stay the global batch's means (see `keras_aimv2.objective`).

    Args:
        backbone: `keras_aimv2.AIMV2Backbone`. The encoder to pre-train.
        decoder_hidden_dim: int. Decoder width. Defaults to `1024`.
        decoder_num_layers: int. Decoder blocks. Defaults to `12`.
        decoder_num_heads: int. Decoder attention heads. Defaults to `8`.
        decoder_intermediate_dim: int. Decoder SwiGLU hidden width.
            Defaults to `2816`.
        vocabulary_size: int. Text tokens. Defaults to `32000`.
        context_length: int. Most caption tokens. Defaults to `77`.
        pixel_loss_weight: float. `alpha` of the objective, the weight of
            the pixel loss, `>= 0`. Defaults to `0.4`.
        text_loss_weight: float. The weight of the text loss, `>= 0`; not
            both weights may be 0. Defaults to `1.0`.
        remat: bool. Recompute every encoder and decoder block in the
            backward pass instead of keeping its activations: less memory
            for about a third more compute. Defaults to `False`.
        preprocessor: `keras_aimv2.AIMV2PretrainerPreprocessor` or `None`.
            Turns images and captions into the inputs above. Defaults to
            `None`.
        **kwargs: other keyword arguments passed to `keras_hub.models.Task`
            (`compile=False` leaves the model uncompiled, `name`, ...).

    Example:

    >>> backbone = AIMV2Backbone(**BACKBONE_CONFIGS["tiny"])
    >>> pretrainer = AIMV2Pretrainer(backbone, **DECODER_CONFIGS["tiny"])
    >>> batch = {
    ...     "images": np.random.rand(4, 32, 32, 3).astype("float32"),
    ...     "token_ids": np.random.randint(2, 100, (4, 8)),
    ...     "padding_mask": np.ones((4, 8), "bool"),
    ...     "prefix_lengths": np.array([1, 5, 9, 15]),
    ... }
    >>> history = pretrainer.fit(batch, batch_size=2, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'pixel_loss', 'text_accuracy', 'text_loss']
    """

    backbone_cls = AIMV2Backbone
    preprocessor_cls = AIMV2PretrainerPreprocessor

    def __init__(
        self,
        backbone,
        decoder_hidden_dim=1024,
        decoder_num_layers=12,
        decoder_num_heads=8,
        decoder_intermediate_dim=2816,
        vocabulary_size=32000,
        context_length=77,
        pixel_loss_weight=0.4,
        remat=False,
        preprocessor=None,
        text_loss_weight=1.0,
        **kwargs,
    ):
        pixel_loss_weight, text_loss_weight = check_loss_weights(
            pixel_loss_weight, text_loss_weight
        )
        # === Layers ===
        dtype = backbone.dtype_policy
        self.backbone = backbone
        _match_patch_size(preprocessor, backbone)
        self.preprocessor = preprocessor
        self.decoder = MultimodalCausalDecoder(
            hidden_dim=decoder_hidden_dim,
            num_layers=decoder_num_layers,
            num_heads=decoder_num_heads,
            intermediate_dim=decoder_intermediate_dim,
            vocabulary_size=vocabulary_size,
            context_length=context_length,
            layer_norm_epsilon=backbone.layer_norm_epsilon,
            dtype=dtype,
            name="decoder",
        )
        patch_dim = backbone.patch_size**2 * backbone.num_channels
        self.pixel_head = PixelHead(
            patch_dim, decoder_num_layers, dtype=dtype, name="pixel_head"
        )
        self.text_head = TextHead(
            vocabulary_size, decoder_num_layers, dtype=dtype, name="text_head"
        )

        # === Functional Model ===
        inputs = {
            "images": keras.Input(shape=backbone.image_shape, name="images"),
            "token_ids": keras.Input(
                shape=(None,), dtype="int32", name="token_ids"
            ),
            "padding_mask": keras.Input(
                shape=(None,), dtype="bool", name="padding_mask"
            ),
            "prefix_lengths": keras.Input(
                shape=(), dtype="int32", name="prefix_lengths"
            ),
        }
        features = backbone.encoder(
            backbone.patch_embedding(inputs["images"]),
            prefix_lengths=inputs["prefix_lengths"],
            remat=remat,
        )
        # The last token predicts nothing: the decoder never needs it.
        image_outputs, text_outputs = self.decoder(
            features, inputs["token_ids"][:, :-1], remat=remat
        )
        # The last image position predicts no patch.
        outputs = {
            "pixel_predictions": self.pixel_head(image_outputs[:, :-1]),
            "text_logits": self.text_head(text_outputs),
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.decoder_hidden_dim = decoder_hidden_dim
        self.decoder_num_layers = decoder_num_layers
        self.decoder_num_heads = decoder_num_heads
        self.decoder_intermediate_dim = decoder_intermediate_dim
        self.vocabulary_size = vocabulary_size
        self.context_length = context_length
        self.pixel_loss_weight = pixel_loss_weight
        self.text_loss_weight = text_loss_weight
        self.remat = remat

        # === Training ===
        self.batch_means = objective.BatchMeans()
        self.pixel_loss_tracker = keras.metrics.Mean(name="pixel_loss")
        self.text_loss_tracker = keras.metrics.Mean(name="text_loss")
        self.text_accuracy_tracker = keras.metrics.Mean(name="text_accuracy")

    def compile(self, optimizer="auto", jit_compile="auto", **kwargs):
        """Configure training. The loss is AIMv2's objective, built in.

        Args:
            optimizer: `"auto"` or a `keras.optimizers.Optimizer`. `"auto"`
                is AdamW with AIMv2-L's recipe at a constant rate of 1e-3
                (`keras_aimv2.optimization.aimv2_adamw`). Defaults to
                `"auto"`.
            jit_compile: bool or `"auto"`. Compile the training step with
                XLA (JAX, TensorFlow) or `torch.compile` (PyTorch).
                `"auto"` compiles on JAX and TensorFlow, also on a CPU
                in float32 (where Keras alone would not for TensorFlow:
                XLA's step is 8-15% faster there), but not TensorFlow on a
                CPU under a bfloat16 policy (`mixed_bfloat16`): XLA:CPU
                computes bfloat16 matmuls in float32, while TensorFlow's
                own (oneDNN) kernels use the processor's bfloat16 units,
                which makes the step 1.3x faster than XLA's (`small`
                workload of `tools/benchmark.py`); PyTorch runs eagerly, as
                Keras does: `torch.compile` pays about a minute of
                compilation and gains about 30% on large steps. Defaults
                to `"auto"`.
            **kwargs: other keyword arguments passed to `keras.Model.compile`
                (`metrics`, `steps_per_execution`, ...).
        """
        if optimizer == "auto":
            optimizer = aimv2_adamw()
        if jit_compile == "auto" and keras.config.backend() == "tensorflow":
            jit_compile = self.distribute_strategy.num_replicas_in_sync == 1
            compute_dtype = self.backbone.dtype_policy.compute_dtype
            if xla_cpu.prefers_tensorflow_kernels(compute_dtype):
                jit_compile = False
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """As `keras_hub.models.Task.from_preset`; a missing or broken file
        of a preset directory raises a `BrokenPresetError` naming it
        (`check_preset_files`). Names of released checkpoints resolve as
        in `keras_aimv2.models.aimv2_presets.resolve_preset`."""
        preset = resolve_preset(preset)
        check_preset_files(preset, load_weights, task=True)
        return super().from_preset(preset, load_weights, **kwargs)

    def compile_from_config(self, config):
        """Recompile from a saved `.keras` file, optimizer state included."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(self.check_inputs(inputs), *args, **kwargs)

    def check_inputs(self, inputs):
        """Raise a clear error for inputs the model cannot take.

        The keys, every token id (the decoder reads all but the last, the
        targets are all but the first) and the prefix lengths are checked
        where their values are known: on a direct call, and in the input
        pipeline of `fit`, `evaluate` and `predict` (see
        `keras_aimv2.validation`).

        Args:
            inputs: dict. The model's inputs.

        Returns:
            `inputs`, with checked tensors (assertions inside `tf.data`).
        """
        _check_keys(inputs)
        inputs = dict(inputs)
        inputs["token_ids"] = self.decoder.check_token_ids(inputs["token_ids"])
        # The backbone's own checks of the images (size, channels) first.
        embedding = self.backbone.patch_embedding
        embedding.check_images(inputs["images"].shape)
        num_patches = embedding.compute_output_shape(inputs["images"].shape)[1]
        if num_patches:
            inputs["prefix_lengths"] = check_prefix_lengths(
                inputs["prefix_lengths"], num_patches
            )
        return inputs

    def greedy_caption_ids(
        self, images, max_length=None, prefix_lengths=None, end_token_id=None
    ):
        """Greedy-decode caption token ids from the decoder.

        The encoder reads the images with the widest prefix (every patch but
        the last seen bidirectionally) unless `prefix_lengths` is given; the
        decoder then emits, token by token, the most likely next token,
        until every caption has emitted `end_token_id` or `max_length`
        tokens are out. A tokenizer whose pad and end ids differ trains the
        end token as a target, so captions stop there; one that pads with
        its end token (SigLIP's) never trains it, and decoding runs to
        `max_length`.

        Args:
            images: float tensor `(batch, height, width, channels)`,
                normalized as in training.
            max_length: int. Most tokens to emit. Defaults to
                `context_length`.
            prefix_lengths: int tensor `(batch,)` or `None`.
            end_token_id: int or `None`. Stop once every row emitted it.
                Defaults to `None`.

        Returns:
            Int32 tensor `(batch, length)`, `length <= max_length`; cut
            each row at its first end token.
        """
        max_length = max_length or self.context_length
        patch_tokens = self.backbone.patch_embedding(images)
        batch, num_patches = ops.shape(patch_tokens)[:2]
        if prefix_lengths is None:
            prefix_lengths = ops.full((batch,), num_patches - 1, "int32")
        features = self.backbone.encoder(
            patch_tokens, prefix_lengths=prefix_lengths
        )
        # Every step decodes a buffer of `max_length` ids at one fixed
        # shape (eager JAX then compiles each operation once, not once per
        # length); the causal mask keeps the ids after step `t`, still
        # zeros, from reaching the position that predicts id `t`.
        token_ids = ops.zeros((batch, max_length), "int32")
        columns = ops.arange(max_length, dtype="int32")[None]
        ended = ops.zeros((batch,), "bool")
        for step in range(max_length):
            _, text_outputs = self.decoder(features, token_ids[:, :-1])
            index = ops.convert_to_tensor(step, "int32")
            logits = self.text_head(ops.take(text_outputs, index[None], axis=1))
            next_ids = ops.cast(ops.argmax(logits, axis=-1), "int32")
            token_ids = ops.where(ops.equal(columns, step), next_ids, token_ids)
            if end_token_id is not None:
                ended = ops.logical_or(
                    ended, ops.equal(next_ids[:, 0], end_token_id)
                )
                if bool(ops.convert_to_numpy(ops.all(ended))):
                    break
        return token_ids[:, : step + 1]

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """AIMv2's objective, `text_loss_weight * text + pixel_loss_weight
        * pixel`.

        The targets come from `x`: the images' next patches after each
        prefix and the caption's next tokens. The model takes no `y`: it
        must be `None`, or a placeholder of one value per example, as in
        `(x, placeholder, sample_weight)` batches (a `tf.data` element
        cannot hold `None`). `sample_weight`, one weight per example,
        scales that example's patches and tokens (the evaluation pipeline
        gives 0 to the padding that completes its last batch).

        The metrics record each mean with its count of patches or tokens,
        so that over many batches they are the exact means of the whole
        set, and the reported `loss` is the objective of those means
        (`get_metrics_result`). `batch_means` turns the batch's sums into
        means (`keras_aimv2.objective.BatchMeans`).
        """
        _check_no_targets(y)
        means = self.batch_means
        targets = objective.pixel_targets(
            x["images"], self.backbone.patch_size, self.backbone.data_format
        )
        pixel_sum, pixel_count = objective.pixel_error_sum(
            y_pred["pixel_predictions"],
            targets,
            objective.pixel_target_weights(
                x["prefix_lengths"], ops.shape(targets)[1], sample_weight
            ),
        )
        text_sum, correct_sum, text_count = objective.text_sums(
            y_pred["text_logits"],
            x["token_ids"],
            objective.text_target_weights(x["padding_mask"], sample_weight),
        )
        pixel_count = means.total(pixel_count)
        text_count = means.total(text_count)
        pixel_loss = objective.mean(pixel_sum, pixel_count)
        text_loss = objective.mean(text_sum, text_count)
        for tracker, share, count in (
            (self.pixel_loss_tracker, pixel_loss, pixel_count),
            (self.text_loss_tracker, text_loss, text_count),
            (
                self.text_accuracy_tracker,
                objective.mean(correct_sum, text_count),
                text_count,
            ),
        ):
            tracker.update_state(means.tracked(share), sample_weight=count)
        loss = self.objective(text_loss, pixel_loss)
        if self.losses:
            loss = loss + means.split(ops.sum(self.losses))
        return means.returned(loss, training)

    def get_metrics_result(self):
        """The metrics, with `loss` the objective of the mean losses.

        Keras would average each batch's loss weighted by its number of
        examples; the objective of the exact means over every patch and
        token seen is the loss of the whole set.
        """
        result = super().get_metrics_result()
        if "text_loss" in result and "pixel_loss" in result:
            result["loss"] = self.objective(
                result["text_loss"], result["pixel_loss"]
            )
        return result

    def objective(self, text_loss, pixel_loss):
        """The weighted loss of a text loss and a pixel loss.

        A weight of 0 leaves its loss out entirely (its gradient is 0 and
        a non-finite value of it cannot reach the objective).
        """
        loss = 0.0
        if self.text_loss_weight:
            loss = loss + self.text_loss_weight * text_loss
        if self.pixel_loss_weight:
            loss = loss + self.pixel_loss_weight * pixel_loss
        return loss

    def preprocess_samples(self, x, y=None, sample_weight=None):
        data = super().preprocess_samples(x, y=y, sample_weight=sample_weight)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = self.check_inputs(x)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "decoder_hidden_dim": self.decoder_hidden_dim,
                "decoder_num_layers": self.decoder_num_layers,
                "decoder_num_heads": self.decoder_num_heads,
                "decoder_intermediate_dim": self.decoder_intermediate_dim,
                "vocabulary_size": self.vocabulary_size,
                "context_length": self.context_length,
                "pixel_loss_weight": self.pixel_loss_weight,
                "text_loss_weight": self.text_loss_weight,
                "remat": self.remat,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Presets saved before the preprocessor drew the prefix lengths
        # hold the seed of the model's own draws: nothing uses it now.
        config = {key: value for key, value in config.items() if key != "seed"}
        return super().from_config(config)


def check_loss_weights(pixel_loss_weight, text_loss_weight):
    """The objective's weights as floats, or a `ValueError` naming them.

    Args:
        pixel_loss_weight: number. The weight of the pixel loss.
        text_loss_weight: number. The weight of the text loss.

    Returns:
        `(pixel_loss_weight, text_loss_weight)`, finite floats `>= 0`, not
        both 0.

    Example:

    >>> check_loss_weights(0.4, 0)
    (0.4, 0.0)
    """
    weights = {
        "pixel_loss_weight": pixel_loss_weight,
        "text_loss_weight": text_loss_weight,
    }
    for name, value in weights.items():
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            raise ValueError(
                f"`{name}` must be a finite number >= 0. Received: "
                f"{name}={value!r}"
            )
    if not pixel_loss_weight and not text_loss_weight:
        raise ValueError(
            "`pixel_loss_weight` and `text_loss_weight` are both 0: the "
            "objective would train nothing. Give one of them a weight > 0. "
            f"Received: pixel_loss_weight={pixel_loss_weight!r}, "
            f"text_loss_weight={text_loss_weight!r}"
        )
    return float(pixel_loss_weight), float(text_loss_weight)


def _match_patch_size(preprocessor, backbone):
    """Give `preprocessor` the backbone's patch size, or refuse another."""
    patch_size = getattr(preprocessor, "patch_size", backbone.patch_size)
    if patch_size is None:
        preprocessor.patch_size = backbone.patch_size
    elif patch_size != backbone.patch_size:
        raise ValueError(
            "The preprocessor draws prefix lengths for patches of "
            f"patch_size={patch_size} pixels, but the backbone's patches "
            f"are {backbone.patch_size} pixels: build the preprocessor with "
            f"patch_size={backbone.patch_size} (or None)."
        )


def _check_keys(inputs):
    """Raise a clear error unless `inputs` is a dict with every input key."""
    if not isinstance(inputs, dict):
        raise ValueError(
            f"AIMV2Pretrainer inputs must be a dict with keys "
            f"{list(INPUT_KEYS)}. Received: {type(inputs).__name__}"
        )
    missing = [key for key in INPUT_KEYS if key not in inputs]
    if "prefix_lengths" in missing:
        raise ValueError(
            "AIMV2Pretrainer needs `prefix_lengths`, the prefix length of "
            "every image, which AIMv2 draws per example in training: attach "
            "an `AIMV2PretrainerPreprocessor` (it draws them), or pass them, "
            "e.g. from `keras_aimv2.models.aimv2_pretrainer_preprocessor."
            f"draw_prefix_lengths`. Received keys: {sorted(inputs)}"
        )
    if missing:
        raise ValueError(
            f"AIMV2Pretrainer inputs must be a dict with keys "
            f"{list(INPUT_KEYS)}. Missing: {missing}"
        )


def _check_no_targets(y):
    """Refuse targets: the pretrainer's come from its inputs."""
    if y is None:
        return
    if isinstance(y, (dict, list, tuple)) or len(getattr(y, "shape", ())) > 1:
        raise ValueError(
            "AIMV2Pretrainer takes no `y`: its targets are the images' "
            "patches and the captions' tokens in `x`. Pass `y=None` (or one "
            "placeholder value per example to carry `sample_weight`). "
            f"Received: y with shape {getattr(y, 'shape', None)!r} "
            f"of type {type(y).__name__}"
        )
