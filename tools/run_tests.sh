#!/usr/bin/env bash
# Sets up (or reuses) .venv and runs the test suite: bash tools/run_tests.sh [pytest args]
# (e.g. -k NAME, or test paths to run those alone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
# Two pytest-xdist workers, a file each at a time (module fixtures are built
# once), in the order of tests/conftest.py (the tool runs' files, the
# longest, first; xdist would order them by their number of tests): on a
# 2-core machine 11 minutes where one process took 19 (much of the suite is
# single-threaded: Triton's interpreter, ONNX export, tool start-up).
# TEST_WORKERS=0 runs in this process; a later -n or --dist wins.
# Tests named by path (tests/test_x.py, tests/test_x.py::test_y) run alone;
# otherwise all of tests/.
WHERE=(tests)
for arg in "$@"; do
  [[ "$arg" != -* && -e "${arg%%::*}" ]] && WHERE=()
done
exec "$ROOT/.venv/bin/python" -m pytest "${WHERE[@]}" -n "${TEST_WORKERS:-2}" \
  --dist loadfile --no-loadscope-reorder "$@"
