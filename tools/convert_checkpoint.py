"""Convert a released AIMv2 checkpoint into a keras-hub preset directory.

    python tools/convert_checkpoint.py SOURCE OUTPUT_DIR [--num-heads N] \
        [--preset-name NAME] [--overwrite]

SOURCE is a `.safetensors` file or a directory holding `model.safetensors`
(or its shards), in Apple's, Hugging Face transformers' or timm's layout.
See `keras_aimv2.conversion` for the details.
"""

import sys

from keras_aimv2.conversion import main

if __name__ == "__main__":
    sys.exit(main())
