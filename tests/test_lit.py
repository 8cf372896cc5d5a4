"""The AIMv2 LiT model: text tower, backbone, loss, preprocessor, tasks.

The text encoder and the backbone go through keras-hub's harness (config
and serialization round trips, eager, compiled and `tf.data` calls, dtype
policies, quantization, `.keras` saving); the other tests check what the
model means: causality, pooling at the end token, the contrastive loss
against a NumPy reference, locked-image tuning and zero-shot
classification. Tiny configurations only.
"""

import functools
import os
import tempfile

import keras
import numpy as np
from _data_helpers import VOCABULARY_SIZE
from _data_helpers import train_tiny_tokenizer
from conftest import HARNESS_BACKBONE
from keras import ops
from keras_hub.src.tests.test_case import TestCase
from keras_hub.tokenizers import CLIPTokenizer

from keras_aimv2 import AIMV2Backbone
from keras_aimv2 import AIMV2ImageConverter
from keras_aimv2 import AIMV2LiT
from keras_aimv2 import AIMV2LiTBackbone
from keras_aimv2 import AIMV2LiTPreprocessor
from keras_aimv2 import AIMV2Tokenizer
from keras_aimv2 import AIMV2ZeroShotClassifier
from keras_aimv2.contrastive import contrastive_loss
from keras_aimv2.contrastive import image_to_text_correct
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


def reference_contrastive_loss(logits, weights=None):
    """CLIP's loss written out in NumPy, from the definition."""
    logits = np.asarray(logits, "float64")
    n = len(logits)
    weights = np.ones(n) if weights is None else np.asarray(weights, "float64")
    keep = weights > 0
    total = 0.0
    for i in np.flatnonzero(keep):
        row = logits[i, keep]  # image i against the kept captions
        column = logits[keep, i]  # caption i against the kept images
        target = np.flatnonzero(keep).tolist().index(i)
        image_term = -(row[target] - np.log(np.sum(np.exp(row))))
        text_term = -(column[target] - np.log(np.sum(np.exp(column))))
        total += weights[i] * (image_term + text_term) / 2
    return total / np.sum(weights)


class ContrastiveLossTest(TestCase):
    def test_matches_a_numpy_reference(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(5, 5)).astype("float32") * 3
        self.assertAllClose(
            contrastive_loss(logits),
            reference_contrastive_loss(logits),
            atol=1e-5,
        )
        weights = np.array([1.0, 0.5, 0.0, 2.0, 1.0], "float32")
        self.assertAllClose(
            contrastive_loss(logits, weights),
            reference_contrastive_loss(logits, weights),
            atol=1e-5,
        )
        # Weight 0 is the same as leaving the pair out.
        kept = [0, 1, 3, 4]
        self.assertAllClose(
            contrastive_loss(logits, weights),
            contrastive_loss(logits[kept][:, kept], weights[kept]),
            atol=1e-5,
        )

    def test_symmetric_and_minimal_on_the_diagonal(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(4, 4)).astype("float32")
        # Both directions count: asymmetric logits change the loss.
        self.assertAllClose(
            contrastive_loss(logits), contrastive_loss(logits.T), atol=1e-6
        )
        self.assertLess(float(contrastive_loss(np.eye(4) * 50)), 1e-6)
        self.assertAllClose(
            contrastive_loss(np.zeros((4, 4))), np.log(4.0), atol=1e-6
        )

    def test_image_to_text_accuracy(self):
        logits = np.array([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 5.0, 1.0]])
        self.assertAllClose(image_to_text_correct(logits), [1.0, 0.0, 0.0])
        # Without the first caption, image 1 ranks its own first.
        self.assertAllClose(
            image_to_text_correct(logits, np.array([0.0, 1.0, 1.0])),
            [1.0, 1.0, 0.0],
        )


@functools.cache
def tiny_proto():
    """The test SentencePiece model (pad 0, end 1), trained once."""
    return train_tiny_tokenizer(tempfile.mkdtemp())


