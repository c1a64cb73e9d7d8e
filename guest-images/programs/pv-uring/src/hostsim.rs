//! The library against the real io_uring of the machine running the tests,
//! behind a tiny in-process "VMM" that does what docs/pv-uring.md (ABI v2)
//! says the device does:
//!
//! - the host ring is `IORING_SETUP_NO_MMAP`, its rings region at the start
//!   of a memfd the "guest" maps **read-only** (its completion slot); the
//!   host SQEs are in VMM-private memory;
//! - the guest's submission slot (SQ tail, CQ head, CQ flags, SQEs at
//!   0x1000) is separate memory; a submission pass copies each guest SQE
//!   once, checks the copy with `uring_abi::policy::check`, writes the host
//!   SQE (or the refusal NOP) and calls `io_uring_enter`, never with more
//!   SQEs consumed and not reaped than the CQ holds;
//! - `R_DISABLED` + restrictions + `ENABLE_RINGS` as the second wall; one
//!   backend (a memfd with a pattern) and registered buffers that the VMM
//!   maps at other addresses than the guest, so a guest address reaching
//!   the host kernel would fail the data checks.
//!
//! A host kernel without `IORING_SETUP_NO_MMAP` (Linux 6.5) or with
//! io_uring disabled FAILS these tests: they are the only check of the
//! library against a real kernel before a guest boots. Set
//! `RINGVISOR_SKIP_HOST_URING=1` to skip them there; each skip appends
//! `<test>: <reason>` to the file named by `RINGVISOR_SKIP_LOG` when set.

use crate::device::sqe_bytes;
use crate::queue::{Cqe, Layout, Queues};
use guest_common::uring::register;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use uring_abi::policy::{self, Buffer, Refused};
use uring_abi::uring::{
    Sqe, IORING_OP_NOP, IORING_OP_READ, IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IOSQE_ASYNC,
    IOSQE_BUFFER_SELECT, IOSQE_CQE_SKIP_SUCCESS, IOSQE_FIXED_FILE, IOSQE_IO_LINK, SQE_LEN,
};
use uring_abi::vuring::VuringExtent;
use uring_abi::wire::{slot, CQ_SLOT_SIZE, PVU_CQ_EVENTFD_DISABLED, SQ_SLOT_SIZE};

const SQ_SLOT: usize = SQ_SLOT_SIZE as usize;
const CQ_SLOT: usize = CQ_SLOT_SIZE as usize;
const SETUP_R_DISABLED: u32 = 1 << 6;
const SETUP_NO_MMAP: u32 = 1 << 14;
const REG_BUFFERS: u32 = 0;
const REG_FILES: u32 = 2;
const REG_RESTRICTIONS: u32 = 11;
const REG_ENABLE_RINGS: u32 = 12;
const SQ_CQ_OVERFLOW: u32 = 1 << 1;
/// Bytes of the backend file.
const FILE_LEN: usize = 1 << 20;
/// Registered buffers: two of BUF_LEN.
const BUF_LEN: usize = 128 << 10;
/// The skip variable of these tests.
const SKIP_VAR: &str = "RINGVISOR_SKIP_HOST_URING";

