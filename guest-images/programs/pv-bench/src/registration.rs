//! The registration measurement: one pool on N rings, register again vs
//! clone from ring 0 vs clone from a host table entry; for each ring count
//! of `--rings` in turn (a sweep), on fresh rings and the same pool. When
//! the device has a buffer arena of at least the pool's size, the same
//! counts also register a pool of arena chunks: allocated once
//! (`arena-alloc`, on the device fd), then ARENA_REGISTER on each of N
//! fresh rings naming that fd as the owner (`arena`), and whole clones of
//! the first one's table to the others (`arena-clone`), then
//! ARENA_REGISTER_RINGS of the pool on all N rings with one command
//! (`arena-rings`, [`ARENA_RINGS_REPS`] samples, each the time for all N
//! rings; the rings are emptied before each, untimed). `--only arena`
//! measures only these, without a guest pool.

use crate::params::Params;
use crate::stats::{latency_fields, num, samples_field, Latency};
use crate::{ns, Failure};
use guest_common::mem::{Mapping, Page};
use pv_uring::arena;
use pv_uring::{CloneSrc, Device, InfoExt, PvRing};
use std::time::Instant;

/// Samples of `arena-rings` per ring count.
const ARENA_RINGS_REPS: usize = 5;

fn pool(p: &Params) -> Result<Mapping, Failure> {
    if p.huge {
        match Mapping::with_page_top_down(p.size as usize, Page::Huge2M) {
            Ok(m) => return Ok(m),
            Err(e) => eprintln!(
                "pv-bench: warning: 2 MiB hugepages for {} bytes: {e}: using 4K pages",
                p.size
            ),
        }
    }
    Mapping::with_page_top_down(p.size as usize, Page::Small4K)
        .map_err(|e| Failure::msg(format!("mmap pool: {e}")))
}

/// Every ring count of `p.rings` in turn; returns every ring (each count's
/// rings stay open to the end: see `run`).
pub(crate) fn registration(p: &Params, dev: &Device) -> Result<Vec<PvRing>, Failure> {
    // One pool for every count: the rings keep their registrations (pinned
    // guest pages) until the end, so a pool per count would need the
    // hugepages of all of them.
    let mut keep = Vec::new();
    if p.arena_only {
        for &n in &p.rings {
            let desc = desc(p, n, 0, "2M");
            let mut emit = |method: &'static str, samples: &[u64]| {
                print_line(method, &desc, samples);
            };
            if !measure_arena(p, dev, n, &mut emit)? {
                return Err(Failure::msg(format!(
                    "--only arena: the device has no arena of {} bytes (--uring arena=SIZE)",
                    p.size
                )));
            }
        }
        return Ok(keep);
    }
    let m = pool(p)?;
    for &n in &p.rings {
        keep.extend(measure(p, dev, &m, n)?);
    }
    Ok(keep)
}

fn desc(p: &Params, n: usize, bufs: usize, page: &str) -> String {
    format!(
        "\"rings\":{n},\"pool_bytes\":{},\"buf_bytes\":{},\"bufs\":{bufs},\"page\":\"{page}\"",
        p.size, p.buf
    )
}

/// One `pv-bench` line; false (no line) without samples.
fn print_line(method: &str, desc: &str, samples: &[u64]) -> Option<Latency> {
    let l = Latency::from_ns(samples)?;
    println!(
        "{{\"kind\":\"pv-bench\",\"method\":\"{method}\",{desc},{},{}}}",
        latency_fields(&l),
        samples_field(samples)
    );
    Some(l)
}

