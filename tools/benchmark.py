"""Benchmark AIMv2 pre-training and encoder inference on every backend.

    .venv/bin/python tools/benchmark.py
    .venv/bin/python tools/benchmark.py --workloads tiny small \\
        --backends jax torch --output runs/benchmark.json

For each named workload and backend, in a fresh process of its own (the
Keras backend is fixed at import, and a process's peak memory is then the
workload's): the float32 matmul peak of this machine (a 2048^3 GEMM,
compiled), the median wall time of a pre-training step after warm-up and
compilation, its samples per second, its model FLOPs (`keras_aimv2.flops`)
as a fraction of the machine's peak (the best GEMM rate any backend reached
in this run), the process's peak resident memory, and the latency of the
encoder's inference beside transformers' `Aimv2VisionModel` holding the same
weights (same batch, same threads). Then the input pipeline's images per
second beside what the tiny workload and the main-job recipe consume.

`torch:compiled` is the torch backend with `jit_compile=True`
(`torch.compile`); plain `torch` is eager. `BACKEND:remat` trains with
`AIMV2Pretrainer(remat=True)` (every block recomputed in the backward
pass). Prints a table and writes JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Backbone and decoder sizes by name, from the table of named sizes
# (`keras_aimv2.configs.ENCODER_SIZES` and `DECODER_SIZES`).
WORKLOADS = {
    "tiny": {
        "backbone": "mini",
        "decoder": "mini",
        "batch_size": 16,
        "steps_per_repeat": 10,
    },
    "small": {
        "backbone": "small",
        "decoder": "small",
        "batch_size": 8,
        "steps_per_repeat": 1,
    },
    # AIMv2-L at 224 pixels with the paper's decoder.
    "large-224": {
        "backbone": "large",
        "decoder": "aimv2",
        "batch_size": 1,
        "steps_per_repeat": 1,
    },
}
VARIANTS = ("jax", "tensorflow", "torch", "torch:compiled")
REMAT_VARIANTS = ("jax:remat", "tensorflow:remat", "torch:remat")
DEFAULT_VARIANTS = {
    "tiny": VARIANTS,
    "small": VARIANTS + REMAT_VARIANTS,
    # torch.compile of AIMv2-L takes minutes on 2 cores; eager only.
    "large-224": ("jax", "tensorflow", "torch"),
}
MATMUL_SIZE = 2048
# The packaged recipe of the main job, by name.
MAIN_RECIPE = "tiny_scenes_cpu"


def workload_configs(name):
    """`(backbone_config, decoder_config)` of a named workload."""
    import keras_aimv2

    workload = WORKLOADS[name]
    backbone, decoder = workload["backbone"], workload["decoder"]
    if isinstance(backbone, str):
        backbone = keras_aimv2.BACKBONE_CONFIGS[backbone]
    if isinstance(decoder, str):
        decoder = keras_aimv2.DECODER_CONFIGS[decoder]
    return dict(backbone), dict(decoder)


def peak_rss_gb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def median_seconds(function, repeats, warmup, per_call=1):
    """Median wall time of `function()` / `per_call`, after `warmup` calls."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append((time.perf_counter() - start) / per_call)
    return statistics.median(timings), timings


# --- Workers: each runs in its own process. ---------------------------------


def matmul_peak(repeats=10):
    """GFLOP/s of a compiled float32 2048^3 matmul on this backend."""
    import keras

    backend = keras.config.backend()
    size = MATMUL_SIZE
    a = keras.random.normal((size, size), seed=1)
    b = keras.random.normal((size, size), seed=2)
    if backend == "jax":
        import jax

        matmul = jax.jit(lambda a, b: a @ b)
    elif backend == "tensorflow":
        import tensorflow as tf

        matmul = tf.function(lambda a, b: a @ b, jit_compile=True)
    else:
        import torch

        matmul = torch.matmul

    def run():
        keras.ops.convert_to_numpy(matmul(a, b)[0, 0])

    seconds, _ = median_seconds(run, repeats, warmup=3)
    return 2 * size**3 / seconds / 1e9


