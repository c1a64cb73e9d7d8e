//! The clone-buffers backport (guest-kernel-patches/0002, 0003), exercised in
//! a real guest: the guest test suite `clone-suite` (every semantic and error
//! code, one line per case) and a small run of the `ring-pool` latency
//! workload, in one boot.

mod common;

use common::{boot, skip_without_kvm};

#[test]
fn clone_suite_passes_and_ring_pool_reports_both_methods_in_the_guest() {
    if skip_without_kvm() {
        return;
    }
    // hugepages=16: 32 MiB of 2 MiB guest pages for the hugetlbfs cases.
    let run = boot(&[
        "--memory",
        "size=768M",
        "--timeout",
        "900",
        "--cmdline",
        "hugepages=16 -- /bin/sh -c \"/bin/clone-suite; s=$?; \
         /bin/ring-pool --rings 4 --size 8M --page 2M || s=$((s+10)); exit $s\"",
    ]);
    let summary = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, ") && l.contains(" failed"))
        .map(str::trim)
        .unwrap_or("");
    run.check(
        !summary.is_empty(),
        "clone-suite must print its `N passed, N failed` line",
    );
    run.check(
        summary.contains(" 0 failed") && !summary.starts_with("0 passed"),
        "every clone-suite case must pass",
    );
    run.check(
        !run.stdout.lines().any(|l| l.starts_with("FAIL ")),
        "no case may fail",
    );
    run.check(
        !run.stdout.lines().any(|l| l.starts_with("SKIP ")),
        "no case may be skipped in the guest (hugepages are reserved)",
    );

    // ring-pool: one JSON line per method, then the summary with the ratio.
    let json: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    for method in ["register", "clone"] {
        let line = json
            .iter()
            .find(|j| j["kind"] == "ring-pool" && j["method"] == method);
        run.check(line.is_some(), &format!("ring-pool must report {method}"));
        let line = line.unwrap();
        for key in ["min_us", "median_us", "p99_us"] {
            let v = line[key].as_f64().unwrap_or(-1.0);
            run.check(v > 0.0, &format!("{method} {key} must be positive"));
        }
    }
    let summary = json.iter().find(|j| j["kind"] == "ring-pool-summary");
    run.check(summary.is_some(), "ring-pool must print its summary");
    let ratio = summary.unwrap()["ratio_register_over_clone"]
        .as_f64()
        .unwrap_or(0.0);
    run.check(
        ratio > 1.0,
        "cloning must be faster than registering again in the guest",
    );
    run.check(run.status == Some(0), "the guest workload must exit 0");
}
