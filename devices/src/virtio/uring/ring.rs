//! Host io_uring instances behind the guest's rings, with raw
//! `io_uring_setup` / `io_uring_register` / `io_uring_enter` (the `io-uring`
//! crate does not cover `IORING_SETUP_NO_MMAP` or buffer cloning).
//!
//! A guest ring's host ring is created `NO_MMAP | R_DISABLED | SUBMIT_ALL`
//! with its SQ/CQ rings at the start of the ring's completion slot (mapped
//! read-only into the guest) and its SQEs in the ring's private slot (never
//! mapped into the guest); Linux 6.18 `io_allocate_scq_urings` takes the
//! rings region from `p->cq_off.user_addr` and the SQE array from
//! `p->sq_off.user_addr`. It gets the backends as fixed files and a
//! completion eventfd, then the restrictions of docs/pv-uring.md, and is
//! enabled. Only the VMM writes its SQEs ([`super::submit`]).
//!
//! Hidden rings (the host buffer table) are ordinary rings that are never
//! submitted to: they only hold registered buffers to clone from.
//!
//! Knowing when a guest ring is idle. Closing an io_uring fd only starts
//! its teardown: the host kernel (Linux 6.18 `io_ring_exit_work`) cancels
//! what it can, waits for every other request (a read already at the disk
//! cannot be cancelled), and only then frees the ring
//! (`io_ring_ctx_free`), unpinning its memory and dropping its fixed
//! files. `IORING_REGISTER_SYNC_CANCEL` is no substitute: with
//! `IORING_ASYNC_CANCEL_ANY` it returns after one pass without waiting for
//! requests that are running, and it never sees requests issued inline
//! (a `READ_FIXED` that returned `-EIOCBQUEUED`). So every guest ring gets
//! a [`Teardown`] sentinel: the read end of a pipe of ours, registered as
//! fixed file [`SENTINEL_FILE`], whose write end we keep. The ring holds
//! the only other reference to the read end, so the write end reports
//! `POLLERR` (no readers left) exactly when the kernel has freed the ring,
//! which is after the last of its requests was freed: from then on nothing
//! of the ring writes guest memory.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use uring_abi::wire::{AreaLayout, AREA_ALIGN, CQ_SLOT_SIZE, SQ_SLOT_SIZE};

/// Constants and structures of the io_uring uAPI (Linux 6.18) that the
/// installed headers may lack.
// The structures' fields are the kernel's, named as in
// include/uapi/linux/io_uring.h, which documents them.
#[allow(missing_docs)]
pub mod sys {
    /// `IORING_SETUP_R_DISABLED`.
    pub const IORING_SETUP_R_DISABLED: u32 = 1 << 6;
    /// `IORING_SETUP_SUBMIT_ALL`: a refused SQE does not stop the rest of
    /// the batch (Linux 5.18+).
    pub const IORING_SETUP_SUBMIT_ALL: u32 = 1 << 7;
    /// `IORING_SETUP_NO_MMAP`.
    pub const IORING_SETUP_NO_MMAP: u32 = 1 << 14;

    /// `IORING_REGISTER_BUFFERS`.
    pub const IORING_REGISTER_BUFFERS: u32 = 0;
    /// `IORING_UNREGISTER_BUFFERS`.
    pub const IORING_UNREGISTER_BUFFERS: u32 = 1;
    /// `IORING_REGISTER_FILES`.
    pub const IORING_REGISTER_FILES: u32 = 2;
    /// `IORING_REGISTER_EVENTFD`.
    pub const IORING_REGISTER_EVENTFD: u32 = 4;
    /// `IORING_REGISTER_RESTRICTIONS`.
    pub const IORING_REGISTER_RESTRICTIONS: u32 = 11;
    /// `IORING_REGISTER_ENABLE_RINGS`.
    pub const IORING_REGISTER_ENABLE_RINGS: u32 = 12;
    pub use uring_abi::uring::{
        CloneBuffers, IORING_REGISTER_CLONE_BUFFERS, IORING_REGISTER_DST_REPLACE,
    };

