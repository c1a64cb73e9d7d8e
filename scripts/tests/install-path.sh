#!/usr/bin/env bash
# Unit test of the set-up's install path: runs `guest-images/build.sh
# --install-only` (the real script, top to bottom up to its package step)
# against stub dpkg-query, apt-get and sudo placed first on PATH, and checks
#   - nothing installed: apt-get is asked for exactly the missing packages,
#     and build.sh exits 0 without an error line;
#   - some installed: apt-get is asked for exactly the rest;
#   - everything installed: apt-get is not run;
#   - apt-get failing: build.sh exits non-zero with exactly one error line,
#     and that line names the package apt-get could not install.
# The stubs keep the installed set in a file: dpkg-query answers from it the
# way the real one does (exit 1, "no packages found" for an unknown name).
set -Eeuo pipefail
trap 'echo "install-path.sh: error: ${BASH_SOURCE[0]##*/}:$LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$REPO/guest-images/build.sh"
# shellcheck source=guest-images/packages.sh
source "$REPO/guest-images/packages.sh"

T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
failures=0

fail() {
	echo "install-path: FAIL $CASE: $*" >&2
	failures=$((failures + 1))
}

make_stubs() {
	mkdir -p "$T/bin"
	cat >"$T/bin/dpkg-query" <<'EOF'
#!/usr/bin/env bash
# dpkg-query -W -f=FORMAT PACKAGE: FORMAT is "${Status} ${Version}\n".
pkg="${!#}"
if grep -qx "$pkg" "$STUB_INSTALLED"; then
	printf 'install ok installed 1.0-stub\n'
	exit 0
fi
echo "dpkg-query: no packages found matching $pkg" >&2
exit 1
EOF
	cat >"$T/bin/apt-get" <<'EOF'
#!/usr/bin/env bash
# Records each call; "install" adds the packages to the installed set,
# unless STUB_APT_FAIL names one: then it installs nothing and fails as
# apt-get does for a package it cannot find.
echo "apt-get $*" >>"$STUB_CALLS"
args=()
for a in "$@"; do
	case "$a" in -o) skip=1; continue ;; esac
	if [[ -n "${skip:-}" ]]; then skip=; continue; fi
	[[ "$a" == -* ]] || args+=("$a")
done
[[ "${args[0]}" == install ]] || exit 0
if [[ -n "${STUB_APT_FAIL:-}" ]]; then
	echo "E: Unable to locate package $STUB_APT_FAIL" >&2
	exit 100
fi
printf '%s\n' "${args[@]:1}" >>"$STUB_INSTALLED"
EOF
	printf '#!/bin/sh\nexec "$@"\n' >"$T/bin/sudo"
	chmod +x "$T/bin"/*
}

# run_case NAME INSTALLED... : runs build.sh --install-only with INSTALLED
# as the installed set; leaves its status in $status, stderr in $T/err.
run_case() {
	CASE="$1"
	shift
	printf '%s\n' "$@" >"$T/installed"
	: >"$T/calls"
	status=0
	STUB_INSTALLED="$T/installed" STUB_CALLS="$T/calls" \
		RINGVISOR_CACHE="$T/cache" PATH="$T/bin:$PATH" \
		bash "$BUILD" --install-only >"$T/out" 2>"$T/err" || status=$?
}

# The packages the one `apt-get install` call asked for, sorted.
asked_for() {
	{ grep ' install ' "$T/calls" || true; } | sed 's/.* install //' | tr ' ' '\n' | { grep -v '^-' || true; } | sort
}

expect_install() {
	local want got
	want="$(printf '%s\n' "$@" | sort)"
	got="$(asked_for)"
	[[ $status -eq 0 ]] || fail "build.sh --install-only exited $status"
	[[ "$(grep -c ' install ' "$T/calls" || true)" -eq 1 ]] || fail "expected one apt-get install, got: $(cat "$T/calls")"
	[[ "$got" == "$want" ]] || fail "apt-get was asked for [$(echo $got)], expected [$(echo $want)]"
	! grep -qi 'error' "$T/err" || fail "unexpected error output: $(grep -i error "$T/err")"
}

make_stubs

run_case "nothing installed"
expect_install "${GUEST_PACKAGES[@]}"

run_case "some installed" build-essential flex bison cpio
expect_install linux-source-6.1 busybox-static bc libelf-dev libssl-dev xz-utils

run_case "everything installed" "${GUEST_PACKAGES[@]}"
[[ $status -eq 0 ]] || fail "build.sh --install-only exited $status"
[[ ! -s "$T/calls" ]] || fail "apt-get ran although nothing was missing: $(cat "$T/calls")"

STUB_APT_FAIL=linux-source-6.1 run_case "apt-get failing" busybox-static build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils
[[ $status -ne 0 ]] || fail "build.sh --install-only exited 0 although apt-get failed"
errors="$(grep -i 'error' "$T/err" | grep -v '^E: ' || true)"
[[ -n "$errors" && "$(wc -l <<<"$errors")" -eq 1 ]] ||
	fail "expected exactly one error line, got: [$errors]"
grep -q 'linux-source-6.1' <<<"$errors" || fail "the error line does not name linux-source-6.1: [$errors]"

if [[ $failures -gt 0 ]]; then
	sed 's/^/  build.sh stderr: /' "$T/err" >&2
	echo "install-path: $failures failed" >&2
	exit 1
fi
echo "install-path: 4 passed, 0 failed" >&2
