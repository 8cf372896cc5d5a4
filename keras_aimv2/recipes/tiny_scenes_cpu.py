"""Tiny AIMv2 on procedural captioned scenes, on a 2-core CPU (main job).

A scaled-down AIMv2 (Fini et al., CVPR 2025): the same encoder, decoder,
prefix attention, objective (alpha 0.4), AdamW (0.9, 0.95) with fully
decoupled weight decay 1e-4, warm-up and cosine decay, clipping 1.0; only
the sizes, the schedule length and the data are small. The scene captions
name positions ("to the left of"), so horizontal flips, which would make
them false, are off, and crops keep most of the picture.

Expected: in about ten minutes the held-out text loss falls well below the
untrained model's, and greedy captions name the scene's shapes and colours.
"""

RECIPE = {
    "name": "tiny_scenes_cpu",
    "paper": "AIMv2 (arXiv:2411.14402), Table A1 scaled down for a CPU",
    "backbone": {
        "image_shape": (64, 64, 3),
        "patch_size": 8,
        "hidden_dim": 128,
        "num_layers": 4,
        "num_heads": 2,
        "intermediate_dim": 384,
    },
    "decoder": {
        "decoder_hidden_dim": 128,
        "decoder_num_layers": 2,
        "decoder_num_heads": 2,
        "decoder_intermediate_dim": 384,
        "context_length": 48,
    },
    "data": {
        "source": "scenes",
        "source_size": 64,
        "train_examples": 20000,
        "eval_examples": 512,
        "seed": 0,
        "train_dir": None,
        "eval_dir": None,
        "crop_scale": (0.8, 1.0),
        "flip_probability": 0.0,
        "schema": None,
        "allow_anomalies": False,
    },
    # A tokenizer trained on the captions, with distinct pad and end ids: the
    # end of a caption is a target, so greedy captions learn to stop.
    "tokenizer": {
        "vocabulary_size": 100,
        "model": None,
        "pad_token": None,
        "remove_punctuation": False,
    },
    "training": {
        "batch_size": 64,
        "eval_batch_size": 128,
        "steps": 600,
        "steps_per_epoch": 50,
        "warmup_steps": 50,
        "peak_learning_rate": 2e-3,
        "final_learning_rate": 1e-5,
        "weight_decay": 1e-4,
        # The global norm of all gradients together (clip_grad_norm_).
        "clipnorm": 1.0,
        # The objective, text_loss_weight * L_text + pixel_loss_weight *
        # L_img (AIMv2: 1 and 0.4); a weight of 0 drops its loss, as the
        # objective ablation does (`aimv2 ablate`).
        "pixel_loss_weight": 0.4,
        "text_loss_weight": 1.0,
        "seed": 0,
        "verbose": 1,
        # Mixed precision: "mixed_bfloat16" computes in bfloat16 and keeps
        # float32 weights and losses.
        "dtype_policy": "float32",
        # Batches averaged into each update (effective batch: this times
        # batch_size); `steps` counts updates.
        "gradient_accumulation_steps": 1,
        # Recompute block activations in the backward pass to save memory.
        "remat": False,
    },
    # `keras_aimv2.distribution`: "none", "data_parallel" (every device a
    # replica) or "sharded" (JAX: weights split over a (data, model) mesh).
    "distribution": {"strategy": "none", "mesh_shape": None},
    "output_dir": "runs/tiny_scenes_cpu",
}
