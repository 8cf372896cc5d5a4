"""AIMv2's objective ablation (Table 9) on Fashion-MNIST, on a 2-core CPU.

What it measures: whether AIMv2's two objectives together make a better
frozen encoder than either alone, under one budget. The same tiny encoder
(the one `probe_fashion_mnist` builds: 32 x 32 pixels, patch 8, width 128,
4 blocks, 2 heads, SwiGLU 384) with a small decoder (width 128, 2 blocks)
is pre-trained on Fashion-MNIST images and their generated captions
(`keras_aimv2.data.fashion_mnist`), 300 steps of batch 64 from the same
seed, three ways: AIMv2's objective (captions + 0.4 x pixels), captions
only and pixels only; then each encoder, and the untrained one, is frozen
and probed (`probe_fashion_mnist`: attentive probe, 3 epochs on 15,000
training images, top-1 on the 10,000 test images).

Expected ordering, from the paper (ViT-L, ImageNet-1k top-1): AIMv2 85.6 >
captions only about 85.2 > pixels only 72.0. Here the captions name the
class of every image, so captioning is close to supervised training and
the captioning objectives should lead by far, the pixel-only encoder come
next and the untrained one last; at this scale AIMv2 and captions only may
swap within the noise of one seed.

About 12 minutes on a 2-core CPU (JAX): each pre-training about 2 (0.3 s a
step), each probe about 1 (an epoch of 15,000 images about 15 s).

    aimv2 ablate ablation_fashion_mnist
    aimv2 ablate ablation_fashion_mnist --objectives aimv2 pixels \\
        --set pretrain.training.steps=100 probe.training.epochs=1
"""

RECIPE = {
    "name": "ablation_fashion_mnist",
    "paper": "AIMv2 (arXiv:2411.14402), objective ablation (Table 9) "
    "scaled down to Fashion-MNIST on a CPU",
    # The pre-training every objective runs: a packaged recipe (or
    # "entries": its dict) with these entries changed, as `--set` would.
    "pretrain": {
        "recipe": "tiny_scenes_cpu",
        "overrides": {
            "data.source": "fashion-mnist",
            "data.source_size": None,
            "data.train_examples": 20000,
            "data.eval_examples": 512,
            "data.flip_probability": 0.5,
            "backbone.image_shape": (32, 32, 3),
            "decoder.context_length": 24,
            # Fashion-MNIST's captions hold fewer than 90 distinct pieces.
            "tokenizer.vocabulary_size": 64,
            "training.steps": 300,
            "training.steps_per_epoch": 50,
            "training.warmup_steps": 30,
        },
    },
    # The probe of each encoder; its `backbone` is the pre-training's.
    "probe": {
        "recipe": "probe_fashion_mnist",
        "overrides": {
            "data.train_examples": 15000,
            "training.epochs": 3,
        },
    },
    # "aimv2": the recipe's objective; "captions": pixel_loss_weight 0;
    # "pixels": text_loss_weight 0; "untrained": no pre-training.
    "ablation": {"objectives": ("aimv2", "captions", "pixels", "untrained")},
    "output_dir": "runs/ablation_fashion_mnist",
}
