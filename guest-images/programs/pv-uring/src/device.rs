//! `/dev/vuring`: the device (INFO, the doorbell page) and its rings.

use crate::error::{Errno, Error, Result};
use crate::extent::{self, FixedBuf, FixedPiece};
use crate::queue::{Cqe, Layout, Queues};
use io_uring::{opcode, squeue, types};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uring_abi::uring::{IOSQE_FIXED_FILE, SQE_LEN};
use uring_abi::vuring::{
    VuringClone, VuringCreate, VuringExtent as Extent, VuringInfo, VuringPublish, VuringRegister,
    VURING_CLONE_SRC_TABLE, VURING_IOC_CLONE, VURING_IOC_CREATE, VURING_IOC_INFO,
    VURING_IOC_PUBLISH, VURING_IOC_REGISTER, VURING_IOC_UNPUBLISH, VURING_IOC_UNREGISTER,
    VURING_MMAP_CQ, VURING_MMAP_DOORBELL, VURING_MMAP_SQ, VURING_RING_POLLED,
};
use uring_abi::wire::{ABI_VERSION, DOORBELL_LEN};

/// Path of the guest driver's misc device.
pub const DEFAULT_PATH: &str = "/dev/vuring";

/// `ioctl(fd, req, arg)`, -1 mapped to the errno.
///
/// # Safety
/// `arg` must be what the driver reads/writes for `req` (or 0 for `_IO`).
pub(crate) unsafe fn ioctl(fd: RawFd, req: u32, arg: usize, op: &'static str) -> Result<i32> {
    // SAFETY: the caller guarantees that arg is what the driver reads or
    // writes for req.
    let r = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) };
    if r < 0 {
        Err(Error::last(op))
    } else {
        Ok(r)
    }
}

