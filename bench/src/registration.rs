//! The registration suite: registering a buffer pool again on each ring
//! versus cloning it from ring 0 (IORING_REGISTER_CLONE_BUFFERS), on the
//! host in-process and in guests (`ring-pool`, `pv-bench`).
//!
//! Two series: pool size at 8 rings (`points`), and the number of rings
//! at one pool size (`rings_sweep`: 1 to 64 rings; one ring has only its
//! first registration).
//!
//! pv-bench guests also have a pv-uring buffer arena of the pool's size
//! (`--uring arena=`): beside register, clone and table-clone they measure
//! `arena` (ARENA_REGISTER of a pool of arena chunks on each ring, after
//! one `arena-alloc`) and `arena-clone` (whole clones of an arena ring's
//! table), and `arena-rings` (one ARENA_REGISTER_RINGS giving all the
//! rings the pool; each sample is the time for all of them). An arena-only guest (`pv-bench --only arena`, small RAM)
//! measures the 1-to-64-ring sweep at [`ARENA_SWEEP_SIZE`] and the largest
//! arena [`ARENA_LARGE`]; each arena guest's set-up (host allocation and
//! registration, `RINGVISOR_ARENA`) is recorded in `arena_setup`. Host points on 2 MiB pages need free host
//! hugepages; as root the suite raises the pool for them and restores it
//! before the guests run ([`Reservation`]), and records what it did.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
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
/// Rings of a pool-size point (ring 0 registers first).
const SIZE_RINGS: usize = 8;
/// Rings of a guest pool-size point above 1 GiB: each guest ring costs
/// about 17 ms per MiB there (registering and unregistering in emulated
/// guest kernel code), 70 s a ring at 4 GiB.
const LARGE_GUEST_RINGS: usize = 4;
/// Ring counts of the rings sweep. One ring: the first registration only.
const SWEEP_RINGS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Pool of the arena-only sweep (the issue's 4 GiB).
const ARENA_SWEEP_SIZE: u64 = 4 << 30;
/// The largest arena measured (once, 1 and 64 rings): 8 GiB.
const ARENA_LARGE: u64 = 8 << 30;

/// One measurement point.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Where {
    /// In-process io_uring on the host, 8 rings: pool bytes, 2 MiB pages?
    Host(u64, bool),
    /// In-process io_uring on the host, every count of [`SWEEP_RINGS`]:
    /// pool bytes, 2 MiB pages?
    HostSweep(u64, bool),
    /// A guest running ring-pool: pool bytes (2 MiB guest pages); at the
    /// sweep size every count of [`SWEEP_RINGS`], else 8 rings.
    RingPool(u64),
    /// A guest running pv-bench --only reg, like `RingPool`.
    PvBench(u64),
    /// A guest running ring-pool on ordinary 4 KiB guest pages, 8 rings.
    RingPoolSmall(u64),
    /// A small guest running `pv-bench --only arena` on an arena of this
    /// many bytes: every count of [`SWEEP_RINGS`], or (`false`) 1 and 64.
    PvArena(u64, bool),
}

impl Where {
    fn huge_host(self) -> bool {
        matches!(self, Where::Host(_, true) | Where::HostSweep(_, true))
    }

    /// Measured on the host (no guest).
    fn host(self) -> bool {
        matches!(self, Where::Host(..) | Where::HostSweep(..))
    }
}

/// Host pools: 64 MiB doubling to 4 GiB (the issue's "at least 4 GiB";
/// a 2 MiB point the host cannot back is skipped, saying why).
fn host_sizes(ctx: &Ctx) -> Vec<u64> {
    if ctx.quick {
        vec![64 << 20]
    } else {
        (0..7).map(|i| (64u64 << 20) << i).collect()
    }
}

/// Guest pools: 64 MiB doubling to 4 GiB (each a boot of ring-pool and
/// one of pv-bench); `--quick`: 16 MiB.
fn guest_sizes(ctx: &Ctx) -> Vec<u64> {
    if ctx.quick {
        vec![16 << 20]
    } else {
        (0..7).map(|i| (64u64 << 20) << i).collect()
    }
}

/// Guest pools of 4 KiB pages (ring-pool only: a pv table holds one
/// extent per guest-physically contiguous run, which 4 KiB pages rarely
/// make): 64 and 256 MiB; `--quick`: 16 MiB. Registering 4 KiB pages
/// costs the guest kernel ~53 ms per MiB, 7 times 2 MiB pages' cost: a
/// 1 GiB point would take 15 min.
fn guest_small_sizes(ctx: &Ctx) -> Vec<u64> {
    if ctx.quick {
        vec![16 << 20]
    } else {
        vec![64 << 20, 256 << 20]
    }
}

/// Pool size of the rings sweep: one of [`guest_sizes`], so that its
/// 8-ring measurement is also that size's point (one boot fewer).
fn sweep_size(ctx: &Ctx) -> u64 {
    if ctx.quick {
        16 << 20
    } else {
        64 << 20
    }
}

/// 2 MiB host pages the host points need at most (one point at a time).
fn host_huge_needed(ctx: &Ctx) -> u64 {
    let largest = host_sizes(ctx)
        .into_iter()
        .chain([sweep_size(ctx)])
        .max()
        .unwrap_or(0);
    largest.div_ceil(HUGE_2M)
}

/// Host points first (their 2 MiB hugepages are given back before any
/// guest boots, so that guest RAM is backed as in a run without them).
fn points(ctx: &Ctx) -> Vec<Where> {
    let mut v = Vec::new();
    for huge in [false, true] {
        for s in host_sizes(ctx) {
            v.push(Where::Host(s, huge));
        }
        v.push(Where::HostSweep(sweep_size(ctx), huge));
    }
    for s in guest_sizes(ctx) {
        v.push(Where::RingPool(s));
    }
    for s in guest_sizes(ctx) {
        v.push(Where::PvBench(s));
    }
    for s in guest_small_sizes(ctx) {
        v.push(Where::RingPoolSmall(s));
    }
    if ctx.quick {
        v.push(Where::PvArena(16 << 20, true));
    } else {
        v.push(Where::PvArena(ARENA_SWEEP_SIZE, true));
        v.push(Where::PvArena(ARENA_LARGE, false));
    }
    // RINGVISOR_BENCH_POINTS=a,b keeps only the points whose label holds
    // one of the substrings (a partial run; results.json says which).
    if let Some(keep) = points_filter() {
        v.retain(|&w| keep.iter().any(|k| label(ctx, w).contains(k.as_str())));
    }
    v
}

