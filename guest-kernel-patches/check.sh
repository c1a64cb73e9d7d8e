#!/usr/bin/env bash
# Checks the guest kernel patch series the way a kernel maintainer would:
# on a pristine Debian linux-source-6.1 tree, each patch in `series` order
#   1. passes the tree's own scripts/checkpatch.pl --strict (no error, no
#      warning, no check), run before the patch is applied;
#   2. applies with `git apply --check` semantics (patch -p1 --dry-run);
#   3. builds: `make vmlinux` of tinyconfig + guest.config with every patch
#      up to this one, and no compiler warning in a file the patch touches.
# Then, with the whole series, the uAPI check: abi-dump.c, compiled against
# the tree's exported headers (include/uapi/linux/vuring.h), must print
# exactly what `cargo run -q -p uring-abi --example abi-dump` prints (the
# Rust definition of the same ABI); any difference fails with the diff.
# First of all (no tree needed), the same check of the C API header of pv
# rings, guest-images/programs/pv-uring-c/include/pv_uring.h, with
# pv-uring-c/c/abi-dump.c against `cargo run -p pv-uring-c --example abi-dump`.
# A series that passed is remembered (keyed by the tarball's version, the
# series, every patch, the config fragment, abi-dump.c, what uring-abi's
# abi-dump prints and this script) under
#   ${RINGVISOR_CACHE:-$HOME/.cache/ringvisor}/series-check/
# so an unchanged rerun takes no time. Needs what guest-images/build.sh
# installs (linux-source-6.1, build-essential, flex, bison, bc, libelf-dev,
# libssl-dev) and cargo; run build.sh first on a fresh machine.
#
# usage: guest-kernel-patches/check.sh [--checkpatch-only] [--keep]
#   --checkpatch-only  step 1 only (seconds; no tree is built, no uAPI check)
#   --keep             keep the work tree (its path is printed)
set -Eeuo pipefail
# Every failure names itself (set -E: in functions and subshells too).
trap 'echo "check.sh: error: ${BASH_SOURCE[0]##*/}:$LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR

log() { echo "check.sh: $*" >&2; }
die() { echo "check.sh: error: $*" >&2; exit 1; }

CHECKPATCH_ONLY=0
KEEP=0
for arg in "$@"; do
	case "$arg" in
	--checkpatch-only) CHECKPATCH_ONLY=1 ;;
	--keep) KEEP=1 ;;
	-h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument: $arg (see --help)" ;;
	esac
done

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
PATCH_DIR="$(dirname "$SELF")"
SERIES="$PATCH_DIR/series"
FRAGMENT="$PATCH_DIR/guest.config"
ABI_DUMP_C="$PATCH_DIR/abi-dump.c"
REPO="$(dirname "$PATCH_DIR")"
CACHE_ROOT="${RINGVISOR_CACHE:-$HOME/.cache/ringvisor}"
JOBS="${JOBS:-$(nproc)}"
KSRC_TARBALL=/usr/src/linux-source-6.1.tar.xz

[[ -f "$KSRC_TARBALL" ]] ||
	die "$KSRC_TARBALL is missing: run guest-images/build.sh first (it installs linux-source-6.1)"
KSRC_VERSION="$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo unknown)"

