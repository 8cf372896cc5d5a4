#!/usr/bin/env bash
# AIMv2-L pre-training at 224 px in bfloat16 on one accelerator, every
# backend in one run: for each backend, tools/benchmark_gpu.py finds the
# largest batch that fits (doubling from MIN_BATCH), times it and reports
# model FLOPs utilisation against the chip's dense bfloat16 peak.
#
#   tools/benchmark_gpu.sh [OUTPUT_DIR]          # default runs/gpu
#
# Settings (environment variables):
#   BACKENDS      backends to run, in order (default "jax torch tensorflow")
#   BUDGET_S      wall-clock limit of each backend, seconds (default 270)
#   WORKLOAD      large-224 (default) or tiny (seconds, on a CPU)
#   MIN_BATCH, MAX_BATCH   the batch search (default 64 and 512)
#   PEAK_TFLOPS   dense bf16 peak of the chip (default 989: H100/H200 SXM)
#   REPEATS       timed steps at the chosen batch (default 10)
#   PYTHON        interpreter (default .venv/bin/python, else python3)
#   WHEELS        a folder of wheels (keras, keras-hub, ...) to install
#                 first, for a machine that has the frameworks but not
#                 Keras and cannot reach a package index
#
# A backend whose framework does not import is reported and skipped; one
# that runs past BUDGET_S is stopped. With the defaults the three backends
# take at most 13.5 minutes. Each writes OUTPUT_DIR/gpu_BACKEND.json; the
# last lines printed are one summary line per backend.
set -u
cd "$(dirname "$0")/.."

output_dir=${1:-runs/gpu}
backends=${BACKENDS:-jax torch tensorflow}
budget=${BUDGET_S:-270}
workload=${WORKLOAD:-large-224}
min_batch=${MIN_BATCH:-64}
max_batch=${MAX_BATCH:-512}
peak=${PEAK_TFLOPS:-989}
repeats=${REPEATS:-10}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
mkdir -p "$output_dir"

if [ -n "${WHEELS:-}" ]; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --target "$site" \
    "$WHEELS"/*.whl || { echo "[gpu] installing $WHEELS failed" >&2; exit 1; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

declare -A module=([jax]=jax [torch]=torch [tensorflow]=tensorflow)
summary=()
status=0
for backend in $backends; do
  if [ -z "${module[$backend]:-}" ]; then
    echo "[gpu] BACKENDS names '$backend'; expected jax, torch or tensorflow" >&2
    exit 2
  fi
  if ! "$python" -c "import ${module[$backend]}, keras" 2>/dev/null; then
    summary+=("$backend: skipped (${module[$backend]} or keras does not import)")
    continue
  fi
  echo "[gpu] $backend: $workload, batch $min_batch..$max_batch, at most $budget s" >&2
  result="$output_dir/gpu_$backend.json"
  rm -f "$result"
  KERAS_BACKEND=$backend timeout "$budget" "$python" tools/benchmark_gpu.py \
    --workload "$workload" --min-batch "$min_batch" --max-batch "$max_batch" \
    --peak-tflops "$peak" --repeats "$repeats" \
    --search-seconds $((budget / 2)) --output "$result"
  code=$?
  if [ -f "$result" ]; then
    summary+=("$backend: $("$python" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print("batch %d, %s ms/step, %s TFLOP/s, MFU %.1f%%" % (r["batch_size"],
      r["step_ms"], r["model_tflops_per_s"], 100 * r["mfu"]))' "$result")")
  elif [ "$code" = 124 ]; then
    summary+=("$backend: stopped after $budget s")
    status=1
  else
    summary+=("$backend: failed (exit $code)")
    status=1
  fi
done

for line in "${summary[@]}"; do echo "[gpu] $line"; done
exit $status
