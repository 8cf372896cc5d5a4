"""AIMv2-L pre-training step on an accelerator: largest batch, bf16 MFU.

    KERAS_BACKEND=jax .venv/bin/python tools/benchmark_gpu.py
    KERAS_BACKEND=torch .venv/bin/python tools/benchmark_gpu.py \\
        --peak-tflops 989 --output runs/gpu_torch.json

Under `mixed_bfloat16` (bfloat16 matmuls and attention, float32 weights,
norms, softmax and losses), with the backend's fused attention where it
offers one (PyTorch's `scaled_dot_product_attention` picks its flash or
memory-efficient kernel on a GPU), it doubles the batch from `--min-batch`
until a step runs out of memory, then times the largest batch that fit:
median step time after warm-up, samples per second, and model FLOPs per
second (`keras_aimv2.flops`) as a fraction of `--peak-tflops`, the chip's
dense bfloat16 peak (989 TFLOP/s for an H100 or H200 SXM). Run it once per
backend. `--workload tiny` runs the same code in seconds on a CPU.
`tools/benchmark_gpu.sh` runs it for every backend in one go, within a
time budget.
"""

import argparse
import json
import sys

from benchmark import check_at_least
from benchmark import median_seconds
from benchmark import synthetic_batch
from benchmark import write_json

import keras_aimv2
from keras_aimv2 import xla_cpu

WORKLOADS = {
    "large-224": ("large", "aimv2"),
    "tiny": ("tiny", "tiny"),
}
OUT_OF_MEMORY = ("out of memory", "resource_exhausted", "resource exhausted")


def is_out_of_memory(error):
    return any(text in str(error).lower() for text in OUT_OF_MEMORY)


def make_step(workload, batch_size, seed=0):
    """A mixed-precision pre-trainer and a train-step closure at a batch."""
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")
    backbone_name, decoder_name = WORKLOADS[workload]
    backbone_config = keras_aimv2.BACKBONE_CONFIGS[backbone_name]
    decoder_config = keras_aimv2.DECODER_CONFIGS[decoder_name]
    keras.utils.set_random_seed(seed)
    pretrainer = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(**backbone_config), **decoder_config
    )
    batch = synthetic_batch(backbone_config, decoder_config, batch_size, seed)
    losses = []

    def step():
        logs = pretrainer.train_on_batch(batch, return_dict=True)
        losses.append(float(keras.ops.convert_to_numpy(logs["loss"])))
        return losses[-1]

    step.losses = losses
    return pretrainer, step, (backbone_config, decoder_config)


def release():
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()
    if keras.config.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def largest_batch(workload, min_batch, max_batch, seconds=None):
    """The largest power-of-two multiple of `min_batch` whose step fits.

    With `seconds`, no larger batch is tried once that many seconds have
    passed (each try builds and compiles a model).
    """
    import time

    start = time.monotonic()
    fitted, batch_size = None, min_batch
    while batch_size <= max_batch:
        if fitted and seconds and time.monotonic() - start > seconds:
            print(
                f"[gpu] search stopped after {seconds} s at batch {fitted}",
                file=sys.stderr,
            )
            break
        try:
            _, step, _ = make_step(workload, batch_size)
            step()
            fitted = batch_size
            print(f"[gpu] batch {batch_size}: fits", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - OOM types vary by backend
            if not is_out_of_memory(error):
                raise
            print(f"[gpu] batch {batch_size}: out of memory", file=sys.stderr)
            break
        finally:
            step = None
            release()
        batch_size *= 2
    if fitted is None:
        raise SystemExit(
            f"Even --min-batch={min_batch} does not fit; lower it."
        )
    return fitted


def main(argv=None):
    # Before JAX starts: its XLA:CPU tuning when this runs on a CPU
    # (`--workload tiny`), as `aimv2 pretrain` makes it.
    xla_cpu.configure()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--workload", choices=WORKLOADS, default="large-224")
    parser.add_argument("--min-batch", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Skip the search and time this batch.",
    )
    parser.add_argument(
        "--search-seconds",
        type=int,
        help="Try no larger batch once the search has taken this long.",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="The chip's dense bfloat16 peak in TFLOP/s (H200: 989).",
    )
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    check_at_least(
        parser,
        args,
        1,
        "min_batch",
        "max_batch",
        "repeats",
        "batch_size",
        "search_seconds",
    )
    check_at_least(parser, args, 0, "warmup")
    if args.peak_tflops <= 0:
        parser.error(f"--peak-tflops must be positive; got {args.peak_tflops}")

    import keras

    from keras_aimv2.flops import pretraining_flops

    batch_size = args.batch_size or largest_batch(
        args.workload, args.min_batch, args.max_batch, args.search_seconds
    )
    pretrainer, step, configs = make_step(args.workload, batch_size)
    seconds, _ = median_seconds(step, args.repeats, args.warmup)
    flops = pretraining_flops(*configs, batch_size)
    result = {
        "backend": keras.config.backend(),
        "workload": args.workload,
        "dtype_policy": "mixed_bfloat16",
        "jit_compile": pretrainer.jit_compile,
        "batch_size": batch_size,
        "step_ms": round(1000 * seconds, 1),
        "samples_per_s": round(batch_size / seconds, 1),
        "model_gflops_per_step": round(flops / 1e9, 4),
        "model_tflops_per_s": round(flops / seconds / 1e12, 1),
        "peak_tflops": args.peak_tflops,
        "mfu": round(flops / seconds / 1e12 / args.peak_tflops, 4),
        "loss": round(step.losses[-1], 4),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(result, args.output)


if __name__ == "__main__":
    main()
