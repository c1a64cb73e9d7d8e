//! 4 KiB random reads or writes on a backend at a queue depth, submitted
//! and reaped without system calls, on a ring whose host side learns of new
//! SQEs either from the doorbell (an MMIO write per submission: a VM exit,
//! a KVM ioeventfd, the VMM's device thread copying the SQEs through the
//! allow-list and calling `io_uring_enter`) or from the ring's polled
//! submitter, a VMM thread watching the SQ tail (no exit while it is
//! awake).
//!
//! Besides IOPS and latency, each run reports where the time goes, measured
//! in the guest: how long the doorbell write keeps the vCPU, how long the
//! host takes to pick submitted SQEs up (SQ head reaching the tail), and
//! how often and for how long the polling loop lost the CPU (guest timer
//! interrupts and host preemption: gaps in a loop that never blocks).

use crate::params::{Op, Params, Submit};
use crate::stats::{histogram, latency_fields, latency_of, num};
use crate::{ns, Failure};
use guest_common::mem::{Mapping, Page};
use hdrhistogram::Histogram;
use pv_uring::uring_abi::wire::PVU_SQ_NEED_WAKEUP;
use pv_uring::{Device, FixedBuf, InfoExt, PvRing, VURING_RING_POLLED};
use std::time::{Duration, Instant};

/// Bytes per request.
const BS: usize = 4096;
/// A gap between two turns of the polling loop longer than this means the
/// loop was not running (the vCPU was interrupted or preempted).
const STALL: Duration = Duration::from_micros(50);

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

/// One ring for every run of a submit mode, with `max qd` 4 KiB slots of
/// registered memory. Reusing it keeps a polled ring's host thread the
/// only one (a fresh polled ring per run would leave the previous ring's
/// thread spinning through its idle time, on a 2-core host next to ours,
/// and the VM may have only one polled ring at a time: `--uring polled=N`).
pub(crate) struct IoRing {
    // Field order: the ring (which references the pinned pages) goes first.
    r: PvRing,
    _mem: Mapping,
    slots: Vec<FixedBuf>,
    submit: Submit,
    cq_eventfd: bool,
}

impl IoRing {
    /// `cq_eventfd` false turns the completion interrupt off
    /// ([`PvRing::set_cq_eventfd`]): a busy-polling program needs no
    /// completion interrupt, and on nested PVM each one costs the vCPU
    /// about 200 us of emulated guest kernel work (entry, handler, EOI,
    /// return) before the program sees the completion.
    pub(crate) fn new(
        dev: &Device,
        submit: Submit,
        max_qd: u32,
        cq_eventfd: bool,
    ) -> Result<Self, Failure> {
        let qd = max_qd as usize;
        let entries = max_qd.next_power_of_two().max(8);
        let flags = match submit {
            Submit::Doorbell => 0,
            Submit::Polled => {
                if !dev.info().has_polled() {
                    return Err(Failure::msg(
                        "the device does not offer PVU_F_POLLED (--uring polled=N)",
                    ));
                }
                VURING_RING_POLLED
            }
        };
        let mut r = PvRing::new(dev, entries, flags)
            .map_err(|e| Failure::new(format!("create {} ring", submit.name()), e))?;
        r.set_cq_eventfd(cq_eventfd);
        let m = Mapping::with_page_top_down(qd * BS, Page::Small4K)
            .map_err(|e| Failure::msg(format!("mmap: {e}")))?;
        // Writes send this pattern; reads overwrite it.
        for i in 0..qd * BS {
            // SAFETY: inside the mapping, before any I/O uses it.
            unsafe { m.at(i).write((i as u8) ^ 0x5a) };
        }
        r.register_buffers(&m.iovecs_of(qd * BS, qd * BS))
            .map_err(|e| Failure::new("register", e))?;
        let slots: Vec<FixedBuf> = (0..qd)
            // SAFETY: pointer arithmetic inside the mapping.
            .map(|i| r.translate(m.at(i * BS), BS))
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::new("translate", e))?;
        Ok(IoRing {
            r,
            _mem: m,
            slots,
            submit,
            cq_eventfd,
        })
    }
}

