"""keras-hub's harness on the transformer layers and the pre-training task.

`keras_hub.src.tests.test_case.TestCase` builds each layer from its shapes
(one `<input>_shape` argument per call input), calls it symbolically and
eagerly, trains it one step, round-trips its config and serialization, and
runs it under `mixed_float16`, `mixed_bfloat16` and `bfloat16` (except on
PyTorch's CPU, which keras-hub skips), checking every sub-layer's policy.
"""

import numpy as np
from _data_helpers import VOCABULARY_SIZE
from _data_helpers import make_captions
from _data_helpers import train_tiny_tokenizer
from conftest import TINY_BACKBONE
from conftest import TINY_DECODER
from conftest import to_numpy
from keras_hub.src.tests.test_case import TestCase

import keras_aimv2
from keras_aimv2.layers import MultimodalCausalDecoder
from keras_aimv2.layers import PrefixViTEncoder
from keras_aimv2.layers import SelfAttention
from keras_aimv2.layers import TransformerBlock
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer

BATCH, LENGTH, WIDTH, HEADS, HIDDEN = 2, 6, 16, 2, 32


def _tokens(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, LENGTH, WIDTH)).astype("float32")


def _prefix_mask():
    # Prefix attention for prefixes 2 and 4: the encoder's mask.
    positions = np.arange(LENGTH)
    prefixes = np.array([2, 4])[:, None, None, None]
    causal = positions[None, :] <= positions[:, None]
    return causal[None, None] | (positions[None, None, None, :] < prefixes)


class SelfAttentionTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=SelfAttention,
            init_kwargs={"num_heads": HEADS},
            input_data=_tokens(),
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            expected_num_trainable_weights=2,
        )

    def test_with_a_prefix_mask(self):
        self.run_layer_test(
            cls=SelfAttention,
            init_kwargs={"num_heads": HEADS},
            input_data={"x": _tokens(), "attention_mask": _prefix_mask()},
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            expected_num_trainable_weights=2,
        )

    def test_matches_attention_written_out(self):
        layer = SelfAttention(num_heads=HEADS)
        x, mask = _tokens(), _prefix_mask()
        output = to_numpy(layer(x, attention_mask=mask))
        qkv = x.reshape(-1, WIDTH) @ to_numpy(layer.qkv.kernel)
        q, k, v = np.split(qkv.reshape(BATCH, LENGTH, 3 * WIDTH), 3, axis=-1)

        def heads(t):
            return t.reshape(BATCH, LENGTH, HEADS, -1).transpose(0, 2, 1, 3)

        scores = heads(q) @ heads(k).transpose(0, 1, 3, 2)
        scores = np.where(mask, scores / np.sqrt(WIDTH // HEADS), -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = (probs @ heads(v)).transpose(0, 2, 1, 3)
        expected = attended.reshape(-1, WIDTH) @ to_numpy(
            layer.output_projection.kernel
        )
        np.testing.assert_allclose(
            output, expected.reshape(BATCH, LENGTH, WIDTH), atol=1e-5
        )
        causal = to_numpy(layer(x, is_causal=True))
        lower = np.tril(np.ones((LENGTH, LENGTH), bool))
        masked = to_numpy(layer(x, attention_mask=lower[None, None]))
        np.testing.assert_allclose(causal, masked, atol=1e-6)


class TransformerBlockTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=TransformerBlock,
            init_kwargs={"num_heads": HEADS, "intermediate_dim": HIDDEN},
            input_data={"x": _tokens(), "attention_mask": _prefix_mask()},
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            # Two norms, the qkv and output projections, the fused
            # gate-and-up projection and the down projection.
            expected_num_trainable_weights=6,
        )


class PrefixViTEncoderTest(TestCase):
    init_kwargs = {"num_layers": 2, "num_heads": HEADS, "intermediate_dim": 32}

    def test_layer_basics(self):
        self.run_layer_test(
            cls=PrefixViTEncoder,
            init_kwargs=self.init_kwargs,
            input_data={
                "tokens": _tokens(),
                "prefix_lengths": np.array([2, 5], "int32"),
            },
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            expected_num_trainable_weights=2 * 6 + 1,
        )

    def test_without_prefix_lengths(self):
        self.run_layer_test(
            cls=PrefixViTEncoder,
            init_kwargs=self.init_kwargs,
            input_data=_tokens(),
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            expected_num_trainable_weights=2 * 6 + 1,
        )


class MultimodalCausalDecoderTest(TestCase):
    def test_layer_basics(self):
        rng = np.random.default_rng(0)
        self.run_layer_test(
            cls=MultimodalCausalDecoder,
            init_kwargs={
                "hidden_dim": 24,
                "num_layers": 2,
                "num_heads": HEADS,
                "intermediate_dim": 32,
                "vocabulary_size": 50,
                "context_length": 8,
            },
            input_data={
                "image_features": _tokens(),
                "token_ids": rng.integers(0, 50, (BATCH, 7)).astype("int32"),
            },
            expected_output_shape=((BATCH, LENGTH, 24), (BATCH, 8, 24)),
            # Image projection kernel and bias, token embedding, BOS token,
            # position embedding, two blocks of 6 and the final norm.
            expected_num_trainable_weights=5 + 2 * 6 + 1,
        )


class AIMV2PretrainerTest(TestCase):
    def setUp(self):
        proto = train_tiny_tokenizer(self.get_temp_dir())
        height, width, _ = TINY_BACKBONE["image_shape"]
        self.preprocessor = AIMV2PretrainerPreprocessor(
            tokenizer=AIMV2Tokenizer(proto=proto),
            image_converter=AIMV2ImageConverter(image_size=(height, width)),
            sequence_length=TINY_DECODER["context_length"],
            patch_size=TINY_BACKBONE["patch_size"],
        )
        self.backbone = keras_aimv2.AIMV2Backbone(**TINY_BACKBONE)
        self.init_kwargs = {
            **TINY_DECODER,
            "vocabulary_size": VOCABULARY_SIZE,
            "backbone": self.backbone,
            "preprocessor": self.preprocessor,
        }
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (2, height, width, 3)).astype("float32")
        x = {"images": images, "captions": np.array(make_captions(2))}
        # The targets come from `x`: a placeholder `y` per example.
        self.train_data = (x, np.zeros((2,), "float32"))

    def test_task_basics(self):
        self.run_task_test(
            cls=keras_aimv2.AIMV2Pretrainer,
            init_kwargs=self.init_kwargs,
            train_data=self.train_data,
            expected_output_shape={
                "pixel_predictions": (2, 15, 192),
                "text_logits": (2, 8, VOCABULARY_SIZE),
            },
        )

    def test_saved_model(self):
        x, _ = self.train_data
        inputs = self.preprocessor(x)
        self.run_model_saving_test(
            cls=keras_aimv2.AIMV2Pretrainer,
            init_kwargs={**self.init_kwargs, "preprocessor": None},
            input_data=inputs,
        )
