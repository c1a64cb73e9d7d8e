//! The C API of pv rings (`include/pv_uring.h`, docs/c-api.md): a thin
//! `extern "C"` layer over the [`pv_uring`] guest library, built as
//! `libpv_uring_c.a` for C programs.
//!
//! Conventions of every exported function:
//! - it returns 0 (or a count) on success and a negative errno on failure,
//!   as liburing does ([`errno_of`] maps the library's errors);
//! - every pointer argument is checked: NULL where one is needed is
//!   `-EINVAL` (functions returning a pointer return NULL);
//! - nothing unwinds into C: each body runs under `catch_unwind`, and a
//!   panic (a bug here) comes back as `-ENOTRECOVERABLE`.
//!
//! Handles are boxed Rust values given to C as opaque pointers:
//! `pvu_open`/`pvu_close` own a [`Device`], `pvu_queue_init`/
//! `pvu_queue_exit` a [`Ring`], `pvu_arena_alloc`/`pvu_arena_free` an
//! [`Arena`] (chunks of the buffer arena, mapped). The struct layouts the header declares are
//! those of `uring-abi` (checked by `guest-kernel-patches/check.sh` through
//! `examples/abi-dump.rs` and `c/abi-dump.c`).
//!
//! SQEs: [`pvu_get_sqe`] hands out entries of a staging array the handle
//! owns, and [`pvu_submit`] copies them into the shared submission slot
//! (the device copies each SQE once more before checking it, so nothing is
//! lost by not letting C write the shared slot directly). CQEs:
//! [`pvu_peek_cqe`] moves every ready CQE out of the shared CQ into a cache
//! the handle owns (freeing CQ room for the device's flow control at once)
//! and hands out pointers into it until [`pvu_cqe_seen`].

pub mod abi;

use libc::{c_char, c_int, c_uint, c_void, iovec};
use pv_uring::arena::{self, ArenaAlloc, ArenaInfo, ArenaMap};
use pv_uring::uring_abi::uring::SQE_LEN;
use pv_uring::{CloneSrc, Cqe, Device, Error, Extent, InfoExt, PvRing, VuringInfo, WaitOpts};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// `PVU_RING_POLLED` of the header.
pub const PVU_RING_POLLED: u32 = pv_uring::VURING_RING_POLLED;
/// `PVU_CLONE_DST_REPLACE` of the header.
pub const PVU_CLONE_DST_REPLACE: u32 = pv_uring::VURING_CLONE_DST_REPLACE;

/// The errno a [`pv_uring::Error`] becomes (positive).
pub fn errno_of(e: &Error) -> c_int {
    #[allow(unreachable_patterns)]
    match e {
        Error::Sys { errno, .. } if errno.0 > 0 => errno.0,
        Error::Sys { .. } => libc::EIO,
        Error::Layout(_) => libc::EPROTO,
        Error::AbiVersion(_) => libc::EPROTONOSUPPORT,
        Error::NotRegistered { .. } => libc::EFAULT,
        Error::SqFull => libc::EBUSY,
        Error::NotFixedFile => libc::EINVAL,
        Error::Timeout { .. } => libc::ETIME,
        Error::Invalid(_) => libc::EINVAL,
        // A variant added to pv-uring later.
        _ => libc::EIO,
    }
}

/// Runs `f`, mapping `Err(errno)` to `-errno` and a panic to
/// `-ENOTRECOVERABLE`.
fn ffi(f: impl FnOnce() -> Result<c_int, c_int>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(errno)) => -errno,
        Err(_) => -libc::ENOTRECOVERABLE,
    }
}

/// `Err(EINVAL)` for a NULL pointer.
fn need<T>(p: *const T) -> Result<(), c_int> {
    if p.is_null() {
        Err(libc::EINVAL)
    } else {
        Ok(())
    }
}

/// A count as the C return value (they are bounded by the device's limits,
/// far below `c_int::MAX`).
fn count(n: usize) -> Result<c_int, c_int> {
    c_int::try_from(n).map_err(|_| libc::EOVERFLOW)
}

trait OrErrno<T> {
    fn or_errno(self) -> Result<T, c_int>;
}

impl<T> OrErrno<T> for pv_uring::Result<T> {
    fn or_errno(self) -> Result<T, c_int> {
        self.map_err(|e| errno_of(&e))
    }
}

