//! pv-suite: the guest test of the pv-uring device (docs/pv-uring.md)
//! through /dev/vuring and the pv-uring library.
//!
//! With `--pause`, the suite prints `PV-SUITE-PAUSE hostile-begin` before
//! the first `hostile-` case and `PV-SUITE-PAUSE hostile-end` after the
//! last, and waits for a line on stdin at each: the host test samples the
//! VMM's VmPin/VmRSS and its own SUnreclaim there.
//!
//! Output: one line per case, `PASS name`, `FAIL name: detail` or
//! `SKIP name: why`, then `N passed, N failed[, N skipped]`; exit status 0
//! iff nothing failed (2: bad arguments or no device). `--list` prints the
//! case names; other words select cases by substring; `--cycles N` runs
//! only N create/destroy cycles (case `create-destroy-cycles`).
//!
//! Data layout shared with the host test (pv_uring::pattern): backend
//! `backend` (default 0) holds `host_word(seed, b, j)` in blocks
//! `0..read_blocks`; the write case writes `guest_word(seed, b, j)` to
//! blocks `write_block..write_block + write_blocks` and FSYNCs.
//!
//! Cases: data (nop, read-host-pattern, write-guest-pattern, fsync,
//! concurrent-rings); control (create-layout, create-errors,
//! register-errors, create-until-enospc); clone semantics after
//! clone-suite (clone-all-to-empty, ebusy-*, enxio-*, einval-*,
//! eoverflow-*, ebadf-src-not-a-ring, enoent-unknown-table-id,
//! clone-into-self, replace-keeps-outside-range, partial-range-maps,
//! after-src-unregister, after-src-close, polled-dst, pool-of-64-rings);
//! the host table (table-*); with `--arena`, only the buffer arena's cases
//! (arena-*: data both ways, ownership, bounds, frees, unmapping and
//! closing while a ring holds chunks, `--arena-cycles` lifecycle cycles);
//! hostile requests, one per finding of issue 14
//! (hostile-*: each answered by the errno docs/pv-uring.md gives, in the CQE
//! or the ioctl's return, then good I/O on another ring and the same ring).

mod cases;
mod ctx;
mod harness;
mod params;

use guest_common::{ensure, fail, skip};

use ctx::{run_one, Case};
use harness::Tally;
use params::{Params, USAGE};
use std::process::ExitCode;

/// Says on stdout that the suite pauses `at`, and waits for a line on
/// stdin (the host's answer; EOF also goes on, so a run without a host
/// reader does not hang).
fn pause(at: &str) {
    use std::io::{BufRead, Write};
    println!("PV-SUITE-PAUSE {at}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// The program's entry point (run as `/bin/pv-suite` through rv-guest).
pub fn main() -> ExitCode {
    guest_common::cli::main("pv-suite", USAGE, run)
}

/// Lists the cases, or runs the selected ones and prints the tally.
fn run(p: Params) -> ExitCode {
    if p.list {
        for c in cases::CASES {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    let cycles = p.cycles;
    let filters = p.filters.clone();
    let list = if p.arena {
        cases::ARENA_CASES
    } else {
        cases::CASES
    };
    if cycles.is_none() && !list.iter().any(|c| harness::selected(c.name, &filters)) {
        eprintln!("pv-suite: no case matches {filters:?} (see --list)");
        return ExitCode::from(2);
    }
    let ctx = match ctx::Ctx::new(p) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL open: {e}");
            println!("0 passed, 1 failed");
            return ExitCode::from(2);
        }
    };
    let mut t = Tally::default();
    if ctx.p.arena {
        // The lifecycle case last, between pauses: the host samples VmPin
        // and its free hugepages around it (tests/pv.rs).
        for c in list.iter().filter(|c| harness::selected(c.name, &filters)) {
            let lifecycle = c.name == "arena-lifecycle";
            if ctx.p.pause && lifecycle {
                pause("arena-cycles-begin");
            }
            let r = run_one(&ctx, c);
            t.add(c.name, &r);
            if ctx.p.pause && lifecycle {
                pause("arena-cycles-end");
            }
        }
    } else if let Some(n) = cycles {
        fn run_cycles(ctx: &ctx::Ctx) -> harness::CaseResult {
            cases::control::cycles(ctx, ctx.p.cycles.unwrap_or(0))
        }
        let c = Case {
            name: "create-destroy-cycles",
            run: run_cycles,
        };
        eprintln!("pv-suite: {n} create/destroy cycles");
        let r = run_one(&ctx, &c);
        t.add(c.name, &r);
    } else {
        let selected: Vec<&Case> = cases::CASES
            .iter()
            .filter(|c| harness::selected(c.name, &filters))
            .collect();
        let hostile = |c: &&Case| c.name.starts_with("hostile-");
        let first = selected.iter().position(hostile);
        let last = selected.iter().rposition(hostile);
        for (i, c) in selected.iter().enumerate() {
            if ctx.p.pause && Some(i) == first {
                pause("hostile-begin");
            }
            let r = run_one(&ctx, c);
            t.add(c.name, &r);
            if ctx.p.pause && Some(i) == last {
                pause("hostile-end");
            }
        }
    }
    println!("{}", t.summary());
    if t.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