    /// `IORING_RESTRICTION_REGISTER_OP`.
    pub const IORING_RESTRICTION_REGISTER_OP: u16 = 0;
    /// `IORING_RESTRICTION_SQE_OP`.
    pub const IORING_RESTRICTION_SQE_OP: u16 = 1;
    /// `IORING_RESTRICTION_SQE_FLAGS_ALLOWED`.
    pub const IORING_RESTRICTION_SQE_FLAGS_ALLOWED: u16 = 2;
    /// `IORING_RESTRICTION_SQE_FLAGS_REQUIRED`.
    pub const IORING_RESTRICTION_SQE_FLAGS_REQUIRED: u16 = 3;

    pub use uring_abi::uring::{
        IORING_OP_FSYNC, IORING_OP_NOP, IORING_OP_READ, IORING_OP_READ_FIXED,
        IORING_OP_WRITE_FIXED, IOSQE_FIXED_FILE, IOSQE_IO_DRAIN, IOSQE_IO_HARDLINK, IOSQE_IO_LINK,
    };

    /// `struct io_sqring_offsets`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct SqringOffsets {
        pub head: u32,
        pub tail: u32,
        pub ring_mask: u32,
        pub ring_entries: u32,
        pub flags: u32,
        pub dropped: u32,
        pub array: u32,
        pub resv1: u32,
        pub user_addr: u64,
    }

    /// `struct io_cqring_offsets`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct CqringOffsets {
        pub head: u32,
        pub tail: u32,
        pub ring_mask: u32,
        pub ring_entries: u32,
        pub overflow: u32,
        pub cqes: u32,
        pub flags: u32,
        pub resv1: u32,
        pub user_addr: u64,
    }

    /// `struct io_uring_params` (120 bytes).
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct IoUringParams {
        pub sq_entries: u32,
        pub cq_entries: u32,
        pub flags: u32,
        pub sq_thread_cpu: u32,
        pub sq_thread_idle: u32,
        pub features: u32,
        pub wq_fd: u32,
        pub resv: [u32; 3],
        pub sq_off: SqringOffsets,
        pub cq_off: CqringOffsets,
    }

    /// `struct io_uring_restriction` (16 bytes).
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Restriction {
        pub opcode: u16,
        /// `register_op` / `sqe_op` / `sqe_flags`.
        pub arg: u8,
        pub resv: u8,
        pub resv2: [u32; 3],
    }

    const _: () = assert!(std::mem::size_of::<IoUringParams>() == 120);
    const _: () = assert!(std::mem::size_of::<Restriction>() == 16);

    impl IoUringParams {
        /// The bytes the guest receives.
        pub fn to_bytes(&self) -> [u8; 120] {
            // SAFETY: a repr(C) struct of integers without padding (checked
            // by the size assertion above), read as bytes.
            unsafe { std::mem::transmute_copy(self) }
        }
    }
}

use sys::*;

