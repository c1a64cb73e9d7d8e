#!/usr/bin/env bash
# Runs the README's two commands the way a new user would: in a fresh,
# minimal Debian 12 root (mmdebstrap), from a git clone of this repository's
# committed HEAD, with an empty ringvisor cache and an empty CARGO_HOME.
#
# In the root, as root, it runs exactly the README's fenced blocks marked
#   <!-- fresh-machine: prerequisites -->   (apt-get; the only thing installed
#                                            by hand)
#   <!-- fresh-machine: demo -->
#   <!-- fresh-machine: test -->
# and prints how long each took. The test block (scripts/test-all.sh) runs
# with RINGVISOR_IN_FRESH_MACHINE=1, so it does not run this script again.
#
# The host provides: the Rust toolchain (RUSTUP_HOME, bound read-only), its
# CA bundle and /etc/resolv.conf (copied in), /dev, /proc and /sys (bound).
# Cached under ${RINGVISOR_CACHE:-$HOME/.cache/ringvisor}/fresh-machine/:
# the root tarball (made once) and the .deb files apt downloads in the root.
# Runs as root (mounts, chroot); installs mmdebstrap on the host if missing.
#
# usage: scripts/fresh-machine.sh [--print-blocks [README]]
#   --print-blocks  print the README blocks the check would run, and exit
#
# Environment:
#   RINGVISOR_FRESH_KEEP=1  keep the root after the run (its path is printed)
#   FRESH_FUZZ_SECS         FUZZ_SECS for the test command in the root
#                           (default 5: the outer run fuzzes for longer)
#   JOBS, RINGVISOR_SKIP_KVM_TESTS, CI are passed into the root.
set -Eeuo pipefail
# Every failure names itself (set -E: in functions and subshells too).
trap 'echo "fresh-machine.sh: error: ${BASH_SOURCE[0]##*/}:$LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(dirname "$(dirname "$SELF")")"
CACHE_ROOT="${RINGVISOR_CACHE:-$HOME/.cache/ringvisor}"
FRESH="$CACHE_ROOT/fresh-machine"
SUITE=bookworm
VARIANT=minbase
TARBALL="$FRESH/$SUITE-$VARIANT.tar"
DEBS="$FRESH/debs"
MARKERS=(prerequisites demo test)

log() { echo "fresh-machine: $*" >&2; }
die() { echo "fresh-machine: error: $*" >&2; exit 1; }

# The fenced ```sh block right after "<!-- fresh-machine: $1 -->" in the
# README on stdin; nothing if the marker or its block is missing.
readme_block() {
	awk -v marker="<!-- fresh-machine: $1 -->" '
		$0 == marker { found = 1; next }
		found == 1 && /^```sh[[:space:]]*$/ { found = 2; next }
		found == 1 { exit }
		found == 2 && /^```[[:space:]]*$/ { exit }
		found == 2 { print }
	'
}

# The README's blocks (README text in $1) into $2/<marker>.sh.
extract_blocks() {
	local m
	for m in "${MARKERS[@]}"; do
		readme_block "$m" <<<"$1" >"$2/$m.sh"
		grep -q '[^[:space:]]' "$2/$m.sh" ||
			die "README.md has no \`\`\`sh block right after <!-- fresh-machine: $m -->"
	done
}

# --print-blocks FILE: what the check would run, from FILE (no root needed;
# scripts/tests/readme-blocks.sh uses it).
print_blocks() {
	[[ -f "$1" ]] || die "no such file: $1"
	local dir m
	dir="$(mktemp -d)"
	# shellcheck disable=SC2064 # expand now: dir is local
	trap "rm -rf '$dir'" EXIT
	extract_blocks "$(cat "$1")" "$dir"
	for m in "${MARKERS[@]}"; do
		echo "== $m"
		cat "$dir/$m.sh"
	done
}

ensure_mmdebstrap() {
	command -v mmdebstrap >/dev/null && return 0
	log "installing mmdebstrap on the host (the check's own tool)"
	PKG_WHO=fresh-machine
	# shellcheck source=guest-images/packages.sh
	source "$REPO/guest-images/packages.sh"
	install_packages mmdebstrap
}

