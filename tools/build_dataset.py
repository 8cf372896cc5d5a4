"""Build a sharded image-caption dataset; see `keras_aimv2.data.build`."""

import sys

from keras_aimv2.data.build import main

if __name__ == "__main__":
    sys.exit(main())
