//! The plumbing every device's worker thread shares: the thread itself
//! ([`Worker`]: spawned on activation, stopped and joined on reset or
//! drop), its event loop ([`EventLoop`]: epoll over the device's eventfds,
//! the stop eventfd watched for it, fds added at run time, an optional
//! deadline) and a descriptor chain read into plain [`Desc`]s.
//!
//! The loop is epoll itself rather than event-manager: event-manager keeps
//! its own table of registered fds, so an fd that a device closes while it
//! is watched (a destroyed pv ring's doorbell) would stay in that table and
//! its number, once reused, would be refused.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;
use std::time::Instant;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::ActivateError;

/// The token the stop eventfd has in every [`EventLoop`].
const TOKEN_STOP: u64 = u64::MAX;

/// One descriptor as the driver wrote it (nothing checked yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// `VIRTQ_DESC_F_WRITE`: the device writes it.
    pub write_only: bool,
}

/// The first `max` descriptors of `chain`.
pub fn chain_descs<M>(chain: DescriptorChain<M>, max: usize) -> Vec<Desc>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    chain
        .take(max)
        .map(|d| Desc {
            addr: d.addr().0,
            len: d.len(),
            write_only: d.is_write_only(),
        })
        .collect()
}

/// A device's worker thread. Dropping it stops the thread (its stop
/// eventfd is signalled) and waits for it.
pub struct Worker {
    name: String,
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Spawns thread `name` running `body(stop)`, where `stop` becomes
    /// readable when the worker is to end; an [`EventLoop`] made from it
    /// reports that.
    pub fn spawn<F>(name: String, body: F) -> Result<Self, ActivateError>
    where
        F: FnOnce(EventFd) + Send + 'static,
    {
        let io = |what, source| ActivateError::Io { what, source };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| io("eventfd", e))?;
        let stop_worker = stop.try_clone().map_err(|e| io("eventfd", e))?;
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || body(stop_worker))
            .map_err(|e| io("spawning the worker", e))?;
        Ok(Self {
            name,
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                log::error!("{}: worker panicked", self.name);
            }
        }
    }
}

/// What [`EventLoop::wait`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// The worker is to stop.
    Stop,
    /// The tokens of the ready fds (none: the deadline passed or a signal
    /// interrupted the wait).
    Ready,
}

/// An epoll loop over a worker's fds, each with a `u64` token; the stop
/// eventfd is watched from the start.
pub struct EventLoop {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl EventLoop {
    /// A loop that watches `stop`.
    pub fn new(stop: &EventFd) -> io::Result<Self> {
        let l = Self {
            epoll: Epoll::new()?,
            events: vec![EpollEvent::default(); 64],
        };
        l.ctl(stop.as_raw_fd(), TOKEN_STOP, EventSet::IN)?;
        Ok(l)
    }

    /// Watches `fd` for `events` (empty: only errors and hang-ups) under
    /// `token` (below `u64::MAX`). A watched fd leaves the loop by itself
    /// when it is closed.
    pub fn add(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        debug_assert_ne!(token, TOKEN_STOP);
        self.ctl(fd, token, events)
    }

    fn ctl(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }

    /// Waits until an fd is ready or `deadline` (if any) passes, and puts
    /// the ready tokens in `ready`. [`Wake::Stop`] once the stop eventfd
    /// was signalled.
    pub fn wait(&mut self, deadline: Option<Instant>, ready: &mut Vec<u64>) -> io::Result<Wake> {
        ready.clear();
        let timeout = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            // Rounded up: waking early would spin.
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        let n = match self.epoll.wait(timeout, &mut self.events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        for ev in &self.events[..n] {
            if ev.data() == TOKEN_STOP {
                return Ok(Wake::Stop);
            }
            ready.push(ev.data());
        }
        Ok(Wake::Ready)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn loop_reports_tokens_deadlines_and_stop() {
        let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut l = EventLoop::new(&stop).unwrap();
        l.add(a.as_raw_fd(), 7, EventSet::IN).unwrap();
        let mut ready = Vec::new();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(20);
        assert_eq!(l.wait(Some(deadline), &mut ready).unwrap(), Wake::Ready);
        assert!(ready.is_empty() && Instant::now() >= deadline);
        a.write(1).unwrap();
        assert_eq!(l.wait(None, &mut ready).unwrap(), Wake::Ready);
        assert_eq!(ready, [7]);
        stop.write(1).unwrap();
        assert_eq!(l.wait(None, &mut ready).unwrap(), Wake::Stop);
    }

    #[test]
    fn dropping_the_worker_stops_and_joins_it() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let w = Worker::spawn("test-worker".into(), move |stop| {
            let mut l = EventLoop::new(&stop).unwrap();
            let mut ready = Vec::new();
            while l.wait(None, &mut ready).unwrap() != Wake::Stop {}
            d.store(true, Ordering::SeqCst);
        })
        .unwrap();
        assert!(!done.load(Ordering::SeqCst));
        drop(w);
        assert!(done.load(Ordering::SeqCst));
    }
}
