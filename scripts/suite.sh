#!/usr/bin/env bash
# The whole test suite, run where Mosquitto 2.1 is (natively or in the root):
# build, unit tests (cmocka via ctest), integration tests (real broker, paho).
# Options: --sanitize also builds with ASan/UBSan and runs the suite again.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
for a in "$@"; do
	case "$a" in
		--sanitize) sanitize=1 ;;
		*) echo "usage: scripts/suite.sh [--sanitize]" >&2; exit 2 ;;
	esac
done

run_suite() {
	local build=$1; shift
	mkdir -p "$build"
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERSIST_LMDB_TESTS=ON "$@" >"$build/cmake.log" 2>&1 ||
		{ cat "$build/cmake.log"; return 1; }
	cmake --build "$build" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
	[ "${PIPESTATUS[0]}" = 0 ] || return 1
	(cd "$build" && ctest --output-on-failure)
	PERSIST_LMDB_BUILD="$PWD/$build" python3 -m pytest -q -p no:cacheprovider test/integration
}

run_suite build
if [ "$sanitize" = 1 ]; then
	run_suite build-asan -DPERSIST_LMDB_SANITIZE=ON
fi
