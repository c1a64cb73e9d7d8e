#!/usr/bin/env bash
# Builds everything a ringvisor guest needs: the guest kernel (ELF vmlinux,
# Debian's linux-source-6.1 + guest-kernel-patches/series + tinyconfig +
# guest-kernel-patches/guest.config) and an uncompressed newc initramfs
# (static busybox, the guest programs in /bin, most as links to the rv-guest
# multi-call binary, the C programs as links to pvu-c (full initramfs
# only), and /init -> rv-guest, which runs rv-init).
#
# The last lines of stdout are exactly (after an INITRAMFS_MIN= line for the
# initramfs without busybox):
#   KERNEL=/abs/path/vmlinux
#   INITRAMFS=/abs/path/initramfs.cpio
# Everything else goes to stderr. Results are cached under
#   ${RINGVISOR_CACHE:-$HOME/.cache/ringvisor}/guest/<hash>/
# and a run with nothing changed only prints the paths.
set -Eeuo pipefail
# Every failure names itself (set -E: in functions and subshells too); a
# caller such as the VMM only says "build.sh failed".
trap 'echo "build.sh: error: ${BASH_SOURCE[0]##*/}:$LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR

usage() {
	cat <<'EOF'
usage: guest-images/build.sh [--print-only] [--kernel-only] [--install-only] [-h]

Builds the ringvisor guest kernel and initramfs (cached) and prints
  KERNEL=/abs/path/vmlinux
  INITRAMFS=/abs/path/initramfs.cpio
as the last lines of stdout.

  --print-only   print the paths if the current inputs are already built,
                 exit 1 otherwise; never builds or installs anything
  --kernel-only  build (or find) only the kernel; prints only KERNEL=...
  --install-only install the missing apt packages, then exit (builds nothing;
                 scripts/tests/install-path.sh runs it with stub apt tools)
  -h, --help     this help

Environment:
  RINGVISOR_CACHE  cache root (default $HOME/.cache/ringvisor)
  JOBS             parallel make/cargo jobs (default: nproc)
EOF
}

PRINT_ONLY=0
KERNEL_ONLY=0
INSTALL_ONLY=0
for arg in "$@"; do
	case "$arg" in
	--print-only) PRINT_ONLY=1 ;;
	--kernel-only) KERNEL_ONLY=1 ;;
	--install-only) INSTALL_ONLY=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "build.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
	esac
done

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
IMAGES_DIR="$(dirname "$SELF")"
REPO="$(dirname "$IMAGES_DIR")"
PATCH_DIR="$REPO/guest-kernel-patches"
SERIES="$PATCH_DIR/series"
FRAGMENT="$PATCH_DIR/guest.config"
PROGRAMS="$IMAGES_DIR/programs"
CACHE_ROOT="${RINGVISOR_CACHE:-$HOME/.cache/ringvisor}"
JOBS="${JOBS:-$(nproc)}"

KSRC_PKG=linux-source-6.1
KSRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
BUSYBOX_PKG=busybox-static
# GUEST_PACKAGES, pkg_version, install_packages.
PKG_WHO=build.sh
# shellcheck source=guest-images/packages.sh
source "$IMAGES_DIR/packages.sh"

# Patch file names from the series file, in order (comments, blanks skipped).
series_patches() {
	[[ -f "$SERIES" ]] || return 0
	sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e 's/^[[:space:]]*//' "$SERIES" | grep -v '^$' || true
}

sha() { sha256sum | cut -c1-16; }

# Hash of the kernel tree: source package version + series + patches.
tree_key() {
	{
		echo "src $KSRC_PKG $1"
		echo "series"
		series_patches
		local p
		while read -r p; do
			[[ -f "$PATCH_DIR/$p" ]] || die "series names $p, but $PATCH_DIR/$p does not exist"
			sha256sum <"$PATCH_DIR/$p"
		done < <(series_patches)
	} | sha
}

# Hash of the kernel image: tree + config fragment + this script.
kernel_key() {
	{ echo "tree $1"; sha256sum <"$FRAGMENT"; sha256sum <"$SELF"; } | sha
}

