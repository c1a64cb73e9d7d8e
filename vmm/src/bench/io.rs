//! The io suite: 4 KiB random O_DIRECT reads at QD1 and QD32 of one host
//! file, host-native io_uring in-process, a guest over virtio-blk
//! (`blk-io --bench-qd`) and a guest over pv-uring rings (`pv-bench`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use io_uring::{opcode, types, IoUring};
use serde_json::{json, Value};

use super::{fig, run_guest, samples, BenchError, Ctx, GuestRun, Point, SuiteOutput};

const BLOCK: usize = 4096;
/// Bytes of the target file.
const FILE_BYTES: u64 = 256 << 20;
/// Queue depths measured.
const QDS: [u32; 2] = [1, 32];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path_ {
    Host,
    VirtioBlk,
    PvRing,
}

impl Path_ {
    fn name(self) -> &'static str {
        match self {
            Path_::Host => "host",
            Path_::VirtioBlk => "guest-virtio-blk",
            Path_::PvRing => "guest-pv-ring",
        }
    }
}

fn secs(ctx: &Ctx) -> f64 {
    if ctx.quick {
        1.0
    } else {
        5.0
    }
}

pub fn plan(ctx: &Ctx) -> Vec<Point> {
    let s = secs(ctx);
    vec![
        Point {
            label: "host io_uring QD1+QD32".into(),
            est: Duration::from_secs_f64(2.0 + 2.0 * s),
        },
        Point {
            label: "guest virtio-blk QD1+QD32".into(),
            est: Duration::from_secs_f64(14.0 + 2.0 * s),
        },
        Point {
            label: "guest pv rings QD1+QD32".into(),
            est: Duration::from_secs_f64(16.0 + 2.0 * s),
        },
    ]
}

/// The target file, filled with data (reads of unwritten extents would
/// never reach the disk), removed on drop.
struct Target(PathBuf);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn host_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Host { what, source }
}

fn make_target(dir: &Path) -> Result<Target, BenchError> {
    let path = dir.join("io-target.img");
    let t = Target(path.clone());
    let mut f =
        std::fs::File::create(&path).map_err(host_err(format!("create {}", path.display())))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..FILE_BYTES >> 20 {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk)
            .map_err(host_err(format!("write {}", path.display())))?;
    }
    f.sync_all()
        .map_err(host_err(format!("fsync {}", path.display())))?;
    Ok(t)
}

/// Host-native random reads at `qd` for `secs`: (IOPS per 100 ms slice,
/// latency samples in µs, total IOPS).
fn host_reads(path: &Path, qd: u32, secs: f64) -> Result<(Vec<f64>, Vec<f64>, f64), BenchError> {
    let what = format!("host randread qd {qd}");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(host_err(format!(
            "{what}: open {} O_DIRECT",
            path.display()
        )))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let qdu = qd as usize;
    let mut ring = IoUring::new(qd.next_power_of_two().max(8))
        .map_err(host_err(format!("{what}: io_uring_setup")))?;
    let mut pool = vec![0u8; (qdu + 1) * BLOCK];
    let align = pool.as_ptr().align_offset(BLOCK);
    // SAFETY: align < BLOCK, and qd blocks fit after it.
    let base = unsafe { pool.as_mut_ptr().add(align) };
    let iov = [libc::iovec {
        iov_base: base.cast(),
        iov_len: qdu * BLOCK,
    }];
    // SAFETY: `pool` outlives the ring (dropped after it at the end).
    unsafe { ring.submitter().register_buffers(&iov) }
        .map_err(host_err(format!("{what}: register")))?;
    let blocks = FILE_BYTES / BLOCK as u64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(qd);
    let mut started = vec![Instant::now(); qdu];
    let mut push = |ring: &mut IoUring, slot: usize, started: &mut [Instant]| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let off = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks) * BLOCK as u64;
        // SAFETY: slot < qd: inside the registered buffer.
        let ptr = unsafe { base.add(slot * BLOCK) };
        let sqe = opcode::ReadFixed::new(types::Fd(fd), ptr, BLOCK as u32, 0)
            .offset(off)
            .build()
            .user_data(slot as u64);
        started[slot] = Instant::now();
        // SAFETY: one read per slot in flight; the buffer lives on.
        unsafe { ring.submission().push(&sqe) }.map_err(|_| BenchError::Host {
            what: "SQ full".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        })
    };
    for slot in 0..qdu {
        push(&mut ring, slot, &mut started)?;
    }
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let slice = Duration::from_millis(100);
    let (mut slice_start, mut slice_ops) = (t0, 0u64);
    let mut slices = Vec::new();
    let mut lat = Vec::new();
    let mut ops = 0u64;
    let mut inflight = qdu;
    while inflight > 0 {
        ring.submit_and_wait(1)
            .map_err(host_err(format!("{what}: io_uring_enter")))?;
        let done: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        let now = Instant::now();
        for (slot, res) in done {
            if res != BLOCK as i32 {
                return Err(BenchError::Host {
                    what: format!("{what}: READ_FIXED returned {res}"),
                    source: std::io::Error::from_raw_os_error(-res.min(0)),
                });
            }
            ops += 1;
            slice_ops += 1;
            lat.push((now - started[slot]).as_nanos() as f64 / 1e3);
            inflight -= 1;
            if now < end {
                push(&mut ring, slot, &mut started)?;
                inflight += 1;
            }
        }
        if now - slice_start >= slice && now < end {
            slices.push(slice_ops as f64 / (now - slice_start).as_secs_f64());
            (slice_start, slice_ops) = (now, 0);
        }
    }
    let total = ops as f64 / t0.elapsed().as_secs_f64();
    drop(ring);
    drop(pool);
    Ok((slices, lat, total))
}

