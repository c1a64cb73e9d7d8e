//! Raw `io_uring_register(2)` for what the `io-uring` crate cannot send.
//!
//! Prefer the crate: `Submitter::register_buffers`, `unregister_buffers`,
//! `register_buffers_clone` (a whole table) and
//! `register_buffers_clone_offset` (a range, with `CloneBuffersFlags`).
//! What is left here needs the raw call: malformed arguments for the error
//! cases (bad pointers, non-zero padding, wrong `nr_args`), descriptors
//! that are no ring (the crate's calls need an `IoUring`), and the index a
//! ring fd registration gets (the crate keeps it to itself).

use crate::Errno;

/// `IORING_REGISTER_RING_FDS`.
pub const REGISTER_RING_FDS: u32 = 20;
/// `IORING_UNREGISTER_RING_FDS`.
pub const UNREGISTER_RING_FDS: u32 = 21;
/// `IORING_REGISTER_CLONE_BUFFERS` and `struct io_uring_clone_buffers`
/// (the ABI crate's, which the host device shares), for the raw calls (a
/// well-formed clone between rings: the crate).
pub use uring_abi::uring::{CloneBuffers, IORING_REGISTER_CLONE_BUFFERS as REGISTER_CLONE_BUFFERS};

/// `struct io_uring_rsrc_update`, used for ring fd registration.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RsrcUpdate {
    /// The table index (`u32::MAX`: the kernel chooses).
    pub offset: u32,
    /// Must be zero.
    pub resv: u32,
    /// The ring fd.
    pub data: u64,
}

/// Calls `io_uring_register(fd, opcode, arg, nr_args)`.
///
/// # Safety
/// `arg` must be valid for whatever the kernel reads or writes for `opcode`
/// and `nr_args`, or be an address the caller deliberately wants the kernel
/// to reject (the kernel validates user pointers; it never faults the caller).
pub unsafe fn register(
    fd: i32,
    opcode: u32,
    arg: *const libc::c_void,
    nr_args: u32,
) -> Result<i32, Errno> {
    // SAFETY: the caller guarantees that arg is valid for what the kernel
    // accesses for opcode and nr_args (or one it rejects).
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_register, fd, opcode, arg, nr_args) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as i32)
    }
}

/// `IORING_REGISTER_CLONE_BUFFERS` on `dst_fd`, which may be no ring at
/// all, with a well-formed argument.
pub fn clone_buffers(dst_fd: i32, arg: &CloneBuffers) -> Result<(), Errno> {
    // SAFETY: `arg` is a live, properly laid out `io_uring_clone_buffers`
    // that the kernel only reads; nr_args is 1 as the opcode requires.
    unsafe {
        register(
            dst_fd,
            REGISTER_CLONE_BUFFERS,
            (arg as *const CloneBuffers).cast(),
            1,
        )
    }
    .map(drop)
}

/// Registers ring `fd` in the calling task's ring table; returns its index.
pub fn register_ring_fd(fd: i32) -> Result<u32, Errno> {
    let mut up = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: fd as u64,
    };
    // SAFETY: one live `io_uring_rsrc_update` that the kernel reads and
    // writes (it stores the chosen index in `offset`).
    unsafe {
        register(
            fd,
            REGISTER_RING_FDS,
            (&mut up as *mut RsrcUpdate).cast(),
            1,
        )
    }?;
    Ok(up.offset)
}

/// Removes registered ring index `index` from the calling task's table.
pub fn unregister_ring_fd(fd: i32, index: u32) -> Result<(), Errno> {
    let up = RsrcUpdate {
        offset: index,
        resv: 0,
        data: 0,
    };
    // SAFETY: one live `io_uring_rsrc_update` read by the kernel.
    unsafe {
        register(
            fd,
            UNREGISTER_RING_FDS,
            (&up as *const RsrcUpdate).cast(),
            1,
        )
    }
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_uapi_layout() {
        assert_eq!(std::mem::align_of::<CloneBuffers>(), 4);
        assert_eq!(std::mem::size_of::<RsrcUpdate>(), 16);
    }
}