/// `struct io_sqring_offsets` / `io_cqring_offsets` (the same 40 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    /// SQ: flags, CQ: overflow.
    w4: u32,
    /// SQ: dropped, CQ: cqes.
    w5: u32,
    /// SQ: array, CQ: flags.
    w6: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params` (120 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: RingOffsets,
    cq_off: RingOffsets,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Restriction {
    opcode: u16,
    op_or_flags: u8,
    resv: u8,
    resv2: [u32; 3],
}

fn file_byte(i: usize) -> u8 {
    (i * 7 + i / 4096) as u8
}

/// The VMM's registrations on the disabled host ring `fd`: the backend
/// `file`, the two buffers at the VMM's addresses `vmm_buf`, the
/// allow-list as restrictions; then ENABLE_RINGS.
fn register_host(fd: i32, file: i32, vmm_buf: *mut u8) {
    let reg = |what: &str, op: u32, arg: *const libc::c_void, n: u32| {
        // SAFETY: each call below passes a live argument laid out for its
        // opcode and count.
        if let Err(e) = unsafe { register(fd, op, arg, n) } {
            panic!("{what}: {e}");
        }
    };
    reg("register files", REG_FILES, (&file as *const i32).cast(), 1);
    let iov: Vec<libc::iovec> = (0..2)
        .map(|i| libc::iovec {
            // SAFETY: inside the VMM's mapping.
            iov_base: unsafe { vmm_buf.add(i * BUF_LEN) }.cast(),
            iov_len: BUF_LEN,
        })
        .collect();
    reg("register buffers", REG_BUFFERS, iov.as_ptr().cast(), 2);
    let mut res: Vec<Restriction> = policy::ALLOWED_OPCODES
        .iter()
        .map(|&op| Restriction {
            opcode: 1, // IORING_RESTRICTION_SQE_OP
            op_or_flags: op,
            ..Default::default()
        })
        .collect();
    res.push(Restriction {
        opcode: 2, // SQE_FLAGS_ALLOWED
        op_or_flags: policy::ALLOWED_FLAGS,
        ..Default::default()
    });
    res.push(Restriction {
        opcode: 3, // SQE_FLAGS_REQUIRED
        op_or_flags: policy::REQUIRED_FLAGS,
        ..Default::default()
    });
    let n = res.len() as u32;
    reg(
        "register restrictions",
        REG_RESTRICTIONS,
        res.as_ptr().cast(),
        n,
    );
    reg("enable rings", REG_ENABLE_RINGS, std::ptr::null(), 0);
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> *mut u8 {
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

fn memfd(name: &std::ffi::CStr, len: usize) -> i32 {
    // SAFETY: NUL-terminated name; plain flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: our memfd.
    assert_eq!(unsafe { libc::ftruncate(fd, len as i64) }, 0);
    fd
}

/// Says why the test cannot run here: a failure unless [`SKIP_VAR`] asks
/// to skip (then one line in `RINGVISOR_SKIP_LOG`).
fn unavailable(test: &str, reason: String) {
    let skip = std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1");
    let log = std::env::var_os("RINGVISOR_SKIP_LOG").map(std::path::PathBuf::from);
    skip_or_fail(test, &reason, skip, log.as_deref());
}

/// [`unavailable`] with the environment passed in.
fn skip_or_fail(test: &str, reason: &str, skip: bool, log: Option<&std::path::Path>) {
    if !skip {
        panic!("{test}: {reason} (set {SKIP_VAR}=1 to skip on such a host)");
    }
    eprintln!("{test}: skipped: {reason}");
    if let Some(path) = log {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut f) = f {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// The in-process VMM and the guest's view of one ring.
struct Sim {
    fd: i32,
    p: Params,
    /// The host ring's rings region: the VMM's read-write view of the
    /// completion slot.
    rings: *mut u8,
    /// The guest's read-only view of the same memory.
    guest_cq: *mut u8,
    /// Host SQEs: VMM-private.
    host_sqes: *mut u8,
    /// The guest's submission slot.
    guest_sq: *mut u8,
    cq_memfd: i32,
    /// The backend.
    file: i32,
    /// The registered memory as the VMM maps it (what the host kernel sees).
    vmm_buf: *mut u8,
    /// The same memory as the guest maps it (what its extents say).
    guest_buf: *mut u8,
    buf_memfd: i32,
    bufs: Vec<Option<Buffer>>,
    /// SQEs submitted to the host ring (the flow-control count).
    submitted: u32,
    host_sq_tail: u32,
    /// Every host SQE the VMM wrote (checked against the allow-list).
    written: Vec<Sqe>,
    /// The guest side.
    q: Queues,
    extents: Vec<VuringExtent>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        // SAFETY: descriptors and mappings created in `Sim::new`, owned
        // here; the ring is closed first, as the device does.
        unsafe {
            libc::close(self.fd);
            libc::munmap(self.rings.cast(), CQ_SLOT);
            libc::munmap(self.guest_cq.cast(), CQ_SLOT);
            libc::munmap(self.host_sqes.cast(), 64 * 4096);
            libc::munmap(self.guest_sq.cast(), SQ_SLOT);
            libc::munmap(self.vmm_buf.cast(), 2 * BUF_LEN);
            libc::munmap(self.guest_buf.cast(), 2 * BUF_LEN);
            libc::close(self.cq_memfd);
            libc::close(self.buf_memfd);
            libc::close(self.file);
        }
    }
}

fn word(base: *const u8, off: u32) -> &'static AtomicU32 {
    // SAFETY: callers pass offsets the kernel or the ABI gave, inside a
    // mapping that outlives the use (the Sim), 4-aligned.
    unsafe { &*(base.add(off as usize) as *const AtomicU32) }
}

impl Sim {
    /// A ring of `entries`; `None` (after [`unavailable`]) where this host
    /// cannot run it.
    fn new(test: &str, entries: u32) -> Option<Sim> {
        let cq_memfd = memfd(c"hostsim-cq", CQ_SLOT);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let rings = map(CQ_SLOT, rw, libc::MAP_SHARED, cq_memfd);
        let guest_cq = map(CQ_SLOT, libc::PROT_READ, libc::MAP_SHARED, cq_memfd);
        let host_sqes = map(64 * 4096, rw, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1);
        let guest_sq = map(SQ_SLOT, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
        let mut p = Params {
            flags: SETUP_NO_MMAP | SETUP_R_DISABLED,
            ..Default::default()
        };
        p.cq_off.user_addr = rings as u64;
        p.sq_off.user_addr = host_sqes as u64;
        // SAFETY: io_uring_setup with a live params struct.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut p as *mut Params) }
            as i32;
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: the mappings and memfd made above, unused.
            unsafe {
                libc::munmap(rings.cast(), CQ_SLOT);
                libc::munmap(guest_cq.cast(), CQ_SLOT);
                libc::munmap(host_sqes.cast(), 64 * 4096);
                libc::munmap(guest_sq.cast(), SQ_SLOT);
                libc::close(cq_memfd);
            }
            unavailable(
                test,
                format!("io_uring_setup(IORING_SETUP_NO_MMAP): {e} (needs Linux 6.5+ with io_uring enabled)"),
            );
            return None;
        }
        let buf_memfd = memfd(c"hostsim-buf", 2 * BUF_LEN);
        let vmm_buf = map(2 * BUF_LEN, rw, libc::MAP_SHARED, buf_memfd);
        let guest_buf = map(2 * BUF_LEN, rw, libc::MAP_SHARED, buf_memfd);
        let file = memfd(c"hostsim-file", FILE_LEN);
        let data: Vec<u8> = (0..FILE_LEN).map(file_byte).collect();
        // SAFETY: `data` is a live buffer of data.len() bytes.
        let written = unsafe { libc::pwrite(file, data.as_ptr().cast(), data.len(), 0) };
        assert_eq!(written, data.len() as isize);
        let layout = Layout {
            sq_entries: p.sq_entries,
            cq_entries: p.cq_entries,
            cq_tail: p.cq_off.tail,
            cqes: p.cq_off.w5,
            sq_slot_len: SQ_SLOT,
            cq_slot_len: CQ_SLOT,
            polled: false,
        };
        // SAFETY: the guest's two mappings have the layout's sizes and live
        // as long as the Sim that owns `q`.
        let q = unsafe { Queues::new(guest_sq, guest_cq, &layout) }
            .expect("the host ring's layout fits the slots");
        let mut sim = Sim {
            fd,
            p,
            rings,
            guest_cq,
            host_sqes,
            guest_sq,
            cq_memfd,
            file,
            vmm_buf,
            guest_buf,
            buf_memfd,
            bufs: Vec::new(),
            submitted: 0,
            host_sq_tail: 0,
            written: Vec::new(),
            q,
            extents: Vec::new(),
        };
        register_host(fd, file, vmm_buf);
        sim.bufs = (0..2)
            .map(|i| {
                Some(Buffer {
                    host_addr: vmm_buf as u64 + (i * BUF_LEN) as u64,
                    len: BUF_LEN as u64,
                })
            })
            .collect();
        sim.extents = (0..2)
            .map(|i| VuringExtent {
                user_addr: guest_buf as u64 + (i * BUF_LEN) as u64,
                len: BUF_LEN as u64,
            })
            .collect();
        Some(sim)
    }

    /// One submission pass of the device (docs/pv-uring.md, "Submitting",
    /// step 3). Returns the SQEs submitted.
    fn pass(&mut self) -> u32 {
        let g = self.guest_sq;
        let (sq, cq) = (self.p.sq_off, self.p.cq_off);
        let tail = word(g, slot::SQ_TAIL as u32).load(Ordering::Acquire);
        let guest_cq_head = word(g, slot::CQ_HEAD as u32).load(Ordering::Acquire);
        let cq_flags = word(g, slot::CQ_FLAGS as u32).load(Ordering::Acquire);
        let host_head = word(self.rings, cq.head).load(Ordering::Acquire);
        let host_tail = word(self.rings, cq.tail).load(Ordering::Acquire);
        // A CQ head outside [host CQ head, CQ tail] is ignored.
        if guest_cq_head.wrapping_sub(host_head) <= host_tail.wrapping_sub(host_head) {
            word(self.rings, cq.head).store(guest_cq_head, Ordering::Release);
        }
        word(self.rings, cq.w6).store(cq_flags & PVU_CQ_EVENTFD_DISABLED, Ordering::Release);
        let cq_head = word(self.rings, cq.head).load(Ordering::Acquire);
        let head_w = word(g, slot::SQ_HEAD as u32);
        let mut head = head_w.load(Ordering::Relaxed);
        let entries = self.p.sq_entries;
        // A tail more than sq_entries ahead is ignored for this pass.
        if tail.wrapping_sub(head) > entries {
            return 0;
        }
        let mut n = 0;
        while head != tail && self.submitted.wrapping_sub(cq_head) < self.p.cq_entries {
            let mut raw = [0u8; SQE_LEN];
            let at = slot::SQES + (head & (entries - 1)) as usize * SQE_LEN;
            // SAFETY: inside the guest's submission slot (entries x 64
            // bytes at 0x1000 fit its 512 KiB); copied once, then checked.
            unsafe { std::ptr::copy_nonoverlapping(g.add(at), raw.as_mut_ptr(), SQE_LEN) };
            let res = (1u32, self.bufs.as_slice());
            let host = match policy::check(&raw, &res) {
                Ok(s) => s,
                Err(Refused(e)) => policy::refusal(&raw, e),
            };
            self.written.push(host);
            let idx = self.host_sq_tail & (entries - 1);
            // SAFETY: idx < entries; the host SQEs (VMM-private) hold 4096
            // entries; the SQ array is inside the rings region.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    host.to_bytes().as_ptr(),
                    self.host_sqes.add(idx as usize * SQE_LEN),
                    SQE_LEN,
                );
                (self.rings.add(sq.w6 as usize) as *mut u32)
                    .add(idx as usize)
                    .write_volatile(idx);
            }
            self.host_sq_tail = self.host_sq_tail.wrapping_add(1);
            self.submitted = self.submitted.wrapping_add(1);
            head = head.wrapping_add(1);
            n += 1;
        }
        word(self.rings, sq.tail).store(self.host_sq_tail, Ordering::Release);
        head_w.store(head, Ordering::Release);
        if n > 0 {
            // SAFETY: io_uring_enter without arguments.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd,
                    n,
                    0,
                    0,
                    std::ptr::null::<u8>(),
                    0,
                )
            };
            assert_eq!(
                r,
                i64::from(n),
                "io_uring_enter: {}",
                std::io::Error::last_os_error()
            );
        }
        n
    }

    /// The guest's submit: publish the tail, ring the "doorbell".
    fn submit(&mut self) {
        if self.q.flush().1 {
            self.pass();
        }
    }

    /// The guest reaps `n` CQEs; after reaping, the library's rule for
    /// SQEs a full CQ stopped (as `Completion`'s drop: a doorbell).
    fn reap(&mut self, n: usize) -> Vec<Cqe> {
        let t0 = std::time::Instant::now();
        let before = self.q.cq_head();
        let mut out = Vec::new();
        while out.len() < n {
            match self.q.pop() {
                Some(c) => out.push(c),
                None => {
                    assert!(t0.elapsed().as_secs() < 10, "timeout: {out:?}");
                    std::hint::spin_loop();
                }
            }
        }
        if self.q.stalled_after_reap(before) {
            self.pass();
        }
        out
    }

    fn run(&mut self, sqe: [u8; 64]) -> i32 {
        self.q.push_bytes(&sqe).unwrap();
        self.submit();
        self.reap(1)[0].res
    }

    fn run_sqe(&mut self, s: Sqe) -> i32 {
        self.run(s.to_bytes())
    }

    /// A guest pointer into buffer `i` at `off`.
    fn guest_ptr(&self, i: usize, off: usize) -> *mut u8 {
        // SAFETY: callers stay inside the guest's mapping.
        unsafe { self.guest_buf.add(i * BUF_LEN + off) }
    }

    /// A READ_FIXED of `len` bytes at file offset `off` into the guest
    /// range at `ptr`, built as a guest program does.
    fn read_at(&self, ptr: *const u8, len: u32, off: u64) -> io_uring::squeue::Entry {
        let at = crate::extent::translate(&self.extents, ptr as u64, u64::from(len)).unwrap();
        crate::device::read_fixed(0, at, len, off)
    }

    /// A good request through the library: reads 4 KiB of the file into
    /// buffer 1 and checks it.
    fn good_io(&mut self, salt: usize) {
        let off = (salt % 200) * 4096;
        let dst = self.guest_ptr(1, 4096);
        // SAFETY: the guest's mapping, nothing in flight.
        unsafe { std::ptr::write_bytes(dst, 0xa5, 4096) };
        let sqe = self.read_at(dst, 4096, off as u64);
        assert_eq!(self.run(sqe_bytes(&sqe)), 4096, "good read {salt}");
        // SAFETY: the read completed.
        let got = unsafe { std::slice::from_raw_parts(dst, 4096) };
        for (k, &v) in got.iter().enumerate() {
            assert_eq!(v, file_byte(off + k), "good read {salt} byte {k}");
        }
    }

    fn assert_host_sqes_allowed(&self) {
        let res = (1u32, self.bufs.as_slice());
        for s in &self.written {
            assert!(policy::is_allowed_host_sqe(s, &res), "host SQE {s:?}");
        }
    }

    fn host_overflowed(&self) -> bool {
        word(self.rings, self.p.sq_off.w4).load(Ordering::Acquire) & SQ_CQ_OVERFLOW != 0
            || word(self.rings, self.p.cq_off.w4).load(Ordering::Acquire) != 0
    }
}

/// A valid guest READ_FIXED as plain fields: buffer 0, offset 0.
fn good_read() -> Sqe {
    Sqe {
        opcode: IORING_OP_READ_FIXED,
        flags: IOSQE_FIXED_FILE,
        fd: 0,
        off: 8192,
        addr: 0,
        len: 4096,
        buf_index: 0,
        user_data: 7,
        ..Sqe::default()
    }
}

#[test]
fn data_is_named_by_index_and_offset() {
    let Some(mut h) = Sim::new("data_is_named_by_index_and_offset", 8) else {
        return;
    };
    assert_eq!(h.run(sqe_bytes(&crate::device::nop())), 0);
    // Unaligned, in the middle of buffer 1.
    let dst = h.guest_ptr(1, 1000);
    let sqe = h.read_at(dst, 5000, 12345);
    assert_eq!(
        sqe_bytes(&sqe)[16..24],
        1000u64.to_le_bytes(),
        "addr = offset"
    );
    assert_eq!(h.run(sqe_bytes(&sqe)), 5000);
    // SAFETY: the read completed.
    let got = unsafe { std::slice::from_raw_parts(dst, 5000) };
    assert!(got
        .iter()
        .enumerate()
        .all(|(k, &v)| v == file_byte(12345 + k)));
    // A write from buffer 0, read back with pread.
    let src = h.guest_ptr(0, 4096);
    // SAFETY: the guest's mapping, nothing in flight.
    unsafe { std::ptr::write_bytes(src, 0x3c, 4096) };
    let at = crate::extent::translate(&h.extents, src as u64, 4096).unwrap();
    let w = crate::device::write_fixed(0, at, 4096, 65536);
    assert_eq!(h.run(sqe_bytes(&w)), 4096);
    let mut back = vec![0u8; 4096];
    // SAFETY: a live buffer.
    unsafe { libc::pread(h.file, back.as_mut_ptr().cast(), 4096, 65536) };
    assert!(back.iter().all(|&v| v == 0x3c));
    h.assert_host_sqes_allowed();
    // The host SQEs carry the VMM's addresses, never the guest's.
    assert!(h.written.iter().all(|s| s.addr == 0
        || (s.addr >= h.vmm_buf as u64 && s.addr < h.vmm_buf as u64 + 2 * BUF_LEN as u64)));
}

#[test]
fn hostile_sqes_get_the_spec_errno_and_the_ring_goes_on() {
    let Some(mut h) = Sim::new("hostile_sqes_get_the_spec_errno_and_the_ring_goes_on", 8) else {
        return;
    };
    // A readable VMM address: what the PI attribute would have pointed at.
    let vmm_addr = h.vmm_buf as u64;
    let g = good_read();
    let (eacces, einval, efault, ebadf) = (libc::EACCES, libc::EINVAL, libc::EFAULT, libc::EBADF);
    let mut cases: Vec<(String, Sqe, i32)> = vec![
        (
            "PI attr_ptr + attr_type_mask".into(),
            Sqe {
                attr_ptr: vmm_addr,
                attr_type_mask: 1,
                ..g
            },
            einval,
        ),
        (
            "attr_type_mask alone".into(),
            Sqe {
                attr_type_mask: 1,
                ..g
            },
            einval,
        ),
        (
            "attr_ptr alone".into(),
            Sqe {
                attr_ptr: vmm_addr,
                ..g
            },
            einval,
        ),
        (
            "RT ioprio".into(),
            Sqe {
                ioprio: 1 << 13,
                ..g
            },
            einval,
        ),
        (
            "personality".into(),
            Sqe {
                personality: 1,
                ..g
            },
            einval,
        ),
        ("file_index".into(), Sqe { file_index: 1, ..g }, einval),
        ("rw_flags".into(), Sqe { op_flags: 1, ..g }, einval),
        ("buf_index 2 of 2".into(), Sqe { buf_index: 2, ..g }, efault),
        (
            "buf_index 0xffff".into(),
            Sqe {
                buf_index: 0xffff,
                ..g
            },
            efault,
        ),
        (
            "range past the buffer".into(),
            Sqe {
                addr: BUF_LEN as u64 - 2048,
                ..g
            },
            efault,
        ),
        (
            "offset = buffer length".into(),
            Sqe {
                addr: BUF_LEN as u64,
                len: 1,
                ..g
            },
            efault,
        ),
        (
            "offset wraps".into(),
            Sqe {
                addr: u64::MAX - 8,
                ..g
            },
            efault,
        ),
        ("backend 1 of 1".into(), Sqe { fd: 1, ..g }, ebadf),
        ("backend -1".into(), Sqe { fd: -1, ..g }, ebadf),
        (
            "WRITE_FIXED of the sentinel".into(),
            Sqe {
                opcode: IORING_OP_WRITE_FIXED,
                fd: 16,
                ..g
            },
            ebadf,
        ),
        (
            "READ with a raw guest address".into(),
            Sqe {
                opcode: IORING_OP_READ,
                addr: h.guest_buf as u64,
                ..g
            },
            eacces,
        ),
        (
            "READ with a raw VMM address".into(),
            Sqe {
                opcode: IORING_OP_READ,
                addr: vmm_addr,
                ..g
            },
            eacces,
        ),
        ("opcode 254".into(), Sqe { opcode: 254, ..g }, eacces),
        ("no FIXED_FILE".into(), Sqe { flags: 0, ..g }, eacces),
        (
            "NOP with an address".into(),
            Sqe {
                opcode: IORING_OP_NOP,
                addr: 1,
                len: 0,
                off: 0,
                ..g
            },
            einval,
        ),
    ];
    for f in [
        IOSQE_ASYNC,
        IOSQE_BUFFER_SELECT,
        IOSQE_CQE_SKIP_SUCCESS,
        1 << 7,
    ] {
        cases.push((
            format!("flag {f:#x}"),
            Sqe {
                flags: IOSQE_FIXED_FILE | f,
                ..g
            },
            eacces,
        ));
    }
    // Every byte no allowed opcode uses, one at a time.
    for at in [2, 3, 42, 43, 44, 45, 46, 47, 48, 55, 56, 63] {
        let mut raw = g.to_bytes();
        raw[at] = 0x80;
        cases.push((format!("reserved byte {at}"), Sqe::from_bytes(&raw), einval));
    }
    for (k, (what, sqe, want)) in cases.into_iter().enumerate() {
        let res = h.run_sqe(sqe);
        assert_eq!(res, -want, "{what}: res {res}");
        h.good_io(k);
    }
    h.assert_host_sqes_allowed();
    assert!(!h.host_overflowed());
}

#[test]
fn a_refused_link_head_cancels_the_chain() {
    let Some(mut h) = Sim::new("a_refused_link_head_cancels_the_chain", 8) else {
        return;
    };
    let head = Sqe {
        opcode: IORING_OP_READ,
        flags: IOSQE_FIXED_FILE | IOSQE_IO_LINK,
        user_data: 1,
        ..good_read()
    };
    h.q.push_bytes(&head.to_bytes()).unwrap();
    h.q.push_bytes(
        &Sqe {
            user_data: 2,
            ..good_read()
        }
        .to_bytes(),
    )
    .unwrap();
    h.submit();
    let c = h.reap(2);
    let res = |ud| c.iter().find(|c| c.user_data == ud).unwrap().res;
    assert_eq!(res(1), -libc::EACCES);
    assert_eq!(res(2), -libc::ECANCELED);
    h.good_io(1);
}

#[test]
fn a_cq_never_reaped_stops_submission_at_cq_entries() {
    let Some(mut h) = Sim::new("a_cq_never_reaped_stops_submission_at_cq_entries", 8) else {
        return;
    };
    let cq_entries = h.p.cq_entries;
    let nop = Sqe {
        opcode: IORING_OP_NOP,
        flags: IOSQE_FIXED_FILE,
        ..Sqe::default()
    };
    // A guest that never reaps: fill the SQ, submit, again and again.
    let mut pushed = 0u32;
    for _ in 0..1000 {
        while h
            .q
            .push_bytes(
                &Sqe {
                    user_data: u64::from(pushed),
                    ..nop
                }
                .to_bytes(),
            )
            .is_ok()
        {
            pushed += 1;
        }
        h.q.flush();
        h.pass();
    }
    assert_eq!(h.submitted, cq_entries, "the VMM consumed past a full CQ");
    assert_eq!(pushed, cq_entries + h.p.sq_entries, "the SQ holds the rest");
    assert_eq!(h.q.cq_ready(), cq_entries);
    assert!(!h.host_overflowed(), "the host kernel's CQ overflowed");
    // Reaping makes room; the library rings again; everything completes
    // in order.
    let mut seen = Vec::new();
    while seen.len() < pushed as usize {
        let n = h.q.cq_ready().max(1) as usize;
        seen.extend(h.reap(n).into_iter().map(|c| (c.user_data, c.res)));
    }
    assert_eq!(
        seen,
        (0..u64::from(pushed)).map(|u| (u, 0)).collect::<Vec<_>>()
    );
    assert!(!h.host_overflowed());
    h.good_io(3);
}

#[test]
fn bogus_ring_indices_are_ignored() {
    let Some(mut h) = Sim::new("bogus_ring_indices_are_ignored", 8) else {
        return;
    };
    h.good_io(1);
    let nop = Sqe {
        opcode: IORING_OP_NOP,
        flags: IOSQE_FIXED_FILE,
        user_data: 5,
        ..Sqe::default()
    };
    h.q.push_bytes(&nop.to_bytes()).unwrap();
    // A tail far past the head: the pass consumes nothing.
    let (head, ..) = h.q.indices();
    h.q.store_raw_tail(head.wrapping_add(1000));
    assert_eq!(h.pass(), 0);
    // A CQ head past the CQ tail: not carried to the host ring.
    let host_head = word(h.rings, h.p.cq_off.head).load(Ordering::Acquire);
    h.q.store_raw_cq_head(host_head.wrapping_add(500));
    h.q.restore();
    h.q.store_raw_cq_head(host_head.wrapping_add(500));
    h.q.store_raw_tail(head);
    h.pass();
    assert_eq!(
        word(h.rings, h.p.cq_off.head).load(Ordering::Acquire),
        host_head
    );
    h.q.restore();
    h.submit();
    assert_eq!(h.reap(1)[0].user_data, 5);
    h.good_io(2);
}

#[test]
fn real_ring_wraps_and_batches() {
    let Some(mut h) = Sim::new("real_ring_wraps_and_batches", 8) else {
        return;
    };
    assert_eq!(h.q.sq_entries(), 8);
    let mut next = 0u64;
    for round in 0..100 {
        let n = 1 + round % 8;
        for _ in 0..n {
            let e = crate::device::nop().user_data(next);
            h.q.push_bytes(&sqe_bytes(&e)).unwrap();
            next += 1;
        }
        if n == 8 {
            assert!(h.q.push_bytes(&[0; 64]).is_err(), "SQ full");
        }
        h.submit();
        let c = h.reap(n as usize);
        let first = next - n;
        for (k, c) in c.iter().enumerate() {
            assert_eq!((c.user_data, c.res), (first + k as u64, 0));
        }
        assert_eq!(h.q.sq_space(), 8);
    }
}

#[test]
fn a_host_without_no_mmap_fails_unless_the_skip_is_asked_for() {
    // Without the variable: a failure, not a silent pass.
    let r = std::panic::catch_unwind(|| skip_or_fail("t", "no NO_MMAP", false, None));
    assert!(r.is_err(), "an unusable host passed silently");
    // With it: one line per skip in the log.
    let log = std::env::temp_dir().join(format!("hostsim-skip-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    skip_or_fail("t", "no NO_MMAP", true, Some(&log));
    skip_or_fail("u", "io_uring disabled", true, Some(&log));
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert_eq!(text, "t: no NO_MMAP\nu: io_uring disabled\n");
}