/// A shared mapping, unmapped on drop.
pub(crate) struct Map {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: a plain mapping owned by this value; the raw pointer is only
// dereferenced through volatile/atomic accesses by its owners.
unsafe impl Send for Map {}
// SAFETY: as above; the doorbell is written with single volatile stores.
unsafe impl Sync for Map {}

impl Map {
    pub(crate) fn new(
        fd: RawFd,
        len: usize,
        off: u64,
        prot: i32,
        op: &'static str,
    ) -> Result<Self> {
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
        if info.abi_version != ABI_VERSION {
            return Err(Error::AbiVersion(info.abi_version));
        }
        let map = Map::new(
            fd.as_raw_fd(),
            DOORBELL_LEN as usize,
            VURING_MMAP_DOORBELL,
            libc::PROT_READ | libc::PROT_WRITE,
            "mmap doorbell",
        )
        .or_else(|_| {
            Map::new(
                fd.as_raw_fd(),
                DOORBELL_LEN as usize,
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

    /// The buffer arena (all zero without one), with its free chunks now.
    pub fn arena_info(&self) -> Result<crate::arena::ArenaInfo> {
        crate::arena::info(self.fd.as_raw_fd())
    }

    /// UNPUBLISH `token` through the device fd (no ring on it). Only the
    /// file that published a table may unpublish it: from any other file
    /// this is `-EPERM`.
    pub fn unpublish(&self, token: u64) -> Result<()> {
        unpublish_on(self.fd.as_raw_fd(), token)
    }
}

fn unpublish_on(fd: RawFd, token: u64) -> Result<()> {
    let v = VuringPublish { token };
    // SAFETY: _IOW(struct vuring_publish): the driver reads it.
    unsafe {
        ioctl(
            fd,
            VURING_IOC_UNPUBLISH,
            &v as *const VuringPublish as usize,
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
    /// A published table, named by the token PUBLISH returned (sets
    /// `VURING_CLONE_SRC_TABLE`). An unknown token is `-ENOENT`.
    Table(u64),
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

/// One ring of the device: its own /dev/vuring fd and its two mapped slots.
pub struct PvRing {
    // Field order: the queues point into the maps, which must be unmapped
    // before the fd (the ring) is closed.
    q: Queues,
    sq_map: Map,
    cq_map: Map,
    fd: OwnedFd,
    create: VuringCreate,
    doorbell: Arc<Doorbell>,
    extents: Vec<Extent>,
    max_buffers: u32,
}

impl PvRing {
    /// Creates a ring of `entries` SQ entries (`flags`:
    /// [`VURING_RING_POLLED`]) on a fresh fd and maps its submission slot
    /// (read-write) and completion slot (read-only).
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
        let layout = Layout {
            sq_entries: c.sq_entries,
            cq_entries: c.cq_entries,
            cq_tail: c.cq_tail,
            cqes: c.cqes,
            sq_slot_len: dev.info.sq_slot_size as usize,
            cq_slot_len: dev.info.cq_slot_size as usize,
            polled: c.ring_flags & VURING_RING_POLLED != 0,
        };
        crate::queue::validate(&layout)?;
        let sq_map = Map::new(
            fd.as_raw_fd(),
            layout.sq_slot_len,
            VURING_MMAP_SQ,
            libc::PROT_READ | libc::PROT_WRITE,
            "mmap submission slot",
        )?;
        // Read-only: the driver refuses a writable mapping of it.
        let cq_map = Map::new(
            fd.as_raw_fd(),
            layout.cq_slot_len,
            VURING_MMAP_CQ,
            libc::PROT_READ,
            "mmap completion slot",
        )?;
        // SAFETY: the maps have the layout's sizes (page aligned) and are
        // owned by the returned PvRing next to `q`, dropped after it.
        let q = unsafe { Queues::new(sq_map.ptr, cq_map.ptr, &layout) }?;
        Ok(PvRing {
            q,
            sq_map,
            cq_map,
            fd,
            create: c,
            doorbell: dev.doorbell.clone(),
            extents: Vec::new(),
            max_buffers: dev.info.max_buffers,
        })
    }

    /// The device's ring id (what the doorbell takes).
    pub fn id(&self) -> u32 {
        self.create.ring_id
    }
    /// The ring's fd (a CLONE source for other rings).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// What CREATE answered.
    pub fn create_info(&self) -> &VuringCreate {
        &self.create
    }
    /// Base of the mapped submission slot.
    pub fn sq_slot_ptr(&self) -> *mut u8 {
        self.sq_map.ptr
    }
    /// Base of the mapped (read-only) completion slot.
    pub fn cq_slot_ptr(&self) -> *const u8 {
        self.cq_map.ptr
    }
    /// Whether a VMM thread polls the ring (`VURING_RING_POLLED`).
    pub fn is_polled(&self) -> bool {
        self.q.is_polled()
    }
    /// SQ entries.
    pub fn sq_entries(&self) -> u32 {
        self.q.sq_entries()
    }
    /// CQ entries: also the most SQEs the device has consumed and the
    /// program not reaped.
    pub fn cq_entries(&self) -> u32 {
        self.q.cq_entries()
    }
    /// Free SQ entries.
    pub fn sq_space(&self) -> u32 {
        self.q.sq_space()
    }
    /// Published SQEs the device has not consumed yet.
    pub fn sq_pending(&self) -> u32 {
        self.q.sq_pending()
    }
    /// The device's SQ flags word (`PVU_SQ_NEED_WAKEUP`).
    pub fn sq_flags(&self) -> u32 {
        self.q.sq_flags()
    }
    /// Turns the ring's completion interrupt on or off: `false` sets
    /// `PVU_CQ_EVENTFD_DISABLED`, which the device carries to the host ring
    /// at its next pass. A program that busy-polls the CQ needs no
    /// interrupt, and each one costs the vCPU an interrupt entry, handler
    /// and return (on nested PVM about 200 us). `poll()` on the ring fd
    /// sleeps until that interrupt, so with it off a [`PvRing::wait`] that
    /// stops spinning only sees completions at its 10 ms poll timeouts.
    /// New rings start with it on.
    pub fn set_cq_eventfd(&self, enabled: bool) {
        self.q.set_cq_eventfd(enabled)
    }
    /// Whether completions raise the interrupt (see [`PvRing::set_cq_eventfd`]).
    pub fn cq_eventfd_enabled(&self) -> bool {
        self.q.cq_eventfd_enabled()
    }
    /// The ring's state for diagnostics.
    pub fn debug_state(&self) -> String {
        let (sh, st, lt, ch, ct) = self.q.indices();
        format!(
            "ring {} sq head {sh} tail {st} (local {lt}) cq head {ch} tail {ct} sq flags {:#x}",
            self.id(),
            self.q.sq_flags(),
        )
    }

    /// The ring indices: (SQ head, SQ tail, CQ head, CQ tail). A fresh
    /// ring has all four 0.
    pub fn ring_indices(&self) -> (u32, u32, u32, u32) {
        let (sh, st, _, ch, ct) = self.q.indices();
        (sh, st, ch, ct)
    }

    /// CQE entry `i` (masked) as it is in shared memory now, not consumed
    /// (diagnostics).
    pub fn peek_cqe(&self, i: u32) -> Cqe {
        self.q.peek_cqe(i)
    }

    /// Queues one SQE (not yet visible to the device: see
    /// [`PvRing::submit`]). Refuses SQEs without IOSQE_FIXED_FILE (use
    /// `types::Fixed`, or `.flags(Flags::FIXED_FILE)` for NOP).
    ///
    /// [`Error::SqFull`]: reap completions first (the device consumes SQEs
    /// only while the CQ has room for their CQEs).
    ///
    /// # Safety
    /// Buffers the SQE makes the host read or write (through a registered
    /// buffer) must stay valid and not be otherwise accessed until its
    /// completion is reaped, as with the `io-uring` crate.
    pub unsafe fn push(&mut self, sqe: &squeue::Entry) -> Result<()> {
        let b = sqe_bytes(sqe);
        if b[1] & IOSQE_FIXED_FILE == 0 {
            return Err(Error::NotFixedFile);
        }
        self.q.push_bytes(&b)
    }

    /// Queues a raw 64-byte SQE, unchecked (hostile-request tests; see
    /// [`crate::Sqe::to_bytes`] to build one field by field).
    ///
    /// # Safety
    /// As [`PvRing::push`].
    pub unsafe fn push_raw(&mut self, sqe: &[u8; SQE_LEN]) -> Result<()> {
        self.q.push_bytes(sqe)
    }

    /// Publishes the SQ tail (release store) and rings the doorbell with
    /// this ring's id when entries were added (a polled ring only when its
    /// submitter sleeps). No system call. Returns the SQEs made visible.
    pub fn submit(&mut self) -> usize {
        let (n, ring) = self.q.flush();
        if ring {
            self.doorbell.ring(self.id());
        }
        n as usize
    }

    /// Rings this ring's doorbell unconditionally.
    pub fn ring_doorbell(&self) {
        self.doorbell.ring(self.id());
    }

    /// Rings the doorbell if published SQEs wait for the device (a full CQ
    /// stopped it, or a polled submitter fell asleep). Returns whether it
    /// rang.
    pub fn kick(&self) -> bool {
        let ring = self.q.sq_pending() > 0 && self.q.doorbell_needed();
        if ring {
            self.doorbell.ring(self.id());
        }
        ring
    }

    /// Stores raw SQ tail / CQ head values in the submission slot
    /// (hostile tests: the device must ignore a tail more than sq_entries
    /// ahead and a CQ head outside what it posted); [`PvRing::restore_indices`]
    /// undoes it.
    pub fn store_raw_indices(&self, sq_tail: Option<u32>, cq_head: Option<u32>) {
        if let Some(t) = sq_tail {
            self.q.store_raw_tail(t);
        }
        if let Some(h) = cq_head {
            self.q.store_raw_cq_head(h);
        }
    }

    /// Stores the library's own SQ tail and CQ head again.
    pub fn restore_indices(&self) {
        self.q.restore()
    }

    /// CQEs ready to reap.
    pub fn cq_ready(&self) -> usize {
        self.q.cq_ready() as usize
    }

    /// The completion queue: an iterator reaping CQEs (acquire-loads the
    /// tail, release-stores the head per entry). When it is dropped after
    /// reaping, SQEs still waiting for room in the CQ get a doorbell.
    pub fn completion(&mut self) -> Completion<'_> {
        let before = self.q.cq_head();
        Completion { ring: self, before }
    }

    /// Busy-polls the CQ until at least `n` CQEs are ready (default
    /// [`WaitOpts`]); returns how many are ready.
    pub fn wait(&mut self, n: usize) -> Result<usize> {
        self.wait_with(n, &WaitOpts::default())
    }

    /// As [`PvRing::wait`] with explicit options. While it waits, SQEs the
    /// device has not consumed get the doorbell again whenever the SQ head
    /// has not moved for a while (the device may have stopped at a full CQ
    /// before this program reaped).
    pub fn wait_with(&mut self, n: usize, o: &WaitOpts) -> Result<usize> {
        let n = n.min(self.q.cq_entries() as usize);
        let mut start: Option<Instant> = None;
        let mut spins: u32 = 0;
        let mut head = self.q.sq_head();
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
            let now_head = self.q.sq_head();
            if now_head == head && spins.is_multiple_of(1 << 16) {
                self.kick();
            }
            head = now_head;
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
            self.kick();
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

    /// The ring's registered buffers as the driver last reported them
    /// (user addresses the driver did not know filled in where this
    /// library knows them).
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Registers `iovs` (REGISTER): the driver pins them and splits them
    /// into guest-physically contiguous extents, one buffer each. Returns
    /// the extents (index = buffer index). Two iovecs over the same memory
    /// are `-EINVAL`; more bytes than the VM may register, `-ENOSPC`.
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

    /// ARENA_REGISTER: `runs` of this file's arena chunks (of
    /// `chunk_size` bytes) become the ring's buffers (one command, no page
    /// pinned). Entries of chunks inside one of `maps` get that mapping's
    /// address (for [`PvRing::translate`]), the others 0. Returns the
    /// ring's buffer count.
    pub fn register_arena(
        &mut self,
        runs: &[crate::arena::ArenaRun],
        maps: &[&crate::arena::ArenaMap],
        chunk_size: u64,
    ) -> Result<u32> {
        self.register_arena_owned(-1, runs, maps, chunk_size)
    }

    /// [`PvRing::register_arena`] of the chunks the file `owner` owns (a
    /// `/dev/vuring` fd, e.g. [`Device::fd`]; -1: this ring's file).
    pub fn register_arena_owned(
        &mut self,
        owner: RawFd,
        runs: &[crate::arena::ArenaRun],
        maps: &[&crate::arena::ArenaMap],
        chunk_size: u64,
    ) -> Result<u32> {
        let n = crate::arena::register_owned(self.fd(), runs, owner)?;
        self.extents = crate::arena::table(runs, maps, n, chunk_size);
        Ok(n)
    }

    /// ARENA_REGISTER_RINGS: `runs` of the chunks the file `owner` owns
    /// (a `/dev/vuring` fd, e.g. [`Device::fd`]) become the buffers of
    /// every ring of `rings`, with one control command (all or none).
    /// Each ring's table is then as [`PvRing::register_arena`] leaves it.
    /// Returns each ring's buffer count.
    pub fn register_arena_rings<'a>(
        rings: impl IntoIterator<Item = &'a mut PvRing>,
        owner: RawFd,
        runs: &[crate::arena::ArenaRun],
        maps: &[&crate::arena::ArenaMap],
        chunk_size: u64,
    ) -> Result<u32> {
        let mut rings: Vec<&mut PvRing> = rings.into_iter().collect();
        let fds: Vec<RawFd> = rings.iter().map(|r| r.fd()).collect();
        let n = crate::arena::register_rings(owner, &fds, runs, -1)?;
        let table = crate::arena::table(runs, maps, n, chunk_size);
        // Into each ring's own vector, reusing its capacity: a fresh
        // allocation per ring costs page faults, each an emulated guest
        // kernel entry on nested PVM.
        for r in &mut rings {
            r.extents.clear();
            r.extents.extend_from_slice(&table);
        }
        Ok(n)
    }

    /// ARENA_ALLOC on this ring's file: chunks for at least `len` bytes,
    /// owned by this file until [`PvRing::arena_free`] or close.
    pub fn arena_alloc(&self, len: u64) -> Result<crate::arena::ArenaAlloc> {
        crate::arena::alloc(self.fd(), len)
    }

    /// ARENA_FREE of the allocation starting at `chunk`.
    pub fn arena_free(&self, chunk: u32) -> Result<()> {
        crate::arena::free(self.fd(), chunk)
    }

    /// Maps an allocation of this file (read-write, shared).
    pub fn arena_map(&self, a: &crate::arena::ArenaAlloc) -> Result<crate::arena::ArenaMap> {
        crate::arena::map(self.fd(), a)
    }

    /// Drops the ring's buffers (UNREGISTER). The driver keeps their pages
    /// pinned while requests may still use them; `-EBUSY` when it already
    /// keeps 8 such tables for this ring (reap, or close the ring).
    pub fn unregister_buffers(&mut self) -> Result<()> {
        // SAFETY: _IO: no argument.
        unsafe { ioctl(self.fd(), VURING_IOC_UNREGISTER, 0, "VURING_IOC_UNREGISTER") }?;
        self.extents.clear();
        Ok(())
    }

    /// Clones buffers into this ring (CLONE): `flags` may hold
    /// [`crate::VURING_CLONE_DST_REPLACE`]; `src_off`, `dst_off`, `nr` as
    /// `struct io_uring_clone_buffers` (`nr` 0: the whole source table).
    /// Returns the destination's whole table. User addresses the driver
    /// did not report are filled from the source ring's table (a table
    /// source: see [`PvRing::adopt_user_addrs`]).
    pub fn clone_buffers_from(
        &mut self,
        src: CloneSrc<'_>,
        flags: u32,
        src_off: u32,
        dst_off: u32,
        nr: u32,
    ) -> Result<Vec<Extent>> {
        let mut c = VuringClone {
            flags,
            src_off,
            dst_off,
            nr,
            ..Default::default()
        };
        match src {
            CloneSrc::Ring(r) => c.src = r.fd() as u32,
            CloneSrc::Table(token) => {
                c.flags |= VURING_CLONE_SRC_TABLE;
                c.token = token;
            }
            CloneSrc::This => c.src = self.fd() as u32,
            CloneSrc::RawFd(fd) => c.src = fd,
        }
        let mut t = self.clone_raw(&mut c)?;
        let old = std::mem::take(&mut self.extents);
        match src {
            CloneSrc::Ring(r) => {
                extent::adopt_cloned(&mut t, r.extents(), src_off, dst_off, nr);
            }
            CloneSrc::This => {
                extent::adopt_cloned(&mut t, &old, src_off, dst_off, nr);
            }
            CloneSrc::Table(_) | CloneSrc::RawFd(_) => {}
        }
        extent::adopt_kept(&mut t, &old);
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

    /// Puts a clone of this ring's buffers in the host table; returns the
    /// unguessable token that other rings clone it with.
    pub fn publish(&self) -> Result<u64> {
        let mut p = VuringPublish::default();
        // SAFETY: _IOR(struct vuring_publish): the driver writes it.
        unsafe {
            ioctl(
                self.fd(),
                VURING_IOC_PUBLISH,
                &mut p as *mut VuringPublish as usize,
                "VURING_IOC_PUBLISH",
            )
        }?;
        Ok(p.token)
    }

    /// Removes the table `token` names (rings that cloned from it keep
    /// their buffers). Only this ring's file, which published it, may.
    pub fn unpublish(&self, token: u64) -> Result<()> {
        unpublish_on(self.fd(), token)
    }

    /// After a clone from a table: fills unknown user addresses of entries
    /// `dst_off..dst_off + nr` from `src[src_off..]`, the publisher's table
    /// (arguments as the clone's). Returns how many were filled.
    pub fn adopt_user_addrs(
        &mut self,
        src: &[Extent],
        src_off: u32,
        dst_off: u32,
        nr: u32,
    ) -> usize {
        extent::adopt_cloned(&mut self.extents, src, src_off, dst_off, nr)
    }

    /// `(ptr, len)` inside one registered buffer: its index and the offset
    /// in it (what READ_FIXED/WRITE_FIXED carry).
    pub fn translate(&self, ptr: *const u8, len: usize) -> Result<FixedBuf> {
        extent::translate(&self.extents, ptr as u64, len as u64)
    }

    /// `(ptr, len)` split at buffer boundaries.
    pub fn translate_split(&self, ptr: *const u8, len: usize) -> Result<Vec<FixedPiece>> {
        extent::split(&self.extents, ptr as u64, len as u64)
    }
}

/// A READ_FIXED of `len` bytes at file offset `file_off` of backend
/// `backend` into the registered buffer range `at` (the SQE's `addr` is
/// the byte offset in the buffer, never an address).
pub fn read_fixed(backend: u32, at: FixedBuf, len: u32, file_off: u64) -> squeue::Entry {
    opcode::ReadFixed::new(
        types::Fixed(backend),
        at.offset as *mut u8,
        len,
        at.buf_index,
    )
    .offset(file_off)
    .build()
}

/// A WRITE_FIXED, as [`read_fixed`].
pub fn write_fixed(backend: u32, at: FixedBuf, len: u32, file_off: u64) -> squeue::Entry {
    opcode::WriteFixed::new(
        types::Fixed(backend),
        at.offset as *const u8,
        len,
        at.buf_index,
    )
    .offset(file_off)
    .build()
}

/// A NOP as the device allows it: `IOSQE_FIXED_FILE` and every other
/// field 0. (The `io-uring` crate's `opcode::Nop` sets `fd` to -1, which
/// the device's allow-list refuses with `-EINVAL`.)
pub fn nop() -> squeue::Entry {
    let mut b = sqe_bytes(&opcode::Nop::new().build().flags(squeue::Flags::FIXED_FILE));
    b[uring_abi::uring::sqe::FD..uring_abi::uring::sqe::FD + 4].fill(0);
    sqe_from_bytes(b)
}

/// An `io-uring` crate SQE from its 64 bytes.
pub fn sqe_from_bytes(b: [u8; SQE_LEN]) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == SQE_LEN);
    // SAFETY: squeue::Entry is a #[repr(C)] wrapper of the 64-byte
    // io_uring_sqe (size asserted above), valid for any byte pattern (plain
    // integers and unions of them).
    unsafe { std::mem::transmute::<[u8; SQE_LEN], squeue::Entry>(b) }
}

/// The raw 64 bytes of an SQE built with the `io-uring` crate.
pub fn sqe_bytes(sqe: &squeue::Entry) -> [u8; SQE_LEN] {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == SQE_LEN);
    let mut b = [0u8; SQE_LEN];
    // SAFETY: squeue::Entry is a #[repr(C)] wrapper of the 64-byte
    // io_uring_sqe (size asserted above); plain bytes, no padding holes
    // the crate leaves uninitialised (it zero-initialises SQEs).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (sqe as *const squeue::Entry).cast::<u8>(),
            b.as_mut_ptr(),
            SQE_LEN,
        )
    };
    b
}

/// Reaps CQEs of a ring (see [`PvRing::completion`]).
pub struct Completion<'a> {
    ring: &'a mut PvRing,
    /// The CQ head when reaping began.
    before: u32,
}

impl Completion<'_> {
    /// CQEs ready now.
    pub fn len(&self) -> usize {
        self.ring.q.cq_ready() as usize
    }
    /// Whether no CQE is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for Completion<'_> {
    type Item = Cqe;
    fn next(&mut self) -> Option<Cqe> {
        self.ring.q.pop()
    }
}