fn point(path: Path_, qd: u32, iops: f64, raw: Value, extra: Value) -> Result<Value, BenchError> {
    let what = format!("{} qd {qd}", path.name());
    let mut v = json!({
        "path": path.name(),
        "qd": qd,
        "block_bytes": BLOCK,
        "span_bytes": FILE_BYTES,
        "iops": fig(&what, iops, "IOPS")?,
        "samples": raw,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            o.insert(k.clone(), val.clone());
        }
    }
    Ok(v)
}

/// The child VMM's CPU time outside its vCPU threads (device workers and
/// event loops) per guest request, in microseconds. Below one clock tick of
/// CPU the figure is the upper bound one tick gives, and says so.
fn vmm_cpu_per_request(run: &GuestRun, lines: &[Value]) -> Result<Value, BenchError> {
    let ops: f64 = lines.iter().filter_map(|l| l["ops"].as_f64()).sum();
    let cpu = run
        .timings
        .as_ref()
        .and_then(|t| t["vmm_threads_cpu_s"].as_f64())
        .ok_or_else(|| BenchError::Missing {
            what: run.what.clone(),
            kind: "RINGVISOR_TIMINGS vmm_threads_cpu_s".into(),
            stdout: String::new(),
        })?;
    let what = format!("{}: VMM CPU per request", run.what);
    if cpu > 0.0 {
        return Ok(json!({"value": fig(&what, cpu / ops * 1e6, "us")?, "ops": ops}));
    }
    // SAFETY: sysconf has no preconditions.
    let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(
        json!({"value": fig(&what, tick / ops * 1e6, "us (upper bound: under one clock tick)")?, "ops": ops}),
    )
}