/// Where a run's time went, as the guest saw it. Every figure is kept in
/// memory allocated and touched before the timed loop: a page fault in the
/// loop is a guest kernel entry (about a millisecond of emulated kernel
/// code on a PVM host) that the benchmark would charge to the ring.
struct Diag {
    /// Submissions that made SQEs visible.
    submits: u64,
    /// Time spent in each submission that wrote the doorbell (tail store,
    /// fence, MMIO write: the VM exit and its return), in ns.
    doorbell_ns: Histogram<u64>,
    /// Submission to the SQ head reaching the tail it published (the host
    /// consumed the batch), sampled: one batch at a time, in ns.
    pickup_ns: Histogram<u64>,
    /// Polling-loop gaps above [`STALL`] and their total.
    stalls: u64,
    stalled_ns: u64,
    /// The same gaps by length: count and total per [`STALL_BUCKETS_US`]
    /// bucket (the last one is open-ended). Guest timer ticks, host
    /// interrupts and host preemption leave gaps of different lengths.
    stall_buckets: [(u64, u64); STALL_BUCKETS_US.len() + 1],
}

/// Upper bounds (µs) of the stall-length buckets in the diagnostics.
const STALL_BUCKETS_US: [u64; 6] = [100, 200, 500, 1000, 2000, 5000];

impl Diag {
    fn new() -> Self {
        Diag {
            submits: 0,
            doorbell_ns: histogram(),
            pickup_ns: histogram(),
            stalls: 0,
            stalled_ns: 0,
            stall_buckets: Default::default(),
        }
    }

    fn stalled(&mut self, gap: Duration) {
        let gap_ns = ns(gap);
        self.stalls += 1;
        self.stalled_ns += gap_ns;
        let bucket = STALL_BUCKETS_US
            .iter()
            .position(|&le| gap_ns <= le * 1000)
            .unwrap_or(STALL_BUCKETS_US.len());
        self.stall_buckets[bucket].0 += 1;
        self.stall_buckets[bucket].1 += gap_ns;
    }

    /// `[[upper bound µs or null, count, ms], ...]`.
    fn stall_hist_json(&self) -> String {
        let rows: Vec<String> = self
            .stall_buckets
            .iter()
            .enumerate()
            .map(|(i, (n, total))| {
                let le = STALL_BUCKETS_US
                    .get(i)
                    .map_or("null".to_string(), |v| v.to_string());
                format!("[{le},{n},{}]", num((*total as f64 / 1e3).round() / 1e3))
            })
            .collect();
        format!("[{}]", rows.join(","))
    }
}

/// One run of `op` at `qd` for `p.io_ms` on `ring`; prints its JSON line.
pub(crate) fn random_io(p: &Params, ring: &mut IoRing, op: Op, qd: u32) -> Result<(), Failure> {
    let qd = qd as usize;
    if qd > ring.slots.len() {
        return Err(Failure::msg(format!(
            "qd {qd} above the ring's {} slots",
            ring.slots.len()
        )));
    }
    let mut run = IoRun {
        r: &mut ring.r,
        slots: &ring.slots,
        op,
        submit: ring.submit,
        backend: p.backend,
        blocks: p.span / BS as u64,
        qd,
        rng: Rng(0x9e37_79b9_7f4a_7c15 ^ qd as u64 ^ ((op as u64) << 32)),
        started: vec![Instant::now(); qd],
        lat: histogram(),
        d: Diag::new(),
        pending: None,
        ops: 0,
        inflight: qd,
        stopping: false,
        idle: Vec::with_capacity(qd),
    };
    for s in 0..qd {
        run.issue(s)?;
    }
    run.flush();
    let t0 = Instant::now();
    run.drive(t0, t0 + Duration::from_millis(p.io_ms))?;
    let secs = t0.elapsed().as_secs_f64();
    run.report(p, ring.cq_eventfd, secs)
}

