//! The `/dev/vuring` user ABI (docs/pv-uring.md, "The guest driver's user
//! ABI"): structures laid out as the uAPI header `linux/vuring.h` and the
//! ioctl numbers computed from them with the kernel's `_IOC` encoding.

use std::mem::size_of;

/// `VURING_IOC_MAGIC`.
pub const VURING_IOC_MAGIC: u32 = 0xb9;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` (asm-generic/ioctl.h).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | (ty << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}
/// `_IO(type, nr)`.
pub const fn io(ty: u32, nr: u32) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}
/// `_IOR(type, nr, T)`.
pub const fn ior<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}
/// `_IOW(type, nr, T)`.
pub const fn iow<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}
/// `_IOWR(type, nr, T)`.
pub const fn iowr<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

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

/// `struct io_uring_params` (120 bytes): the host ring's, as CREATE returns it.
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

/// `struct vuring_info` (`VURING_IOC_INFO`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringInfo {
    pub max_rings: u32,
    pub max_entries: u32,
    pub max_buffers: u32,
    pub nr_backends: u32,
    pub slot_size: u32,
    pub max_table: u32,
    /// Device feature bits 0..63.
    pub features: u64,
}

/// Device feature: rings may ask for a host SQPOLL thread.
pub const PVU_F_SQPOLL: u64 = 1 << 0;
/// Device feature: the host buffer table (PUBLISH/UNPUBLISH/clone from table).
pub const PVU_F_TABLE: u64 = 1 << 1;

impl VuringInfo {
    pub fn has_sqpoll(&self) -> bool {
        self.features & PVU_F_SQPOLL != 0
    }
    pub fn has_table(&self) -> bool {
        self.features & PVU_F_TABLE != 0
    }
}

/// `struct vuring_create` (`VURING_IOC_CREATE`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringCreate {
    pub entries: u32,
    pub flags: u32,
    pub ring_id: u32,
    pub resv: u32,
    pub slot_offset: u64,
    pub params: IoUringParams,
}

/// `VURING_RING_SQPOLL`: ask for a host SQPOLL thread.
pub const VURING_RING_SQPOLL: u32 = 1;

/// `struct vuring_extent`: one registered buffer.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Guest virtual address (0: unknown to the driver).
    pub user_addr: u64,
    pub len: u64,
    /// The host address to put in READ_FIXED/WRITE_FIXED SQEs (0: an empty
    /// slot of the table).
    pub host_addr: u64,
}

/// `struct vuring_register` (`VURING_IOC_REGISTER`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringRegister {
    pub iovecs: u64,
    pub nr_iovecs: u32,
    pub max_extents: u32,
    pub extents: u64,
    pub nr_extents: u32,
    pub resv: u32,
}

/// `struct vuring_clone` (`VURING_IOC_CLONE`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringClone {
    /// A /dev/vuring fd, or a table id with [`VURING_CLONE_SRC_TABLE`].
    pub src: u32,
    pub flags: u32,
    pub src_off: u32,
    pub dst_off: u32,
    pub nr: u32,
    pub max_extents: u32,
    pub extents: u64,
    pub nr_extents: u32,
    pub resv: u32,
}

/// `VURING_CLONE_SRC_TABLE`: `src` is a host table id.
pub const VURING_CLONE_SRC_TABLE: u32 = 1;
/// `VURING_CLONE_DST_REPLACE` (= `IORING_REGISTER_DST_REPLACE`).
pub const VURING_CLONE_DST_REPLACE: u32 = 2;

pub const VURING_IOC_INFO: u32 = ior::<VuringInfo>(VURING_IOC_MAGIC, 0);
pub const VURING_IOC_CREATE: u32 = iowr::<VuringCreate>(VURING_IOC_MAGIC, 1);
pub const VURING_IOC_REGISTER: u32 = iowr::<VuringRegister>(VURING_IOC_MAGIC, 2);
pub const VURING_IOC_UNREGISTER: u32 = io(VURING_IOC_MAGIC, 3);
pub const VURING_IOC_CLONE: u32 = iowr::<VuringClone>(VURING_IOC_MAGIC, 4);
pub const VURING_IOC_PUBLISH: u32 = ior::<u32>(VURING_IOC_MAGIC, 5);
pub const VURING_IOC_UNPUBLISH: u32 = iow::<u32>(VURING_IOC_MAGIC, 6);

/// mmap offset of the ring's slot (`slot_size` bytes) on a ring's fd.
pub const VURING_MMAP_RING: u64 = 0;
/// mmap offset of the doorbell page (4 KiB).
pub const VURING_MMAP_DOORBELL: u64 = 1 << 32;
/// Bytes of the doorbell page.
pub const DOORBELL_LEN: usize = 4096;
/// Offset of the SQE array inside a ring slot.
pub const SQES_OFFSET: usize = 0x10_0000;

// io_uring constants this library needs (uapi/linux/io_uring.h).
/// `IORING_SQ_NEED_WAKEUP`.
pub const IORING_SQ_NEED_WAKEUP: u32 = 1 << 0;
/// `IORING_SQ_CQ_OVERFLOW`.
pub const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
/// `IORING_CQ_EVENTFD_DISABLED`: in the CQ flags word, no eventfd signal
/// for completions.
pub const IORING_CQ_EVENTFD_DISABLED: u32 = 1 << 0;
/// `IORING_SETUP_SQPOLL`.
pub const IORING_SETUP_SQPOLL: u32 = 1 << 1;
/// `IORING_SETUP_SQE128`.
pub const IORING_SETUP_SQE128: u32 = 1 << 10;
/// `IORING_SETUP_CQE32`.
pub const IORING_SETUP_CQE32: u32 = 1 << 11;
/// `IORING_SETUP_NO_SQARRAY`.
pub const IORING_SETUP_NO_SQARRAY: u32 = 1 << 16;
/// `IOSQE_FIXED_FILE`.
pub const IOSQE_FIXED_FILE: u8 = 1 << 0;
/// Bytes of one SQE.
pub const SQE_BYTES: usize = 64;
/// Bytes of one CQE.
pub const CQE_BYTES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    #[test]
    fn ioctl_numbers() {
        assert_eq!(VURING_IOC_INFO, 0x8020_b900);
        assert_eq!(VURING_IOC_CREATE, 0xc090_b901);
        assert_eq!(VURING_IOC_REGISTER, 0xc020_b902);
        assert_eq!(VURING_IOC_UNREGISTER, 0x0000_b903);
        assert_eq!(VURING_IOC_CLONE, 0xc028_b904);
        assert_eq!(VURING_IOC_PUBLISH, 0x8004_b905);
        assert_eq!(VURING_IOC_UNPUBLISH, 0x4004_b906);
    }

    #[test]
    fn ioc_encoding_matches_known_kernel_ioctls() {
        // FIONREAD-style check against well-known numbers:
        // BLKGETSIZE64 = _IOR(0x12, 114, size_t) = 0x80081272,
        // KVM_CREATE_VM = _IO(0xAE, 0x01) = 0xae01.
        assert_eq!(ior::<u64>(0x12, 114), 0x8008_1272);
        assert_eq!(io(0xae, 1), 0xae01);
        // KVM_SET_USER_MEMORY_REGION = _IOW(0xAE, 0x46, 32 bytes).
        assert_eq!(ioc(IOC_WRITE, 0xae, 0x46, 32), 0x4020_ae46);
    }

    #[test]
    fn params_layout() {
        assert_eq!(size_of::<SqringOffsets>(), 40);
        assert_eq!(size_of::<CqringOffsets>(), 40);
        assert_eq!(size_of::<IoUringParams>(), 120);
        assert_eq!(offset_of!(IoUringParams, features), 20);
        assert_eq!(offset_of!(IoUringParams, wq_fd), 24);
        assert_eq!(offset_of!(IoUringParams, sq_off), 40);
        assert_eq!(offset_of!(IoUringParams, cq_off), 80);
        assert_eq!(offset_of!(SqringOffsets, array), 24);
        assert_eq!(offset_of!(SqringOffsets, user_addr), 32);
        assert_eq!(offset_of!(CqringOffsets, cqes), 20);
        assert_eq!(offset_of!(CqringOffsets, flags), 24);
        assert_eq!(offset_of!(CqringOffsets, user_addr), 32);
    }

    #[test]
    fn vuring_layouts() {
        assert_eq!(size_of::<VuringInfo>(), 32);
        assert_eq!(offset_of!(VuringInfo, features), 24);
        assert_eq!(size_of::<VuringCreate>(), 144);
        assert_eq!(align_of::<VuringCreate>(), 8);
        assert_eq!(offset_of!(VuringCreate, ring_id), 8);
        assert_eq!(offset_of!(VuringCreate, slot_offset), 16);
        assert_eq!(offset_of!(VuringCreate, params), 24);
        assert_eq!(
            size_of::<VuringCreate>() - offset_of!(VuringCreate, params),
            size_of::<IoUringParams>()
        );
        assert_eq!(size_of::<Extent>(), 24);
        assert_eq!(offset_of!(Extent, host_addr), 16);
        assert_eq!(size_of::<VuringRegister>(), 32);
        assert_eq!(offset_of!(VuringRegister, nr_iovecs), 8);
        assert_eq!(offset_of!(VuringRegister, max_extents), 12);
        assert_eq!(offset_of!(VuringRegister, extents), 16);
        assert_eq!(offset_of!(VuringRegister, nr_extents), 24);
        assert_eq!(size_of::<VuringClone>(), 40);
        assert_eq!(offset_of!(VuringClone, nr), 16);
        assert_eq!(offset_of!(VuringClone, max_extents), 20);
        assert_eq!(offset_of!(VuringClone, extents), 24);
        assert_eq!(offset_of!(VuringClone, nr_extents), 32);
        assert_eq!(offset_of!(VuringClone, resv), 36);
    }

    #[test]
    fn sqe_and_cqe_sizes_match_the_crate() {
        assert_eq!(size_of::<io_uring::squeue::Entry>(), SQE_BYTES);
        assert_eq!(size_of::<io_uring::cqueue::Entry>(), CQE_BYTES);
        assert_eq!(size_of::<libc::iovec>(), 16);
    }
}
