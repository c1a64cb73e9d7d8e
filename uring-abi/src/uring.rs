//! The io_uring uAPI as ringvisor uses it (Linux `include/uapi/linux/io_uring.h`).

/// `IORING_OP_NOP`.
pub const IORING_OP_NOP: u8 = 0;
/// `IORING_OP_READV`.
pub const IORING_OP_READV: u8 = 1;
/// `IORING_OP_FSYNC`.
pub const IORING_OP_FSYNC: u8 = 3;
/// `IORING_OP_READ_FIXED`.
pub const IORING_OP_READ_FIXED: u8 = 4;
/// `IORING_OP_WRITE_FIXED`.
pub const IORING_OP_WRITE_FIXED: u8 = 5;
/// `IORING_OP_READ`.
pub const IORING_OP_READ: u8 = 22;

/// `IOSQE_FIXED_FILE`: `fd` is an index into the ring's fixed files.
pub const IOSQE_FIXED_FILE: u8 = 1 << 0;
/// `IOSQE_IO_DRAIN`.
pub const IOSQE_IO_DRAIN: u8 = 1 << 1;
/// `IOSQE_IO_LINK`.
pub const IOSQE_IO_LINK: u8 = 1 << 2;
/// `IOSQE_IO_HARDLINK`.
pub const IOSQE_IO_HARDLINK: u8 = 1 << 3;
/// `IOSQE_ASYNC`.
pub const IOSQE_ASYNC: u8 = 1 << 4;
/// `IOSQE_BUFFER_SELECT`.
pub const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
/// `IOSQE_CQE_SKIP_SUCCESS`: no CQE on success (would break the
/// one-CQE-per-SQE flow control; never allowed).
pub const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;

/// `IORING_FSYNC_DATASYNC` (`fsync_flags`).
pub const IORING_FSYNC_DATASYNC: u32 = 1 << 0;
/// `IORING_NOP_INJECT_RESULT` (`nop_flags`, Linux 6.10+): the NOP
/// completes with `len` as its result.
pub const IORING_NOP_INJECT_RESULT: u32 = 1 << 0;

/// `IORING_CQ_EVENTFD_DISABLED` (CQ ring flags).
pub const IORING_CQ_EVENTFD_DISABLED: u32 = 1 << 0;

/// Bytes of one SQE (without `IORING_SETUP_SQE128`).
pub const SQE_LEN: usize = 64;
/// Bytes of one CQE (without `IORING_SETUP_CQE32`).
pub const CQE_LEN: usize = 16;

/// Byte offsets of the fields of `struct io_uring_sqe` that ringvisor
/// reads or writes (every other byte must be zero, see [`crate::policy`]).
pub mod sqe {
    /// `__u8 opcode`.
    pub const OPCODE: usize = 0;
    /// `__u8 flags` (IOSQE_*).
    pub const FLAGS: usize = 1;
    /// `__u16 ioprio`.
    pub const IOPRIO: usize = 2;
    /// `__s32 fd`.
    pub const FD: usize = 4;
    /// `__u64 off`.
    pub const OFF: usize = 8;
    /// `__u64 addr`.
    pub const ADDR: usize = 16;
    /// `__u32 len`.
    pub const LEN: usize = 24;
    /// `__u32 rw_flags` / `fsync_flags` / `nop_flags`.
    pub const OP_FLAGS: usize = 28;
    /// `__u64 user_data`.
    pub const USER_DATA: usize = 32;
    /// `__u16 buf_index`.
    pub const BUF_INDEX: usize = 40;
    /// `__u16 personality`.
    pub const PERSONALITY: usize = 42;
    /// `__s32 splice_fd_in` / `file_index`.
    pub const FILE_INDEX: usize = 44;
    /// `__u64 addr3` / `attr_ptr` (Linux 6.14+: a user pointer to
    /// `struct io_uring_attr_pi`).
    pub const ATTR_PTR: usize = 48;
    /// `__u64 attr_type_mask` (Linux 6.14+).
    pub const ATTR_TYPE_MASK: usize = 56;
}

/// Byte offsets of `struct io_uring_cqe`.
pub mod cqe {
    /// `__u64 user_data`.
    pub const USER_DATA: usize = 0;
    /// `__s32 res`.
    pub const RES: usize = 8;
    /// `__u32 flags`.
    pub const FLAGS: usize = 12;
}

/// A 64-byte SQE as plain values (what a guest fills in, what the VMM
/// writes). Encoded with [`Sqe::to_bytes`] / decoded with
/// [`Sqe::from_bytes`] in little-endian byte order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sqe {
    /// `opcode`.
    pub opcode: u8,
    /// `flags`.
    pub flags: u8,
    /// `ioprio`.
    pub ioprio: u16,
    /// `fd`.
    pub fd: i32,
    /// `off`.
    pub off: u64,
    /// `addr`: for pv-uring READ/WRITE_FIXED, the byte offset in the buffer.
    pub addr: u64,
    /// `len`.
    pub len: u32,
    /// `rw_flags` / `fsync_flags` / `nop_flags`.
    pub op_flags: u32,
    /// `user_data`.
    pub user_data: u64,
    /// `buf_index`.
    pub buf_index: u16,
    /// `personality`.
    pub personality: u16,
    /// `file_index`.
    pub file_index: u32,
    /// `addr3` / `attr_ptr`.
    pub attr_ptr: u64,
    /// `attr_type_mask`.
    pub attr_type_mask: u64,
}

