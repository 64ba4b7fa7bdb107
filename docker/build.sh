#!/bin/sh
# The build stage of docker/Dockerfile, as a script the build root can run
# too (test/integration/test_packaging.py does):
#
#   docker/build.sh SRC BUILD DESTDIR [PREFIX]
#
# configures SRC in BUILD (RelWithDebInfo, no unit tests), builds the plugin
# and the CLI, and installs them with `cmake --install --strip` under
# DESTDIR with the prefix PREFIX (default /usr): DESTDIR/usr/lib/mosquitto/
# mosquitto_persist_lmdb.so, DESTDIR/usr/bin/persist-lmdb and the example
# configurations in DESTDIR/usr/share/doc/persist-lmdb/examples
# (docs/quickstart.md lists every file). Needs the packages of
# scripts/packages.txt.
set -eu

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
	echo "usage: docker/build.sh SRC BUILD DESTDIR [PREFIX]" >&2
	exit 2
fi
src=$1
build=$2
dest=$3
prefix=${4:-/usr}

case $dest in
	/*) ;;
	*) dest=$PWD/$dest ;;
esac

mkdir -p "$build"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERSIST_LMDB_TESTS=OFF \
	-DCMAKE_INSTALL_PREFIX="$prefix" >"$build/configure.log" 2>&1 || {
	cat "$build/configure.log" >&2
	exit 1
}
# Only what is installed: the bench tools and the tests are not needed.
cmake --build "$build" --target mosquitto_persist_lmdb persist-lmdb -j"$(nproc)"
DESTDIR=$dest cmake --install "$build" --strip

# The installed CLI must run (its libraries are there).
"$dest$prefix/bin/persist-lmdb" --help >/dev/null
echo "persist-lmdb: installed under $dest$prefix" >&2
