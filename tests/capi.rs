//! The C API of pv rings in a guest: one boot runs the C example
//! `ring-pool-c` (guest-images/programs/pv-uring-c/c/ring-pool-c.c, linked
//! with libpv_uring_c.a, shipped in the image by guest-images/build.sh) on
//! 8 rings (ring 0 polled) sharing a 4 MiB pool of 2 MiB pages by clone,
//! with a scratch backend, then the C suite `capi-suite` (c/capi-suite.c:
//! batches, flow control, timeouts, refused SQEs, registration and
//! translation, partial and replacing clones, the host table, linked
//! write + fsync, polled rings, interrupts off, the buffer arena: one pool
//! on several rings with one call and data through them), every case of
//! which must print `PASS`. The VM has a 16 MiB arena for the last. The
//! test requires, from ring-pool-c's JSON lines:
//! - a line per method (first-register, register, clone, publish,
//!   table-clone, nop, write, read) with as many samples as the run made
//!   (rings - 1 per ring method, rings x ios per request), each latency
//!   positive and finite, min <= median <= p99 <= max, and the median and
//!   extremes those of its own `samples_us` (nearest rank), so the figures
//!   are the measured ones;
//! - the summary's medians equal to the method lines' and its ratio equal
//!   to register / clone, every block it wrote read back through the next
//!   ring and verified.
//!
//! And on the host, the scratch file must hold exactly the blocks the
//! program says it wrote (its pattern), the rest untouched.

mod common;

use common::{boot, skip_without_kvm};
use serde_json::Value;
use std::path::PathBuf;

const RINGS: u64 = 8;
const IOS: u64 = 16;
const BLOCK: usize = 4096;
/// Blocks of the scratch file (the program writes the first RINGS x IOS).
const FILE_BLOCKS: usize = 512;
/// What the untouched blocks of the scratch file hold.
const FILL: u8 = 0xe7;

/// ring-pool-c.c's `pattern()`: the block written by `ring`'s `io`-th write.
fn pattern(ring: u64, io: u64) -> Vec<u8> {
    (0..BLOCK as u64)
        .map(|i| (i * 31 + ring * 7 + io * 13 + (i >> 8)) as u8)
        .collect()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nearest_rank(sorted: &[f64], pct: usize) -> f64 {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Checks one method line; returns its median.
fn check_method(v: &Value, want_samples: u64) -> Result<f64, String> {
    let m = v["method"].as_str().unwrap_or("?");
    let f = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("{m}: no number {k} in {v}"))
    };
    let samples: Vec<f64> = v["samples_us"]
        .as_array()
        .ok_or(format!("{m}: no samples_us"))?
        .iter()
        .map(|s| s.as_f64().unwrap_or(f64::NAN))
        .collect();
    if v["samples"].as_u64() != Some(want_samples) || samples.len() as u64 != want_samples {
        return Err(format!(
            "{m}: {} samples ({} listed), want {want_samples}",
            v["samples"],
            samples.len()
        ));
    }
    if samples.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(format!(
            "{m}: a sample not positive and finite: {samples:?}"
        ));
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let (min, med, p99, max) = (f("min_us")?, f("median_us")?, f("p99_us")?, f("max_us")?);
    if !(min <= med && med <= p99 && p99 <= max) {
        return Err(format!(
            "{m}: min {min} median {med} p99 {p99} max {max} out of order"
        ));
    }
    for (name, got, want) in [
        ("min", min, sorted[0]),
        ("median", med, nearest_rank(&sorted, 50)),
        ("p99", p99, nearest_rank(&sorted, 99)),
        ("max", max, sorted[sorted.len() - 1]),
    ] {
        if (got - want).abs() > 0.0015 {
            return Err(format!("{m}: {name} {got} is not its samples' {want}"));
        }
    }
    let mean = f("mean_us")?;
    if !(min..=max).contains(&mean) {
        return Err(format!("{m}: mean {mean} outside [{min}, {max}]"));
    }
    Ok(med)
}

