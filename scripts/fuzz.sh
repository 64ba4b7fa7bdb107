#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang in build-fuzz and runs each
# for SECONDS (default 15) over a temporary copy of its seed corpus.
#   scripts/root.sh scripts/fuzz.sh [SECONDS]
# Exits non-zero when a target finds a crash; the input that crashed is kept
# in build-fuzz/crashes/<target>/ and its log in build-fuzz/logs/<target>.log.
# PERSIST_LMDB_FUZZ_BUILD names another build directory (relative to the
# source tree), so that two runs at once do not overwrite each other's
# binaries and logs. See docs/fuzzing.md.
set -euo pipefail

secs=${1:-15}
case $secs in '' | *[!0-9]* | 0) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;; esac

src=$(cd "$(dirname "$0")/.." && pwd)
bdir=${PERSIST_LMDB_FUZZ_BUILD:-build-fuzz}
case $bdir in '' | /* | *..*) echo "fuzz.sh: PERSIST_LMDB_FUZZ_BUILD must be a directory inside the source tree" >&2; exit 2 ;; esac
bld=$src/$bdir
targets=(fuzz_record fuzz_open fuzz_options fuzz_topic fuzz_control fuzz_import)

command -v clang >/dev/null 2>&1 || {
	echo "fuzz.sh: clang not found; run it as scripts/root.sh scripts/fuzz.sh" >&2
	exit 1
}

mkdir -p "$bld"
# A build directory configured with another compiler is configured afresh.
if [ -f "$bld/CMakeCache.txt" ] && ! grep -q '^CMAKE_C_COMPILER:[A-Z]*=.*clang' "$bld/CMakeCache.txt"; then
	rm -rf "$bld/CMakeCache.txt" "$bld/CMakeFiles"
fi
if ! CC=clang cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DPERSIST_LMDB_FUZZ=ON -DPERSIST_LMDB_TESTS=OFF -DPERSIST_LMDB_SANITIZE=OFF \
	>"$bld/cmake.log" 2>&1; then
	cat "$bld/cmake.log" >&2
	echo "fuzz.sh: configuring $bdir failed" >&2
	exit 1
fi
if ! cmake --build "$bld" -j"$(nproc)" --target fuzz >"$bld/build.log" 2>&1; then
	cat "$bld/build.log" >&2
	echo "fuzz.sh: building the fuzz targets failed" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/plmdb-fuzz.XXXXXX")
# On exit, stop what is still running: the fuzzers (pids in $work/*.pid),
# then their runner subshells.
cleanup() {
	local f p
	for f in "$work"/*.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
	done
	for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$bld/logs"

# One target: fresh corpus copy, libFuzzer for $secs, crash inputs into
# $bdir/crashes/<target>/. Writes its exit status to $work/<target>.rc.
run_one() {
	local t=$1 corpus=$work/$1.corpus crashes=$bld/crashes/$1 dict=() rc=0
	mkdir -p "$corpus" "$crashes"
	cp -r "$src/fuzz/corpus/$t/." "$corpus/" 2>/dev/null || true
	[ -f "$src/fuzz/$t.dict" ] && dict=(-dict="$src/fuzz/$t.dict")
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1$symbolizer} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1$symbolizer} \
		"$bld/fuzz/$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
		-print_final_stats=1 -artifact_prefix="$crashes/" "${dict[@]}" "$corpus" \
		>"$bld/logs/$t.log" 2>&1 &
	echo $! >"$work/$t.pid"
	wait $! || rc=$?
	rm -f "$work/$t.pid"
	echo "$rc" >"$work/$t.rc"
}

# Stacks with function names: llvm-symbolizer if there is one, else addr2line.
symbolizer=
if ! command -v llvm-symbolizer >/dev/null 2>&1; then
	sym=$(ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | tail -n1 || true)
	[ -n "$sym" ] || sym=$(command -v addr2line || true)
	[ -n "$sym" ] && symbolizer=":allow_addr2line=1:external_symbolizer_path=$sym"
fi

# As many targets at a time as there are cores.
par=$(nproc)
for t in "${targets[@]}"; do
	while [ "$(jobs -rp | wc -l)" -ge "$par" ]; do wait -n || true; done
	run_one "$t" &
done
wait || true

failed=0
for t in "${targets[@]}"; do
	log=$bld/logs/$t.log
	rc=$(cat "$work/$t.rc" 2>/dev/null || echo missing)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
	if [ "$rc" = 0 ] && [ -n "$runs" ]; then
		echo "$t: $runs runs, no crash"
		continue
	fi
	failed=1
	artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
	echo "$t: FAILED (exit $rc${runs:+, $runs runs})${artifact:+, input: ${artifact#"$src"/}}"
	grep -E '^(==[0-9]+==|SUMMARY|.*check failed|.*runtime error|    #[0-9]+ )' "$log" | head -n 40 | sed 's/^/    /' >&2 || true
	echo "    full log: ${log#"$src"/}${artifact:+; reproduce: scripts/root.sh $bdir/fuzz/$t ${artifact#"$src"/}}" >&2
done
exit "$failed"
