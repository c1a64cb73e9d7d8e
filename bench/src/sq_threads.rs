//! Whether a process's polling submitter threads are asleep.
//!
//! A polled pv ring's submitter (`pvu-poll<id>`, a VMM thread) keeps
//! spinning for its idle time (1 s) after the guest's last submission, as
//! a host SQPOLL thread (`iou-sqp-<pid>`) does. A host reference measured
//! in a guest's pause must not share a CPU with it: the bench waits until
//! every such thread of the child sleeps.

use std::path::Path;
use std::time::{Duration, Instant};

/// How many reads in a row must find every SQ thread asleep: a spinning
/// thread can be caught between two turns of its loop.
const CALM_READS: u32 = 3;
/// Time between reads.
const READ_EVERY: Duration = Duration::from_millis(10);

/// Name prefixes of polling submitter threads: the kernel's io_uring SQ
/// threads and pv-uring's polled submitters.
const SQ_THREAD_PREFIXES: [&str; 2] = ["iou-sqp", "pvu-poll"];

/// The state letter in a `/proc/.../stat` line (the field after the
/// parenthesised command name, which may itself hold spaces or `)`).
fn state_of(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Number of SQ threads of `pid` that are not sleeping, or `None` when the
/// process is gone.
fn awake_sq_threads(pid: u32) -> Option<usize> {
    let tasks = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task")).ok()?;
    let awake = tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| SQ_THREAD_PREFIXES.iter().any(|p| c.starts_with(p)))
        })
        .filter(|t| {
            // A thread that ended between the two reads is not awake.
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| state_of(&s))
                .is_some_and(|s| s != 'S' && s != 'D' && s != 'I')
        })
        .count();
    Some(awake)
}

/// Waits up to `limit` until every SQ thread of `pid` sleeps (or the
/// process is gone); `false` if some still ran at the limit.
pub fn wait_asleep(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    let mut calm = 0;
    loop {
        match awake_sq_threads(pid) {
            None => return true,
            Some(0) => calm += 1,
            Some(_) => calm = 0,
        }
        if calm >= CALM_READS {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(READ_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{opcode, IoUring};

    #[test]
    fn reads_the_state_after_the_command_name() {
        assert_eq!(state_of("42 (iou-sqp-41) S 1 2 3"), Some('S'));
        assert_eq!(state_of("42 (a) b (c)) R 1 2 3"), Some('R'));
        assert_eq!(state_of("garbage"), None);
    }

    #[test]
    fn an_sq_thread_is_awake_in_its_idle_time_and_asleep_after() {
        // Idle time 300 ms: spinning right after a submission, asleep
        // well before the 5 s limit.
        let mut ring: IoUring = IoUring::builder()
            .setup_sqpoll(300)
            .build(4)
            .expect("an SQPOLL ring");
        let nop = opcode::Nop::new().build().user_data(7);
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&nop).expect("an SQ slot") };
        ring.submit_and_wait(1).expect("the NOP completes");
        assert!(
            !wait_asleep(std::process::id(), Duration::from_millis(100)),
            "the SQ thread sleeps within 100 ms of a submission, idle 300 ms"
        );
        assert!(wait_asleep(std::process::id(), Duration::from_secs(5)));
        drop(ring);
        assert!(wait_asleep(u32::MAX, Duration::ZERO), "no such process");
    }
}