/// Every case of capi-suite (c/capi-suite.c), in its order.
const SUITE: [&str; 12] = [
    "ring-params",
    "nop-batch",
    "flow-control",
    "wait-timeout",
    "refused-sqes",
    "register-translate",
    "clone-offset-replace",
    "table",
    "link-fsync",
    "polled",
    "interrupt-off",
    "arena",
];

/// What is wrong with capi-suite's output: a case of [`SUITE`] without
/// exactly one `PASS` line, any `FAIL` line, a missing or wrong summary.
fn check_suite(stdout: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    for case in SUITE {
        let n = lines
            .iter()
            .filter(|l| **l == format!("PASS {case}"))
            .count();
        if n != 1 {
            problems.push(format!("{case}: {n} PASS lines, want 1"));
        }
    }
    problems.extend(
        lines
            .iter()
            .filter(|l| l.starts_with("FAIL "))
            .map(|l| l.to_string()),
    );
    let want = format!("{} passed, 0 failed", SUITE.len());
    if !lines.contains(&want.as_str()) {
        problems.push(format!("no summary line {want:?}"));
    }
    problems
}

#[test]
fn the_suite_check_finds_missing_and_failed_cases() {
    let good: String = SUITE
        .iter()
        .map(|c| format!("PASS {c}\n"))
        .collect::<String>()
        + &format!("{} passed, 0 failed\n", SUITE.len());
    assert!(check_suite(&good).is_empty());
    let missing = good.replace("PASS table\n", "");
    assert!(check_suite(&missing)
        .iter()
        .any(|p| p.starts_with("table: 0")));
    let failed = good.replace("PASS polled\n", "FAIL polled: x\n");
    assert!(check_suite(&failed).iter().any(|p| p == "FAIL polled: x"));
    let short = good.replace(
        &format!("{} passed", SUITE.len()),
        &format!("{} passed", SUITE.len() - 1),
    );
    assert_eq!(check_suite(&short).len(), 1);
}

/// The medians of each method, by name.
type Medians = std::collections::HashMap<&'static str, f64>;

/// Checks ring-pool-c's output (see the module comment); returns the
/// medians, or every problem found.
fn check_output(stdout: &str) -> Result<Medians, Vec<String>> {
    let mut problems = Vec::new();
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| l.find("{\"kind\":\"ring-pool-c").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l.trim()).unwrap_or(Value::Null))
        .collect();
    if lines.iter().any(Value::is_null) {
        problems.push("a ring-pool-c line is not JSON".to_string());
    }
    let per_ring = RINGS - 1;
    let per_io = RINGS * IOS;
    let mut medians = Medians::new();
    for (method, n) in [
        ("first-register", 1),
        ("register", per_ring),
        ("clone", per_ring),
        ("publish", 1),
        ("table-clone", per_ring),
        ("nop", per_io),
        ("write", per_io),
        ("read", per_io),
    ] {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "ring-pool-c" && l["method"] == method)
            .collect();
        let [l] = found[..] else {
            problems.push(format!("{} {method} lines, want one", found.len()));
            continue;
        };
        if !(l["rings"].as_u64() == Some(RINGS)
            && l["pool_bytes"].as_u64() == Some(4 << 20)
            && l["bufs"].as_u64().is_some_and(|b| b >= 4)
            && l["polled"] == true)
        {
            problems.push(format!("{method}: the pool description: {l}"));
        }
        match check_method(l, n) {
            Ok(m) => {
                medians.insert(method, m);
            }
            Err(e) => problems.push(e),
        }
    }
    let sums: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "ring-pool-c-summary")
        .collect();
    let [s] = sums[..] else {
        problems.push(format!("{} summary lines, want one", sums.len()));
        return Err(problems);
    };
    for (key, method) in [
        ("register_median_us", "register"),
        ("clone_median_us", "clone"),
        ("table_clone_median_us", "table-clone"),
        ("nop_median_us", "nop"),
        ("write_median_us", "write"),
        ("read_median_us", "read"),
    ] {
        if s[key].as_f64().is_none() || s[key].as_f64() != medians.get(method).copied() {
            problems.push(format!(
                "summary {key} {} is not the {method} line's median",
                s[key]
            ));
        }
    }
    if let (Some(r), Some(c)) = (medians.get("register"), medians.get("clone")) {
        let ratio = r / c;
        if !s["ratio_register_over_clone"]
            .as_f64()
            .is_some_and(|x| (x - ratio).abs() <= 0.051 + ratio * 1e-3)
        {
            problems.push(format!(
                "summary ratio {} is not register / clone = {ratio:.2}",
                s["ratio_register_over_clone"]
            ));
        }
    }
    if s["verified_blocks"].as_u64() != Some(per_io) {
        problems.push(format!(
            "verified_blocks {}, want every block written ({per_io})",
            s["verified_blocks"]
        ));
    }
    if problems.is_empty() {
        Ok(medians)
    } else {
        Err(problems)
    }
}

