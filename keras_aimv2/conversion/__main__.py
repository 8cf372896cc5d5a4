"""`python -m keras_aimv2.conversion`: the same as `aimv2 convert`."""

import sys

from keras_aimv2.conversion.command_line import main

if __name__ == "__main__":
    sys.exit(main())
