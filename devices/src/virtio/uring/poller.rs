//! The polled submitter: one VMM thread per polled ring (at most
//! `max_polled` per VM) that watches the ring's submission slot and runs a
//! submission pass as soon as the guest's `sq_tail` moves, so the guest
//! submits without a doorbell. After [`POLL_IDLE`] without work it sets
//! `PVU_SQ_NEED_WAKEUP` and sleeps on the ring's doorbell eventfd.
//!
//! It submits with `io_uring_enter` itself rather than feeding a host
//! SQPOLL ring: a host SQ thread would be a second spinning thread per
//! ring (the VMM must copy and check every SQE anyway), and on a 2-CPU host
//! with a polling vCPU that is one spinner too many. Completions of its
//! requests run as task work in this thread; the kernel interrupts the
//! spin (or the sleep) to run it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::RingCore;

/// How long a polled submitter spins without work before it sleeps (what
/// host SQPOLL rings use by default as `sq_thread_idle`, 1 s).
pub const POLL_IDLE: Duration = Duration::from_secs(1);

/// A running polled submitter; dropping it stops the thread.
pub struct Poller {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    handle: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts the submitter of ring `id`: it serves `core`, sleeps on
    /// `wake` (the ring's doorbell) and runs on host CPU `cpu` if given.
    pub fn spawn(
        id: u32,
        core: Arc<Mutex<RingCore>>,
        wake: Arc<EventFd>,
        cpu: Option<u32>,
        idle: Duration,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_thread, wake_thread) = (stop.clone(), wake.clone());
        let handle = std::thread::Builder::new()
            .name(format!("pv-uring-poll{id}"))
            .spawn(move || {
                crate::privileges::restrict_submitting_thread("pv-uring poller");
                if let Some(cpu) = cpu {
                    if let Err(e) = crate::affinity::pin_current_thread(&[cpu as usize]) {
                        log::warn!("pv-uring: ring {id}: poller stays unpinned: {e}");
                    }
                }
                poll_loop(&core, &wake_thread, &stop_thread, idle);
            })?;
        Ok(Self {
            stop,
            wake,
            handle: Some(handle),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("pv-uring: a poller panicked");
            }
        }
    }
}

fn lock(core: &Mutex<RingCore>) -> std::sync::MutexGuard<'_, RingCore> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

fn poll_loop(core: &Mutex<RingCore>, wake: &EventFd, stop: &AtomicBool, idle: Duration) {
    let mut last_work = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if lock(core).pass().consumed > 0 {
            last_work = Instant::now();
            continue;
        }
        if last_work.elapsed() < idle {
            std::hint::spin_loop();
            continue;
        }
        // Sleep: announce it, then look once more (the guest checks the
        // flag after publishing its tail; one of us sees the other).
        lock(core).sub.set_need_wakeup(true);
        if !lock(core).sub.has_work() && !stop.load(Ordering::Acquire) {
            // EINTR (task work of our requests) or a doorbell: either way
            // look again.
            let _ = wait_readable(wake);
            let _ = wake.read();
        }
        lock(core).sub.set_need_wakeup(false);
        last_work = Instant::now();
    }
}

/// Blocks until `evt` is readable (or a signal, such as io_uring task
/// work, interrupts the wait).
fn wait_readable(evt: &EventFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: evt.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
