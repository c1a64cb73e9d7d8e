//! `ringvisor bench`: boots guests as child `ringvisor run` processes and
//! reports what they measured. The boot suite measures, for the default
//! guest, the time from VMM start to /init, the VMM's share of vCPU time and
//! its memory beyond guest RAM, against the targets of the project.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use thiserror::Error;

use crate::guest_image::{self, GuestImage, GuestImageError};

/// Errors of a benchmark run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The guest image could not be built.
    #[error(transparent)]
    Image(#[from] GuestImageError),
    /// A child VMM could not be started.
    #[error("starting {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    /// A guest run failed: no figure is reported for it.
    #[error("boot run {run} failed with exit status {status:?}; stderr:\n{stderr}")]
    RunFailed {
        run: usize,
        status: Option<i32>,
        stderr: String,
    },
    /// The child printed no timings.
    #[error("boot run {run} printed no RINGVISOR_TIMINGS line")]
    NoTimings { run: usize },
    /// Writing results failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

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
            run,
            status: output.status.code(),
            stderr,
        });
    }
    parse_timings(&stderr).ok_or(BenchError::NoTimings { run })
}

/// Runs the boot suite: `runs` boots of the default guest.
pub fn boot_suite(runs: usize, memory: &str, out: Option<&Path>) -> Result<(), BenchError> {
    let image = guest_image::build_default()?;
    let exe = std::env::current_exe().map_err(|source| BenchError::Spawn {
        exe: PathBuf::from("ringvisor"),
        source,
    })?;
    let mut samples = Vec::new();
    for run in 0..runs {
        eprintln!("bench: boot {}/{runs} ...", run + 1);
        let t = boot_once(&exe, &image, run, memory)?;
        eprintln!(
            "bench: boot {}: to /init {:.3} s, VMM share {:.4}%, RSS beyond guest RAM {:.2} MiB",
            run + 1,
            t["to_init_s"].as_f64().unwrap_or(f64::NAN),
            t["vmm_share"].as_f64().unwrap_or(f64::NAN) * 100.0,
            t["rss_beyond_guest_ram_bytes"].as_f64().unwrap_or(f64::NAN) / 1048576.0
        );
        samples.push(t);
    }
    let column =
        |key: &str| -> Vec<f64> { samples.iter().filter_map(|s| s[key].as_f64()).collect() };
    let to_init = median(&column("to_init_s")).unwrap_or(f64::NAN);
    let share = median(&column("vmm_share")).unwrap_or(f64::NAN);
    let rss = median(&column("rss_beyond_guest_ram_bytes")).unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!("boot suite ({runs} boots of the default guest, medians):");
    println!(
        "  VMM start to /init        {to_init:>9.3} s     target <= {TARGET_TO_INIT_S} s: {}",
        verdict(to_init <= TARGET_TO_INIT_S)
    );
    println!(
        "  VMM share of vCPU time    {:>9.4} %     target < {} %: {}",
        share * 100.0,
        TARGET_VMM_SHARE * 100.0,
        verdict(share < TARGET_VMM_SHARE)
    );
    println!(
        "  VMM RSS beyond guest RAM  {:>9.2} MiB   target <= 5 MiB: {}",
        rss / 1048576.0,
        verdict(rss <= TARGET_RSS_BEYOND_RAM)
    );
    if let Some(dir) = out {
        let path = dir.join("boot.json");
        let result = json!({
            "suite": "boot",
            "runs": runs,
            "memory": memory,
            "kernel": image.kernel,
            "median": {"to_init_s": to_init, "vmm_share": share, "rss_beyond_guest_ram_bytes": rss},
            "samples": samples,
        });
        std::fs::create_dir_all(dir)
            .and_then(|_| {
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(&result).unwrap_or_default(),
                )
            })
            .map_err(|source| BenchError::Write {
                path: path.clone(),
                source,
            })?;
        println!("  raw samples: {}", path.display());
    }
    Ok(())
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
