//! The host side of virtio-blk: pops requests from the queues, parses them
//! ([`super::request`]), and runs their I/O on a host io_uring with the
//! guest's buffers used in place; completions write the status byte, fill
//! the used ring and signal the guest.
//!
//! Guest buffers: every data segment is translated with
//! `GuestMemoryBackend::get_slice`, which fails unless the whole range lies
//! inside one guest RAM region, so the host never reads or writes outside
//! guest RAM. Guest RAM stays mapped while any I/O is in flight: the engine
//! holds a clone of the memory map and [`Engine::drain`] waits for every
//! in-flight operation before the engine is dropped.
//!
//! O_DIRECT (`direct=on`): a request whose guest buffers are not all
//! 512-byte aligned in address and length goes through a bounce buffer (an
//! aligned host buffer, copied from the guest before a write and to the
//! guest after a read), so the guest never sees an error for alignment. The
//! host device is assumed to take 512-byte direct I/O; one that needs 4 KiB
//! fails such I/O with EINVAL, which the guest sees as an I/O error.

use std::alloc::{self, Layout};
use std::fs::File;
use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::request::{
    parse, parse_zero_segment, Desc, DeviceLimits, Request, RequestKind, ID_BYTES, SECTOR_SHIFT,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
};
use crate::virtio::{chain_descs, VirtioInterrupt};

/// Alignment that O_DIRECT needs of buffers, offsets and lengths.
pub const DIRECT_ALIGN: usize = 512;
/// Largest single read or write (an io_uring result is an i32).
const MAX_IO_BYTES: u64 = 1 << 30;

/// What the engine knows about the disk.
#[derive(Debug, Clone)]
pub struct DiskInfo {
    /// Request limits (capacity, read-only, discard/write-zeroes offered).
    pub limits: DeviceLimits,
    /// The file is open with O_DIRECT.
    pub direct: bool,
    /// FALLOC_FL_ZERO_RANGE works on the file (else write-zeroes punches).
    pub zero_range: bool,
    /// The largest discard / write-zeroes in sectors.
    pub max_zero_sectors: u32,
    /// The GET_ID answer.
    pub serial: [u8; ID_BYTES],
}

/// An aligned host buffer for misaligned O_DIRECT requests.
struct Bounce {
    ptr: *mut u8,
    layout: Layout,
}

impl Bounce {
    fn new(len: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(DIRECT_ALIGN), 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation of layout.size() bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One operation in flight on the host ring.
struct InFlight {
    queue: usize,
    head: u16,
    status_addr: u64,
    /// What a full success returns (bytes for read/write, 0 otherwise).
    expected: i64,
    /// Bytes the device writes into guest buffers on success (reads).
    written: u32,
    /// The iovecs the kernel reads; kept alive until completion.
    _iovecs: Vec<libc::iovec>,
    /// The bounce buffer and the request it stands for (copy-out on reads).
    bounce: Option<(Bounce, Request)>,
}

/// Per-engine counters (tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Requests completed with status OK.
    pub ok: u64,
    /// Requests completed with an error status.
    pub failed: u64,
    /// Requests that went through a bounce buffer.
    pub bounced: u64,
}

/// Serves the queues of one virtio-blk device.
pub struct Engine {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    file: File,
    ring: IoUring,
    disk: DiskInfo,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Queues that had more requests than free slots.
    stalled: Vec<bool>,
    /// Queues with new used entries since the last signal.
    to_signal: Vec<bool>,
    interrupt: VirtioInterrupt,
    /// Set by drain(): no new requests are taken.
    stopping: bool,
    /// Counters.
    pub stats: EngineStats,
}

impl Engine {
    /// An engine over `queues`, doing I/O on `file` through `ring`.
    pub fn new(
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        file: File,
        ring: IoUring,
        disk: DiskInfo,
        interrupt: VirtioInterrupt,
    ) -> Self {
        let capacity = ring.params().sq_entries() as usize;
        let n = queues.len();
        Self {
            mem,
            queues,
            file,
            ring,
            disk,
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
            stalled: vec![false; n],
            to_signal: vec![false; n],
            interrupt,
            stopping: false,
            stats: EngineStats::default(),
        }
    }

    /// How many operations are in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The host ring (for its eventfd registration).
    pub fn ring(&self) -> &IoUring {
        &self.ring
    }

