#!/usr/bin/env bash
# Run the whole test suite once per Keras backend, each in its own process.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k prefix`.
# BACKENDS="jax torch" restricts the backends (and skips the data-validation
# tests, which run in the TFDV environment after the three backends
# otherwise, and the clean installs of tools/check_install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# TensorFlow Data Validation (TensorFlow 2.16) has its own environment, made
# once in keras-aimv2's cache (about 1.5 minutes, 2.9 GB) for
# tests/test_schema_gate.py and tests/tfdv. The test run keeps its own, in
# .cache/ (ignored by git), unless KERAS_AIMV2_CACHE names another folder.
export KERAS_AIMV2_CACHE=${KERAS_AIMV2_CACHE:-$PWD/.cache}
tfdv_python=$(.venv/bin/aimv2 validate --setup)
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
    echo "=== KERAS_BACKEND=$backend"
    start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest tests \
        --ignore=tests/tfdv "$@" || status=1
    echo "=== KERAS_BACKEND=$backend finished in $(($(date +%s) - start)) s"
done
if [ -z "${BACKENDS:-}" ]; then
    echo "=== TFDV data validation ($tfdv_python)"
    start=$(date +%s)
    "$tfdv_python" -m pytest tests/tfdv -q -p no:cacheprovider || status=1
    echo "=== TFDV data validation finished in $(($(date +%s) - start)) s"
    # The wheel installed as a user installs it, in fresh environments.
    echo "=== clean installs (tools/check_install.sh)"
    start=$(date +%s)
    bash tools/check_install.sh || status=1
    echo "=== clean installs finished in $(($(date +%s) - start)) s"
fi
exit $status