def tiny_clip_tokenizer():
    pieces = "a i p l n e</w> o r t</w> ai pl ne</w> po rt</w> air pla"
    vocabulary = [*pieces.split(), "port</w>", "plane</w>"]
    vocabulary += ["<|endoftext|>", "<|startoftext|>"]
    vocabulary = {token: i + 1 for i, token in enumerate(vocabulary)}
    merges = ["a i", "p l", "n e</w>", "p o", "r t</w>", "ai r", "pl a"]
    merges += ["po rt</w>", "pla ne</w>"]
    return CLIPTokenizer(vocabulary=vocabulary, merges=merges)


def lit_preprocessor(sequence_length=6):
    return AIMV2LiTPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=tiny_proto()),
        image_converter=AIMV2ImageConverter(image_size=(32, 32)),
        sequence_length=sequence_length,
    )


def tiny_lit_backbone(seed=0):
    """A LiT backbone for the test tokenizer's vocabulary."""
    return lit_backbone(seed, text_vocabulary_size=VOCABULARY_SIZE)


class AIMV2LiTPreprocessorTest(TestCase):
    def test_preprocessor_basics(self):
        # The harness builds its second instance from `self.init_kwargs`.
        self.init_kwargs = {
            "tokenizer": AIMV2Tokenizer(proto=tiny_proto()),
            "image_converter": AIMV2ImageConverter(image_size=(32, 32)),
            "sequence_length": 6,
        }
        self.run_preprocessor_test(
            cls=AIMV2LiTPreprocessor,
            init_kwargs=self.init_kwargs,
            input_data={
                "images": np.full((2, 40, 40, 3), 128.0, "float32"),
                "captions": ["A dog", "Sky"],
            },
        )

    def test_packs_like_the_pretraining_preprocessor(self):
        preprocessor = lit_preprocessor(sequence_length=12)
        tokenizer = preprocessor.tokenizer
        self.assertFalse(preprocessor.add_start_token)
        x = preprocessor(
            {
                "images": np.zeros((2, 40, 40, 3)),
                "captions": ["Abc def", "ghi " * 20],
            }
        )
        self.assertEqual(tuple(x["images"].shape), (2, 32, 32, 3))
        token_ids = np.asarray(x["token_ids"])
        self.assertEqual(token_ids.shape, (2, 12))
        ids = np.asarray(tokenizer("abc def")).tolist()
        self.assertEqual(
            token_ids[0].tolist(),
            ids
            + [tokenizer.end_token_id]
            + [tokenizer.pad_token_id] * (11 - len(ids)),
        )
        # A long caption is cut and still ends with the end token.
        self.assertEqual(token_ids[1, -1], tokenizer.end_token_id)
        self.assertNotIn(tokenizer.pad_token_id, token_ids[1].tolist())

    def test_one_key_and_errors(self):
        preprocessor = lit_preprocessor()
        self.assertEqual(set(preprocessor({"captions": ["a"]})), {"token_ids"})
        self.assertEqual(
            set(preprocessor({"images": np.zeros((1, 32, 32, 3))})),
            {"images"},
        )
        with self.assertRaisesRegex(ValueError, "Received: \\['texts'\\]"):
            preprocessor({"texts": ["a"]})
        with self.assertRaisesRegex(ValueError, "`tokenizer` must be"):
            AIMV2LiTPreprocessor(tokenizer=None)

    def test_clip_tokenizer_gets_a_start_token_and_lowercase(self):
        tokenizer = tiny_clip_tokenizer()
        preprocessor = AIMV2LiTPreprocessor(tokenizer, sequence_length=6)
        self.assertTrue(preprocessor.add_start_token)
        token_ids = np.asarray(
            preprocessor({"captions": ["AIRPLANE airport"]})["token_ids"]
        )
        start, end = tokenizer.start_token_id, tokenizer.end_token_id
        air, plane, port = (
            tokenizer.token_to_id(piece)
            for piece in ("air", "plane</w>", "port</w>")
        )
        self.assertEqual(
            token_ids.tolist(), [[start, air, plane, air, port, end]]
        )
        token_ids = np.asarray(
            preprocessor({"captions": ["airport"]})["token_ids"]
        )
        pad = tokenizer.pad_token_id
        self.assertEqual(
            token_ids.tolist(), [[start, air, port, end, pad, pad]]
        )


