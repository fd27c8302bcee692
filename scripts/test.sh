#!/usr/bin/env bash
# Install slimtvm with its test extra, set up aarch64 cross-compilation + qemu emulation (cached),
# and run the default test suite (everything not marked slow). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap_venv.sh test
HOST_PYTHON=.venv/bin/python bash scripts/setup_arm_emulation.sh >/tmp/slimtvm-arm-setup.log 2>&1 \
  || { tail -40 /tmp/slimtvm-arm-setup.log >&2; echo "aarch64 emulation set-up failed (log: /tmp/slimtvm-arm-setup.log)" >&2; exit 1; }
echo "aarch64 emulation ready: $(tail -1 /tmp/slimtvm-arm-setup.log)"
exec .venv/bin/python -m pytest -m "not slow" -q --durations=15 "$@"
