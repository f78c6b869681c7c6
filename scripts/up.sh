#!/usr/bin/env bash
# Install (if needed) and run FlowForge: `scripts/up.sh [flowforge up options...]`.
# Installs the runtime only (dev extras already in .venv are kept), then hands over to
# `flowforge up` in the caller's working directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/bootstrap.sh" --runtime-only
exec "$ROOT/.venv/bin/flowforge" up "$@"
