#!/usr/bin/env bash
# Install everything and run the whole test suite: `scripts/test.sh [pytest args...]`.
#   1. system packages (scripts/system-deps.sh), 2. .venv with dev extras (bootstrap.sh),
#   3. ruff, 4. mypy (config in pyproject.toml), 5. pytest -q -ra over tests/, in
#      FLOWFORGE_TEST_WORKERS processes (default 2, pytest-xdist; 0: one process), each taking
#      a whole test file at a time, since a file's fixtures (a stack, a server) are per file.
# All three checks run even if an earlier one fails; the exit status is non-zero if any
# failed. pytest's "no tests collected" (exit 5) counts as a failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/system-deps.sh
bash scripts/bootstrap.sh

failed=()

echo "== ruff check ."
.venv/bin/ruff check . || failed+=(ruff)

echo "== mypy"
.venv/bin/mypy || failed+=(mypy)

workers=${FLOWFORGE_TEST_WORKERS:-2}
echo "== pytest -q -ra -n $workers --dist loadfile --durations=25 $*"
rc=0
.venv/bin/pytest -q -ra -n "$workers" --dist loadfile --durations=25 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
  failed+=("pytest (no tests collected)")
elif [ "$rc" -ne 0 ]; then
  failed+=("pytest (exit $rc)")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test.sh: all checks passed"