/// `struct pvu_ring_params`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingParams {
    /// The device's ring id.
    pub id: u32,
    /// SQ entries.
    pub sq_entries: u32,
    /// CQ entries.
    pub cq_entries: u32,
    /// `PVU_RING_POLLED` if polled.
    pub flags: u32,
    /// The ring's fd.
    pub fd: i32,
    /// Reserved, 0.
    pub resv: u32,
}

/// One staged SQE (`struct pvu_sqe`: 64 bytes, 8-byte fields).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SqeSlot(pub [u8; SQE_LEN]);

/// `struct pvu_ring`: a ring, its staged SQEs and its reaped CQEs.
pub struct Ring {
    ring: PvRing,
    /// SQEs handed out by `pvu_get_sqe` since the last submit: `[0, staged)`.
    sqes: Box<[SqeSlot]>,
    staged: usize,
    /// CQEs moved out of the shared CQ, not yet seen: `[cq_head, cq_head + cq_len)`.
    cqes: Box<[Cqe]>,
    cq_head: usize,
    cq_len: usize,
}

impl Ring {
    fn new(ring: PvRing) -> Self {
        let sq = ring.sq_entries() as usize;
        let cq = ring.cq_entries() as usize;
        Ring {
            ring,
            sqes: vec![SqeSlot([0; SQE_LEN]); sq].into_boxed_slice(),
            staged: 0,
            cqes: vec![Cqe::default(); cq].into_boxed_slice(),
            cq_head: 0,
            cq_len: 0,
        }
    }

    fn space_left(&self) -> usize {
        (self.ring.sq_space() as usize)
            .min(self.sqes.len())
            .saturating_sub(self.staged)
    }

    fn get_sqe(&mut self) -> Option<&mut SqeSlot> {
        if self.space_left() == 0 {
            return None;
        }
        let s = &mut self.sqes[self.staged];
        s.0 = [0; SQE_LEN];
        self.staged += 1;
        Some(s)
    }

    /// Pushes the staged SQEs and publishes them; returns how many.
    fn submit(&mut self) -> Result<usize, c_int> {
        let mut pushed = 0;
        let mut err = None;
        for s in &self.sqes[..self.staged] {
            // SAFETY: the SQE names data by registered buffer; keeping that
            // memory valid until the completion is the C caller's duty
            // (docs/c-api.md, as with liburing).
            if let Err(e) = unsafe { self.ring.push_raw(&s.0) } {
                err = Some(errno_of(&e));
                break;
            }
            pushed += 1;
        }
        // Keep what could not be pushed for the next submit.
        self.sqes.copy_within(pushed..self.staged, 0);
        self.staged -= pushed;
        self.ring.submit();
        match err {
            Some(e) if pushed == 0 => Err(e),
            _ => Ok(pushed),
        }
    }

    /// Moves the ready CQEs of the shared CQ into the cache when it is
    /// empty; returns whether a CQE is cached.
    fn fill(&mut self) -> bool {
        if self.cq_len == 0 {
            self.cq_head = 0;
            let cap = self.cqes.len();
            for c in self.ring.completion().take(cap) {
                self.cqes[self.cq_len] = c;
                self.cq_len += 1;
            }
        }
        self.cq_len > 0
    }

    fn ready(&self) -> usize {
        self.cq_len + self.ring.cq_ready()
    }

    fn head_ptr(&mut self) -> *mut Cqe {
        &mut self.cqes[self.cq_head]
    }

    fn advance(&mut self, n: usize) {
        let n = n.min(self.cq_len);
        self.cq_head += n;
        self.cq_len -= n;
        // The rest were taken from the shared CQ already: nothing to do there.
    }

    fn wait(&mut self, n: usize, timeout: Option<Duration>) -> Result<(), c_int> {
        if self.cq_len >= n {
            return Ok(());
        }
        let more = n - self.cq_len;
        let o = WaitOpts {
            timeout,
            ..WaitOpts::default()
        };
        self.ring.wait_with(more, &o).or_errno().map(drop)
    }
}

/// Reads `*p` as `&T` after the NULL check.
///
/// # Safety
/// `p` is NULL or points to a live `T` not mutated during `'a`.
unsafe fn as_ref<'a, T>(p: *const T) -> Result<&'a T, c_int> {
    need(p)?;
    // SAFETY: non-NULL, and live by the caller's contract.
    Ok(unsafe { &*p })
}

