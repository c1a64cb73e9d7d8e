//! pv-bench: measurements of the pv-uring device through /dev/vuring, one
//! JSON line each on stdout (progress on stderr):
//!
//! - registration of one buffer pool on N rings, per ring: registering the
//!   pool again (`method":"register"`), cloning it from ring 0
//!   (`"clone"`), and cloning it from a host table entry published by ring
//!   0 (`"table-clone"`; `"publish"` is the one PUBLISH), in ring-pool's
//!   shape (`kind`, `method`, `rings`, `pool_bytes`, `page`, `samples`,
//!   `min_us`, `median_us`, `p99_us`, ...), then a `pv-bench-summary` line;
//! - 4 KiB random READ_FIXED on a backend at each queue depth
//!   (`{"kind":"pv-bench-io","qd":N,...,"iops":...}`), submitted and reaped
//!   without system calls.
//!
//! A failure prints `{"kind":"pv-bench-error",...}` and exits 1.

mod params;
mod stats;

use params::{Params, USAGE};
use pv_uring::{CloneSrc, Device, Error, FixedBuf, PvRing};
use stats::{latency_fields, num, string, Latency};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// An anonymous mapping, populated, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
    huge: bool,
}

impl Mapping {
    fn new(len: usize, huge: bool) -> std::io::Result<Self> {
        let (len, extra) = if huge {
            (
                len.div_ceil(2 << 20) * (2 << 20),
                libc::MAP_HUGETLB | (21 << 26),
            )
        } else {
            (len.div_ceil(4096) * 4096, 0)
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
        let m = Mapping {
            ptr: p.cast(),
            len,
            huge,
        };
        let step = if huge { 2 << 20 } else { 4096 };
        for off in (0..len).step_by(step) {
            // SAFETY: inside the mapping.
            unsafe { m.ptr.add(off).write_volatile(0) };
        }
        Ok(m)
    }

    fn iovecs(&self, each: usize, total: usize) -> Vec<libc::iovec> {
        (0..total)
            .step_by(each)
            .map(|off| libc::iovec {
                // SAFETY: off < total <= len.
                iov_base: unsafe { self.ptr.add(off) }.cast(),
                iov_len: each.min(total - off),
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

#[derive(Debug)]
struct Failure {
    what: String,
    err: Option<Error>,
}

impl Failure {
    fn new(what: impl Into<String>, err: Error) -> Self {
        Failure {
            what: what.into(),
            err: Some(err),
        }
    }
    fn msg(what: impl Into<String>) -> Self {
        Failure {
            what: what.into(),
            err: None,
        }
    }
    fn line(&self) -> String {
        let detail = match &self.err {
            Some(e) => format!("{}: {e}", self.what),
            None => self.what.clone(),
        };
        let errno = self
            .err
            .as_ref()
            .and_then(Error::errno)
            .map_or("null".to_string(), |e| e.to_string());
        format!(
            "{{\"kind\":\"pv-bench-error\",\"errno\":{errno},\"detail\":{}}}",
            string(&detail)
        )
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn pool(p: &Params) -> Result<Mapping, Failure> {
    if p.huge {
        match Mapping::new(p.size as usize, true) {
            Ok(m) => return Ok(m),
            Err(e) => eprintln!(
                "pv-bench: warning: 2 MiB hugepages for {} bytes: {e}: using 4K pages",
                p.size
            ),
        }
    }
    Mapping::new(p.size as usize, false).map_err(|e| Failure::msg(format!("mmap pool: {e}")))
}

fn registration(p: &Params, dev: &Device) -> Result<Vec<PvRing>, Failure> {
    let m = pool(p)?;
    let iovs = m.iovecs(p.buf as usize, p.size as usize);
    let page = if m.huge { "2M" } else { "4K" };
    let mut rings = Vec::with_capacity(p.rings);
    for k in 0..p.rings {
        rings
            .push(PvRing::new(dev, 8, 0).map_err(|e| Failure::new(format!("create ring {k}"), e))?);
    }
    let (first, rest) = rings.split_at_mut(1);
    let src = &mut first[0];
    let t0 = Instant::now();
    let table = src
        .register_buffers(&iovs)
        .map_err(|e| Failure::new("register on ring 0", e))?;
    let first_us = t0.elapsed().as_secs_f64() * 1e6;
    eprintln!(
        "pv-bench: pool {} bytes ({page} pages) in {} extents, first registration {first_us:.1} us",
        p.size,
        table.len()
    );
    let desc = format!(
        "\"rings\":{},\"pool_bytes\":{},\"buf_bytes\":{},\"bufs\":{},\"page\":\"{page}\"",
        p.rings,
        p.size,
        p.buf,
        table.len()
    );
    let mut results: Vec<(&str, Latency)> = Vec::new();
    let mut emit = |method: &'static str, samples: &[u64]| {
        if let Some(l) = Latency::from_ns(samples) {
            println!(
                "{{\"kind\":\"pv-bench\",\"method\":\"{method}\",{desc},{}}}",
                latency_fields(&l)
            );
            results.push((method, l));
        }
    };
    // Register again on every other ring.
    let mut s = Vec::new();
    for (k, r) in rest.iter_mut().enumerate() {
        let t = Instant::now();
        r.register_buffers(&iovs)
            .map_err(|e| Failure::new(format!("register on ring {}", k + 1), e))?;
        s.push(ns(t.elapsed()));
        r.unregister_buffers()
            .map_err(|e| Failure::new(format!("unregister ring {}", k + 1), e))?;
    }
    emit("register", &s);
    // Clone from ring 0.
    let mut s = Vec::new();
    for (k, r) in rest.iter_mut().enumerate() {
        let t = Instant::now();
        r.clone_buffers_from(CloneSrc::Ring(src), 0, 0, 0, 0)
            .map_err(|e| Failure::new(format!("clone into ring {}", k + 1), e))?;
        s.push(ns(t.elapsed()));
        r.unregister_buffers()
            .map_err(|e| Failure::new(format!("unregister ring {}", k + 1), e))?;
    }
    emit("clone", &s);
    // Through the host table.
    if dev.info().has_table() {
        let t = Instant::now();
        let id = src.publish().map_err(|e| Failure::new("publish", e))?;
        emit("publish", &[ns(t.elapsed())]);
        let mut s = Vec::new();
        for (k, r) in rest.iter_mut().enumerate() {
            let t = Instant::now();
            r.clone_buffers_from(CloneSrc::Table(id), 0, 0, 0, 0)
                .map_err(|e| Failure::new(format!("clone table {id} into ring {}", k + 1), e))?;
            s.push(ns(t.elapsed()));
        }
        emit("table-clone", &s);
        src.unpublish(id)
            .map_err(|e| Failure::new("unpublish", e))?;
    } else {
        eprintln!("pv-bench: device without PVU_F_TABLE: no table-clone");
    }
    let med = |m: &str| results.iter().find(|r| r.0 == m).map(|r| r.1.median_us);
    let (reg, clone, tab) = (med("register"), med("clone"), med("table-clone"));
    let ratio = match (reg, clone) {
        (Some(r), Some(c)) if c > 0.0 => (r / c * 10.0).round() / 10.0,
        _ => f64::NAN,
    };
    let opt = |v: Option<f64>| v.map_or("null".into(), num);
    println!(
        "{{\"kind\":\"pv-bench-summary\",{desc},\"first_register_us\":{},\"register_median_us\":{},\"clone_median_us\":{},\"table_clone_median_us\":{},\"ratio_register_over_clone\":{}}}",
        num(first_us),
        opt(reg),
        opt(clone),
        opt(tab),
        num(ratio)
    );
    Ok(rings)
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Most latency samples kept per run.
const MAX_SAMPLES: usize = 1 << 20;

fn random_reads(p: &Params, dev: &Device, qd: u32) -> Result<PvRing, Failure> {
    const BS: usize = 4096;
    let qd = qd as usize;
    let entries = (qd as u32).next_power_of_two().max(8);
    let mut r = PvRing::new(dev, entries, 0).map_err(|e| Failure::new("create ring", e))?;
    let m = Mapping::new(qd * BS, false).map_err(|e| Failure::msg(format!("mmap: {e}")))?;
    r.register_buffers(&m.iovecs(qd * BS, qd * BS))
        .map_err(|e| Failure::new("register", e))?;
    let slots: Vec<FixedBuf> = (0..qd)
        // SAFETY (pointer arithmetic): inside the mapping.
        .map(|i| r.translate(unsafe { m.ptr.add(i * BS) }, BS))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::new("translate", e))?;
    let blocks = p.span / BS as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ qd as u64);
    let mut started = vec![Instant::now(); qd];
    let mut lat = Vec::with_capacity(MAX_SAMPLES.min(1 << 16));
    let issue = |r: &mut PvRing, slot: usize, started: &mut [Instant], rng: &mut Rng| {
        let off = (rng.next() % blocks) * BS as u64;
        let f = slots[slot];
        let sqe = io_uring::opcode::ReadFixed::new(
            io_uring::types::Fixed(p.backend),
            f.host_addr as *mut u8,
            BS as u32,
            f.buf_index,
        )
        .offset(off)
        .build()
        .user_data(slot as u64);
        started[slot] = Instant::now();
        // SAFETY: each slot's 4 KiB is targeted by at most one request at a
        // time and nothing reads it; the mapping outlives the ring's use.
        unsafe { r.push(&sqe) }
    };
    for s in 0..qd {
        issue(&mut r, s, &mut started, &mut rng).map_err(|e| Failure::new("push", e))?;
    }
    r.submit();
    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(p.io_ms);
    let mut ops: u64 = 0;
    let mut inflight = qd;
    let mut stopping = false;
    let mut last_progress = t0;
    let mut idle: Vec<usize> = Vec::with_capacity(qd);
    while inflight > 0 || !idle.is_empty() {
        let mut reaped = 0;
        while let Some(c) = r.completion().next() {
            let now = Instant::now();
            let slot = c.user_data as usize;
            if c.res != BS as i32 {
                return Err(Failure::msg(format!(
                    "READ_FIXED of 4 KiB at qd {qd}: res {}",
                    pv_uring::Errno::res(c.res)
                )));
            }
            ops += 1;
            if lat.len() < MAX_SAMPLES {
                lat.push(ns(now - started[slot]));
            }
            inflight -= 1;
            reaped += 1;
            if !stopping {
                if now >= end {
                    stopping = true;
                } else {
                    // Reissued below: the host may post CQEs before it
                    // publishes the SQ head of the same submission, so the
                    // SQ can look full for a moment.
                    idle.push(slot);
                }
            }
        }
        while let Some(&slot) = idle.last() {
            if r.sq_space() == 0 {
                break;
            }
            issue(&mut r, slot, &mut started, &mut rng).map_err(|e| Failure::new("push", e))?;
            idle.pop();
            inflight += 1;
            reaped += 1;
        }
        if reaped > 0 {
            r.submit();
        } else {
            std::hint::spin_loop();
            if last_progress.elapsed() > Duration::from_secs(30) {
                return Err(Failure::msg(format!(
                    "no completion for 30 s ({inflight} in flight)"
                )));
            }
            continue;
        }
        last_progress = Instant::now();
    }
    let secs = t0.elapsed().as_secs_f64();
    let l = Latency::from_ns(&lat).ok_or_else(|| Failure::msg("no completions"))?;
    println!(
        "{{\"kind\":\"pv-bench-io\",\"op\":\"randread\",\"qd\":{qd},\"block\":{BS},\"backend\":{},\"span_bytes\":{},\"ops\":{ops},\"secs\":{},\"iops\":{},{}}}",
        p.backend,
        p.span,
        num((secs * 1e6).round() / 1e6),
        num((ops as f64 / secs).round()),
        latency_fields(&l)
    );
    Ok(r)
}

fn run(p: &Params) -> Result<(), Failure> {
    // Every ring stays open until the end: a new ring never takes the slot
    // of one closed moments before (see pv-suite slot-reuse-fresh-state).
    let mut keep: Vec<PvRing> = Vec::new();
    let dev = Device::open_path(&p.dev).map_err(|e| Failure::new(format!("open {}", p.dev), e))?;
    let i = dev.info();
    eprintln!(
        "pv-bench: max_rings {} max_buffers {} nr_backends {} max_table {} features {:#x}",
        i.max_rings, i.max_buffers, i.nr_backends, i.max_table, i.features
    );
    if p.reg {
        if p.rings + p.qds.len() > i.max_rings as usize {
            return Err(Failure::msg(format!(
                "{} rings + {} I/O rings asked, the device has {} (--uring rings=N)",
                p.rings,
                p.qds.len(),
                i.max_rings
            )));
        }
        keep.extend(registration(p, &dev)?);
    }
    if p.io {
        for &qd in &p.qds {
            keep.push(random_reads(p, &dev, qd)?);
        }
    }
    Ok(())
}

/// The program's entry point (run as `/bin/pv-bench` through rv-guest).
pub fn main() -> ExitCode {
    let mut p = Params::default();
    if let Ok(c) = std::fs::read_to_string("/proc/cmdline") {
        if let Err(e) = p.apply_cmdline(&c) {
            eprintln!("pv-bench: kernel command line: {e}");
            return ExitCode::from(2);
        }
    }
    match p.apply_args(std::env::args().skip(1)) {
        Ok(true) => {}
        Ok(false) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pv-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = p.validate() {
        eprintln!("pv-bench: {e}");
        return ExitCode::from(2);
    }
    match run(&p) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            println!("{}", f.line());
            eprintln!("pv-bench: failed: {}", f.what);
            ExitCode::FAILURE
        }
    }
}