# A minimal Debian 12 root as a tarball, made once and reused.
ensure_tarball() {
	if [[ -f "$TARBALL" ]]; then
		log "reusing the root tarball $TARBALL ($(date -r "$TARBALL" +%F))"
		return 0
	fi
	ensure_mmdebstrap
	log "making a minimal $SUITE root ($VARIANT) with mmdebstrap"
	local start=$SECONDS
	mkdir -p "$FRESH"
	if ! mmdebstrap --quiet --mode=root --variant="$VARIANT" --format=tar \
		"$SUITE" "$TARBALL.tmp" </dev/null >"$FRESH/mmdebstrap.log" 2>&1; then
		tail -n 30 "$FRESH/mmdebstrap.log" >&2
		rm -f "$TARBALL.tmp"
		die "mmdebstrap could not make the $SUITE root (log: $FRESH/mmdebstrap.log)"
	fi
	mv "$TARBALL.tmp" "$TARBALL"
	log "root tarball made in $((SECONDS - start)) s"
}

# Mounts are made in this script's own mount namespace (see the end), so
# they vanish with it whatever happens; cleanup unmounts them anyway before
# removing the root, and rm stays on the root's own file system.
cleanup() {
	# Returns 0 whatever happens: bash exits with the script's own status,
	# and a failing trap would fire the ERR trap for nothing.
	rm -rf "${WORK:-}"
	[[ -n "${ROOT:-}" && -d "${ROOT:-}" ]] || return 0
	umount -R "$ROOT" 2>/dev/null || true
	local m
	while read -r m; do
		umount -R -l "$m" 2>/dev/null || true
	done < <(findmnt -rn -o TARGET | grep -F "$ROOT/" | sort -r)
	if findmnt -rn -o TARGET | grep -qF "$ROOT/"; then
		log "warning: mounts under $ROOT remain; not removing it"
	elif [[ "${RINGVISOR_FRESH_KEEP:-}" == 1 ]]; then
		log "kept the root: $ROOT"
	else
		rm -rf --one-file-system "$ROOT"
	fi
	return 0
}

