#!/usr/bin/env bash
# The whole ringvisor test suite, from a fresh Debian 12 machine:
#   1. builds the guest image (installs apt packages and builds the guest
#      kernel on first use; cached under ${RINGVISOR_CACHE:-~/.cache/ringvisor}),
#   2. checks the guest kernel patch series: checkpatch --strict and a
#      build after each patch (guest-kernel-patches/check.sh; cached),
#   3. checks formatting and clippy (host workspace and guest programs),
#   4. runs the fuzz targets (fuzz/) for a bounded time each,
#   5. runs the unit tests of both workspaces,
#   6. boots guests under the ringvisor binary (tests/),
#   7. runs the README's two commands in a fresh Debian 12 root
#      (scripts/fresh-machine.sh).
# Before all that, scripts/tests/*.sh test the set-up scripts themselves.
# Boot tests need /dev/kvm; RINGVISOR_SKIP_KVM_TESTS=1 skips them explicitly,
# RINGVISOR_SKIP_FRESH_MACHINE=1 skips step 7. RINGVISOR_IN_FRESH_MACHINE=1
# (set by scripts/fresh-machine.sh for the run inside its root) skips step 7
# and the kernel builds of step 2, which the outer run does; it also sets
# RINGVISOR_SKIP_BENCH_TEST=1, which skips tests/bench.rs's bench run.
#
# Skips are counted: every test that skips (only because a documented skip
# variable asked) appends a line "<test name>: <reason>" to the file named by
# RINGVISOR_SKIP_LOG, and the closing summary prints them all.
set -Eeuo pipefail
# Every failure names itself (set -E: in functions and subshells too).
trap 'echo "test-all.sh: error: ${BASH_SOURCE[0]##*/}:$LINENO: command failed with status $?: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*" >&2; }

RINGVISOR_SKIP_LOG="$(mktemp "${TMPDIR:-/tmp}/ringvisor-skips.XXXXXX")"
export RINGVISOR_SKIP_LOG
# The closing summary, on success and on failure alike: a skip is never
# silent.
summary() {
    local status=$?
    local n
    n=$(grep -c . "$RINGVISOR_SKIP_LOG" || true)
    echo "test-all: $n skipped" >&2
    sed 's/^/  /' "$RINGVISOR_SKIP_LOG" >&2
    rm -f "$RINGVISOR_SKIP_LOG"
    if [[ $status -eq 0 ]]; then
        echo "test-all: passed" >&2
    else
        echo "test-all: FAILED (status $status)" >&2
    fi
}
trap summary EXIT

if ! command -v cargo >/dev/null; then
    echo "test-all: cargo is required (install Rust with rustup)" >&2
    exit 1
fi

step "set-up script tests (scripts/tests/)"
for t in scripts/tests/*.sh; do
    bash "$t"
done

step "guest image (kernel, initramfs, guest programs)"
paths=$(bash guest-images/build.sh)
kernel=$(sed -n 's/^KERNEL=//p' <<<"$paths" | tail -n1)
initramfs=$(sed -n 's/^INITRAMFS=//p' <<<"$paths" | tail -n1)
export RINGVISOR_KERNEL="$kernel" RINGVISOR_INITRAMFS="$initramfs"
echo "kernel: $kernel" >&2
echo "initramfs: $initramfs" >&2

step "guest kernel patch series: checkpatch --strict, each patch builds"
if [[ -n "${RINGVISOR_IN_FRESH_MACHINE:-}" ]]; then
    # The outer run (the one that started scripts/fresh-machine.sh) builds
    # this commit's series; six kernel builds again in the fresh root would
    # add minutes and no information. checkpatch and applying still run.
    bash guest-kernel-patches/check.sh --checkpatch-only
    echo "guest kernel patch series builds: inside the fresh machine, checkpatch only; the outer run builds the series (RINGVISOR_IN_FRESH_MACHINE=1)" >>"$RINGVISOR_SKIP_LOG"
else
    bash guest-kernel-patches/check.sh
fi

step "host packages the tests need"
# The bench's PNG charts lay out text with a TrueType font
# (bench/src/charts.rs); the project ships none.
PKG_WHO=test-all.sh
# shellcheck source=guest-images/packages.sh
source guest-images/packages.sh
install_packages fonts-dejavu-core
# tests/files.rs runs a Debian program the project does not build (jq,
# dynamically linked with libjq and libonig); tests/disk_fs.rs makes and
# reads an ext4 image (mkfs.ext4, debugfs, e2fsck).
install_packages jq e2fsprogs

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd guest-images/programs && cargo fmt --all -- --check &&
    cargo clippy --workspace --all-targets --locked -- -D warnings)

# The coverage-guided fuzz targets, each for FUZZ_SECS (default 30) from an
# empty corpus kept in fuzz/target. cargo-fuzz's instrumentation is plain
# codegen options (SanitizerCoverage), so the stable toolchain builds them;
# no sanitizer runtime is needed for safe Rust: a panic is the finding.
fuzz_secs="${FUZZ_SECS:-30}"
step "fuzz targets, ${fuzz_secs} s each (libFuzzer)"
sancov=(-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks)
# With an explicit --target (as cargo-fuzz does), RUSTFLAGS skip build
# scripts, which must not be instrumented.
host=$(rustc -vV | sed -n 's/^host: //p')
(cd fuzz && RUSTFLAGS="${sancov[*]}" cargo build --release --locked --bins --target "$host")
for target in pv_uring_control block_request sqe_policy snapshot_load; do
    corpus="fuzz/target/corpus/$target"
    mkdir -p "$corpus"
    fuzz/target/"$host"/release/"$target" -max_total_time="$fuzz_secs" -print_final_stats=1 \
        -artifact_prefix=fuzz/target/ "$corpus" 2>"fuzz/target/$target.log" ||
        { tail -n 40 "fuzz/target/$target.log" >&2; echo "test-all: fuzz target $target failed" >&2; exit 1; }
    grep -E '^stat::number_of_executed_units|^Done' "fuzz/target/$target.log" >&2 || true
done

step "guest program unit tests (on the host)"
(cd guest-images/programs && cargo test --workspace --locked)

step "host unit tests and boot tests"
cargo test --workspace --locked

step "the README's two commands on a fresh Debian 12 root (scripts/fresh-machine.sh)"
if [[ -n "${RINGVISOR_IN_FRESH_MACHINE:-}" ]]; then
    # This run is the fresh machine's own: running it again inside would
    # recurse.
    echo "test-all: skipped: already inside the fresh machine" >&2
    echo "fresh-machine: this run is inside the fresh machine (RINGVISOR_IN_FRESH_MACHINE=1)" >>"$RINGVISOR_SKIP_LOG"
elif [[ "${RINGVISOR_SKIP_FRESH_MACHINE:-}" == 1 ]]; then
    echo "test-all: skipped: RINGVISOR_SKIP_FRESH_MACHINE=1" >&2
    echo "fresh-machine: RINGVISOR_SKIP_FRESH_MACHINE=1" >>"$RINGVISOR_SKIP_LOG"
else
    bash scripts/fresh-machine.sh
fi
