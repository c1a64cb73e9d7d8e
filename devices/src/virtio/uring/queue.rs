//! The control queue: control chains checked and read, their commands run
//! by the [`Executor`], and the responses written back, now or (for a
//! deferred DESTROY_RING) when the executor gives them.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use uring_abi::wire;

use super::control::{self, Response, RESP_LEN};
use super::executor::{Executor, Reply};
use super::MAX_BUFFERS;
use crate::virtio::{chain_descs, Desc};

/// Most request bytes read from a chain (header and the most extents).
const MAX_REQUEST: usize = control::REQ_LEN + control::EXTENT_LEN * MAX_BUFFERS as usize;
/// Most descriptors of a control chain.
const MAX_CHAIN: usize = wire::MAX_CHAIN as usize;

/// Writes `response` over the device-writable `descs`; returns the used
/// length (0 when a descriptor cannot be written).
pub(super) fn write_response(mem: &GuestMemoryMmap, descs: &[Desc], response: &Response) -> u32 {
    let bytes = response.to_bytes();
    let mut written = 0usize;
    for d in descs {
        if written == bytes.len() {
            break;
        }
        let n = (d.len as usize).min(bytes.len() - written);
        if mem
            .write_slice(&bytes[written..written + n], GuestAddress(d.addr))
            .is_err()
        {
            return 0;
        }
        written += n;
    }
    written as u32
}

/// The leading descriptors of `writable` that hold the first `len` bytes:
/// all a deferred answer needs to keep (a DESTROY's 16 bytes).
fn response_descs(writable: &[Desc], len: usize) -> Vec<Desc> {
    let mut covered = 0usize;
    let mut out = Vec::new();
    for d in writable {
        if covered >= len {
            break;
        }
        out.push(*d);
        covered += d.len as usize;
    }
    out
}

/// Serves one control chain (head index `head`): checks its shape, reads
/// the request, runs it, writes the response. Returns the used length
/// (0: malformed chain, no response), or `None` when the answer is
/// deferred: [`Executor::reap`] gives it later.
pub fn process_chain(
    exec: &mut Executor,
    mem: &GuestMemoryMmap,
    head: u16,
    descs: &[Desc],
) -> Option<u32> {
    let split = descs
        .iter()
        .position(|d| d.write_only)
        .unwrap_or(descs.len());
    let (readable, writable) = descs.split_at(split);
    if descs.len() > MAX_CHAIN {
        log::debug!("pv-uring: control chain of more than {MAX_CHAIN} descriptors");
        return Some(0);
    }
    if readable.is_empty() || writable.is_empty() || writable.iter().any(|d| !d.write_only) {
        log::debug!("pv-uring: control chain of the wrong shape");
        return Some(0);
    }
    for d in descs {
        if d.len == 0 || !mem.check_range(GuestAddress(d.addr), d.len as usize) {
            log::debug!("pv-uring: control descriptor outside guest RAM");
            return Some(0);
        }
    }
    let mut request = Vec::new();
    for d in readable {
        let take = (d.len as usize).min(MAX_REQUEST - request.len());
        if take == 0 {
            break;
        }
        let at = request.len();
        request.resize(at + take, 0);
        if mem
            .read_slice(&mut request[at..], GuestAddress(d.addr))
            .is_err()
        {
            return Some(0);
        }
    }
    let capacity: usize = writable.iter().map(|d| d.len as usize).sum();
    let response = match control::parse(&request, exec.limits()) {
        Ok(cmd) => {
            if capacity < cmd.response_len() {
                log::debug!("pv-uring: response buffer too small for {cmd:?}");
                return Some(0);
            }
            let reply = Reply {
                head,
                descs: response_descs(writable, RESP_LEN),
            };
            // None: deferred.
            exec.execute(&cmd, reply)?
        }
        Err(e) => match e.errno() {
            Some(errno) if capacity >= RESP_LEN => {
                log::debug!("pv-uring: refused request: {e}");
                Response::error(errno)
            }
            _ => {
                log::debug!("pv-uring: malformed control chain: {e}");
                return Some(0);
            }
        },
    };
    Some(write_response(mem, writable, &response))
}

/// Serves every available chain of the control queue; returns whether the
/// guest should be interrupted.
pub fn process_queue(queue: &mut Queue, exec: &mut Executor, mem: &GuestMemoryMmap) -> bool {
    let mut used = false;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            log::warn!("pv-uring: control queue: {e}");
            return used;
        }
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // One more than allowed, so that process_chain sees the excess.
            let descs = chain_descs(chain, MAX_CHAIN + 1);
            // A deferred answer is added to the used ring by the worker
            // when the executor gives it (answer_deferred).
            if let Some(len) = process_chain(exec, mem, head, &descs) {
                if let Err(e) = queue.add_used(mem, head, len) {
                    log::warn!("pv-uring: control queue: add_used: {e}");
                }
                used = true;
            }
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                log::warn!("pv-uring: control queue: {e}");
                break;
            }
        }
    }
    // needs_notification() also resets the queue's count of used entries.
    used && queue.needs_notification(mem).unwrap_or(true) && !interrupt_suppressed(queue, mem)
}

/// `VRING_AVAIL_F_NO_INTERRUPT` in the avail ring's flags, which
/// virtio-queue does not look at. The guest driver polls the control queue
/// and sets it: an interrupt nobody waits for costs the guest an emulated
/// interrupt entry and two register accesses on nested PVM, and unhandled
/// ones would make its kernel disable the line. A driver that clears the
/// flag checks the used ring afterwards (the virtio 1.x handshake), and
/// needs_notification() has fenced our used-index store before this load.
fn interrupt_suppressed(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
    mem.read_obj::<u16>(GuestAddress(queue.avail_ring()))
        .is_ok_and(|flags| u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT != 0)
}

/// Puts the chains the executor answered late ([`Executor::reap`]) on the
/// used ring; returns whether the guest should be interrupted.
pub fn answer_deferred(queue: &mut Queue, exec: &mut Executor, mem: &GuestMemoryMmap) -> bool {
    let answered = exec.reap();
    if answered.is_empty() {
        return false;
    }
    for (head, len) in answered {
        if let Err(e) = queue.add_used(mem, head, len) {
            log::warn!("pv-uring: control queue: add_used: {e}");
        }
    }
    queue.needs_notification(mem).unwrap_or(true)
}
