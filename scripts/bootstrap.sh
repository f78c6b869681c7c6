#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv in the repo root) and install FlowForge in it.
#
#   scripts/bootstrap.sh                 # editable install with the dev extras (tests, lint)
#   scripts/bootstrap.sh --runtime-only  # plain editable install; dev extras already in
#                                        # .venv are kept (reinstalled, not removed)
#
# Idempotent and fast when nothing changed: a stamp in .venv records the sha256 of
# pyproject.toml and what was installed; pip only runs when they differ.
# $PYTHON picks the interpreter that creates the venv (default: python3, must be 3.11).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

mode=dev
for arg in "$@"; do
  case "$arg" in
    --runtime-only) mode=runtime ;;
    -h | --help)
      sed -n '2,10p' "$0"
      exit 0
      ;;
    *)
      echo "bootstrap.sh: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

VENV="$ROOT/.venv"
STAMP="$VENV/.flowforge-bootstrap"
PYTHON=${PYTHON:-python3}

# Serialise concurrent runs (e.g. test.sh and up.sh at once) on a lock of the repo dir itself.
if command -v flock >/dev/null 2>&1; then
  exec 9<"$ROOT"
  flock 9
fi

# A venv whose interpreter is gone (e.g. pyenv version removed) is recreated.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "bootstrap.sh: $VENV is broken; recreating it" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "bootstrap.sh: $PYTHON is not Python 3.11 (found: $("$PYTHON" --version 2>&1 || true))" >&2
    exit 1
  fi
  "$PYTHON" -m venv "$VENV"
fi

hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
stamp_hash=""
stamp_mode=""
if [ -f "$STAMP" ]; then
  read -r stamp_hash stamp_mode <"$STAMP" || true
fi

if [ "$mode" = runtime ] && [ "$stamp_mode" = dev ]; then
  mode=dev # keep the dev extras this venv already has
fi
if [ "$stamp_hash" = "$hash" ] && [ "$stamp_mode" = "$mode" ]; then
  exit 0 # up to date
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
rm -f "$STAMP"
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "$mode" = dev ]; then
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
else
  "$VENV/bin/python" -m pip install -q -e .
fi
echo "$hash $mode" >"$STAMP"
