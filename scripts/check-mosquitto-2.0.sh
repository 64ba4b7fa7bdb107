#!/usr/bin/env bash
# Loads the built plugin into a Mosquitto 2.0 broker and checks that it
# refuses to start, naming the version it needs; then checks that configuring
# the build against the 2.0 headers fails and says why. Runs on a Debian 12 host,
# whose own mosquitto is 2.0: the packages are downloaded and unpacked into
# a cache directory, nothing is installed. Elsewhere it says it was skipped.
set -euo pipefail
. "$(dirname "$0")/root.sh"

plugin=$PL_SRC/build/mosquitto_persist_lmdb.so
[ -f "$plugin" ] || pl_die "build the plugin first ($plugin is missing)"
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ] ||
	! apt-cache policy mosquitto 2>/dev/null | grep -E 'Candidate: 2\.0\.' >/dev/null; then
	echo "mosquitto 2.0 refusal check: skipped (this host's packages do not offer Mosquitto 2.0)"
	exit 0
fi

dir=$(pl_cache_dir)/mosquitto-2.0
if [ ! -x "$dir/root/usr/sbin/mosquitto" ]; then
	rm -rf "$dir" && mkdir -p "$dir/debs"
	(cd "$dir/debs" && apt-get download -q mosquitto mosquitto-dev libmosquitto-dev liblmdb0 \
		libcjson1 libwebsockets17 libev4 libuv1 libwrap0 libdlt2 >/dev/null 2>&1) ||
		{ echo "mosquitto 2.0 refusal check: skipped (cannot download the 2.0 packages)"; exit 0; }
	for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 32 /dev/urandom >"$work/key"
chmod 600 "$work/key"
# Mosquitto 2.0 knows no global_plugin; its plugin line loads the same file.
cat >"$work/mosquitto.conf" <<CONF
listener 0 127.0.0.1
user root
plugin $plugin
plugin_opt_key_file $work/key
persistence_location $work/data
CONF
libs=$dir/root/usr/lib/x86_64-linux-gnu:$dir/root/lib/x86_64-linux-gnu
rc=0
LD_LIBRARY_PATH=$libs timeout 10 "$dir/root/usr/sbin/mosquitto" -c "$work/mosquitto.conf" \
	>"$work/log" 2>&1 || rc=$?
version=$(grep -oE 'mosquitto version 2\.0\.[0-9]+' "$work/log" | head -n1 || true)
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ -n "$version" ] &&
	grep -q 'persist-lmdb: needs Mosquitto 2.1 or later' "$work/log"; then
	echo "mosquitto 2.0 refusal check: passed ($version refused to start: $(grep -m1 'persist-lmdb: needs' "$work/log" | sed 's/^[0-9]*: //'))"
else
	echo "mosquitto 2.0 refusal check: FAILED (exit $rc); broker log:"
	cat "$work/log"
	exit 1
fi

if ! command -v cmake >/dev/null 2>&1; then
	echo "mosquitto 2.0 headers check: skipped (no cmake on this host)"
	exit 0
fi
if cmake -S "$PL_SRC" -B "$work/build" -DMOSQUITTO_INCLUDE_DIR="$dir/root/usr/include" >"$work/cmake.log" 2>&1 ||
	! grep -q 'Found only Mosquitto 2.0 headers' "$work/cmake.log"; then
	echo "mosquitto 2.0 headers check: FAILED; cmake said:"
	cat "$work/cmake.log"
	exit 1
fi
echo "mosquitto 2.0 headers check: passed (configuring against them fails: $(grep -A1 'Found only' "$work/cmake.log" | tr -s ' \n' ' ' | cut -c1-120)...)"