/// The substrings of RINGVISOR_BENCH_POINTS, if set.
fn points_filter() -> Option<Vec<String>> {
    let v = std::env::var("RINGVISOR_BENCH_POINTS").ok()?;
    Some(
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// Ring counts of an arena-only guest.
fn arena_rings_arg(sweep: bool) -> String {
    if sweep {
        SWEEP_RINGS.map(|n| n.to_string()).join(",")
    } else {
        "1,64".into()
    }
}

fn page(huge: bool) -> &'static str {
    if huge {
        "2M"
    } else {
        "4K"
    }
}

/// Rings of a guest's pool-size point.
fn guest_size_rings(size: u64) -> usize {
    if size > MAX_BUF {
        LARGE_GUEST_RINGS
    } else {
        SIZE_RINGS
    }
}

fn rings_arg(ctx: &Ctx, size: u64) -> String {
    if size == sweep_size(ctx) {
        SWEEP_RINGS.map(|n| n.to_string()).join(",")
    } else {
        guest_size_rings(size).to_string()
    }
}

fn label(ctx: &Ctx, w: Where) -> String {
    match w {
        Where::Host(s, h) => format!("host io_uring {} of {} pages", size_label(s), page(h)),
        Where::HostSweep(s, h) => format!(
            "host io_uring {} of {} pages, 1 to 64 rings",
            size_label(s),
            page(h)
        ),
        Where::RingPool(s) => format!(
            "guest ring-pool {}, rings {}",
            size_label(s),
            rings_arg(ctx, s)
        ),
        Where::PvBench(s) => format!(
            "guest pv-bench {}, rings {}",
            size_label(s),
            rings_arg(ctx, s)
        ),
        Where::RingPoolSmall(s) => format!(
            "guest ring-pool {} of 4K pages, rings {SIZE_RINGS}",
            size_label(s)
        ),
        Where::PvArena(s, sweep) => format!(
            "guest pv-bench arena {}, rings {}",
            size_label(s),
            arena_rings_arg(sweep)
        ),
    }
}

/// Registrations a guest run makes (ring 0's included).
fn guest_registrations(ctx: &Ctx, size: u64) -> f64 {
    if size == sweep_size(ctx) {
        SWEEP_RINGS.iter().sum::<usize>() as f64
    } else {
        guest_size_rings(size) as f64
    }
}

/// Seconds a point is expected to take on nested PVM (fitted to runs on
/// a 2-core nested-PVM Xeon, 2026-11-26, guest kernel with patch 0005).
fn estimate(ctx: &Ctx, w: Where) -> Duration {
    let mib = |s: u64| (s >> 20) as f64;
    // A guest boot, then touching the pool: the guest kernel zeroes each
    // hugepage, ~49 ms per MiB emulated.
    let boot_and_populate = |s: u64| 16.0 + 0.049 * mib(s);
    Duration::from_secs_f64(match w {
        // Populate, then ~70 register rounds of ~20 us per MiB.
        Where::Host(s, _) => 1.0 + mib(s) * 0.005,
        // ~63 samples per count, 7 counts.
        Where::HostSweep(s, _) => 1.0 + 7.0 * mib(s) * 0.005,
        // Per ring a registration (~7.8 ms per MiB in the guest kernel),
        // an unregistration (about as long) and a clone.
        Where::RingPool(s) => {
            boot_and_populate(s) + guest_registrations(ctx, s) * (0.017 * mib(s) + 0.3)
        }
        // Per ring ~6 ms per MiB through /dev/vuring, plus ~0.2 s of
        // unregistering, cloning and ring setup.
        Where::PvBench(s) => {
            boot_and_populate(s) + guest_registrations(ctx, s) * (0.006 * mib(s) + 0.2)
        }
        // No hugepages to zero, a fault per 4 KiB page instead; per ring
        // a registration (~53 ms per MiB), an unregistration and a clone.
        Where::RingPoolSmall(s) => boot_and_populate(s) + SIZE_RINGS as f64 * (0.1 * mib(s) + 0.3),
        // A small guest's boot and the host's allocation of the arena
        // (~0.2 s per GiB); per ring a create, a register, a clone and a
        // close (~40 ms).
        Where::PvArena(s, sweep) => {
            let rings: usize = if sweep { SWEEP_RINGS.iter().sum() } else { 65 };
            18.0 + 0.2 * (s >> 30) as f64 + rings as f64 * 0.04
        }
    })
}

pub fn plan(ctx: &Ctx) -> Vec<Point> {
    points(ctx)
        .into_iter()
        .map(|w| Point {
            label: label(ctx, w),
            est: estimate(ctx, w),
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

fn host_err(what: String) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Host { what, source }
}

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

/// The host's pool of 2 MiB hugepages (sysfs).
fn huge_dir() -> PathBuf {
    PathBuf::from(format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB",
        HUGE_2M / 1024
    ))
}

fn read_u64(p: &Path) -> std::io::Result<u64> {
    std::fs::read_to_string(p)?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Host hugepages added for the suite: the pool's previous size is
/// written back by [`Reservation::restore`], or on drop (an error, a
/// panic) at the latest.
struct Reservation {
    file: PathBuf,
    previous: u64,
    restored: bool,
}

impl Reservation {
    /// Writes the previous size back (once).
    fn restore(&mut self) -> std::io::Result<()> {
        if !self.restored {
            self.restored = true;
            std::fs::write(&self.file, self.previous.to_string())?;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!(
                "bench: could not restore {} to {}: {e}; set it back by hand",
                self.file.display(),
                self.previous
            );
        }
    }
}

/// Why a 2 MiB host point of `pages` pages cannot run, when the host's
/// pool (free pages plus those a previous point is still giving back)
/// is smaller than that.
fn huge_pool_short(pages: u64) -> Option<String> {
    let pool = read_u64(&huge_dir().join("nr_hugepages")).unwrap_or(0);
    (pool < pages).then(|| {
        format!(
            "{pages} 2 MiB host hugepages needed, the host's pool has {pool} (allocation short)"
        )
    })
}

/// Waits until `pages` 2 MiB host hugepages are free, or `limit` has
/// passed: the previous point's rings let go of their pinned pages in a
/// kernel worker after they are closed, not at once.
fn wait_for_free_huge(pages: u64, limit: Duration) {
    wait_until(limit, || free_hugepages(HUGE_2M) >= pages);
}

/// Polls `done` every 20 ms until it holds or `limit` has passed.
fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let t = Instant::now();
    while !done() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Surplus 2 MiB host hugepages: pages still in use beyond the pool's
/// persistent size (0 when unreadable).
fn surplus_hugepages() -> u64 {
    read_u64(&huge_dir().join("surplus_hugepages")).unwrap_or(0)
}

/// Waits until no surplus 2 MiB host hugepages are left, or `limit` has
/// passed: after the pool is given back, the pages the previous point's
/// rings still hold stay surplus until a kernel worker lets go of them,
/// and a reservation made meanwhile would count them as its own.
fn wait_for_surplus_release(limit: Duration) {
    wait_until(limit, || surplus_hugepages() == 0);
}

/// What the host 2 MiB points got: `Ok(reservation, if any)` when they
/// can run, `Err(reason)` when they are skipped. `record` (results.json's
/// `host_hugepages`) says what was found and done.
fn reserve_huge(ctx: &Ctx, needed: u64, record: &mut Value) -> Result<Option<Reservation>, String> {
    let dir = huge_dir();
    let free = free_hugepages(HUGE_2M);
    let nr_file = dir.join("nr_hugepages");
    *record = json!({
        "page_bytes": HUGE_2M,
        "needed": needed,
        "free_before": free,
        "file": nr_file,
    });
    if free >= needed {
        record["status"] = "enough-free".into();
        return Ok(None);
    }
    let short = format!("{free} free 2 MiB host hugepages, {needed} needed");
    // The persistent pool: pages a previous point's rings still hold after
    // it gave the pool back count in nr_hugepages as surplus until the
    // kernel frees them; restoring to a size with them in it would keep
    // them for good.
    let surplus = surplus_hugepages();
    let previous = match read_u64(&nr_file) {
        Ok(n) => n.saturating_sub(surplus),
        Err(e) => {
            return Err(format!(
                "{short}; no pool to raise ({}: {e})",
                nr_file.display()
            ))
        }
    };
    record["nr_hugepages_before"] = previous.into();
    if !ctx.reserve_hugepages {
        return Err(format!("{short}; --no-reserve-hugepages"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{short}; not root, so the pool was not raised (echo {} > {} as root)",
            previous + needed - free,
            nr_file.display()
        ));
    }
    let target = previous + (needed - free);
    let mut r = Reservation {
        file: nr_file.clone(),
        previous,
        restored: false,
    };
    if let Err(e) = std::fs::write(&nr_file, target.to_string()) {
        r.restored = true; // nothing was changed
        return Err(format!(
            "{short}; writing {target} to {}: {e}",
            nr_file.display()
        ));
    }
    // The kernel allocates what it can: a fragmented host gives fewer.
    let got = read_u64(&nr_file).unwrap_or(0);
    let free_now = free_hugepages(HUGE_2M);
    record["nr_hugepages_raised_to"] = got.into();
    record["reserved"] = got.saturating_sub(previous).into();
    // Short: the smaller points may still fit; a larger one is skipped
    // when it comes (see `huge_pool_short`). None at all: restore now.
    if free_now <= free {
        let restore = r.restore();
        record["nr_hugepages_restored"] = json!(restore.is_ok());
        return Err(format!(
            "{short}; raising nr_hugepages from {previous} to {target} gave {got} ({free_now} free): no page gained, restored"
        ));
    }
    record["status"] = if free_now < needed {
        "partial"
    } else {
        "reserved"
    }
    .into();
    // A kill (SIGINT included: no handler) skips the Drop: say how to
    // undo it by hand.
    eprintln!(
        "bench: raised {0} from {previous} to {got} for the host 2 MiB points, restored after them \
         (if the bench is killed before: echo {previous} > {0})",
        nr_file.display()
    );
    Ok(Some(r))
}

/// One host measurement on `rings` rings: the pool registered on ring 0
/// (timed once), then `rounds` passes over the other rings, each ring
/// registering again and cloning (each timed), in µs.
struct HostRun {
    first_us: f64,
    register: Vec<f64>,
    clone: Vec<f64>,
}

fn host_measure(
    what: &str,
    m: &Mapping,
    rings: usize,
    rounds: usize,
) -> Result<HostRun, BenchError> {
    let iovs = m.iovecs();
    let rings: Vec<IoUring> = (0..rings)
        .map(|_| IoUring::new(8))
        .collect::<Result<_, _>>()
        .map_err(host_err(format!("{what}: io_uring_setup")))?;
    let t = Instant::now();
    // SAFETY: the pool outlives the rings' use of it (dropped after them).
    unsafe { rings[0].submitter().register_buffers(&iovs) }
        .map_err(host_err(format!("{what}: register on ring 0")))?;
    let first_us = t.elapsed().as_nanos() as f64 / 1e3;
    let (mut register, mut clone) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for r in &rings[1..] {
            let t = Instant::now();
            // SAFETY: as above.
            unsafe { r.submitter().register_buffers(&iovs) }
                .map_err(host_err(format!("{what}: register again")))?;
            register.push(t.elapsed().as_nanos() as f64 / 1e3);
            r.submitter()
                .unregister_buffers()
                .map_err(host_err(format!("{what}: unregister")))?;
            let t = Instant::now();
            r.submitter()
                .register_buffers_clone(rings[0].as_raw_fd())
                .map_err(host_err(format!("{what}: IORING_REGISTER_CLONE_BUFFERS")))?;
            clone.push(t.elapsed().as_nanos() as f64 / 1e3);
            r.submitter()
                .unregister_buffers()
                .map_err(host_err(format!("{what}: unregister")))?;
        }
    }
    Ok(HostRun {
        first_us,
        register,
        clone,
    })
}

/// Min, median, p99 (µs) of samples in µs, through an HDR histogram
/// (3 significant digits), like every host figure.
fn host_stats(raw: &[f64]) -> (f64, f64, f64) {
    let mut h = histogram();
    for us in raw {
        h.saturating_record(((us * 1e3) as u64).max(1));
    }
    summary(&h)
}

/// One point: `{"source", "method", "pool_bytes", "page", "rings",
/// "sample_count", "min", "median", "p99", "total", "samples"}`.
struct Pt<'a> {
    source: &'a str,
    method: &'a str,
    size: u64,
    page: &'a str,
    rings: usize,
    /// Every sample in µs, in the order measured.
    raw: &'a [f64],
    /// (min, median, p99) in µs.
    stats: (f64, f64, f64),
    /// µs until all `rings` rings hold the pool this way: ring 0's first
    /// registration plus one pass of this method over the other rings.
    total: f64,
}

fn point_json(p: &Pt) -> Result<Value, BenchError> {
    let what = format!(
        "{} {} {} {} pages, {} rings",
        p.source,
        p.method,
        size_label(p.size),
        p.page,
        p.rings
    );
    Ok(json!({
        "source": p.source,
        "method": p.method,
        "pool_bytes": p.size,
        "page": p.page,
        "rings": p.rings,
        "sample_count": p.raw.len(),
        "min": fig(&what, p.stats.0, "us")?,
        "median": fig(&what, p.stats.1, "us")?,
        "p99": fig(&what, p.stats.2, "us")?,
        "total": fig(&what, p.total, "us")?,
        "samples": samples(p.raw, "us"),
    }))
}

/// Points of one host run; `with_first`: a `first-register` point too
/// (the rings sweep; the only point of one ring).
fn host_points(
    size: u64,
    huge: bool,
    rings: usize,
    r: &HostRun,
    with_first: bool,
) -> Result<Vec<Value>, BenchError> {
    let pass = rings - 1;
    let mut out = Vec::new();
    if with_first {
        let raw = [r.first_us];
        out.push(point_json(&Pt {
            source: "host",
            method: "first-register",
            size,
            page: page(huge),
            rings,
            raw: &raw,
            stats: (r.first_us, r.first_us, r.first_us),
            total: r.first_us,
        })?);
    }
    for (method, raw) in [("register", &r.register), ("clone", &r.clone)] {
        if raw.is_empty() {
            continue;
        }
        out.push(point_json(&Pt {
            source: "host",
            method,
            size,
            page: page(huge),
            rings,
            raw,
            stats: host_stats(raw),
            total: r.first_us + raw[..pass].iter().sum::<f64>(),
        })?);
    }
    Ok(out)
}

/// Passes over the rings of a host point: enough for ~63 samples or
/// more per method (a p99 that is not the maximum of a handful).
fn host_rounds(rings: usize, quick: bool) -> usize {
    match rings {
        0 | 1 => 0,
        SIZE_RINGS => {
            if quick {
                5
            } else {
                10
            }
        }
        n => 63usize.div_ceil(n - 1),
    }
}

/// Every point of a guest run (`kind` lines of ring-pool or pv-bench),
/// first-register included; `publish` (one PUBLISH, not a per-ring
/// latency) only adds to table-clone's total. Each line must carry its
/// raw samples.
fn guest_points(run: &GuestRun, kind: &str, source: &str) -> Result<Vec<Value>, BenchError> {
    let lines = run.require(kind)?;
    let missing = |what: String| BenchError::Missing {
        what: run.what.clone(),
        kind: what,
        stdout: String::new(),
    };
    // The one sample of a method at a ring count, e.g. ring 0's first
    // registration.
    let single = |method: &str, rings: u64| -> Option<f64> {
        lines
            .iter()
            .find(|l| l["method"] == method && l["rings"] == rings)
            .and_then(|l| l["samples_us"][0].as_f64())
    };
    let mut out = Vec::new();
    for l in &lines {
        let method = l["method"].as_str().unwrap_or("?");
        if method == "publish" || method == "arena-alloc" {
            continue;
        }
        let rings = l["rings"].as_u64().unwrap_or(0);
        let count = l["samples"].as_u64().unwrap_or(0);
        let raw: Vec<f64> = l["samples_us"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if raw.len() as u64 != count || count == 0 {
            return Err(missing(format!(
                "{kind} {method} line with its {count} samples in samples_us (got {})",
                raw.len()
            )));
        }
        let alloc = || {
            single("arena-alloc", rings)
                .ok_or_else(|| missing(format!("{kind} arena-alloc line for {rings} rings")))
        };
        let first = || {
            single("first-register", rings)
                .ok_or_else(|| missing(format!("{kind} first-register line for {rings} rings")))
        };
        let total = match method {
            // The time until every ring holds the pool: one allocation,
            // then a registration per ring.
            "arena" => alloc()? + raw.iter().sum::<f64>(),
            // One command for all the rings: each sample is all of them.
            "arena-rings" => alloc()? + run.num(l, "median_us")?,
            // Ring 0 registers from the arena, the others clone it.
            "arena-clone" => {
                let reg0 = single("arena", rings)
                    .ok_or_else(|| missing(format!("{kind} arena line for {rings} rings")))?;
                alloc()? + reg0 + raw.iter().sum::<f64>()
            }
            "first-register" => first()?,
            // The command floor of arena-only guests (a clone of a 2 MiB
            // guest pool per ring).
            "clone-small" => raw.iter().sum::<f64>(),
            "table-clone" => {
                let publish = single("publish", rings)
                    .ok_or_else(|| missing(format!("{kind} publish line for {rings} rings")))?;
                first()? + publish + raw.iter().sum::<f64>()
            }
            _ => first()? + raw.iter().sum::<f64>(),
        };
        out.push(point_json(&Pt {
            source,
            method,
            size: l["pool_bytes"].as_u64().unwrap_or(0),
            page: l["page"].as_str().unwrap_or("?"),
            rings: rings as usize,
            raw: &raw,
            stats: (
                run.num(l, "min_us")?,
                run.num(l, "median_us")?,
                run.num(l, "p99_us")?,
            ),
            total,
        })?);
    }
    Ok(out)
}

/// Guest RAM for a pool of `size` bytes, in MiB: the pool, room for the
/// rings and the program (the pool again up to 1 GiB), and 256 MiB for
/// the kernel and initramfs.
fn guest_mem_mib(size: u64) -> u64 {
    (size >> 20) + (size >> 20).min(1024) + 256
}

/// The registered-bytes budget (`--uring max-registered=`) a pv-bench
/// registration guest needs, in MiB: ring 0 of every ring count keeps the
/// pool registered to the end (see pv-bench's `registration`), and
/// "register" registers it once more on another ring, on top. Each
/// REGISTER counts the pool's bytes again (the host pins them again), so
/// the default budget, the guest's RAM, would refuse the second one.
fn max_registered_mib(ctx: &Ctx, size: u64) -> u64 {
    let counts = rings_arg(ctx, size).split(',').count() as u64;
    (counts + 1) * size.div_ceil(1 << 20)
}

/// A 2 MiB-page guest's arguments; `ram_on_huge`: its RAM must be on host
/// 2 MiB pages (reserved for it), else it takes them if free and falls
/// back to ordinary memory.
fn guest_args(ctx: &Ctx, size: u64, pv: bool, ram_on_huge: bool) -> Vec<String> {
    let pages = size / HUGE_2M + 4;
    let mem_mib = guest_mem_mib(size);
    let rings = rings_arg(ctx, size);
    let backing = if ram_on_huge { "required" } else { "2M" };
    let mut a = vec![
        "--memory".to_string(),
        format!("size={mem_mib}M,hugepages={backing}"),
    ];
    if pv {
        a.extend([
            "--uring".into(),
            format!(
                "rings={},max-registered={}M,arena={}",
                pv_bench_slots(ctx, size),
                max_registered_mib(ctx, size),
                arena_spec(size)
            ),
            "--cmdline".into(),
            format!(
                "hugepages={pages} -- /bin/pv-bench --only reg --rings {rings} --size {size} --page 2M"
            ),
        ]);
    } else {
        a.extend([
            "--cmdline".into(),
            format!("hugepages={pages} -- /bin/ring-pool --rings {rings} --size {size} --page 2M"),
        ]);
    }
    a
}

/// `--uring arena=` for a pool of `size` bytes: on 2 MiB host pages, in
/// whole MiB (the chunk rule of docs/pv-uring.md holds for every pool
/// size of this suite).
fn arena_spec(size: u64) -> String {
    format!("{}M", size.div_ceil(1 << 20))
}

/// Ring slots of a `PvBench` guest: every ring of its registration run
/// stays open to the end, the arena's rings are fresh for each count and
/// closed after it (at most 64 more at once), and pv-bench's check counts
/// its two I/O rings.
fn pv_bench_slots(ctx: &Ctx, size: u64) -> u32 {
    let total: usize = if size == sweep_size(ctx) {
        SWEEP_RINGS.iter().sum()
    } else {
        guest_size_rings(size)
    };
    (total + ARENA_GUEST_SLOTS as usize) as u32
}

/// Ring slots of an arena-only guest: up to 64 arena rings at once and
/// pv-bench's two I/O rings.
const ARENA_GUEST_SLOTS: u32 = 66;

/// 2 MiB host pages of the pv-uring ring area of `slots` rings: it takes
/// them before the arena does, so a reservation for the arena must count
/// them (without, a 4 GiB arena fell back to ordinary memory).
fn ring_area_pages(slots: u32) -> u64 {
    devices::virtio::uring::ring::RingArea::bytes_for(slots).div_ceil(HUGE_2M)
}

/// An arena-only guest: 512 MiB of RAM (no pool), the arena, pv-bench
/// `--only arena`.
fn guest_arena_args(size: u64, sweep: bool) -> Vec<String> {
    let counts = arena_rings_arg(sweep);
    vec![
        "--memory".into(),
        "size=512M".into(),
        "--uring".into(),
        format!(
            "rings={ARENA_GUEST_SLOTS},polled=0,arena={}",
            arena_spec(size)
        ),
        "--cmdline".into(),
        format!("hugepages=4 -- /bin/pv-bench --only arena --rings {counts} --size {size}"),
    ]
}

/// A ring-pool guest on ordinary 4 KiB guest pages (no guest hugepages).
fn guest_small_args(size: u64) -> Vec<String> {
    let mem_mib = guest_mem_mib(size);
    vec![
        "--memory".into(),
        format!("size={mem_mib}M"),
        "--cmdline".into(),
        format!("-- /bin/ring-pool --rings {SIZE_RINGS} --size {size} --page 4K"),
    ]
}

/// Hands the host hugepages back (before any guest boots), recording
/// what the pool was restored to.
fn release(huge: &mut Option<Result<Option<Reservation>, String>>, record: &mut Value) {
    if let Some(Ok(slot)) = huge {
        if let Some(mut r) = slot.take() {
            match r.restore() {
                Ok(()) => record["nr_hugepages_restored_to"] = r.previous.into(),
                Err(e) => {
                    record["restore_error"] =
                        format!("writing {} to {}: {e}", r.previous, r.file.display()).into()
                }
            }
        }
    }
}

/// Where a point was measured: (source, pool bytes, page, rings).
struct At<'a> {
    src: &'a str,
    size: u64,
    page: &'a str,
    rings: u64,
}

impl<'a> At<'a> {
    fn of(p: &'a Value) -> Self {
        At {
            src: p["source"].as_str().unwrap_or(""),
            size: p["pool_bytes"].as_u64().unwrap_or(0),
            page: p["page"].as_str().unwrap_or(""),
            rings: p["rings"].as_u64().unwrap_or(0),
        }
    }

    /// The summary table's name of the point (`sweep`: with its rings).
    fn name(&self, sweep: bool) -> String {
        let (src, size, pg, rings) = (self.src, size_label(self.size), self.page, self.rings);
        if sweep {
            let s = if rings == 1 { "" } else { "s" };
            format!("{src} {size} of {pg} pages, {rings} ring{s}")
        } else {
            format!("{src} {size} of {pg} pages")
        }
    }

    /// The `ratios` record of `ratio` (e.g. `register/clone`) here.
    fn ratio(&self, ratio: &str, value: f64) -> Result<Value, BenchError> {
        let what = format!(
            "{} {} {} {} rings {ratio}",
            self.src,
            size_label(self.size),
            self.page,
            self.rings
        );
        Ok(json!({
            "source": self.src,
            "pool_bytes": self.size,
            "page": self.page,
            "rings": self.rings,
            "ratio": ratio,
            "value": fig(&what, value, "x")?,
        }))
    }
}

fn median(p: &Value) -> f64 {
    p["median"]["value"].as_f64().unwrap_or(f64::NAN)
}

fn total(p: &Value) -> f64 {
    p["total"]["value"].as_f64().unwrap_or(f64::NAN)
}

/// The point of `method` measured where `p` was, in `pts`.
fn same_place<'a>(pts: &'a [Value], p: &Value, method: &str) -> Option<&'a Value> {
    pts.iter().find(|q| {
        q["source"] == p["source"]
            && q["method"] == method
            && q["pool_bytes"] == p["pool_bytes"]
            && q["page"] == p["page"]
            && q["rings"] == p["rings"]
    })
}