pub fn run(ctx: &Ctx, plan: &[Point], pb: &ProgressBar) -> Result<SuiteOutput, BenchError> {
    let target = make_target(&ctx.out)?;
    let file = target.0.display().to_string();
    let s = secs(ctx);
    let mut pts = Vec::new();

    pb.set_message(plan[0].label.clone());
    for qd in QDS {
        let (slices, lat, iops) = host_reads(&target.0, qd, s)?;
        let (min, med, p99) = super::stats(&lat).unwrap_or((0.0, 0.0, 0.0));
        let what = format!("host qd {qd} latency");
        pts.push(point(
            Path_::Host,
            qd,
            iops,
            samples(&slices, "IOPS per 100 ms slice"),
            json!({
                "latency": {
                    "min": fig(&what, min, "us")?,
                    "median": fig(&what, med, "us")?,
                    "p99": fig(&what, p99, "us")?,
                },
                "ops": lat.len(),
            }),
        )?);
    }
    pb.inc(1);

    pb.set_message(plan[1].label.clone());
    let qds = QDS.map(|q| q.to_string()).join(",");
    let run = run_guest(
        ctx,
        &plan[1].label,
        &[
            "--disk".into(),
            format!("path={file},direct=on,readonly=on"),
            "--cmdline".into(),
            format!("-- /bin/blk-io --bench-qd {qds} --bench-secs {s}"),
        ],
    )?;
    let lines = run.require("blk-io-bench")?;
    let mut vmm_cpu = vec![json!({
        "path": Path_::VirtioBlk.name(),
        "vmm_cpu_per_request": vmm_cpu_per_request(&run, &lines)?,
    })];
    for qd in QDS {
        let l = lines
            .iter()
            .find(|l| l["qd"] == qd)
            .ok_or_else(|| BenchError::Missing {
                what: run.what.clone(),
                kind: format!("blk-io-bench qd {qd}"),
                stdout: String::new(),
            })?;
        let iops = run.num(l, "iops")?;
        pts.push(point(
            Path_::VirtioBlk,
            qd,
            iops,
            samples(&[iops], "IOPS"),
            json!({"ops": l["ops"], "secs": l["secs"]}),
        )?);
    }
    pb.inc(1);

    pb.set_message(plan[2].label.clone());
    let run = run_guest(
        ctx,
        &plan[2].label,
        &[
            "--uring".into(),
            "rings=8".into(),
            "--uring-backend".into(),
            format!("path={file},direct=on,readonly=on"),
            "--cmdline".into(),
            format!(
                "hugepages=8 -- /bin/pv-bench --only io --qd {qds} --span {FILE_BYTES} --io-ms {}",
                (s * 1000.0) as u64
            ),
        ],
    )?;
    let lines = run.require("pv-bench-io")?;
    vmm_cpu.push(json!({
        "path": Path_::PvRing.name(),
        "vmm_cpu_per_request": vmm_cpu_per_request(&run, &lines)?,
    }));
    for qd in QDS {
        let l = lines
            .iter()
            .find(|l| l["qd"] == qd)
            .ok_or_else(|| BenchError::Missing {
                what: run.what.clone(),
                kind: format!("pv-bench-io qd {qd}"),
                stdout: String::new(),
            })?;
        let iops = run.num(l, "iops")?;
        let what = format!("guest pv qd {qd} latency");
        pts.push(point(
            Path_::PvRing,
            qd,
            iops,
            samples(&[iops], "IOPS"),
            json!({
                "latency": {
                    "min": fig(&what, run.num(l, "min_us")?, "us")?,
                    "median": fig(&what, run.num(l, "median_us")?, "us")?,
                    "p99": fig(&what, run.num(l, "p99_us")?, "us")?,
                },
                "ops": l["ops"], "secs": l["secs"],
            }),
        )?);
    }
    pb.inc(1);
    drop(target);

    let iops_of = |p: Path_, qd: u32| {
        pts.iter()
            .find(|v| v["path"] == p.name() && v["qd"] == qd)
            .and_then(|v| v["iops"]["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let mut ratios = Vec::new();
    let mut table = Vec::new();
    for qd in QDS {
        let host = iops_of(Path_::Host, qd);
        table.push([
            format!("host io_uring QD{qd}"),
            format!("{host:.0} IOPS"),
            String::new(),
        ]);
        for p in [Path_::VirtioBlk, Path_::PvRing] {
            let g = iops_of(p, qd);
            let r = g / host;
            ratios.push(json!({
                "path": p.name(),
                "qd": qd,
                "ratio": "guest/host",
                "value": fig(&format!("{} qd {qd} / host", p.name()), r, "x")?,
            }));
            table.push([
                format!("{} QD{qd}", p.name()),
                format!("{g:.0} IOPS"),
                format!("{:.3}x host", r),
            ]);
        }
    }
    for c in &vmm_cpu {
        let v = &c["vmm_cpu_per_request"]["value"];
        table.push([
            format!("{} VMM CPU per request", c["path"].as_str().unwrap_or("?")),
            format!(
                "{:.2} {}",
                v["value"].as_f64().unwrap_or(f64::NAN),
                v["unit"].as_str().unwrap_or("")
            ),
            String::new(),
        ]);
    }
    Ok(SuiteOutput {
        json: json!({
            "file_bytes": FILE_BYTES,
            "secs_per_run": s,
            "points": pts,
            "ratios": ratios,
            "vmm_cpu": vmm_cpu,
        }),
        table,
    })
}