fn get<const N: usize>(b: &[u8; SQE_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl Sqe {
    /// Decodes 64 bytes.
    pub fn from_bytes(b: &[u8; SQE_LEN]) -> Self {
        Self {
            opcode: b[sqe::OPCODE],
            flags: b[sqe::FLAGS],
            ioprio: u16::from_le_bytes(get(b, sqe::IOPRIO)),
            fd: i32::from_le_bytes(get(b, sqe::FD)),
            off: u64::from_le_bytes(get(b, sqe::OFF)),
            addr: u64::from_le_bytes(get(b, sqe::ADDR)),
            len: u32::from_le_bytes(get(b, sqe::LEN)),
            op_flags: u32::from_le_bytes(get(b, sqe::OP_FLAGS)),
            user_data: u64::from_le_bytes(get(b, sqe::USER_DATA)),
            buf_index: u16::from_le_bytes(get(b, sqe::BUF_INDEX)),
            personality: u16::from_le_bytes(get(b, sqe::PERSONALITY)),
            file_index: u32::from_le_bytes(get(b, sqe::FILE_INDEX)),
            attr_ptr: u64::from_le_bytes(get(b, sqe::ATTR_PTR)),
            attr_type_mask: u64::from_le_bytes(get(b, sqe::ATTR_TYPE_MASK)),
        }
    }

    /// Encodes 64 bytes; every byte comes from a field above (there is no
    /// padding to leak).
    pub fn to_bytes(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        b[sqe::OPCODE] = self.opcode;
        b[sqe::FLAGS] = self.flags;
        b[sqe::IOPRIO..sqe::IOPRIO + 2].copy_from_slice(&self.ioprio.to_le_bytes());
        b[sqe::FD..sqe::FD + 4].copy_from_slice(&self.fd.to_le_bytes());
        b[sqe::OFF..sqe::OFF + 8].copy_from_slice(&self.off.to_le_bytes());
        b[sqe::ADDR..sqe::ADDR + 8].copy_from_slice(&self.addr.to_le_bytes());
        b[sqe::LEN..sqe::LEN + 4].copy_from_slice(&self.len.to_le_bytes());
        b[sqe::OP_FLAGS..sqe::OP_FLAGS + 4].copy_from_slice(&self.op_flags.to_le_bytes());
        b[sqe::USER_DATA..sqe::USER_DATA + 8].copy_from_slice(&self.user_data.to_le_bytes());
        b[sqe::BUF_INDEX..sqe::BUF_INDEX + 2].copy_from_slice(&self.buf_index.to_le_bytes());
        b[sqe::PERSONALITY..sqe::PERSONALITY + 2].copy_from_slice(&self.personality.to_le_bytes());
        b[sqe::FILE_INDEX..sqe::FILE_INDEX + 4].copy_from_slice(&self.file_index.to_le_bytes());
        b[sqe::ATTR_PTR..sqe::ATTR_PTR + 8].copy_from_slice(&self.attr_ptr.to_le_bytes());
        b[sqe::ATTR_TYPE_MASK..sqe::ATTR_TYPE_MASK + 8]
            .copy_from_slice(&self.attr_type_mask.to_le_bytes());
        b
    }
}

/// `IORING_REGISTER_CLONE_BUFFERS` (`io_uring_register(2)` opcode 30).
pub const IORING_REGISTER_CLONE_BUFFERS: u32 = 30;
/// `IORING_REGISTER_SRC_REGISTERED` (clone flag): `src_fd` is an index in
/// the task's registered ring table.
pub const IORING_REGISTER_SRC_REGISTERED: u32 = 1 << 0;
/// `IORING_REGISTER_DST_REPLACE` (clone flag): replace existing
/// destination entries.
pub const IORING_REGISTER_DST_REPLACE: u32 = 1 << 1;

/// `struct io_uring_clone_buffers` (32 bytes), the argument of
/// [`IORING_REGISTER_CLONE_BUFFERS`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CloneBuffers {
    /// The source ring's fd (or registered index).
    pub src_fd: u32,
    /// `IORING_REGISTER_SRC_REGISTERED` | `IORING_REGISTER_DST_REPLACE`.
    pub flags: u32,
    /// First source entry.
    pub src_off: u32,
    /// First destination entry.
    pub dst_off: u32,
    /// Entries (0: the whole table).
    pub nr: u32,
    /// Must be zero.
    pub pad: [u32; 3],
}

const _: () = assert!(core::mem::size_of::<CloneBuffers>() == 32);

impl CloneBuffers {
    /// A clone of the whole table of the ring `src_fd`.
    pub fn all(src_fd: i32) -> Self {
        Self {
            src_fd: src_fd as u32,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_round_trips_every_byte() {
        let mut b = [0u8; SQE_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8 ^ 0xa5;
        }
        assert_eq!(Sqe::from_bytes(&b).to_bytes(), b);
    }

    #[test]
    fn field_offsets_are_linux_s() {
        let s = Sqe {
            fd: 7,
            user_data: 0x1122_3344_5566_7788,
            buf_index: 3,
            attr_ptr: 9,
            ..Sqe::default()
        }
        .to_bytes();
        assert_eq!(s[4], 7);
        assert_eq!(s[32], 0x88);
        assert_eq!(s[40], 3);
        assert_eq!(s[48], 9);
    }
}
