//! Rings, the scratch file, and fixed-buffer I/O used to prove which memory
//! a registered-buffer index maps.

use crate::harness::{step, CaseError, CaseResult};
use crate::mem::{fill, first_diff, pattern, snapshot, Mapping, Page};
use crate::sys::Errno;
use crate::{ensure, fail};
use io_uring::types::CloneBuffersFlags;
use io_uring::{opcode, types, IoUring};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Buffers per suite pool.
pub const NBUF: usize = 4;
/// Bytes per suite buffer.
pub const BUF: usize = 64 << 10;
/// Bytes per suite pool.
pub const POOL: usize = NBUF * BUF;
/// Bytes moved by each fixed-I/O check.
pub const CHUNK: usize = 4096;

/// The suite's main buffer pool (4 x 64 KiB of 4 KiB pages), faulted in once.
pub fn pool_a() -> &'static Mapping {
    static P: OnceLock<Mapping> = OnceLock::new();
    P.get_or_init(|| Mapping::with_page(POOL, Page::Small4K).expect("mmap pool A"))
}

/// A second, disjoint pool for destination rings' own buffers.
pub fn pool_b() -> &'static Mapping {
    static P: OnceLock<Mapping> = OnceLock::new();
    P.get_or_init(|| Mapping::with_page(POOL, Page::Small4K).expect("mmap pool B"))
}

/// The errno of a failed io-uring crate call; its value dropped.
pub fn errno<T>(r: std::io::Result<T>) -> Result<(), Errno> {
    Errno::of(r).map(drop)
}

/// A ring and the helpers the cases need.
pub struct Ring {
    pub io: IoUring,
}

impl Ring {
    pub fn new() -> Result<Self, CaseError> {
        Ok(Ring {
            io: step("io_uring_setup", IoUring::builder().build(8))?,
        })
    }

    pub fn with(b: &io_uring::Builder) -> Result<Self, CaseError> {
        Ok(Ring {
            io: step("io_uring_setup", b.build(8))?,
        })
    }

    pub fn fd(&self) -> i32 {
        self.io.as_raw_fd()
    }

    /// IORING_REGISTER_BUFFERS of `iovs`.
    pub fn register(&self, iovs: &[libc::iovec]) -> Result<(), Errno> {
        // SAFETY: the kernel only reads the iovecs and pins their pages;
        // the cases submit fixed I/O only into memory they keep mapped.
        errno(unsafe { self.io.submitter().register_buffers(iovs) })
    }

    pub fn unregister(&self) -> Result<(), Errno> {
        errno(self.io.submitter().unregister_buffers())
    }

    /// Clones `nr` buffers (0: the whole table) from entry `src_off` of
    /// the ring `src_fd` to entry `dst_off` of this one.
    pub fn clone_range(
        &self,
        src_fd: i32,
        src_off: u32,
        dst_off: u32,
        nr: u32,
        flags: CloneBuffersFlags,
    ) -> Result<(), Errno> {
        errno(
            self.io
                .submitter()
                .register_buffers_clone_offset(src_fd, src_off, dst_off, nr, flags),
        )
    }

    /// Clone the whole table of `src` into this (empty) ring.
    pub fn clone_all(&self, src: &Ring) -> Result<(), Errno> {
        self.clone_all_fd(src.fd())
    }

    /// Clone the whole table of the ring `src_fd` into this (empty) ring.
    pub fn clone_all_fd(&self, src_fd: i32) -> Result<(), Errno> {
        errno(self.io.submitter().register_buffers_clone(src_fd))
    }

    /// Submits one READ_FIXED/WRITE_FIXED and returns the CQE result.
    pub fn fixed(
        &mut self,
        write: bool,
        file: &Scratch,
        index: u16,
        addr: *mut u8,
        len: usize,
        off: u64,
    ) -> Result<i32, CaseError> {
        let fd = types::Fd(file.fd.as_raw_fd());
        let sqe = if write {
            opcode::WriteFixed::new(fd, addr, len as u32, index)
                .offset(off)
                .build()
        } else {
            opcode::ReadFixed::new(fd, addr, len as u32, index)
                .offset(off)
                .build()
        };
        // SAFETY: `addr..addr+len` is memory the caller owns and keeps
        // mapped until the completion is reaped below (we wait for it).
        unsafe { self.io.submission().push(&sqe) }
            .map_err(|_| CaseError::Fail("SQ full".into()))?;
        step("io_uring_enter", self.io.submit_and_wait(1))?;
        let cqe = self.io.completion().next();
        match cqe {
            Some(c) => Ok(c.result()),
            None => fail!("no completion after submit_and_wait(1)"),
        }
    }

