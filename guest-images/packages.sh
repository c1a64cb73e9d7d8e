# The apt packages the ringvisor set-up installs, and how it installs them.
# Sourced (not run) by guest-images/build.sh and scripts/test-all.sh, and by
# scripts/tests/install-path.sh, which runs it against stub dpkg-query and
# apt-get. Messages start with "$PKG_WHO: " (set it before sourcing).
# shellcheck shell=bash

PKG_WHO="${PKG_WHO:-packages.sh}"

# What build.sh needs to build the guest kernel and initramfs.
GUEST_PACKAGES=(linux-source-6.1 busybox-static build-essential flex bison bc
	libelf-dev libssl-dev cpio xz-utils)

# The installed version of package $1, or nothing if it is not installed.
pkg_version() {
	# dpkg-query exits 1 for a package it has never heard of: that is
	# "not installed", not a failure (set -o pipefail would end the script).
	{ dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } |
		awk '$1 == "install" && $3 == "installed" { print $4 }'
}

# The packages among "$@" that are not installed, one a line.
missing_packages() {
	local p
	for p in "$@"; do
		[[ -n "$(pkg_version "$p")" ]] || echo "$p"
	done
}

# Installs the packages among "$@" that are missing. On failure it prints
# one line, "$PKG_WHO: error: ...", naming the packages that are still not
# installed, and exits 1 (exit, not return: the caller's ERR trap would add
# a second, vaguer line).
install_packages() {
	local missing still
	mapfile -t missing < <(missing_packages "$@")
	[[ ${#missing[@]} -gt 0 ]] || return 0
	echo "$PKG_WHO: installing ${missing[*]}" >&2
	local sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		if ! command -v sudo >/dev/null; then
			echo "$PKG_WHO: error: need root (or sudo) to install: ${missing[*]}" >&2
			exit 1
		fi
		sudo=(sudo)
	fi
	local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
		-o DPkg::Lock::Timeout=900 -y -q --no-install-recommends)
	if ! "${apt[@]}" update </dev/null >&2; then
		echo "$PKG_WHO: error: apt-get update failed, so these packages could not be installed: ${missing[*]}" >&2
		exit 1
	fi
	if ! "${apt[@]}" install "${missing[@]}" </dev/null >&2; then
		# Name what apt-get left uninstalled, not the whole request.
		mapfile -t still < <(missing_packages "${missing[@]}")
		[[ ${#still[@]} -gt 0 ]] || still=("${missing[@]}")
		echo "$PKG_WHO: error: apt-get install failed; not installed: ${still[*]}" >&2
		exit 1
	fi
	mapfile -t still < <(missing_packages "${missing[@]}")
	if [[ ${#still[@]} -gt 0 ]]; then
		echo "$PKG_WHO: error: apt-get install succeeded, but these are still not installed: ${still[*]}" >&2
		exit 1
	fi
}
