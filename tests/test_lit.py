"""The AIMv2 LiT model: text tower, backbone, loss, preprocessor, tasks.

The text encoder and the backbone go through keras-hub's harness (config
and serialization round trips, eager, compiled and `tf.data` calls, dtype
policies, quantization, `.keras` saving); the other tests check what the
model means: causality, pooling at the end token, the contrastive loss
against a NumPy reference, locked-image tuning and zero-shot
classification. Tiny configurations only.
"""

import keras
import numpy as np
from conftest import HARNESS_BACKBONE
from keras import ops
from keras_hub.src.tests.test_case import TestCase

from keras_aimv2 import AIMV2Backbone
from keras_aimv2 import AIMV2LiTBackbone
from keras_aimv2.layers import CausalTextEncoder

END = 1
TEXT_KWARGS = {
    "vocabulary_size": 20,
    "sequence_length": 6,
    "hidden_dim": 16,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_dim": 32,
    "end_token_id": END,
}
LIT_KWARGS = {
    "text_vocabulary_size": 20,
    "text_sequence_length": 6,
    "text_hidden_dim": 16,
    "text_num_layers": 1,
    "text_num_heads": 2,
    "text_intermediate_dim": 32,
    "end_token_id": END,
    "projection_dim": 8,
}
# Captions ending with the end token, right-padded with 0.
TOKEN_IDS = np.array([[5, 6, 7, END, 0, 0], [8, END, 0, 0, 0, 0]], "int32")


def random_images(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch_size, 32, 32, 3)).astype("float32")


def lit_backbone(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    vision_encoder = AIMV2Backbone(**HARNESS_BACKBONE)
    return AIMV2LiTBackbone(vision_encoder, **{**LIT_KWARGS, **overrides})


class CausalTextEncoderTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=CausalTextEncoder,
            init_kwargs=TEXT_KWARGS,
            input_data=ops.convert_to_tensor(TOKEN_IDS),
            expected_output_shape=(2, 16),
            # Token and position embeddings, final norm, and per block two
            # norms, the fused qkv and output kernels, gate-up and down.
            expected_num_trainable_weights=3 + 2 * 6,
        )

    def test_weights(self):
        encoder = CausalTextEncoder(**TEXT_KWARGS, name="text")
        encoder.build((None, 6))
        shapes = {w.path: tuple(w.shape) for w in encoder.weights}
        self.assertEqual(shapes["text/token_embedding/embeddings"], (20, 16))
        self.assertEqual(shapes["text/position_embedding"], (6, 16))
        self.assertEqual(shapes["text/final_norm/scale"], (16,))
        self.assertLen(encoder.blocks, 2)

    def test_causal_and_pooled_at_the_first_end_token(self):
        keras.utils.set_random_seed(0)
        encoder = CausalTextEncoder(**TEXT_KWARGS)
        base = ops.convert_to_numpy(encoder(TOKEN_IDS))
        # After the end token (padding, a second end token): no change.
        after = TOKEN_IDS.copy()
        after[0, 4:] = [9, END]
        after[1, 2:] = [3, 4, 5, 6]
        self.assertAllClose(
            ops.convert_to_numpy(encoder(after)), base, atol=1e-6
        )
        # Before it: the embedding changes, of that row only.
        before = TOKEN_IDS.copy()
        before[0, 1] = 9
        changed = ops.convert_to_numpy(encoder(before))
        self.assertGreater(np.max(np.abs(changed[0] - base[0])), 1e-3)
        self.assertAllClose(changed[1], base[1], atol=1e-6)

    def test_pooled_feature_is_the_end_positions_output(self):
        keras.utils.set_random_seed(0)
        encoder = CausalTextEncoder(**TEXT_KWARGS)
        encoder.build((None, 6))
        # The normed output at every position, computed step by step.
        x = encoder.token_embedding(TOKEN_IDS)
        x = x + encoder.position_embedding[None]
        for block in encoder.blocks:
            x = block(x, is_causal=True)
        outputs = ops.convert_to_numpy(encoder.final_norm(x))
        pooled = ops.convert_to_numpy(encoder(TOKEN_IDS))
        self.assertAllClose(pooled[0], outputs[0, 3], atol=1e-6)
        self.assertAllClose(pooled[1], outputs[1, 1], atol=1e-6)
        # Without an end token, position 0: under the causal mask, the
        # output of the first token alone.
        no_end = np.array([[5, 6, 7, 8]], "int32")
        self.assertAllClose(encoder(no_end), encoder(no_end[:, :1]), atol=1e-6)

    def test_shorter_sequences_and_errors(self):
        encoder = CausalTextEncoder(**TEXT_KWARGS)
        self.assertEqual(tuple(encoder(TOKEN_IDS[:, :3]).shape), (2, 16))
        with self.assertRaisesRegex(ValueError, "at most sequence_length=6"):
            encoder(np.ones((2, 7), "int32"))
        with self.assertRaisesRegex(ValueError, "vocabulary of 20"):
            encoder(np.array([[3, 20, END]], "int32"))


