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
        "--output",
        str(output),
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(output) as file:
        return json.load(file), process.stdout


def test_training_row(report):
    data, _ = report
    (row,) = [
        r
        for r in data["results"]
        if r.get("workload") == "tiny"
        and r["variant"] == keras.config.backend()
    ]
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
    reference = [r for r in data["results"] if r["variant"] == "transformers"]
    assert reference and reference[0]["encoder_ms"] > 0
    (row,) = [
        r
        for r in data["results"]
        if r.get("workload") == "tiny"
        and r["variant"] == keras.config.backend()
    ]
    # The speed-up is stored with two decimals.
    assert row["encoder_speedup_vs_transformers"] == pytest.approx(
        reference[0]["encoder_ms"] / row["encoder_ms"], rel=0.01, abs=0.005
    )
    assert "| tiny | " + keras.config.backend() + " |" in stdout


def test_pipeline_beside_consumption(report):
    data, stdout = report
    (pipeline,) = [r for r in data["results"] if r["variant"] == "pipeline"]
    assert pipeline["images_per_s"] > 0
    assert "main-job recipe on " + keras.config.backend() in stdout


def test_bad_arguments_are_named():
    process = run_tool("--repeats", "0")
    assert process.returncode == 2
    assert "--repeats must be at least 1; got 0" in process.stderr


def test_accelerator_script_runs_in_bfloat16_on_cpu(tmp_path):
    output = tmp_path / "gpu.json"
    process = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "benchmark_gpu.py"),
            "--workload",
            "tiny",
            "--min-batch",
            "2",
            "--max-batch",
            "4",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--peak-tflops",
            "0.001",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(output) as file:
        result = json.load(file)
    assert result["backend"] == keras.config.backend()
    assert result["dtype_policy"] == "mixed_bfloat16"
    assert result["batch_size"] == 4  # both tried batches fit on a CPU
    assert result["mfu"] == pytest.approx(
        result["model_gflops_per_step"] / result["step_ms"] / 0.001,
        rel=0.02,
    )
    assert np.isfinite(result["loss"])
