//! Skipping a test: only when a documented variable asks for it, and never
//! silently.
//!
//! cargo hides the output of a passing test, so a test that returns early
//! looks exactly like one that ran. Every skip therefore goes through
//! [`record`]: it prints `skipped: <test>: <reason>` on stderr, and when
//! `RINGVISOR_SKIP_LOG` names a file (scripts/test-all.sh sets it), appends
//! `<test>: <reason>` to it, so that the run's summary can count the skips.
//!
//! Shared by the boot tests (tests/common/mod.rs) and by unit tests that
//! need /dev/kvm (included with `#[path]`: a test helper has no place in a
//! crate's public API, and `cfg(test)` items are not visible across crates).

#![allow(dead_code)]

use std::io::Write;

/// The documented variable (README, scripts/test-all.sh) that skips every
/// test needing /dev/kvm when it is `1`.
pub const SKIP_KVM_VAR: &str = "RINGVISOR_SKIP_KVM_TESTS";
/// The documented variable that skips the bench's end-to-end test (a
/// ten-minute `bench --quick`) when it is `1`: scripts/fresh-machine.sh
/// sets it for the suite it runs inside its root, after the outer suite
/// ran that test on the same commit.
pub const SKIP_BENCH_VAR: &str = "RINGVISOR_SKIP_BENCH_TEST";
/// The file each skip is appended to, one line each, when set.
pub const SKIP_LOG_VAR: &str = "RINGVISOR_SKIP_LOG";

/// The running test's name, prefixed with its crate (or test binary): the
/// test harness names each test's thread after the test.
pub fn current_test() -> String {
    // module_path!() is this module's path inside whatever crate included
    // it: its first segment is that crate (`vmm`, or `boot` for tests/boot.rs).
    let krate = module_path!().split("::").next().unwrap_or("?");
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unknown test");
    format!("{krate}::{name}")
}

/// Records that `test` is skipped for `reason`: printed, and appended to
/// `$RINGVISOR_SKIP_LOG` when that is set. A skip that cannot be recorded
/// fails the test: an uncounted skip is what this exists to prevent.
pub fn record(test: &str, reason: &str) {
    let line = format!("{test}: {}", reason.replace('\n', " "));
    eprintln!("skipped: {line}");
    let Some(log) = std::env::var_os(SKIP_LOG_VAR).filter(|v| !v.is_empty()) else {
        return;
    };
    // One write of one line with O_APPEND: lines from tests running in
    // parallel (threads or processes) do not interleave.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("{SKIP_LOG_VAR}={}: {e}", log.to_string_lossy()));
    f.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{SKIP_LOG_VAR}={}: {e}", log.to_string_lossy()));
}

/// Whether the running test, which needs `/dev/kvm` (`what`: what for),
/// must be skipped: only when `RINGVISOR_SKIP_KVM_TESTS=1`, and then the
/// skip is recorded. Without the variable, an unusable /dev/kvm panics: a
/// machine that cannot run the test must not look like one where it passed.
pub fn skip_without_kvm(what: &str) -> bool {
    if std::env::var_os(SKIP_KVM_VAR).is_some_and(|v| v == "1") {
        record(&current_test(), &format!("{SKIP_KVM_VAR}=1 ({what})"));
        return true;
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("/dev/kvm is unusable ({e}); set {SKIP_KVM_VAR}=1 to skip the tests that need it");
    }
    false
}

/// Whether the bench's end-to-end test must be skipped (only when
/// `RINGVISOR_SKIP_BENCH_TEST=1`; the skip is recorded).
pub fn skip_bench_test() -> bool {
    if std::env::var_os(SKIP_BENCH_VAR).is_some_and(|v| v == "1") {
        record(&current_test(), &format!("{SKIP_BENCH_VAR}=1"));
        return true;
    }
    false
}
