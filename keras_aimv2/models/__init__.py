"""AIMv2 models: the backbone, the pre-training and classification tasks.

Apple's released checkpoints are loaded by name through the `from_preset`
of these classes, from local directories converted with `aimv2 convert`
(see `aimv2_presets`). Importing this package registers nothing in
keras-hub's preset tables.
"""

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
]
