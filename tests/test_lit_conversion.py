"""Whole LiT checkpoint conversion: parity with transformers' `Aimv2Model`.

The peer is a tiny transformers `Aimv2Model` (image tower with its
attention-pool head, causal text tower, projections, logit scale) with
random (seeded) weights, perturbed so that every tensor matters. Its
`state_dict` is saved as safetensors with its config.json and a tiny CLIP
BPE tokenizer (`vocab.json`, `merges.txt`), as transformers' checkpoint
directories are, and also renamed into Apple's `AIMv2LiT` layout
(apple/ml-aim), with its image tower in Apple's or timm's names. Each is
converted with `lit=True` into an `AIMV2LiTBackbone` preset, whose image
and text embeddings and logits must be transformers' within 1e-4
(float32).

transformers' text tower is causal only when given an attention mask, and
then only under its eager attention: its SDPA path drops a mask of ones
and its attention modules say `is_causal=False`, so the peer runs eagerly
and gets a mask of ones. The tokens after each caption's end token are
random, so a non-causal peer would not match.
"""

import json
import os
import shutil
import tempfile

import keras
import keras_hub
import numpy as np
import torch
from absl.testing import parameterized
from keras_hub.src.tests.test_case import TestCase
from test_conversion import apple_layout
from test_conversion import hf_model
from test_conversion import lit_layout
from test_conversion import max_difference
from test_conversion import save_state_dict
from test_conversion import timm_layout
from test_conversion import under
from transformers import Aimv2Config
from transformers import Aimv2Model
from transformers import Aimv2TextConfig
from transformers import Aimv2VisionConfig
from transformers import CLIPTokenizer

import keras_aimv2
from keras_aimv2 import conversion
from keras_aimv2.models.aimv2_lit_preprocessor import AIMV2LiTPreprocessor

TOLERANCE = 1e-4
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "use_head": True,
}
VOCABULARY_SIZE = 100
END = VOCABULARY_SIZE - 1  # CLIP's `<|endoftext|>` is its last id.
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": VOCABULARY_SIZE,
    "max_position_embeddings": 16,
    "eos_token_id": END,
}
PROJECTION_DIM = 16
LOG_LOGIT_SCALE = 3.0  # exp(3) ~ 20: inside the clamp, so it matters.
# The words of the tiny BPE vocabulary, merged left to right.
WORDS = (
    "a photo of the cat dog bird on grass red blue car sitting small big "
    "green tree house sky with and in"
).split()


def peer_model(config, seed):
    """transformers' `Aimv2Model` with distinctive random values
    (`test_conversion.hf_model`) and a logit scale inside the clamp."""
    model = hf_model(Aimv2Model, config, seed)
    with torch.no_grad():
        model.logit_scale.fill_(LOG_LOGIT_SCALE)
    return model


def token_ids(seed, length):
    """Captions ending with the end token at various places, then noise.

    Tokens after the end token are random, not padding: the causal text
    tower must ignore them.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, END, size=(3, length))
    for row, end in enumerate((length // 2, length - 1, 2)):
        ids[row, end] = END
    return ids.astype("int32")


def peer_outputs(model, images, ids):
    """transformers' normalized embeddings and logits."""
    ids = torch.from_numpy(ids).long()
    with torch.no_grad():
        outputs = model(
            input_ids=ids,
            pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
            attention_mask=torch.ones_like(ids),
        )
    return {
        name: getattr(outputs, name).numpy()
        for name in (
            "image_embeds",
            "text_embeds",
            "logits_per_image",
            "logits_per_text",
        )
    }


