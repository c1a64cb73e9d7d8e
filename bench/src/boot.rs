//! The boot suite: for the default guest, the time from VMM start to
//! /init, the VMM's share of vCPU time and its memory beyond guest RAM,
//! against the targets of the project; then, side by side in the same run,
//! snapshots (docs/snapshot.md): for a guest of `--memory` and one of 4 GiB
//! (not with `--quick`), the snapshot's size and the time to take it, and
//! for each of `runs` restores the time from VMM start to the workload
//! running and the VMM's own set-up (restore) time.

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
/// Target of issue 18: VMM start to the workload running after a restore.
pub const TARGET_RESTORE_TO_WORKLOAD_S: f64 = 0.150;
/// The end-to-end restore point's workload: one that exits at once (the
/// smallest initramfs has no `true`; this execs its multi-call program).
const TRIVIAL_WORKLOAD: &str = "/bin/rv-guest --applets";
/// The larger guest of the snapshot points.
const LARGE_GUEST: &str = "size=4G,hugepages=off";

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
    use std::ffi::OsStr;
    let args = [
        OsStr::new("run"),
        OsStr::new("--kernel"),
        image.kernel.as_os_str(),
        OsStr::new("--initramfs"),
        image.smallest_initramfs().as_os_str(),
        OsStr::new("--memory"),
        OsStr::new(memory),
        OsStr::new("--timings"),
        OsStr::new("--timeout"),
        OsStr::new("600"),
        OsStr::new("--cmdline"),
        OsStr::new("rv.workload=demo"),
    ];
    timed_run(exe, &args, format!("boot run {run}"), run)
}

/// The guests of the snapshot points.
fn snapshot_memories(ctx: &Ctx) -> Vec<String> {
    let mut sizes = vec![ctx.memory.clone()];
    if !ctx.quick {
        sizes.push(LARGE_GUEST.to_string());
    }
    sizes
}

/// One point per boot, then one per snapshot (with its restores).
pub fn plan(ctx: &Ctx) -> Vec<Point> {
    let mut points: Vec<Point> = (0..ctx.runs)
        .map(|i| Point {
            label: format!("guest boot {}/{}", i + 1, ctx.runs),
            est: Duration::from_secs(15),
        })
        .collect();
    for memory in snapshot_memories(ctx) {
        points.push(Point {
            label: format!("snapshot of a {memory} guest and {} restores", ctx.runs),
            est: Duration::from_secs(25),
        });
    }
    points
}

/// Runs `exe` with `args` (run number `run`, described as `what`); its
/// RINGVISOR_TIMINGS, or why not.
fn timed_run(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    what: String,
    run: usize,
) -> Result<Value, BenchError> {
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(BenchError::RunFailed {
            what,
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        });
    }
    parse_timings(&stderr).ok_or(BenchError::NoTimings { run })
}

/// Restores the snapshot in `dir` with `workload`; its RINGVISOR_TIMINGS.
fn restore_once(ctx: &Ctx, dir: &Path, workload: &str, what: String) -> Result<Value, BenchError> {
    use std::ffi::OsStr;
    let cmdline = format!("-- {workload}");
    let args = [
        OsStr::new("run"),
        OsStr::new("--restore"),
        dir.as_os_str(),
        OsStr::new("--timings"),
        OsStr::new("--timeout"),
        OsStr::new("120"),
        OsStr::new("--cmdline"),
        OsStr::new(&cmdline),
    ];
    timed_run(&ctx.exe, &args, what, 0)
}