/// Reads `*p` as `&mut T` after the NULL check.
///
/// # Safety
/// `p` is NULL or points to a live `T` not otherwise accessed during `'a`.
unsafe fn as_mut<'a, T>(p: *mut T) -> Result<&'a mut T, c_int> {
    need(p)?;
    // SAFETY: non-NULL, and exclusive by the caller's contract.
    Ok(unsafe { &mut *p })
}

/// Stores `v` in `*out` after the NULL check.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, v: T) -> Result<(), c_int> {
    need(out)?;
    // SAFETY: non-NULL and writable by the caller's contract; write does
    // not read the (possibly uninitialised) old value.
    unsafe { out.write(v) };
    Ok(())
}

/// `pvu_open`: opens the device; `*dev` receives the handle.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `dev` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_open(path: *const c_char, dev: *mut *mut Device) -> c_int {
    ffi(|| {
        need(dev)?;
        let d = if path.is_null() {
            Device::open()
        } else {
            // SAFETY: a NUL-terminated string by the caller's contract.
            let p = unsafe { CStr::from_ptr(path) };
            let p = p.to_str().map_err(|_| libc::EINVAL)?;
            Device::open_path(p)
        }
        .or_errno()?;
        // SAFETY: `dev` checked non-NULL; writable by the contract.
        unsafe { put(dev, Box::into_raw(Box::new(d))) }?;
        Ok(0)
    })
}

/// `pvu_close`: frees a device handle (NULL: nothing).
///
/// # Safety
/// `dev` is NULL or a handle from `pvu_open` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn pvu_close(dev: *mut Device) {
    ffi(|| {
        if !dev.is_null() {
            // SAFETY: a handle Box::into_raw made in pvu_open, freed once.
            drop(unsafe { Box::from_raw(dev) });
        }
        Ok(0)
    });
}

/// `pvu_device_info`.
///
/// # Safety
/// `dev` is NULL or a live handle; `info` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_device_info(dev: *const Device, info: *mut VuringInfo) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let d = unsafe { as_ref(dev) }?;
        // SAFETY: NULL or writable by the contract.
        unsafe { put(info, *d.info()) }?;
        Ok(0)
    })
}

/// `pvu_queue_init`: creates a ring; `*ring` receives the handle.
///
/// # Safety
/// `dev` is NULL or a live handle; `ring` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_queue_init(
    dev: *mut Device,
    entries: c_uint,
    ring: *mut *mut Ring,
    flags: c_uint,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let d = unsafe { as_ref(dev) }?;
        need(ring)?;
        if entries == 0 || flags & !PVU_RING_POLLED != 0 {
            return Err(libc::EINVAL);
        }
        let r = PvRing::new(d, entries, flags).or_errno()?;
        // SAFETY: checked non-NULL; writable by the contract.
        unsafe { put(ring, Box::into_raw(Box::new(Ring::new(r)))) }?;
        Ok(0)
    })
}

/// `pvu_queue_exit`: destroys the ring and frees the handle (NULL: nothing).
///
/// # Safety
/// `ring` is NULL or a handle from `pvu_queue_init` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn pvu_queue_exit(ring: *mut Ring) {
    ffi(|| {
        if !ring.is_null() {
            // SAFETY: a handle Box::into_raw made in pvu_queue_init, freed once.
            drop(unsafe { Box::from_raw(ring) });
        }
        Ok(0)
    });
}

/// `pvu_ring_params`.
///
/// # Safety
/// `ring` is NULL or a live handle; `p` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_ring_params(ring: *const Ring, p: *mut RingParams) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        let v = RingParams {
            id: r.ring.id(),
            sq_entries: r.ring.sq_entries(),
            cq_entries: r.ring.cq_entries(),
            flags: if r.ring.is_polled() {
                PVU_RING_POLLED
            } else {
                0
            },
            fd: r.ring.fd(),
            resv: 0,
        };
        // SAFETY: NULL or writable by the contract.
        unsafe { put(p, v) }?;
        Ok(0)
    })
}

/// `pvu_ring_set_cq_interrupt`.
///
/// # Safety
/// `ring` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_ring_set_cq_interrupt(ring: *mut Ring, enabled: c_int) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_mut(ring) }?;
        r.ring.set_cq_eventfd(enabled != 0);
        Ok(0)
    })
}

