#!/usr/bin/env bash
# test.sh - set up (if needed) and run the whole test suite against real peers.
#
#   bash scripts/test.sh [pytest options / test paths...]
#
# Sets VOXA_REQUIRE_POSTGRES=1 and VOXA_REQUIRE_INTEROP=1, so tests that need
# PostgreSQL, Orthanc, DCMTK or Redis fail (instead of being skipped) when one
# is missing. A JUnit report goes to test-artifacts/junit.xml.
# "No tests collected" (pytest exit code 5) counts as a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/setup.sh" || { echo "[test] ERROR: scripts/setup.sh failed" >&2; exit 1; }

export VOXA_REQUIRE_POSTGRES=1
export VOXA_REQUIRE_INTEROP=1
export PYTHONDONTWRITEBYTECODE=1
mkdir -p test-artifacts

echo "[test] .venv/bin/python -m pytest $*" >&2
set +e
"$ROOT/.venv/bin/python" -m pytest -p no:cacheprovider \
    --junitxml "$ROOT/test-artifacts/junit.xml" "$@"
rc=$?
set -e

case $rc in
    0) echo "[test] OK: all tests passed" >&2 ;;
    5) echo "[test] FAILED: pytest collected no tests (exit code 5); check the test paths and selection" >&2 ;;
    *) echo "[test] FAILED: pytest exit code $rc" >&2 ;;
esac
exit $rc
