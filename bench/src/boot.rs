//! The boot suite: for the default guest, the time from VMM start to
//! /init, the VMM's share of vCPU time and its memory beyond guest RAM,
//! against the targets of the project.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::{fig, samples, BenchError, Ctx, Point, SuiteOutput};
use crate::guest_image::GuestImage;

/// Targets of the boot suite on nested PVM (issue: boot pipeline).
pub const TARGET_TO_INIT_S: f64 = 10.0;
/// See [`TARGET_TO_INIT_S`].
pub const TARGET_VMM_SHARE: f64 = 0.01;
/// See [`TARGET_TO_INIT_S`].
pub const TARGET_RSS_BEYOND_RAM: f64 = 5.0 * 1024.0 * 1024.0;

/// Extracts the `RINGVISOR_TIMINGS` JSON from a child's stderr.
pub fn parse_timings(stderr: &str) -> Option<Value> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("RINGVISOR_TIMINGS "))
        .and_then(|j| serde_json::from_str(j).ok())
}

/// Median of the samples (upper median for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

fn boot_once(
    exe: &Path,
    image: &GuestImage,
    run: usize,
    memory: &str,
) -> Result<Value, BenchError> {
    let output = Command::new(exe)
        .arg("run")
        .arg("--kernel")
        .arg(&image.kernel)
        .arg("--initramfs")
        .arg(image.smallest_initramfs())
        .args(["--memory", memory, "--timings", "--timeout", "600"])
        .args(["--cmdline", "rv.workload=demo"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(BenchError::RunFailed {
            what: format!("boot run {run}"),
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        });
    }
    parse_timings(&stderr).ok_or(BenchError::NoTimings { run })
}

/// One point per boot.
pub fn plan(ctx: &Ctx) -> Vec<Point> {
    (0..ctx.runs)
        .map(|i| Point {
            label: format!("guest boot {}/{}", i + 1, ctx.runs),
            est: Duration::from_secs(15),
        })
        .collect()
}

/// Runs the boot suite: `ctx.runs` boots of the default guest.
pub fn run(ctx: &Ctx, points: &[Point], pb: &ProgressBar) -> Result<SuiteOutput, BenchError> {
    let mut runs = Vec::new();
    for (run, p) in points.iter().enumerate() {
        pb.set_message(p.label.clone());
        let t = boot_once(&ctx.exe, &ctx.image, run, &ctx.memory)?;
        pb.println(format!(
            "bench: boot {}: to /init {:.3} s, VMM share {:.4}%, RSS beyond guest RAM {:.2} MiB",
            run + 1,
            t["to_init_s"].as_f64().unwrap_or(f64::NAN),
            t["vmm_share"].as_f64().unwrap_or(f64::NAN) * 100.0,
            t["rss_beyond_guest_ram_bytes"].as_f64().unwrap_or(f64::NAN) / 1048576.0
        ));
        runs.push(t);
        pb.inc(1);
    }
    let column = |key: &str| -> Vec<f64> { runs.iter().filter_map(|s| s[key].as_f64()).collect() };
    let (init, share, rss) = (
        column("to_init_s"),
        column("vmm_share"),
        column("rss_beyond_guest_ram_bytes"),
    );
    let nan = f64::NAN;
    let to_init = median(&init).unwrap_or(nan);
    let share_m = median(&share).unwrap_or(nan) * 100.0;
    let rss_m = median(&rss).unwrap_or(nan) / 1048576.0;
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    let json = json!({
        "runs": runs.len(),
        "memory": ctx.memory,
        "samples": {
            "to_init": samples(&init, "s"),
            "vmm_share": samples(&share.iter().map(|v| v * 100.0).collect::<Vec<_>>(), "%"),
            "rss_beyond_guest_ram": samples(&rss, "bytes"),
        },
        "median": {
            "to_init": fig("boot: to /init", to_init, "s")?,
            "vmm_share": fig("boot: VMM share", share_m, "%")?,
            "rss_beyond_guest_ram": fig("boot: RSS beyond guest RAM", rss_m, "MiB")?,
        },
        "targets": {
            "to_init": fig("target", TARGET_TO_INIT_S, "s")?,
            "vmm_share": fig("target", TARGET_VMM_SHARE * 100.0, "%")?,
            "rss_beyond_guest_ram": fig("target", TARGET_RSS_BEYOND_RAM / 1048576.0, "MiB")?,
        },
        "timings": runs,
    });
    let table = vec![
        [
            format!("VMM start to /init (median of {})", runs.len()),
            format!("{to_init:.3} s"),
            format!(
                "target <= {TARGET_TO_INIT_S} s: {}",
                verdict(to_init <= TARGET_TO_INIT_S)
            ),
        ],
        [
            "VMM share of vCPU time".into(),
            format!("{share_m:.4} %"),
            format!(
                "target < {} %: {}",
                TARGET_VMM_SHARE * 100.0,
                verdict(share_m < TARGET_VMM_SHARE * 100.0)
            ),
        ],
        [
            "VMM RSS beyond guest RAM".into(),
            format!("{rss_m:.2} MiB"),
            format!(
                "target <= 5 MiB: {}",
                verdict(rss_m * 1048576.0 <= TARGET_RSS_BEYOND_RAM)
            ),
        ],
    ];
    Ok(SuiteOutput { json, table })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_line_is_found_among_other_output() {
        let stderr = "ringvisor: timings: ...\nRINGVISOR_TIMINGS {\"to_init_s\": 4.5}\n";
        assert_eq!(parse_timings(stderr).unwrap()["to_init_s"], 4.5);
        assert!(parse_timings("nothing\n").is_none());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(&[]), None);
    }
}
