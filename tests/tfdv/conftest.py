"""Setup of the TFDV tests, which run only in the validation environment.

Run them with that environment's Python (`aimv2 validate --setup` creates
it if need be and prints its path):

    $(.venv/bin/aimv2 validate --setup) -m pytest tests/tfdv -q \
        -p no:cacheprovider

The validator's folder, `keras_aimv2/data/tfdv`, goes on the import path,
as when the validator runs by its path, so that the tests import
`validate_data` and `data_validation` as the tool does (not through the
`keras_aimv2` package, which imports Keras 3, absent there). In the main
venv, which has no TFDV, `pytest tests` collects nothing from this folder;
its tests cannot run there.
"""

import importlib.util
import os
import sys

# Before TensorFlow is imported: hide its C++ notices, as the tool does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
TOOL_DIR = os.path.join(ROOT, "keras_aimv2", "data", "tfdv")

if importlib.util.find_spec("tensorflow_data_validation") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    sys.path.insert(0, TOOL_DIR)
