#!/usr/bin/env bash
# Install slimtvm with its test extra, check the house rules (import-linter contracts, ruff lint and
# format), set up aarch64 cross-compilation + qemu emulation (cached), and run the default test
# suite (everything not marked slow) in two pytest-xdist workers that steal tests from each other
# at the end (a module fixture may then be built in both). SLIMTVM_TEST_WORKERS=1 runs it in one
# process. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap_venv.sh test
.venv/bin/lint-imports --no-cache || { echo "import-linter: an import breaks the architecture (see [tool.importlinter] in pyproject.toml, docs/architecture.md)" >&2; exit 1; }
.venv/bin/ruff check . || { echo "ruff: lint errors (fix with: .venv/bin/ruff check --fix .)" >&2; exit 1; }
.venv/bin/ruff format --check . || { echo "ruff: files not formatted (fix with: .venv/bin/ruff format .)" >&2; exit 1; }
HOST_PYTHON=.venv/bin/python bash scripts/setup_arm_emulation.sh >/tmp/slimtvm-arm-setup.log 2>&1 \
  || { tail -40 /tmp/slimtvm-arm-setup.log >&2; echo "aarch64 emulation set-up failed (log: /tmp/slimtvm-arm-setup.log)" >&2; exit 1; }
echo "aarch64 emulation ready: $(tail -1 /tmp/slimtvm-arm-setup.log)"
WORKERS="${SLIMTVM_TEST_WORKERS:-2}"
PARALLEL=()
[ "$WORKERS" -gt 1 ] && PARALLEL=(-n "$WORKERS" --dist worksteal)
exec .venv/bin/python -m pytest -m "not slow" -q --durations=15 "${PARALLEL[@]}" "$@"