/// Register / other-method ratios of medians, and summary-table rows, of
/// `pts` (each (source, size, page, rings) once).
fn ratios(pts: &[Value], sweep: bool) -> Result<(Vec<Value>, Vec<[String; 3]>), BenchError> {
    let mut ratios = Vec::new();
    let mut table = Vec::new();
    for p in pts {
        let at = At::of(p);
        let name = at.name(sweep);
        if p["method"] == "first-register" && at.rings == 1 {
            table.push([
                name,
                format!("first register {}", us(median(p))),
                "1 ring".into(),
            ]);
        } else if p["method"] == "arena" {
            let (r, row) = arena_ratios(pts, p, &at, name)?;
            ratios.extend(r);
            table.push(row);
        } else if p["method"] == "arena-rings" {
            let per_ring = same_place(pts, p, "arena");
            if let Some(a) = per_ring {
                ratios.push(at.ratio("arena-rings/arena total", total(p) / total(a))?);
            }
            table.push([
                name,
                format!(
                    "one arena register for all {} rings {}",
                    at.rings,
                    us(median(p))
                ),
                format!(
                    "all {} rings hold the pool after {}{}",
                    at.rings,
                    us(total(p)),
                    per_ring.map_or(String::new(), |a| format!(
                        " ({} one ring at a time)",
                        us(total(a))
                    ))
                ),
            ]);
        } else if p["method"] == "register" {
            let reg = median(p);
            for other in ["clone", "table-clone", "arena", "arena-clone"] {
                let Some(c) = same_place(pts, p, other) else {
                    continue;
                };
                ratios.push(at.ratio(&format!("register/{other}"), reg / median(c))?);
                let third = if sweep {
                    format!(
                        "{:.1}x; all {} rings: {} / {}",
                        reg / median(c),
                        at.rings,
                        us(total(p)),
                        us(total(c))
                    )
                } else {
                    format!("{:.1}x", reg / median(c))
                };
                table.push([
                    name.clone(),
                    format!("register {} / {other} {}", us(reg), us(median(c))),
                    third,
                ]);
            }
        }
    }
    Ok((ratios, table))
}

