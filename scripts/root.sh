#!/usr/bin/env bash
# Runs a command with Mosquitto >= 2.1 available: natively where the host has
# its dev files, otherwise inside a cached Debian unstable root (debootstrap +
# bubblewrap). Sourced by the other scripts; `scripts/root.sh CMD...` runs CMD.
set -euo pipefail

PL_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PL_PACKAGES_FILE="$PL_SRC/scripts/packages.txt"

pl_die() { echo "persist-lmdb: $*" >&2; exit 1; }

# Native when the host has the 2.1 broker headers and a 2.1 broker binary.
pl_host_is_native() {
	[ "${PERSIST_LMDB_FORCE_ROOT:-0}" = 1 ] && return 1
	local h=/usr/include/mosquitto/broker.h
	[ -f "$h" ] || return 1
	grep -q 'mosquitto_persist_client_msg_add' "$h" || return 1
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || return 1
}

pl_cache_dir() {
	if [ -n "${PERSIST_LMDB_CACHE:-}" ]; then
		echo "$PERSIST_LMDB_CACHE"
	elif [ "$(id -u)" = 0 ]; then
		echo /var/cache/persist-lmdb
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/persist-lmdb"
	fi
}

pl_packages() { grep -v '^#' "$PL_PACKAGES_FILE" | grep -v '^[[:space:]]*$' | sort -u; }

pl_root_dir() {
	local key
	key=$(pl_packages | sha256sum | cut -c1-16)
	echo "$(pl_cache_dir)/root-$key"
}

pl_host_tools() {
	local missing=()
	command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
	command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || pl_die "install ${missing[*]} (needed to build the Mosquitto 2.1 root)"
	echo "persist-lmdb: installing ${missing[*]} on the host" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

# The mirror the host's own apt sources name.
pl_mirror() {
	local m
	m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
		grep -v security | grep -oE 'https?://[^ ]+' | head -n1)
	echo "${m:-http://deb.debian.org/debian}"
}

# Removes a directory tree that may still have file systems mounted in it
# (debootstrap mounts /proc inside the root it builds).
pl_remove_tree() {
	local dir=$1 mnt
	[ -e "$dir" ] || return 0
	awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
	rm -rf "$dir"
}

pl_root_build() {
	local root=$1 tmp
	[ "$(id -u)" = 0 ] || pl_die "building the Mosquitto 2.1 root needs root (debootstrap); run once as root or set PERSIST_LMDB_CACHE to a prepared root cache"
	pl_host_tools
	mkdir -p "$(dirname "$root")"
	tmp="$root.tmp.$$"
	pl_remove_tree "$tmp"
	echo "persist-lmdb: building the Debian unstable root with Mosquitto 2.1 in $root (about a minute)" >&2
	local pkgs
	pkgs=$(pl_packages | paste -sd, -)
	if ! debootstrap --variant=minbase --include="$pkgs" sid "$tmp" "$(pl_mirror)" \
		/usr/share/debootstrap/scripts/sid >"$tmp.log" 2>&1; then
		tail -n 20 "$tmp.log" >&2
		pl_remove_tree "$tmp"
		pl_die "debootstrap failed (log above)"
	fi
	rm -f "$tmp.log"
	mv "$tmp" "$root"
	# Remove roots built from older package lists, and leftovers of builds
	# that were interrupted (under the lock, none is in progress).
	local old
	for old in "$(dirname "$root")"/root-*; do
		[ "$old" = "$root" ] || pl_remove_tree "$old"
	done
}

pl_root_ensure() {
	local root
	root=$(pl_root_dir)
	if [ ! -x "$root/usr/sbin/mosquitto" ]; then
		# One build at a time: a second caller waits, then finds the root.
		mkdir -p "$(pl_cache_dir)"
		exec 9>"$(pl_cache_dir)/.build.lock"
		flock 9
		[ -x "$root/usr/sbin/mosquitto" ] || pl_root_build "$root"
		exec 9>&-
	fi
	echo "$root"
}

# pl_run CMD...: CMD with the source tree as its working directory.
pl_run() {
	if pl_host_is_native; then
		(cd "$PL_SRC" && "$@")
		return
	fi
	local root
	root=$(pl_root_ensure)
	command -v bwrap >/dev/null 2>&1 || pl_host_tools
	bwrap --bind "$root" / --dev /dev --proc /proc --tmpfs /tmp \
		--bind "$PL_SRC" /src --chdir /src \
		--ro-bind-try "$PL_SRC/../shared" /shared \
		--setenv PERSIST_LMDB_IN_ROOT 1 --setenv HOME /tmp \
		--setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--die-with-parent -- "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	[ $# -gt 0 ] || pl_die "usage: scripts/root.sh CMD [ARG...]"
	pl_run "$@"
fi
