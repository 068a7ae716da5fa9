#!/usr/bin/env bash
# Build .venv-mergekit: a separate venv holding mergekit 0.1.5 for parity
# tests and the merge benchmark. Kept apart from .venv because mergekit pins
# its own versions. Idempotent: exits at once when the venv already works.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MERGEKIT_VENV:-$ROOT/.venv-mergekit}"
PY="${PYTHON:-python3}"

ready() {
    [ -x "$VENV/bin/mergekit-yaml" ] && "$VENV/bin/python" -c \
        "import importlib.metadata as m, torch; assert m.version('mergekit') == '0.1.5'" 2>/dev/null
}

if ready; then
    echo "mergekit venv ready: $VENV"
    exit 0
fi

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# The CPU wheel first (this machine's pip finds torch-2.13.0+cpu in its local
# wheel folder), or mergekit's dependency resolution pulls the CUDA build.
"$VENV/bin/pip" install --quiet torch==2.13.0
"$VENV/bin/pip" install --quiet mergekit==0.1.5
ready || { echo "mergekit venv at $VENV is not usable" >&2; exit 1; }
echo "mergekit venv ready: $VENV"
