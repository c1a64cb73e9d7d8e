//! pv-bench: measurements of the pv-uring device through /dev/vuring, one
//! JSON line each on stdout (progress on stderr):
//!
//! - registration of one buffer pool on N rings (each count of a list such
//!   as `--rings 1,2,4` in turn, on fresh rings), per ring: registering the
//!   pool again (`method":"register"`), cloning it from ring 0
//!   (`"clone"`), and cloning it from a host table entry published by ring
//!   0 (`"table-clone"`; `"publish"` is the one PUBLISH), in ring-pool's
//!   shape (`kind`, `method`, `rings`, `pool_bytes`, `page`, `samples`,
//!   `min_us`, `median_us`, `p99_us`, ..., every sample in `samples_us`;
//!   `"first-register"` is ring 0's), then a `pv-bench-summary` line;
//! - 4 KiB random READ_FIXED or WRITE_FIXED on a backend at each queue
//!   depth, on a doorbell ring and/or a polled ring (a VMM thread polls its SQ)
//!   (`{"kind":"pv-bench-io","op":"randread","submit":"doorbell","qd":N,...,"iops":...}`),
//!   submitted and reaped without system calls. With `--pause on`, each
//!   run is bracketed by `{"kind":"pv-bench-pause","at":"before"|"after",
//!   "op":...,"submit":...,"qd":N}` lines, after each of which the program
//!   waits for a line on stdin (the console): the host measures its own
//!   reference for that operation and depth while the guest sleeps, and
//!   answers.
//!
//! A failure prints `{"kind":"pv-bench-error",...}` and exits 1.

mod io;
mod params;
mod registration;
mod stats;

use params::{Params, USAGE};
use pv_uring::{Device, Error, PvRing};
use stats::string;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Failure {
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

pub(crate) fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Moves this process to guest CPU `cpu` (and keeps it there).
fn pin_to_cpu(cpu: usize) -> Result<(), Failure> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(Failure::msg(format!("cpu {cpu} out of range")));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside
    // it (cpu checked above); sched_setaffinity reads the set it is given.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        let errno = pv_uring::Errno::last();
        return Err(Failure::new(
            format!("pin to cpu {cpu}"),
            Error::Sys {
                op: "sched_setaffinity",
                errno,
            },
        ));
    }
    Ok(())
}

fn run(p: &Params) -> Result<(), Failure> {
    if let Some(cpu) = p.cpu {
        pin_to_cpu(cpu)?;
    }
    // Every ring stays open until the end: a new ring never takes the slot
    // of one closed moments before (see pv-suite slot-reuse-fresh-state).
    let mut keep: Vec<PvRing> = Vec::new();
    let dev = Device::open_path(&p.dev).map_err(|e| Failure::new(format!("open {}", p.dev), e))?;
    let i = dev.info();
    eprintln!(
        "pv-bench: max_rings {} max_buffers {} nr_backends {} max_table {} features {:#x} cpu {}",
        i.max_rings,
        i.max_buffers,
        i.nr_backends,
        i.max_table,
        i.features,
        p.cpu.map_or("any".into(), |c| c.to_string())
    );
    if p.reg {
        // The arena-only counts close their rings before the next count.
        let reg_rings: usize = if p.arena_only {
            p.rings.iter().copied().max().unwrap_or(0)
        } else {
            p.rings.iter().sum()
        };
        if reg_rings + p.submits.len() > i.max_rings as usize {
            return Err(Failure::msg(format!(
                "{reg_rings} rings + {} I/O rings asked, the device has {} (--uring rings=N)",
                p.submits.len(),
                i.max_rings
            )));
        }
        keep.extend(registration::registration(p, &dev)?);
    }
    // One ring per submit mode, reused by every op and queue depth; kept
    // open to the end like the others.
    let mut io_rings = Vec::new();
    if p.io {
        let max_qd = p.qds.iter().copied().max().unwrap_or(1);
        for &submit in &p.submits {
            let mut ring = io::IoRing::new(&dev, submit, max_qd, p.cq_eventfd)?;
            for &op in &p.ops {
                for &qd in &p.qds {
                    if p.pause {
                        wait_for_host("before", submit, op, qd)?;
                    }
                    io::random_io(p, &mut ring, op, qd)?;
                    if p.pause {
                        wait_for_host("after", submit, op, qd)?;
                    }
                }
            }
            io_rings.push(ring);
        }
    }
    drop(io_rings);
    Ok(())
}

/// Says on stdout that the guest pauses `at` ("before" or "after") a run,
/// and sleeps until a line (or anything) arrives on stdin. The host runs
/// its reference meanwhile: the vCPU halts in the read, the I/O ring's SQ
/// thread falls asleep after its idle time, and nothing of the guest
/// competes for the host's CPUs.
fn wait_for_host(at: &str, submit: params::Submit, op: params::Op, qd: u32) -> Result<(), Failure> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{{\"kind\":\"pv-bench-pause\",\"at\":\"{at}\",\"op\":\"{}\",\"submit\":\"{}\",\"qd\":{qd}}}",
        op.name(),
        submit.name()
    )
    .and_then(|()| out.flush())
    .map_err(|e| Failure::msg(format!("pause line: {e}")))?;
    let mut answer = String::new();
    match std::io::stdin().lock().read_line(&mut answer) {
        Ok(0) => Err(Failure::msg(
            "--pause on: stdin closed before the host answered",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::msg(format!("--pause on: reading stdin: {e}"))),
    }
}

/// The program's entry point (run as `/bin/pv-bench` through rv-guest).
pub fn main() -> ExitCode {
    guest_common::cli::main("pv-bench", USAGE, |p: Params| match run(&p) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            println!("{}", f.line());
            eprintln!("pv-bench: failed: {}", f.what);
            ExitCode::FAILURE
        }
    })
}
