#!/usr/bin/env bash
# The whole test suite, run where Mosquitto 2.1 is (natively or in the root):
#   1. a short bounded run of every libFuzzer target;
#   2. the plain build and the ASan/UBSan build (PERSIST_LMDB_SANITIZE), each
#      with its unit tests (cmocka, via ctest) and the integration tests (real
#      broker, paho), the two suites side by side;
#   3. the broker integration tests that do not depend on timing, once more
#      with the broker under valgrind memcheck (an invalid access or a definite
#      leak in the plugin fails the test that stops the broker).
# Options:
#   --quick     only the plain build's suite (no fuzzing, sanitizers or valgrind)
# Environment: PERSIST_LMDB_FUZZ_SECONDS (per target, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for a in "$@"; do
	case "$a" in
		--quick) quick=1 ;;
		*) echo "usage: scripts/suite.sh [--quick]" >&2; exit 2 ;;
	esac
done

# Under valgrind the broker is many times slower: tests built on will delays
# and session expiry of a few seconds, or on traffic rates, would time out.
# Two halves of about the same length, run side by side (valgrind keeps a
# core busy; each test starts its own broker on its own port and directory).
VALGRIND_TESTS_A="test_sessions.py test_qos2_resume.py test_key_file.py"
VALGRIND_TESTS_B="test_retained.py test_sub_options.py test_control_api.py test_faults.py test_seq_property.py test_cli.py test_dedup.py"

build_dir() {
	local build=$1; shift
	mkdir -p "$build"
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERSIST_LMDB_TESTS=ON "$@" >"$build/cmake.log" 2>&1 ||
		{ cat "$build/cmake.log"; return 1; }
	cmake --build "$build" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
	[ "${PIPESTATUS[0]}" = 0 ]
}

# Unit tests: each cmocka summary, or everything when one fails. Then the
# integration tests with the build's plugin.
run_tests() {
	local build=$1 rc=0
	(cd "$build" && ctest -V >ctest.log 2>&1) || rc=1
	if [ "$rc" = 0 ]; then
		grep -E '^[0-9]+: \[(==========|  PASSED  )\]|tests passed' "$build/ctest.log"
	else
		cat "$build/ctest.log"
		return 1
	fi
	PERSIST_LMDB_BUILD="$PWD/$build" python3 -m pytest -q -p no:cacheprovider test/integration
}

if [ "$quick" = 1 ]; then
	build_dir build
	run_tests build
	exit
fi

if command -v clang >/dev/null 2>&1; then
	scripts/fuzz.sh "${PERSIST_LMDB_FUZZ_SECONDS:-10}"
fi

build_dir build
build_dir build-asan -DPERSIST_LMDB_SANITIZE=ON

# Side by side: most of the integration tests wait on the network, not the CPU.
mkdir -p build/logs
run_tests build >build/logs/plain.log 2>&1 & plain=$!
run_tests build-asan >build/logs/asan.log 2>&1 & asan=$!
status=0
wait "$plain" || status=1
echo "== plain build"; cat build/logs/plain.log
wait "$asan" || status=1
echo "== ASan/UBSan build"; cat build/logs/asan.log
[ "$status" = 0 ] || { echo "suite: a test failed (above)"; exit 1; }

valgrind_tests() {
	(cd test/integration && PERSIST_LMDB_VALGRIND=1 PERSIST_LMDB_BUILD="$OLDPWD/build" \
		python3 -m pytest -q -p no:cacheprovider "$@")
}
valgrind_tests $VALGRIND_TESTS_A >build/logs/valgrind-a.log 2>&1 & va=$!
valgrind_tests $VALGRIND_TESTS_B >build/logs/valgrind-b.log 2>&1 & vb=$!
wait "$va" || status=1
wait "$vb" || status=1
echo "== valgrind memcheck (plugin in the broker)"
cat build/logs/valgrind-a.log build/logs/valgrind-b.log
[ "$status" = 0 ] || { echo "suite: a test failed under valgrind (above)"; exit 1; }