/// `pvu_register_buffers`: returns the number of buffers.
///
/// # Safety
/// `ring` is NULL or a live handle; `iovecs` is NULL or points to
/// `nr_iovecs` iovecs.
#[no_mangle]
pub unsafe extern "C" fn pvu_register_buffers(
    ring: *mut Ring,
    iovecs: *const iovec,
    nr_iovecs: c_uint,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_mut(ring) }?;
        need(iovecs)?;
        if nr_iovecs == 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: non-NULL, `nr_iovecs` iovecs by the contract.
        let iovs = unsafe { std::slice::from_raw_parts(iovecs, nr_iovecs as usize) };
        count(r.ring.register_buffers(iovs).or_errno()?.len())
    })
}

/// `pvu_unregister_buffers`.
///
/// # Safety
/// `ring` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_unregister_buffers(ring: *mut Ring) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_mut(ring) }?;
        r.ring.unregister_buffers().or_errno()?;
        Ok(0)
    })
}

/// Clones into `dst` from `src` (a ring, or a table token).
///
/// # Safety
/// `dst` NULL or a live handle; `src` NULL, `dst`, or another live handle.
unsafe fn clone_into(
    dst: *mut Ring,
    src: Result<*const Ring, u64>,
    dst_off: c_uint,
    src_off: c_uint,
    nr: c_uint,
    flags: c_uint,
) -> Result<c_int, c_int> {
    need(dst)?;
    if flags & !PVU_CLONE_DST_REPLACE != 0 {
        return Err(libc::EINVAL);
    }
    let src = match src {
        Ok(s) if std::ptr::eq(s, dst) => None,
        Ok(s) => {
            // SAFETY: NULL or a live handle other than `dst`.
            Some(Ok(unsafe { as_ref(s) }?))
        }
        Err(token) => Some(Err(token)),
    };
    // SAFETY: `dst` checked non-NULL; live and not aliased by `src` (the
    // same pointer became `None` above).
    let d = unsafe { as_mut(dst) }?;
    let from = match src {
        None => CloneSrc::This,
        Some(Ok(s)) => CloneSrc::Ring(&s.ring),
        Some(Err(token)) => CloneSrc::Table(token),
    };
    let t = d
        .ring
        .clone_buffers_from(from, flags, src_off, dst_off, nr)
        .or_errno()?;
    count(t.len())
}

/// `pvu_clone_buffers`: all of `src`'s buffers into empty `dst`; returns
/// `dst`'s buffer count.
///
/// # Safety
/// `dst`, `src`: NULL or live handles.
#[no_mangle]
pub unsafe extern "C" fn pvu_clone_buffers(dst: *mut Ring, src: *const Ring) -> c_int {
    ffi(|| {
        need(src)?;
        // SAFETY: forwarded contract.
        unsafe { clone_into(dst, Ok(src), 0, 0, 0, 0) }
    })
}

/// `pvu_clone_buffers_offset` (liburing's argument order).
///
/// # Safety
/// `dst`, `src`: NULL or live handles (possibly the same).
#[no_mangle]
pub unsafe extern "C" fn pvu_clone_buffers_offset(
    dst: *mut Ring,
    src: *const Ring,
    dst_off: c_uint,
    src_off: c_uint,
    nr: c_uint,
    flags: c_uint,
) -> c_int {
    ffi(|| {
        need(src)?;
        // SAFETY: forwarded contract.
        unsafe { clone_into(dst, Ok(src), dst_off, src_off, nr, flags) }
    })
}

/// `pvu_clone_buffers_from_table`.
///
/// # Safety
/// `dst`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_clone_buffers_from_table(
    dst: *mut Ring,
    token: u64,
    dst_off: c_uint,
    src_off: c_uint,
    nr: c_uint,
    flags: c_uint,
) -> c_int {
    // SAFETY: forwarded contract.
    ffi(|| unsafe { clone_into(dst, Err(token), dst_off, src_off, nr, flags) })
}

/// `pvu_publish_buffers`.
///
/// # Safety
/// `ring`: NULL or a live handle; `token`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_publish_buffers(ring: *mut Ring, token: *mut u64) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        need(token)?;
        let t = r.ring.publish().or_errno()?;
        // SAFETY: checked non-NULL; writable by the contract.
        unsafe { put(token, t) }?;
        Ok(0)
    })
}