    /// Handles a notification of queue `qi`: takes every available request.
    pub fn process_queue(&mut self, qi: usize) {
        let Some(q) = self.queues.get(qi) else {
            return;
        };
        if !q.ready() || self.stopping {
            return;
        }
        loop {
            if let Err(e) = self.queues[qi].disable_notification(&self.mem) {
                log::warn!("virtio-blk: queue {qi}: {e}");
                return;
            }
            while !self.free.is_empty() {
                let mem = self.mem.clone();
                let Some(chain) = self.queues[qi].pop_descriptor_chain(&mem) else {
                    break;
                };
                let head = chain.head_index();
                let descs = chain_descs(chain, usize::MAX);
                self.handle(qi, head, &descs);
            }
            if self.free.is_empty() {
                // Out of host slots: the rest waits for completions.
                self.stalled[qi] = true;
                break;
            }
            match self.queues[qi].enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    log::warn!("virtio-blk: queue {qi}: {e}");
                    break;
                }
            }
        }
        self.submit();
        self.signal();
    }

    fn handle(&mut self, qi: usize, head: u16, descs: &[Desc]) {
        let mem = &self.mem;
        let parsed = parse(
            descs,
            |addr| mem.read_obj::<[u8; 16]>(GuestAddress(addr)).ok(),
            &self.disk.limits,
        );
        let req = match parsed {
            Ok(req) => req,
            Err(rejected) => {
                log::debug!("virtio-blk: queue {qi} head {head}: {}", rejected.error);
                self.complete(qi, head, rejected.status_addr, rejected.error.status(), 0);
                return;
            }
        };
        match req.kind {
            RequestKind::Read | RequestKind::Write => self.submit_rw(qi, head, req),
            RequestKind::Flush => {
                let sqe = opcode::Fsync::new(types::Fd(self.file.as_raw_fd())).build();
                self.push(qi, head, req.status_addr, sqe, 0, 0, Vec::new(), None);
            }
            RequestKind::GetId => {
                let mut left = &self.disk.serial[..];
                let mut written = 0u32;
                for seg in &req.data {
                    let n = left.len().min(seg.len as usize);
                    if n == 0 {
                        break;
                    }
                    if self
                        .mem
                        .write_slice(&left[..n], GuestAddress(seg.addr))
                        .is_err()
                    {
                        self.complete(qi, head, Some(req.status_addr), VIRTIO_BLK_S_IOERR, 0);
                        return;
                    }
                    written += n as u32;
                    left = &left[n..];
                }
                self.complete(qi, head, Some(req.status_addr), VIRTIO_BLK_S_OK, written);
            }
            RequestKind::Discard | RequestKind::WriteZeroes => self.submit_zero(qi, head, req),
        }
    }

    fn submit_rw(&mut self, qi: usize, head: u16, req: Request) {
        let fail = |e: &mut Self, what: &str| {
            log::debug!("virtio-blk: queue {qi} head {head}: {what}");
            e.complete(qi, head, Some(req.status_addr), VIRTIO_BLK_S_IOERR, 0);
        };
        if req.data_len > MAX_IO_BYTES {
            return fail(self, "request larger than 1 GiB");
        }
        let mut iovecs = Vec::with_capacity(req.data.len());
        let mut aligned = true;
        for seg in &req.data {
            // get_slice refuses ranges that are not inside one RAM region.
            let Ok(slice) = self.mem.get_slice(GuestAddress(seg.addr), seg.len as usize) else {
                return fail(self, "data buffer outside guest RAM");
            };
            let ptr = slice.ptr_guard_mut().as_ptr();
            aligned &= (ptr as usize).is_multiple_of(DIRECT_ALIGN)
                && (seg.len as usize).is_multiple_of(DIRECT_ALIGN);
            iovecs.push(libc::iovec {
                iov_base: ptr.cast(),
                iov_len: seg.len as usize,
            });
        }
        let offset = req.sector << SECTOR_SHIFT;
        let is_read = req.kind == RequestKind::Read;
        let written = if is_read { req.data_len as u32 } else { 0 };
        let mut bounce = None;
        if self.disk.direct && !aligned {
            let Some(mut buf) = Bounce::new(req.data_len as usize) else {
                return fail(self, "no memory for a bounce buffer");
            };
            if !is_read {
                let mut at = 0usize;
                for seg in &req.data {
                    let dst = &mut buf.as_mut_slice()[at..at + seg.len as usize];
                    if self.mem.read_slice(dst, GuestAddress(seg.addr)).is_err() {
                        return fail(self, "data buffer outside guest RAM");
                    }
                    at += seg.len as usize;
                }
            }
            iovecs = vec![libc::iovec {
                iov_base: buf.ptr.cast(),
                iov_len: req.data_len as usize,
            }];
            self.stats.bounced += 1;
            bounce = Some(buf);
        }
        let fd = types::Fd(self.file.as_raw_fd());
        let sqe = if is_read {
            opcode::Readv::new(fd, iovecs.as_ptr(), iovecs.len() as u32)
                .offset(offset)
                .build()
        } else {
            opcode::Writev::new(fd, iovecs.as_ptr(), iovecs.len() as u32)
                .offset(offset)
                .build()
        };
        let status_addr = req.status_addr;
        let expected = req.data_len as i64;
        let bounce = bounce.map(|b| (b, req));
        self.push(
            qi,
            head,
            status_addr,
            sqe,
            expected,
            written,
            iovecs,
            bounce,
        );
    }

    fn submit_zero(&mut self, qi: usize, head: u16, req: Request) {
        let mut bytes = [0u8; 16];
        let mut at = 0;
        for seg in &req.data {
            let n = seg.len as usize;
            if self
                .mem
                .read_slice(&mut bytes[at..at + n], GuestAddress(seg.addr))
                .is_err()
            {
                self.complete(qi, head, Some(req.status_addr), VIRTIO_BLK_S_IOERR, 0);
                return;
            }
            at += n;
        }
        let range = match parse_zero_segment(
            bytes,
            req.kind,
            self.disk.limits.capacity,
            self.disk.max_zero_sectors,
        ) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("virtio-blk: queue {qi} head {head}: {e}");
                self.complete(qi, head, Some(req.status_addr), e.status(), 0);
                return;
            }
        };
        let mode = if range.unmap || !self.disk.zero_range {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        let sqe = opcode::Fallocate::new(types::Fd(self.file.as_raw_fd()), range.len)
            .offset(range.offset)
            .mode(mode)
            .build();
        self.push(qi, head, req.status_addr, sqe, 0, 0, Vec::new(), None);
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        qi: usize,
        head: u16,
        status_addr: u64,
        sqe: squeue::Entry,
        expected: i64,
        written: u32,
        iovecs: Vec<libc::iovec>,
        bounce: Option<(Bounce, Request)>,
    ) {
        let Some(slot) = self.free.pop() else {
            // process_queue() stops popping before slots run out.
            self.complete(qi, head, Some(status_addr), VIRTIO_BLK_S_IOERR, 0);
            return;
        };
        self.slots[slot] = Some(InFlight {
            queue: qi,
            head,
            status_addr,
            expected,
            written,
            _iovecs: iovecs,
            bounce,
        });
        let sqe = sqe.user_data(slot as u64);
        loop {
            // SAFETY: the iovecs and buffers the entry points to live in
            // self.slots[slot] (or are guest RAM, mapped for the engine's
            // life) until its completion is reaped; drain() waits for all.
            let pushed = unsafe { self.ring.submission().push(&sqe) };
            if pushed.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel.
            if let Err(e) = self.ring.submit() {
                log::warn!("virtio-blk: io_uring submit: {e}");
            }
        }
    }

    fn submit(&mut self) {
        if let Err(e) = self.ring.submit() {
            log::warn!("virtio-blk: io_uring submit: {e}");
        }
    }

    /// Completes a request: status byte, used entry with the bytes the
    /// device wrote (`written` plus the status byte).
    fn complete(
        &mut self,
        qi: usize,
        head: u16,
        status_addr: Option<u64>,
        status: u8,
        written: u32,
    ) {
        let mut len = 0;
        if let Some(addr) = status_addr {
            if self.mem.write_obj(status, GuestAddress(addr)).is_ok() {
                len = written.saturating_add(1);
            }
        }
        if status == VIRTIO_BLK_S_OK {
            self.stats.ok += 1;
        } else {
            self.stats.failed += 1;
        }
        if let Err(e) = self.queues[qi].add_used(&self.mem, head, len) {
            log::warn!("virtio-blk: queue {qi}: add_used: {e}");
        }
        self.to_signal[qi] = true;
    }

    /// Reaps every completion on the host ring; then retries stalled
    /// queues and signals the guest.
    pub fn reap(&mut self) {
        loop {
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            if cqes.is_empty() {
                break;
            }
            for (slot, res) in cqes {
                let Some(op) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
                    log::warn!("virtio-blk: completion for unknown slot {slot}");
                    continue;
                };
                self.free.push(slot as usize);
                let mut ok = i64::from(res) == op.expected;
                if !ok {
                    log::debug!(
                        "virtio-blk: host I/O returned {res}, expected {}",
                        op.expected
                    );
                }
                if let Some((mut buf, req)) = op.bounce {
                    if ok && req.kind == RequestKind::Read {
                        let mut at = 0usize;
                        for seg in &req.data {
                            let src = &buf.as_mut_slice()[at..at + seg.len as usize];
                            ok &= self.mem.write_slice(src, GuestAddress(seg.addr)).is_ok();
                            at += seg.len as usize;
                        }
                    }
                }
                let (status, written) = if ok {
                    (VIRTIO_BLK_S_OK, op.written)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                };
                self.complete(op.queue, op.head, Some(op.status_addr), status, written);
            }
        }
        for qi in 0..self.stalled.len() {
            if std::mem::take(&mut self.stalled[qi]) {
                self.process_queue(qi);
            }
        }
        self.signal();
    }

    fn signal(&mut self) {
        let mut needed = false;
        for qi in 0..self.queues.len() {
            if std::mem::take(&mut self.to_signal[qi]) {
                // Without EVENT_IDX this honours VRING_AVAIL_F_NO_INTERRUPT.
                needed |= self.queues[qi]
                    .needs_notification(&self.mem)
                    .unwrap_or(true);
            }
        }
        if needed {
            self.interrupt.signal_used_queue();
        }
    }

    /// Waits until no operation is in flight (completing each).
    pub fn wait_idle(&mut self) {
        while self.in_flight() > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    log::error!("virtio-blk: waiting for in-flight I/O: {e}");
                    // Leak the buffers rather than free them under the kernel.
                    std::mem::forget(std::mem::take(&mut self.slots));
                    self.free.clear();
                    return;
                }
            }
            self.reap();
        }
    }

    /// Stops taking requests and waits for every in-flight operation. After
    /// this no host I/O refers to guest memory.
    pub fn drain(&mut self) {
        self.stopping = true;
        self.wait_idle();
    }
}