/// An `arena` point's ratios, against a pv clone of the pool (the issue's
/// target: within 2x) and against the clone of a 2 MiB guest pool (the
/// command's floor), and its table row.
fn arena_ratios(
    pts: &[Value],
    p: &Value,
    at: &At,
    name: String,
) -> Result<(Vec<Value>, [String; 3]), BenchError> {
    let mut ratios = Vec::new();
    if let Some(c) = same_place(pts, p, "clone") {
        ratios.push(at.ratio("arena/clone", median(p) / median(c))?);
    }
    let floor = same_place(pts, p, "clone-small");
    if let Some(c) = floor {
        ratios.push(at.ratio("arena/clone-small", median(p) / median(c))?);
    }
    let floor = floor.map(|c| {
        format!(
            " / pv clone of a 2 MiB guest pool {} ({:.1}x)",
            us(median(c)),
            median(p) / median(c)
        )
    });
    let row = [
        name,
        format!(
            "arena register {}{}",
            us(median(p)),
            floor.unwrap_or_default()
        ),
        format!(
            "all {} rings hold the pool after {}",
            at.rings,
            us(total(p))
        ),
    ];
    Ok((ratios, row))
}

/// What the points of a run collect.
#[derive(Default)]
struct Collected {
    /// Pool-size points (`points`).
    pts: Vec<Value>,
    /// Rings-sweep points (`rings_sweep`).
    sweep: Vec<Value>,
    /// (point, reason) of each point skipped.
    skipped: Vec<(String, String)>,
    /// (point, error) of each guest point that failed.
    failed: Vec<(String, String)>,
    /// Each arena guest's set-up (`arena_setup`).
    arena_setup: Vec<Value>,
}