/// `pvu_unpublish_buffers`.
///
/// # Safety
/// `ring`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_unpublish_buffers(ring: *mut Ring, token: u64) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        r.ring.unpublish(token).or_errno()?;
        Ok(0)
    })
}

/// `pvu_buffer_table`: copies up to `max` entries; returns the count.
///
/// # Safety
/// `ring`: NULL or a live handle; `bufs`: NULL or writable for `max` entries.
#[no_mangle]
pub unsafe extern "C" fn pvu_buffer_table(
    ring: *const Ring,
    bufs: *mut Extent,
    max: c_uint,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        let t = r.ring.extents();
        let n = t.len().min(max as usize);
        if n > 0 {
            need(bufs)?;
            // SAFETY: `bufs` non-NULL and writable for `max` >= n entries;
            // `t` is the handle's own table, not overlapping C's array.
            unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), bufs, n) };
        } else if max > 0 {
            need(bufs)?;
        }
        count(t.len())
    })
}

/// `pvu_translate`.
///
/// # Safety
/// `ring`: NULL or a live handle; `buf_index`, `buf_off`: NULL or writable.
/// `ptr` is only compared, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn pvu_translate(
    ring: *const Ring,
    ptr: *const c_void,
    len: usize,
    buf_index: *mut c_uint,
    buf_off: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        need(ptr)?;
        need(buf_index)?;
        need(buf_off)?;
        let at = r.ring.translate(ptr.cast(), len).or_errno()?;
        // SAFETY: both checked non-NULL; writable by the contract.
        unsafe {
            put(buf_index, c_uint::from(at.buf_index))?;
            put(buf_off, at.offset)?;
        }
        Ok(0)
    })
}

/// `pvu_get_sqe`: a zeroed staged SQE, or NULL (full, NULL ring).
///
/// # Safety
/// `ring`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_get_sqe(ring: *mut Ring) -> *mut SqeSlot {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: NULL or a live handle by the contract.
        let Ok(r) = (unsafe { as_mut(ring) }) else {
            return std::ptr::null_mut();
        };
        r.get_sqe()
            .map_or(std::ptr::null_mut(), |s| s as *mut SqeSlot)
    }))
    .unwrap_or(std::ptr::null_mut())
}

/// `pvu_sq_space_left` (0 for a NULL ring).
///
/// # Safety
/// `ring`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_sq_space_left(ring: *const Ring) -> c_uint {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        count(r.space_left())
    })
    .max(0) as c_uint
}

/// `pvu_submit`: returns the number of SQEs submitted.
///
/// # Safety
/// `ring`: NULL or a live handle; its staged SQEs' buffers stay valid until
/// their completions.
#[no_mangle]
pub unsafe extern "C" fn pvu_submit(ring: *mut Ring) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_mut(ring) }?;
        count(r.submit()?)
    })
}

/// `pvu_submit_and_wait`.
///
/// # Safety
/// As [`pvu_submit`].
#[no_mangle]
pub unsafe extern "C" fn pvu_submit_and_wait(ring: *mut Ring, wait_nr: c_uint) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_mut(ring) }?;
        let n = r.submit()?;
        r.wait(wait_nr as usize, None)?;
        count(n)
    })
}

/// `pvu_cq_ready` (0 for a NULL ring).
///
/// # Safety
/// `ring`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_cq_ready(ring: *const Ring) -> c_uint {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_ref(ring) }?;
        count(r.ready())
    })
    .max(0) as c_uint
}

/// Waits (or not: `wait` None) for a CQE and hands out the oldest.
///
/// # Safety
/// `ring`: NULL or a live handle; `cqe_ptr`: NULL or writable.
unsafe fn get_cqe(
    ring: *mut Ring,
    cqe_ptr: *mut *mut Cqe,
    wait: Option<Option<Duration>>,
) -> Result<c_int, c_int> {
    // SAFETY: NULL or a live handle by the contract.
    let r = unsafe { as_mut(ring) }?;
    need(cqe_ptr)?;
    if !r.fill() {
        let Some(timeout) = wait else {
            return Err(libc::EAGAIN);
        };
        r.wait(1, timeout)?;
        if !r.fill() {
            return Err(libc::EAGAIN);
        }
    }
    // SAFETY: checked non-NULL; writable by the contract.
    unsafe { put(cqe_ptr, r.head_ptr()) }?;
    Ok(0)
}

