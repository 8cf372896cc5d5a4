#!/usr/bin/env bash
# Run the whole test suite once per Keras backend, each in its own process.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k prefix`.
# BACKENDS="jax torch" restricts the backends (and skips the data-validation
# tests, which run in .venv-tfdv after the three backends otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
bash tools/setup_validation_env.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
    echo "=== KERAS_BACKEND=$backend"
    start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest tests \
        --ignore=tests/tfdv "$@" || status=1
    echo "=== KERAS_BACKEND=$backend finished in $(($(date +%s) - start)) s"
done
# TensorFlow Data Validation runs in its own environment (TensorFlow 2.16).
if [ -z "${BACKENDS:-}" ]; then
    echo "=== TFDV data validation (.venv-tfdv)"
    start=$(date +%s)
    .venv-tfdv/bin/python -m pytest tests/tfdv -q -p no:cacheprovider || status=1
    echo "=== TFDV data validation finished in $(($(date +%s) - start)) s"
fi
exit $status
