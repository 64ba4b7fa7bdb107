#!/bin/sh
# The runtime stage's setup (docker/Dockerfile), as a script the build root
# can run too (test/integration/test_packaging.py does):
#
#   docker/runtime-setup.sh [ROOT]
#
# run after the tree installed by docker/build.sh has been copied to ROOT
# (default /) and Debian's mosquitto package is installed there. It
#   - gives the broker's user `mosquitto` the fixed uid and gid 1883
#     (PERSIST_LMDB_UID / PERSIST_LMDB_GID), creating it if missing, so that
#     a key file or a data directory on the host can be owned by it;
#   - creates /var/lib/mosquitto (the data volume, mode 0700),
#     /var/log/mosquitto and /run/mosquitto for that user;
#   - installs docker/mosquitto.conf as /etc/mosquitto/mosquitto.conf (it
#     replaces Debian's, which says `persistence true`) and
#     docker/entrypoint.sh as /usr/local/bin/docker-entrypoint.sh;
#   - links /usr/lib/mosquitto/mosquitto_dynamic_security.so to Debian's
#     multiarch path, so that the configuration is the same on every
#     architecture.
# Must run as root. With a ROOT, the user database is ROOT/etc (useradd
# --prefix), and the dynamic-security plugin is looked for under ROOT, then
# under / (the link points to a path inside the image).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${1:-}
root=${root%/}
uid=${PERSIST_LMDB_UID:-1883}
gid=${PERSIST_LMDB_GID:-$uid}

die() {
	echo "runtime-setup: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root"
[ -f "$root/usr/lib/mosquitto/mosquitto_persist_lmdb.so" ] && [ -x "$root/usr/bin/persist-lmdb" ] ||
	die "no persist-lmdb under ${root:-/}usr: install it first (docker/build.sh)"
[ -f "$root/etc/passwd" ] && [ -f "$root/etc/group" ] || die "no $root/etc/passwd or $root/etc/group"

# groupmod, usermod and useradd, on ROOT/etc when there is a ROOT.
prefix() {
	if [ -n "$root" ]; then
		"$@" --prefix "$root"
	else
		"$@"
	fi
}

# 1. The user. Debian's package made `mosquitto` (systemd-sysusers) with
# whatever uid was free.
# groupmod -g also moves the users whose primary group it is (and usermod -g
# with --prefix crashes in shadow 4.20, so it is not used).
if grep -q '^mosquitto:' "$root/etc/group"; then
	prefix groupmod -g "$gid" mosquitto
else
	prefix groupadd --system -g "$gid" mosquitto
fi
if grep -q '^mosquitto:' "$root/etc/passwd"; then
	prefix usermod -u "$uid" mosquitto
else
	prefix useradd --system -u "$uid" -g "$gid" -d /var/lib/mosquitto -s /usr/sbin/nologin \
		-c "Mosquitto MQTT broker" mosquitto
fi
grep -q "^mosquitto:[^:]*:$uid:$gid:" "$root/etc/passwd" || die "the user mosquitto did not get uid $uid, gid $gid"

# 2. Directories.
install -d -o "$uid" -g "$gid" -m 0700 "$root/var/lib/mosquitto"
install -d -o "$uid" -g "$gid" -m 0750 "$root/var/log/mosquitto" "$root/run/mosquitto"
# The package made some of them already (install -d leaves an existing
# directory's mode alone on some systems): owner and mode again, and the
# files it left to the old uid (none, normally).
chmod 0700 "$root/var/lib/mosquitto"
chmod 0750 "$root/var/log/mosquitto" "$root/run/mosquitto"
find "$root/var/lib/mosquitto" "$root/var/log/mosquitto" "$root/run/mosquitto" \
	-exec chown "$uid:$gid" {} +

# 3. Configuration and entry point.
install -d -m 0755 "$root/etc/mosquitto/conf.d"
install -m 0644 "$here/mosquitto.conf" "$root/etc/mosquitto/mosquitto.conf"
install -D -m 0755 "$here/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"

# 4. The dynamic-security plugin under an architecture-independent path.
dynsec=
for f in "$root"/usr/lib/*/mosquitto/mosquitto_dynamic_security.so /usr/lib/*/mosquitto/mosquitto_dynamic_security.so; do
	if [ -f "$f" ]; then
		dynsec=${f#"$root"}
		break
	fi
done
[ -n "$dynsec" ] || die "Mosquitto's dynamic-security plugin is not installed (package mosquitto)"
ln -sfn "$dynsec" "$root/usr/lib/mosquitto/mosquitto_dynamic_security.so"

echo "runtime-setup: user mosquitto ($uid:$gid), data in /var/lib/mosquitto, config /etc/mosquitto/mosquitto.conf" >&2
