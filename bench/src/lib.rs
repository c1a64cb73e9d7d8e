//! `ringvisor-bench` (also `ringvisor bench`): the project's measurements,
//! three suites.
//!
//! - `registration`: registering a buffer pool on a ring again versus
//!   cloning it (IORING_REGISTER_CLONE_BUFFERS), on the host in-process and
//!   in guests (`ring-pool` through the guest kernel, `pv-bench` through
//!   /dev/vuring, which also clones from the host buffer table);
//! - `io`: 4 KiB random O_DIRECT reads and writes at QD1 and QD32 of one
//!   host file, host-native io_uring (plain and SQPOLL), a guest over
//!   virtio-blk (`blk-io --bench-qd`) and a guest over pv-uring rings
//!   (`pv-bench`, a doorbell ring and an SQPOLL ring);
//! - `boot`: time to /init, the VMM's share of vCPU time, its memory
//!   beyond guest RAM.
//!
//! Guests run as child `ringvisor run` processes; their JSON lines come on
//! the child's stdout (the guest console). A guest may pause for the host
//! ([`run_guest_paced`]): the bench measures meanwhile, and answers on the
//! guest's console input. A child that fails, or prints
//! no figure it was asked for, fails the whole run: no figure is ever
//! reported that was not measured.
//!
//! Results go to `DIR/results.json` (the machine, every raw sample with
//! its unit, every figure as `{"value": .., "unit": ..}`) and SVG charts.

pub mod boot;
mod charts;
mod io;
mod placement;
mod registration;
mod sq_threads;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use thiserror::Error;

use vmm::guest_image::{self, GuestImage, GuestImageError};

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
    #[error("{what} failed with exit status {status:?}\n--- guest console (tail):\n{stdout}\n--- VMM stderr (tail):\n{stderr}")]
    RunFailed {
        what: String,
        status: Option<i32>,
        stdout: String,
        stderr: String,
    },
    /// A guest run printed no line of the kind asked for.
    #[error("{what}: the guest printed no {kind} line\n--- guest console (tail):\n{stdout}")]
    Missing {
        what: String,
        kind: String,
        stdout: String,
    },
    /// The child printed no timings.
    #[error("boot run {run} printed no RINGVISOR_TIMINGS line")]
    NoTimings { run: usize },
    /// A figure that is not a positive finite number.
    #[error("{what}: measured {value} {unit}, not a positive number")]
    BadFigure {
        what: String,
        value: f64,
        unit: String,
    },
    /// A host-native measurement failed.
    #[error("{what}: {source}")]
    Host {
        what: String,
        source: std::io::Error,
    },
    /// Writing results failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The VMM binary the guests run under is not there.
    #[error("the VMM binary {0} is missing: build it with `cargo build --release -p vmm` or set RINGVISOR_BIN to its path")]
    NoVmm(PathBuf),
    /// Drawing a chart failed.
    #[error("chart {path}: {msg}")]
    Chart { path: PathBuf, msg: String },
    /// Points failed; the others' figures are in `path`.
    #[error("{} point(s) failed ({}); what the other points measured is in {path}", failed.len(), failed.join("; "))]
    PointsFailed { failed: Vec<String>, path: PathBuf },
}

/// Which suites to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Registration,
    Io,
    Boot,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Registration => "registration",
            Suite::Io => "io",
            Suite::Boot => "boot",
        }
    }
}

/// What the user asked for.
pub struct Options {
    pub suites: Vec<Suite>,
    pub out: PathBuf,
    pub quick: bool,
    /// Boots of the boot suite (1 with `quick`).
    pub runs: usize,
    /// Guest RAM of the boot suite's guests.
    pub memory: String,
    /// Raise the host's 2 MiB hugepage pool (as root) for the registration
    /// suite's host points when too few are free, restoring it afterwards.
    pub reserve_hugepages: bool,
    /// Place the io suite's polling threads: submitting threads (vCPUs,
    /// the host reference's) off the CPU that takes the disk's interrupts,
    /// SQ threads on it (see `placement`).
    pub pin: bool,
}

