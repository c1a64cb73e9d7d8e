//! The device's worker thread: an epoll loop over the control queue's
//! eventfd, every doorbell ring's eventfd, retired rings' teardown
//! sentinels and a stop eventfd.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::Instant;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::executor::Executor;
use super::queue::{answer_deferred, process_queue};
use crate::virtio::VirtioInterrupt;

pub(super) struct Worker {
    pub(super) stop: EventFd,
    pub(super) handle: JoinHandle<()>,
}

const TOKEN_CONTROL: u64 = u64::MAX;
const TOKEN_STOP: u64 = u64::MAX - 1;
/// Ring ids below 2^32 are doorbell tokens; this bit marks a retired
/// ring's teardown sentinel.
const TOKEN_TEARDOWN: u64 = 1 << 32;

pub(super) fn worker_loop(
    mut exec: Executor,
    mem: GuestMemoryMmap,
    mut queue: Queue,
    queue_event: EventFd,
    interrupt: VirtioInterrupt,
    stop: EventFd,
) {
    let result = (|| -> io::Result<()> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            queue_event.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_CONTROL),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        let mut events = vec![EpollEvent::default(); 64];
        let serve = |exec: &mut Executor, queue: &mut Queue| -> io::Result<()> {
            if process_queue(queue, exec, &mem) {
                interrupt.signal_used_queue();
            }
            // New rings' doorbells join the loop (a closed eventfd leaves
            // it by itself when its ring is destroyed), and so do retired
            // rings' sentinels (POLLERR needs no event bit; the fd leaves
            // when reap frees the slot).
            for id in exec.take_created() {
                if let Some(fd) = exec.doorbell_fd(id) {
                    epoll.ctl(
                        ControlOperation::Add,
                        fd,
                        EpollEvent::new(EventSet::IN, u64::from(id)),
                    )?;
                }
            }
            for (id, fd) in exec.take_retired() {
                epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::empty(), TOKEN_TEARDOWN | u64::from(id)),
                )?;
            }
            Ok(())
        };
        serve(&mut exec, &mut queue)?;
        loop {
            // Wake up for the earliest DESTROY timeout, if any.
            let timeout = exec.next_deadline().map_or(-1, |d| {
                let left = d.saturating_duration_since(Instant::now());
                // Rounded up: waking early would spin.
                (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A DESTROY timed out (even if doorbells keep the loop busy).
            let mut reap = n == 0 || exec.next_deadline().is_some_and(|d| d <= Instant::now());
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return Ok(()),
                    TOKEN_CONTROL => {
                        let _ = queue_event.read();
                        serve(&mut exec, &mut queue)?;
                    }
                    t if t & TOKEN_TEARDOWN != 0 => reap = true,
                    id => {
                        exec.doorbell(id as u32);
                    }
                }
            }
            // Teardowns that finished, DESTROYs that timed out.
            if reap && answer_deferred(&mut queue, &mut exec, &mem) {
                interrupt.signal_used_queue();
            }
        }
    })();
    if let Err(e) = result {
        log::error!("pv-uring: worker stopped: {e}");
    }
    // Dropping the executor destroys every ring and table entry, and waits
    // for the host kernel to let go of the rings. This thread submitted
    // their requests: it must stay alive and able to run io_uring task work
    // while it waits (it does: the wait is an interruptible poll).
}
