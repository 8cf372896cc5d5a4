"""Train a SentencePiece caption tokenizer for AIMv2.

    python tools/train_tokenizer.py --captions FILE_OR_SHARD_DIR \
        --vocabulary-size 1000 --output tokenizer.model

See `keras_aimv2.data.tokenizer_training` for the options.
"""

import sys

from keras_aimv2.data.tokenizer_training import main

if __name__ == "__main__":
    sys.exit(main())