/// Everything a suite needs.
pub struct Ctx {
    pub exe: PathBuf,
    pub image: GuestImage,
    pub out: PathBuf,
    pub quick: bool,
    pub runs: usize,
    pub memory: String,
    /// See [`Options::reserve_hugepages`].
    pub reserve_hugepages: bool,
    /// See [`Options::pin`].
    pub pin: bool,
}

/// A figure: `{"value": v, "unit": u}`, refused unless positive and finite.
pub fn fig(what: &str, value: f64, unit: &str) -> Result<Value, BenchError> {
    if value.is_finite() && value > 0.0 {
        Ok(json!({"value": value, "unit": unit}))
    } else {
        Err(BenchError::BadFigure {
            what: what.into(),
            value,
            unit: unit.into(),
        })
    }
}

/// Raw samples with their unit.
pub fn samples(values: &[f64], unit: &str) -> Value {
    json!({"unit": unit, "values": values})
}

/// One planned measurement: a label and its estimated duration.
pub struct Point {
    pub label: String,
    pub est: Duration,
}

/// What a suite gives back: its JSON and lines of the summary table.
pub struct SuiteOutput {
    pub json: Value,
    pub table: Vec<[String; 3]>,
    /// Points that failed (the suite went on without them); the run then
    /// fails after writing what the others measured.
    pub failed: Vec<String>,
}

