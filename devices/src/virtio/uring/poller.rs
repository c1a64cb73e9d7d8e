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
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::submit::SlotWatch;
use super::RingCore;

/// How long a polled submitter spins without work before it sleeps (what
/// host SQPOLL rings use by default as `sq_thread_idle`, 1 s).
pub const POLL_IDLE: Duration = Duration::from_secs(1);

/// A running polled submitter. Dropping it (after [`Poller::request_stop`]
/// and one lock of the core, see `GuestRing::retire`) lets the thread go
/// without waiting for it: a thread that submitted io_uring requests
/// waits in its exit until they complete, which a hung backend could make
/// forever, and the device's worker must not wait with it.
pub struct Poller {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    _handle: JoinHandle<()>,
}

impl Poller {
    /// Starts the submitter of ring `id`: it serves `core` while it lives,
    /// watches the guest's words through `watch` (which keeps the ring area
    /// mapped while the thread runs), sleeps on `wake` (the ring's
    /// doorbell) and runs on host CPU `cpu` if given.
    pub fn spawn(
        id: u32,
        core: Weak<Mutex<RingCore>>,
        watch: SlotWatch,
        wake: Arc<EventFd>,
        cpu: Option<u32>,
        idle: Duration,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_thread, wake_thread) = (stop.clone(), wake.clone());
        let handle = std::thread::Builder::new()
            .name(thread_name(id))
            .spawn(move || {
                crate::privileges::restrict_submitting_thread("pv-uring poller", false);
                if let Some(cpu) = cpu {
                    if let Err(e) = crate::affinity::pin_current_thread(&[cpu as usize]) {
                        log::warn!("pv-uring: ring {id}: poller stays unpinned: {e}");
                    }
                }
                poll_loop(&core, &watch, &wake_thread, &stop_thread, idle);
            })?;
        Ok(Self {
            stop,
            wake,
            _handle: handle,
        })
    }

    /// Tells the thread to stop: it runs no pass that starts after the
    /// caller next takes the core's lock.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.request_stop();
    }
}

/// The poller's thread name: Linux keeps 15 bytes of it, so short enough
/// for every ring id (`pvu-poll255`).
pub fn thread_name(id: u32) -> String {
    format!("{THREAD_PREFIX}{id}")
}

/// The prefix of poller thread names.
pub const THREAD_PREFIX: &str = "pvu-poll";

fn lock(core: &Mutex<RingCore>) -> MutexGuard<'_, RingCore> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the core unless the ring is gone or stopping (`None`): the
/// stop flag is read under the core's lock, which `GuestRing::retire`
/// takes after setting it, so nothing runs here after that.
fn with_core<T>(
    core: &Weak<Mutex<RingCore>>,
    stop: &AtomicBool,
    f: impl FnOnce(&mut RingCore) -> T,
) -> Option<T> {
    let core = core.upgrade()?;
    let mut c = lock(&core);
    if stop.load(Ordering::Acquire) {
        return None;
    }
    Some(f(&mut c))
}

fn poll_loop(
    core: &Weak<Mutex<RingCore>>,
    watch: &SlotWatch,
    wake: &EventFd,
    stop: &AtomicBool,
    idle: Duration,
) {
    let mut last_work = Instant::now();
    // What the guest's words were at the last pass, and whether that pass
    // left work behind (host SQEs the kernel did not take).
    let mut seen = None;
    let mut retry = false;
    loop {
        // Spinning reads the guest's two words without the core's lock,
        // so control commands on the ring do not wait behind the spin.
        let words = watch.words();
        if seen == Some(words) && !retry {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if last_work.elapsed() < idle {
                std::hint::spin_loop();
                continue;
            }
        } else {
            let Some(pass) = with_core(core, stop, |c| c.pass()) else {
                return;
            };
            seen = Some(words);
            retry = pass.entered < pass.to_submit;
            if pass.consumed > 0 || retry {
                last_work = Instant::now();
            }
            continue;
        }
        // Idle: sleep. Announce it, then look once more (the guest checks
        // the flag after publishing its tail; one of us sees the other).
        let Some(nothing_to_do) = with_core(core, stop, |c| {
            c.sub.set_need_wakeup(true);
            !c.sub.has_work()
        }) else {
            return;
        };
        if nothing_to_do {
            // Until a doorbell, or until task work of our requests
            // interrupts the wait: either way, look again.
            let _ = wait_readable(wake);
            let _ = wake.read();
        }
        if with_core(core, stop, |c| c.sub.set_need_wakeup(false)).is_none() {
            return;
        }
        seen = None;
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
