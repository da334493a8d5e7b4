#!/usr/bin/env bash
# Set up a Debian 12 machine for switchyard and build a release binary in build/.
#
#   scripts/setup.sh            install missing packages (when root), configure, build
#   scripts/setup.sh --deps     only install the packages (used by .ci/run)
#
# Packages are installed only when running as root and only if some are missing; nodejs/npm
# are skipped when a node >= 18 is already on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

# chromium: the headless dashboard test (tests/integration/dashboard.test.mjs); libjs-chart.js:
# the charting library scripts/gen_dashboard.mjs inlines into the page.
PACKAGES=(build-essential cmake pkg-config libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev
          libssl-dev libhiredis-dev libcmocka-dev redis-server
          chromium libjs-chart.js)

node_ok() {
    command -v node >/dev/null 2>&1 || return 1
    local major
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    [ "${major:-0}" -ge 18 ] && command -v npm >/dev/null 2>&1
}

install_deps() {
    local want=("${PACKAGES[@]}")
    node_ok || want+=(nodejs npm)
    local missing=()
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "setup: all packages present"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages: ${missing[*]}" >&2
        echo "setup: run as root (or: sudo apt-get install -y ${missing[*]})" >&2
        return 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_deps
if [ "${1:-}" = "--deps" ]; then
    exit 0
fi

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "setup: built $BUILD_DIR/switchyard"