/// The output of a guest run.
pub struct GuestRun {
    pub what: String,
    pub stdout: String,
    /// The child VMM's RINGVISOR_TIMINGS object.
    pub timings: Option<Value>,
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl GuestRun {
    /// Every JSON object on the console whose `kind` is `kind`.
    pub fn lines(&self, kind: &str) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(json_line)
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// Like [`GuestRun::lines`], failing when there is none.
    pub fn require(&self, kind: &str) -> Result<Vec<Value>, BenchError> {
        let v = self.lines(kind);
        if v.is_empty() {
            return Err(BenchError::Missing {
                what: self.what.clone(),
                kind: kind.into(),
                stdout: tail(&self.stdout, 40),
            });
        }
        Ok(v)
    }

    /// A number field of a guest line, as a positive figure.
    pub fn num(&self, line: &Value, key: &str) -> Result<f64, BenchError> {
        let v = line[key].as_f64().unwrap_or(f64::NAN);
        fig(&format!("{}: {key}", self.what), v, "")?;
        Ok(v)
    }
}

/// The child `ringvisor run --kernel K --initramfs I ... args`.
fn guest_command(ctx: &Ctx, args: &[String]) -> Command {
    let mut c = Command::new(&ctx.exe);
    c.arg("run")
        .arg("--kernel")
        .arg(&ctx.image.kernel)
        .arg("--initramfs")
        .arg(ctx.image.smallest_initramfs())
        .arg("--timings")
        .arg("--timeout")
        .arg(guest_timeout_s(args).to_string())
        .args(args);
    c
}

/// Seconds a guest of the bench may run: 900, and 240 more for each GiB
/// of guest RAM above the first. Its kernel initialises a page structure
/// per 4 KiB of RAM at boot and the pool's pages are zeroed in emulated
/// kernel code: on 2026-12-05 a 4 GiB ring-pool guest (5.25 GiB of RAM)
/// took 205 s to boot and 420 s to populate its pool, and 900 s killed it
/// in its second registration.
fn guest_timeout_s(args: &[String]) -> u64 {
    let ram = args
        .windows(2)
        .find(|w| w[0] == "--memory")
        .and_then(|w| w[1].parse::<vmm::config::MemoryConfig>().ok())
        .map_or(0, |m| m.size);
    900 + 240 * (ram >> 30).saturating_sub(1)
}

/// Checks a finished guest run: it must exit 0 and print no error line
/// (`*-error` kinds).
fn finish_guest(
    what: &str,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: &str,
) -> Result<GuestRun, BenchError> {
    let failed_line = stdout
        .lines()
        .any(|l| l.contains("-error\",") || l.contains("-error\"}"));
    if !status.success() || failed_line {
        return Err(BenchError::RunFailed {
            what: what.into(),
            status: status.code(),
            stdout: tail(&stdout, 40),
            stderr: tail(stderr, 20),
        });
    }
    let mut timings: Option<Value> = stderr
        .lines()
        .find_map(|l| l.strip_prefix("RINGVISOR_TIMINGS "))
        .and_then(|j| serde_json::from_str(j).ok());
    // The pv-uring arena's set-up (RINGVISOR_ARENA), kept as
    // timings["arena"].
    let arena = stderr
        .lines()
        .find_map(|l| l.strip_prefix("RINGVISOR_ARENA "))
        .and_then(|j| serde_json::from_str::<Value>(j).ok());
    if let (Some(Value::Object(t)), Some(a)) = (timings.as_mut(), arena) {
        t.insert("arena".into(), a);
    }
    Ok(GuestRun {
        what: what.into(),
        stdout,
        timings,
    })
}

/// Boots a guest with `args` after `run --kernel K --initramfs I`; fails
/// unless it exits 0. Error lines (`*-error` kinds) fail it too.
pub fn run_guest(ctx: &Ctx, what: &str, args: &[String]) -> Result<GuestRun, BenchError> {
    let output = guest_command(ctx, args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            exe: ctx.exe.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    finish_guest(what, output.status, stdout, &stderr)
}

/// Like [`run_guest`], for a guest that pauses: each console line of kind
/// `pause_kind` is handed to `on_pause` (with the child VMM's pid) while
/// the guest waits, and a newline on the guest's console answers it. The
/// host measures in those pauses what the guest's figures are compared
/// with, in the same minute. When `on_pause` fails, the child is killed
/// (a guest waiting on its console never learns that nobody will answer)
/// and that error is returned.
pub fn run_guest_paced(
    ctx: &Ctx,
    what: &str,
    args: &[String],
    pause_kind: &str,
    mut on_pause: impl FnMut(&Value, u32) -> Result<(), BenchError>,
) -> Result<GuestRun, BenchError> {
    use std::io::{BufRead, BufReader, Read, Write};
    let spawn_err = |source| BenchError::Spawn {
        exe: ctx.exe.clone(),
        source,
    };
    let mut child = guest_command(ctx, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let pid = child.id();
    let mut err_pipe = child.stderr.take();
    // Drained alongside, so that a chatty VMM never blocks on a full pipe.
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = err_pipe.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    let mut answer = child.stdin.take();
    let mut stdout = String::new();
    let mut failure = None;
    if let Some(out) = child.stdout.take() {
        // Raw lines, read as run_guest reads the console (lossily): a byte
        // that is not UTF-8 must not end the reading while the guest waits.
        for line in BufReader::new(out).split(b'\n') {
            let Ok(bytes) = line else { break };
            let line = String::from_utf8_lossy(&bytes);
            stdout.push_str(&line);
            stdout.push('\n');
            let Some(pause) = json_line(&line).filter(|v| v["kind"] == pause_kind) else {
                continue;
            };
            if failure.is_some() {
                continue;
            }
            let answered = on_pause(&pause, pid).and_then(|()| {
                let w = answer
                    .as_mut()
                    .map_or(Ok(()), |w| w.write_all(b"\n").and_then(|()| w.flush()));
                w.map_err(|source| BenchError::Host {
                    what: format!("{what}: answering the guest's pause"),
                    source,
                })
            });
            if let Err(e) = answered {
                failure = Some(e);
                answer = None;
                // Its console output still drains to EOF below.
                if let Err(k) = child.kill() {
                    log::warn!("bench: killing {what} (pid {pid}): {k}");
                }
            }
        }
    }
    drop(answer);
    let status = child.wait().map_err(spawn_err)?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if let Some(e) = failure {
        return Err(e);
    }
    finish_guest(what, status, stdout, &stderr)
}

/// The JSON object on a console line, if any (after any prefix).
fn json_line(line: &str) -> Option<Value> {
    let l = line.trim();
    let start = l.find('{')?;
    serde_json::from_str::<Value>(&l[start..]).ok()
}

/// A progress bar over `points`.
pub fn bar(suite: &str, points: &[Point]) -> ProgressBar {
    let pb = ProgressBar::new(points.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>13} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(suite.to_string());
    pb
}

/// Minimum, median, 99th percentile of samples (any unit).
pub fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let p99 = v[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
    Some((v[0], v[n / 2], p99))
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The machine the figures come from.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // uname -srm: the kernel's name and release, and the machine (this
    // program's architecture, which the machine runs).
    let kernel = match (
        read_trim("/proc/sys/kernel/ostype"),
        read_trim("/proc/sys/kernel/osrelease"),
    ) {
        (Some(name), Some(release)) => format!("{name} {release} {}", std::env::consts::ARCH),
        _ => "unknown".into(),
    };
    let kvm = if Path::new("/sys/module/kvm_pvm").exists() {
        "PVM"
    } else {
        "hardware"
    };
    let mut huge = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .trim_start_matches("hugepages-")
                .trim_end_matches("kB")
                .parse()
                .unwrap_or(0);
            let n = |f: &str| {
                read_trim(e.path().join(f))
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            huge.push(json!({"size_bytes": kb * 1024, "total": n("nr_hugepages"), "free": n("free_hugepages")}));
        }
    }
    json!({"cpu_model": cpu, "cpus": cpus, "kernel": kernel, "kvm": kvm, "hugepages": huge})
}

/// Free host hugepages of `bytes` size.
pub fn free_hugepages(bytes: u64) -> u64 {
    read_trim(format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages",
        bytes / 1024
    ))
    .and_then(|s| s.parse().ok())
    .unwrap_or(0)
}

/// `64M`-style label of a byte count.
pub fn size_label(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{}G", b >> 30)
    } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{}M", b >> 20)
    } else {
        format!("{}K", b >> 10)
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, data).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The `ringvisor` binary the guests run under: $RINGVISOR_BIN (which
/// `ringvisor bench` sets to itself), else the `ringvisor` beside this
/// program.
pub fn vmm_binary() -> Result<PathBuf, BenchError> {
    let exe = match std::env::var_os("RINGVISOR_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|source| BenchError::Spawn {
                exe: PathBuf::from("ringvisor"),
                source,
            })?
            .with_file_name("ringvisor"),
    };
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(BenchError::NoVmm(exe))
    }
}