def tiny_bpe(size):
    """A CLIP byte-level BPE vocabulary of `size` tokens and its merges.

    Letters, letters ending a word, the merges spelling `WORDS`, and the
    two special tokens last (`<|endoftext|>` is id `size - 1`).
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocabulary = letters + [c + "</w>" for c in letters]
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if merged not in vocabulary and len(vocabulary) < size - 2:
                merges.append(f"{current} {piece}")
                vocabulary.append(merged)
            current = merged
    vocabulary += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocabulary) == size
    return {token: i for i, token in enumerate(vocabulary)}, merges


def write_tokenizer(directory, vocabulary, merges):
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump(vocabulary, f)
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def apple_lit(sd):
    """transformers' `Aimv2Model` -> Apple's `AIMv2LiT` (apple/ml-aim)."""
    depths = (VISION["num_hidden_layers"], TEXT["num_hidden_layers"])
    return lit_layout(sd, apple_layout, *depths)


def timm_lit(sd):
    """Apple's `AIMv2LiT` with its image tower in timm's names."""
    depths = (VISION["num_hidden_layers"], TEXT["num_hidden_layers"])
    return lit_layout(sd, timm_layout, *depths)


def save_tensors(tensors, directory):
    """Write `tensors` as `directory/model.safetensors`; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "model.safetensors")
    return save_state_dict(tensors, path)


