//! The io_uring register calls this workload times, issued raw so that the
//! timed region is the system call alone.

use std::fmt;

const REGISTER_BUFFERS: u32 = 0;
const UNREGISTER_BUFFERS: u32 = 1;
const REGISTER_CLONE_BUFFERS: u32 = 30;

/// `struct io_uring_clone_buffers` from the upstream UAPI.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct CloneBuffers {
    pub src_fd: u32,
    pub flags: u32,
    pub src_off: u32,
    pub dst_off: u32,
    pub nr: u32,
    pub pad: [u32; 3],
}

/// A positive errno value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub fn name(self) -> &'static str {
        match self.0 {
            libc::EINVAL => "EINVAL",
            libc::ENXIO => "ENXIO",
            libc::ENOMEM => "ENOMEM",
            libc::EBUSY => "EBUSY",
            libc::EFAULT => "EFAULT",
            libc::EPERM => "EPERM",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOSYS => "ENOSYS",
            _ => "E?",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{} ({})", self.name(), self.0)
    }
}

/// # Safety
/// `arg` must be valid for what the kernel accesses for `opcode`/`nr_args`.
unsafe fn register(
    fd: i32,
    opcode: u32,
    arg: *const libc::c_void,
    nr_args: u32,
) -> Result<(), Errno> {
    // SAFETY: the caller guarantees that arg is valid for what the kernel
    // accesses for opcode and nr_args.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_register, fd, opcode, arg, nr_args) };
    if r < 0 {
        Err(Errno(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(())
    }
}

/// `IORING_REGISTER_BUFFERS`: pins and registers `iovs` on ring `fd`.
pub fn register_buffers(fd: i32, iovs: &[libc::iovec]) -> Result<(), Errno> {
    // SAFETY: `iovs` is a live slice the kernel only reads; the memory it
    // describes is the pool mapping, which outlives every ring.
    unsafe {
        register(
            fd,
            REGISTER_BUFFERS,
            iovs.as_ptr().cast(),
            iovs.len() as u32,
        )
    }
}

/// `IORING_UNREGISTER_BUFFERS` on ring `fd`.
pub fn unregister_buffers(fd: i32) -> Result<(), Errno> {
    // SAFETY: no argument.
    unsafe { register(fd, UNREGISTER_BUFFERS, std::ptr::null(), 0) }
}

/// `IORING_REGISTER_CLONE_BUFFERS`: the whole table of `src_fd` into `dst_fd`.
pub fn clone_buffers(dst_fd: i32, src_fd: i32) -> Result<(), Errno> {
    let arg = CloneBuffers {
        src_fd: src_fd as u32,
        ..CloneBuffers::default()
    };
    // SAFETY: one live `io_uring_clone_buffers`, read by the kernel.
    unsafe {
        register(
            dst_fd,
            REGISTER_CLONE_BUFFERS,
            (&arg as *const CloneBuffers).cast(),
            1,
        )
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
