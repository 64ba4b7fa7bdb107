#!/usr/bin/env bash
# Benchmarks (not tests): builds bench/loadgen, bench/syncprobe, bench/syncfloor and the plugin
# from the current sources in build-bench/ (RelWithDebInfo, the build/ of others
# untouched), then runs bench/run.py with the given options (bench/run.py
# --help, docs/benchmarks.md): scenarios A to H, the report and its chart
# (gnuplot, when it is installed). Run it where Mosquitto 2.1 is: `scripts/bench [OPTIONS]`.
#   --no-build   do not build the plugin; use build/mosquitto_persist_lmdb.so
#                (or --lmdb-plugin PATH) as it is
set -euo pipefail
cd "$(dirname "$0")/.."

build_plugin=1
pass=()
for a in "$@"; do
	case "$a" in
		--no-build) build_plugin=0 ;;
		*) pass+=("$a") ;;
	esac
done

tool=build-bench/tool
mkdir -p "$tool"
if [ ! -x "$tool/loadgen" ] || [ bench/loadgen.c -nt "$tool/loadgen" ]; then
	# shellcheck disable=SC2046
	cc -std=c11 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
		$(pkg-config --cflags libmosquitto) bench/loadgen.c -o "$tool/loadgen" \
		$(pkg-config --libs libmosquitto) -pthread
fi
if [ ! -x "$tool/syncprobe" ] || [ bench/syncprobe.c -nt "$tool/syncprobe" ]; then
	cc -std=c11 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
		bench/syncprobe.c -o "$tool/syncprobe"
fi

if [ ! -f "$tool/syncfloor.so" ] || [ bench/syncfloor.c -nt "$tool/syncfloor.so" ]; then
	cc -std=c11 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -shared -fPIC \
		bench/syncfloor.c -o "$tool/syncfloor.so"
fi

if [ "$build_plugin" = 1 ]; then
	b=build-bench/cmake
	if cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERSIST_LMDB_TESTS=OFF \
			>"$tool/cmake.log" 2>&1 &&
		cmake --build "$b" -j"$(nproc)" --target mosquitto_persist_lmdb >"$tool/build.log" 2>&1; then
		export PERSIST_LMDB_BENCH_PLUGIN="$PWD/$b/mosquitto_persist_lmdb.so"
	else
		echo "bench: building the plugin failed (see $tool/cmake.log, $tool/build.log);" \
			"falling back to build/mosquitto_persist_lmdb.so if it exists" >&2
	fi
fi

exec python3 bench/run.py "${pass[@]}"
