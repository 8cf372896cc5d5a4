"""AIMv2-L pre-training, as in the paper (arXiv:2411.14402, Table A1).

ViT-L/14 at 224 pixels with the shared 1024-wide, 12-block decoder; AdamW
(0.9, 0.95, eps 1e-8), fully decoupled weight decay 1e-4 (not on biases,
norms, position embeddings or BOS), peak learning rate 1e-3 reached after
12,500 warm-up steps from 1e-6, cosine decay to 1e-5, gradient clipping 1.0,
alpha 0.4, batch 8192 for 1.5M steps (12B image-text pairs),
RandomResizedCrop 224 (scale 0.4-1) and horizontal flips.

Point it at your shards and SigLIP's SentencePiece model:

    aimv2 pretrain aimv2_large --set \\
        data.train_dir=/data/dfn/train tokenizer.model=/models/siglip.model

Expected: ImageNet-1k attentive probe 86.6% top-1 at 224 pixels.
"""


def paper_recipe(size, peak_learning_rate):
    """The Table A1 recipe of one AIMv2 encoder size."""
    return {
        "name": f"aimv2_{size}",
        "paper": "AIMv2 (arXiv:2411.14402), Table A1",
        "backbone": {"size": size},
        "decoder": {
            "decoder_hidden_dim": 1024,
            "decoder_num_layers": 12,
            "decoder_num_heads": 8,
            "decoder_intermediate_dim": 2816,
            "context_length": 77,
        },
        "data": {
            "source": None,
            "train_dir": None,
            "eval_dir": None,
            "crop_scale": (0.4, 1.0),
            "flip_probability": 0.5,
            "schema": None,
            "allow_anomalies": False,
        },
        # SigLIP's SentencePiece model as AIMv2's trainer reads it (through
        # transformers' SiglipTokenizer): padded with its end token `</s>`,
        # which is therefore never a target, and without punctuation.
        "tokenizer": {
            "vocabulary_size": 32000,
            "model": None,
            "pad_token": "</s>",
            "remove_punctuation": True,
        },
        "training": {
            "batch_size": 8192,
            "eval_batch_size": 1024,
            "steps": 1_500_000,
            "steps_per_epoch": 1000,
            "warmup_steps": 12_500,
            "peak_learning_rate": peak_learning_rate,
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
            "dtype_policy": "mixed_bfloat16",
            # Batches averaged into each update (effective batch: this times
            # batch_size); `steps` counts updates.
            "gradient_accumulation_steps": 1,
            # Recompute block activations in the backward pass to save memory.
            "remat": False,
        },
        # `keras_aimv2.distribution`: "none", "data_parallel" (every device a
        # replica) or "sharded" (JAX: weights split over a (data, model) mesh).
        "distribution": {"strategy": "data_parallel", "mesh_shape": None},
        "output_dir": f"runs/aimv2_{size}",
    }


RECIPE = paper_recipe("large", peak_learning_rate=1e-3)
