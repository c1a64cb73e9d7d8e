//! The registration measurement: one pool on N rings, register again vs
//! clone from ring 0 vs clone from a host table entry.

use crate::params::Params;
use crate::stats::{latency_fields, num, Latency};
use crate::{ns, Failure, Mapping};
use pv_uring::{CloneSrc, Device, PvRing};
use std::time::Instant;

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

pub(crate) fn registration(p: &Params, dev: &Device) -> Result<Vec<PvRing>, Failure> {
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