impl Collected {
    fn skip(&mut self, point: &str, reason: String) {
        self.skipped.push((point.to_string(), reason));
    }

    fn fail(&mut self, point: &str, error: &BenchError) {
        eprintln!("bench: {point} failed, the run goes on without it: {error}");
        self.failed.push((point.to_string(), error.to_string()));
    }

    /// The suite's results.json part and summary rows.
    fn output(self, huge_record: Value) -> Result<SuiteOutput, BenchError> {
        let (ratios_size, mut table) = ratios(&self.pts, false)?;
        let (ratios_sweep, table_sweep) = ratios(&self.sweep, true)?;
        table.extend(table_sweep);
        table.extend(arena_rows(&self.arena_setup, &self.pts, &self.sweep));
        for (point, reason) in &self.skipped {
            table.push([point.clone(), "skipped".into(), reason.clone()]);
        }
        for (point, error) in &self.failed {
            let first_line = error.lines().next().unwrap_or_default().to_string();
            table.push([point.clone(), "FAILED".into(), first_line]);
        }
        let records = |v: &[(String, String)], what: &str| -> Vec<Value> {
            v.iter()
                .map(|(point, why)| json!({"point": point, what: why}))
                .collect()
        };
        Ok(SuiteOutput {
            json: json!({
                "points": self.pts,
                "ratios": ratios_size,
                "rings_sweep": self.sweep,
                "rings_sweep_ratios": ratios_sweep,
                "host_hugepages": huge_record,
                "arena_setup": self.arena_setup,
                "points_filter": points_filter(),
                "skipped": records(&self.skipped, "reason"),
                "failed": records(&self.failed, "error"),
            }),
            table,
            failed: self.failed.into_iter().map(|(point, _)| point).collect(),
        })
    }
}

