#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the
# pinned packages of requirements.txt, and the package itself in editable
# mode. Safe to run repeatedly: it reinstalls only when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "$candidate"
            return
        fi
    done
    if command -v apt-get >/dev/null 2>&1; then
        echo "Python 3.11 not found; installing it with apt-get." >&2
        apt-get update -qq >&2 && apt-get install -y -qq python3.11 python3.11-venv >&2
        echo python3.11
        return
    fi
    echo "keras-aimv2 needs Python 3.11, which was not found." >&2
    exit 1
}

# Fashion-MNIST, one of the built-in data sources, comes from Debian.
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's dataset-fashion-mnist (30 MB)..." >&2
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >&2
fi

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi
python=$(find_python)
echo "Setting up .venv with $($python --version) (about a minute)..." >&2
"$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -r requirements.txt >&2
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >&2
echo "$wanted" > "$stamp"
