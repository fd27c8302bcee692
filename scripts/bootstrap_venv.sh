#!/usr/bin/env bash
# bootstrap_venv.sh EXTRA — create ./.venv (if missing) and install slimtvm into it with the given
# extra ("bench" or "test"). Sourced by demo.sh and test.sh; prints nothing on success but pip's errors.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "slimtvm needs Python >= 3.10 (found $("$PYTHON" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${1:-test}]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import slimtvm, tvm, onnx; print('slimtvm', slimtvm.__version__, '| apache-tvm', tvm.__version__, '| onnx', onnx.__version__)"
