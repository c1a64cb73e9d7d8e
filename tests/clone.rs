//! The clone-buffers backport (guest-kernel-patches/0002, 0003), exercised in
//! a real guest: the guest test suite `clone-suite` (every semantic and error
//! code, one line per case) and a small run of the `ring-pool` latency
//! workload, in one boot.

mod common;

use common::{boot, skip_without_kvm};

/// The cases of clone-suite (guest-images/programs/clone-suite/src/cases),
/// in run order. Kept here rather than taken from the guest's output so
/// that a case that drops out of the suite fails this test; a case added
/// there is added here too.
const CASES: &[&str] = &[
    "clone-all-to-empty",
    "fixed-io-through-clone",
    "pages-4k",
    "hugetlb-2m",
    "ebusy-dst-has-buffers",
    "enxio-src-empty",
    "einval-unknown-flags",
    "einval-nonzero-pad",
    "einval-nr-args",
    "einval-offsets-without-nr",
    "einval-nr-exceeds-src",
    "einval-dst-beyond-max",
    "einval-different-mm",
    "einval-different-user",
    "eoverflow-src-wrap",
    "eoverflow-dst-wrap",
    "eoverflow-src-range",
    "efault-bad-pointer",
    "ebadf-bad-fd",
    "eopnotsupp-not-a-ring",
    "eexist-single-issuer-other-task",
    "src-registered-index",
    "clone-into-self",
    "replace-keeps-outside-range",
    "partial-range-maps",
    "after-src-unregister",
    "after-src-close",
    "sqpoll-dst",
    "vmpin-counts-pool-once",
    "vmpin-returns-after-close",
    "memlock-user-charged-once",
    "pool-of-64-rings",
    "concurrent-opposite-clones",
];

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
    // Every case of the suite, by name: each ran (the suite's plan line
    // lists what it selected) and passed exactly once. A case left out,
    // renamed or skipped fails here, not only one that failed.
    let lines: Vec<&str> = run.stdout.lines().map(str::trim_end).collect();
    let plan = format!("clone-suite: {} cases: {}", CASES.len(), CASES.join(" "));
    run.check(
        lines.contains(&plan.as_str()),
        &format!("clone-suite must plan exactly the cases this test lists:\n{plan}"),
    );
    for case in CASES {
        let pass = format!("PASS {case}");
        run.check(
            lines.iter().filter(|l| **l == pass).count() == 1,
            &format!("clone-suite case {case} must run once and pass"),
        );
    }
    run.check(
        !lines
            .iter()
            .any(|l| l.starts_with("FAIL ") || l.starts_with("SKIP ")),
        "no case may fail or be skipped (hugepages are reserved)",
    );
    let summary = format!("{} passed, 0 failed", CASES.len());
    run.check(
        lines.contains(&summary.as_str()),
        &format!("clone-suite must end with `{summary}`"),
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
