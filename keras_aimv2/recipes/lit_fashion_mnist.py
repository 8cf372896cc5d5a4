"""AIMv2-LiT on Fashion-MNIST captions, then zero-shot classification.

AIMv2's zero-shot model (arXiv:2411.14402, Section 4.4) LiT-tunes a text
tower against the frozen encoder (LiT, Zhai et al., CVPR 2022: "locked
image, unlocked text"), with CLIP's contrastive loss. Scaled down: the
locked encoder is the tiny one of `ablation_fashion_mnist` and
`probe_fashion_mnist` (32 x 32 pixels, patch 8, width 128, 4 blocks); the
text tower has 2 blocks of width 128; both towers project to 128. It
reads the captioned Fashion-MNIST images pre-training reads (20,000
training, 512 held out, the same seed) and trains 400 steps of 256
pairs, about 3 minutes on a 2-core CPU. Then each of Fashion-MNIST's
10,000 test images is classified zero-shot: each class is the mean
embedding of its name in the prompt templates below.

With `backbone.preset` unset, the locked encoder is random: the floor
that pre-training should raise. LiT-tune the encoder the Fashion-MNIST
pre-training produced with

    aimv2 lit lit_fashion_mnist \\
        --set backbone.preset=runs/ablation_fashion_mnist/aimv2/preset/backbone
"""

RECIPE = {
    "name": "lit_fashion_mnist",
    "paper": "AIMv2 (arXiv:2411.14402) LiT model, Section 4.4, and LiT "
    "(arXiv:2111.07991), scaled down for Fashion-MNIST on a CPU",
    # The locked image encoder: a keras-hub preset holding an AIMV2Backbone
    # (e.g. a pre-training run's preset/backbone), or None for a random
    # one built from the entries below.
    "backbone": {
        "preset": None,
        "image_shape": (32, 32, 3),
        "patch_size": 8,
        "hidden_dim": 128,
        "num_layers": 4,
        "num_heads": 2,
        "intermediate_dim": 384,
    },
    # The text tower (trained from scratch) and both projections.
    "text": {
        "hidden_dim": 128,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_dim": 384,
        "context_length": 24,
        "projection_dim": 128,
        "pool_num_heads": None,  # None: the encoder's.
    },
    # The same image-caption shards as pre-training on Fashion-MNIST.
    "data": {
        "source": "fashion-mnist",
        "train_examples": 20000,
        "eval_examples": 512,
        "seed": 0,
        "crop_scale": (0.8, 1.0),
        "flip_probability": 0.5,
    },
    # Fashion-MNIST's captions hold fewer than 90 distinct pieces.
    "tokenizer": {"vocabulary_size": 64},
    "training": {
        "batch_size": 256,
        "eval_batch_size": 256,
        "steps": 400,
        "steps_per_epoch": 50,
        "warmup_steps": 40,
        "peak_learning_rate": 1e-3,
        "final_learning_rate": 1e-5,
        "weight_decay": 1e-4,
        "clipnorm": 1.0,
        "seed": 0,
        "verbose": 1,
    },
    # Zero-shot classification of Fashion-MNIST's test images after tuning;
    # each template holds the class name ("an ankle boot") at "{}".
    "zero_shot": {
        "source": "fashion-mnist",
        "templates": (
            "{}",
            "a photo of {}",
            "a grayscale photo of {}",
            "a product image of {}",
            "this is {}",
        ),
        "test_examples": None,  # None: all 10,000.
        "batch_size": 500,
    },
    "output_dir": "runs/lit_fashion_mnist",
}