def synthetic_batch(backbone_config, decoder_config, batch_size, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    length = decoder_config["context_length"]
    height, width, _ = backbone_config["image_shape"]
    patch_size = backbone_config["patch_size"]
    num_patches = (height // patch_size) * (width // patch_size)
    return {
        "images": rng.normal(
            size=(batch_size, *backbone_config["image_shape"])
        ).astype("float32"),
        "token_ids": rng.integers(
            0, decoder_config["vocabulary_size"], (batch_size, length)
        ).astype("int32"),
        "padding_mask": np.ones((batch_size, length), bool),
        # AIMv2's U{1, ..., I - 1}, as the preprocessor draws it.
        "prefix_lengths": rng.integers(1, num_patches, batch_size).astype(
            "int32"
        ),
    }


def run_backend(
    workload, variant, repeats, warmup, reference_weights, steps=None
):
    """Train-step and inference figures of one workload on this backend."""
    import keras

    import keras_aimv2
    from keras_aimv2 import conversion
    from keras_aimv2.flops import encoder_flops
    from keras_aimv2.flops import pretraining_flops

    backbone_config, decoder_config = workload_configs(workload)
    settings = WORKLOADS[workload]
    batch_size = settings["batch_size"]
    result = {
        "workload": workload,
        "variant": variant,
        "batch_size": batch_size,
        "matmul_gflops": round(matmul_peak(), 1),
    }
    rss_before = peak_rss_gb()

    keras.utils.set_random_seed(0)
    pretrainer = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(**backbone_config),
        **decoder_config,
        remat=variant.endswith(":remat"),
    )
    if variant == "torch:compiled":
        pretrainer.compile(jit_compile=True)
    batch = synthetic_batch(backbone_config, decoder_config, batch_size)
    steps = steps or settings["steps_per_repeat"]

    def train():
        for _ in range(steps):
            logs = pretrainer.train_on_batch(batch, return_dict=True)
        keras.ops.convert_to_numpy(logs["loss"])

    compile_start = time.perf_counter()
    train()
    result["first_step_s"] = round(time.perf_counter() - compile_start, 1)
    seconds, timings = median_seconds(train, repeats, warmup, steps)
    flops = pretraining_flops(backbone_config, decoder_config, batch_size)
    result.update(
        {
            "jit_compile": pretrainer.jit_compile,
            "step_ms": round(1000 * seconds, 1),
            "step_ms_repeats": [round(1000 * t, 1) for t in timings],
            "samples_per_s": round(batch_size / seconds, 2),
            "train_gflops_per_step": round(flops / 1e9, 2),
            "train_gflops_per_s": round(flops / seconds / 1e9, 1),
            "peak_rss_gb": round(peak_rss_gb(), 2),
            "rss_before_model_gb": round(rss_before, 2),
        }
    )

    if reference_weights and ":" not in variant:
        converted = conversion.load_checkpoint(
            reference_weights, num_heads=backbone_config["num_heads"]
        )
        backbone = converted.backbone
        backbone.compile(jit_compile=variant != "torch")
        images = batch["images"]

        def infer():
            keras.ops.convert_to_numpy(backbone.predict_on_batch(images))

        seconds, _ = median_seconds(infer, repeats, warmup=2)
        result["encoder_ms"] = round(1000 * seconds, 1)
        result["encoder_gflops_per_s"] = round(
            encoder_flops(backbone_config, batch_size) / seconds / 1e9, 1
        )
    return result


def run_reference(workload, repeats, output_dir):
    """transformers' `Aimv2VisionModel` (random weights) at the workload."""
    import torch
    from safetensors.torch import save_file
    from transformers import Aimv2VisionConfig
    from transformers import Aimv2VisionModel

    backbone_config, _ = workload_configs(workload)
    batch_size = WORKLOADS[workload]["batch_size"]
    torch.manual_seed(0)
    config = Aimv2VisionConfig(
        hidden_size=backbone_config["hidden_dim"],
        intermediate_size=backbone_config["intermediate_dim"],
        num_hidden_layers=backbone_config["num_layers"],
        num_attention_heads=backbone_config["num_heads"],
        image_size=backbone_config["image_shape"][0],
        patch_size=backbone_config["patch_size"],
        use_head=False,
    )
    model = Aimv2VisionModel(config).eval()
    path = os.path.join(output_dir, f"{workload}.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    height, width, channels = backbone_config["image_shape"]
    pixels = torch.randn(batch_size, channels, height, width)

    def infer():
        with torch.inference_mode():
            model(pixel_values=pixels)

    seconds, _ = median_seconds(infer, repeats, warmup=2)
    return {
        "workload": workload,
        "variant": "transformers",
        "torch_threads": torch.get_num_threads(),
        "encoder_ms": round(1000 * seconds, 1),
        "weights": path,
    }


def run_pipeline(num_batches, num_examples, output_dir):
    """Images per second of the main-job recipe's input pipeline."""
    import tensorflow as tf

    from keras_aimv2.data.pipeline import measure_throughput
    from keras_aimv2.data.pipeline import pretraining_dataset
    from keras_aimv2.data.scenes import scenes_source
    from keras_aimv2.data.shards import write_shards
    from keras_aimv2.data.tokenizer_training import iter_captions
    from keras_aimv2.data.tokenizer_training import train_sentencepiece
    from keras_aimv2.models.aimv2_image_converter import AIMV2ImageConverter
    from keras_aimv2.models.aimv2_pretrainer_preprocessor import (
        AIMV2PretrainerPreprocessor,
    )
    from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer
    from keras_aimv2.recipes import backbone_arguments
    from keras_aimv2.recipes import load_recipe

    recipe = load_recipe(MAIN_RECIPE)
    data, training = recipe.data, recipe.training
    backbone_config = backbone_arguments(recipe.backbone)
    size = backbone_config["image_shape"][:2]
    shards = os.path.join(output_dir, "scenes")
    write_shards(
        scenes_source(num_examples, 0, image_size=data.source_size),
        shards,
        split="train",
        source="scenes",
    )
    tokenizer_path = os.path.join(output_dir, "tokenizer.model")
    train_sentencepiece(
        iter_captions(shards, split="train"),
        tokenizer_path,
        vocabulary_size=recipe.tokenizer.vocabulary_size,
    )
    preprocessor = AIMV2PretrainerPreprocessor(
        tokenizer=AIMV2Tokenizer(proto=tokenizer_path),
        image_converter=AIMV2ImageConverter(image_size=size),
        sequence_length=recipe.decoder.context_length,
        patch_size=backbone_config["patch_size"],
        seed=training.seed,
    )
    dataset = pretraining_dataset(
        shards,
        training.batch_size,
        size,
        crop_scale=tuple(data.crop_scale),
        flip_probability=data.flip_probability,
    ).map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
    measured = measure_throughput(dataset, num_batches, warmup_batches=2)
    return {
        "variant": "pipeline",
        "batch_size": training.batch_size,
        "images_per_s": round(measured["images_per_second"], 1),
    }


def recipe_consumption(variant, repeats, warmup):
    """Images per second that the main-job recipe's model trains on."""
    import keras

    import keras_aimv2
    from keras_aimv2.recipes import backbone_arguments
    from keras_aimv2.recipes import load_recipe

    recipe = load_recipe(MAIN_RECIPE)
    backbone_config = backbone_arguments(recipe.backbone)
    decoder_config = {
        **recipe.decoder.to_dict(),
        "vocabulary_size": recipe.tokenizer.vocabulary_size,
    }
    batch_size = recipe.training.batch_size
    keras.utils.set_random_seed(0)
    pretrainer = keras_aimv2.AIMV2Pretrainer(
        keras_aimv2.AIMV2Backbone(**backbone_config), **decoder_config
    )
    if variant == "torch:compiled":
        pretrainer.compile(jit_compile=True)
    batch = synthetic_batch(backbone_config, decoder_config, batch_size)
    seconds, _ = median_seconds(
        lambda: keras.ops.convert_to_numpy(
            pretrainer.train_on_batch(batch, return_dict=True)["loss"]
        ),
        repeats,
        warmup,
    )
    return {
        "workload": "main-job recipe",
        "variant": variant,
        "step_ms": round(1000 * seconds, 1),
        "samples_per_s": round(batch_size / seconds, 1),
    }


def worker_main(args):
    # Before JAX starts: its XLA:CPU tuning on a CPU host, as `aimv2
    # pretrain` makes it (keras_aimv2/xla_cpu.py).
    from keras_aimv2 import xla_cpu

    xla_cpu.configure()

    with tempfile.TemporaryDirectory() as scratch:
        if args.worker == "reference":
            result = run_reference(args.workload, args.repeats, args.scratch)
        elif args.worker == "pipeline":
            result = run_pipeline(
                args.pipeline_batches, args.pipeline_examples, scratch
            )
        elif args.worker == "recipe":
            result = recipe_consumption(args.variant, args.repeats, args.warmup)
        else:
            result = run_backend(
                args.workload,
                args.variant,
                args.repeats,
                args.warmup,
                args.reference_weights,
                args.steps_per_repeat,
            )
    print("RESULT " + json.dumps(result), flush=True)


# --- The orchestrator. --------------------------------------------------------


def spawn(worker, variant="", **options):
    """Run one worker process; its result dict, or an `"error"` entry."""
    backend = variant.split(":")[0] or "torch"
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    command = [sys.executable, __file__, "--worker", worker]
    if variant:
        command += ["--variant", variant]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    label = " ".join([worker, variant, options.get("workload", "")]).strip()
    print(f"[benchmark] {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    process = subprocess.run(
        command, env=environment, capture_output=True, text=True
    )
    print(
        f"[benchmark] {label}: {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (process.stderr or process.stdout).strip().splitlines()[-5:]
    return {
        "workload": options.get("workload"),
        "variant": variant or worker,
        "error": " | ".join(tail),
    }


def transformers_latencies(results):
    """`{workload: encoder ms}` of transformers' reference runs."""
    return {
        r["workload"]: r["encoder_ms"]
        for r in results
        if r.get("variant") == "transformers"
    }


def check_at_least(parser, args, minimum, *names):
    """Exit with a usage error naming any option (if given) below `minimum`."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(
                f"--{name.replace('_', '-')} must be at least {minimum}; "
                f"got {value}"
            )


def write_json(data, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as file:
        json.dump(data, file, indent=2)


def summarize(results):
    """Add the machine peak, MFU and inference ratios; return the peak."""
    peak = max(
        (r["matmul_gflops"] for r in results if "matmul_gflops" in r),
        default=None,
    )
    references = transformers_latencies(results)
    for r in results:
        if peak and "train_gflops_per_s" in r:
            r["mfu"] = round(r["train_gflops_per_s"] / peak, 3)
        reference = references.get(r.get("workload"))
        if reference and "encoder_ms" in r and r["variant"] != "transformers":
            r["encoder_speedup_vs_transformers"] = round(
                reference / r["encoder_ms"], 2
            )
    return peak


def table(results, peak):
    """The results as a Markdown table."""

    def cell(value, form="{}"):
        return "" if value is None else form.format(value)

    lines = [
        f"Machine float32 matmul peak: {peak} GFLOP/s "
        f"({MATMUL_SIZE}^3, best backend).",
        "",
        "| workload | backend | step ms | samples/s | GFLOP/step | "
        "% of peak | peak RSS GB | encoder ms | transformers ms | "
        "speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    references = transformers_latencies(results)
    for r in results:
        if (
            r.get("variant") in ("transformers", "pipeline")
            or r.get("workload") == "main-job recipe"
        ):
            continue
        if "error" in r:
            lines.append(
                f"| {r['workload']} | {r['variant']} | error: "
                f"{r['error'][:120]} |"
            )
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    r["workload"],
                    r["variant"],
                    cell(r.get("step_ms")),
                    cell(r.get("samples_per_s")),
                    cell(r.get("train_gflops_per_step")),
                    cell(r.get("mfu"), "{:.1%}"),
                    cell(r.get("peak_rss_gb")),
                    cell(r.get("encoder_ms")),
                    cell(references.get(r["workload"])),
                    cell(r.get("encoder_speedup_vs_transformers"), "{}x"),
                ]
            )
            + " |"
        )
    pipeline = [r for r in results if r.get("variant") == "pipeline"]
    consumers = [
        r
        for r in results
        if "samples_per_s" in r
        and (r["workload"] in ("tiny", "main-job recipe"))
    ]
    if pipeline and "images_per_s" in pipeline[0]:
        rate = pipeline[0]["images_per_s"]
        lines += ["", f"Input pipeline (main-job recipe): {rate} images/s."]
        for r in consumers:
            lines.append(
                f"- {r['workload']} on {r['variant']} consumes "
                f"{r['samples_per_s']} images/s: pipeline "
                f"{rate / r['samples_per_s']:.1f}x."
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--workloads", nargs="+", choices=tuple(WORKLOADS), default=None
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=VARIANTS + REMAT_VARIANTS,
        default=None,
        help="Backends (variants) to run; default: all for each workload.",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--steps-per-repeat",
        type=int,
        default=None,
        help="Training steps timed together; default: 10 for tiny, else 1.",
    )
    parser.add_argument("--pipeline-batches", type=int, default=40)
    parser.add_argument(
        "--pipeline-examples",
        type=int,
        default=2048,
        help="Scenes written for the input pipeline's measurement.",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="Skip transformers' encoder and the inference comparison.",
    )
    parser.add_argument(
        "--no-pipeline",
        action="store_true",
        help="Skip the input pipeline and the main-job recipe's steps.",
    )
    parser.add_argument("--output", default="runs/benchmark.json")
    # Internal: the worker processes.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--reference-weights", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_at_least(
        parser,
        args,
        1,
        "repeats",
        "pipeline_batches",
        "pipeline_examples",
        "steps_per_repeat",
    )
    check_at_least(parser, args, 0, "warmup")
    if args.worker:
        worker_main(args)
        return

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for workload in args.workloads or tuple(WORKLOADS):
            weights = None
            if not args.no_reference:
                reference = spawn(
                    "reference",
                    workload=workload,
                    repeats=args.repeats,
                    scratch=scratch,
                )
                results.append(reference)
                weights = reference.get("weights")
            variants = args.backends or DEFAULT_VARIANTS[workload]
            for variant in variants:
                options = {
                    "workload": workload,
                    "repeats": args.repeats,
                    "warmup": args.warmup,
                }
                if weights:
                    options["reference_weights"] = weights
                if args.steps_per_repeat:
                    options["steps_per_repeat"] = args.steps_per_repeat
                results.append(spawn("backend", variant, **options))
        if not args.no_pipeline:
            results.append(
                spawn(
                    "pipeline",
                    pipeline_batches=args.pipeline_batches,
                    pipeline_examples=args.pipeline_examples,
                )
            )
            consumers = [v for v in args.backends or VARIANTS if v in VARIANTS]
            for variant in consumers:
                results.append(
                    spawn(
                        "recipe",
                        variant,
                        repeats=args.repeats,
                        warmup=args.warmup,
                    )
                )
    peak = summarize(results)
    report = table(results, peak)
    print(report)
    if args.output:
        write_json(
            {"matmul_peak_gflops": peak, "results": results}, args.output
        )
        print(f"\nWrote {args.output}", file=sys.stderr)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
