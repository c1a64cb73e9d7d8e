//! The device's worker thread: an event loop over the control queue's
//! eventfd, every doorbell ring's eventfd and retired rings' teardown
//! sentinels (the stop eventfd is the [`EventLoop`]'s).

use std::io;
use std::os::fd::AsRawFd;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::executor::Executor;
use super::queue::{answer_deferred, process_queue};
use crate::virtio::worker::{EventLoop, Wake, Worker};
use crate::virtio::{ActivateError, VirtioInterrupt};

const TOKEN_CONTROL: u64 = u64::MAX - 1;
/// Ring ids below 2^32 are doorbell tokens; this bit marks a retired
/// ring's teardown sentinel.
const TOKEN_TEARDOWN: u64 = 1 << 32;

/// Starts the worker thread over `exec`, pinned to `cpu` if any (it submits
/// for doorbell rings: it belongs with the SQ threads, see
/// `PvUringConfig::sq_cpu`).
pub(super) fn spawn(
    exec: Executor,
    mem: GuestMemoryMmap,
    queue: Queue,
    queue_event: EventFd,
    interrupt: VirtioInterrupt,
    cpu: Option<u32>,
) -> Result<Worker, ActivateError> {
    Worker::spawn("pv-uring".into(), move |stop| {
        crate::privileges::restrict_submitting_thread("pv-uring worker", true);
        if let Some(cpu) = cpu {
            if let Err(e) = crate::affinity::pin_current_thread(&[cpu as usize]) {
                log::warn!("pv-uring: worker stays unpinned: {e}");
            }
        }
        worker_loop(exec, mem, queue, queue_event, interrupt, stop)
    })
}

fn worker_loop(
    mut exec: Executor,
    mem: GuestMemoryMmap,
    mut queue: Queue,
    queue_event: EventFd,
    interrupt: VirtioInterrupt,
    stop: EventFd,
) {
    let result = (|| -> io::Result<()> {
        let mut events = EventLoop::new(&stop)?;
        events.add(queue_event.as_raw_fd(), TOKEN_CONTROL, EventSet::IN)?;
        let serve = |events: &EventLoop, exec: &mut Executor, queue: &mut Queue| {
            if process_queue(queue, exec, &mem) {
                interrupt.signal_used_queue();
            }
            watch_new_fds(events, exec)
        };
        serve(&events, &mut exec, &mut queue)?;
        let mut ready = Vec::new();
        // Wake up for the earliest DESTROY timeout, if any.
        while events.wait(exec.next_deadline(), &mut ready)? == Wake::Ready {
            // A DESTROY timed out (even if doorbells keep the loop busy).
            let mut reap = ready.is_empty()
                || exec
                    .next_deadline()
                    .is_some_and(|d| d <= std::time::Instant::now());
            for &token in &ready {
                match token {
                    TOKEN_CONTROL => {
                        let _ = queue_event.read();
                        serve(&events, &mut exec, &mut queue)?;
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
        Ok(())
    })();
    if let Err(e) = result {
        log::error!("pv-uring: worker stopped: {e}");
    }
    // Dropping the executor destroys every ring and table entry, and waits
    // for the host kernel to let go of the rings. This thread submitted
    // their requests: it must stay alive and able to run io_uring task work
    // while it waits (it does: the wait is an interruptible poll).
}

/// New rings' doorbells join the loop (a closed eventfd leaves it by itself
/// when its ring is destroyed), and so do retired rings' sentinels (POLLERR
/// needs no event bit; the fd leaves when reap frees the slot).
fn watch_new_fds(events: &EventLoop, exec: &mut Executor) -> io::Result<()> {
    for id in exec.take_created() {
        if let Some(fd) = exec.doorbell_fd(id) {
            events.add(fd, u64::from(id), EventSet::IN)?;
        }
    }
    for (id, fd) in exec.take_retired() {
        events.add(fd, TOKEN_TEARDOWN | u64::from(id), EventSet::empty())?;
    }
    Ok(())
}
