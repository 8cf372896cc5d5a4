"""AIMv2-3B pre-training, as in the paper (arXiv:2411.14402, Table A1).

The AIMv2-L recipe (see aimv2_large.py) with the 3B encoder and a peak
learning rate of 4e-4. Expected: ImageNet-1k attentive probe 88.5% top-1 at
224 pixels.

Its float32 weights, gradients and AdamW moments take one device's memory
under data parallelism (see the README's table); on JAX, split them over a
mesh instead: `aimv2 pretrain aimv2_3b --strategy sharded
--mesh-shape 1,8`.
"""

import os
import runpy

_large = runpy.run_path(
    os.path.join(os.path.dirname(__file__), "aimv2_large.py")
)
RECIPE = _large["paper_recipe"]("3b", peak_learning_rate=4e-4)