/// `pvu_peek_cqe`: 0 and `*cqe_ptr`, or `-EAGAIN`.
///
/// # Safety
/// `ring`: NULL or a live handle; `cqe_ptr`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_peek_cqe(ring: *mut Ring, cqe_ptr: *mut *mut Cqe) -> c_int {
    // SAFETY: forwarded contract.
    ffi(|| unsafe { get_cqe(ring, cqe_ptr, None) })
}

/// `pvu_wait_cqe`: waits without a time limit.
///
/// # Safety
/// As [`pvu_peek_cqe`].
#[no_mangle]
pub unsafe extern "C" fn pvu_wait_cqe(ring: *mut Ring, cqe_ptr: *mut *mut Cqe) -> c_int {
    // SAFETY: forwarded contract.
    ffi(|| unsafe { get_cqe(ring, cqe_ptr, Some(None)) })
}

/// `pvu_wait_cqe_timeout`: `-ETIME` after `timeout_ns` without a CQE.
///
/// # Safety
/// As [`pvu_peek_cqe`].
#[no_mangle]
pub unsafe extern "C" fn pvu_wait_cqe_timeout(
    ring: *mut Ring,
    cqe_ptr: *mut *mut Cqe,
    timeout_ns: u64,
) -> c_int {
    let t = Duration::from_nanos(timeout_ns);
    // SAFETY: forwarded contract.
    ffi(|| unsafe { get_cqe(ring, cqe_ptr, Some(Some(t))) })
}

/// `pvu_cqe_seen`: consumes the oldest handed-out CQE (NULL cqe or ring:
/// nothing, as liburing).
///
/// # Safety
/// `ring`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_cqe_seen(ring: *mut Ring, cqe: *mut Cqe) {
    ffi(|| {
        need(cqe)?;
        // SAFETY: NULL or a live handle by the contract.
        unsafe { as_mut(ring) }?.advance(1);
        Ok(0)
    });
}

/// `pvu_cq_advance`.
///
/// # Safety
/// `ring`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_cq_advance(ring: *mut Ring, nr: c_uint) {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        unsafe { as_mut(ring) }?.advance(nr as usize);
        Ok(0)
    });
}

/// `struct pvu_arena`: a run of buffer-arena chunks, mapped read-write,
/// owned by the device file it was allocated on (this handle holds a
/// duplicate of its fd, so closing the device handle first is fine).
pub struct Arena {
    // Unmapped before the ownership is given up and the fd closed.
    map: ArenaMap,
    alloc: ArenaAlloc,
    chunk_size: u64,
    owner: OwnedFd,
    max_rings: u32,
}

/// `pvu_arena_info`: the arena's size and free chunks.
///
/// # Safety
/// `dev` is NULL or a live handle; `info` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_arena_info(dev: *const Device, info: *mut ArenaInfo) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let d = unsafe { as_ref(dev) }?;
        need(info)?;
        if !d.info().has_arena() {
            return Err(libc::EOPNOTSUPP);
        }
        let i = d.arena_info().or_errno()?;
        // SAFETY: checked non-NULL; writable by the contract.
        unsafe { put(info, i) }?;
        Ok(0)
    })
}

/// `pvu_arena_alloc`: chunks for at least `len` bytes, mapped; `*arena`
/// receives the handle.
///
/// # Safety
/// `dev` is NULL or a live handle; `arena` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_arena_alloc(
    dev: *mut Device,
    len: u64,
    arena: *mut *mut Arena,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let d = unsafe { as_ref(dev) }?;
        need(arena)?;
        if !d.info().has_arena() {
            return Err(libc::EOPNOTSUPP);
        }
        let chunk_size = d.arena_info().or_errno()?.chunk_size;
        // SAFETY: the device's fd, open for as long as `d`.
        let owner = unsafe { BorrowedFd::borrow_raw(d.fd()) }
            .try_clone_to_owned()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let alloc = arena::alloc(owner.as_raw_fd(), len).or_errno()?;
        let map = match arena::map_with(owner.as_raw_fd(), &alloc, chunk_size) {
            Ok(m) => m,
            Err(e) => {
                let _ = arena::free(owner.as_raw_fd(), alloc.chunk);
                return Err(errno_of(&e));
            }
        };
        let a = Arena {
            map,
            alloc,
            chunk_size,
            owner,
            max_rings: d.info().max_rings,
        };
        // SAFETY: checked non-NULL; writable by the contract.
        unsafe { put(arena, Box::into_raw(Box::new(a))) }?;
        Ok(0)
    })
}

