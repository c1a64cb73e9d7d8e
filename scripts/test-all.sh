#!/usr/bin/env bash
# The whole ringvisor test suite, from a fresh Debian 12 machine:
#   1. builds the guest image (installs apt packages and builds the guest
#      kernel on first use; cached under ${RINGVISOR_CACHE:-~/.cache/ringvisor}),
#   2. checks formatting and clippy (host workspace and guest programs),
#   3. runs the unit tests of both workspaces,
#   4. boots guests under the ringvisor binary (tests/).
# Boot tests need /dev/kvm; RINGVISOR_SKIP_KVM_TESTS=1 skips them explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
    echo "test-all: cargo is required (install Rust with rustup)" >&2
    exit 1
fi

step "guest image (kernel, initramfs, guest programs)"
paths=$(bash guest-images/build.sh)
kernel=$(sed -n 's/^KERNEL=//p' <<<"$paths" | tail -n1)
initramfs=$(sed -n 's/^INITRAMFS=//p' <<<"$paths" | tail -n1)
export RINGVISOR_KERNEL="$kernel" RINGVISOR_INITRAMFS="$initramfs"
echo "kernel: $kernel" >&2
echo "initramfs: $initramfs" >&2

step "host packages the tests need"
# The bench's PNG charts lay out text with a TrueType font
# (vmm/src/bench/charts.rs); the project ships none.
if ! dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q "ok installed"; then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -q update >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -q \
        --no-install-recommends install fonts-dejavu-core >&2
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd guest-images/programs && cargo fmt --all -- --check &&
    cargo clippy --workspace --all-targets --locked -- -D warnings)

step "guest program unit tests (on the host)"
(cd guest-images/programs && cargo test --workspace --locked)

step "host unit tests and boot tests"
cargo test --workspace --locked