mapfile -t PATCHES < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e 's/^[[:space:]]*//' "$SERIES" | grep -v '^$')
[[ ${#PATCHES[@]} -gt 0 ]] || die "$SERIES names no patch"
for p in "${PATCHES[@]}"; do
	[[ -f "$PATCH_DIR/$p" ]] || die "series names $p, but $PATCH_DIR/$p does not exist"
done

# The Rust definition of the uAPI, as the uAPI check compares it (below).
RUST_ABI=
if [[ $CHECKPATCH_ONLY -eq 0 ]]; then
	command -v cargo >/dev/null || die "cargo is needed for the uAPI check"
	RUST_ABI="$(cd "$REPO" && cargo run -q --locked -p uring-abi --example abi-dump)" ||
		die "cargo run -p uring-abi --example abi-dump failed"
fi

# The C API header of pv rings (guest-images/programs/pv-uring-c/
# include/pv_uring.h) against the same ABI: c/abi-dump.c, built against it,
# must print exactly what `cargo run -q -p pv-uring-c --example abi-dump`
# prints from uring-abi. It needs no kernel tree, so it runs on every call
# (not --checkpatch-only), before the cached result is looked at.
check_capi() {
	local tmp rc=0
	tmp="$(mktemp -d)"
	check_capi_in "$tmp" || rc=1
	rm -rf "$tmp"
	return $rc
}
check_capi_in() {
	local dir="$REPO/guest-images/programs" tmp="$1"
	(cd "$dir" && cargo run -q --locked -p pv-uring-c --example abi-dump) >"$tmp/rust.txt" ||
		{ log "FAIL C API: cargo run -p pv-uring-c --example abi-dump failed"; return 1; }
	"${CC:-cc}" -Wall -Wextra -Werror -I"$dir/pv-uring-c/include" -o "$tmp/abi-dump" \
		"$dir/pv-uring-c/c/abi-dump.c" ||
		{ log "FAIL C API: pv-uring-c/c/abi-dump.c does not build against pv_uring.h"; return 1; }
	"$tmp/abi-dump" >"$tmp/c.txt" || { log "FAIL C API: abi-dump exited $?"; return 1; }
	if ! diff -u --label uring-abi "$tmp/rust.txt" --label pv_uring.h "$tmp/c.txt" >&2; then
		log "FAIL C API: pv-uring-c/include/pv_uring.h differs from uring-abi (diff above)"
		return 1
	fi
	log "ok   C API: pv_uring.h matches uring-abi ($(wc -l <"$tmp/c.txt") lines)"
}
if [[ $CHECKPATCH_ONLY -eq 0 ]]; then
	check_capi || die "the C API header does not match the ABI (see above)"
fi

KEY="$({
	echo "src $KSRC_VERSION checkpatch-only $CHECKPATCH_ONLY"
	printf '%s\n' "${PATCHES[@]}"
	for p in "${PATCHES[@]}"; do sha256sum <"$PATCH_DIR/$p"; done
	sha256sum <"$FRAGMENT"
	sha256sum <"$ABI_DUMP_C"
	[[ $CHECKPATCH_ONLY -eq 1 ]] || echo "$RUST_ABI"
	sha256sum <"$SELF"
} | sha256sum | cut -c1-16)"
STAMP="$CACHE_ROOT/series-check/$KEY.passed"
if [[ -f "$STAMP" && $KEEP -eq 0 ]]; then
	log "series unchanged since it passed ($STAMP): nothing to do"
	exit 0
fi

WORK="$CACHE_ROOT/series-check/work-$KEY"
cleanup() { [[ $KEEP -eq 1 ]] || rm -rf "$WORK"; }
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/build"
log "unpacking $KSRC_TARBALL ($KSRC_VERSION)"
tar -C "$WORK/src" -xf "$KSRC_TARBALL"
TREE="$(echo "$WORK"/src/*)"
[[ -d "$TREE" ]] || die "unexpected layout of $KSRC_TARBALL"

# The files a patch touches (its diff headers, b/ side).
touched_files() {
	sed -n 's|^+++ b/||p' "$1" | grep -v '^/dev/null' | sort -u
}

configure() {
	make -C "$TREE" O="$WORK/build" tinyconfig >"$WORK/config.log" 2>&1 &&
		(cd "$TREE" && scripts/kconfig/merge_config.sh -m -O "$WORK/build" \
			"$WORK/build/.config" "$FRAGMENT") >>"$WORK/config.log" 2>&1 &&
		make -C "$TREE" O="$WORK/build" olddefconfig >>"$WORK/config.log" 2>&1 ||
		{ cat "$WORK/config.log" >&2; die "configuring the tree failed"; }
}

failed=0
for p in "${PATCHES[@]}"; do
	file="$PATCH_DIR/$p"
	if ! out="$(cd "$TREE" && perl scripts/checkpatch.pl --strict --terse --show-types "$file" 2>&1)"; then
		echo "$out" >&2
		log "FAIL checkpatch: $p"
		failed=1
	elif grep -q ': \(ERROR\|WARNING\|CHECK\):' <<<"$out"; then
		echo "$out" >&2
		log "FAIL checkpatch (warnings or checks): $p"
		failed=1
	else
		log "ok   checkpatch: $p"
	fi
	if ! patch -d "$TREE" -p1 -N -s --dry-run <"$file" >"$WORK/patch.log" 2>&1; then
		cat "$WORK/patch.log" >&2
		die "$p does not apply on top of the patches before it"
	fi
	patch -d "$TREE" -p1 -N -s --no-backup-if-mismatch <"$file" >&2
	[[ $CHECKPATCH_ONLY -eq 0 ]] || continue

	# Each prefix of the series is configured afresh: a patch may add the
	# options the fragment names (olddefconfig drops the unknown ones).
	configure
	start=$SECONDS
	if ! make -C "$TREE" O="$WORK/build" -j"$JOBS" vmlinux >"$WORK/build.log" 2>&1; then
		grep -E 'error|Error' "$WORK/build.log" | head -n 40 >&2 || true
		log "FAIL build with the series up to $p (log: $WORK/build.log; --keep keeps it)"
		failed=1
		break
	fi
	warnings=0
	while read -r f; do
		if grep -F "$f:" "$WORK/build.log" | grep -q 'warning:'; then
			grep -F "$f:" "$WORK/build.log" | grep -A3 'warning:' >&2
			warnings=1
		fi
	done < <(touched_files "$file")
	if [[ $warnings -eq 1 ]]; then
		log "FAIL build warnings in files $p touches"
		failed=1
	else
		log "ok   build up to $p ($((SECONDS - start)) s)"
	fi
done

# The uAPI header against the Rust definition of the same ABI: both print
# every size, offset and constant as "NAME VALUE" lines, in one order.
check_uapi() {
	local hdrs="$WORK/build/usr/include" rust="$WORK/abi-rust.txt" c="$WORK/abi-c.txt"

	echo "$RUST_ABI" >"$rust"
	make -C "$TREE" O="$WORK/build" headers >"$WORK/headers.log" 2>&1 ||
		{ cat "$WORK/headers.log" >&2; die "make headers failed"; }
	"${CC:-cc}" -Wall -Wextra -Werror -I"$hdrs" -o "$WORK/abi-dump" "$ABI_DUMP_C" ||
		{ log "FAIL uAPI: abi-dump.c does not build against the patched vuring.h"; return 1; }
	"$WORK/abi-dump" >"$c" || { log "FAIL uAPI: abi-dump exited $?"; return 1; }
	if ! diff -u --label uring-abi "$rust" --label vuring.h "$c" >&2; then
		log "FAIL uAPI: include/uapi/linux/vuring.h differs from uring-abi (diff above)"
		return 1
	fi
	log "ok   uAPI: vuring.h matches uring-abi ($(wc -l <"$c") lines)"
}

if [[ $failed -eq 0 && $CHECKPATCH_ONLY -eq 0 ]]; then
	check_uapi || failed=1
fi

[[ $failed -eq 0 ]] || die "the series does not pass (see above)"
mkdir -p "$(dirname "$STAMP")"
date -u +%FT%TZ >"$STAMP"
[[ $KEEP -eq 0 ]] || log "work tree kept: $WORK"
log "every patch passes checkpatch --strict$([[ $CHECKPATCH_ONLY -eq 1 ]] || echo " and builds with the patches before it; the uAPI matches uring-abi")"