/// One run in progress: the ring, its slots, the loop's state and every
/// figure it keeps (allocated before the timed loop).
struct IoRun<'a> {
    r: &'a mut PvRing,
    slots: &'a [FixedBuf],
    op: Op,
    submit: Submit,
    backend: u32,
    /// 4 KiB blocks of the span the requests cover.
    blocks: u64,
    qd: usize,
    rng: Rng,
    /// When each slot's request was submitted.
    started: Vec<Instant>,
    /// Request latencies in ns, every one of them.
    lat: Histogram<u64>,
    d: Diag,
    /// The oldest submission whose SQEs the host has not consumed yet:
    /// when, and the SQ tail it published.
    pending: Option<(Instant, u32)>,
    /// Requests completed.
    ops: u64,
    inflight: usize,
    /// The run's time is up: completed slots are not reissued.
    stopping: bool,
    /// Completed slots waiting for SQ space to be reissued.
    idle: Vec<usize>,
}

impl IoRun<'_> {
    /// Pushes a request of a random block into `slot`.
    fn issue(&mut self, slot: usize) -> Result<(), Failure> {
        let off = (self.rng.next() % self.blocks) * BS as u64;
        let f = self.slots[slot];
        let sqe = match self.op {
            Op::Read => pv_uring::read_fixed(self.backend, f, BS as u32, off),
            Op::Write => pv_uring::write_fixed(self.backend, f, BS as u32, off),
            Op::Nop => pv_uring::nop(),
        }
        .user_data(slot as u64);
        self.started[slot] = Instant::now();
        // SAFETY: each slot's 4 KiB is targeted by at most one request at a
        // time and nothing else touches it; the mapping outlives the ring.
        unsafe { self.r.push(&sqe) }.map_err(|e| Failure::new("push", e))
    }

    /// Records the pickup of the pending submission, once the SQ head
    /// has reached its tail.
    fn picked_up(&mut self) {
        if let Some((since, tail)) = self.pending {
            let (head, ..) = self.r.ring_indices();
            if head.wrapping_sub(tail) as i32 >= 0 {
                self.d.pickup_ns.saturating_record(ns(since.elapsed()));
                self.pending = None;
            }
        }
    }

    /// Publishes the tail (and rings the doorbell when the library decides
    /// to), timing the doorbell writes.
    fn flush(&mut self) {
        let rings = match self.submit {
            Submit::Doorbell => true,
            Submit::Polled => self.r.sq_flags() & PVU_SQ_NEED_WAKEUP != 0,
        };
        let t = Instant::now();
        if self.r.submit() > 0 {
            self.d.submits += 1;
            if rings {
                self.d.doorbell_ns.saturating_record(ns(t.elapsed()));
            }
            if self.pending.is_none() {
                self.pending = Some((t, self.r.ring_indices().1));
            }
        }
    }

    /// Polls until every request has completed after `end`, reissuing each
    /// completed slot before then.
    fn drive(&mut self, t0: Instant, end: Instant) -> Result<(), Failure> {
        let mut last_progress = t0;
        let mut last_turn = t0;
        while self.inflight > 0 || !self.idle.is_empty() {
            let turn = Instant::now();
            let gap = turn - last_turn;
            if gap > STALL {
                self.d.stalled(gap);
            }
            last_turn = turn;
            self.picked_up();
            let progress = self.reap(end)? + self.reissue()?;
            if progress == 0 {
                std::hint::spin_loop();
                if last_progress.elapsed() > Duration::from_secs(30) {
                    return Err(Failure::msg(format!(
                        "no completion for 30 s ({} in flight; {})",
                        self.inflight,
                        self.r.debug_state()
                    )));
                }
                continue;
            }
            // A NOP's CQE can come before the SQ head moves: look again
            // before the next submission takes the pending slot.
            self.picked_up();
            self.flush();
            last_progress = Instant::now();
            // The bookkeeping above is the loop's own work, not a stall.
            last_turn = last_progress;
        }
        Ok(())
    }

    /// Takes every completion there is; returns how many.
    fn reap(&mut self, end: Instant) -> Result<usize, Failure> {
        let mut reaped = 0;
        while let Some(c) = self.r.completion().next() {
            let now = Instant::now();
            let slot = c.user_data as usize;
            let want = if self.op == Op::Nop { 0 } else { BS as i32 };
            if c.res != want {
                return Err(Failure::msg(format!(
                    "{} of 4 KiB at qd {} ({}): res {}",
                    match self.op {
                        Op::Read => "READ_FIXED",
                        Op::Write => "WRITE_FIXED",
                        Op::Nop => "NOP",
                    },
                    self.qd,
                    self.submit.name(),
                    pv_uring::Errno::res(c.res)
                )));
            }
            self.ops += 1;
            self.lat.saturating_record(ns(now - self.started[slot]));
            self.inflight -= 1;
            reaped += 1;
            if !self.stopping {
                if now >= end {
                    self.stopping = true;
                } else {
                    // Reissued by `reissue`: the host may post CQEs before
                    // it publishes the SQ head of the same submission, so
                    // the SQ can look full for a moment.
                    self.idle.push(slot);
                }
            }
        }
        Ok(reaped)
    }

    /// Reissues the idle slots the SQ has room for; returns how many.
    fn reissue(&mut self) -> Result<usize, Failure> {
        let mut n = 0;
        while let Some(&slot) = self.idle.last() {
            if self.r.sq_space() == 0 {
                break;
            }
            self.issue(slot)?;
            self.idle.pop();
            self.inflight += 1;
            n += 1;
        }
        Ok(n)
    }

    /// Prints the run's `pv-bench-io` line.
    fn report(&self, p: &Params, cq_eventfd: bool, secs: f64) -> Result<(), Failure> {
        let l = latency_of(&self.lat).ok_or_else(|| Failure::msg("no completions"))?;
        let d = &self.d;
        let pickup = latency_of(&d.pickup_ns);
        let doorbell = latency_of(&d.doorbell_ns);
        let us = |v: f64| num((v * 1000.0).round() / 1000.0);
        let (qd, backend, ops) = (self.qd, self.backend, self.ops);
        println!(
            "{{\"kind\":\"pv-bench-io\",\"op\":\"{}\",\"submit\":\"{}\",\"cq_eventfd\":{cq_eventfd},\"qd\":{qd},\"block\":{BS},\"backend\":{backend},\"span_bytes\":{},\"ops\":{ops},\"secs\":{},\"iops\":{},{},\"submits\":{},\"doorbells\":{},\"doorbell_median_us\":{},\"doorbell_mean_us\":{},\"pickup_median_us\":{},\"pickup_p99_us\":{},\"stalls\":{},\"stalled_ms\":{},\"stall_hist\":{}}}",
            self.op.name(),
            self.submit.name(),
            p.span,
            num((secs * 1e6).round() / 1e6),
            num((ops as f64 / secs).round()),
            latency_fields(&l),
            d.submits,
            d.doorbell_ns.len(),
            doorbell.as_ref().map_or("null".into(), |l| us(l.median_us)),
            doorbell.as_ref().map_or("null".into(), |l| us(l.mean_us)),
            pickup.as_ref().map_or("null".into(), |l| us(l.median_us)),
            pickup.as_ref().map_or("null".into(), |l| us(l.p99_us)),
            d.stalls,
            us(d.stalled_ns as f64 / 1e6),
            d.stall_hist_json(),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for op in [Op::Read, Op::Write] {
            assert_eq!(Op::parse(op.name()), Ok(op));
        }
        for s in [Submit::Doorbell, Submit::Polled] {
            assert_eq!(Submit::parse(s.name()), Ok(s));
        }
        assert_eq!(Op::parse("write"), Ok(Op::Write));
        assert!(Op::parse("trim").is_err());
        assert!(Submit::parse("irq").is_err());
    }
}