def random_batch(batch_size=4, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(3, VOCABULARY_SIZE, size=(batch_size, 6))
    lengths = rng.integers(1, 5, size=batch_size)
    for row, length in enumerate(lengths):
        token_ids[row, length] = END
        token_ids[row, length + 1 :] = 0
    return {
        "images": random_images(batch_size, seed),
        "token_ids": token_ids.astype("int32"),
    }


class AIMV2LiTTest(TestCase):
    def test_fit_lowers_the_loss_and_keeps_the_locked_encoder(self):
        lit = AIMV2LiT(tiny_lit_backbone())
        self.assertTrue(lit.freeze_image_encoder)
        encoder = lit.backbone.vision_encoder
        self.assertFalse(encoder.trainable)
        self.assertTrue(lit.backbone.vision_pool.trainable)
        locked = [ops.convert_to_numpy(w) for w in encoder.weights]
        pool = ops.convert_to_numpy(lit.backbone.vision_pool.query)
        scale = float(ops.convert_to_numpy(lit.backbone.log_logit_scale))
        batch = random_batch()
        before = lit.evaluate(batch, batch_size=4, verbose=0, return_dict=True)
        history = lit.fit(batch, batch_size=4, epochs=8, verbose=0)
        self.assertEqual(sorted(history.history), ["accuracy", "loss"])
        after = lit.evaluate(batch, batch_size=4, verbose=0, return_dict=True)
        self.assertLess(after["loss"], before["loss"] - 0.05)
        for old, weight in zip(locked, encoder.weights, strict=True):
            self.assertAllEqual(old, ops.convert_to_numpy(weight))
        # The pool, and the temperature, learn.
        self.assertGreater(
            np.max(
                np.abs(
                    ops.convert_to_numpy(lit.backbone.vision_pool.query) - pool
                )
            ),
            0.0,
        )
        self.assertNotEqual(
            float(ops.convert_to_numpy(lit.backbone.log_logit_scale)), scale
        )

    def test_unfrozen_encoder_and_sample_weights(self):
        lit = AIMV2LiT(tiny_lit_backbone(), freeze_image_encoder=False)
        self.assertTrue(lit.backbone.vision_encoder.trainable)
        batch = random_batch()
        outputs = lit.predict(batch, verbose=0)
        weights = np.array([1.0, 1.0, 0.0, 1.0], "float32")
        loss = lit.compute_loss(
            x=batch, y_pred=outputs, sample_weight=weights, training=False
        )
        self.assertAllClose(
            loss,
            reference_contrastive_loss(outputs["vision_logits"], weights),
            atol=1e-4,
        )

    def test_config_and_preset_round_trip(self):
        lit = AIMV2LiT(tiny_lit_backbone(), preprocessor=lit_preprocessor())
        config = lit.get_config()
        self.assertTrue(config["freeze_image_encoder"])
        restored = AIMV2LiT.from_config(config)
        self.assertTrue(restored.freeze_image_encoder)
        self.assertEqual(
            restored.backbone.count_params(), lit.backbone.count_params()
        )
        directory = os.path.join(self.get_temp_dir(), "lit")
        lit.save_to_preset(directory)
        loaded = AIMV2LiT.from_preset(directory)
        self.assertIsInstance(loaded.preprocessor, AIMV2LiTPreprocessor)
        self.assertTrue(loaded.freeze_image_encoder)
        x = lit.preprocessor(
            {"images": np.zeros((2, 32, 32, 3)), "captions": ["abc", "def"]}
        )
        x = {key: np.asarray(value) for key, value in x.items()}
        self.assertAllClose(
            loaded.backbone(x)["vision_logits"],
            lit.backbone(x)["vision_logits"],
            atol=1e-5,
        )


def zero_shot(class_names=("abc", "def", "ghi"), **kwargs):
    return AIMV2ZeroShotClassifier(
        tiny_lit_backbone(),
        lit_preprocessor(),
        class_names=class_names,
        **kwargs,
    )


class AIMV2ZeroShotClassifierTest(TestCase):
    def test_class_embeddings_are_prompt_ensembles(self):
        templates = ["a photo of a {}.", "{} again"]
        classifier = zero_shot(templates=templates)
        self.assertEqual(classifier.num_classes, 3)
        self.assertFalse(classifier.class_embeddings.trainable)
        self.assertNotIn(
            "class_embeddings",
            [weight.name for weight in classifier.trainable_weights],
        )
        self.assertIn(
            "class_embeddings",
            [weight.name for weight in classifier.non_trainable_weights],
        )
        backbone, preprocessor = classifier.backbone, classifier.preprocessor
        expected = []
        for name in ["abc", "def", "ghi"]:
            prompts = [t.replace("{}", name) for t in templates]
            ids = np.asarray(preprocessor({"captions": prompts})["token_ids"])
            mean = np.mean(
                ops.convert_to_numpy(backbone.encode_text(ids)), axis=0
            )
            expected.append(mean / np.linalg.norm(mean))
        self.assertAllClose(classifier.class_embeddings, expected, atol=1e-5)

    def test_predicts_the_class_an_image_matches(self):
        classifier = zero_shot()
        rng = np.random.default_rng(3)
        raw = rng.uniform(0, 255, size=(3, 40, 40, 3)).astype("float32")
        images = classifier.preprocessor({"images": raw})["images"]
        embeddings = ops.convert_to_numpy(
            classifier.backbone.encode_images(np.asarray(images))
        )
        # Class k's embedding made image (2 - k)'s.
        classifier.class_embeddings.assign(embeddings[::-1])
        scale = float(ops.convert_to_numpy(classifier.backbone.logit_scale()))
        expected = scale * embeddings @ embeddings[::-1].T
        logits = ops.convert_to_numpy(classifier(np.asarray(images)))
        self.assertAllClose(logits, expected, atol=1e-4)
        self.assertEqual(np.argmax(logits, axis=-1).tolist(), [2, 1, 0])
        # Raw images go through the preprocessor's converter, bare or in a
        # dict.
        self.assertAllClose(
            classifier.predict(raw, verbose=0), expected, atol=1e-4
        )
        self.assertAllClose(
            classifier.predict({"images": raw}, verbose=0), expected, atol=1e-4
        )
        accuracy = classifier.evaluate(
            raw, np.array([2, 1, 0]), verbose=0, return_dict=True
        )["accuracy"]
        self.assertAllClose(accuracy, 1.0)

    def test_set_classes_changes_the_classes(self):
        classifier = zero_shot()
        images = random_images(2)
        self.assertEqual(classifier.predict(images, verbose=0).shape, (2, 3))
        classifier.set_classes(["abc", "jkl"], ["{}"])
        self.assertEqual(classifier.class_names, ["abc", "jkl"])
        self.assertEqual(tuple(classifier.class_embeddings.shape), (2, 8))
        self.assertEqual(classifier.predict(images, verbose=0).shape, (2, 2))
        self.assertLen(
            classifier.non_trainable_weights,
            len([w for w in classifier.backbone.weights if not w.trainable])
            + 1,
        )
        self.assertEqual(classifier(images).shape[-1], 2)

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=AIMV2ZeroShotClassifier,
            init_kwargs={
                "backbone": tiny_lit_backbone(),
                "preprocessor": lit_preprocessor(),
                "class_names": ["abc", "def"],
                "templates": ["a {}", "the {}"],
            },
            input_data=random_images(2),
        )

    def test_errors(self):
        for kwargs, message in (
            ({"class_names": []}, "`class_names` must hold at least one"),
            ({"class_names": "abc"}, "must be a list or tuple"),
            ({"class_names": ["abc", ""]}, "non-empty strings"),
            ({"class_names": ["abc", "abc"]}, "must not repeat"),
            ({"templates": ["a photo"]}, "placeholder '\\{\\}'"),
            ({"templates": []}, "`templates` must hold at least one"),
        ):
            with self.assertRaisesRegex(ValueError, message):
                zero_shot(**kwargs)
        with self.assertRaisesRegex(ValueError, "`preprocessor` must be"):
            AIMV2ZeroShotClassifier(
                tiny_lit_backbone(), None, class_names=["abc"]
            )
        classifier = zero_shot()
        with self.assertRaisesRegex(ValueError, "placeholder"):
            classifier.set_classes(["abc"], ["no slot"])
        self.assertEqual(classifier.num_classes, 3)
