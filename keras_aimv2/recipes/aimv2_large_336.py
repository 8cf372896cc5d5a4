"""AIMv2-L high-resolution adaptation at 336 pixels (arXiv:2411.14402).

AIMv2's 336 and 448 pixel models continue the 224 pixel pre-training on 2B
further image-text pairs at the higher resolution with weight decay 0,
which the paper needs for stability (Section 4). This recipe starts from a
224 pixel AIMv2-L pre-training preset (`initialize.preset`, written by
`aimv2 pretrain aimv2_large` as `preset/pretrainer`); its
learned position embedding is resampled bicubically from 16 x 16 to
24 x 24 patches, and the decoder and heads carry over unchanged. 2B pairs
at batch 8192 are 244,141 steps. Everything else is Table A1's recipe: the
reference gives no separate learning rate for this stage, so it keeps the
224 pixel schedule (warm-up, peak 1e-3, cosine to 1e-5) — an assumption.
Use the 224 run's tokenizer:

    aimv2 pretrain aimv2_large_336 --set \\
        initialize.preset=runs/aimv2_large/preset/pretrainer \\
        data.train_dir=/data/dfn/train tokenizer.model=/models/siglip.model

For 448 pixels set `backbone.image_shape=(448, 448, 3)` (32 x 32 patches).

Expected: ImageNet-1k attentive probe 87.6% top-1 at 336 pixels (87.9% at
448).
"""

import os
import runpy

_BASE = runpy.run_path(
    os.path.join(os.path.dirname(__file__), "aimv2_large.py")
)

RECIPE = _BASE["paper_recipe"]("large", peak_learning_rate=1e-3)
RECIPE["name"] = "aimv2_large_336"
RECIPE["paper"] = (
    "AIMv2 (arXiv:2411.14402), high-resolution adaptation (Section 4)"
)
RECIPE["backbone"]["image_shape"] = (336, 336, 3)
RECIPE["initialize"] = {"preset": None}
RECIPE["training"]["weight_decay"] = 0.0
RECIPE["training"]["steps"] = 244_141
RECIPE["output_dir"] = "runs/aimv2_large_336"
