//! The measurement: N rings, one pool, register-again vs clone per ring.

use crate::params::{split, PageSize, Params};
use crate::pool::{free_hugepages_2m, Pool};
use crate::stats::{line, ratio, samples_us, Latency, MethodRecord, PoolDesc, SummaryRecord};
use crate::sys::{self, now_ns};
use guest_common::Errno;
use io_uring::IoUring;
use std::os::fd::AsRawFd;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    /// The kernel does not know opcode 30 (an unpatched 6.1 answers -EINVAL).
    #[error("IORING_REGISTER_CLONE_BUFFERS unsupported: probe returned {0}")]
    CloneUnsupported(Errno),
    #[error("clone probe returned {0}, want -ENXIO (empty source)")]
    ProbeUnexpected(String),
    #[error("io_uring_setup for ring {index}: {source}")]
    Setup {
        index: usize,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    #[error("{what} on ring {index}: {errno}")]
    Register {
        what: &'static str,
        index: usize,
        errno: Errno,
    },
}

impl RunError {
    /// The short `error` field of the JSON error line.
    pub fn tag(&self) -> &'static str {
        match self {
            RunError::CloneUnsupported(_) => "clone-unsupported",
            RunError::ProbeUnexpected(_) => "clone-probe-unexpected",
            RunError::Setup { .. } => "io-uring-setup",
            RunError::Pool(_) => "mmap",
            RunError::Register { .. } => "register",
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            RunError::CloneUnsupported(e) | RunError::Register { errno: e, .. } => Some(e.0),
            RunError::Setup { source, .. } => source.raw_os_error(),
            RunError::Pool(crate::pool::PoolError::Mmap { source, .. }) => source.raw_os_error(),
            RunError::ProbeUnexpected(_) => None,
        }
    }

    /// Process exit status: 3 for an unsupported kernel, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::CloneUnsupported(_) => 3,
            _ => 1,
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Maps the pool, falling back from 2M to 4K pages with a warning.
fn map_pool(p: &Params) -> Result<Pool, RunError> {
    if p.page == PageSize::Huge2M {
        let need = p.size.div_ceil(PageSize::Huge2M.bytes());
        let free = free_hugepages_2m();
        if free < need {
            eprintln!(
                "ring-pool: warning: {need} free 2 MiB hugepages needed, {free} free: using 4K pages (boot with hugepages={need} or more)"
            );
        } else {
            match Pool::map(p.size, PageSize::Huge2M) {
                Ok(pool) => return Ok(pool),
                Err(e) => eprintln!("ring-pool: warning: {e}: using 4K pages"),
            }
        }
    }
    Ok(Pool::map(p.size, PageSize::Small4K)?)
}

/// Registers the pool's `iovs` on `ring` (one system call).
fn register(ring: &IoUring, iovs: &[libc::iovec]) -> Result<(), Errno> {
    // SAFETY: the iovecs describe the pool mapping, which outlives every
    // ring; no I/O ever uses the registered buffers.
    Errno::of(unsafe { ring.submitter().register_buffers(iovs) })
}

/// Clones the whole buffer table of `src` into `dst` (one system call).
fn clone(dst: &IoUring, src: &IoUring) -> Result<(), Errno> {
    Errno::of(dst.submitter().register_buffers_clone(src.as_raw_fd()))
}

/// Cheap check before minutes of population: cloning between two empty
/// rings is -ENXIO where opcode 30 exists, -EINVAL where it does not.
fn probe_clone(dst: &IoUring, src: &IoUring) -> Result<(), RunError> {
    classify_probe(clone(dst, src))
}

/// Interprets the probe's result.
fn classify_probe(r: Result<(), Errno>) -> Result<(), RunError> {
    match r {
        Err(e) if e.0 == libc::ENXIO => Ok(()),
        Err(e) if e.0 == libc::EINVAL => Err(RunError::CloneUnsupported(e)),
        Err(e) => Err(RunError::ProbeUnexpected(e.to_string())),
        Ok(()) => Err(RunError::ProbeUnexpected("success".into())),
    }
}

/// Sleeps briefly before a timed call. A long system call (registering
/// or unregistering a large pool takes tens of seconds of emulated guest
/// kernel code) keeps kernel workers off the guest's one vCPU; they run as
/// soon as the program next gives up the CPU, and without this pause that
/// is inside the next timed call (a 4 GiB pool's clone measured 4.9 ms
/// instead of 2 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Runs `call` (`what` on ring `index`, one system call) and returns the
/// nanoseconds it took.
fn timed(
    what: &'static str,
    index: usize,
    call: impl FnOnce() -> Result<(), Errno>,
) -> Result<u64, RunError> {
    let s = now_ns();
    let r = call();
    let e = now_ns();
    r.map_err(|errno| RunError::Register { what, index, errno })?;
    Ok(e - s)
}

/// A fresh ring; `index` names it in errors.
fn ring(index: usize) -> Result<IoUring, RunError> {
    IoUring::builder()
        .build(4)
        .map_err(|source| RunError::Setup { index, source })
}