/// `clone-small`: a pv clone of a small guest pool (one 2 MiB extent) into
/// each of `rings`, which are left empty again: the cost of a control
/// command round trip in this guest and minute, which a pv clone of any
/// guest pool costs (its extents are few), for the arena-only runs that
/// have no guest pool to clone.
fn clone_floor(
    dev: &Device,
    rings: &mut [PvRing],
    emit: &mut dyn FnMut(&'static str, &[u64]),
) -> Result<(), Failure> {
    let m = Mapping::with_page_top_down(2 << 20, Page::Huge2M)
        .or_else(|_| Mapping::with_page_top_down(2 << 20, Page::Small4K))
        .map_err(|e| Failure::msg(format!("mmap the small pool: {e}")))?;
    let mut src = PvRing::new(dev, 8, 0).map_err(|e| Failure::new("create the clone source", e))?;
    src.register_buffers(&m.iovecs_of(2 << 20, 2 << 20))
        .map_err(|e| Failure::new("register the small pool", e))?;
    let mut s = Vec::new();
    for (k, r) in rings.iter_mut().enumerate() {
        let t = Instant::now();
        r.clone_buffers_from(CloneSrc::Ring(&src), 0, 0, 0, 0)
            .map_err(|e| Failure::new(format!("clone the small pool into ring {k}"), e))?;
        s.push(ns(t.elapsed()));
        r.unregister_buffers()
            .map_err(|e| Failure::new(format!("unregister ring {k}"), e))?;
    }
    emit("clone-small", &s);
    Ok(())
}

/// The arena methods at ring count `n` (see the module comment), on `n`
/// fresh rings closed at the end; false if the device has no arena of
/// the pool's size.
fn measure_arena(
    p: &Params,
    dev: &Device,
    n: usize,
    emit: &mut dyn FnMut(&'static str, &[u64]),
) -> Result<bool, Failure> {
    let info = dev
        .arena_info()
        .map_err(|e| Failure::new("ARENA_INFO", e))?;
    if !dev.info().has_arena() || info.len < p.size {
        eprintln!(
            "pv-bench: no arena of {} bytes ({} bytes): no arena methods",
            p.size, info.len
        );
        return Ok(false);
    }
    let mut rings = Vec::with_capacity(n);
    for k in 0..n {
        rings.push(
            PvRing::new(dev, 8, 0)
                .map_err(|e| Failure::new(format!("create arena ring {k}"), e))?,
        );
    }
    if p.arena_only {
        clone_floor(dev, &mut rings, emit)?;
    }
    let t = Instant::now();
    let a = arena::alloc(dev.fd(), p.size).map_err(|e| Failure::new("ARENA_ALLOC", e))?;
    emit("arena-alloc", &[ns(t.elapsed())]);
    let mut s = Vec::new();
    for (k, r) in rings.iter().enumerate() {
        let t = Instant::now();
        let got = arena::register_owned(r.fd(), &[a.run(0)], dev.fd())
            .map_err(|e| Failure::new(format!("ARENA_REGISTER on ring {k}"), e))?;
        s.push(ns(t.elapsed()));
        if got != a.nr {
            return Err(Failure::msg(format!(
                "ARENA_REGISTER on ring {k}: {got} buffers, want {}",
                a.nr
            )));
        }
    }
    eprintln!(
        "pv-bench: {n} rings: arena pool of {} bytes in {} chunks, {n} registrations in {:.3} ms",
        p.size,
        a.nr,
        s.iter().sum::<u64>() as f64 / 1e6
    );
    emit("arena", &s);
    // Whole clones of ring 0's arena table (by reference in the driver).
    let (first, rest) = rings.split_at_mut(1);
    let mut s = Vec::new();
    for (k, r) in rest.iter_mut().enumerate() {
        r.unregister_buffers()
            .map_err(|e| Failure::new(format!("unregister arena ring {}", k + 1), e))?;
        let t = Instant::now();
        r.clone_buffers_from(CloneSrc::Ring(&first[0]), 0, 0, 0, 0)
            .map_err(|e| Failure::new(format!("clone arena ring 0 into ring {}", k + 1), e))?;
        s.push(ns(t.elapsed()));
    }
    emit("arena-clone", &s);
    // Every ring at once: one ARENA_REGISTER_RINGS naming all n rings.
    let mut s = Vec::new();
    for rep in 0..ARENA_RINGS_REPS {
        for (k, r) in rings.iter_mut().enumerate() {
            r.unregister_buffers()
                .map_err(|e| Failure::new(format!("unregister arena ring {k}"), e))?;
        }
        let t = Instant::now();
        let got =
            PvRing::register_arena_rings(&mut rings, dev.fd(), &[a.run(0)], &[], info.chunk_size)
                .map_err(|e| {
                Failure::new(
                    format!("ARENA_REGISTER_RINGS on {n} rings (sample {rep})"),
                    e,
                )
            })?;
        s.push(ns(t.elapsed()));
        if got != a.nr {
            return Err(Failure::msg(format!(
                "ARENA_REGISTER_RINGS on {n} rings: {got} buffers, want {}",
                a.nr
            )));
        }
    }
    let mut sorted = s.clone();
    sorted.sort_unstable();
    eprintln!(
        "pv-bench: {n} rings: one ARENA_REGISTER_RINGS for all of them: median {:.3} ms (min {:.3} ms)",
        sorted[sorted.len() / 2] as f64 / 1e6,
        sorted[0] as f64 / 1e6
    );
    emit("arena-rings", &s);
    arena::free(dev.fd(), a.chunk).map_err(|e| Failure::new("ARENA_FREE", e))?;
    // Closing the rings gives the chunks back for the next count.
    drop(rings);
    Ok(true)
}

/// One ring count `n`: prints a line per method (`first-register`: ring
/// 0's registration; `register`, `clone`, `publish`, `table-clone`; none
/// for a method without samples) and the summary.
fn measure(p: &Params, dev: &Device, m: &Mapping, n: usize) -> Result<Vec<PvRing>, Failure> {
    let iovs = m.iovecs_of(p.size as usize, p.buf as usize);
    let page = if m.huge { "2M" } else { "4K" };
    let mut rings = Vec::with_capacity(n);
    for k in 0..n {
        rings
            .push(PvRing::new(dev, 8, 0).map_err(|e| Failure::new(format!("create ring {k}"), e))?);
    }
    let (first, rest) = rings.split_at_mut(1);
    let src = &mut first[0];
    let t0 = Instant::now();
    let table = src
        .register_buffers(&iovs)
        .map_err(|e| Failure::new("register on ring 0", e))?;
    let first_ns = ns(t0.elapsed());
    let first_us = first_ns as f64 / 1e3;
    eprintln!(
        "pv-bench: {n} rings: pool {} bytes ({page} pages) in {} extents, first registration {first_us:.1} us",
        p.size,
        table.len()
    );
    let desc = desc(p, n, table.len(), page);
    let mut results: Vec<(&str, Latency)> = Vec::new();
    let mut emit = |method: &'static str, samples: &[u64]| {
        // No samples (one ring): no line, no figure made up.
        if let Some(l) = print_line(method, &desc, samples) {
            results.push((method, l));
        }
    };
    emit("first-register", &[first_ns]);
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
        let token = src.publish().map_err(|e| Failure::new("publish", e))?;
        emit("publish", &[ns(t.elapsed())]);
        let mut s = Vec::new();
        for (k, r) in rest.iter_mut().enumerate() {
            let t = Instant::now();
            r.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0)
                .map_err(|e| Failure::new(format!("clone the table into ring {}", k + 1), e))?;
            s.push(ns(t.elapsed()));
        }
        emit("table-clone", &s);
        src.unpublish(token)
            .map_err(|e| Failure::new("unpublish", e))?;
    } else {
        eprintln!("pv-bench: device without PVU_F_TABLE: no table-clone");
    }
    measure_arena(p, dev, n, &mut emit)?;
    let med = |m: &str| results.iter().find(|r| r.0 == m).map(|r| r.1.median_us);
    let (reg, clone, tab) = (med("register"), med("clone"), med("table-clone"));
    let (arena_med, arena_rings) = (med("arena"), med("arena-rings"));
    let ratio = match (reg, clone) {
        (Some(r), Some(c)) if c > 0.0 => (r / c * 10.0).round() / 10.0,
        _ => f64::NAN,
    };
    let opt = |v: Option<f64>| v.map_or("null".into(), num);
    println!(
        "{{\"kind\":\"pv-bench-summary\",{desc},\"first_register_us\":{},\"register_median_us\":{},\"clone_median_us\":{},\"table_clone_median_us\":{},\"arena_median_us\":{},\"arena_rings_median_us\":{},\"ratio_register_over_clone\":{}}}",
        num(first_us),
        opt(reg),
        opt(clone),
        opt(tab),
        opt(arena_med),
        opt(arena_rings),
        num(ratio)
    );
    Ok(rings)
}
