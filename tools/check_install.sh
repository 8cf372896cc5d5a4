#!/usr/bin/env bash
# Install keras-aimv2 the way a user does and use it from an empty directory.
#
# Builds the wheel, then for each backend extra creates a fresh virtual
# environment outside the repository, installs the wheel with only that
# extra (torch at a release other than the lock's; no jax beside it, and no
# torch beside jax) and, from an empty temporary directory, runs
# `aimv2 info`, `aimv2 recipes`, a short `aimv2 pretrain tiny_scenes_cpu`,
# `aimv2 convert` on a small checkpoint written here, and the README's
# Python example. Prints the time and size of each install.
#
#   bash tools/check_install.sh            # torch, then jax
#   EXTRAS="jax" bash tools/check_install.sh
#
# TORCH_VERSION (default 2.14.1, the newest release this machine's package
# index serves for Python 3.11) picks the torch of the [torch] install.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
torch_version=${TORCH_VERSION:-2.14.1}
work=$(mktemp -d "${TMPDIR:-/tmp}/aimv2-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "=== building the wheel"
# From a copy of the files git knows (committed or not, not ignored), so that
# nothing left in the checkout (build/, caches) slips into the wheel.
mkdir "$work/src"
(
    cd "$repo"
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' file; do
            if [ -e "$file" ]; then printf '%s\0' "$file"; fi
        done | xargs -0 cp --parents -t "$work/src"
)
"$repo/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
    "$work/src" -w "$work/dist"
wheel=$(ls "$work"/dist/keras_aimv2-*.whl)
echo "$(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"

# A checkpoint in Apple's layout (ml-aim's key names), random weights: width
# 64, 2 blocks, patch 14, 2x2 patches.
write_checkpoint() {
    "$1" - "$2" <<'EOF'
import sys

import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(0)
width, hidden, patch, blocks = 64, 128, 14, 2


def tensor(*shape):
    return (0.02 * rng.standard_normal(shape)).astype("float32")


weights = {
    "preprocessor.patchifier.proj.weight": tensor(width, 3, patch, patch),
    "preprocessor.patchifier.proj.bias": tensor(width),
    "preprocessor.patchifier.norm.weight": 1 + tensor(width),
    "preprocessor.pos_embed": tensor(1, 4, width),
    "trunk.post_trunk_norm.weight": 1 + tensor(width),
}
for i in range(blocks):
    block = f"trunk.blocks.{i}."
    weights[block + "norm_1.weight"] = 1 + tensor(width)
    weights[block + "attn.qkv.weight"] = tensor(3 * width, width)
    weights[block + "attn.proj.weight"] = tensor(width, width)
    weights[block + "norm_2.weight"] = 1 + tensor(width)
    weights[block + "mlp.fc1.weight"] = tensor(hidden, width)
    weights[block + "mlp.fc3.weight"] = tensor(hidden, width)
    weights[block + "mlp.fc2.weight"] = tensor(width, hidden)
save_file(weights, sys.argv[1])
EOF
}

summary=()
check_extra() {
    local extra=$1 backend absent pins
    case $extra in
        torch) backend=torch absent=jax pins="torch==$torch_version" ;;
        jax) backend=jax absent=torch pins="" ;;
        *) echo "unknown extra: $extra" >&2; return 2 ;;
    esac
    local env="$work/env-$extra" use="$work/use-$extra"
    echo "=== keras-aimv2[$extra] in a new environment ($env)"
    "$python" -m venv "$env"
    local start=$(date +%s)
    # shellcheck disable=SC2086
    if ! "$env/bin/python" -m pip install -q --disable-pip-version-check \
        "$wheel[$extra]" $pins >"$work/pip-$extra.log" 2>&1; then
        tail -30 "$work/pip-$extra.log" >&2
        return 1
    fi
    local seconds=$(($(date +%s) - start))
    local size=$(du -sm "$env" | cut -f1)
    "$env/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
        grep -iE "^(keras|keras-hub|jax|jaxlib|torch|tensorflow) " || true
    if "$env/bin/python" -c "import $absent" 2>/dev/null; then
        echo "$absent is installed beside keras-aimv2[$extra]" >&2
        return 1
    fi
    mkdir "$use"
    (
        cd "$use"
        export KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=3
        set -x
        "$env/bin/aimv2" info
        "$env/bin/aimv2" recipes
        "$env/bin/aimv2" pretrain tiny_scenes_cpu --output-dir run --set \
            data.train_examples=64 data.eval_examples=16 \
            training.batch_size=16 training.eval_batch_size=16 \
            training.steps=4 training.steps_per_epoch=2 \
            training.warmup_steps=1 tokenizer.vocabulary_size=60
        test -f run/preset/backbone/config.json
        test -f run/pictures/reconstructions.png
        write_checkpoint "$env/bin/python" apple.safetensors
        "$env/bin/aimv2" convert apple.safetensors converted --num-heads 2
        "$env/bin/python" -c "
import keras_hub, numpy as np
import keras_aimv2
backbone = keras_hub.models.Backbone.from_preset('converted')
features = backbone(np.zeros((1, 28, 28, 3), 'float32'))
assert tuple(features.shape) == (1, 4, 64), features.shape
print('converted preset loads:', type(backbone).__name__, features.shape)"
        "$env/bin/python" - "$repo/README.md" <<'EOF'
import re
import sys

with open(sys.argv[1]) as file:
    example = re.findall(r"```python\n(.*?)```", file.read(), re.DOTALL)[0]
exec(compile(example, "README.md", "exec"), {})
print("the README's Python example ran")
EOF
    )
    summary+=("keras-aimv2[$extra] $pins: install ${seconds} s, ${size} MB")
    rm -rf "$env"
}

for extra in ${EXTRAS:-torch jax}; do
    check_extra "$extra"
done
echo "=== clean installs"
printf '%s\n' "${summary[@]}"