    /// Proves that buffer `index` covers `addr..addr+len` of caller memory,
    /// both ways: WRITE_FIXED from it lands in the file with the expected
    /// bytes, and READ_FIXED into it puts file bytes into that memory.
    pub fn check_maps(
        &mut self,
        file: &Scratch,
        index: u16,
        addr: *mut u8,
        len: usize,
        seed: u32,
    ) -> CaseResult {
        // SAFETY: callers pass addresses inside a suite Mapping they own.
        unsafe { fill(addr, len, seed) };
        let r = self.fixed(true, file, index, addr, len, 0)?;
        ensure!(
            r == len as i32,
            "WRITE_FIXED index {index}: result {r} ({}), want {len}",
            res_name(r)
        );
        let got = file.pread(len, 0)?;
        let want = pattern(seed, len);
        if let Some(i) = first_diff(&got, &want) {
            fail!("WRITE_FIXED index {index}: file differs from buffer at byte {i}");
        }
        let seed2 = seed.wrapping_add(0x9e37);
        file.pwrite(&pattern(seed2, len), 0)?;
        let r = self.fixed(false, file, index, addr, len, 0)?;
        ensure!(
            r == len as i32,
            "READ_FIXED index {index}: result {r} ({}), want {len}",
            res_name(r)
        );
        // SAFETY: as above; the kernel's write completed before the CQE.
        let got = unsafe { snapshot(addr, len) };
        if let Some(i) = first_diff(&got, &pattern(seed2, len)) {
            fail!("READ_FIXED index {index}: memory differs from file at byte {i}");
        }
        Ok(())
    }

    /// Checks both ends of a whole buffer: its first and last CHUNK bytes.
    pub fn check_buffer(
        &mut self,
        file: &Scratch,
        index: u16,
        base: *mut u8,
        len: usize,
        seed: u32,
    ) -> CaseResult {
        self.check_maps(file, index, base, CHUNK, seed)?;
        // SAFETY: `len >= CHUNK`, so the last chunk starts inside the buffer.
        let tail = unsafe { base.add(len - CHUNK) };
        self.check_maps(file, index, tail, CHUNK, seed.wrapping_add(1))
    }

    /// Expects READ_FIXED of `addr` through `index` to fail with -EFAULT:
    /// the index is empty or does not cover `addr`.
    pub fn check_not_maps(&mut self, file: &Scratch, index: u16, addr: *mut u8) -> CaseResult {
        let r = self.fixed(false, file, index, addr, CHUNK, 0)?;
        ensure!(
            r == -libc::EFAULT,
            "READ_FIXED index {index} at {addr:p}: want -EFAULT (not mapped there), got {r} ({})",
            res_name(r)
        );
        Ok(())
    }
}

fn res_name(r: i32) -> String {
    if r < 0 {
        format!("{}", Errno(-r))
    } else {
        "ok".into()
    }
}

/// A regular file for fixed I/O: a memfd, or an unlinked file in /tmp.
pub struct Scratch {
    fd: OwnedFd,
}

impl Scratch {
    pub fn new() -> Result<Self, CaseError> {
        // SAFETY: the name is a NUL-terminated literal.
        let fd = unsafe { libc::memfd_create(c"clone-suite".as_ptr(), libc::MFD_CLOEXEC) };
        let fd = if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            unsafe { OwnedFd::from_raw_fd(fd) }
        } else {
            let dir = std::env::temp_dir();
            step("mkdir tmp", std::fs::create_dir_all(&dir))?;
            let path = dir.join(format!("clone-suite.{}", std::process::id()));
            let f = step(
                "create scratch file",
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path),
            )?;
            let _ = std::fs::remove_file(&path);
            OwnedFd::from(f)
        };
        // SAFETY: ftruncate on our own descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), (2 * CHUNK) as i64) } != 0 {
            fail!("ftruncate scratch: {}", Errno::last());
        }
        Ok(Scratch { fd })
    }

    pub fn pread(&self, len: usize, off: i64) -> Result<Vec<u8>, CaseError> {
        let mut v = vec![0u8; len];
        // SAFETY: `v` has `len` writable bytes.
        let r = unsafe { libc::pread(self.fd.as_raw_fd(), v.as_mut_ptr().cast(), len, off) };
        ensure!(r == len as isize, "pread scratch: {r} ({})", Errno::last());
        Ok(v)
    }

    pub fn pwrite(&self, data: &[u8], off: i64) -> CaseResult {
        // SAFETY: `data` is a live slice.
        let r = unsafe { libc::pwrite(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len(), off) };
        ensure!(
            r == data.len() as isize,
            "pwrite scratch: {r} ({})",
            Errno::last()
        );
        Ok(())
    }
}

/// Base address of buffer `i` of a suite pool.
pub fn buf(pool: &Mapping, i: usize) -> *mut u8 {
    pool.at(i * BUF)
}