/// A method line as ring-pool-c prints it, from its samples.
fn method_line(method: &str, samples: &[f64]) -> String {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let list: Vec<String> = samples.iter().map(|s| format!("{s:.3}")).collect();
    format!(
        "{{\"kind\":\"ring-pool-c\",\"method\":\"{method}\",\"rings\":{RINGS},\
         \"pool_bytes\":4194304,\"buf_bytes\":1048576,\"bufs\":4,\"page\":\"2M\",\
         \"polled\":true,\"samples\":{},\"min_us\":{:.3},\"median_us\":{:.3},\
         \"p99_us\":{:.3},\"max_us\":{:.3},\"mean_us\":{:.3},\"samples_us\":[{}]}}",
        v.len(),
        v[0],
        nearest_rank(&v, 50),
        nearest_rank(&v, 99),
        v[v.len() - 1],
        v.iter().sum::<f64>() / v.len() as f64,
        list.join(",")
    )
}

/// A whole output as a run would print it, with `edit` applied to the
/// samples of each method first.
fn fake_output(edit: impl Fn(&str, &mut Vec<f64>)) -> String {
    let per_ring = (RINGS - 1) as usize;
    let per_io = (RINGS * IOS) as usize;
    let mut out = String::from("rv-init: running /bin/ring-pool-c\n");
    let mut med = Medians::new();
    for (method, n, base) in [
        ("first-register", 1, 260_000.0),
        ("register", per_ring, 240_000.0),
        ("clone", per_ring, 8_000.0),
        ("publish", 1, 28_000.0),
        ("table-clone", per_ring, 27_000.0),
        ("nop", per_io, 45.0),
        ("write", per_io, 440.0),
        ("read", per_io, 400.0),
    ] {
        let mut s: Vec<f64> = (0..n).map(|i| base + (i * 7 % 13) as f64).collect();
        edit(method, &mut s);
        let mut v = s.clone();
        v.sort_by(f64::total_cmp);
        med.insert(method, nearest_rank(&v, 50));
        out += &method_line(method, &s);
        out.push('\n');
    }
    out += &format!(
        "{{\"kind\":\"ring-pool-c-summary\",\"rings\":{RINGS},\"register_median_us\":{:.3},\
         \"clone_median_us\":{:.3},\"table_clone_median_us\":{:.3},\
         \"ratio_register_over_clone\":{:.1},\"nop_median_us\":{:.3},\
         \"write_median_us\":{:.3},\"read_median_us\":{:.3},\"verified_blocks\":{per_io}}}\n",
        med["register"],
        med["clone"],
        med["table-clone"],
        med["register"] / med["clone"],
        med["nop"],
        med["write"],
        med["read"],
    );
    out
}

