"""AIMv2's attentive probe, scaled to Fashion-MNIST on a 2-core CPU.

The protocol of AIMv2 (arXiv:2411.14402, Section 4 and Table A2): the
encoder is frozen and its last-layer patch features feed an attention pool
(one learned query, multi-head attention, no query projection) and a linear
classifier; AdamW with weight decay 0.05 (the paper sweeps 0.05 and 0.1),
a learning rate from the paper's sweep {5e-5 ... 2e-3} (1e-3 here), linear
warm-up then cosine decay, RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3)
and horizontal flips. Scaled down: 8 epochs instead of 100, batch 256. The
paper's ColorJitter (0.3) and RandAugment are omitted: Fashion-MNIST is
grayscale, so colour jitter has nothing to act on, and the small images
and short schedule leave no room for RandAugment's heavy distortions.

Images are Fashion-MNIST's 28 x 28 grays, copied into 3 channels and
resized bicubically to the encoder's 32 x 32 (patch 8: a 4 x 4 grid),
normalized with ImageNet's mean and standard deviation as in pre-training.
The default encoder is the architecture of `tiny_scenes_cpu.py` at 32
pixels, randomly initialised; probe a trained one with

    aimv2 probe probe_fashion_mnist \\
        --set backbone.preset=runs/fmnist_pretrain/preset/backbone

A probe has no `decoder` and no `tokenizer` section: it needs neither.
`head.freeze_backbone=False` (with, e.g., `training.layer_decay=0.75` and a
lower `training.peak_learning_rate`) fine-tunes the whole encoder instead.
"""

RECIPE = {
    "name": "probe_fashion_mnist",
    "paper": "AIMv2 (arXiv:2411.14402), attentive probe (Section 4, "
    "Table A2) scaled down for Fashion-MNIST on a CPU",
    "backbone": {
        # A keras-hub preset directory holding an AIMV2Backbone; None builds
        # a randomly initialised encoder from the entries below. With a
        # preset, a non-None `image_shape` different from the preset's
        # resamples its position embedding.
        "preset": None,
        "image_shape": (32, 32, 3),
        "patch_size": 8,
        "hidden_dim": 128,
        "num_layers": 4,
        "num_heads": 2,
        "intermediate_dim": 384,
    },
    "data": {
        "train_examples": None,  # None: all 60,000.
        "test_examples": None,  # None: all 10,000.
        "num_classes": 10,
        "crop_scale": (0.08, 1.0),
        "flip_probability": 0.5,
        "root": None,  # None: Debian's dataset-fashion-mnist.
    },
    "head": {
        "pooling": "attention",
        "freeze_backbone": True,
        "feature_layers": None,  # None: the last block, as the paper.
        "num_heads": None,  # None: the encoder's.
        "dropout": 0.0,
    },
    "training": {
        "batch_size": 256,
        "eval_batch_size": 500,
        "epochs": 8,
        "steps_per_epoch": None,  # None: one pass over the training images.
        "warmup_epochs": 1,
        "peak_learning_rate": 1e-3,
        "final_learning_rate": 1e-6,
        "weight_decay": 0.05,
        "layer_decay": None,
        "seed": 0,
        "verbose": 2,
    },
    "output_dir": "runs/probe_fashion_mnist",
}
