//! ring-pool: the latency workload for IORING_REGISTER_CLONE_BUFFERS.
//!
//! Creates N rings, registers a pool of S bytes (buffers of B bytes, 2 MiB
//! hugetlb or 4 KiB pages) on the first, then gives every other ring the
//! same buffers twice: by registering them again (timed, then unregistered)
//! and by cloning them from the first ring (timed). Each per-ring system
//! call is timed with CLOCK_MONOTONIC; stdout gets one JSON line per method
//! (min/median/p99/max/mean in us) and a summary with the ratio of median
//! register to median clone. A kernel without opcode 30 gets a
//! `ring-pool-error` line (`clone-unsupported`) and exit status 3, found
//! before the pool is populated; any other failure, exit status 1. Progress
//! goes to stderr. Parameters: see `params::USAGE`.

mod bench;
mod params;
mod pool;
pub mod stats;
mod sys;

use params::{Params, USAGE};
use std::process::ExitCode;

pub fn main() -> ExitCode {
    guest_common::cli::main("ring-pool", USAGE, |p: Params| run(&p))
}

/// Runs the workload; a failure is a `ring-pool-error` line and its exit
/// status.
fn run(p: &Params) -> ExitCode {
    match bench::run(p) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let rec = stats::ErrorRecord {
                kind: "ring-pool-error",
                error: e.tag(),
                errno: e.errno(),
                detail: e.to_string(),
                kernel: sys::kernel_release(),
            };
            println!("{}", stats::line(&rec));
            eprintln!("ring-pool: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
