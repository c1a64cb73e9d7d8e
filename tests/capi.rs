//! The C API of pv rings in a guest: one boot runs the C example
//! `ring-pool-c` (guest-images/programs/pv-uring-c/c/ring-pool-c.c, linked
//! with libpv_uring_c.a, shipped in the image by guest-images/build.sh) on
//! 8 rings (ring 0 polled) sharing a 4 MiB pool of 2 MiB pages by clone,
//! with a scratch backend. The test requires, from its JSON lines:
//! - a line per method (first-register, register, clone, publish,
//!   table-clone, nop, write, read) with as many samples as the run made
//!   (rings - 1 per ring method, rings x ios per request), each latency
//!   positive and finite, min <= median <= p99 <= max, and the median and
//!   extremes those of its own `samples_us` (nearest rank), so the figures
//!   are the measured ones;
//! - the summary's medians equal to the method lines' and its ratio equal
//!   to register / clone, every block it wrote read back through the next
//!   ring and verified;
//! and on the host, the scratch file holds exactly the blocks the program
//! says it wrote (its pattern), the rest untouched.

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
        "rings=16,polled=1",
        "--uring-backend",
        &format!("path={},direct=on", scratch.display()),
        "--cmdline",
        &format!(
            "hugepages=4 -- /bin/ring-pool-c --rings {RINGS} --size 4M --buf 1M \
             --ios {IOS} --scratch 0 --polled --huge"
        ),
    ]);
    run.check(run.status == Some(0), "ring-pool-c must exit 0");
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| l.find("{\"kind\":\"ring-pool-c").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l.trim()).unwrap_or(Value::Null))
        .collect();
    run.check(
        lines.iter().all(|l| !l.is_null()),
        "every ring-pool-c line must be JSON",
    );
    let per_ring = RINGS - 1;
    let per_io = RINGS * IOS;
    let mut medians = std::collections::HashMap::new();
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
        run.check(found.len() == 1, &format!("one {method} line"));
        let l = found[0];
        run.check(
            l["rings"].as_u64() == Some(RINGS)
                && l["pool_bytes"].as_u64() == Some(4 << 20)
                && l["bufs"].as_u64().is_some_and(|b| b >= 4)
                && l["polled"] == true,
            &format!("{method}: the pool description"),
        );
        match check_method(l, n) {
            Ok(m) => {
                medians.insert(method, m);
            }
            Err(e) => run.check(false, &e),
        }
    }
    let sums: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "ring-pool-c-summary")
        .collect();
    run.check(sums.len() == 1, "one summary line");
    let s = sums[0];
    for (key, method) in [
        ("register_median_us", "register"),
        ("clone_median_us", "clone"),
        ("table_clone_median_us", "table-clone"),
        ("nop_median_us", "nop"),
        ("write_median_us", "write"),
        ("read_median_us", "read"),
    ] {
        run.check(
            s[key].as_f64() == Some(medians[method]),
            &format!("summary {key} must be the {method} line's median"),
        );
    }
    let ratio = medians["register"] / medians["clone"];
    run.check(
        s["ratio_register_over_clone"]
            .as_f64()
            .is_some_and(|r| (r - ratio).abs() <= 0.051 + ratio * 1e-3),
        &format!("the summary's ratio must be register / clone = {ratio:.2}"),
    );
    run.check(
        s["verified_blocks"].as_u64() == Some(per_io),
        "every block written must have been read back and verified",
    );
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
        if j < per_io {
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
