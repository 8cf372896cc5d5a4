"""Benchmark AIMv2 pre-training and encoder inference on every backend.

    .venv/bin/python tools/benchmark.py
    .venv/bin/python tools/benchmark.py --workloads tiny small \\
        --backends jax torch --dtype-policy float32 mixed_bfloat16
    .venv/bin/python tools/benchmark.py --official-source ml-l3m

For each named workload, precision and backend, in a fresh process of its
own (the Keras backend is fixed at import, and a process's peak memory is
then the workload's): the float32 and bfloat16 matmul peaks of this
machine (a 2048^3 GEMM, each backend's fastest path), the median wall time
of a pre-training step after warm-up and compilation, its samples per
second, its model FLOPs (`keras_aimv2.flops`) as a fraction of the
machine's peak in the step's precision (the best GEMM rate any backend
reached in this run), the process's peak resident memory, and the latency
of the encoder's inference beside transformers' `Aimv2VisionModel` holding
the same weights (same batch, same threads, same precision). Then the
input pipeline's images per second beside what the tiny workload and the
main-job recipe consume.

`torch:compiled` is the torch backend with `jit_compile=True`
(`torch.compile`); plain `torch` is eager. `BACKEND:remat` trains with
`AIMV2Pretrainer(remat=True)` (every block recomputed in the backward
pass). `official` and `official:compiled` are Apple's own trainer
(apple/ml-l3m, eager and `torch.compile`) at the same sizes, timed by
`tools/official_trainer.py` from the checkout that `--official-source`
names; "vs official eager" is its step time over ours. `--dtype-policy
mixed_bfloat16` runs the workloads in bfloat16: Keras's `mixed_bfloat16`
policy for ours, `torch.autocast(bfloat16)` for the official trainer (as it
trains) and for transformers' encoder. Prints a table and writes JSON.
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
OFFICIAL_VARIANTS = ("official", "official:compiled")
DTYPE_POLICIES = ("float32", "mixed_bfloat16")
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


def matmul_peaks(repeats=10):
    """GFLOP/s of a 2048^3 matmul on this backend, float32 and bfloat16.

    Each precision takes the backend's fastest path: compiled (XLA) on JAX
    and TensorFlow for float32; for bfloat16, JAX's dot with float32
    accumulation (what XLA:CPU hands to its bf16 matrix kernels), and
    TensorFlow's eager (oneDNN) or compiled matmul, whichever is faster.

    Returns:
        `(float32_gflops, bfloat16_gflops)`.
    """
    import keras

    backend = keras.config.backend()
    size = MATMUL_SIZE
    flops = 2 * size**3

    def rate(matmul, dtype):
        a = keras.ops.cast(keras.random.normal((size, size), seed=1), dtype)
        b = keras.ops.cast(keras.random.normal((size, size), seed=2), dtype)

        def run():
            corner = keras.ops.cast(matmul(a, b)[0, 0], "float32")
            keras.ops.convert_to_numpy(corner)

        seconds, _ = median_seconds(run, repeats, warmup=3)
        return flops / seconds / 1e9

    if backend == "jax":
        import jax
        import jax.numpy as jnp

        float32 = rate(jax.jit(jnp.matmul), "float32")
        bfloat16 = rate(
            jax.jit(
                lambda a, b: jnp.matmul(
                    a, b, preferred_element_type=jnp.float32
                )
            ),
            "bfloat16",
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(tf.matmul, jit_compile=True)
        float32 = rate(compiled, "float32")
        bfloat16 = max(rate(compiled, "bfloat16"), rate(tf.matmul, "bfloat16"))
    else:
        import torch

        float32 = rate(torch.matmul, "float32")
        bfloat16 = rate(torch.matmul, "bfloat16")
    return round(float32, 1), round(bfloat16, 1)


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
    workload,
    variant,
    repeats,
    warmup,
    reference_weights,
    steps=None,
    dtype_policy="float32",
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
    float32_peak, bfloat16_peak = matmul_peaks()
    result = {
        "workload": workload,
        "variant": variant,
        "dtype_policy": dtype_policy,
        "batch_size": batch_size,
        "matmul_gflops": float32_peak,
        "matmul_bf16_gflops": bfloat16_peak,
    }
    rss_before = peak_rss_gb()

    keras.config.set_dtype_policy(dtype_policy)
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
            reference_weights,
            num_heads=backbone_config["num_heads"],
            dtype=dtype_policy,
        )
        backbone = converted.backbone
        # As `AIMV2Pretrainer.compile` chooses: XLA on JAX, and on
        # TensorFlow except for bfloat16 on a CPU (its oneDNN kernels
        # reach the bf16 units, XLA:CPU's do not); PyTorch eagerly.
        backbone.compile(
            jit_compile=variant == "jax"
            or (variant == "tensorflow" and dtype_policy == "float32")
        )
        images = batch["images"]

        def infer():
            keras.ops.convert_to_numpy(backbone.predict_on_batch(images))

        seconds, _ = median_seconds(infer, repeats, warmup=2)
        result["encoder_ms"] = round(1000 * seconds, 1)
        result["encoder_gflops_per_s"] = round(
            encoder_flops(backbone_config, batch_size) / seconds / 1e9, 1
        )
    return result


def run_reference(workload, repeats, output_dir, dtype_policy="float32"):
    """transformers' `Aimv2VisionModel` (random weights) at the workload.

    Under `mixed_bfloat16` it runs in `torch.autocast(bfloat16)`.
    """
    import contextlib

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
    path = os.path.join(output_dir, f"{workload}-{dtype_policy}.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    height, width, channels = backbone_config["image_shape"]
    pixels = torch.randn(batch_size, channels, height, width)

    precision = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if dtype_policy == "mixed_bfloat16"
        else contextlib.nullcontext()
    )

    def infer():
        with torch.inference_mode(), precision:
            model(pixel_values=pixels)

    seconds, _ = median_seconds(infer, repeats, warmup=2)
    return {
        "workload": workload,
        "variant": "transformers",
        "dtype_policy": dtype_policy,
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


def run_official_trainer(workload, variant, source, options):
    """Train-step figures of Apple's own trainer at a workload's sizes."""
    import official_trainer

    from keras_aimv2.flops import pretraining_flops

    backbone_config, decoder_config = workload_configs(workload)
    settings = WORKLOADS[workload]
    float32_peak, bfloat16_peak = matmul_peaks()
    result = official_trainer.run_official(
        source,
        backbone_config,
        decoder_config,
        settings["batch_size"],
        compiled=variant == "official:compiled",
        dtype_policy=options["dtype_policy"],
        repeats=options["repeats"],
        warmup=options["warmup"],
        steps=options["steps"] or settings["steps_per_repeat"],
    )
    flops = pretraining_flops(
        backbone_config, decoder_config, settings["batch_size"]
    )
    result.update(
        {
            "workload": workload,
            "matmul_gflops": float32_peak,
            "matmul_bf16_gflops": bfloat16_peak,
            "train_gflops_per_step": round(flops / 1e9, 2),
            "train_gflops_per_s": round(flops / result["step_ms"] / 1e6, 1),
        }
    )
    return result


def worker_main(args):
    # Before JAX starts: its XLA:CPU tuning on a CPU host, as `aimv2
    # pretrain` makes it (keras_aimv2/xla_cpu.py).
    from keras_aimv2 import xla_cpu

    xla_cpu.configure()
    (dtype_policy,) = args.dtype_policy

    with tempfile.TemporaryDirectory() as scratch:
        if args.worker == "reference":
            result = run_reference(
                args.workload, args.repeats, args.scratch, dtype_policy
            )
        elif args.worker == "pipeline":
            result = run_pipeline(
                args.pipeline_batches, args.pipeline_examples, scratch
            )
        elif args.worker == "recipe":
            result = recipe_consumption(args.variant, args.repeats, args.warmup)
        elif args.worker == "official":
            result = run_official_trainer(
                args.workload,
                args.variant,
                args.official_source,
                {
                    "dtype_policy": dtype_policy,
                    "repeats": args.repeats,
                    "warmup": args.warmup,
                    "steps": args.steps_per_repeat,
                },
            )
        else:
            result = run_backend(
                args.workload,
                args.variant,
                args.repeats,
                args.warmup,
                args.reference_weights,
                args.steps_per_repeat,
                dtype_policy,
            )
    print("RESULT " + json.dumps(result), flush=True)


# --- The orchestrator. --------------------------------------------------------


def spawn(worker, variant="", **options):
    """Run one worker process; its result dict, or an `"error"` entry."""
    backend = variant.split(":")[0]
    if backend in ("", "official"):
        backend = "torch"
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
    label = " ".join(
        [worker, variant, options.get("workload", ""), options["dtype_policy"]]
    ).strip()
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
        "dtype_policy": options["dtype_policy"],
        "error": " | ".join(tail),
    }


def transformers_latencies(results):
    """`{(workload, dtype policy): encoder ms}` of transformers' runs."""
    return {
        (r["workload"], r["dtype_policy"]): r["encoder_ms"]
        for r in results
        if r.get("variant") == "transformers" and "encoder_ms" in r
    }