pub fn run(ctx: &Ctx, plan: &[Point], pb: &ProgressBar) -> Result<SuiteOutput, BenchError> {
    let mut got = Collected::default();
    let mut huge_record = Value::Null;
    // Decided at the first 2 MiB host point; a reservation lives until
    // the first guest point (or an error: its Drop restores the pool).
    let mut huge: Option<Result<Option<Reservation>, String>> = None;
    for (w, p) in points(ctx).into_iter().zip(plan) {
        pb.set_message(p.label.clone());
        if w.huge_host() && huge.is_none() {
            huge = Some(reserve_huge(ctx, host_huge_needed(ctx), &mut huge_record));
        }
        if let Some(Err(reason)) = huge.as_ref().filter(|_| w.huge_host()) {
            got.skip(&p.label, reason.clone());
            pb.inc(1);
            continue;
        }
        if !w.host() {
            // Guests run without the host points' hugepages.
            release(&mut huge, &mut huge_record);
        }
        let measured = match w {
            Where::Host(size, h) | Where::HostSweep(size, h) => {
                host_point(ctx, w, size, h, &p.label, &mut got)
            }
            Where::RingPool(size) => guest_pool_point(ctx, size, false, &p.label, &mut got),
            Where::PvBench(size) => guest_pool_point(ctx, size, true, &p.label, &mut got),
            Where::PvArena(size, sweep) => arena_point(ctx, size, sweep, &p.label, &mut got),
            Where::RingPoolSmall(size) => small_point(ctx, size, &p.label, &mut got),
        };
        match measured {
            // A guest that fails (a timeout on a slow host, say) loses its
            // own figures, not the run's: the others are still written.
            Err(e) if !w.host() => got.fail(&p.label, &e),
            other => other?,
        }
        pb.inc(1);
    }
    release(&mut huge, &mut huge_record);
    got.output(huge_record)
}

/// A host point (`Host` or `HostSweep`): a pool of `size` bytes (2 MiB
/// pages: `h`) mapped here, measured on 8 rings or on every count of
/// the sweep.
fn host_point(
    ctx: &Ctx,
    w: Where,
    size: u64,
    h: bool,
    label: &str,
    got: &mut Collected,
) -> Result<(), BenchError> {
    if h {
        if let Some(reason) = huge_pool_short(size.div_ceil(HUGE_2M)) {
            got.skip(label, reason);
            return Ok(());
        }
        wait_for_free_huge(size.div_ceil(HUGE_2M), Duration::from_secs(10));
    }
    let m = match Mapping::new(size as usize, h) {
        Ok(m) => m,
        // Another process may take the hugepages between the check and
        // the mapping: a skip, said as such.
        Err(e) if h => {
            let reason = format!("mmap of {} of 2 MiB host pages: {e}", size_label(size));
            got.skip(label, reason);
            return Ok(());
        }
        Err(e) => return Err(host_err(format!("{label}: mmap"))(e)),
    };
    if matches!(w, Where::Host(..)) {
        let r = host_measure(label, &m, SIZE_RINGS, host_rounds(SIZE_RINGS, ctx.quick))?;
        got.pts.extend(host_points(size, h, SIZE_RINGS, &r, false)?);
    } else {
        for n in SWEEP_RINGS {
            let r = host_measure(label, &m, n, host_rounds(n, ctx.quick))?;
            got.sweep.extend(host_points(size, h, n, &r, true)?);
        }
    }
    Ok(())
}

/// Boots the guest of `label` with `pages` 2 MiB host pages reserved for
/// it alone (as for the host points) and given back after it. `args` gets
/// whether the reservation got them all. Gives the run, that, and what
/// the reservation found and did.
fn run_guest_reserved(
    ctx: &Ctx,
    label: &str,
    pages: u64,
    args: impl FnOnce(bool) -> Vec<String>,
) -> Result<(GuestRun, bool, Value), BenchError> {
    wait_for_surplus_release(Duration::from_secs(10));
    let mut record = Value::Null;
    let reserved = reserve_huge(ctx, pages, &mut record);
    let on_huge = reserved.is_ok() && free_hugepages(HUGE_2M) >= pages;
    if let Err(why) = &reserved {
        record["error"] = why.clone().into();
    }
    let run = run_guest(ctx, label, &args(on_huge));
    drop(reserved);
    Ok((run?, on_huge, record))
}

/// A `RingPool` or (`pv`) `PvBench` guest point on a pool of `size` bytes.
fn guest_pool_point(
    ctx: &Ctx,
    size: u64,
    pv: bool,
    label: &str,
    got: &mut Collected,
) -> Result<(), BenchError> {
    // Guest RAM on host 2 MiB pages: on ordinary host memory every guest
    // page the guest kernel touches is a 4 KiB shadow-paging entry, which
    // doubled the in-guest clone at 4 GiB (5.2 ms against 2.2-2.6 ms on
    // hugepages). pv-bench guests also have an arena of the pool's size,
    // on host 2 MiB pages when the reservation gets them.
    // pv-bench guests' ring area takes its pages first.
    let pv_pages = if pv {
        size.div_ceil(HUGE_2M) + ring_area_pages(pv_bench_slots(ctx, size))
    } else {
        0
    };
    let ram_pages = guest_mem_mib(size).div_ceil(HUGE_2M >> 20) + pv_pages;
    let (run, on_huge, ram_record) = run_guest_reserved(ctx, label, ram_pages, |on_huge| {
        guest_args(ctx, size, pv, on_huge)
    })?;
    let guest = if pv {
        got.arena_setup.push(arena_record(&run, label, size)?);
        guest_points(&run, "pv-bench", "guest-pv-bench")?
    } else {
        guest_points(&run, "ring-pool", "guest-ring-pool")?
    };
    for mut g in guest {
        g["guest_ram_host_pages"] = page(on_huge).into();
        // What the reservation found and did: why a guest ran on 4K
        // pages, when it did.
        g["guest_ram_reservation"] = ram_record.clone();
        if g["rings"] == guest_size_rings(size) && g["method"] != "first-register" {
            got.pts.push(g.clone());
        }
        if size == sweep_size(ctx) {
            got.sweep.push(g);
        }
    }
    Ok(())
}

/// A `PvArena` guest point: an arena of `size` bytes, every ring count
/// of the sweep (`sweep`) or 1 and 64.
fn arena_point(
    ctx: &Ctx,
    size: u64,
    sweep: bool,
    label: &str,
    got: &mut Collected,
) -> Result<(), BenchError> {
    // The arena's pages, guest RAM's (256) and the ring area's, which
    // both take theirs first.
    let pages = size.div_ceil(HUGE_2M) + 256 + ring_area_pages(ARENA_GUEST_SLOTS);
    let (run, _, record) =
        run_guest_reserved(ctx, label, pages, |_| guest_arena_args(size, sweep))?;
    let mut setup = arena_record(&run, label, size)?;
    setup["reservation"] = record;
    got.arena_setup.push(setup);
    let into = if sweep { &mut got.sweep } else { &mut got.pts };
    into.extend(guest_points(&run, "pv-bench", "guest-pv-arena")?);
    Ok(())
}

/// A `RingPoolSmall` guest point: ring-pool on 4 KiB guest pages.
fn small_point(ctx: &Ctx, size: u64, label: &str, got: &mut Collected) -> Result<(), BenchError> {
    let run = run_guest(ctx, label, &guest_small_args(size))?;
    for g in guest_points(&run, "ring-pool", "guest-ring-pool")? {
        if g["page"] != "4K" {
            return Err(BenchError::Missing {
                what: run.what.clone(),
                kind: format!("ring-pool line of 4K pages (got {})", g["page"]),
                stdout: String::new(),
            });
        }
        if g["rings"] == SIZE_RINGS && g["method"] != "first-register" {
            got.pts.push(g);
        }
    }
    Ok(())
}

