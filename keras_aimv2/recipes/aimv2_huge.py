"""AIMv2-H pre-training, as in the paper (arXiv:2411.14402, Table A1).

The AIMv2-L recipe (see aimv2_large.py) with the H encoder and a peak
learning rate of 8e-4. Expected: ImageNet-1k attentive probe 87.5% top-1 at
224 pixels.
"""

import os
import runpy

_large = runpy.run_path(
    os.path.join(os.path.dirname(__file__), "aimv2_large.py")
)
RECIPE = _large["paper_recipe"]("huge", peak_learning_rate=8e-4)
