#!/usr/bin/env bash
# The main job: pre-train the tiny AIMv2 recipe on built-in captioned scenes
# (about ten minutes on a 2-core CPU), writing presets, logs and pictures to
# runs/tiny_scenes_cpu/. Rerun it to resume after an interruption. Extra
# arguments go to `aimv2 pretrain`, e.g. `--set training.steps=100`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export KERAS_BACKEND=${KERAS_BACKEND:-jax} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec .venv/bin/aimv2 pretrain tiny_scenes_cpu "$@"