def official_step_ms(results):
    """`{(workload, dtype policy): step ms}` of the official eager step."""
    return {
        (r["workload"], r["dtype_policy"]): r["step_ms"]
        for r in results
        if r.get("variant") == "official" and "step_ms" in r
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
    """Add MFU, inference and official-trainer ratios; return the peaks.

    A step's "% of peak" divides its model FLOP rate by the best matmul
    rate any backend reached in this run in the step's precision.

    Returns:
        `{dtype policy: GFLOP/s}` of the machine's matmul peaks.
    """
    peaks = {
        "float32": max(
            (r["matmul_gflops"] for r in results if "matmul_gflops" in r),
            default=None,
        ),
        "mixed_bfloat16": max(
            (
                r["matmul_bf16_gflops"]
                for r in results
                if "matmul_bf16_gflops" in r
            ),
            default=None,
        ),
    }
    references = transformers_latencies(results)
    officials = official_step_ms(results)
    for r in results:
        key = (r.get("workload"), r.get("dtype_policy"))
        peak = peaks.get(r.get("dtype_policy"))
        if peak and "train_gflops_per_s" in r:
            r["mfu"] = round(r["train_gflops_per_s"] / peak, 3)
        if key in officials and "step_ms" in r:
            r["speed_vs_official_eager"] = round(
                officials[key] / r["step_ms"], 2
            )
        reference = references.get(key)
        if reference and "encoder_ms" in r and r["variant"] != "transformers":
            r["encoder_speedup_vs_transformers"] = round(
                reference / r["encoder_ms"], 2
            )
    return peaks


def processor_name():
    """The processor's model name as `lscpu` gives it, or the platform's."""
    import platform

    try:
        output = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def table(results, peaks):
    """The results as a Markdown table."""

    def cell(value, form="{}"):
        return "" if value is None else form.format(value)

    lines = [
        f"Processor: {processor_name()}, {os.cpu_count()} cores. Matmul "
        f"peak ({MATMUL_SIZE}^3, best backend): float32 "
        f"{peaks['float32']} GFLOP/s, bfloat16 {peaks['mixed_bfloat16']} "
        "GFLOP/s.",
        "",
        "| workload | dtype | backend | step ms | vs official eager | "
        "samples/s | GFLOP/step | % of peak | peak RSS GB | encoder ms | "
        "transformers ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    references = transformers_latencies(results)
    for r in results:
        if (
            r.get("variant") in ("transformers", "pipeline")
            or r.get("workload") == "main-job recipe"
        ):
            continue
        dtype = r.get("dtype_policy")
        if "error" in r:
            lines.append(
                f"| {r['workload']} | {dtype} | {r['variant']} | error: "
                f"{r['error'][:120]} |"
            )
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    r["workload"],
                    dtype,
                    r["variant"],
                    cell(r.get("step_ms")),
                    cell(r.get("speed_vs_official_eager"), "{}x"),
                    cell(r.get("samples_per_s")),
                    cell(r.get("train_gflops_per_step")),
                    cell(r.get("mfu"), "{:.1%}"),
                    cell(r.get("peak_rss_gb")),
                    cell(r.get("encoder_ms")),
                    cell(references.get((r["workload"], dtype))),
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


def default_variants(workload, official_source):
    """The variants a workload runs when `--backends` is not given."""
    variants = DEFAULT_VARIANTS[workload]
    if official_source:
        # torch.compile of AIMv2-L takes minutes on 2 cores; eager only.
        official = OFFICIAL_VARIANTS[: 1 if workload == "large-224" else 2]
        variants = official + variants
    return variants


def run_workload(workload, dtype_policy, scratch, args):
    """The reference's and every variant's results at one workload."""
    results = []
    weights = None
    if not args.no_reference:
        reference = spawn(
            "reference",
            workload=workload,
            repeats=args.repeats,
            scratch=scratch,
            dtype_policy=dtype_policy,
        )
        results.append(reference)
        weights = reference.get("weights")
    variants = args.backends or default_variants(workload, args.official_source)
    for variant in variants:
        options = {
            "workload": workload,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "dtype_policy": dtype_policy,
        }
        if args.steps_per_repeat:
            options["steps_per_repeat"] = args.steps_per_repeat
        if variant in OFFICIAL_VARIANTS:
            options["official_source"] = args.official_source
            results.append(spawn("official", variant, **options))
            continue
        if weights:
            options["reference_weights"] = weights
        results.append(spawn("backend", variant, **options))
    return results


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
        choices=VARIANTS + REMAT_VARIANTS + OFFICIAL_VARIANTS,
        default=None,
        help="Backends (variants) to run; default: all for each workload "
        "(with the official trainer's when --official-source is given).",
    )
    parser.add_argument(
        "--dtype-policy",
        nargs="+",
        choices=DTYPE_POLICIES,
        default=["float32"],
        help="Precisions to run every workload in (Keras dtype policies); "
        "default: float32.",
    )
    parser.add_argument(
        "--official-source",
        default=None,
        help="A checkout of apple/ml-l3m (git clone "
        "https://github.com/apple/ml-l3m): adds Apple's own trainer, eager "
        "and compiled, beside ours.",
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
    official_asked = set(args.backends or ()) & set(OFFICIAL_VARIANTS)
    if official_asked and not args.official_source:
        parser.error(
            f"--backends {' '.join(sorted(official_asked))} needs "
            "--official-source, a checkout of apple/ml-l3m"
        )
    if args.worker:
        worker_main(args)
        return

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for dtype_policy in args.dtype_policy:
            for workload in args.workloads or tuple(WORKLOADS):
                results += run_workload(workload, dtype_policy, scratch, args)
        if not args.no_pipeline:
            results.append(
                spawn(
                    "pipeline",
                    pipeline_batches=args.pipeline_batches,
                    pipeline_examples=args.pipeline_examples,
                    dtype_policy="float32",
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
                        dtype_policy="float32",
                    )
                )
    peaks = summarize(results)
    report = table(results, peaks)
    print(report)
    if args.output:
        write_json(
            {
                "processor": processor_name(),
                "matmul_peak_gflops": peaks["float32"],
                "matmul_bf16_peak_gflops": peaks["mixed_bfloat16"],
                "results": results,
            },
            args.output,
        )
        print(f"\nWrote {args.output}", file=sys.stderr)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
