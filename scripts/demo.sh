#!/usr/bin/env bash
# demo.sh - set up (if needed) and start Voxa with the demo profile.
#
#   bash scripts/demo.sh [voxa serve options...]
#
# Runs from the repository root, so the default data folder is <repo>/voxa-data;
# on first start of an empty data folder the server loads the demo studies itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/setup.sh" || { echo "[demo] ERROR: scripts/setup.sh failed" >&2; exit 1; }

echo "[demo] starting: .venv/bin/voxa serve --profile demo $*" >&2
exec "$ROOT/.venv/bin/voxa" serve --profile demo "$@"
