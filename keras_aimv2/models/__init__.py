"""AIMv2 models: the backbone and the pre-training task.

Importing this package registers Apple's released checkpoints as keras-hub
presets of `AIMV2Backbone` (see `aimv2_presets`), loaded from local
directories converted with `tools/convert_checkpoint.py`.
"""

from keras_hub.src.utils.preset_utils import register_presets

from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_presets import local_presets

register_presets(local_presets(), AIMV2Backbone)
