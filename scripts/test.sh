#!/usr/bin/env bash
# The CI suite: setup (packages, .venv, build), then the C++ unit tests and the Python oracle
# tests. Both suites always run; the exit status is non-zero if either failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

status=0

echo "==> test: C++ unit tests (ctest -L unit)"
ctest --test-dir build -L unit --output-on-failure -j2 || status=1

# pytest exits 5 when it collects nothing; that is not a failure while tests/python is empty.
# With no test files at all pytest is not started, so that its "no tests ran" line does not
# stand last in the log as if nothing had been tested.
if [[ -d tests/python ]] &&
   [[ -n "$(find tests/python -name 'test_*.py' -o -name '*_test.py' | head -n 1)" ]]; then
  echo "==> test: Python tests (pytest tests/python)"
  rc=0
  .venv/bin/python -m pytest -q tests/python || rc=$?
  case "$rc" in
    0) ;;
    5) echo "==> test: pytest collected no tests in tests/python" ;;
    *) status=1 ;;
  esac
else
  echo "==> test: no Python test files in tests/python; pytest skipped"
fi

if ((status != 0)); then
  echo "==> test: FAILED" >&2
fi
exit "$status"
