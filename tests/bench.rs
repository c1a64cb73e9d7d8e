//! `ringvisor bench --quick`: every suite runs (host-native io_uring, guests
//! running ring-pool, pv-bench and blk-io, boots) and results.json is
//! complete: the machine, points of every suite (the registration suite's
//! rings sweep and every raw sample included), what became of the host
//! 2 MiB points, and every figure a positive number with its unit.

mod common;

use std::path::PathBuf;

use common::{ringvisor, skip_without_kvm};
use serde_json::Value;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every `{"value", "unit"}` object under `v`, with its JSON path.
fn figures<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("value") && m.contains_key("unit") {
                out.push((path.clone(), v));
            }
            for (k, c) in m {
                figures(c, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                figures(c, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)
}

/// The number in a `{"value", "unit"}` figure; panics if there is none (a
/// comparison of two missing values must not pass).
fn number(fig: &Value, what: &str) -> f64 {
    fig["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no number in {fig}"))
}

/// A registration point's latencies: three figures in microseconds, in
/// order min <= median <= p99.
fn check_latencies(p: &Value) {
    for f in ["min", "median", "p99"] {
        assert_eq!(p[f]["unit"], "us", "{f}: {p}");
    }
    let (min, median, p99) = (
        number(&p["min"], "min"),
        number(&p["median"], "median"),
        number(&p["p99"], "p99"),
    );
    assert!(min <= median && median <= p99, "{p}");
}