# Hash of the guest programs: every file in the workspace but target/.
programs_hash() {
	(cd "$PROGRAMS" && find . -path ./target -prune -o -type f -print0 |
		LC_ALL=C sort -z | xargs -0 -r sha256sum) | sha
}

guest_key() {
	{ echo "kernel $1"; echo "busybox $2"; echo "programs $(programs_hash)"; } | sha
}

print_paths() {
	# initramfs-min.cpio: the same without busybox (no shell), for the demo
	# and the boot benchmark: every initramfs MiB costs about a second of
	# boot on nested PVM. Printed first: the last two lines stay as above.
	if [[ $KERNEL_ONLY -eq 0 && -f "$(dirname "$2")/initramfs-min.cpio" ]]; then
		echo "INITRAMFS_MIN=$(dirname "$2")/initramfs-min.cpio"
	fi
	echo "KERNEL=$1"
	if [[ $KERNEL_ONLY -eq 0 ]]; then echo "INITRAMFS=$2"; fi
}

# ---------------------------------------------------------------- fast path
[[ -f "$FRAGMENT" ]] || die "missing $FRAGMENT"
KSRC_VERSION="$(pkg_version "$KSRC_PKG")"
BUSYBOX_VERSION="$(pkg_version "$BUSYBOX_PKG")"
if [[ -n "$KSRC_VERSION" && -n "$BUSYBOX_VERSION" && $INSTALL_ONLY -eq 0 ]]; then
	TREE_KEY="$(tree_key "$KSRC_VERSION")"
	KERNEL_KEY="$(kernel_key "$TREE_KEY")"
	KERNEL_OUT="$CACHE_ROOT/kernel/$KERNEL_KEY/vmlinux"
	if [[ $KERNEL_ONLY -eq 1 && -f "$KERNEL_OUT" ]]; then
		print_paths "$KERNEL_OUT" ""
		exit 0
	fi
	GUEST_DIR="$CACHE_ROOT/guest/$(guest_key "$KERNEL_KEY" "$BUSYBOX_VERSION")"
	if [[ -f "$GUEST_DIR/.complete" ]]; then
		print_paths "$GUEST_DIR/vmlinux" "$GUEST_DIR/initramfs.cpio"
		exit 0
	fi
fi
if [[ $PRINT_ONLY -eq 1 ]]; then
	log "not built yet for the current inputs"
	exit 1
fi

# ---------------------------------------------------------------- packages
install_packages "${GUEST_PACKAGES[@]}"
if [[ $INSTALL_ONLY -eq 1 ]]; then
	exit 0
fi
KSRC_VERSION="$(pkg_version "$KSRC_PKG")"
BUSYBOX_VERSION="$(pkg_version "$BUSYBOX_PKG")"
[[ -n "$KSRC_VERSION" && -f "$KSRC_TARBALL" ]] || die "$KSRC_PKG is not installed ($KSRC_TARBALL missing)"
BUSYBOX="$(command -v busybox || true)"
[[ -x /bin/busybox ]] && BUSYBOX=/bin/busybox
[[ -n "$BUSYBOX" ]] || die "busybox not found after installing $BUSYBOX_PKG"
if [[ $KERNEL_ONLY -eq 0 ]]; then
	command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs), then rerun"
fi

TREE_KEY="$(tree_key "$KSRC_VERSION")"
KERNEL_KEY="$(kernel_key "$TREE_KEY")"
KERNEL_OUT="$CACHE_ROOT/kernel/$KERNEL_KEY/vmlinux"

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
	log "another build holds $CACHE_ROOT/.build.lock; waiting"
	flock 9
fi

