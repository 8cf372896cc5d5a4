"""The public layers through keras-hub's layer harness.

`TestCase.run_layer_test` checks each layer's config and serialization
round trips, its build from a shape, a symbolic and an eager call (output
shape and dtype), a compiled training step and, where the backend supports
it on this host, the `mixed_float16`, `mixed_bfloat16` and `bfloat16`
policies on the layer and every sublayer. Each class here also pins the
path and shape of every weight. One class per layer.
"""

import keras
import numpy as np
from absl.testing import parameterized
from keras import ops
from keras_hub.src.tests.test_case import TestCase

from keras_aimv2.layers import AttentionPool
from keras_aimv2.layers import PatchEmbedding
from keras_aimv2.layers import PixelHead
from keras_aimv2.layers import RMSNorm
from keras_aimv2.layers import SwiGLUFeedForward
from keras_aimv2.layers import TextHead

BATCH, LENGTH, WIDTH = 2, 4, 8


def random_tensor(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))


def weight_shapes(layer, input_shape):
    """`{path: shape}` of every weight of `layer` built on `input_shape`."""
    layer.build(input_shape)
    return {w.path: tuple(w.shape) for w in layer.weights}


class RMSNormTest(TestCase):
    def test_layer_basics(self):
        x = random_tensor((BATCH, LENGTH, WIDTH))
        values = ops.convert_to_numpy(x)
        expected = values / np.sqrt(
            np.mean(values**2, axis=-1, keepdims=True) + 1e-5
        )
        self.run_layer_test(
            cls=RMSNorm,
            init_kwargs={"epsilon": 1e-5},
            input_data=x,
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            expected_output_data=expected,
            expected_num_trainable_weights=1,
        )

    def test_weights(self):
        shapes = weight_shapes(RMSNorm(name="norm"), (None, WIDTH))
        self.assertEqual(shapes, {"norm/scale": (WIDTH,)})


class SwiGLUFeedForwardTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=SwiGLUFeedForward,
            init_kwargs={"intermediate_dim": 12},
            input_data=random_tensor((BATCH, LENGTH, WIDTH)),
            expected_output_shape=(BATCH, LENGTH, WIDTH),
            expected_num_trainable_weights=2,
        )

    def test_weights(self):
        layer = SwiGLUFeedForward(intermediate_dim=12, name="ffn")
        # Gate and up are fused, laid out `[gate | up]`.
        self.assertEqual(
            weight_shapes(layer, (None, LENGTH, WIDTH)),
            {"ffn/gate_up/kernel": (WIDTH, 24), "ffn/down/kernel": (12, WIDTH)},
        )


class PixelHeadTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=PixelHead,
            init_kwargs={"patch_dim": 12, "decoder_num_layers": 2},
            input_data=random_tensor((BATCH, LENGTH, WIDTH)),
            expected_output_shape=(BATCH, LENGTH, 12),
            expected_num_trainable_weights=1,
        )

    def test_weights(self):
        layer = PixelHead(patch_dim=12, name="pixel_head")
        self.assertEqual(
            weight_shapes(layer, (None, LENGTH, WIDTH)),
            {"pixel_head/dense/kernel": (WIDTH, 12)},
        )


class TextHeadTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            cls=TextHead,
            init_kwargs={"vocabulary_size": 10, "decoder_num_layers": 2},
            input_data=random_tensor((BATCH, LENGTH, WIDTH)),
            expected_output_shape=(BATCH, LENGTH, 10),
            expected_num_trainable_weights=1,
        )

    def test_weights(self):
        layer = TextHead(vocabulary_size=10, name="text_head")
        self.assertEqual(
            weight_shapes(layer, (None, LENGTH, WIDTH)),
            {"text_head/dense/kernel": (WIDTH, 10)},
        )


class AttentionPoolTest(TestCase):
    def test_layer_basics(self):
        # Two queries and biased projections; `test_weights` pins the
        # default probe (one query, no bias).
        self.run_layer_test(
            cls=AttentionPool,
            init_kwargs={
                "num_heads": 2,
                "output_dim": 5,
                "num_queries": 2,
                "use_bias": True,
            },
            input_data=random_tensor((BATCH, LENGTH, WIDTH)),
            expected_output_shape=(BATCH, 5),
            expected_num_trainable_weights=7,
        )

    def test_weights(self):
        layer = AttentionPool(
            num_heads=2, output_dim=5, num_queries=3, name="attention_pool"
        )
        self.assertEqual(
            weight_shapes(layer, (None, LENGTH, WIDTH)),
            {
                "attention_pool/query": (3, WIDTH),
                "attention_pool/key/kernel": (WIDTH, WIDTH),
                "attention_pool/value/kernel": (WIDTH, WIDTH),
                "attention_pool/output_projection/kernel": (WIDTH, 5),
                "attention_pool/output_projection/bias": (5,),
            },
        )


