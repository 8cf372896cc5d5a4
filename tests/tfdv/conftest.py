"""Setup of the TFDV tests, which run only in .venv-tfdv.

Run them with:

    .venv-tfdv/bin/python -m pytest tests/tfdv -q -p no:cacheprovider

`tools/` goes on the import path, so that the tests import
`validate_data` and `data_validation` as the tool does. In the main venv,
which has no TFDV, `pytest tests` collects nothing from this folder; its
tests cannot run there.
"""

import importlib.util
import os
import sys

# Before TensorFlow is imported: hide its C++ notices, as the tool does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TOOLS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools")

if importlib.util.find_spec("tensorflow_data_validation") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    sys.path.insert(0, os.path.abspath(TOOLS))