/// `pvu_arena_free`: unmaps the chunks, gives up their ownership (they
/// return to the arena once no ring holds them) and frees the handle
/// (NULL: nothing). Returns ARENA_FREE's result.
///
/// # Safety
/// `arena` is NULL or a handle from `pvu_arena_alloc` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn pvu_arena_free(arena: *mut Arena) -> c_int {
    ffi(|| {
        if arena.is_null() {
            return Ok(0);
        }
        // SAFETY: a handle Box::into_raw made in pvu_arena_alloc, freed once.
        let a = unsafe { Box::from_raw(arena) };
        let Arena {
            map, alloc, owner, ..
        } = *a;
        drop(map);
        arena::free(owner.as_raw_fd(), alloc.chunk).or_errno()?;
        Ok(0)
    })
}

/// `pvu_arena_addr`: the first byte of the mapped chunks (NULL for a NULL
/// handle); `*len` (if not NULL) receives their length.
///
/// # Safety
/// `arena` is NULL or a live handle; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pvu_arena_addr(arena: *const Arena, len: *mut u64) -> *mut c_void {
    let mut addr = std::ptr::null_mut();
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let a = unsafe { as_ref(arena) }?;
        if !len.is_null() {
            // SAFETY: non-NULL, writable by the contract.
            unsafe { put(len, a.map.len() as u64) }?;
        }
        addr = a.map.ptr().cast();
        Ok(0)
    });
    addr
}

/// `pvu_register_arena`: the arena handle's chunks become the ring's
/// buffers 0.. (one command, nothing pinned); returns their count.
///
/// # Safety
/// `ring`, `arena`: NULL or live handles.
#[no_mangle]
pub unsafe extern "C" fn pvu_register_arena(ring: *mut Ring, arena: *const Arena) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let a = unsafe { as_ref(arena) }?;
        // SAFETY: NULL or a live handle by the contract.
        let r = unsafe { as_mut(ring) }?;
        let n = r
            .ring
            .register_arena_owned(
                a.owner.as_raw_fd(),
                &[a.alloc.run(0)],
                &[&a.map],
                a.chunk_size,
            )
            .or_errno()?;
        count(n as usize)
    })
}