/// Runs the workload and prints its JSON lines: for each ring count of
/// `p.rings`, in turn, on the same pool.
pub fn run(p: &Params) -> Result<(), RunError> {
    let t0 = now_ns();
    // Every ring stays open to the end: closing a ring that holds buffers
    // leaves unpinning to a kernel worker, which would run (emulated, slow)
    // during the next count's measurement.
    let mut keep: Vec<IoUring> = vec![ring(0)?, ring(1)?];
    probe_clone(&keep[1], &keep[0])?;

    let pool = map_pool(p)?;
    let pieces = split(pool.len(), p.buf_bytes());
    let iovs = pool.iovecs(&pieces);
    eprintln!(
        "ring-pool: rings {:?}, pool {} MiB of {} pages in {} buffer(s) of up to {} MiB; populating",
        p.rings,
        pool.len() >> 20,
        pool.page.label(),
        iovs.len(),
        p.buf_bytes() >> 20
    );
    let populate_s = pool.populate(5.0);
    eprintln!("ring-pool: populated in {populate_s:.2} s");
    for &n in &p.rings {
        keep.extend(measure(p, n, &pool, &iovs, populate_s, t0)?);
    }
    drop(keep);
    Ok(())
}

/// One ring count: `n` fresh rings, the pool registered on ring 0 (timed:
/// `first-register`), then given to each other ring by registering again
/// and by cloning (both timed). Prints the method lines and the summary;
/// returns the rings (still holding their clones).
fn measure(
    p: &Params,
    n: usize,
    pool: &Pool,
    iovs: &[libc::iovec],
    populate_s: f64,
    t0: u64,
) -> Result<Vec<IoUring>, RunError> {
    let rings = (0..n).map(ring).collect::<Result<Vec<IoUring>, _>>()?;
    let first_register_ns = timed("register", 0, || register(&rings[0], iovs))?;
    eprintln!(
        "ring-pool: {n} rings: ring 0 registered in {:.3} ms",
        first_register_ns as f64 / 1e6
    );

    let mut reg_ns = Vec::with_capacity(n - 1);
    let mut clone_ns = Vec::with_capacity(n - 1);
    for (i, ring) in rings.iter().enumerate().skip(1) {
        settle();
        reg_ns.push(timed("register", i, || register(ring, iovs))?);
        // Both methods start from an empty table.
        timed("unregister", i, || {
            Errno::of(ring.submitter().unregister_buffers())
        })?;
        settle();
        clone_ns.push(timed("clone", i, || clone(ring, &rings[0]))?);
        eprintln!(
            "ring-pool: ring {i}/{}: register {:.3} ms, clone {:.3} us, {:.1} s elapsed",
            n - 1,
            (reg_ns[i - 1]) as f64 / 1e6,
            us(clone_ns[i - 1]),
            (now_ns() - t0) as f64 / 1e9
        );
    }

    let desc = PoolDesc {
        rings: n,
        pool_bytes: pool.len(),
        buf_bytes: p.buf_bytes(),
        bufs: iovs.len(),
        page: pool.page.label(),
        page_requested: p.page.label(),
    };
    let methods = [
        ("first-register", vec![first_register_ns]),
        ("register", reg_ns),
        ("clone", clone_ns),
    ];
    let mut medians = [None; 3];
    for (k, &(method, ref ns)) in methods.iter().enumerate() {
        // One ring: nothing registered again or cloned, no line made up.
        let Some(latency) = Latency::from_ns(ns) else {
            continue;
        };
        medians[k] = Some(latency);
        println!(
            "{}",
            line(&MethodRecord {
                kind: "ring-pool",
                method,
                pool: &desc,
                latency,
                samples_us: samples_us(ns),
            })
        );
    }
    println!(
        "{}",
        line(&SummaryRecord {
            kind: "ring-pool-summary",
            pool: &desc,
            kernel: sys::kernel_release(),
            populate_s: (populate_s * 1000.0).round() / 1000.0,
            first_register_us: us(first_register_ns),
            register_median_us: medians[1].map(|l| l.median_us),
            clone_median_us: medians[2].map(|l| l.median_us),
            ratio_register_over_clone: match (medians[1], medians[2]) {
                (Some(r), Some(c)) => Some(ratio(&r, &c)),
                _ => None,
            },
        })
    );
    Ok(rings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_results() {
        assert!(classify_probe(Err(Errno(libc::ENXIO))).is_ok());
        let e = classify_probe(Err(Errno(libc::EINVAL))).unwrap_err();
        assert_eq!(
            (e.tag(), e.exit_code(), e.errno()),
            ("clone-unsupported", 3, Some(libc::EINVAL))
        );
        let e = classify_probe(Err(Errno(libc::EPERM))).unwrap_err();
        assert_eq!((e.tag(), e.exit_code()), ("clone-probe-unexpected", 1));
        assert!(classify_probe(Ok(())).is_err());
    }
}
