//! The registration suite: registering a buffer pool again on each ring
//! versus cloning it from ring 0 (IORING_REGISTER_CLONE_BUFFERS), on the
//! host in-process and in guests (`ring-pool`, `pv-bench`).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use io_uring::IoUring;
use serde_json::{json, Value};

use super::{
    fig, free_hugepages, run_guest, samples, size_label, BenchError, Ctx, GuestRun, Point,
    SuiteOutput,
};

const HUGE_2M: u64 = 2 << 20;
/// The kernel's largest registered buffer (`SZ_1G`).
const MAX_BUF: u64 = 1 << 30;
/// Rings of a guest measurement (ring 0 registers first).
const GUEST_RINGS: usize = 8;

/// One measurement point.
#[derive(Clone, Copy)]
enum Where {
    /// In-process io_uring on the host: pool bytes, 2 MiB pages?
    Host(u64, bool),
    /// A guest running ring-pool: pool bytes (2 MiB guest pages).
    RingPool(u64),
    /// A guest running pv-bench --only reg: pool bytes (2 MiB guest pages).
    PvBench(u64),
}

fn host_sizes(ctx: &Ctx) -> Vec<u64> {
    if ctx.quick {
        vec![64 << 20]
    } else {
        (0..5).map(|i| (64u64 << 20) << i).collect()
    }
}

fn guest_sizes(ctx: &Ctx) -> Vec<u64> {
    if ctx.quick {
        vec![16 << 20]
    } else {
        vec![16 << 20, 64 << 20, 256 << 20]
    }
}

fn points(ctx: &Ctx) -> Vec<Where> {
    let mut v = Vec::new();
    for s in host_sizes(ctx) {
        v.push(Where::Host(s, false));
    }
    for s in host_sizes(ctx) {
        if free_hugepages(HUGE_2M) >= s / HUGE_2M {
            v.push(Where::Host(s, true));
        }
    }
    for s in guest_sizes(ctx) {
        v.push(Where::RingPool(s));
    }
    for s in guest_sizes(ctx) {
        v.push(Where::PvBench(s));
    }
    v
}

fn label(w: Where) -> String {
    match w {
        Where::Host(s, h) => format!(
            "host io_uring {} of {} pages",
            size_label(s),
            if h { "2M" } else { "4K" }
        ),
        Where::RingPool(s) => format!("guest ring-pool {}", size_label(s)),
        Where::PvBench(s) => format!("guest pv-bench {}", size_label(s)),
    }
}

/// Seconds a point is expected to take on nested PVM (fitted to a full
/// run on a 2-core nested-PVM Xeon, 2026-11-25).
fn estimate(w: Where) -> Duration {
    let mib = |s: u64| (s >> 20) as f64;
    Duration::from_secs_f64(match w {
        // Populate, then ~70 register rounds of ~20 us per MiB.
        Where::Host(s, _) => 1.0 + mib(s) * 0.005,
        // A boot, then ~8 registrations: in the guest kernel registering
        // grows as size^1.9 (0.2 s at 16 MiB, 31 s at 256 MiB).
        Where::RingPool(s) => 16.0 + 8.0 * 0.2 * (mib(s) / 16.0).powf(1.9),
        // A boot, then ~8 registrations of ~6 ms per MiB through /dev/vuring.
        Where::PvBench(s) => 16.0 + 8.0 * 0.006 * mib(s),
    })
}

pub fn plan(ctx: &Ctx) -> Vec<Point> {
    points(ctx)
        .into_iter()
        .map(|w| Point {
            label: label(w),
            est: estimate(w),
        })
        .collect()
}

/// An anonymous populated mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, huge: bool) -> std::io::Result<Self> {
        let extra = if huge {
            libc::MAP_HUGETLB | (21 << libc::MAP_HUGE_SHIFT)
        } else {
            0
        };
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let m = Mapping { ptr: p.cast(), len };
        for off in (0..len).step_by(4096) {
            // SAFETY: inside the mapping.
            unsafe { m.ptr.add(off).write_volatile(1) };
        }
        Ok(m)
    }

    fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.len)
            .step_by(MAX_BUF as usize)
            .map(|off| libc::iovec {
                // SAFETY: off < len.
                iov_base: unsafe { self.ptr.add(off) }.cast(),
                iov_len: (MAX_BUF as usize).min(self.len - off),
            })
            .collect()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `struct io_uring_clone_buffers`.
