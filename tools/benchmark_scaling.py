"""Step time of a recipe's model on one process and on several local ones.

Runs `tools/distributed_check.py` on synthetic batches of the recipe's
size: once in one process (strategy "none", all the threads), then in
`--processes` local processes (strategy "data_parallel", the threads
shared out), at the same global batch, and prints the median step time,
the samples per second and the speed-up. On one machine the processes
share its cores, so this measures the cost of the backend's collectives
and data split, not more compute.

    python tools/benchmark_scaling.py --backend jax
    python tools/benchmark_scaling.py --backend torch --recipe tiny_scenes_cpu
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np

CHECK = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "distributed_check.py"
)


def measure(backend, recipe, processes, steps, threads):
    """Global batch, and `{processes: median step seconds}` for 1 and N."""
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for count in (1, processes):
            output = os.path.join(directory, f"p{count}")
            command = [sys.executable, CHECK, "--backend", backend]
            command += ["--recipe", recipe, "--steps", str(steps)]
            command += ["--output", output]
            if count == 1:
                command += ["--strategies", "none", "--threads", str(threads)]
            else:
                command += ["--strategies", "data_parallel"]
                command += ["--processes", str(count)]
                command += ["--threads", str(max(threads // count, 1))]
            subprocess.run(command, check=True, capture_output=True)
            seconds = []
            for path in glob.glob(f"{output}.*.npz"):
                run = np.load(path)
                batch = int(run["global_batch"])
                # The first two steps compile and warm up.
                seconds.append(run["step_seconds"][2:])
            # A step ends when its slowest process ends.
            results[count] = float(np.median(np.max(seconds, axis=0)))
    return batch, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("jax", "torch"), default="jax")
    parser.add_argument("--recipe", default="tiny_scenes_cpu")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="In all."
    )
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error(f"--processes must be >= 2. Received: {args.processes}")
    if args.steps < 4:
        parser.error(f"--steps must be >= 4. Received: {args.steps}")
    batch, results = measure(
        args.backend, args.recipe, args.processes, args.steps, args.threads
    )
    print(f"{args.recipe} on {args.backend}, global batch {batch}")
    print("| processes | step ms | samples/s | speed-up |")
    print("|---|---|---|---|")
    for count, seconds in results.items():
        print(
            f"| {count} | {seconds * 1e3:.0f} | {batch / seconds:.1f} "
            f"| {results[1] / seconds:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