class LiTConversionTest(TestCase):
    """One peer, converted from both layouts; errors on damaged copies."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="lit-conversion-")
        config = Aimv2Config(
            vision_config=Aimv2VisionConfig(**VISION),
            text_config=Aimv2TextConfig(**TEXT),
            projection_dim=PROJECTION_DIM,
            attn_implementation="eager",
        )
        cls.peer = peer_model(config, seed=7)
        cls.state_dict = cls.peer.state_dict()
        rng = np.random.default_rng(3)
        cls.images = rng.normal(size=(2, 32, 32, 3)).astype("float32")
        cls.vocabulary, cls.merges = tiny_bpe(VOCABULARY_SIZE)

        # transformers' checkpoint directory: weights (with the text
        # tower's `position_ids` buffer, which some exports store),
        # config.json and the tokenizer files.
        tensors = dict(cls.state_dict)
        tensors["text_model.embeddings.position_ids"] = torch.arange(
            TEXT["max_position_embeddings"]
        )[None]
        cls.sources = {
            "transformers": os.path.dirname(
                save_tensors(tensors, os.path.join(cls.root, "transformers"))
            ),
            # Apple's release: the weights alone.
            "apple": save_tensors(
                apple_lit(cls.state_dict), os.path.join(cls.root, "apple")
            ),
            "timm": save_tensors(
                timm_lit(cls.state_dict), os.path.join(cls.root, "timm")
            ),
        }
        config.save_pretrained(cls.sources["transformers"])
        write_tokenizer(cls.sources["transformers"], cls.vocabulary, cls.merges)
        cls.presets = {}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def preset(self, layout):
        """The `lit=True` conversion of the peer in `layout`, made once."""
        if layout not in self.presets:
            output = os.path.join(self.root, f"preset-{layout}")
            # Apple's release has no config.json: the 32-wide towers'
            # head counts must be given (the released 1024/768-wide ones'
            # follow from their head width 128).
            heads = {"num_heads": 2, "num_text_heads": 2}
            conversion.convert_checkpoint(
                self.sources[layout],
                output,
                lit=True,
                **({} if layout == "transformers" else heads),
            )
            self.presets[layout] = output
        return self.presets[layout]

    @parameterized.named_parameters(
        ("transformers", "transformers"), ("apple", "apple"), ("timm", "timm")
    )
    def test_embeddings_and_logits_match_transformers(self, layout):
        preset = self.preset(layout)
        model = keras_aimv2.AIMV2LiTBackbone.from_preset(preset)
        self.assertIsInstance(model, keras_aimv2.AIMV2LiTBackbone)
        self.assertEqual(model.end_token_id, END)
        self.assertEqual(model.text_sequence_length, 16)
        for length in (16, 9):
            ids = token_ids(seed=length, length=length)
            expected = peer_outputs(self.peer, self.images, ids)
            outputs = model({"images": self.images, "token_ids": ids})
            differences = {
                "image_embeds": max_difference(
                    model.encode_images(self.images), expected["image_embeds"]
                ),
                "text_embeds": max_difference(
                    model.encode_text(ids), expected["text_embeds"]
                ),
                "logits_per_image": max_difference(
                    outputs["vision_logits"], expected["logits_per_image"]
                ),
                "logits_per_text": max_difference(
                    outputs["text_logits"], expected["logits_per_text"]
                ),
            }
            print(
                f"parity {keras.config.backend()}/lit-{layout}/length "
                f"{length}: {differences}"
            )
            for name, difference in differences.items():
                self.assertLess(difference, TOLERANCE, msg=name)
        self.assertAllClose(
            model.logit_scale(), np.exp(LOG_LOGIT_SCALE), atol=1e-5
        )
        # keras-hub's preset harness: loads, and builds without weights.
        self.run_preset_test(
            cls=keras_aimv2.AIMV2LiTBackbone,
            preset=preset,
            input_data={"images": self.images, "token_ids": token_ids(0, 16)},
            expected_output_shape={
                "vision_logits": (2, 3),
                "text_logits": (3, 2),
            },
        )

    def test_conversion_record(self):
        with open(
            os.path.join(
                self.preset("transformers"), conversion.CONVERSION_FILE
            )
        ) as f:
            record = json.load(f)
        self.assertEqual(record["layout"], "transformers")
        self.assertTrue(record["whole_lit"])
        self.assertEqual(
            record["skipped_keys"], ["text_model.embeddings.position_ids"]
        )
        self.assertEqual(record["config"]["text_num_heads"], 2)
        self.assertEqual(record["config"]["end_token_id"], END)
        self.assertIn("config.json", record["inferred_from"]["text_num_heads"])
        self.assertEqual(len(record["tokenizer_files"]), 2)
        with open(
            os.path.join(self.preset("apple"), conversion.CONVERSION_FILE)
        ) as f:
            record = json.load(f)
        # Without config.json: the end token is the vocabulary's last id.
        self.assertIn("last id", record["inferred_from"]["end_token_id"])
        self.assertEqual(record["tokenizer_files"], [])
        self.assertIsNone(record["preprocessing"]["tokenizer"])

    def test_tokenizer_round_trip(self):
        preset = self.preset("transformers")
        preprocessor = AIMV2LiTPreprocessor.from_preset(preset)
        tokenizer = preprocessor.tokenizer
        self.assertIsInstance(tokenizer, keras_hub.tokenizers.CLIPTokenizer)
        self.assertEqual(tokenizer.end_token_id, END)
        self.assertEqual(preprocessor.sequence_length, 16)
        self.assertEqual(
            list(tokenizer.get_vocabulary()), list(self.vocabulary)
        )
        reference = CLIPTokenizer.from_pretrained(self.sources["transformers"])
        for caption in (
            "a photo of the cat",
            "A  Big GREEN tree, with the sky!",
            "zebra on grass",
        ):
            expected = reference(caption, add_special_tokens=False)
            self.assertAllEqual(tokenizer(caption), expected["input_ids"])
        captions = ["a photo of the cat", "Big green tree", "zebra on grass"]
        # Captions through the preset's preprocessor and model give
        # transformers' text embeddings from its own tokenizer's ids.
        # Both start with `<|startoftext|>` and end with `<|endoftext|>`;
        # the padding after it differs (0 here, the end token there),
        # which the causal text tower never reads.
        ids = keras.ops.convert_to_numpy(
            preprocessor({"captions": captions})["token_ids"]
        )
        expected_ids = reference(captions, padding="max_length", max_length=16)[
            "input_ids"
        ]
        for row, expected in zip(ids, expected_ids, strict=True):
            length = expected.index(END) + 1
            self.assertAllEqual(row[:length], expected[:length])
        model = keras_aimv2.AIMV2LiTBackbone.from_preset(preset)
        with torch.no_grad():
            expected = self.peer.get_text_features(
                input_ids=torch.tensor(expected_ids),
                attention_mask=torch.ones(3, 16, dtype=torch.long),
            ).pooler_output
        expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
        difference = max_difference(model.encode_text(ids), expected)
        print(f"parity {keras.config.backend()}/lit-tokenizer: {difference}")
        self.assertLess(difference, TOLERANCE)
        # The image converter travels with it: CLIP statistics, bicubic.
        converter = preprocessor.image_converter
        self.assertEqual(tuple(converter.image_size), (32, 32))
        self.assertEqual(converter.interpolation, "bicubic")

    def test_without_lit_only_the_image_tower_is_converted(self):
        output = os.path.join(self.root, "image-tower")
        messages = []
        conversion.convert_checkpoint(
            self.sources["transformers"], output, log=messages.append
        )
        backbone = keras_hub.models.Backbone.from_preset(output)
        self.assertIsInstance(backbone, keras_aimv2.AIMV2Backbone)
        self.assertIsNotNone(conversion.load_attention_pool(output))
        (message,) = [m for m in messages if m.startswith("Skipping")]
        self.assertIn("--lit", message)
        shutil.rmtree(output)

    def test_command_line(self):
        output = os.path.join(self.root, "command-line")
        args = [self.sources["apple"], output, "--lit", "--num-heads", "2"]
        self.assertEqual(conversion.main(args + ["--num-text-heads", "2"]), 0)
        model = keras_aimv2.AIMV2LiTBackbone.from_preset(output)
        self.assertEqual(model.text_num_heads, 2)
        shutil.rmtree(output)
        # The 32-wide text tower's head count cannot be inferred.
        self.assertEqual(conversion.main(args), 1)
        self.assertFalse(os.path.exists(output))
        with self.assertRaises(SystemExit):
            conversion.main(
                [self.sources["apple"], output, "--num-text-heads", "2"]
            )

    def assert_refused(self, tensors, *fragments, name="damaged"):
        """Converting `tensors` fails, naming `fragments`; nothing written."""
        directory = os.path.join(self.root, name)
        save_tensors(tensors, directory)
        output = os.path.join(self.root, name + "-preset")
        with self.assertRaises(conversion.CheckpointError) as raised:
            conversion.convert_checkpoint(
                directory, output, lit=True, num_heads=2, num_text_heads=2
            )
        for fragment in fragments:
            self.assertIn(fragment, str(raised.exception))
        self.assertFalse(os.path.exists(output))
        shutil.rmtree(directory)

    def test_missing_text_tensor_is_refused(self):
        tensors = dict(self.state_dict)
        del tensors["text_model.rms_norm.weight"]
        self.assert_refused(
            tensors,
            "missing key 'text_model.rms_norm.weight'",
            "expected shape (32,)",
            "text_encoder.final_norm.scale",
        )
        tensors = apple_lit(self.state_dict)
        del tensors["log_logit_scale"]
        self.assert_refused(
            tensors, "missing key 'log_logit_scale'", name="no-scale"
        )

    def test_truncated_text_tensor_is_refused(self):
        tensors = dict(self.state_dict)
        key = "text_model.encoder.layers.1.ffn.up_proj.weight"
        tensors[key] = tensors[key][:-1]
        self.assert_refused(
            tensors,
            f"key {key!r} has shape (63, 32); expected (64, 32)",
            "text_encoder.block_1.feed_forward.gate_up.kernel",
        )
        tensors = apple_lit(self.state_dict)
        key = "text_encoder.preprocessor.positional_embedding"
        tensors[key] = tensors[key][None]
        self.assert_refused(tensors, repr(key), "(1, 16, 32)", name="pos")

    def test_image_tower_alone_is_refused_with_lit(self):
        tensors = under("vision_model.", self.state_dict)
        self.assert_refused(tensors, "`lit=True`", "image tower only")

    def test_tokenizer_must_match_the_text_tower(self):
        directory = os.path.join(self.root, "bad-tokenizer")
        shutil.copytree(self.sources["transformers"], directory)
        output = directory + "-preset"
        vocabulary = dict(self.vocabulary)
        vocabulary["<|endoftext|>"], vocabulary["a"] = 0, END
        write_tokenizer(directory, vocabulary, self.merges)
        with self.assertRaisesRegex(
            conversion.CheckpointError, "end_token_id=99"
        ):
            conversion.convert_checkpoint(directory, output, lit=True)
        os.remove(os.path.join(directory, "merges.txt"))
        with self.assertRaisesRegex(conversion.CheckpointError, "merges.txt"):
            conversion.convert_checkpoint(directory, output, lit=True)
        self.assertFalse(os.path.exists(output))
        shutil.rmtree(directory)