fn io_uring_setup(entries: u32, p: &mut IoUringParams) -> io::Result<OwnedFd> {
    // SAFETY: p is a valid io_uring_params the kernel reads and writes.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, p as *mut IoUringParams) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `io_uring_register(fd, op, arg, nr)`.
///
/// # Safety
/// `arg` must point to what `op` expects, `nr` entries long.
unsafe fn io_uring_register(
    fd: RawFd,
    op: u32,
    arg: *const libc::c_void,
    nr: u32,
) -> io::Result<i32> {
    // SAFETY: the caller guarantees that arg points to what op expects,
    // nr entries long.
    let rc = unsafe { libc::syscall(libc::SYS_io_uring_register, fd, op, arg, nr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as i32)
}

/// The errno of an I/O error (EIO when it has none).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Fixed-file index of a guest ring's teardown sentinel (after the
/// highest backend index; indices between the backends and it are empty).
/// Only a READ_FIXED may name it (it waits until the ring is destroyed).
pub const SENTINEL_FILE: u32 = uring_abi::wire::SENTINEL_FILE;

/// Bytes of a private slot: the host SQEs of the largest ring.
pub const PRIVATE_SLOT_SIZE: usize =
    uring_abi::wire::MAX_ENTRIES as usize * uring_abi::uring::SQE_LEN;

/// The ring area: one shared memfd (hugetlb when the host has the pages),
/// mapped populated in the VMM, in three parts:
/// - the submission area (guest read-write): each ring's guest SQ;
/// - the completion area (guest read-only): each ring's host SQ/CQ rings;
/// - the private area (never mapped into the guest): each ring's host SQEs.
///
/// The first two are the device's shared-memory region 0.
pub struct RingArea {
    ptr: *mut u8,
    len: usize,
    layout: AreaLayout,
    hugetlb: bool,
    _file: File,
}

// SAFETY: the mapping is plain shared memory owned by this struct; the
// guest and the host kernel access it concurrently by design, and the host
// reads and writes it only through atomics and byte copies (submit.rs).
unsafe impl Send for RingArea {}
// SAFETY: see Send.
unsafe impl Sync for RingArea {}

impl RingArea {
    /// Bytes of the memfd behind the area for `slots` rings (what it takes
    /// of the host's 2 MiB hugepages when it gets them): the guest's two
    /// parts and the private one.
    pub fn bytes_for(slots: u32) -> u64 {
        let layout = AreaLayout { max_rings: slots };
        let private = (u64::from(slots) * PRIVATE_SLOT_SIZE as u64).next_multiple_of(AREA_ALIGN);
        layout.len() + private
    }

    /// Creates the area for `slots` rings.
    pub fn new(slots: u32) -> io::Result<Self> {
        let layout = AreaLayout { max_rings: slots };
        if layout.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let len = Self::bytes_for(slots) as usize;
        match Self::create(layout, len, true) {
            Ok(area) => Ok(area),
            Err(e) => {
                log::warn!(
                    "pv-uring: no {} MiB of 2 MiB hugepages for the ring area ({e}); \
                     using ordinary shared memory",
                    len >> 20
                );
                Self::create(layout, len, false)
            }
        }
    }

    fn create(layout: AreaLayout, len: usize, hugetlb: bool) -> io::Result<Self> {
        let mut options = memfd::MemfdOptions::default().close_on_exec(true);
        if hugetlb {
            options = options.hugetlb(Some(memfd::HugetlbSize::Huge2MB));
        }
        let file = options
            .create("ringvisor-pv-uring-rings")
            .map_err(io::Error::other)?
            .into_file();
        file.set_len(len as u64)?;
        // SAFETY: a new shared mapping of a file we own; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
            layout,
            hugetlb,
            _file: file,
        })
    }

    /// Host address of the area (region 0 starts here).
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Where region 0 puts things.
    pub fn layout(&self) -> AreaLayout {
        self.layout
    }

    /// Bytes of region 0 (submission and completion areas); the private
    /// area follows it.
    pub fn guest_len(&self) -> u64 {
        self.layout.len()
    }

    /// Whether hugetlb pages back it.
    pub fn is_hugetlb(&self) -> bool {
        self.hugetlb
    }

    /// Host pointers to ring `id`'s submission, completion and private
    /// slots, if the slot exists.
    pub fn slots(&self, id: u32) -> Option<SlotPtrs> {
        let sq = self.layout.sq_slot(id)? as usize;
        let cq = self.layout.cq_slot(id)? as usize;
        let private = self.layout.len() as usize + id as usize * PRIVATE_SLOT_SIZE;
        debug_assert!(private + PRIVATE_SLOT_SIZE <= self.len);
        // SAFETY: every offset is inside the mapping (the layout and the
        // size computed in new()).
        Some(unsafe {
            SlotPtrs {
                sq: self.ptr.add(sq),
                cq: self.ptr.add(cq),
                private: self.ptr.add(private),
            }
        })
    }

    /// Zeroes ring `id`'s slots before a new ring uses them (the kernel
    /// does not initialize user-provided ring memory). The device reuses a
    /// slot only once the kernel has freed its previous ring
    /// ([`Teardown`]), so nothing but the guest writes it meanwhile.
    fn fresh_slots(&self, id: u32) -> io::Result<SlotPtrs> {
        let s = self
            .slots(id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        // SAFETY: each range is one slot inside the mapping; the host
        // keeps no references into it.
        unsafe {
            std::ptr::write_bytes(s.sq, 0, SQ_SLOT_SIZE as usize);
            std::ptr::write_bytes(s.cq, 0, CQ_SLOT_SIZE as usize);
            std::ptr::write_bytes(s.private, 0, PRIVATE_SLOT_SIZE);
        }
        Ok(s)
    }
}

impl Drop for RingArea {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what create() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Host pointers to one ring's three slots in the [`RingArea`].
#[derive(Debug, Clone, Copy)]
pub struct SlotPtrs {
    /// The submission slot (guest read-write).
    pub sq: *mut u8,
    /// The completion slot: the host ring's rings region.
    pub cq: *mut u8,
    /// The private slot: the host ring's SQEs.
    pub private: *mut u8,
}

/// One registered buffer as the host knows it.
#[derive(Debug, Clone)]
pub struct Buf {
    /// Host address (what the VMM puts in READ/WRITE_FIXED host SQEs; the
    /// guest never sees it).
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// The registration it came from, charged to the VM's budget of
    /// registered bytes until no table holds any of its buffers.
    pub charge: Option<Arc<Charge>>,
}

impl PartialEq for Buf {
    fn eq(&self, other: &Self) -> bool {
        (self.addr, self.len) == (other.addr, other.len)
    }
}

impl Eq for Buf {}

impl Buf {
    /// The buffer as the SQE policy sees it.
    pub fn policy(&self) -> uring_abi::policy::Buffer {
        uring_abi::policy::Buffer {
            host_addr: self.addr,
            len: self.len,
        }
    }
}

/// Bytes one REGISTER_BUFFERS took from the VM's budget of registered
/// bytes ([`Budget`]); given back when the last table entry that holds one
/// of its buffers (a ring's, a clone's, a published entry's) is dropped,
/// which is when the host kernel unpins its pages.
#[derive(Debug)]
pub struct Charge {
    bytes: u64,
    budget: Arc<Budget>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The VM's budget of registered bytes (`max_registered`).
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `bytes`, or `None` when that would pass the limit.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Option<Arc<Charge>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .ok()?;
        Some(Arc::new(Charge {
            bytes,
            budget: self.clone(),
        }))
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A host io_uring and the host's mirror of its buffer table.
pub struct HostRing {
    fd: OwnedFd,
    params: IoUringParams,
    /// `bufs[i]`: buffer index i (None: an empty entry).
    bufs: Vec<Option<Buf>>,
    /// Guest rings: the write end of the teardown sentinel (module docs).
    sentinel: Option<OwnedFd>,
}

/// A closed host ring that the kernel may still be tearing down: its
/// requests may still be running and writing their buffers until
/// [`Teardown::is_done`].
#[derive(Debug)]
pub struct Teardown {
    /// The sentinel pipe's write end.
    sentinel: OwnedFd,
}

impl Teardown {
    /// The fd to watch: it reports `POLLERR` (epoll reports it without
    /// being asked) once the kernel has freed the ring.
    pub fn fd(&self) -> RawFd {
        self.sentinel.as_raw_fd()
    }

    /// Whether the kernel has freed the ring: none of its requests is in
    /// flight any more, and none will be.
    pub fn is_done(&self) -> bool {
        self.poll(0)
    }

    /// Waits until [`Teardown::is_done`] or `deadline`; returns whether it
    /// is done. The wait is interruptible on purpose: the kernel's teardown
    /// may need this thread to run io_uring task work (completions of the
    /// requests it submitted), which a signal-like notification delivers
    /// by interrupting `poll`.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        loop {
            if self.is_done() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Round up, so that a sub-millisecond rest still sleeps.
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            if self.poll(ms) {
                return true;
            }
        }
    }

    /// `poll` for `POLLERR` for up to `ms` milliseconds (EINTR: not yet).
    fn poll(&self, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: self.sentinel.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }
}

/// A pipe whose both ends are non-blocking and close-on-exec:
/// (read end, write end).
fn sentinel_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What a guest ring may do (docs/pv-uring.md).
fn restrictions() -> Vec<Restriction> {
    let r = |opcode, arg| Restriction {
        opcode,
        arg,
        ..Restriction::default()
    };
    let mut v = Vec::new();
    for op in [
        IORING_REGISTER_BUFFERS,
        IORING_UNREGISTER_BUFFERS,
        IORING_REGISTER_FILES,
        IORING_REGISTER_EVENTFD,
        IORING_REGISTER_ENABLE_RINGS,
        IORING_REGISTER_CLONE_BUFFERS,
    ] {
        v.push(r(IORING_RESTRICTION_REGISTER_OP, op as u8));
    }
    for op in [
        IORING_OP_NOP,
        IORING_OP_READ_FIXED,
        IORING_OP_WRITE_FIXED,
        IORING_OP_FSYNC,
    ] {
        v.push(r(IORING_RESTRICTION_SQE_OP, op));
    }
    v.push(r(
        IORING_RESTRICTION_SQE_FLAGS_ALLOWED,
        IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_IO_DRAIN,
    ));
    v.push(r(IORING_RESTRICTION_SQE_FLAGS_REQUIRED, IOSQE_FIXED_FILE));
    v
}

impl HostRing {
    /// Creates the host ring of guest ring `id` in `area`: `entries` SQ
    /// entries, its rings in the completion slot and its SQEs in the
    /// private slot (both zeroed first), `backends` as fixed files 0..,
    /// completions signalled on `completion`, restricted and enabled.
    /// Returns the ring and its slots.
    pub fn create_guest(
        area: &RingArea,
        id: u32,
        entries: u32,
        backends: &[RawFd],
        completion: RawFd,
    ) -> io::Result<(Self, SlotPtrs)> {
        if backends.len() > SENTINEL_FILE as usize {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        if entries == 0 || entries > uring_abi::wire::MAX_ENTRIES {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let slots = area.fresh_slots(id)?;
        let mut p = IoUringParams {
            flags: IORING_SETUP_NO_MMAP | IORING_SETUP_R_DISABLED | IORING_SETUP_SUBMIT_ALL,
            ..IoUringParams::default()
        };
        p.cq_off.user_addr = slots.cq as u64;
        p.sq_off.user_addr = slots.private as u64;
        let (sentinel_rd, sentinel_wr) = sentinel_pipe()?;
        let fd = io_uring_setup(entries, &mut p)?;
        let ring = Self {
            fd,
            params: p,
            bufs: Vec::new(),
            sentinel: Some(sentinel_wr),
        };
        // The kernel sized the rings region from the entries: it must not
        // reach the next completion slot (it cannot for MAX_ENTRIES; this
        // catches a kernel that lays its rings out differently).
        if rings_end(&ring.params) > CQ_SLOT_SIZE as u64 {
            log::error!(
                "pv-uring: the host kernel's rings for {entries} entries need {} bytes, \
                 more than a completion slot",
                rings_end(&ring.params)
            );
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let raw = ring.fd.as_raw_fd();
        // Backends, empty entries (-1), the sentinel's read end.
        let mut files = backends.to_vec();
        files.resize(SENTINEL_FILE as usize, -1);
        files.push(sentinel_rd.as_raw_fd());
        // SAFETY: an array of files.len() fds.
        unsafe {
            io_uring_register(
                raw,
                IORING_REGISTER_FILES,
                files.as_ptr().cast(),
                files.len() as u32,
            )
        }?;
        // The ring now holds the only other reference to the read end.
        drop(sentinel_rd);
        // SAFETY: a pointer to one fd.
        unsafe {
            io_uring_register(
                raw,
                IORING_REGISTER_EVENTFD,
                (&completion as *const RawFd).cast(),
                1,
            )
        }?;
        let r = restrictions();
        // SAFETY: an array of r.len() restrictions.
        unsafe {
            io_uring_register(
                raw,
                IORING_REGISTER_RESTRICTIONS,
                r.as_ptr().cast(),
                r.len() as u32,
            )
        }?;
        // SAFETY: no argument.
        unsafe { io_uring_register(raw, IORING_REGISTER_ENABLE_RINGS, std::ptr::null(), 0) }?;
        Ok((ring, slots))
    }

    /// Creates a hidden ring (kernel-allocated, never submitted to) that
    /// only holds buffers.
    pub fn create_hidden() -> io::Result<Self> {
        let mut p = IoUringParams::default();
        let fd = io_uring_setup(1, &mut p)?;
        Ok(Self {
            fd,
            params: p,
            bufs: Vec::new(),
            sentinel: None,
        })
    }

    /// Closes the ring, returning what tells when the kernel has finished
    /// tearing it down (`None` for a hidden ring, which never has requests).
    /// Closing also stops an SQPOLL ring's thread from taking new SQEs: the
    /// kernel submits nothing for a ring that is going away.
    pub fn retire(mut self) -> Option<Teardown> {
        self.sentinel.take().map(|sentinel| Teardown { sentinel })
        // self.fd closes here.
    }

    /// The ring's params (the kernel's offsets; `user_addr`s are host
    /// addresses and never leave the VMM).
    pub fn params(&self) -> &IoUringParams {
        &self.params
    }

    /// The ring fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The host's copy of the buffer table.
    pub fn bufs(&self) -> &[Option<Buf>] {
        &self.bufs
    }

    /// Registers `bufs` (host memory the caller keeps mapped) as the
    /// ring's buffers.
    pub fn register_buffers(&mut self, bufs: &[Buf]) -> io::Result<()> {
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.addr as *mut libc::c_void,
                iov_len: b.len as usize,
            })
            .collect();
        // SAFETY: an array of iov.len() iovecs.
        unsafe {
            io_uring_register(
                self.fd(),
                IORING_REGISTER_BUFFERS,
                iov.as_ptr().cast(),
                iov.len() as u32,
            )
        }?;
        self.bufs = bufs.iter().cloned().map(Some).collect();
        Ok(())
    }

    /// Takes the host's copy of the table (the ring is being retired).
    pub fn take_bufs(&mut self) -> Vec<Option<Buf>> {
        std::mem::take(&mut self.bufs)
    }

    /// Drops the ring's buffers.
    pub fn unregister_buffers(&mut self) -> io::Result<()> {
        // SAFETY: no argument.
        unsafe { io_uring_register(self.fd(), IORING_UNREGISTER_BUFFERS, std::ptr::null(), 0) }?;
        self.bufs.clear();
        Ok(())
    }

    /// `IORING_REGISTER_CLONE_BUFFERS` from the ring `src_fd`, whose table
    /// the host knows as `src_bufs`. The caller has checked the request
    /// with [`check_clone`]; on success the host's copy follows.
    pub fn clone_buffers(
        &mut self,
        src_fd: RawFd,
        src_bufs: &[Option<Buf>],
        replace: bool,
        src_off: u32,
        dst_off: u32,
        nr: u32,
    ) -> io::Result<()> {
        let arg = CloneBuffers {
            src_fd: src_fd as u32,
            flags: if replace {
                IORING_REGISTER_DST_REPLACE
            } else {
                0
            },
            src_off,
            dst_off,
            nr,
            pad: [0; 3],
        };
        // SAFETY: a pointer to one io_uring_clone_buffers.
        unsafe {
            io_uring_register(
                self.fd(),
                IORING_REGISTER_CLONE_BUFFERS,
                (&arg as *const CloneBuffers).cast(),
                1,
            )
        }?;
        self.bufs = cloned_table(&self.bufs, src_bufs, src_off, dst_off, nr);
        Ok(())
    }

    /// `io_uring_enter(to_submit)`: submits the SQEs the VMM wrote. Returns
    /// how many the kernel consumed.
    pub fn enter(&self, to_submit: u32) -> io::Result<u32> {
        enter(self.fd(), to_submit, 0)
    }

    /// A duplicate of the ring fd, for a thread that must reach the ring
    /// without the ring's lock (a poller running its task work).
    pub fn dup_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

/// `IORING_ENTER_GETEVENTS`.
pub const IORING_ENTER_GETEVENTS: u32 = 1 << 0;

/// `io_uring_enter(fd, to_submit, 0, flags)` without a signal mask or
/// argument; returns how many SQEs the kernel consumed.
pub fn enter(fd: RawFd, to_submit: u32, flags: u32) -> io::Result<u32> {
    // SAFETY: io_uring_enter without a signal mask or argument.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            to_submit,
            0u32,
            flags,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as u32)
}

/// The end of the rings region the kernel laid out for `p` (SQ/CQ words,
/// the CQEs, the SQ array), from the offsets it returned.
pub fn rings_end(p: &IoUringParams) -> u64 {
    let cqes = u64::from(p.cq_off.cqes) + u64::from(p.cq_entries) * 16;
    let array = u64::from(p.sq_off.array) + u64::from(p.sq_entries) * 4;
    cqes.max(array)
}

/// Checks a clone as `io_clone_buffers` (Linux 6.18) would, in its order,
/// before the host asks the kernel, so that the host's copy of the
/// destination table can follow exactly: `Err(errno)` for a refusal. Also
/// bounds the result by `max_buffers`, and refuses (EINVAL) a
/// `DST_REPLACE` that would leave destination entries after the cloned
/// range or beyond the source's count: kernels differ there (the stable
/// fix "copy original dst nodes from after the cloned range").
pub fn check_clone(
    dst_count: usize,
    src_count: usize,
    replace: bool,
    src_off: u32,
    dst_off: u32,
    nr: u32,
    max_buffers: u32,
) -> Result<u32, i32> {
    if nr == 0 && (src_off != 0 || dst_off != 0) {
        return Err(libc::EINVAL);
    }
    if dst_count != 0 && !replace {
        return Err(libc::EBUSY);
    }
    let src_count = u32::try_from(src_count).map_err(|_| libc::EINVAL)?;
    let nr = if nr == 0 { src_count } else { nr };
    if nr > src_count {
        return Err(libc::EINVAL);
    }
    let end = nr.checked_add(dst_off).ok_or(libc::EOVERFLOW)?;
    if end > max_buffers {
        return Err(libc::EINVAL);
    }
    if src_count == 0 {
        return Err(libc::ENXIO);
    }
    let src_end = nr.checked_add(src_off).ok_or(libc::EOVERFLOW)?;
    if src_end > src_count {
        return Err(libc::EOVERFLOW);
    }
    let dst_count = u32::try_from(dst_count).map_err(|_| libc::EINVAL)?;
    if replace && (dst_count > end || dst_count > src_count) {
        return Err(libc::EINVAL);
    }
    Ok(nr)
}

/// The destination table after a clone that [`check_clone`] accepted
/// (`nr` 0: the whole source).
pub fn cloned_table(
    dst: &[Option<Buf>],
    src: &[Option<Buf>],
    src_off: u32,
    dst_off: u32,
    nr: u32,
) -> Vec<Option<Buf>> {
    let nr = if nr == 0 { src.len() } else { nr as usize };
    let (src_off, dst_off) = (src_off as usize, dst_off as usize);
    let len = (dst_off + nr).max(dst.len());
    let mut out = vec![None; len];
    for (i, slot) in out.iter_mut().enumerate().take(dst_off.min(dst.len())) {
        *slot = dst[i].clone();
    }
    for k in 0..nr {
        out[dst_off + k] = src.get(src_off + k).cloned().flatten();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(a: u64) -> Option<Buf> {
        Some(Buf {
            addr: a,
            len: 1,
            charge: None,
        })
    }

    #[test]
    fn the_area_size_holds_every_slot_in_whole_hugepages() {
        for slots in [1, 8, 66, 1024] {
            let bytes = RingArea::bytes_for(slots);
            assert_eq!(bytes % AREA_ALIGN, 0, "{slots} slots: {bytes}");
            let layout = AreaLayout { max_rings: slots };
            let last_private_end = layout.len() + u64::from(slots) * PRIVATE_SLOT_SIZE as u64;
            assert!(last_private_end <= bytes, "{slots} slots: {bytes}");
        }
        // The bench reserves hugepages from this figure: a 66-ring area
        // (its arena guests) is more than a page.
        assert!(RingArea::bytes_for(66) > AREA_ALIGN);
    }

    #[test]
    fn clone_checks_follow_the_kernel_order() {
        let m = 1024;
        assert_eq!(check_clone(0, 3, false, 0, 0, 0, m), Ok(3));
        assert_eq!(check_clone(0, 3, false, 1, 0, 0, m), Err(libc::EINVAL));
        assert_eq!(check_clone(2, 3, false, 0, 0, 0, m), Err(libc::EBUSY));
        assert_eq!(check_clone(0, 0, false, 0, 0, 0, m), Err(libc::ENXIO));
        assert_eq!(check_clone(0, 0, false, 0, 0, 1, m), Err(libc::EINVAL));
        assert_eq!(check_clone(0, 3, false, 0, 0, 4, m), Err(libc::EINVAL));
        assert_eq!(
            check_clone(0, 3, false, 0, u32::MAX, 2, m),
            Err(libc::EOVERFLOW)
        );
        assert_eq!(check_clone(0, 3, false, 0, 1023, 2, m), Err(libc::EINVAL));
        assert_eq!(
            check_clone(0, 3, false, u32::MAX, 0, 2, m),
            Err(libc::EOVERFLOW)
        );
        assert_eq!(check_clone(0, 3, false, 2, 0, 2, m), Err(libc::EOVERFLOW));
        assert_eq!(check_clone(0, 3, false, 1, 5, 2, m), Ok(2));
        // Replace: covering the destination to its end is fine.
        assert_eq!(check_clone(2, 3, true, 0, 0, 0, m), Ok(3));
        assert_eq!(check_clone(3, 3, true, 1, 1, 2, m), Ok(2));
        // A tail past the cloned range, or past the source, is refused.
        assert_eq!(check_clone(4, 3, true, 0, 0, 2, m), Err(libc::EINVAL));
        assert_eq!(check_clone(4, 2, true, 0, 2, 2, m), Err(libc::EINVAL));
    }

    #[test]
    fn cloned_tables() {
        let src = [b(10), b(11), b(12)];
        assert_eq!(cloned_table(&[], &src, 0, 0, 0), src.to_vec());
        assert_eq!(
            cloned_table(&[], &src, 1, 2, 2),
            vec![None, None, b(11), b(12)]
        );
        assert_eq!(
            cloned_table(&[b(1), b(2), b(3)], &src, 0, 1, 2),
            vec![b(1), b(10), b(11)]
        );
        assert_eq!(cloned_table(&[b(1)], &src, 0, 0, 0), src.to_vec());
    }

    #[test]
    fn restriction_list_matches_the_spec() {
        let r = restrictions();
        let ops: Vec<u8> = r
            .iter()
            .filter(|r| r.opcode == IORING_RESTRICTION_SQE_OP)
            .map(|r| r.arg)
            .collect();
        assert_eq!(ops, [0, 4, 5, 3]);
        let req = r
            .iter()
            .find(|r| r.opcode == IORING_RESTRICTION_SQE_FLAGS_REQUIRED)
            .unwrap();
        assert_eq!(req.arg, IOSQE_FIXED_FILE);
    }
}