class AIMV2LiTBackboneTest(TestCase):
    def setUp(self):
        super().setUp()
        self.input_data = {
            "images": ops.convert_to_tensor(random_images(2)),
            "token_ids": ops.convert_to_tensor(TOKEN_IDS),
        }
        keras.utils.set_random_seed(0)
        self.init_kwargs = {
            "vision_encoder": AIMV2Backbone(**HARNESS_BACKBONE),
            **LIT_KWARGS,
        }

    def test_backbone_basics(self):
        self.run_backbone_test(
            cls=AIMV2LiTBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
            expected_output_shape={
                "vision_logits": (2, 2),
                "text_logits": (2, 2),
            },
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=AIMV2LiTBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
        )

    def test_logits_are_scaled_cosine_similarities(self):
        backbone = lit_backbone()
        images = random_images(3)
        outputs = backbone({"images": images, "token_ids": TOKEN_IDS})
        image_embeddings = ops.convert_to_numpy(backbone.encode_images(images))
        text_embeddings = ops.convert_to_numpy(backbone.encode_text(TOKEN_IDS))
        self.assertAllClose(
            np.linalg.norm(image_embeddings, axis=-1), np.ones(3), atol=1e-5
        )
        self.assertAllClose(
            np.linalg.norm(text_embeddings, axis=-1), np.ones(2), atol=1e-5
        )
        expected = image_embeddings @ text_embeddings.T / 0.07
        self.assertAllClose(
            outputs["vision_logits"], expected, atol=1e-4, rtol=1e-4
        )
        self.assertAllClose(
            outputs["text_logits"], expected.T, atol=1e-4, rtol=1e-4
        )

    def test_logit_scale_is_clamped(self):
        backbone = lit_backbone(max_logit_scale=50.0)
        self.assertAllClose(backbone.logit_scale(), 1 / 0.07, rtol=1e-5)
        backbone.log_logit_scale.assign(10.0)
        self.assertAllClose(backbone.logit_scale(), 50.0, rtol=1e-5)
        backbone.log_logit_scale.assign(-3.0)
        self.assertAllClose(backbone.logit_scale(), 1.0, rtol=1e-5)

    def test_layers_and_config(self):
        backbone = lit_backbone(pool_num_heads=4)
        self.assertEqual(backbone.vision_pool.num_heads, 4)
        self.assertEqual(
            tuple(backbone.vision_projection.kernel.shape), (16, 8)
        )
        self.assertFalse(backbone.vision_projection.use_bias)
        self.assertFalse(backbone.text_projection.use_bias)
        self.assertEqual(backbone.text_encoder.end_token_id, END)
        self.assertEqual(tuple(backbone.log_logit_scale.shape), ())
        config = backbone.get_config()
        self.assertEqual(config["pool_num_heads"], 4)
        self.assertEqual(
            config["vision_encoder"]["config"]["hidden_dim"],
            HARNESS_BACKBONE["hidden_dim"],
        )
        with self.assertRaisesRegex(ValueError, "pool_num_heads"):
            lit_backbone(pool_num_heads=3)
