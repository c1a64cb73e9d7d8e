//! 4 KiB random reads on a backend at a queue depth, submitted and reaped
//! without system calls.

use crate::params::Params;
use crate::stats::{latency_fields, num, Latency};
use crate::{ns, Failure, Mapping};
use pv_uring::{Device, FixedBuf, PvRing};
use std::time::{Duration, Instant};

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

pub(crate) fn random_reads(p: &Params, dev: &Device, qd: u32) -> Result<PvRing, Failure> {
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
