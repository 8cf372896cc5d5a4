#!/usr/bin/env bash
# Run the whole test suite once per Keras backend, each in its own process.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k prefix`.
# BACKENDS="jax torch" restricts the backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
    echo "=== KERAS_BACKEND=$backend"
    start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest tests "$@" || status=1
    echo "=== KERAS_BACKEND=$backend finished in $(($(date +%s) - start)) s"
done
exit $status
