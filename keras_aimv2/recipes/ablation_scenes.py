"""AIMv2's objective ablation (Table 9) on procedural scenes, on a 2-core CPU.

What it measures: which objective makes a frozen encoder see what captions
do not spell out. The encoder of `tiny_scenes_cpu` at 32 x 32 pixels
(patch 8, width 128, 4 blocks) and its small decoder are pre-trained on
20,000 captioned scenes (`keras_aimv2.data.scenes`, seed 0; held-out
losses on seed 1), 300 steps of batch 64 from the same seed, three ways:
AIMv2's objective (captions + 0.4 x pixels), captions only and pixels
only. Each encoder, and the untrained one, is then frozen and probed on
other scenes (seeds 1000 and 1001: none of them was seen in pre-training)
for the number of large shapes in the picture (0 to 3, the `large_count`
task of `keras_aimv2.data.scenes.PROBE_TASKS`): captions name sizes only
sometimes and never count the large shapes, so the label must be seen.
The probe crops mildly (scale 0.8 to 1) and flips: heavier crops would cut
shapes away and change the answer.

Expected ordering, from the paper (ViT-L, ImageNet-1k top-1): AIMv2 85.6 >
captions only about 85.2 > pixels only 72.0, and every pre-trained encoder
above the untrained one. At this scale the differences are a few points
and one seed; the table gives the held-out losses beside the accuracies.

About 10 minutes on a 2-core CPU (JAX): each pre-training about 2 (0.25 s
a step), each probe under 1 (10,000 scenes drawn in about 6 seconds, an
epoch about 9 s).

    aimv2 ablate ablation_scenes
    aimv2 ablate ablation_scenes --set probe.data.task=object_count \\
        probe.data.num_classes=3
"""

RECIPE = {
    "name": "ablation_scenes",
    "paper": "AIMv2 (arXiv:2411.14402), objective ablation (Table 9) "
    "scaled down to procedural scenes on a CPU",
    # The pre-training every objective runs: a packaged recipe (or
    # "entries": its dict) with these entries changed, as `--set` would.
    "pretrain": {
        "recipe": "tiny_scenes_cpu",
        "overrides": {
            "backbone.image_shape": (32, 32, 3),
            "data.source_size": 32,
            "data.train_examples": 20000,
            "data.eval_examples": 512,
            "data.seed": 0,
            "training.steps": 300,
            "training.steps_per_epoch": 50,
            "training.warmup_steps": 30,
        },
    },
    # The probe of each encoder on held-out scenes; its `backbone` is the
    # pre-training's.
    "probe": {
        "recipe": "probe_fashion_mnist",
        "overrides": {
            "data.source": "scenes",
            "data.task": "large_count",
            "data.num_classes": 4,
            # Other seeds than the pre-training's 0 and 1: held out.
            "data.seed": 1000,
            "data.source_size": 32,
            "data.train_examples": 10000,
            "data.test_examples": 2000,
            "data.crop_scale": (0.8, 1.0),
            "data.flip_probability": 0.5,
            "training.epochs": 3,
        },
    },
    # "aimv2": the recipe's objective; "captions": pixel_loss_weight 0;
    # "pixels": text_loss_weight 0; "untrained": no pre-training.
    "ablation": {"objectives": ("aimv2", "captions", "pixels", "untrained")},
    "output_dir": "runs/ablation_scenes",
}
