//! `/dev/vuring`: the device (INFO, the doorbell page) and its rings.

use crate::abi::*;
use crate::error::{Errno, Error, Result};
use crate::extent::{self, FixedBuf, FixedPiece};
use crate::queue::{Cqe, Queues};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Path of the guest driver's misc device.
pub const DEFAULT_PATH: &str = "/dev/vuring";

/// `ioctl(fd, req, arg)`, -1 mapped to the errno.
///
/// # Safety
/// `arg` must be what the driver reads/writes for `req` (or 0 for `_IO`).
unsafe fn ioctl(fd: RawFd, req: u32, arg: usize, op: &'static str) -> Result<i32> {
    let r = libc::ioctl(fd, req as libc::Ioctl, arg);
    if r < 0 {
        Err(Error::last(op))
    } else {
        Ok(r)
    }
}

/// A shared mapping, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain mapping owned by this value; the raw pointer is only
// dereferenced through volatile/atomic accesses by its owners.
unsafe impl Send for Map {}
// SAFETY: as above; the doorbell is written with single volatile stores.
unsafe impl Sync for Map {}

impl Map {
    fn new(fd: RawFd, len: usize, off: u64, prot: i32, op: &'static str) -> Result<Self> {
        // SAFETY: a fresh shared mapping of the driver's memory at a
        // kernel-chosen address; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last(op));
        }
        Ok(Map { ptr: p.cast(), len })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; nothing refers to it any
        // more (the owners hold the Map until they are dropped).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The mapped doorbell page, shared by the device and its rings.
struct Doorbell(Map);

impl Doorbell {
    fn ring(&self, id: u32) {
        // SAFETY: offset 0 of the 4 KiB doorbell page, mapped writable for
        // the life of self; one 32-bit volatile store (an MMIO write the
        // host turns into io_uring_enter), no system call.
        unsafe { (self.0.ptr as *mut u32).write_volatile(id.to_le()) };
    }
}

/// An open `/dev/vuring`: the device limits and the doorbell page.
pub struct Device {
    fd: OwnedFd,
    info: VuringInfo,
    doorbell: Arc<Doorbell>,
    path: CString,
}

fn open_dev(path: &CString) -> Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated path; plain flags.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::last("open /dev/vuring"));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Device {
    /// Opens `/dev/vuring`, reads INFO and maps the doorbell page.
    pub fn open() -> Result<Self> {
        Self::open_path(DEFAULT_PATH)
    }

    /// As [`Device::open`] for another device node.
    pub fn open_path(path: &str) -> Result<Self> {
        let path = CString::new(path).map_err(|_| Error::Invalid("path with NUL".into()))?;
        let fd = open_dev(&path)?;
        let mut info = VuringInfo::default();
        // SAFETY: VURING_IOC_INFO writes one struct vuring_info.
        unsafe {
            ioctl(
                fd.as_raw_fd(),
                VURING_IOC_INFO,
                &mut info as *mut VuringInfo as usize,
                "VURING_IOC_INFO",
            )
        }?;
        let map = Map::new(
            fd.as_raw_fd(),
            DOORBELL_LEN,
            VURING_MMAP_DOORBELL,
            libc::PROT_READ | libc::PROT_WRITE,
            "mmap doorbell",
        )
        .or_else(|_| {
            Map::new(
                fd.as_raw_fd(),
                DOORBELL_LEN,
                VURING_MMAP_DOORBELL,
                libc::PROT_WRITE,
                "mmap doorbell",
            )
        })?;
        Ok(Device {
            fd,
            info,
            doorbell: Arc::new(Doorbell(map)),
            path,
        })
    }

    /// The device's limits and features.
    pub fn info(&self) -> &VuringInfo {
        &self.info
    }

    /// The device fd (no ring on it).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Writes `id` to the doorbell (no system call). The host ignores ids
    /// of rings that do not exist.
    pub fn ring_doorbell(&self, id: u32) {
        self.doorbell.ring(id)
    }

    /// Removes host table entry `id` (VURING_IOC_UNPUBLISH on the device fd).
    pub fn unpublish(&self, id: u32) -> Result<()> {
        unpublish_on(self.fd.as_raw_fd(), id)
    }
}

fn unpublish_on(fd: RawFd, id: u32) -> Result<()> {
    let v = id;
    // SAFETY: _IOW(u32): the driver reads one u32.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_UNPUBLISH,
            &v as *const u32 as usize,
            "VURING_IOC_UNPUBLISH",
        )
    }
    .map(drop)
}

