"""Convert released AIMv2 checkpoints (safetensors) into keras-hub presets.

Reads the weights of an AIMv2 vision encoder in any of the three layouts
it is published in: Apple's own (`preprocessor.patchifier.proj.weight`,
`trunk.blocks.N...`), Hugging Face transformers' `Aimv2VisionModel`
(`embeddings.patch_embed.weight`, `encoder.layers.N...`) and timm's
(`patch_embed.proj.weight`, `blocks.N...`). The LiT model's image tower
is also read out of the whole image-text checkpoint: under
`image_encoder.` in Apple's `AIMv2LiT` (Apple's or timm's names; its
attention-pool head as `head.cls_token`, `head.k`, `head.v`,
`head.linear`) and under `vision_model.` in transformers' CLIP-style
`Aimv2Model` (head `head.cls_token`, `head.k_proj`, `head.v_proj`,
`head.output_proj`). Their text towers and projections are skipped
(listed in `conversion.json`) unless the whole LiT model is asked for
(`lit=True`, `--lit`): then text tower (`text_encoder.` / `text_model.`),
projections and logit scale are converted too, into an
`AIMV2LiTBackbone`, with the checkpoint's CLIP tokenizer (`vocab.json`,
`merges.txt`) in an `AIMV2LiTPreprocessor` when it has one.

The configuration is inferred from the tensor shapes (and from a
`config.json` beside the weights when there is one), every tensor is
checked and mapped onto `AIMV2Backbone`, and the result is written as a
keras-hub preset directory together with the checkpoint's image converter
(CLIP mean and standard deviation, bicubic resize, crop 1.0). Only
safetensors files are read (float32, float16 or bfloat16); pickled
checkpoints are refused.

The package is split as keras-hub splits its checkpoint conversion:

- `safetensors_reader`: the checkpoint's files, read through the
  `safetensors` library (bfloat16 included) and its `config.json`;
- `layouts`, with `layout_apple`, `layout_transformers` and `layout_timm`:
  the key names of each layout and the recognition of a checkpoint's;
- `weight_rules`: how the tensors map onto the Keras weights, and the
  checks made before any is set;
- `config_inference`: the `AIMV2Backbone` configuration from the shapes;
- `checkpoint_loader`: `load_checkpoint`, which puts them together;
- `lit_loader`: `load_lit_checkpoint`, the same for a whole LiT model;
- `preset_writer`: `convert_checkpoint`, which writes the preset, and
  `load_attention_pool`;
- `command_line`: `aimv2 convert`.

Command line (`python -m keras_aimv2.conversion` takes the same
arguments):

```
aimv2 convert SOURCE OUTPUT_DIR [--num-heads N] [--preset-name NAME]
    [--lit] [--num-text-heads N] [--overwrite]
```

Example:

>>> from keras_aimv2 import conversion  # doctest: +SKIP
>>> conversion.convert_checkpoint(
...     "aimv2-large-patch14-224", "presets/aimv2_large_patch14_224"
... )
>>> backbone = AIMV2Backbone.from_preset("presets/aimv2_large_patch14_224")
>>> conversion.convert_checkpoint(  # doctest: +SKIP
...     "aimv2-large-patch14-224-lit", "presets/lit", lit=True
... )
>>> lit = AIMV2LiTBackbone.from_preset("presets/lit")
"""

from keras_aimv2.conversion.checkpoint_loader import CLIP_MEAN
from keras_aimv2.conversion.checkpoint_loader import CLIP_STD
from keras_aimv2.conversion.checkpoint_loader import ConvertedCheckpoint
from keras_aimv2.conversion.checkpoint_loader import checkpoint_image_converter
from keras_aimv2.conversion.checkpoint_loader import load_checkpoint
from keras_aimv2.conversion.command_line import main
from keras_aimv2.conversion.config_inference import RELEASED_HEAD_DIM
from keras_aimv2.conversion.config_inference import infer_config
from keras_aimv2.conversion.config_inference import infer_lit_config
from keras_aimv2.conversion.errors import CheckpointError
from keras_aimv2.conversion.layouts import LAYOUTS
from keras_aimv2.conversion.layouts import detect_layout
from keras_aimv2.conversion.layouts import is_whole_lit
from keras_aimv2.conversion.lit_loader import ConvertedLiTCheckpoint
from keras_aimv2.conversion.lit_loader import load_lit_checkpoint
from keras_aimv2.conversion.preset_writer import ATTENTION_POOL_CONFIG_FILE
from keras_aimv2.conversion.preset_writer import ATTENTION_POOL_WEIGHTS_FILE
from keras_aimv2.conversion.preset_writer import CONVERSION_FILE
from keras_aimv2.conversion.preset_writer import convert_checkpoint
from keras_aimv2.conversion.preset_writer import load_attention_pool
from keras_aimv2.conversion.safetensors_reader import read_safetensors
from keras_aimv2.conversion.safetensors_reader import safetensors_files

__all__ = [
    "ATTENTION_POOL_CONFIG_FILE",
    "ATTENTION_POOL_WEIGHTS_FILE",
    "CLIP_MEAN",
    "CLIP_STD",
    "CONVERSION_FILE",
    "LAYOUTS",
    "RELEASED_HEAD_DIM",
    "CheckpointError",
    "ConvertedCheckpoint",
    "ConvertedLiTCheckpoint",
    "checkpoint_image_converter",
    "convert_checkpoint",
    "detect_layout",
    "infer_config",
    "infer_lit_config",
    "is_whole_lit",
    "load_attention_pool",
    "load_checkpoint",
    "load_lit_checkpoint",
    "main",
    "read_safetensors",
    "safetensors_files",
]