#[test]
fn the_output_check_finds_wrong_missing_and_inconsistent_figures() {
    let good = fake_output(|_, _| {});
    assert!(check_output(&good).is_ok(), "{:?}", check_output(&good));
    let bad = |out: String, want: &str| {
        let p = check_output(&out).expect_err(want);
        assert!(p.iter().any(|p| p.contains(want)), "{want}: {p:?}");
    };
    // A method missing, or with a sample too few.
    bad(
        good.replace("\"method\":\"clone\"", "\"method\":\"klone\""),
        "0 clone lines",
    );
    bad(
        fake_output(|m, s| {
            if m == "read" {
                s.pop();
            }
        }),
        "read: 127 samples",
    );
    // A figure that is not its samples' (hard-coded or miscomputed).
    bad(
        good.replace("\"median_us\":8003.000", "\"median_us\":8002.000"),
        "median",
    );
    // A sample that is no latency.
    bad(
        fake_output(|m, s| {
            if m == "nop" {
                s[3] = 0.0;
            }
        }),
        "not positive",
    );
    // A summary that does not follow from the lines.
    bad(
        good.replace(
            "\"ratio_register_over_clone\":30.0",
            "\"ratio_register_over_clone\":3.0",
        ),
        "ratio",
    );
    bad(
        good.replace("\"verified_blocks\":128", "\"verified_blocks\":127"),
        "verified_blocks",
    );
    bad(
        good.replace("\"nop_median_us\":", "\"nop_median\":"),
        "nop_median_us",
    );
}

#[test]
fn ring_pool_c_shares_a_pool_by_clone_and_reports_its_latencies() {
    if skip_without_kvm() {
        return;
    }
    let dir = TempDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let scratch = dir.0.join("scratch.img");
    std::fs::write(&scratch, vec![FILL; FILE_BLOCKS * BLOCK]).unwrap();

    let run = boot(&[
        "--timeout",
        "600",
        "--uring",
        "rings=16,polled=1,arena=16M",
        "--uring-backend",
        &format!("path={},direct=on", scratch.display()),
        "--cmdline",
        &format!(
            "hugepages=4 -- /bin/sh -c \"/bin/ring-pool-c --rings {RINGS} --size 4M --buf 1M \
             --ios {IOS} --scratch 0 --polled --huge && /bin/capi-suite --scratch 0\""
        ),
    ]);
    let problems = check_suite(&run.stdout);
    run.check(
        problems.is_empty(),
        &format!(
            "capi-suite: every case must pass:\n  {}",
            problems.join("\n  ")
        ),
    );
    run.check(
        run.status == Some(0),
        "ring-pool-c and capi-suite must exit 0",
    );
    let medians = match check_output(&run.stdout) {
        Ok(m) => m,
        Err(problems) => {
            run.check(false, &problems.join("\n"));
            unreachable!()
        }
    };
    let ratio = medians["register"] / medians["clone"];
    eprintln!(
        "capi: register {:.1} us, clone {:.1} us ({ratio:.1}x), table-clone {:.1} us, \
         nop {:.1} us, write {:.1} us, read {:.1} us (medians)",
        medians["register"],
        medians["clone"],
        medians["table-clone"],
        medians["nop"],
        medians["write"],
        medians["read"]
    );

    // The host's view of what the guest wrote through the C API.
    let file = std::fs::read(&scratch).unwrap();
    for j in 0..FILE_BLOCKS as u64 {
        let got = &file[j as usize * BLOCK..(j as usize + 1) * BLOCK];
        if j < RINGS * IOS {
            run.check(
                got == pattern(j / IOS, j % IOS).as_slice(),
                &format!(
                    "scratch block {j} must hold ring {}'s write {}",
                    j / IOS,
                    j % IOS
                ),
            );
        } else {
            run.check(
                got.iter().all(|&b| b == FILL),
                &format!("scratch block {j} was never written and must be untouched"),
            );
        }
    }
}