/// Where CLONE takes buffers from.
#[derive(Clone, Copy)]
pub enum CloneSrc<'a> {
    /// Another ring of this process.
    Ring(&'a PvRing),
    /// A host table id (from [`PvRing::publish`]); sets VURING_CLONE_SRC_TABLE.
    Table(u32),
    /// The destination ring itself (clone into self, with DST_REPLACE).
    This,
    /// A raw `src` value without SRC_TABLE (for error tests: bad fds).
    RawFd(u32),
}

/// How [`PvRing::wait_with`] waits.
#[derive(Debug, Clone, Copy)]
pub struct WaitOpts {
    /// Busy-poll the CQ (no system call) this long before falling back.
    pub spin: Duration,
    /// After spinning: poll(2) the ring fd (POLLIN when the CQ is not
    /// empty, woken by the completion interrupt); else sched_yield(2).
    pub poll: bool,
    /// Give up after this long (`None`: never).
    pub timeout: Option<Duration>,
}

impl Default for WaitOpts {
    fn default() -> Self {
        WaitOpts {
            spin: Duration::from_millis(200),
            poll: true,
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// One ring of the device: its own /dev/vuring fd, its mapped slot.
pub struct PvRing {
    // Field order: the queues point into `slot`, which must be unmapped
    // before the fd (the ring) is closed.
    q: Queues,
    slot: Map,
    fd: OwnedFd,
    id: u32,
    slot_offset: u64,
    params: IoUringParams,
    doorbell: Arc<Doorbell>,
    extents: Vec<Extent>,
    max_buffers: u32,
}

impl PvRing {
    /// Creates a ring of `entries` SQ entries (`flags`: [`VURING_RING_SQPOLL`])
    /// on a fresh fd and maps its slot.
    pub fn new(dev: &Device, entries: u32, flags: u32) -> Result<Self> {
        let fd = open_dev(&dev.path)?;
        let mut c = VuringCreate {
            entries,
            flags,
            ..Default::default()
        };
        // SAFETY: VURING_IOC_CREATE reads and writes one struct vuring_create.
        unsafe {
            ioctl(
                fd.as_raw_fd(),
                VURING_IOC_CREATE,
                &mut c as *mut VuringCreate as usize,
                "VURING_IOC_CREATE",
            )
        }?;
        let slot_len = dev.info.slot_size as usize;
        if slot_len < SQES_OFFSET {
            return Err(Error::Layout(format!(
                "slot_size {slot_len:#x} below 1 MiB"
            )));
        }
        crate::queue::validate(&c.params, slot_len)?;
        let slot = Map::new(
            fd.as_raw_fd(),
            slot_len,
            VURING_MMAP_RING,
            libc::PROT_READ | libc::PROT_WRITE,
            "mmap ring slot",
        )?;
        // SAFETY: `slot` maps slot_len bytes (page aligned) and is owned by
        // the returned PvRing next to `q`, dropped after it.
        let q = unsafe { Queues::new(slot.ptr, slot_len, &c.params) }?;
        Ok(PvRing {
            q,
            slot,
            fd,
            id: c.ring_id,
            slot_offset: c.slot_offset,
            params: c.params,
            doorbell: dev.doorbell.clone(),
            extents: Vec::new(),
            max_buffers: dev.info.max_buffers,
        })
    }

    /// The device's ring id (what the doorbell takes).
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The ring's fd (a CLONE source for other rings).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// Offset of the slot in the ring area.
    pub fn slot_offset(&self) -> u64 {
        self.slot_offset
    }
    /// The host ring's io_uring_params.
    pub fn params(&self) -> &IoUringParams {
        &self.params
    }
    /// Base of the mapped slot.
    pub fn slot_ptr(&self) -> *mut u8 {
        self.slot.ptr
    }
    /// Whether the host ring polls the SQ (IORING_SETUP_SQPOLL).
    pub fn is_sqpoll(&self) -> bool {
        self.q.is_sqpoll()
    }
    pub fn sq_entries(&self) -> u32 {
        self.q.sq_entries()
    }
    pub fn cq_entries(&self) -> u32 {
        self.q.cq_entries()
    }
    /// Free SQ entries.
    pub fn sq_space(&self) -> u32 {
        self.q.sq_space()
    }
    /// The SQ flags word of the ring.
    pub fn sq_flags(&self) -> u32 {
        self.q.sq_flags()
    }
    /// Turns the ring's completion interrupt on or off: `false` sets
    /// `IORING_CQ_EVENTFD_DISABLED` in the shared CQ flags word, so the
    /// host kernel does not signal the eventfd that raises the interrupt.
    /// A program that busy-polls the CQ needs none, and each one costs
    /// the vCPU an interrupt entry, handler and return (on nested PVM
    /// about 200 us). `poll()` on the ring fd sleeps until that interrupt,
    /// so with it off a [`PvRing::wait`] that stops spinning only sees
    /// completions at its 10 ms poll timeouts: turn it back on before
    /// waiting in the kernel. New rings start with it on.
    pub fn set_cq_eventfd(&self, enabled: bool) {
        self.q.set_cq_eventfd(enabled)
    }
    /// Whether completions raise the interrupt (see [`PvRing::set_cq_eventfd`]).
    pub fn cq_eventfd_enabled(&self) -> bool {
        self.q.cq_eventfd_enabled()
    }
    /// SQEs the host kernel dropped (bad SQ array index).
    pub fn sq_dropped(&self) -> u32 {
        self.q.sq_dropped()
    }
    /// The ring's state for diagnostics: id, SQ/CQ indices in shared
    /// memory, flags, dropped and overflow counters.
    pub fn debug_state(&self) -> String {
        let (sh, st, lt, ch, ct) = self.q.indices();
        format!(
            "ring {} sq head {sh} tail {st} (local {lt}) cq head {ch} tail {ct} sq flags {:#x} dropped {} overflow {}",
            self.id,
            self.q.sq_flags(),
            self.q.sq_dropped(),
            self.q.cq_overflow()
        )
    }

    /// The ring indices in shared memory: (SQ head, SQ tail, CQ head, CQ
    /// tail). A fresh ring has all four 0.
    pub fn ring_indices(&self) -> (u32, u32, u32, u32) {
        let (sh, st, _, ch, ct) = self.q.indices();
        (sh, st, ch, ct)
    }

    /// CQE slot `i` (masked) as it is in shared memory now, not consumed
    /// (diagnostics).
    pub fn peek_cqe(&self, i: u32) -> Cqe {
        self.q.peek_cqe(i)
    }

    /// CQ overflow counter.
    pub fn cq_overflow(&self) -> u32 {
        self.q.cq_overflow()
    }

    /// Queues one SQE (not yet visible to the host: see [`PvRing::submit`]).
    /// Refuses SQEs without IOSQE_FIXED_FILE (use `types::Fixed`, or
    /// `.flags(Flags::FIXED_FILE)` for NOP/FSYNC).
    ///
    /// [`Error::SqFull`] can be transient: the host kernel may post the
    /// CQEs of a submission before it publishes the SQ head, so a caller
    /// that refills on completions should retry when [`PvRing::sq_space`]
    /// grows rather than treat it as fatal.
    ///
    /// # Safety
    /// Buffers the SQE makes the host read or write (through a registered
    /// buffer) must stay valid and not be otherwise accessed until its
    /// completion is reaped, as with the `io-uring` crate.
    pub unsafe fn push(&mut self, sqe: &io_uring::squeue::Entry) -> Result<()> {
        let b = sqe_bytes(sqe);
        if b[1] & IOSQE_FIXED_FILE == 0 {
            return Err(Error::NotFixedFile);
        }
        self.q.push_bytes(&b, None)
    }

    /// Queues a raw 64-byte SQE, unchecked, with SQ array entry
    /// `array_index` (`None`: the slot itself). For hostile-request tests.
    ///
    /// # Safety
    /// As [`PvRing::push`].
    pub unsafe fn push_raw(
        &mut self,
        sqe: &[u8; SQE_BYTES],
        array_index: Option<u32>,
    ) -> Result<()> {
        self.q.push_bytes(sqe, array_index)
    }

    /// Publishes the SQ tail (release store) and rings the doorbell with
    /// this ring's id: always when entries were added (an SQPOLL ring only
    /// when the host poller set IORING_SQ_NEED_WAKEUP). No system call.
    /// Returns the number of SQEs made visible.
    pub fn submit(&mut self) -> usize {
        let (n, ring) = self.q.flush();
        if ring {
            self.doorbell.ring(self.id);
        }
        n as usize
    }

    /// Rings this ring's doorbell unconditionally.
    pub fn ring_doorbell(&self) {
        self.doorbell.ring(self.id);
    }

    /// CQEs ready to reap.
    pub fn cq_ready(&self) -> usize {
        self.q.cq_ready() as usize
    }

    /// The completion queue: an iterator reaping CQEs (acquire-loads the
    /// tail, release-stores the head per entry).
    pub fn completion(&mut self) -> Completion<'_> {
        Completion { q: &mut self.q }
    }

    /// Busy-polls the CQ until at least `n` CQEs are ready (default
    /// [`WaitOpts`]); returns how many are ready.
    pub fn wait(&mut self, n: usize) -> Result<usize> {
        self.wait_with(n, &WaitOpts::default())
    }

    /// As [`PvRing::wait`] with explicit options.
    pub fn wait_with(&mut self, n: usize, o: &WaitOpts) -> Result<usize> {
        let n = n.min(self.q.cq_entries() as usize);
        let mut start: Option<Instant> = None;
        let mut spins: u32 = 0;
        loop {
            let ready = self.q.cq_ready() as usize;
            if ready >= n {
                return Ok(ready);
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(1024) {
                std::hint::spin_loop();
                continue;
            }
            // Rarely look at the clock (vDSO; no system call with a TSC
            // or pvclock clocksource).
            let t0 = *start.get_or_insert_with(Instant::now);
            let el = t0.elapsed();
            if let Some(t) = o.timeout {
                if el >= t {
                    return Err(Error::Timeout {
                        want: n,
                        have: ready,
                    });
                }
            }
            if el < o.spin {
                continue;
            }
            if o.poll {
                let mut pfd = libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one live pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, 10) };
                if r < 0 && Errno::last().0 != libc::EINTR {
                    return Err(Error::last("poll"));
                }
            } else {
                // SAFETY: no arguments.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Submits what is queued and waits for `n` completions.
    pub fn submit_and_wait(&mut self, n: usize) -> Result<usize> {
        self.submit();
        self.wait(n)
    }

    /// The ring's registered buffers as the driver last reported them.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Registers `iovs` (REGISTER): the driver pins them and splits them
    /// into guest-physically contiguous extents, one buffer each. Returns
    /// the extents (index = buffer index).
    pub fn register_buffers(&mut self, iovs: &[libc::iovec]) -> Result<Vec<Extent>> {
        let cap = extent::max_extents_for(iovs).clamp(1, self.max_buffers.max(1) as usize);
        let mut out = vec![Extent::default(); cap];
        let mut r = VuringRegister {
            iovecs: iovs.as_ptr() as u64,
            nr_iovecs: iovs.len() as u32,
            max_extents: cap as u32,
            extents: out.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the driver reads nr_iovecs iovecs and writes at most
        // max_extents extents into `out`, both live for the call.
        unsafe {
            ioctl(
                self.fd(),
                VURING_IOC_REGISTER,
                &mut r as *mut VuringRegister as usize,
                "VURING_IOC_REGISTER",
            )
        }?;
        out.truncate((r.nr_extents as usize).min(cap));
        self.extents = out.clone();
        Ok(out)
    }

    /// Drops the ring's buffers (UNREGISTER).
    pub fn unregister_buffers(&mut self) -> Result<()> {
        // SAFETY: _IO: no argument.
        unsafe { ioctl(self.fd(), VURING_IOC_UNREGISTER, 0, "VURING_IOC_UNREGISTER") }?;
        self.extents.clear();
        Ok(())
    }

    /// Clones buffers into this ring (CLONE): `flags` may hold
    /// [`VURING_CLONE_DST_REPLACE`]; `src_off`, `dst_off`, `nr` as
    /// `struct io_uring_clone_buffers` (`nr` 0: the whole source table).
    /// Returns the destination's whole table. Unknown user addresses are
    /// filled from the source ring's extents where known.
    pub fn clone_buffers_from(
        &mut self,
        src: CloneSrc<'_>,
        flags: u32,
        src_off: u32,
        dst_off: u32,
        nr: u32,
    ) -> Result<Vec<Extent>> {
        let (s, f) = match src {
            CloneSrc::Ring(r) => (r.fd() as u32, flags),
            CloneSrc::Table(id) => (id, flags | VURING_CLONE_SRC_TABLE),
            CloneSrc::This => (self.fd() as u32, flags),
            CloneSrc::RawFd(fd) => (fd, flags),
        };
        let mut c = VuringClone {
            src: s,
            flags: f,
            src_off,
            dst_off,
            nr,
            ..Default::default()
        };
        let mut t = self.clone_raw(&mut c)?;
        if let CloneSrc::Ring(r) = src {
            extent::adopt_user_addrs(&mut t, r.extents());
        }
        let known = std::mem::take(&mut self.extents);
        extent::adopt_user_addrs(&mut t, &known);
        self.extents = t.clone();
        Ok(t)
    }

    /// CLONE with a caller-built argument (error tests set `resv`, odd
    /// flags); `max_extents`/`extents` are filled in here. Returns the
    /// destination table; does not update [`PvRing::extents`].
    pub fn clone_raw(&mut self, c: &mut VuringClone) -> Result<Vec<Extent>> {
        let cap = self.max_buffers.max(1) as usize;
        let mut out = vec![Extent::default(); cap];
        c.max_extents = cap as u32;
        c.extents = out.as_mut_ptr() as u64;
        // SAFETY: the driver reads the struct and writes at most
        // max_extents extents into `out`, live for the call.
        let r = unsafe {
            ioctl(
                self.fd(),
                VURING_IOC_CLONE,
                c as *mut VuringClone as usize,
                "VURING_IOC_CLONE",
            )
        };
        c.extents = 0;
        r?;
        out.truncate((c.nr_extents as usize).min(cap));
        Ok(out)
    }

    /// Puts a clone of this ring's buffers in the host table; returns its id.
    pub fn publish(&self) -> Result<u32> {
        let mut id = 0u32;
        // SAFETY: _IOR(u32): the driver writes one u32.
        unsafe {
            ioctl(
                self.fd(),
                VURING_IOC_PUBLISH,
                &mut id as *mut u32 as usize,
                "VURING_IOC_PUBLISH",
            )
        }?;
        Ok(id)
    }

    /// Removes host table entry `id` (rings that cloned from it keep their
    /// buffers).
    pub fn unpublish(&self, id: u32) -> Result<()> {
        unpublish_on(self.fd(), id)
    }

    /// Fills unknown user addresses of the extent table from `known`
    /// extents with the same host address (after a clone from a table).
    pub fn adopt_user_addrs(&mut self, known: &[Extent]) -> usize {
        extent::adopt_user_addrs(&mut self.extents, known)
    }

    /// `(ptr, len)` inside one registered buffer: its index and host address.
    pub fn translate(&self, ptr: *const u8, len: usize) -> Result<FixedBuf> {
        extent::translate(&self.extents, ptr as u64, len as u64)
    }

    /// `(ptr, len)` split at buffer boundaries.
    pub fn translate_split(&self, ptr: *const u8, len: usize) -> Result<Vec<FixedPiece>> {
        extent::split(&self.extents, ptr as u64, len as u64)
    }
}

/// The raw 64 bytes of an SQE built with the `io-uring` crate.
pub fn sqe_bytes(sqe: &io_uring::squeue::Entry) -> [u8; SQE_BYTES] {
    const _: () = assert!(std::mem::size_of::<io_uring::squeue::Entry>() == SQE_BYTES);
    let mut b = [0u8; SQE_BYTES];
    // SAFETY: squeue::Entry is a #[repr(C)] wrapper of the 64-byte
    // io_uring_sqe (size asserted above); plain bytes, no padding holes
    // the crate leaves uninitialised (it zero-initialises SQEs).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (sqe as *const io_uring::squeue::Entry).cast::<u8>(),
            b.as_mut_ptr(),
            SQE_BYTES,
        )
    };
    b
}

/// Reaps CQEs of a ring (see [`PvRing::completion`]).
pub struct Completion<'a> {
    q: &'a mut Queues,
}

impl Completion<'_> {
    /// CQEs ready now.
    pub fn len(&self) -> usize {
        self.q.cq_ready() as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for Completion<'_> {
    type Item = Cqe;
    fn next(&mut self) -> Option<Cqe> {
        self.q.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{opcode, squeue, types};

    #[test]
    fn sqe_bytes_layout() {
        let e = opcode::ReadFixed::new(types::Fixed(3), 0x7f00_0000_1000 as *mut u8, 4096, 7)
            .offset(0x2000)
            .build()
            .user_data(0xabcd);
        let b = sqe_bytes(&e);
        assert_eq!(b[0], opcode::ReadFixed::CODE);
        assert_eq!(b[1], IOSQE_FIXED_FILE);
        assert_eq!(i32::from_le_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 0x2000);
        assert_eq!(
            u64::from_le_bytes(b[16..24].try_into().unwrap()),
            0x7f00_0000_1000
        );
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 4096);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 0xabcd);
        assert_eq!(u16::from_le_bytes(b[40..42].try_into().unwrap()), 7);
        let n = opcode::Nop::new().build();
        assert_eq!(sqe_bytes(&n)[1], 0);
        let n = n.flags(squeue::Flags::FIXED_FILE);
        assert_eq!(sqe_bytes(&n)[1], IOSQE_FIXED_FILE);
    }

    #[test]
    fn open_missing_device_reports_errno() {
        match Device::open_path("/nonexistent/vuring") {
            Err(e) => assert_eq!(e.errno(), Some(libc::ENOENT)),
            Ok(_) => panic!("opened a missing device"),
        }
    }
}
