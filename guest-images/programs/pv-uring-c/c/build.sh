#!/usr/bin/env bash
# Builds the C programs of the pv-uring C API for the guest: each c/<name>.c
# of PROGRAMS below becomes OUTDIR/<name>, a static x86-64 binary (baseline
# ISA, no AVX: see README "Nested PVM") linked with LIBDIR/libpv_uring_c.a
# (built by `cargo build --release --target x86_64-unknown-linux-gnu` with
# +crt-static, as guest-images/build.sh does). Warnings are errors. Prints
# each binary's path on stdout; messages go to stderr.
#
# usage: c/build.sh LIBDIR OUTDIR
set -Eeuo pipefail
trap 'echo "pv-uring-c/c/build.sh: error: line $LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR

[[ $# -eq 2 ]] || { echo "usage: $0 LIBDIR OUTDIR" >&2; exit 2; }
LIBDIR="$1" OUTDIR="$2"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$LIBDIR/libpv_uring_c.a"
[[ -f "$LIB" ]] || { echo "pv-uring-c/c/build.sh: error: $LIB not found (cargo build --release first)" >&2; exit 1; }
PROGRAMS=(ring-pool-c)

mkdir -p "$OUTDIR"
for p in "${PROGRAMS[@]}"; do
	# The linker warns that std's getpwuid_r/getaddrinfo want glibc's
	# shared NSS modules at run time: never called here, so those lines
	# are dropped; anything else it says is shown.
	if ! "${CC:-cc}" -std=gnu11 -O2 -static -march=x86-64 -mno-avx -mno-avx2 \
		-Wall -Wextra -Werror -I"$HERE/../include" \
		-ffunction-sections -fdata-sections -Wl,--gc-sections -s \
		-o "$OUTDIR/$p" "$HERE/$p.c" "$LIB" -lpthread -ldl -lm >"$OUTDIR/$p.log" 2>&1; then
		cat "$OUTDIR/$p.log" >&2
		echo "pv-uring-c/c/build.sh: error: building $p failed" >&2
		exit 1
	fi
	grep -v -e 'in statically linked applications requires at runtime' \
		-e ": in function \`std::" "$OUTDIR/$p.log" >&2 || true
	rm -f "$OUTDIR/$p.log"
	if readelf -lW "$OUTDIR/$p" | grep -q INTERP; then
		echo "pv-uring-c/c/build.sh: error: $OUTDIR/$p is dynamically linked" >&2
		exit 1
	fi
	echo "$OUTDIR/$p"
done