/// The io suite's VMM CPU per request, for the virtio-blk guest and the pv
/// guest: each a measured figure in microseconds. One published as not
/// measured (null), or as a bound instead of a measurement, fails.
fn check_vmm_cpu(io: &Value) {
    let list = io["vmm_cpu"].as_array().expect("io.vmm_cpu");
    let paths: Vec<&str> = list.iter().filter_map(|c| c["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["guest-virtio-blk", "guest-pv-ring+guest-pv-ring-sqpoll"],
        "{list:?}"
    );
    for c in list {
        let f = &c["vmm_cpu_per_request"];
        assert!(
            positive(&f["value"]["value"]) && f["value"]["unit"] == "us",
            "VMM CPU per request must be measured, in us: {c}"
        );
        assert!(f.get("not_measured").is_none(), "{c}");
        assert!(positive(&f["ops"]), "{c}");
    }
}

/// The checks above reject what they claim to, on a small stand-in for
/// results.json (no guest needed: this runs everywhere).
#[test]
fn result_checks_reject_missing_and_unmeasured_figures() {
    let fig = |v: f64| serde_json::json!({"value": v, "unit": "us"});
    let point = serde_json::json!({"min": fig(1.0), "median": fig(2.0), "p99": fig(3.0)});
    check_latencies(&point);
    let caught = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    for key in ["min", "median", "p99"] {
        let mut p = point.clone();
        p[key]["value"] = Value::Null;
        assert!(caught(&|| check_latencies(&p)), "{key} missing passed");
    }
    let mut p = point.clone();
    p["min"] = fig(5.0);
    assert!(caught(&|| check_latencies(&p)), "min > median passed");

    let cpu = |v: Value| serde_json::json!({"value": v, "ops": 10.0});
    let io = serde_json::json!({"vmm_cpu": [
        {"path": "guest-virtio-blk", "vmm_cpu_per_request": cpu(fig(4.0))},
        {"path": "guest-pv-ring+guest-pv-ring-sqpoll", "vmm_cpu_per_request": cpu(fig(2.0))},
    ]});
    check_vmm_cpu(&io);
    let mut unmeasured = io.clone();
    unmeasured["vmm_cpu"][1]["vmm_cpu_per_request"] = cpu(Value::Null);
    unmeasured["vmm_cpu"][1]["vmm_cpu_per_request"]["not_measured"] = "under one tick".into();
    assert!(caught(&|| check_vmm_cpu(&unmeasured)), "null passed");
    // What was published before: one clock tick over the requests, a bound.
    let mut bound = io.clone();
    bound["vmm_cpu"][0]["vmm_cpu_per_request"]["value"]["unit"] =
        "us (upper bound: under one clock tick)".into();
    assert!(caught(&|| check_vmm_cpu(&bound)), "a bound passed");
    let mut missing = io.clone();
    missing["vmm_cpu"].as_array_mut().unwrap().pop();
    assert!(caught(&|| check_vmm_cpu(&missing)), "a missing path passed");
}

/// `ringvisor bench ARGS` runs `ringvisor-bench ARGS` (a separate crate's
/// binary), its usage errors included.
#[test]
fn ringvisor_bench_runs_the_bench_binary() {
    common::build_bench();
    let help = common::run_raw(&["bench", "--help"]);
    help.check(help.status == Some(0), "ringvisor bench --help failed");
    help.check(
        help.stdout.contains("ringvisor-bench") && help.stdout.contains("--no-pin"),
        "ringvisor bench --help is not ringvisor-bench's help",
    );
    let bad = common::run_raw(&["bench", "--suite", "disk"]);
    bad.check(bad.status == Some(2), "a bad suite is not a usage error");
    bad.check(
        bad.stderr.starts_with("ringvisor-bench: ") && bad.stderr.contains("disk"),
        "a bad suite's error does not name it",
    );
}

#[test]
fn quick_bench_writes_complete_results() {
    if common::skip::skip_bench_test() || skip_without_kvm() {
        return;
    }
    common::build_bench();
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{}", std::process::id())),
    );
    let out = ringvisor()
        .args(["bench", "--quick", "--out"])
        .arg(&dir.0)
        .env(
            "RINGVISOR_GUEST_BUILD",
            common::repo_root().join("guest-images/build.sh"),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawning ringvisor bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench --quick failed ({:?})\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("estimated"),
        "no duration estimate:\n{stderr}"
    );
    assert!(stdout.contains("summary"), "no summary table:\n{stdout}");

    let text = std::fs::read_to_string(dir.0.join("results.json")).expect("results.json");
    let r: Value = serde_json::from_str(&text).expect("results.json is JSON");
    let m = &r["machine"];
    for key in ["cpu_model", "kernel", "kvm"] {
        assert!(
            m[key].as_str().is_some_and(|s| !s.is_empty()),
            "machine.{key} missing: {m}"
        );
    }
    assert!(m["kvm"] == "PVM" || m["kvm"] == "hardware", "{m}");
    assert!(m["hugepages"].is_array(), "{m}");

    // Registration: register and clone on the host and in both guests.
    let reg = r["suites"]["registration"]["points"]
        .as_array()
        .expect("registration points");
    // Guest pools of both page sizes: 2 MiB (hugetlbfs) and 4 KiB.
    for (source, method, page) in [
        ("host", "register", "4K"),
        ("host", "clone", "4K"),
        ("guest-ring-pool", "register", "2M"),
        ("guest-ring-pool", "clone", "2M"),
        ("guest-ring-pool", "register", "4K"),
        ("guest-ring-pool", "clone", "4K"),
        ("guest-pv-bench", "register", "2M"),
        ("guest-pv-bench", "clone", "2M"),
    ] {
        let p = reg
            .iter()
            .find(|p| p["source"] == source && p["method"] == method && p["page"] == page)
            .unwrap_or_else(|| panic!("no {source} {method} {page} point in {text}"));
        check_latencies(p);
        // A 2 MiB-page guest says what backed its RAM on the host.
        if source != "host" && page == "2M" {
            let backing = p["guest_ram_host_pages"].as_str();
            assert!(matches!(backing, Some("2M" | "4K")), "{p}");
        }
    }
    let sweep = r["suites"]["registration"]["rings_sweep"]
        .as_array()
        .expect("registration rings_sweep");
    // Every point, host and guest: its raw samples (as many as it counts)
    // and the time until all its rings hold the pool.
    for p in reg.iter().chain(sweep) {
        let raw = &p["samples"];
        assert_eq!(raw["unit"], "us", "{p}");
        let values = raw["values"].as_array().expect("raw samples");
        assert!(!values.is_empty() && values.iter().all(positive), "{p}");
        assert_eq!(Some(values.len() as u64), p["sample_count"].as_u64(), "{p}");
        assert_eq!(p["total"]["unit"], "us", "{p}");
        assert!(p["rings"].as_u64().is_some_and(|n| n >= 1), "{p}");
    }
    assert!(
        reg.iter().all(|p| p["rings"] == 8),
        "pool-size points have 8 rings"
    );
    // The rings sweep: one ring is the first registration only; 2 to 64
    // rings register again and clone, one sample per ring but ring 0 in
    // the guests.
    for source in ["host", "guest-ring-pool", "guest-pv-bench"] {
        let at = |method: &str, rings: u64| {
            sweep.iter().find(|p| {
                p["source"] == source
                    && p["method"] == method
                    && p["rings"] == rings
                    && (source != "host" || p["page"] == "4K")
            })
        };
        let one = at("first-register", 1).unwrap_or_else(|| panic!("{source}: 1 ring"));
        assert_eq!(one["sample_count"], 1);
        assert!(at("register", 1).is_none() && at("clone", 1).is_none());
        for n in [2u64, 4, 8, 16, 32, 64] {
            for method in ["first-register", "register", "clone"] {
                let p = at(method, n).unwrap_or_else(|| panic!("no {source} {method} {n}"));
                let count = p["sample_count"].as_u64().unwrap();
                let want = if method == "first-register" { 1 } else { n - 1 };
                if source == "host" {
                    assert!(count >= want, "{p}");
                } else {
                    assert_eq!(count, want, "{p}");
                }
            }
        }
    }
    assert!(
        sweep
            .iter()
            .any(|p| p["source"] == "guest-pv-bench" && p["method"] == "table-clone"),
        "pv-bench table-clone in the sweep"
    );
    let ratios = r["suites"]["registration"]["ratios"].as_array().unwrap();
    assert!(ratios.len() >= 3, "register/clone ratios: {ratios:?}");
    let sweep_ratios = r["suites"]["registration"]["rings_sweep_ratios"]
        .as_array()
        .unwrap();
    assert!(sweep_ratios.len() >= 18, "sweep ratios: {sweep_ratios:?}");

    // Host 2 MiB pages: measured (with free or reserved hugepages, the
    // pool restored), or each point skipped with its reason; never left
    // out silently.
    let huge = &r["suites"]["registration"]["host_hugepages"];
    let skipped = r["suites"]["registration"]["skipped"].as_array().unwrap();
    for sweep_point in [false, true] {
        let list = if sweep_point { sweep } else { reg };
        let measured = list
            .iter()
            .any(|p| p["source"] == "host" && p["page"] == "2M");
        let skip = skipped.iter().find(|s| {
            let l = s["point"].as_str().unwrap_or("");
            l.contains("2M pages") && l.contains("rings") == sweep_point
        });
        assert!(measured != skip.is_some(), "host 2M: {huge} {skipped:?}");
        if let Some(s) = skip {
            assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
            assert!(
                stdout.contains("skipped"),
                "skip not in the table:\n{stdout}"
            );
        }
    }
    if huge["status"] == "reserved" {
        assert_eq!(
            huge["nr_hugepages_restored_to"],
            huge["nr_hugepages_before"]
        );
    }

    // I/O: random reads and writes on five paths at QD1 and QD32, and
    // ratios: virtio-blk to the host; each pv ring to the host, to the
    // host's SQPOLL ring and to virtio-blk.
    let io = r["suites"]["io"]["points"].as_array().expect("io points");
    let paths = [
        "host",
        "host-sqpoll",
        "guest-virtio-blk",
        "guest-pv-ring",
        "guest-pv-ring-sqpoll",
    ];
    for path in paths {
        for op in ["randread", "randwrite"] {
            for qd in [1, 32] {
                let p = io
                    .iter()
                    .find(|p| p["path"] == path && p["op"] == op && p["qd"] == qd)
                    .unwrap_or_else(|| panic!("no {path} {op} qd {qd} point in {text}"));
                assert_eq!(p["iops"]["unit"], "IOPS");
                assert!(p["samples"]["unit"].is_string(), "{p}");
            }
        }
    }
    assert_eq!(io.len(), paths.len() * 2 * 2, "io points: {io:?}");
    let io_ratios = r["suites"]["io"]["ratios"].as_array().unwrap();
    let r_of = |p: &Value, over: &str| {
        io_ratios
            .iter()
            .find(|q| {
                q["path"] == p["path"]
                    && q["op"] == p["op"]
                    && q["qd"] == p["qd"]
                    && q["ratio"] == over
            })
            .and_then(|q| q["value"]["value"].as_f64())
            .unwrap_or_else(|| panic!("no {over} ratio of {p}"))
    };
    // The pv rings' stall diagnostics: the buckets by length add up to
    // the stall count.
    for p in io.iter().filter(|p| {
        p["path"]
            .as_str()
            .is_some_and(|s| s.starts_with("guest-pv"))
    }) {
        let d = &p["diag"];
        let hist = d["stall_hist"].as_array().expect("stall_hist");
        assert_eq!(hist.len(), 7, "{d}");
        let counted: u64 = hist.iter().map(|b| b[1].as_u64().unwrap()).sum();
        assert_eq!(Some(counted), d["stalls"].as_u64(), "{d}");
        // The host reference measured in the guest's pauses right before
        // and after this run; its mean is what the ratios divide by.
        let reference = &p["host_reference"];
        for host in ["host", "host-sqpoll"] {
            let r = &reference[host];
            let (before, after, mean) = (
                r["before"]["value"].as_f64().expect("before"),
                r["after"]["value"].as_f64().expect("after"),
                r["mean"]["value"].as_f64().expect("mean"),
            );
            assert!((mean - (before + after) / 2.0).abs() < 1e-6, "{reference}");
            let ratio = r_of(p, &format!("guest/{host}"));
            let want = p["iops"]["value"].as_f64().unwrap() / mean;
            assert!((ratio - want).abs() < 1e-9 * want, "{ratio} {want} {p}");
        }
        assert!(reference["sq_threads_asleep"].is_boolean(), "{reference}");
    }
    // Thread placement: chosen (two different CPUs, the SQ threads' one
    // with most of the disk's interrupts) or not, with the reason.
    let placement = &r["suites"]["io"]["placement"];
    match placement["pinned"].as_bool() {
        Some(true) => {
            let share = placement["io_cpu_irq_share"].as_f64().unwrap();
            assert!(
                placement["app_cpu"].as_u64().unwrap() != placement["io_cpu"].as_u64().unwrap()
                    && (0.5..=1.0).contains(&share),
                "{placement}"
            );
        }
        Some(false) => assert!(
            placement["why"].as_str().is_some_and(|w| !w.is_empty()),
            "{placement}"
        ),
        None => panic!("no io placement: {placement}"),
    }
    assert_eq!(io_ratios.len(), 4 * (1 + 2 * 3), "io ratios: {io_ratios:?}");
    check_vmm_cpu(&r["suites"]["io"]);
    for pv in ["guest-pv-ring", "guest-pv-ring-sqpoll"] {
        for over in ["guest/host", "guest/host-sqpoll", "guest/guest-virtio-blk"] {
            assert!(
                io_ratios
                    .iter()
                    .any(|q| q["path"] == pv && q["op"] == "randwrite" && q["ratio"] == over),
                "no {pv} randwrite {over} ratio: {io_ratios:?}"
            );
        }
    }

    // Boot: the three medians.
    let boot = &r["suites"]["boot"]["median"];
    for key in ["to_init", "vmm_share", "rss_beyond_guest_ram"] {
        assert!(boot[key].is_object(), "boot.median.{key}: {boot}");
    }

    // Every figure anywhere: a positive number and a unit.
    let mut all = Vec::new();
    figures(&r, String::new(), &mut all);
    assert!(all.len() > 30, "only {} figures", all.len());
    for (path, f) in all {
        assert!(positive(&f["value"]), "{path}: {f}");
        assert!(
            f["unit"].as_str().is_some_and(|u| !u.is_empty()),
            "{path}: {f}"
        );
    }
    for chart in ["registration.svg", "io.svg"] {
        let svg = std::fs::read_to_string(dir.0.join(chart)).expect(chart);
        assert!(svg.contains("<svg"), "{chart}");
    }
}