# ------------------------------------------------------- unpacked + patched
TREE_DIR="$CACHE_ROOT/kernel-src/$TREE_KEY"
KTREE="$TREE_DIR/linux"
if [[ ! -f "$TREE_DIR/.ready" ]]; then
	log "unpacking $KSRC_TARBALL ($KSRC_PKG $KSRC_VERSION)"
	rm -rf "$TREE_DIR"
	mkdir -p "$TREE_DIR/tmp"
	tar -C "$TREE_DIR/tmp" -xf "$KSRC_TARBALL"
	top=("$TREE_DIR"/tmp/*)
	[[ ${#top[@]} -eq 1 && -d "${top[0]}" ]] || die "unexpected layout of $KSRC_TARBALL"
	while read -r p; do
		log "applying $p"
		if ! patch -d "${top[0]}" -p1 -N -s --dry-run <"$PATCH_DIR/$p" >"$TREE_DIR/patch.log" 2>&1; then
			cat "$TREE_DIR/patch.log" >&2
			die "patch $p does not apply to $KSRC_PKG $KSRC_VERSION"
		fi
		patch -d "${top[0]}" -p1 -N -s --no-backup-if-mismatch <"$PATCH_DIR/$p" >&2
	done < <(series_patches)
	mv "${top[0]}" "$KTREE"
	rmdir "$TREE_DIR/tmp"
	touch "$TREE_DIR/.ready"
fi
touch "$TREE_DIR"
# A tree with its build directory takes about 1.5 GB: remove trees that no
# build has used for 3 days.
while read -r old; do
	[[ -n "$old" && "$old" != "$TREE_DIR" ]] || continue
	log "removing the kernel tree $old (unused for 3 days)"
	rm -rf "$old"
done < <(find "$CACHE_ROOT/kernel-src" -mindepth 1 -maxdepth 1 -type d -mtime +3 2>/dev/null)

# ------------------------------------------------------------------ kernel
# Runs make quietly into a log; a progress line every 20 s on stderr.
run_make() {
	local what="$1" logf="$2"
	shift 2
	local start=$SECONDS
	make -C "$KTREE" O="$KBUILD" "$@" >"$logf" 2>&1 &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for _ in $(seq 20); do
			sleep 1
			kill -0 "$pid" 2>/dev/null || break
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$what: $(grep -c '^  \(CC\|AS\|LD\|AR\)' "$logf" || true) objects built, $((SECONDS - start)) s"
		fi
	done
	if ! wait "$pid"; then
		tail -n 60 "$logf" >&2
		die "$what failed (full log: $logf)"
	fi
	log "$what: done in $((SECONDS - start)) s"
}

if [[ ! -f "$KERNEL_OUT" ]]; then
	KBUILD="$TREE_DIR/build"
	mkdir -p "$KBUILD"
	export KBUILD_BUILD_USER=ringvisor KBUILD_BUILD_HOST=ringvisor
	export KBUILD_BUILD_TIMESTAMP="$KSRC_PKG $KSRC_VERSION"
	log "configuring the kernel: tinyconfig + $(basename "$FRAGMENT")"
	make -C "$KTREE" O="$KBUILD" tinyconfig >"$KBUILD/config.log" 2>&1 ||
		{ cat "$KBUILD/config.log" >&2; die "make tinyconfig failed"; }
	(cd "$KTREE" && scripts/kconfig/merge_config.sh -m -O "$KBUILD" "$KBUILD/.config" "$FRAGMENT") \
		>>"$KBUILD/config.log" 2>&1 || { cat "$KBUILD/config.log" >&2; die "merge_config.sh failed"; }
	make -C "$KTREE" O="$KBUILD" olddefconfig >>"$KBUILD/config.log" 2>&1 ||
		{ cat "$KBUILD/config.log" >&2; die "make olddefconfig failed"; }
	# Every option of the fragment must have ended up as requested.
	bad=()
	while IFS= read -r line; do
		line="${line%%#*}"
		line="${line%"${line##*[![:space:]]}"}"
		[[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || continue
		opt="${BASH_REMATCH[1]}" val="${BASH_REMATCH[2]}"
		if [[ "$val" == n ]]; then
			if grep -q "^$opt=" "$KBUILD/.config"; then
				bad+=("$opt=n (got $(grep "^$opt=" "$KBUILD/.config" | cut -d= -f2-))")
			fi
		elif ! grep -qxF "$opt=$val" "$KBUILD/.config"; then
			got="$(grep "^$opt=" "$KBUILD/.config" | cut -d= -f2- || true)"
			bad+=("$opt=$val (got ${got:-unset})")
		fi
	done <"$FRAGMENT"
	if [[ ${#bad[@]} -gt 0 ]]; then
		printf '  %s\n' "${bad[@]}" >&2
		die "these options of $(basename "$FRAGMENT") did not end up set (missing dependencies?)"
	fi
	log "building vmlinux with $JOBS jobs (log: $KBUILD/build.log)"
	run_make "kernel build" "$KBUILD/build.log" -j"$JOBS" vmlinux
	mkdir -p "$(dirname "$KERNEL_OUT")"
	cp "$KBUILD/vmlinux" "$KERNEL_OUT.tmp"
	cp "$KBUILD/.config" "$(dirname "$KERNEL_OUT")/config"
	mv "$KERNEL_OUT.tmp" "$KERNEL_OUT"
fi

if [[ $KERNEL_ONLY -eq 1 ]]; then
	print_paths "$KERNEL_OUT" ""
	exit 0
fi

# ---------------------------------------------------------- guest programs
log "building the guest programs (static)"
TARGET=x86_64-unknown-linux-gnu
CARGO_LOG="$CACHE_ROOT/cargo-build.log"
# No target-cpu: the default x86-64 baseline keeps the programs off AVX.
if ! (cd "$PROGRAMS" && RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --release --target "$TARGET" -j "$JOBS" --message-format=json-render-diagnostics \
	>"$CARGO_LOG.json" 2>"$CARGO_LOG"); then
	cat "$CARGO_LOG" >&2
	die "cargo build of $PROGRAMS failed"
fi
mapfile -t BINS < <(grep -o '"executable":"[^"]*"' "$CARGO_LOG.json" | cut -d'"' -f4 | sort -u)
[[ ${#BINS[@]} -gt 0 ]] || die "cargo built no binaries in $PROGRAMS"
MULTI=""
for b in "${BINS[@]}"; do
	[[ "$(basename "$b")" == rv-guest ]] && MULTI="$b"
	[[ "$(head -c4 "$b" | tail -c3)" == ELF ]] || die "$b is not an ELF file"
	if readelf -lW "$b" 2>/dev/null | grep -q 'INTERP'; then
		die "$b is dynamically linked (expected +crt-static)"
	fi
done
# rv-guest is the multi-call binary holding rv-init and most programs: one
# copy of std and glibc instead of one per program (each initramfs MiB costs
# about a second of boot on nested PVM).
[[ -n "$MULTI" ]] || die "the rv-guest multi-call program was not built"
mapfile -t APPLETS < <("$MULTI" --applets)
printf '%s\n' "${APPLETS[@]}" | grep -qx rv-init || die "rv-guest does not provide rv-init"

# The programs' Cargo.lock may have been written by the build: hash now.
GUEST_DIR="$CACHE_ROOT/guest/$(guest_key "$KERNEL_KEY" "$BUSYBOX_VERSION")"

# ---------------------------------------------------------------- initramfs
WORK="$(mktemp -d "$CACHE_ROOT/guest/.work.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE_ROOT/guest" && mktemp -d "$CACHE_ROOT/guest/.work.XXXXXX"; })"
trap 'rm -rf "$WORK"' EXIT
# The C programs over the pv-uring C API: one multi-call binary that
# programs/pv-uring-c/c/build.sh links statically with the libpv_uring_c.a
# cargo just built (it prints "PATH NAME..."); in the full initramfs only.
CLIB="$(grep -o '"[^"]*/libpv_uring_c\.a"' "$CARGO_LOG.json" | tr -d '"' | tail -n 1 || true)"
[[ -f "$CLIB" ]] || die "cargo built no libpv_uring_c.a in $PROGRAMS (see $CARGO_LOG.json)"
bash "$PROGRAMS/pv-uring-c/c/build.sh" "$(dirname "$CLIB")" "$WORK/c" >"$WORK/c.out" ||
	die "building the C programs of $PROGRAMS/pv-uring-c/c failed"
read -r -a CBINS <"$WORK/c.out"
CBIN="${CBINS[0]:-}"
CBINS=("${CBINS[@]:1}")
[[ -x "$CBIN" && ${#CBINS[@]} -gt 0 ]] || die "pv-uring-c/c/build.sh printed no program: $(cat "$WORK/c.out")"
GEN="$WORK/gen_init_cpio"
cc -O2 -o "$GEN" "$KTREE/usr/gen_init_cpio.c" || die "cannot build gen_init_cpio"
LIST="$WORK/initramfs.list"
{
	echo "dir /dev 0755 0 0"
	echo "nod /dev/console 0600 0 0 c 5 1"
	echo "nod /dev/null 0666 0 0 c 1 3"
	for d in bin proc sys tmp root etc; do
		[[ $d == tmp ]] && echo "dir /$d 1777 0 0" || echo "dir /$d 0755 0 0"
	done
	echo "file /bin/busybox $BUSYBOX 0755 0 0"
	declare -A prog=()
	for b in "${BINS[@]}" "$CBIN" "${CBINS[@]}"; do prog[$(basename "$b")]=1; done
	for a in "${APPLETS[@]}"; do prog[$a]=1; done
	while read -r applet; do
		[[ -n "$applet" && -z "${prog[$applet]:-}" && "$applet" != busybox ]] || continue
		echo "slink /bin/$applet busybox 0777 0 0"
	done < <("$BUSYBOX" --list | sort -u)
	for b in "${BINS[@]}"; do
		echo "file /bin/$(basename "$b") $b 0755 0 0"
	done
	for a in "${APPLETS[@]}"; do
		echo "slink /bin/$a rv-guest 0777 0 0"
	done
	# The kernel runs /init with argv[0] "/init": rv-guest starts rv-init.
	echo "slink /init /bin/rv-guest 0777 0 0"
} >"$LIST"
grep -v -e ' busybox ' -e ' /bin/busybox ' "$LIST" >"$WORK/initramfs-min.list"
{
	echo "file /bin/$(basename "$CBIN") $CBIN 0755 0 0"
	for c in "${CBINS[@]}"; do echo "slink /bin/$c $(basename "$CBIN") 0777 0 0"; done
} >>"$LIST"
"$GEN" -t 0 "$LIST" >"$WORK/initramfs.cpio" 2>"$WORK/gen.log" ||
	{ cat "$WORK/gen.log" >&2; die "gen_init_cpio failed"; }
"$GEN" -t 0 "$WORK/initramfs-min.list" >"$WORK/initramfs-min.cpio" 2>"$WORK/gen.log" ||
	{ cat "$WORK/gen.log" >&2; die "gen_init_cpio failed (minimal initramfs)"; }

rm -rf "$GUEST_DIR"
mkdir -p "$GUEST_DIR"
ln "$KERNEL_OUT" "$GUEST_DIR/vmlinux" 2>/dev/null || cp "$KERNEL_OUT" "$GUEST_DIR/vmlinux"
cp "$(dirname "$KERNEL_OUT")/config" "$GUEST_DIR/kernel.config"
mv "$WORK/initramfs.cpio" "$GUEST_DIR/initramfs.cpio"
mv "$WORK/initramfs-min.cpio" "$GUEST_DIR/initramfs-min.cpio"
cp "$LIST" "$GUEST_DIR/initramfs.list"
touch "$GUEST_DIR/.complete"
log "initramfs: $(du -k "$GUEST_DIR/initramfs.cpio" | cut -f1) KiB ($(du -k "$GUEST_DIR/initramfs-min.cpio" | cut -f1) KiB without busybox), ${#BINS[@]} programs: $(printf '%s ' "${BINS[@]##*/}")+ C: pvu-c (${CBINS[*]})"
print_paths "$GUEST_DIR/vmlinux" "$GUEST_DIR/initramfs.cpio"