class PatchEmbeddingTest(TestCase):
    @parameterized.named_parameters(
        ("learned", "learned", "channels_last", 4),
        ("sincos", "sincos", "channels_last", 3),
        ("learned_channels_first", "learned", "channels_first", 4),
        ("sincos_channels_first", "sincos", "channels_first", 3),
    )
    def test_layer_basics(self, position_embedding, data_format, num_weights):
        shape = (BATCH, 8, 12, 3)
        if data_format == "channels_first":
            shape = (BATCH, 3, 8, 12)
        self.run_layer_test(
            cls=PatchEmbedding,
            init_kwargs={
                "hidden_dim": WIDTH,
                "patch_size": 4,
                "position_embedding": position_embedding,
                "data_format": data_format,
            },
            input_data=random_tensor(shape),
            expected_output_shape=(BATCH, 6, WIDTH),
            expected_num_trainable_weights=num_weights,
        )

    def test_weights(self):
        learned = PatchEmbedding(
            hidden_dim=WIDTH, patch_size=4, name="patch_embedding"
        )
        shapes = weight_shapes(learned, (None, 8, 12, 3))
        self.assertEqual(
            shapes,
            {
                "patch_embedding/projection/kernel": (48, WIDTH),
                "patch_embedding/projection/bias": (WIDTH,),
                "patch_embedding/norm/scale": (WIDTH,),
                "patch_embedding/position_embedding": (6, WIDTH),
            },
        )
        # Channels-first images give the same weights, of the same shapes.
        channels_first = PatchEmbedding(
            hidden_dim=WIDTH,
            patch_size=4,
            data_format="channels_first",
            name="patch_embedding",
        )
        self.assertEqual(
            weight_shapes(channels_first, (None, 3, 8, 12)), shapes
        )

    def test_channels_first_images_give_the_same_tokens(self):
        images = ops.convert_to_numpy(random_tensor((BATCH, 8, 12, 3)))
        for position_embedding in ("learned", "sincos"):
            kwargs = {
                "hidden_dim": WIDTH,
                "patch_size": 4,
                "position_embedding": position_embedding,
            }
            last = PatchEmbedding(**kwargs, data_format="channels_last")
            first = PatchEmbedding(**kwargs, data_format="channels_first")
            expected = last(images)
            first.build((None, 3, 8, 12))
            first.set_weights(last.get_weights())
            actual = first(np.transpose(images, (0, 3, 1, 2)))
            self.assertAllClose(actual, expected, atol=1e-6)
            self.assertEqual(
                first.get_config()["data_format"], "channels_first"
            )

    def test_mixed_precision_outside_its_own_call(self):
        # Run through `call` (as a parent's `call` may under `keras.remat`),
        # the layer is outside Keras's autocast scope: it casts its float32
        # position embedding itself (TensorFlow refused a float16 + float32
        # add).
        layer = PatchEmbedding(
            hidden_dim=WIDTH, patch_size=4, dtype="mixed_float16"
        )
        images = random_tensor((BATCH, 8, 12, 3))
        layer.build(images.shape)
        self.assertDTypeEqual(layer.call(images), "float16")
        self.assertDTypeEqual(layer.position_embedding, "float32")

    def test_data_format_errors_name_the_argument(self):
        with self.assertRaisesRegex(ValueError, "data_format='nchw'"):
            PatchEmbedding(hidden_dim=WIDTH, patch_size=4, data_format="nchw")
        layer = PatchEmbedding(
            hidden_dim=WIDTH, patch_size=4, data_format="channels_first"
        )
        # Channels-last images given to a channels-first layer.
        with self.assertRaisesRegex(
            ValueError,
            r"multiple of patch_size=4.*\(batch, channels, height, width\)"
            ".*data_format='channels_first'.*width=3",
        ):
            layer.build((None, 8, 12, 3))
        with self.assertRaisesRegex(
            ValueError,
            r"\(batch, channels, height, width\).*"
            r"images.shape=\(None, 3, 8\)",
        ):
            layer.build((None, 3, 8))

    def test_default_data_format_follows_keras_config(self):
        original = keras.config.image_data_format()
        try:
            keras.config.set_image_data_format("channels_first")
            layer = PatchEmbedding(hidden_dim=WIDTH, patch_size=4)
            self.assertEqual(layer.data_format, "channels_first")
        finally:
            keras.config.set_image_data_format(original)
        self.assertEqual(
            PatchEmbedding(hidden_dim=WIDTH, patch_size=4).data_format,
            original,
        )
