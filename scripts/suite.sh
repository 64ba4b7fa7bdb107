#!/usr/bin/env bash
# The whole test suite, run where Mosquitto 2.1 is (natively or in the root):
# a short fuzz run, build, unit tests (cmocka via ctest), integration tests
# (real broker, paho).
# Options:
#   --sanitize  also builds with ASan/UBSan and runs the whole suite again
#   --valgrind  also runs the broker integration tests that do not depend on
#               timing with the broker under valgrind memcheck (an invalid
#               access or a definite leak fails the test that stops it)
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
valgrind=0
for a in "$@"; do
	case "$a" in
		--sanitize) sanitize=1 ;;
		--valgrind) valgrind=1 ;;
		*) echo "usage: scripts/suite.sh [--sanitize] [--valgrind]" >&2; exit 2 ;;
	esac
done

# Under valgrind the broker is several times slower: tests built on will
# delays and session expiry of a few seconds would time out, so these run.
VALGRIND_TESTS="test_sessions.py test_retained.py test_sub_options.py test_control_api.py
	test_faults.py test_cli.py"

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

# A short bounded fuzz run of every target (docs/fuzzing.md for longer ones).
if command -v clang >/dev/null 2>&1; then
	scripts/fuzz.sh "${PERSIST_LMDB_FUZZ_SECONDS:-10}"
fi
run_suite build
if [ "$valgrind" = 1 ]; then
	(cd test/integration && PERSIST_LMDB_VALGRIND=1 PERSIST_LMDB_BUILD="$OLDPWD/build" \
		python3 -m pytest -q -p no:cacheprovider $VALGRIND_TESTS)
fi
if [ "$sanitize" = 1 ]; then
	run_suite build-asan -DPERSIST_LMDB_SANITIZE=ON
fi
