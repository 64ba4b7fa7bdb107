#!/bin/sh
# docker-entrypoint.sh COMMAND...: the persist-lmdb image's entry point.
# Before it starts the broker it checks what has to come from outside the
# image, and says how to fix it, in terms of the container:
#   - the key secret: present, readable by this user, no group or other bits;
#   - the data directory: writable by this user;
# and hands a dynamic-security admin password secret to the plugin (only
# read when the plugin creates its file, on the first start).
# Environment: MOSQUITTO_DYNSEC_PASSWORD_FILE (default
# /run/secrets/mosquitto-admin-password).
set -eu

die() {
	echo "docker-entrypoint: $*" >&2
	exit 1
}

# The configuration the command names (mosquitto -c FILE).
conf=
prev=
for a in "$@"; do
	[ "$prev" = -c ] && conf=$a
	prev=$a
done

# The last value of a configuration key (plugin_opt_* of every plugin are
# told apart by their names here: only one plugin has a key_file).
conf_value() {
	sed -n "s/^[[:space:]]*$1[[:space:]]\{1,\}//p" "$conf" | tail -n 1 | sed 's/[[:space:]]*$//'
}

me="uid $(id -u)"
if [ -n "$conf" ] && [ -r "$conf" ]; then
	key=$(conf_value plugin_opt_key_file)
	if [ -n "$key" ]; then
		[ -e "$key" ] || die "no key file at $key. Mount one as a secret: 32 random bytes, mode 0600, owned by $me (docker/compose.yaml shows how)."
		[ -r "$key" ] || die "the key file $key is not readable by $me (owner uid $(stat -c %u "$key"), mode $(stat -c %a "$key")). A bind-mounted secret keeps the owner and mode of the file on the host: chown $(id -u) and chmod 600 it there."
		case $(stat -c %a "$key") in
			*00) ;;
			*) die "the key file $key has mode $(stat -c %a "$key"): readable by group or others, which the plugin refuses. A bind-mounted secret keeps the mode of the file on the host: chmod 600 it there." ;;
		esac
	fi
	data=$(conf_value persistence_location)
	if [ -n "$data" ]; then
		[ -d "$data" ] || die "the data directory $data does not exist (the image declares it as a volume)"
		[ -w "$data" ] || die "the data directory $data is not writable by $me (owner uid $(stat -c %u "$data")). For a bind mount: chown -R $(id -u):$(id -g) the host directory."
	fi
fi

pwfile=${MOSQUITTO_DYNSEC_PASSWORD_FILE:-/run/secrets/mosquitto-admin-password}
if [ -z "${MOSQUITTO_DYNSEC_PASSWORD:-}" ] && [ -r "$pwfile" ]; then
	MOSQUITTO_DYNSEC_PASSWORD=$(cat "$pwfile")
	export MOSQUITTO_DYNSEC_PASSWORD
fi

exec "$@"