/// The points of each suite, in order.
fn plan(ctx: &Ctx, suites: &[Suite]) -> Vec<(Suite, Vec<Point>)> {
    suites
        .iter()
        .map(|&s| {
            let points = match s {
                Suite::Registration => registration::plan(ctx),
                Suite::Io => io::plan(ctx),
                Suite::Boot => boot::plan(ctx),
            };
            (s, points)
        })
        .collect()
}

/// The summary table on stdout: each suite's rows.
fn print_summary(elapsed: Duration, table: &[(&str, Vec<[String; 3]>)]) {
    println!("summary ({} in all):", human(elapsed));
    for (suite, rows) in table {
        println!("{suite}:");
        for [a, b, c] in rows {
            println!("  {a:<46} {b:>26}  {c}");
        }
    }
}

/// Runs the suites, writes `results.json` and the charts, prints a table.
pub fn run(opts: Options) -> Result<(), BenchError> {
    std::fs::create_dir_all(&opts.out).map_err(|source| BenchError::Write {
        path: opts.out.clone(),
        source,
    })?;
    let exe = vmm_binary()?;
    let image = guest_image::build_default()?;
    let ctx = Ctx {
        exe,
        image,
        out: opts.out.clone(),
        quick: opts.quick,
        runs: if opts.quick { 1 } else { opts.runs },
        memory: opts.memory.clone(),
        reserve_hugepages: opts.reserve_hugepages,
        pin: opts.pin,
    };
    let plans = plan(&ctx, &opts.suites);
    let total: Duration = plans.iter().flat_map(|p| &p.1).map(|p| p.est).sum();
    let guests = plans
        .iter()
        .flat_map(|p| &p.1)
        .filter(|p| p.label.starts_with("guest"))
        .count();
    eprintln!(
        "bench: {} suite(s), {} points ({guests} guest boots): estimated {}",
        plans.len(),
        plans.iter().map(|p| p.1.len()).sum::<usize>(),
        human(total)
    );
    let started = Instant::now();
    let mut suites = Map::new();
    let mut table = Vec::new();
    let mut failed = Vec::new();
    for (suite, points) in &plans {
        let pb = bar(suite.name(), points);
        let out = match suite {
            Suite::Registration => registration::run(&ctx, points, &pb),
            Suite::Io => io::run(&ctx, points, &pb),
            Suite::Boot => boot::run(&ctx, points, &pb),
        };
        match out {
            Ok(o) => {
                pb.finish_with_message(if o.failed.is_empty() {
                    "done"
                } else {
                    "done, with failed points"
                });
                suites.insert(suite.name().into(), o.json);
                table.push((suite.name(), o.table));
                failed.extend(o.failed);
            }
            Err(e) => {
                pb.abandon_with_message("FAILED");
                return Err(e);
            }
        }
    }
    let elapsed = started.elapsed();
    let results = json!({
        "ringvisor_version": env!("CARGO_PKG_VERSION"),
        "quick": opts.quick,
        "started_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(elapsed.as_secs())),
        "duration": fig("bench duration", elapsed.as_secs_f64(), "s")?,
        "machine": machine(),
        "guest": {
            "kernel": ctx.image.kernel,
            "initramfs": ctx.image.smallest_initramfs(),
        },
        "suites": Value::Object(suites),
    });
    let path = ctx.out.join("results.json");
    write(
        &path,
        serde_json::to_string_pretty(&results)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    print_summary(elapsed, &table);
    println!("results: {}", path.display());
    // After the table and results.json: a chart that cannot be drawn (no
    // font, say) fails the command but loses no figure.
    let charts = charts::draw(&ctx.out, &results)?;
    for c in charts {
        println!("chart:   {}", c.display());
    }
    if !failed.is_empty() {
        return Err(BenchError::PointsFailed { failed, path });
    }
    Ok(())
}

/// `1 min 20 s` style.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_guest_timeout_grows_with_its_ram() {
        let memory = |m: &str| vec!["--memory".to_string(), m.to_string()];
        assert_eq!(super::guest_timeout_s(&[]), 900);
        assert_eq!(super::guest_timeout_s(&memory("size=512M")), 900);
        assert_eq!(super::guest_timeout_s(&memory("size=2G")), 900 + 240);
        // The 4 GiB ring-pool guest: 5.25 GiB of RAM.
        assert_eq!(
            super::guest_timeout_s(&memory("size=5376M,hugepages=required")),
            900 + 4 * 240
        );
    }

    use super::*;

    /// A context whose "VMM" is the shell script `script`.
    fn script_ctx(name: &str, script: &str) -> Ctx {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rv-paced-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("fake-vmm");
        std::fs::write(&exe, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        Ctx {
            exe,
            image: GuestImage {
                kernel: PathBuf::from("vmlinux"),
                initramfs: PathBuf::from("initramfs.cpio"),
                initramfs_min: None,
            },
            out: dir,
            quick: true,
            runs: 1,
            memory: String::new(),
            reserve_hugepages: false,
            pin: false,
        }
    }

    /// Prints two pauses, each answered before the next line; waits
    /// forever, as a guest on its console does, when its input closes.
    const PAUSING_GUEST: &str = r#"
for n in 1 2; do
  echo "[    1.0] {\"kind\":\"p\",\"n\":$n}"
  read answer || exec sleep 60
  echo "{\"kind\":\"after\",\"n\":$n}"
done
echo 'RINGVISOR_TIMINGS {"boot_s":1}' >&2
"#;

    #[test]
    fn a_paced_guest_waits_for_each_answer() {
        let ctx = script_ctx("ok", PAUSING_GUEST);
        let mut seen = Vec::new();
        let run = run_guest_paced(&ctx, "paced", &[], "p", |pause, pid| {
            assert!(pid > 0);
            // The guest has printed nothing after the pause yet.
            seen.push(pause["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [1, 2]);
        assert_eq!(run.lines("after").len(), 2);
        assert_eq!(run.timings.unwrap()["boot_s"], 1);
        let _ = std::fs::remove_dir_all(&ctx.out);
    }

    #[test]
    fn a_console_byte_that_is_not_utf8_does_not_stop_the_answers() {
        // The pause waits at most 20 s for its answer, then fails the run.
        let ctx = script_ctx(
            "utf8",
            r#"
printf 'boot \377 noise\n'
echo '{"kind":"p","n":1}'
timeout 20 head -n 1 >/dev/null || { echo '{"kind":"x-error","detail":"no answer"}'; exit 1; }
echo '{"kind":"after","n":1}'
"#,
        );
        let mut seen = 0;
        let run = run_guest_paced(&ctx, "paced", &[], "p", |_, _| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 1);
        assert!(run.stdout.contains("boot \u{fffd} noise"), "{}", run.stdout);
        assert_eq!(run.lines("after").len(), 1);
        let _ = std::fs::remove_dir_all(&ctx.out);
    }

    #[test]
    fn a_failed_pause_kills_the_waiting_guest_and_is_the_error() {
        let ctx = script_ctx("fail", PAUSING_GUEST);
        let mut calls = 0;
        let start = Instant::now();
        let err = run_guest_paced(&ctx, "paced", &[], "p", |_, _| {
            calls += 1;
            Err(BenchError::NoTimings { run: 7 })
        })
        .err()
        .unwrap();
        assert_eq!(calls, 1, "no pause after the failed one");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the waiting child is killed, not waited for"
        );
        assert!(matches!(err, BenchError::NoTimings { run: 7 }), "{err}");
        let _ = std::fs::remove_dir_all(&ctx.out);
    }

    #[test]
    fn figures_must_be_positive_and_finite() {
        assert_eq!(fig("x", 2.0, "us").unwrap()["unit"], "us");
        assert!(fig("x", 0.0, "us").is_err());
        assert!(fig("x", f64::NAN, "us").is_err());
        assert!(fig("x", -1.0, "us").is_err());
    }

    #[test]
    fn stats_min_median_p99() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(stats(&v), Some((1.0, 51.0, 99.0)));
        assert_eq!(stats(&[5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn guest_lines_are_found_among_console_output() {
        let run = GuestRun {
            what: "t".into(),
            stdout: "[ 1.0] boot\r\n{\"kind\":\"a\",\"x\":1}\r\nrv-init: {\"kind\":\"b\"}\n".into(),
            timings: None,
        };
        assert_eq!(run.lines("a").len(), 1);
        assert_eq!(run.lines("b").len(), 1);
        assert!(run.require("c").is_err());
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(64 << 20), "64M");
        assert_eq!(size_label(2 << 30), "2G");
        assert_eq!(size_label(4096), "4K");
    }
}