impl Drop for Completion<'_> {
    fn drop(&mut self) {
        // Reaping made room in the CQ: SQEs the device left in the SQ at a
        // full CQ wait for a pass, which a doorbell ring only runs on a
        // doorbell (a polled one notices the CQ head unless it sleeps).
        if self.ring.q.stalled_after_reap(self.before) {
            self.ring.ring_doorbell();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_bytes_layout() {
        let at = FixedBuf {
            buf_index: 7,
            offset: 0x1000,
        };
        let e = read_fixed(3, at, 4096, 0x2000).user_data(0xabcd);
        let b = sqe_bytes(&e);
        assert_eq!(b[0], opcode::ReadFixed::CODE);
        assert_eq!(b[1], IOSQE_FIXED_FILE);
        assert_eq!(i32::from_le_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 0x2000);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 0x1000);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 4096);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 0xabcd);
        assert_eq!(u16::from_le_bytes(b[40..42].try_into().unwrap()), 7);
        let n = sqe_bytes(&nop().user_data(9));
        let want = uring_abi::uring::Sqe {
            opcode: uring_abi::uring::IORING_OP_NOP,
            flags: IOSQE_FIXED_FILE,
            user_data: 9,
            ..Default::default()
        };
        assert_eq!(n, want.to_bytes(), "a NOP the allow-list takes");
    }

    #[test]
    fn open_missing_device_reports_errno() {
        match Device::open_path("/nonexistent/vuring") {
            Err(e) => assert_eq!(e.errno(), Some(libc::ENOENT)),
            Ok(_) => panic!("opened a missing device"),
        }
    }
}
