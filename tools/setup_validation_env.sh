#!/usr/bin/env bash
# Create (or refresh) .venv-tfdv, the separate environment of TensorFlow Data
# Validation (tools/validate_data.py, tests/tfdv), with the pinned packages
# of requirements-validation.txt. TFDV 1.16.1 needs TensorFlow 2.16, which
# cannot share .venv with keras-hub. Safe to run repeatedly: it reinstalls
# only when the pins change. About 1.5 minutes and 2.9 GB the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-tfdv
requirements=requirements-validation.txt
stamp=$venv/.requirements.sha256
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

python=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "The TFDV environment needs Python 3.11 (TFDV 1.16.1 has no wheels" \
        "for newer versions); run tools/setup_env.sh, which installs it." >&2
    exit 1
fi

echo "Setting up $venv with $($python --version) (about 1.5 minutes)..." >&2
rm -f "$stamp"
"$python" -m venv "$venv"
# Keep the environment out of git: the repository ignores only .venv/.
echo '*' > "$venv/.gitignore"
"$venv/bin/python" -m pip install -q --upgrade pip >&2
# pyarrow 10 must come as a wheel; building it from source fails.
"$venv/bin/python" -m pip install -q --only-binary=pyarrow -r "$requirements" >&2
echo "$wanted" > "$stamp"