# The host's toolchain, as rustc sees it from the repository (so a
# rust-toolchain file there would count): its directory under RUSTUP_HOME.
host_toolchain() {
	local sysroot
	sysroot="$(cd "$REPO" && rustc --print sysroot)"
	[[ "$sysroot" == "$RUSTUP_HOME_HOST"/toolchains/* ]] ||
		die "rustc's sysroot $sysroot is not under RUSTUP_HOME ($RUSTUP_HOME_HOST): install Rust with rustup"
	basename "$sysroot"
}

bind_ro() {
	mkdir -p "$2"
	mount --bind "$1" "$2"
	mount -o remount,bind,ro "$2"
}

# A run killed outright (SIGKILL, power) leaves its root behind, several GB:
# remove those older than a day (no run takes that long; a younger one may
# be another run's, in use).
remove_stale_roots() {
	local old
	while read -r old; do
		log "removing the stale root $old"
		rm -rf --one-file-system "$old"
	done < <(find "$FRESH" -mindepth 1 -maxdepth 1 -type d -name 'root.*' -mtime +0)
}

make_root() {
	remove_stale_roots
	ROOT="$(mktemp -d "$FRESH/root.XXXXXX")"
	tar -C "$ROOT" -xf "$TARBALL"
	cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
	mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/usr/local/share/ca-certificates"
	cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
	# The host's local CAs too: if apt installs ca-certificates in the root,
	# it rebuilds the bundle from Debian's CAs plus these.
	if [[ -d /usr/local/share/ca-certificates ]]; then
		find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' \
			-exec cp -L -t "$ROOT/usr/local/share/ca-certificates/" {} +
	fi
	local d
	for d in dev proc sys; do
		mkdir -p "$ROOT/$d"
		mount --rbind "/$d" "$ROOT/$d"
		mount --make-rslave "$ROOT/$d"
	done
	# Downloaded .deb files outlive the root: later runs need not fetch them.
	mkdir -p "$DEBS/partial" "$ROOT/var/cache/apt/archives"
	mount --bind "$DEBS" "$ROOT/var/cache/apt/archives"
	bind_ro "$RUSTUP_HOME_HOST" "$ROOT/opt/rustup"
	git -C "$REPO" bundle create -q "$ROOT/tmp/ringvisor.bundle" HEAD
}

# The script run in the root: the README's blocks, each timed.
write_inner() {
	local m
	{
		echo 'set -euo pipefail'
		# The outer script prints this line last, after the timings.
		echo 'failed() { echo "the README'"'"'s $1 block failed with status $2 after $3 s (commands: $4)" >/tmp/readme/failed; exit 1; }'
		echo 'run_block() {'
		echo '	local name=$1 start=$SECONDS status=0'
		echo '	echo "fresh-machine: === README $name: $(tr "\n" ";" <"/tmp/readme/$name.sh")" >&2'
		# apt-get's progress is long and says nothing: into a log, shown
		# on failure.
		echo '	if [[ $name == prerequisites ]]; then'
		echo '		bash -euo pipefail "/tmp/readme/$name.sh" </dev/null >/tmp/readme/$name.log 2>&1 || status=$?'
		echo '		[[ $status -eq 0 ]] || tail -n 30 /tmp/readme/$name.log >&2'
		echo '	else'
		echo '		bash -euo pipefail "/tmp/readme/$name.sh" </dev/null || status=$?'
		echo '	fi'
		echo '	local took=$((SECONDS - start))'
		echo '	echo "$name $took" >>/tmp/readme/times'
		echo '	[[ $status -eq 0 ]] || failed "$name" "$status" "$took" "$(tr "\n" ";" <"/tmp/readme/$name.sh")"'
		echo '	echo "fresh-machine: README $name took $took s" >&2'
		echo '}'
		echo 'cd /root'
		echo 'run_block prerequisites'
		echo 'git -c advice.detachedHead=false clone -q /tmp/ringvisor.bundle ringvisor'
		echo 'cd ringvisor'
		for m in demo test; do
			echo "run_block $m"
		done
	} >"$WORK/inner.sh"
	mkdir -p "$ROOT/tmp/readme"
	cp "$WORK"/{prerequisites,demo,test,inner}.sh "$ROOT/tmp/readme/"
}

run_inner() {
	local toolchain
	toolchain="$(host_toolchain)"
	mkdir -p "$ROOT/root/.cargo" "$ROOT/root/ringvisor-cache"
	local env=(
		HOME=/root
		PATH="/opt/rustup/toolchains/$toolchain/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		RUSTUP_HOME=/opt/rustup
		RUSTUP_TOOLCHAIN="$toolchain"
		CARGO_HOME=/root/.cargo
		RINGVISOR_CACHE=/root/ringvisor-cache
		RINGVISOR_IN_FRESH_MACHINE=1
		# The outer suite ran the bench's ten-minute end-to-end test on
		# this commit; in the root it is a counted skip.
		RINGVISOR_SKIP_BENCH_TEST=1
		LANG=C.UTF-8
		TERM=dumb
	)
	# The outer run fuzzes for the full time; in the root the fuzz targets
	# need only build and run.
	env+=("FUZZ_SECS=${FRESH_FUZZ_SECS:-5}")
	local v
	for v in JOBS RINGVISOR_SKIP_KVM_TESTS CI; do
		[[ -z "${!v:-}" ]] || env+=("$v=${!v}")
	done
	log "in the root: toolchain $toolchain (read-only), empty CARGO_HOME and ringvisor cache"
	local status=0
	env -i "${env[@]}" chroot "$ROOT" /bin/bash /tmp/readme/inner.sh </dev/null || status=$?
	log "timings (s):"
	sed 's/^/  /' "$ROOT/tmp/readme/times" >&2 2>/dev/null || true
	[[ $status -ne 0 ]] || return 0
	if [[ -s "$ROOT/tmp/readme/failed" ]]; then
		die "$(cat "$ROOT/tmp/readme/failed")"
	fi
	die "the run in the fresh root failed with status $status before the README's commands (see above)"
}

main() {
	[[ $(id -u) -eq 0 ]] || die "needs root (mounts and chroot)"
	RUSTUP_HOME_HOST="$(readlink -f "${RUSTUP_HOME:-$HOME/.rustup}")"
	[[ -d "$RUSTUP_HOME_HOST/toolchains" ]] || die "no rustup toolchains in $RUSTUP_HOME_HOST"
	if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then
		log "note: uncommitted changes are not part of the check (it clones HEAD)"
	fi
	log "checking commit $(git -C "$REPO" rev-parse --short HEAD)"
	mkdir -p "$FRESH"
	WORK="$(mktemp -d)"
	trap cleanup EXIT
	# From the commit being tested: the clone's README.
	extract_blocks "$(git -C "$REPO" show HEAD:README.md)" "$WORK"
	local start=$SECONDS
	ensure_tarball
	make_root
	write_inner
	log "root ready in $((SECONDS - start)) s: $ROOT"
	run_inner
	log "passed: the README's commands ran in a fresh $SUITE root"
}

if [[ "${1:-}" == --print-blocks ]]; then
	print_blocks "${2:-$REPO/README.md}"
	exit 0
fi
# Mounts go into a private mount namespace: even a killed run leaves none.
if [[ -z "${RINGVISOR_FRESH_NS:-}" ]]; then
	[[ $(id -u) -eq 0 ]] || die "needs root (mounts and chroot)"
	exec env RINGVISOR_FRESH_NS=1 unshare --mount --propagation private bash "$SELF" "$@"
fi
main "$@"
