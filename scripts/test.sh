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

run_pytest() {
    echo "[test] .venv/bin/python -m pytest $*" >&2
    set +e
    "$ROOT/.venv/bin/python" -m pytest -p no:cacheprovider "$@"
    local rc=$?
    set -e
    case $rc in
        0) echo "[test] OK: all tests passed" >&2 ;;
        5) echo "[test] FAILED: pytest collected no tests (exit code 5); check the test paths and selection" >&2 ;;
        *) echo "[test] FAILED: pytest exit code $rc" >&2 ;;
    esac
    return $rc
}

if [ $# -gt 0 ]; then
    run_pytest --junitxml "$ROOT/test-artifacts/junit.xml" "$@"
    exit $?
fi

# Static checks first: they take seconds and name the line.
echo "[test] ruff check src tests bench; mypy" >&2
"$ROOT/.venv/bin/ruff" check src tests bench || { echo "[test] FAILED: ruff" >&2; exit 1; }
"$ROOT/.venv/bin/mypy" || { echo "[test] FAILED: mypy" >&2; exit 1; }

# The whole suite (archive tests run on SQLite and PostgreSQL by parametrization) ...
run_pytest --junitxml "$ROOT/test-artifacts/junit.xml" || exit $?
# ... then the server-level tests again with PostgreSQL as the index of every test server.
echo "[test] second pass: DIMSE, HTTP, access control and DCMTK tests with a PostgreSQL index" >&2
VOXA_TEST_DATABASE=postgresql run_pytest --junitxml "$ROOT/test-artifacts/junit-postgresql.xml" \
    tests/dimse tests/web tests/interop/test_dcmtk.py tests/security/test_http_access.py \
    tests/security/test_http_security.py --ignore=tests/web/test_openapi_fuzz.py
