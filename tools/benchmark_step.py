"""Time AIMv2 pre-training steps of a named configuration on this backend.

    KERAS_BACKEND=jax python tools/benchmark_step.py --config tiny

Prints the median wall time of one `train_on_batch` step (after warm-up and
compilation) over several repeats, and writes it as JSON with `--output`.
Run it once per backend: the backend is fixed when Keras is imported.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np

import keras_aimv2


def make_batch(backbone_config, decoder_config, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    length = decoder_config["context_length"]
    return {
        "images": rng.normal(
            size=(batch_size, *backbone_config["image_shape"])
        ).astype("float32"),
        "token_ids": rng.integers(
            0, decoder_config["vocabulary_size"], (batch_size, length)
        ).astype("int32"),
        "padding_mask": np.ones((batch_size, length), bool),
    }


def time_steps(pretrainer, batch, steps, repeats, warmup):
    for _ in range(warmup):
        pretrainer.train_on_batch(batch)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            logs = pretrainer.train_on_batch(batch, return_dict=True)
        keras.ops.convert_to_numpy(logs["loss"])
        timings.append((time.perf_counter() - start) / steps)
    return timings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    backbone_config = keras_aimv2.BACKBONE_CONFIGS[args.config]
    decoder_name = args.config if args.config == "tiny" else "aimv2"
    decoder_config = keras_aimv2.DECODER_CONFIGS[decoder_name]
    keras.utils.set_random_seed(0)
    backbone = keras_aimv2.AIMV2Backbone(**backbone_config)
    pretrainer = keras_aimv2.AIMV2Pretrainer(backbone, **decoder_config)
    batch = make_batch(backbone_config, decoder_config, args.batch_size)
    timings = time_steps(
        pretrainer, batch, args.steps, args.repeats, args.warmup
    )
    result = {
        "backend": keras.config.backend(),
        "config": args.config,
        "batch_size": args.batch_size,
        "median_step_ms": round(1000 * statistics.median(timings), 2),
        "step_ms_per_repeat": [round(1000 * t, 2) for t in timings],
    }
    print(json.dumps(result))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