#[repr(C)]
#[derive(Default)]
struct CloneBuffers {
    src_fd: u32,
    flags: u32,
    src_off: u32,
    dst_off: u32,
    nr: u32,
    pad: [u32; 3],
}

const IORING_REGISTER_CLONE_BUFFERS: libc::c_uint = 30;

/// IORING_REGISTER_CLONE_BUFFERS of every buffer of `src` into `dst`.
fn clone_buffers(dst: &IoUring, src: &IoUring) -> std::io::Result<()> {
    let arg = CloneBuffers {
        src_fd: src.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: io_uring_register with a live, correctly laid out argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            dst.as_raw_fd(),
            IORING_REGISTER_CLONE_BUFFERS,
            &arg as *const CloneBuffers,
            1,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn host_err(what: String) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Host { what, source }
}

/// Samples in µs and (min, median, p99) in µs from their histogram.
type HostSamples = (Vec<f64>, (f64, f64, f64));

/// 1 ns to 1000 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("valid bounds")
}

fn summary(h: &Histogram<u64>) -> (f64, f64, f64) {
    (
        h.min() as f64 / 1e3,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

/// (method, samples) of one host-native point.
fn host_point(
    size: u64,
    huge: bool,
    quick: bool,
) -> Result<Vec<(&'static str, HostSamples)>, BenchError> {
    const RINGS: usize = 8;
    let what = label(Where::Host(size, huge));
    let m = Mapping::new(size as usize, huge).map_err(host_err(format!("{what}: mmap")))?;
    let iovs = m.iovecs();
    let rings: Vec<IoUring> = (0..RINGS)
        .map(|_| IoUring::new(8))
        .collect::<Result<_, _>>()
        .map_err(host_err(format!("{what}: io_uring_setup")))?;
    // SAFETY: the pool outlives the rings' use of it (dropped after them).
    unsafe { rings[0].submitter().register_buffers(&iovs) }
        .map_err(host_err(format!("{what}: register on ring 0")))?;
    // Enough rounds for a p99 of ~70 samples or more, within ~1 s per method.
    let rounds = if quick { 5 } else { 10 };
    let mut reg = histogram();
    let mut clo = histogram();
    let (mut reg_raw, mut clo_raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for r in &rings[1..] {
            let t = Instant::now();
            // SAFETY: as above.
            unsafe { r.submitter().register_buffers(&iovs) }
                .map_err(host_err(format!("{what}: register again")))?;
            let ns = t.elapsed().as_nanos() as u64;
            reg.saturating_record(ns.max(1));
            reg_raw.push(ns as f64 / 1e3);
            r.submitter()
                .unregister_buffers()
                .map_err(host_err(format!("{what}: unregister")))?;
            let t = Instant::now();
            clone_buffers(r, &rings[0])
                .map_err(host_err(format!("{what}: IORING_REGISTER_CLONE_BUFFERS")))?;
            let ns = t.elapsed().as_nanos() as u64;
            clo.saturating_record(ns.max(1));
            clo_raw.push(ns as f64 / 1e3);
            r.submitter()
                .unregister_buffers()
                .map_err(host_err(format!("{what}: unregister")))?;
        }
    }
    drop(rings);
    drop(m);
    Ok(vec![
        ("register", (reg_raw, summary(&reg))),
        ("clone", (clo_raw, summary(&clo))),
    ])
}

#[allow(clippy::too_many_arguments)]
fn point_json(
    source: &str,
    method: &str,
    size: u64,
    page: &str,
    rings: usize,
    raw: Option<&[f64]>,
    min: f64,
    median: f64,
    p99: f64,
    count: u64,
) -> Result<Value, BenchError> {
    let what = format!("{source} {method} {} {page}", size_label(size));
    let mut v = json!({
        "source": source,
        "method": method,
        "pool_bytes": size,
        "page": page,
        "rings": rings,
        "sample_count": count,
        "min": fig(&what, min, "us")?,
        "median": fig(&what, median, "us")?,
        "p99": fig(&what, p99, "us")?,
    });
    if let Some(raw) = raw {
        v["samples"] = samples(raw, "us");
    }
    Ok(v)
}

/// Points of a guest run's `kind` lines (`min_us`, `median_us`, `p99_us`).
fn guest_points(run: &GuestRun, kind: &str, source: &str) -> Result<Vec<Value>, BenchError> {
    let mut out = Vec::new();
    for l in run.require(kind)? {
        let method = l["method"].as_str().unwrap_or("?");
        if method == "publish" {
            // One PUBLISH, not a per-ring latency.
            continue;
        }
        out.push(point_json(
            source,
            method,
            l["pool_bytes"].as_u64().unwrap_or(0),
            l["page"].as_str().unwrap_or("?"),
            l["rings"].as_u64().unwrap_or(0) as usize,
            None,
            run.num(&l, "min_us")?,
            run.num(&l, "median_us")?,
            run.num(&l, "p99_us")?,
            l["samples"].as_u64().unwrap_or(0),
        )?);
    }
    Ok(out)
}

fn guest_args(size: u64, pv: bool) -> Vec<String> {
    let pages = size / HUGE_2M + 4;
    let mem_mib = (size >> 20) * 2 + 256;
    let mut a = vec![
        "--memory".to_string(),
        format!("size={mem_mib}M,hugepages=2M"),
    ];
    if pv {
        a.extend([
            "--uring".into(),
            format!("rings={}", GUEST_RINGS + 2),
            "--cmdline".into(),
            format!(
                "hugepages={pages} -- /bin/pv-bench --only reg --rings {GUEST_RINGS} --size {} --page 2M",
                size
            ),
        ]);
    } else {
        a.extend([
            "--cmdline".into(),
            format!(
                "hugepages={pages} -- /bin/ring-pool --rings {GUEST_RINGS} --size {} --page 2M",
                size
            ),
        ]);
    }
    a
}

pub fn run(ctx: &Ctx, plan: &[Point], pb: &ProgressBar) -> Result<SuiteOutput, BenchError> {
    let mut pts: Vec<Value> = Vec::new();
    for (w, p) in points(ctx).into_iter().zip(plan) {
        pb.set_message(p.label.clone());
        match w {
            Where::Host(size, huge) => {
                let page = if huge { "2M" } else { "4K" };
                for (method, (raw, (min, med, p99))) in host_point(size, huge, ctx.quick)? {
                    pts.push(point_json(
                        "host",
                        method,
                        size,
                        page,
                        8,
                        Some(&raw),
                        min,
                        med,
                        p99,
                        raw.len() as u64,
                    )?);
                }
            }
            Where::RingPool(size) => {
                let run = run_guest(ctx, &p.label, &guest_args(size, false))?;
                pts.extend(guest_points(&run, "ring-pool", "guest-ring-pool")?);
            }
            Where::PvBench(size) => {
                let run = run_guest(ctx, &p.label, &guest_args(size, true))?;
                pts.extend(guest_points(&run, "pv-bench", "guest-pv-bench")?);
            }
        }
        pb.inc(1);
    }
    // Ratios of medians: register / clone, register / table-clone.
    let mut ratios = Vec::new();
    let mut table = Vec::new();
    let find = |src: &str, m: &str, size: u64, page: &str| {
        pts.iter()
            .find(|p| {
                p["source"] == src
                    && p["method"] == m
                    && p["pool_bytes"] == size
                    && p["page"] == page
            })
            .and_then(|p| p["median"]["value"].as_f64())
    };
    for p in pts.iter().filter(|p| p["method"] == "register") {
        let (src, size, page) = (
            p["source"].as_str().unwrap_or(""),
            p["pool_bytes"].as_u64().unwrap_or(0),
            p["page"].as_str().unwrap_or(""),
        );
        let reg = p["median"]["value"].as_f64().unwrap_or(f64::NAN);
        for other in ["clone", "table-clone"] {
            let Some(c) = find(src, other, size, page) else {
                continue;
            };
            let what = format!("{src} {} {page}", size_label(size));
            ratios.push(json!({
                "source": src,
                "pool_bytes": size,
                "page": page,
                "ratio": format!("register/{other}"),
                "value": fig(&what, reg / c, "x")?,
            }));
            table.push([
                format!("{src} {} of {page} pages", size_label(size)),
                format!("register {} / {other} {}", us(reg), us(c)),
                format!("{:.1}x", reg / c),
            ]);
        }
    }
    Ok(SuiteOutput {
        json: json!({"points": pts, "ratios": ratios}),
        table,
    })
}

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.1} us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_keeps_large_samples() {
        let mut h = histogram();
        for ns in [580_312u64, 548_504, 2_000_000_000] {
            h.saturating_record(ns);
        }
        let (min, med, p99) = summary(&h);
        assert!((min - 548.5).abs() < 1.0, "{min}");
        assert!((med - 580.3).abs() < 1.0, "{med}");
        assert!(p99 > 1.9e6, "{p99}");
    }
}