/// `pvu_register_arena_rings`: [`pvu_register_arena`] on every ring of
/// `rings[0..nr_rings)` with one command, all or none.
///
/// # Safety
/// `rings` is NULL or points to `nr_rings` pointers, each NULL or a live
/// ring handle; `arena`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn pvu_register_arena_rings(
    rings: *const *mut Ring,
    nr_rings: c_uint,
    arena: *const Arena,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a live handle by the contract.
        let a = unsafe { as_ref(arena) }?;
        need(rings)?;
        if nr_rings == 0 || nr_rings > a.max_rings {
            return Err(libc::EINVAL);
        }
        // SAFETY: non-NULL, `nr_rings` pointers by the contract.
        let ptrs = unsafe { std::slice::from_raw_parts(rings, nr_rings as usize) };
        // Each handle once (and none NULL) before any becomes a &mut.
        let mut sorted = ptrs.to_vec();
        sorted.sort_unstable();
        if sorted[0].is_null() || sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(libc::EINVAL);
        }
        // SAFETY: distinct, non-NULL live handles by the contract and the
        // check above: no two &mut alias.
        let rs = ptrs.iter().map(|&p| unsafe { &mut (*p).ring });
        let n = PvRing::register_arena_rings(
            rs,
            a.owner.as_raw_fd(),
            &[a.alloc.run(0)],
            &[&a.map],
            a.chunk_size,
        )
        .or_errno()?;
        count(n as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pv_uring::Errno;
    use std::ptr::{null, null_mut};

    #[test]
    fn errors_become_negative_errnos() {
        let sys = Error::Sys {
            op: "VURING_IOC_CLONE",
            errno: Errno(libc::EOVERFLOW),
        };
        assert_eq!(errno_of(&sys), libc::EOVERFLOW);
        let zero = Error::Sys {
            op: "x",
            errno: Errno(0),
        };
        assert_eq!(
            errno_of(&zero),
            libc::EIO,
            "never 0 (success) for a failure"
        );
        assert_eq!(errno_of(&Error::SqFull), libc::EBUSY);
        assert_eq!(errno_of(&Error::AbiVersion(1)), libc::EPROTONOSUPPORT);
        assert_eq!(
            errno_of(&Error::NotRegistered { addr: 1, len: 2 }),
            libc::EFAULT
        );
        assert_eq!(ffi(|| Err(libc::ENOENT)), -libc::ENOENT);
        assert_eq!(ffi(|| Ok(7)), 7);
    }

    #[test]
    fn a_panic_does_not_cross_the_boundary() {
        let r = ffi(|| panic!("a bug"));
        assert_eq!(r, -libc::ENOTRECOVERABLE);
    }

    #[test]
    fn null_pointers_are_einval() {
        let e = -libc::EINVAL;
        // SAFETY: every pointer is NULL or a live local; the functions
        // must check before touching any.
        unsafe {
            let mut dev: *mut Device = null_mut();
            assert_eq!(pvu_open(null(), null_mut()), e);
            assert_eq!(pvu_device_info(null(), null_mut()), e);
            let mut ring: *mut Ring = null_mut();
            assert_eq!(pvu_queue_init(null_mut(), 8, &mut ring, 0), e);
            assert!(ring.is_null());
            assert_eq!(pvu_ring_params(null(), null_mut()), e);
            assert_eq!(pvu_ring_set_cq_interrupt(null_mut(), 1), e);
            assert_eq!(pvu_register_buffers(null_mut(), null(), 1), e);
            assert_eq!(pvu_unregister_buffers(null_mut()), e);
            assert_eq!(pvu_clone_buffers(null_mut(), null()), e);
            assert_eq!(pvu_clone_buffers_offset(null_mut(), null(), 0, 0, 0, 0), e);
            assert_eq!(pvu_clone_buffers_from_table(null_mut(), 1, 0, 0, 0, 0), e);
            assert_eq!(pvu_publish_buffers(null_mut(), null_mut()), e);
            assert_eq!(pvu_unpublish_buffers(null_mut(), 1), e);
            assert_eq!(pvu_buffer_table(null(), null_mut(), 0), e);
            let mut i = 0;
            let mut o = 0;
            assert_eq!(pvu_translate(null(), null(), 1, &mut i, &mut o), e);
            assert!(pvu_get_sqe(null_mut()).is_null());
            assert_eq!(pvu_sq_space_left(null()), 0);
            assert_eq!(pvu_submit(null_mut()), e);
            assert_eq!(pvu_submit_and_wait(null_mut(), 1), e);
            assert_eq!(pvu_cq_ready(null()), 0);
            let mut c: *mut Cqe = null_mut();
            assert_eq!(pvu_peek_cqe(null_mut(), &mut c), e);
            assert_eq!(pvu_wait_cqe(null_mut(), &mut c), e);
            assert_eq!(pvu_wait_cqe_timeout(null_mut(), &mut c, 1), e);
            assert!(c.is_null());
            // These return nothing and must not crash.
            pvu_cqe_seen(null_mut(), null_mut());
            pvu_cq_advance(null_mut(), 3);
            pvu_queue_exit(null_mut());
            pvu_close(null_mut());
            let mut a: *mut Arena = null_mut();
            assert_eq!(pvu_arena_info(null(), null_mut()), e);
            assert_eq!(pvu_arena_alloc(null_mut(), 1, &mut a), e);
            assert!(a.is_null());
            assert_eq!(pvu_arena_free(null_mut()), 0);
            assert!(pvu_arena_addr(null(), null_mut()).is_null());
            assert_eq!(pvu_register_arena(null_mut(), null()), e);
            assert_eq!(pvu_register_arena_rings(null(), 1, null()), e);
            // A bad path is the device's errno, and *dev stays untouched.
            let p = c"/nonexistent/vuring";
            assert_eq!(pvu_open(p.as_ptr(), &mut dev), -libc::ENOENT);
            assert!(dev.is_null());
        }
    }
}