/// What an arena guest's VMM reported of the arena's set-up
/// (`RINGVISOR_ARENA`, kept in its timings).
fn arena_record(run: &GuestRun, point: &str, size: u64) -> Result<Value, BenchError> {
    let a = run
        .timings
        .as_ref()
        .and_then(|t| t.get("arena"))
        .cloned()
        .ok_or_else(|| BenchError::Missing {
            what: run.what.clone(),
            kind: "RINGVISOR_ARENA line (the arena's set-up, --timings)".into(),
            stdout: String::new(),
        })?;
    if a["bytes"] != size {
        return Err(BenchError::Missing {
            what: run.what.clone(),
            kind: format!("an arena of {size} bytes (got {})", a["bytes"]),
            stdout: String::new(),
        });
    }
    Ok(json!({"point": point, "arena": a}))
}

/// Table rows of the arena's set-up: the host's allocation and its
/// registration, beside the host-native first registration of the same
/// bytes of 2 MiB pages in this run (a `host` point), when there is one.
fn arena_rows(setups: &[Value], pts: &[Value], sweep: &[Value]) -> Vec<[String; 3]> {
    // Registering the same bytes of 2 MiB pages again on a host ring, in
    // this run (the host point's `register` median).
    let native = |size: u64| {
        pts.iter().chain(sweep).find(|p| {
            p["source"] == "host"
                && p["method"] == "register"
                && p["pool_bytes"] == size
                && p["page"] == "2M"
        })
    };
    setups
        .iter()
        .map(|s| {
            let a = &s["arena"];
            let size = a["bytes"].as_u64().unwrap_or(0);
            let ms = |k: &str| a[k].as_f64().unwrap_or(f64::NAN);
            let vs = native(size).map_or("no host point of this size".to_string(), |p| {
                format!(
                    "host-native register {:.2} ms",
                    p["median"]["value"].as_f64().unwrap_or(f64::NAN) / 1e3
                )
            });
            [
                format!(
                    "arena set-up {} ({} chunks of {} KiB, {})",
                    size_label(size),
                    a["chunks"],
                    a["chunk"].as_u64().unwrap_or(0) >> 10,
                    if a["hugetlb"] == true {
                        "2 MiB hugetlb"
                    } else {
                        "ordinary memory"
                    }
                ),
                format!(
                    "registration {:.2} ms, allocation {:.1} ms",
                    ms("register_ms"),
                    ms("allocate_ms")
                ),
                vs,
            ]
        })
        .collect()
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
    #[test]
    fn a_failed_guest_point_is_a_row_and_a_record_not_the_end_of_the_run() {
        let mut got = super::Collected::default();
        let error = super::BenchError::RunFailed {
            what: "guest ring-pool 4G".into(),
            status: Some(124),
            stdout: "tail".into(),
            stderr: "killed".into(),
        };
        got.fail("guest ring-pool 4G, rings 4", &error);
        got.skip("host io_uring 4G of 2M pages", "no hugepages".into());
        let out = got.output(serde_json::Value::Null).unwrap();
        assert!(out
            .table
            .iter()
            .any(|r| r[0] == "host io_uring 4G of 2M pages"
                && r[1] == "skipped"
                && r[2] == "no hugepages"));
        assert_eq!(
            out.json["skipped"][0],
            serde_json::json!({"point": "host io_uring 4G of 2M pages", "reason": "no hugepages"})
        );
        assert_eq!(out.failed, vec!["guest ring-pool 4G, rings 4".to_string()]);
        assert!(out
            .table
            .iter()
            .any(|r| r[0] == "guest ring-pool 4G, rings 4"
                && r[1] == "FAILED"
                && r[2].contains("exit status Some(124)")));
        let recorded = &out.json["failed"][0];
        assert_eq!(recorded["point"], "guest ring-pool 4G, rings 4");
        assert!(recorded["error"].as_str().unwrap().contains("killed"));
    }

    use super::*;
    use crate::guest_image::GuestImage;

    fn ctx(quick: bool) -> Ctx {
        Ctx {
            exe: PathBuf::from("ringvisor"),
            image: GuestImage {
                kernel: PathBuf::from("vmlinux"),
                initramfs: PathBuf::from("initramfs.cpio"),
                initramfs_min: None,
            },
            out: PathBuf::from("out"),
            quick,
            runs: 1,
            memory: String::new(),
            reserve_hugepages: true,
            pin: true,
        }
    }

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

    #[test]
    fn host_points_come_first_and_the_sweep_size_is_a_guest_size() {
        for quick in [true, false] {
            let c = ctx(quick);
            let pts = points(&c);
            let first_guest = pts
                .iter()
                .position(|w| {
                    matches!(
                        w,
                        Where::RingPool(_) | Where::PvBench(_) | Where::RingPoolSmall(_)
                    )
                })
                .unwrap();
            assert!(pts[first_guest..].iter().all(|w| matches!(
                w,
                Where::RingPool(_)
                    | Where::PvBench(_)
                    | Where::RingPoolSmall(_)
                    | Where::PvArena(..)
            )));
            assert!(pts.contains(&Where::HostSweep(sweep_size(&c), true)));
            assert!(guest_sizes(&c).contains(&sweep_size(&c)));
            assert!(host_huge_needed(&c) * HUGE_2M >= *host_sizes(&c).iter().max().unwrap());
        }
        assert_eq!(host_huge_needed(&ctx(true)), 32);
        assert_eq!(host_huge_needed(&ctx(false)), 2048);
        // The full run reaches 4 GiB everywhere, doubling from 64 MiB.
        let full = ctx(false);
        for sizes in [host_sizes(&full), guest_sizes(&full)] {
            assert_eq!(sizes.first(), Some(&(64 << 20)));
            assert_eq!(sizes.last(), Some(&(4 << 30)));
            assert!(sizes.windows(2).all(|w| w[1] == 2 * w[0]), "{sizes:?}");
        }
    }

    #[test]
    fn guest_arguments_of_the_sweep() {
        let c = ctx(false);
        let a = guest_args(&c, 64 << 20, true, false).join(" ");
        // 7 ring counts keep the 64 MiB pool registered, plus one again;
        // the arena's rings (64 at most at once) and an arena of the pool.
        assert!(
            a.contains("--uring rings=193,max-registered=512M,arena=64M"),
            "{a}"
        );
        assert!(a.contains("size=384M,hugepages=2M "), "{a}");
        assert!(
            a.contains("--rings 1,2,4,8,16,32,64 --size 67108864"),
            "{a}"
        );
        let a = guest_args(&c, 4 << 30, true, true).join(" ");
        assert!(a.contains("--rings 4 --size 4294967296"), "{a}");
        assert!(
            a.contains("--uring rings=70,max-registered=8192M,arena=4096M"),
            "{a}"
        );
        assert!(a.contains("size=5376M,hugepages=required "), "{a}");
        let a = guest_small_args(64 << 20).join(" ");
        assert!(a.contains("--memory size=384M --cmdline"), "{a}");
        assert!(
            a.ends_with("/bin/ring-pool --rings 8 --size 67108864 --page 4K"),
            "{a}"
        );
        assert!(points(&c).contains(&Where::RingPoolSmall(256 << 20)));
        let a = guest_args(&c, 256 << 20, false, false).join(" ");
        assert!(
            a.contains("/bin/ring-pool --rings 8 --size 268435456"),
            "{a}"
        );
    }

    #[test]
    fn host_measure_registers_and_clones_on_every_other_ring() {
        // 4 MiB of 4 KiB host pages: the in-process path of the host
        // points (register, unregister, IORING_REGISTER_CLONE_BUFFERS).
        let m = Mapping::new(4 << 20, false).unwrap();
        let r = host_measure("test", &m, 3, 2).unwrap();
        assert!(r.first_us > 0.0);
        assert_eq!((r.register.len(), r.clone.len()), (4, 4));
        assert!(r.clone.iter().all(|&us| us > 0.0), "{:?}", r.clone);
    }

    #[test]
    fn host_rounds_give_enough_samples() {
        assert_eq!(host_rounds(1, true), 0);
        assert_eq!(host_rounds(8, true), 5);
        assert_eq!(host_rounds(8, false), 10);
        for n in [2, 4, 16, 32, 64] {
            assert!(host_rounds(n, true) * (n - 1) >= 63, "{n}");
        }
    }

    fn run_of(lines: &[&str]) -> GuestRun {
        GuestRun {
            what: "t".into(),
            stdout: lines.join("\r\n"),
            timings: None,
        }
    }

    #[test]
    fn arena_totals_need_no_first_registration() {
        let d = r#""rings":3,"pool_bytes":4294967296,"page":"2M""#;
        let line = |method: &str, samples: &str| {
            format!(
                r#"{{"kind":"pv-bench","method":"{method}",{d},"samples":{},"min_us":1.0,"median_us":1.5,"p99_us":2.0,"samples_us":[{samples}]}}"#,
                samples.split(',').count()
            )
        };
        let lines = [
            line("arena-alloc", "30.0"),
            line("arena", "1.0,1.5,2.0"),
            line("arena-clone", "4.0,5.0"),
            line("arena-rings", "1.0,1.5,2.0"),
        ];
        let run = run_of(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let pts = guest_points(&run, "pv-bench", "guest-pv-arena").unwrap();
        let methods: Vec<&str> = pts.iter().map(|p| p["method"].as_str().unwrap()).collect();
        assert_eq!(methods, ["arena", "arena-clone", "arena-rings"]);
        let total = |i: usize| pts[i]["total"]["value"].as_f64().unwrap();
        // The allocation, then every ring's registration; for the clones
        // ring 0's registration first; for one command for all the rings
        // its median sample (each sample is all of them).
        assert_eq!((total(0), total(1), total(2)), (34.5, 40.0, 31.5));
        let (ratios, table) = ratios(&pts, true).unwrap();
        assert!(
            table[0][2].contains("all 3 rings hold the pool after 34.5 us"),
            "{table:?}"
        );
        assert!(
            table[1][2].contains("all 3 rings hold the pool after 31.5 us (34.5 us one ring"),
            "{table:?}"
        );
        let r = ratios
            .iter()
            .find(|r| r["ratio"] == "arena-rings/arena total")
            .expect("the arena-rings ratio");
        assert!(
            (r["value"]["value"].as_f64().unwrap() - 31.5 / 34.5).abs() < 1e-3,
            "{r}"
        );
        // Without its allocation line the arena total is not made up.
        let run = run_of(&[lines[1].as_str()]);
        assert!(guest_points(&run, "pv-bench", "guest-pv-arena").is_err());
    }

    #[test]
    fn guest_totals_and_raw_samples() {
        let d = r#""rings":3,"pool_bytes":16777216,"page":"2M""#;
        let run = run_of(&[
            &format!(
                r#"{{"kind":"pv-bench","method":"first-register",{d},"samples":1,"min_us":100.0,"median_us":100.0,"p99_us":100.0,"samples_us":[100.0]}}"#
            ),
            &format!(
                r#"{{"kind":"pv-bench","method":"register",{d},"samples":2,"min_us":90.0,"median_us":90.0,"p99_us":95.0,"samples_us":[95.0,90.0]}}"#
            ),
            &format!(
                r#"{{"kind":"pv-bench","method":"publish",{d},"samples":1,"min_us":4.0,"median_us":4.0,"p99_us":4.0,"samples_us":[4.0]}}"#
            ),
            &format!(
                r#"{{"kind":"pv-bench","method":"table-clone",{d},"samples":2,"min_us":2.0,"median_us":2.0,"p99_us":3.0,"samples_us":[2.0,3.0]}}"#
            ),
        ]);
        let pts = guest_points(&run, "pv-bench", "guest-pv-bench").unwrap();
        let methods: Vec<&str> = pts.iter().map(|p| p["method"].as_str().unwrap()).collect();
        assert_eq!(methods, ["first-register", "register", "table-clone"]);
        let total = |i: usize| pts[i]["total"]["value"].as_f64().unwrap();
        assert_eq!((total(0), total(1), total(2)), (100.0, 285.0, 109.0));
        assert_eq!(pts[1]["samples"]["values"], json!([95.0, 90.0]));
        assert_eq!(pts[1]["sample_count"], 2);
        assert_eq!(pts[1]["rings"], 3);

        let (ratios, table) = ratios(&pts, true).unwrap();
        assert_eq!(ratios[0]["ratio"], "register/table-clone");
        assert_eq!(ratios[0]["value"]["value"], 45.0);
        assert!(
            table[0][2].contains("all 3 rings: 285.0 us / 109.0 us"),
            "{table:?}"
        );
    }

    #[test]
    fn a_guest_line_without_its_samples_fails() {
        let run = run_of(&[
            r#"{"kind":"ring-pool","method":"first-register","rings":2,"pool_bytes":1,"page":"2M","samples":1,"min_us":1.0,"median_us":1.0,"p99_us":1.0,"samples_us":[1.0]}"#,
            r#"{"kind":"ring-pool","method":"clone","rings":2,"pool_bytes":1,"page":"2M","samples":1,"min_us":1.0,"median_us":1.0,"p99_us":1.0}"#,
        ]);
        let e = guest_points(&run, "ring-pool", "guest-ring-pool").unwrap_err();
        assert!(e.to_string().contains("samples_us"), "{e}");
        let run = run_of(&[
            r#"{"kind":"ring-pool","method":"clone","rings":2,"pool_bytes":1,"page":"2M","samples":1,"min_us":1.0,"median_us":1.0,"p99_us":1.0,"samples_us":[1.0]}"#,
        ]);
        let e = guest_points(&run, "ring-pool", "guest-ring-pool").unwrap_err();
        assert!(e.to_string().contains("first-register"), "{e}");
    }

    #[test]
    fn a_reservation_restores_the_pool_on_drop() {
        let dir = std::env::temp_dir().join(format!("rv-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nr_hugepages");
        std::fs::write(&file, "40").unwrap();
        {
            let _r = Reservation {
                file: file.clone(),
                previous: 8,
                restored: false,
            };
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "8");
        // Restored once: a later change by someone else is left alone.
        let mut r = Reservation {
            file: file.clone(),
            previous: 3,
            restored: false,
        };
        r.restore().unwrap();
        std::fs::write(&file, "7").unwrap();
        drop(r);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "7");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_reserving_is_recorded_with_its_reason() {
        let mut c = ctx(false);
        c.reserve_hugepages = false;
        let mut record = Value::Null;
        // More pages than any host here has free.
        let r = reserve_huge(&c, 1 << 40, &mut record);
        let reason = r.err().expect("cannot have 2^40 free hugepages");
        assert!(
            reason.contains("--no-reserve-hugepages") || reason.contains("no pool"),
            "{reason}"
        );
        assert_eq!(record["needed"], 1u64 << 40);
    }
}