/// Takes a snapshot of the default guest with `memory` and restores it
/// `runs` times with the demo program (in the smallest initramfs too).
fn snapshot_point(ctx: &Ctx, memory: &str, pb: &ProgressBar) -> Result<Value, BenchError> {
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("ringvisor-bench-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let taken = timed_run(
        &ctx.exe,
        &[
            OsStr::new("snapshot"),
            OsStr::new("--out"),
            dir.as_os_str(),
            OsStr::new("--kernel"),
            ctx.image.kernel.as_os_str(),
            OsStr::new("--initramfs"),
            ctx.image.smallest_initramfs().as_os_str(),
            OsStr::new("--memory"),
            OsStr::new(memory),
            OsStr::new("--timings"),
            OsStr::new("--timeout"),
            OsStr::new("900"),
        ],
        format!("snapshot of a {memory} guest"),
        0,
    );
    let result = taken.and_then(|taken| {
        let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| (m.len(), m.blocks() * 512));
        let host = |source| BenchError::Host {
            what: format!("the snapshot in {}", dir.display()),
            source,
        };
        let (state, _) = size("state").map_err(host)?;
        let (ram_len, ram_allocated) = size("memory").map_err(host)?;
        let (mut restores, mut trivial) = (Vec::new(), Vec::new());
        for r in 0..ctx.runs {
            let what = format!("restore {} of the {memory} guest", r + 1);
            let t = restore_once(ctx, &dir, "/bin/demo", what.clone())?;
            // End to end: the whole run of a workload that does nothing.
            let whole = restore_once(ctx, &dir, TRIVIAL_WORKLOAD, what)?;
            pb.println(format!(
                "bench: restore {} of the {memory} guest: to the workload {:.1} ms, VMM set-up {:.1} ms; \
                 restore, run a trivial workload and exit {:.1} ms",
                r + 1,
                t["to_workload_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                t["vmm_setup_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                whole["wall_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            ));
            restores.push(t);
            trivial.push(whole);
        }
        Ok(json!({
            "memory": memory,
            "guest_ram_bytes": ram_len,
            "snapshot_bytes": state + ram_allocated,
            "state_bytes": state,
            "memory_file_allocated_bytes": ram_allocated,
            "boot_and_snapshot_s": taken["wall_s"],
            "restores": restores,
            "trivial_runs": trivial,
        }))
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The figures and table rows of one snapshot point (`snap`, from
/// [`snapshot_point`]), against the cold boot's time to the workload.
fn snapshot_summary(
    snap: &Value,
    cold_to_workload: f64,
) -> Result<(Value, Vec<[String; 3]>), BenchError> {
    let nan = f64::NAN;
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    let mut rows = Vec::new();
    let col = |key: &str| -> Vec<f64> {
        snap["restores"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t[key].as_f64()).collect())
            .unwrap_or_default()
    };
    let (to_workload, setup, share) = (col("to_workload_s"), col("vmm_setup_s"), col("vmm_share"));
    let trivial_wall: Vec<f64> = snap["trivial_runs"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["wall_s"].as_f64()).collect())
        .unwrap_or_default();
    let trivial_wall_m = median(&trivial_wall).unwrap_or(nan);
    let to_workload_m = median(&to_workload).unwrap_or(nan);
    let setup_m = median(&setup).unwrap_or(nan);
    let share_m = median(&share).unwrap_or(nan) * 100.0;
    let memory = snap["memory"].as_str().unwrap_or("?");
    let size_mib = snap["snapshot_bytes"].as_f64().unwrap_or(nan) / 1048576.0;
    let json = json!({
        "memory": memory,
        "snapshot": fig("snapshot size", size_mib, "MiB")?,
        "boot_and_snapshot": snap["boot_and_snapshot_s"],
        "samples": {
            "to_workload": samples(&to_workload, "s"),
            "restore_vmm_setup": samples(&setup, "s"),
            "restore_trivial_to_exit": samples(&trivial_wall, "s"),
        },
        "median": {
            "to_workload": fig("restore: to the workload", to_workload_m, "s")?,
            "restore_vmm_setup": fig("restore: VMM set-up", setup_m, "s")?,
            "restore_trivial_to_exit": fig("restore: trivial workload to exit", trivial_wall_m, "s")?,
            "vmm_share": {"value": share_m, "unit": "%"},
        },
        "restores": snap["restores"],
        "trivial_runs": snap["trivial_runs"],
    });
    rows.push([
        format!(
            "{memory}: VMM start to the workload running, restore (median of {})",
            to_workload.len()
        ),
        format!(
            "{:.1} ms (cold boot: {cold_to_workload:.3} s, {:.0}x)",
            to_workload_m * 1e3,
            cold_to_workload / to_workload_m
        ),
        format!(
            "target <= {:.0} ms: {}",
            TARGET_RESTORE_TO_WORKLOAD_S * 1e3,
            verdict(to_workload_m <= TARGET_RESTORE_TO_WORKLOAD_S)
        ),
    ]);
    rows.push([
        format!("{memory}: of which the VMM's restore (set-up); VMM share of vCPU time"),
        format!("{:.1} ms; {share_m:.3} %", setup_m * 1e3),
        "restore time must not grow with guest RAM".into(),
    ]);
    rows.push([
        format!("{memory}: restore, run `{TRIVIAL_WORKLOAD}` and exit (VMM wall time)"),
        format!("{:.1} ms", trivial_wall_m * 1e3),
        "end to end: the workload's exec and exit, the guest's exit".into(),
    ]);
    rows.push([
        format!("{memory}: snapshot size (state + memory file in use)"),
        format!("{size_mib:.1} MiB"),
        format!(
            "boot + snapshot {:.1} s",
            snap["boot_and_snapshot_s"].as_f64().unwrap_or(nan)
        ),
    ]);
    Ok((json, rows))
}

/// Runs the boot suite: `ctx.runs` boots of the default guest.
pub fn run(ctx: &Ctx, points: &[Point], pb: &ProgressBar) -> Result<SuiteOutput, BenchError> {
    let mut runs = Vec::new();
    let boots = &points[..ctx.runs.min(points.len())];
    for (run, p) in boots.iter().enumerate() {
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
    let mut snapshots = Vec::new();
    for (memory, p) in snapshot_memories(ctx).iter().zip(&points[boots.len()..]) {
        pb.set_message(p.label.clone());
        snapshots.push(snapshot_point(ctx, memory, pb)?);
        pb.inc(1);
    }
    let column = |key: &str| -> Vec<f64> { runs.iter().filter_map(|s| s[key].as_f64()).collect() };
    let cold_to_workload = median(&column("to_workload_s")).unwrap_or(f64::NAN);
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
    let mut json = json;
    let mut snapshot_rows = Vec::new();
    let mut snapshot_json = Vec::new();
    for snap in &snapshots {
        let (j, rows) = snapshot_summary(snap, cold_to_workload)?;
        snapshot_json.push(j);
        snapshot_rows.extend(rows);
    }
    json["snapshot"] = json!(snapshot_json);
    json["median"]["to_workload_cold"] = json!(cold_to_workload);
    let mut table = vec![
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
    table.extend(snapshot_rows);
    Ok(SuiteOutput {
        json,
        table,
        failed: Vec::new(),
    })
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
