#!/usr/bin/env bash
# Unit test of the README contract scripts/fresh-machine.sh relies on: the
# README marks its prerequisites, demo and test blocks, and the check runs
# exactly those (its --print-blocks shows what it extracted). Seconds, no
# root: it catches a README edit that drops a marker long before the
# fresh-machine run would.
set -Eeuo pipefail
trap 'echo "readme-blocks.sh: error: ${BASH_SOURCE[0]##*/}:$LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FRESH="$REPO/scripts/fresh-machine.sh"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
failures=0
passed=0

check() {
	if [[ "$2" == "$3" ]]; then
		passed=$((passed + 1))
	else
		echo "readme-blocks: FAIL $1: got [$2], expected [$3]" >&2
		failures=$((failures + 1))
	fi
}

# The block printed under "== NAME" by --print-blocks.
block() { awk -v n="== $1" '$0 == n { on = 1; next } /^== / { on = 0 } on' "$T/blocks"; }

bash "$FRESH" --print-blocks "$REPO/README.md" >"$T/blocks"
check "demo block" "$(block demo)" "cargo run --release -p vmm -- demo"
check "test block" "$(block test)" "scripts/test-all.sh"
# The prerequisites are apt-get lines and nothing else: the fresh root gets
# only what a new user is told to install.
check "prerequisites are apt-get lines" "$(block prerequisites | grep -vc '^apt-get ' || true)" 0
check "prerequisites name git" "$(block prerequisites | grep -c '\<git\>' || true)" 1

# A README without one marker: the check refuses, in one line naming it.
grep -v -x -F '<!-- fresh-machine: test -->' "$REPO/README.md" >"$T/README.md"
status=0
bash "$FRESH" --print-blocks "$T/README.md" >/dev/null 2>"$T/err" || status=$?
check "missing marker fails" "$([[ $status -ne 0 ]] && echo failed)" failed
check "missing marker: one error line" "$(grep -c 'error' "$T/err" || true)" 1
check "missing marker named" "$(grep -c 'fresh-machine: test' "$T/err" || true)" 1

if [[ $failures -gt 0 ]]; then
	echo "readme-blocks: $passed passed, $failures failed" >&2
	exit 1
fi
echo "readme-blocks: $passed passed, 0 failed" >&2
