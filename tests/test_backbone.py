"""`AIMV2Backbone` through keras-hub's backbone harness, and its data format.

`TestCase.run_vision_backbone_test` checks the config and serialization
round trips, eager and compiled calls (also from a `tf.data` pipeline),
the model's name, the `mixed_float16`, `mixed_bfloat16` and `bfloat16`
policies on every sublayer, int8 and float8 quantization, and then all of
it again with channels-first images under
`keras.config.set_image_data_format("channels_first")` (except with
TensorFlow on a CPU, which the harness skips; the tests below compare the
two layouts on every backend).
"""

import keras
import numpy as np
from absl.testing import parameterized
from conftest import HARNESS_BACKBONE
from keras import ops
from keras_hub.src.tests.test_case import TestCase

from keras_aimv2 import AIMV2Backbone

# The harness transposes the expected shape of a 3D output for its
# channels-first pass as if it were `(batch, height, width)`; AIMv2's
# features are `(batch, num_patches, hidden_dim)` in both formats. With as
# many patches as channels (32 x 32 pixels in 8 x 8 patches: 16 of width
# 16) that transposition is the identity, and the channels-first pass
# checks the real shape.
INIT_KWARGS = HARNESS_BACKBONE
SINCOS_KWARGS = {
    **INIT_KWARGS,
    "image_shape": (None, None, 3),
    "position_embedding": "sincos",
}


def random_images(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32")


class AIMV2BackboneTest(TestCase):
    def setUp(self):
        super().setUp()
        self.input_data = ops.convert_to_tensor(random_images((2, 32, 32, 3)))
        # The harness sets the global data format and restores it only when
        # every check passes.
        self.addCleanup(
            keras.config.set_image_data_format,
            keras.config.image_data_format(),
        )

    @parameterized.named_parameters(
        ("learned", INIT_KWARGS, True),
        # The quantized layers (every `Dense`) are the same with either
        # position embedding: quantized once.
        ("sincos", SINCOS_KWARGS, False),
    )
    def test_backbone_basics(self, init_kwargs, run_quantization_check):
        self.run_vision_backbone_test(
            cls=AIMV2Backbone,
            init_kwargs=init_kwargs,
            input_data=self.input_data,
            expected_output_shape=(2, 16, 16),
            run_quantization_check=run_quantization_check,
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=AIMV2Backbone,
            init_kwargs=INIT_KWARGS,
            input_data=self.input_data,
        )

    def test_saved_model_sincos_at_another_size(self):
        # A sine-cosine backbone saved and loaded reads a 24 x 40 image.
        self.run_model_saving_test(
            cls=AIMV2Backbone,
            init_kwargs=SINCOS_KWARGS,
            input_data=ops.convert_to_tensor(random_images((1, 24, 40, 3))),
        )

    def test_channels_first_gives_the_same_features(self):
        images = random_images((2, 32, 32, 3))
        transposed = np.transpose(images, (0, 3, 1, 2))
        for kwargs in (INIT_KWARGS, SINCOS_KWARGS):
            last = AIMV2Backbone(**kwargs, data_format="channels_last")
            height, width, channels = kwargs["image_shape"]
            first = AIMV2Backbone(
                **{**kwargs, "image_shape": (channels, height, width)},
                data_format="channels_first",
            )
            first.set_weights(last.get_weights())
            self.assertEqual(first.num_channels, 3)
            self.assertEqual(first.image_size, (height, width))
            self.assertEqual(
                first.get_config()["data_format"], "channels_first"
            )
            self.assertAllClose(first(transposed), last(images), atol=1e-5)
            self.assertAllClose(
                first.extract_features(transposed, feature_layers=(0, 1)),
                last.extract_features(images, feature_layers=(0, 1)),
                atol=1e-5,
            )

    def test_data_format_defaults_to_keras_config(self):
        self.assertEqual(
            AIMV2Backbone(**INIT_KWARGS).data_format,
            keras.config.image_data_format(),
        )
        keras.config.set_image_data_format("channels_first")
        backbone = AIMV2Backbone(**{**INIT_KWARGS, "image_shape": (3, 32, 32)})
        self.assertEqual(backbone.data_format, "channels_first")
        self.assertEqual(
            tuple(backbone(np.zeros((1, 3, 32, 32), "float32")).shape),
            (1, 16, 16),
        )

    def test_data_format_errors_name_the_argument(self):
        with self.assertRaisesRegex(ValueError, "data_format='NHWC'"):
            AIMV2Backbone(**INIT_KWARGS, data_format="NHWC")
        with self.assertRaisesRegex(
            ValueError,
            r"\(channels, height, width\).*image_shape=\(32, 32\)",
        ):
            AIMV2Backbone(
                **{**INIT_KWARGS, "image_shape": (32, 32)},
                data_format="channels_first",
            )
        # A channels-last shape given to a channels-first backbone.
        with self.assertRaisesRegex(ValueError, "data_format='channels_first'"):
            AIMV2Backbone(**INIT_KWARGS, data_format="channels_first")
        backbone = AIMV2Backbone(
            **{**INIT_KWARGS, "image_shape": (3, 32, 32)},
            data_format="channels_first",
        )
        with self.assertRaisesRegex(
            ValueError,
            r"\(channels, height, width\) with the backbone's 3 channels.*"
            r"image_shape=\(48, 48, 3\)",
        ):
            backbone.with_image_shape((48, 48, 3))
