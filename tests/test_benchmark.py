"""The benchmark tool, end to end on the tiny workload of this backend."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "benchmark.py")


def run_tool(*arguments):
    return subprocess.run(
        [sys.executable, TOOL, *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("benchmark") / "benchmark.json"
    process = run_tool(
        "--workloads",
        "tiny",
        "--backends",
        keras.config.backend(),
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--steps-per-repeat",
        "1",
        "--pipeline-batches",
        "2",
        "--pipeline-examples",
        "256",
        "--dtype-policy",
        "float32",
        "mixed_bfloat16",
        "--output",
        str(output),
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(output) as file:
        return json.load(file), process.stdout


def rows_of(data, variant, dtype_policy="float32"):
    return [
        r
        for r in data["results"]
        if r.get("workload") == "tiny"
        and r["variant"] == variant
        and r["dtype_policy"] == dtype_policy
    ]


def test_training_row(report):
    data, _ = report
    (row,) = rows_of(data, keras.config.backend())
    assert row["step_ms"] > 0
    assert row["train_gflops_per_step"] == pytest.approx(36.37, abs=0.01)
    # Model FLOPs utilisation against the machine's measured peak.
    assert row["mfu"] == pytest.approx(
        row["train_gflops_per_s"] / data["matmul_peak_gflops"], abs=1e-3
    )
    assert 0 < row["mfu"] < 1.5
    assert row["peak_rss_gb"] > row["rss_before_model_gb"] > 0


def test_inference_is_compared_with_transformers(report):
    data, stdout = report
    reference = rows_of(data, "transformers")
    assert reference and reference[0]["encoder_ms"] > 0
    (row,) = rows_of(data, keras.config.backend())
    # The speed-up is stored with two decimals.
    assert row["encoder_speedup_vs_transformers"] == pytest.approx(
        reference[0]["encoder_ms"] / row["encoder_ms"], rel=0.01, abs=0.005
    )
    assert "| tiny | float32 | " + keras.config.backend() + " |" in stdout


def test_bfloat16_rows_use_the_bfloat16_peak(report):
    data, stdout = report
    assert data["matmul_bf16_peak_gflops"] > 0
    (row,) = rows_of(data, keras.config.backend(), "mixed_bfloat16")
    (reference,) = rows_of(data, "transformers", "mixed_bfloat16")
    assert row["train_gflops_per_step"] == pytest.approx(36.37, abs=0.01)
    assert row["mfu"] == pytest.approx(
        row["train_gflops_per_s"] / data["matmul_bf16_peak_gflops"], abs=1e-3
    )
    assert row["encoder_speedup_vs_transformers"] == pytest.approx(
        reference["encoder_ms"] / row["encoder_ms"], rel=0.01, abs=0.005
    )
    assert "| tiny | mixed_bfloat16 | " + keras.config.backend() in stdout
    assert "bfloat16 " + str(data["matmul_bf16_peak_gflops"]) in stdout


def test_pipeline_beside_consumption(report):
    data, stdout = report
    (pipeline,) = [r for r in data["results"] if r["variant"] == "pipeline"]
    assert pipeline["images_per_s"] > 0
    assert "main-job recipe on " + keras.config.backend() in stdout


def test_bad_arguments_are_named():
    process = run_tool("--repeats", "0")
    assert process.returncode == 2
    assert "--repeats must be at least 1; got 0" in process.stderr


def test_official_trainer_needs_its_source():
    process = run_tool("--backends", "official", "jax")
    assert process.returncode == 2
    assert "--backends official needs --official-source" in process.stderr
    process = run_tool("--dtype-policy", "float16")
    assert process.returncode == 2
    assert "invalid choice: 'float16'" in process.stderr


def test_summary_compares_with_the_official_trainer():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import benchmark
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))

    def row(variant, dtype_policy, step_ms, **more):
        return {
            "workload": "small",
            "variant": variant,
            "dtype_policy": dtype_policy,
            "step_ms": step_ms,
            "train_gflops_per_s": 473.2 / step_ms * 1000,
            **more,
        }

    results = [
        row("official", "float32", 3000.0, matmul_gflops=200.0),
        row("jax", "float32", 2500.0, matmul_gflops=210.0),
        row("official", "mixed_bfloat16", 2000.0, matmul_bf16_gflops=400.0),
        row("torch", "mixed_bfloat16", 1000.0, matmul_bf16_gflops=380.0),
    ]
    peaks = benchmark.summarize(results)
    assert peaks == {"float32": 210.0, "mixed_bfloat16": 400.0}
    official, jax_row, official_bf16, torch_row = results
    assert official["speed_vs_official_eager"] == 1.0
    assert jax_row["speed_vs_official_eager"] == 1.2
    assert torch_row["speed_vs_official_eager"] == 2.0
    # Each precision against its own peak.
    assert jax_row["mfu"] == pytest.approx(473.2 / 2.5 / 210, abs=1e-3)
    assert torch_row["mfu"] == pytest.approx(473.2 / 400, abs=1e-3)
    report = benchmark.table(results, peaks)
    assert "| small | mixed_bfloat16 | torch | 1000.0 | 2.0x |" in report


def run_gpu_script(output_dir, **settings):
    """`tools/benchmark_gpu.sh` with this interpreter and `settings`."""
    return subprocess.run(
        [
            "bash",
            os.path.join(ROOT, "tools", "benchmark_gpu.sh"),
            str(output_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable, **settings},
    )


def test_accelerator_script_runs_in_bfloat16_on_cpu(tmp_path):
    backend = keras.config.backend()
    process = run_gpu_script(
        tmp_path,
        BACKENDS=backend,
        WORKLOAD="tiny",
        MIN_BATCH="2",
        MAX_BATCH="4",
        REPEATS="1",
        PEAK_TFLOPS="0.001",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(tmp_path / f"gpu_{backend}.json") as file:
        result = json.load(file)
    assert result["backend"] == backend
    assert result["dtype_policy"] == "mixed_bfloat16"
    assert result["batch_size"] == 4  # both tried batches fit on a CPU
    assert result["mfu"] == pytest.approx(
        result["model_gflops_per_step"] / result["step_ms"] / 0.001,
        rel=0.02,
    )
    assert np.isfinite(result["loss"])
    summary = process.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"[gpu] {backend}: batch 4, ")
    assert f"MFU {result['mfu']:.1%}" in summary


def test_accelerator_script_names_a_bad_backend(tmp_path):
    process = run_gpu_script(tmp_path, BACKENDS="mxnet")
    assert process.returncode == 2
    assert "BACKENDS names 'mxnet'" in process.stderr
