"""keras-aimv2: AIMv2 vision encoders for Keras 3 and keras-hub.

AIMv2 ("Multimodal Autoregressive Pre-training of Large Vision Encoders",
Fini et al., CVPR 2025) pre-trains a ViT by pairing it with a causal
multimodal decoder that regresses the image's patches and then generates its
caption. This package implements it on JAX, TensorFlow and PyTorch.

Importing it changes no global state: it sets no environment variable and
registers nothing in keras-hub's preset tables (Apple's checkpoints load by
name through the `from_preset` of its classes). It first checks that the
installed Keras and keras-hub still have the internals it relies on
(`keras_aimv2.compat`). JAX's XLA:CPU tuning is an explicit call,
`keras_aimv2.xla_cpu.configure()`, which `aimv2 pretrain` makes.
"""

from keras_aimv2 import compat  # noqa: F401  (first: checks the versions)
from keras_aimv2 import layers
from keras_aimv2.configs import BACKBONE_CONFIGS
from keras_aimv2.configs import DECODER_CONFIGS
from keras_aimv2.configs import LIT_CONFIGS
from keras_aimv2.data.pipeline import measure_throughput
from keras_aimv2.data.pipeline import pretraining_dataset
from keras_aimv2.data.tokenizer_training import train_sentencepiece
from keras_aimv2.layer_decay import LayerDecayAdamW
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_image_classifier import AIMV2ImageClassifier
from keras_aimv2.models.aimv2_image_classifier_preprocessor import (
    AIMV2ImageClassifierPreprocessor,
)
from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
from keras_aimv2.models.aimv2_lit import AIMV2LiT
from keras_aimv2.models.aimv2_lit_backbone import AIMV2LiTBackbone
from keras_aimv2.models.aimv2_lit_preprocessor import AIMV2LiTPreprocessor
from keras_aimv2.models.aimv2_pretrainer import AIMV2Pretrainer
from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
    AIMV2PretrainerPreprocessor,
)
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer
from keras_aimv2.models.aimv2_zero_shot_classifier import (
    AIMV2ZeroShotClassifier,
)

__version__ = "0.1.0"

__all__ = [
    "AIMV2Backbone",
    "AIMV2ImageClassifier",
    "AIMV2ImageClassifierPreprocessor",
    "AIMV2ImageConverter",
    "AIMV2LiT",
    "AIMV2LiTBackbone",
    "AIMV2LiTPreprocessor",
    "AIMV2Pretrainer",
    "AIMV2PretrainerPreprocessor",
    "AIMV2Tokenizer",
    "AIMV2ZeroShotClassifier",
    "BACKBONE_CONFIGS",
    "DECODER_CONFIGS",
    "LIT_CONFIGS",
    "LayerDecayAdamW",
    "layers",
    "measure_throughput",
    "pretraining_dataset",
    "train_sentencepiece",
]
