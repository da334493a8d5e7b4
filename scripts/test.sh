#!/usr/bin/env bash
# Run every test: unit (cmocka) and integration (node + the official openai client) under
# AddressSanitizer + UndefinedBehaviorSanitizer, with -Werror. Exit code = ctest's.
#
#   scripts/test.sh                  all tests
#   scripts/test.sh -L integration   extra arguments go to ctest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-asan}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
IT="$ROOT/tests/integration"

# Leaks fail the process (exit code), which is how tests catch them.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Thousands of concurrent streams need file descriptors (client + upstream side each).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cmake -S "$ROOT" -B "$BUILD_DIR" -DSY_SANITIZE=address,undefined -DSY_WERROR=ON
cmake --build "$BUILD_DIR" -j "$JOBS"

# node_modules from the lock file, when missing or older than the lock.
if command -v npm >/dev/null 2>&1; then
    stamp="$IT/node_modules/.package-lock.json"
    if [ ! -d "$IT/node_modules" ] || [ ! -f "$stamp" ] || [ "$IT/package-lock.json" -nt "$stamp" ]; then
        (cd "$IT" && npm ci --no-audit --no-fund --loglevel=error)
    fi
else
    echo "test.sh: npm not found: integration tests will not run (scripts/setup.sh installs it)" >&2
fi

# Re-configure so CTest registers the integration tests now that node_modules exists.
cmake -S "$ROOT" -B "$BUILD_DIR" >/dev/null

cd "$BUILD_DIR"
set +e
ctest --output-on-failure -j "${CTEST_JOBS:-1}" "$@"
rc=$?
set -e
exit $rc
