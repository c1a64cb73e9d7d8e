//! The guest driver's user ABI: `/dev/vuring` (uAPI header
//! `include/uapi/linux/vuring.h` of guest kernel patch 0004; docs/pv-uring.md,
//! "The guest driver's user ABI"). Structures are laid out as the C header;
//! ioctl numbers are computed from their sizes with the kernel's `_IOC`
//! encoding, so a changed structure changes its number.

use core::mem::size_of;

/// `VURING_IOC_MAGIC`.
pub const VURING_IOC_MAGIC: u32 = 0xb9;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_TYPESHIFT: u32 = IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` (asm-generic/ioctl.h).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    (dir << IOC_DIRSHIFT) | ((size as u32) << IOC_SIZESHIFT) | (ty << IOC_TYPESHIFT) | nr
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

/// `struct vuring_info` (`VURING_IOC_INFO`): the device's configuration.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringInfo {
    /// Ring slots.
    pub max_rings: u32,
    /// Largest SQ.
    pub max_entries: u32,
    /// Largest buffer table of a ring.
    pub max_buffers: u32,
    /// Backends (fixed-file indices 0..n).
    pub nr_backends: u32,
    /// Bytes of the submission mapping ([`VURING_MMAP_SQ`]).
    pub sq_slot_size: u32,
    /// Entries of the host buffer table.
    pub max_table: u32,
    /// Device feature bits 0..63 (`1 << PVU_F_*`).
    pub features: u64,
    /// The device's ABI version (2).
    pub abi_version: u32,
    /// Bytes of the completion mapping ([`VURING_MMAP_CQ`]).
    pub cq_slot_size: u32,
    /// Most rings with a polled submitter at once.
    pub max_polled: u32,
    /// Reserved, 0.
    pub resv: u32,
    /// Most bytes the VM's rings may have registered at once.
    pub max_registered: u64,
}

/// `struct vuring_create` (`VURING_IOC_CREATE`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringCreate {
    /// In: SQ entries (1..=max_entries).
    pub entries: u32,
    /// In: [`VURING_RING_POLLED`].
    pub flags: u32,
    /// Out: the device's ring id.
    pub ring_id: u32,
    /// Out: SQ entries (a power of two).
    pub sq_entries: u32,
    /// Out: CQ entries (a power of two).
    pub cq_entries: u32,
    /// Out: offset of the le32 CQ tail in the completion mapping.
    pub cq_tail: u32,
    /// Out: offset of the CQE array in the completion mapping.
    pub cqes: u32,
    /// Out: [`VURING_RING_POLLED`] when the ring has a polled submitter.
    pub ring_flags: u32,
}

/// `VURING_RING_POLLED`: ask for a polled submitter.
pub const VURING_RING_POLLED: u32 = 1;

/// `struct vuring_extent`: one registered buffer as the driver reports it.
/// Data is named by (buffer index, offset): the index is the extent's
/// position in the table.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VuringExtent {
    /// Guest virtual address of its first byte (0: unknown to this
    /// process, or an empty entry).
    pub user_addr: u64,
    /// Length (0: an empty entry).
    pub len: u64,
}

/// `struct vuring_register` (`VURING_IOC_REGISTER`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringRegister {
    /// In: `struct iovec[nr_iovecs]`.
    pub iovecs: u64,
    /// In.
    pub nr_iovecs: u32,
    /// In: capacity of `extents`.
    pub max_extents: u32,
    /// In: `struct vuring_extent[max_extents]`, filled on return.
    pub extents: u64,
    /// Out: buffers registered.
    pub nr_extents: u32,
    /// Reserved, 0.
    pub resv: u32,
}

/// `struct vuring_clone` (`VURING_IOC_CLONE`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringClone {
    /// A `/dev/vuring` fd (without [`VURING_CLONE_SRC_TABLE`]).
    pub src: u32,
    /// [`VURING_CLONE_SRC_TABLE`], [`VURING_CLONE_DST_REPLACE`].
    pub flags: u32,
    /// As `struct io_uring_clone_buffers`.
    pub src_off: u32,
    /// As `struct io_uring_clone_buffers`.
    pub dst_off: u32,
    /// As `struct io_uring_clone_buffers` (0: the whole source).
    pub nr: u32,
    /// In: capacity of `extents`.
    pub max_extents: u32,
    /// Out: the destination's whole table.
    pub extents: u64,
    /// Out.
    pub nr_extents: u32,
    /// Reserved, 0.
    pub resv: u32,
    /// With [`VURING_CLONE_SRC_TABLE`]: the token PUBLISH returned.
    pub token: u64,
}

/// `VURING_CLONE_SRC_TABLE`: clone from the published table `token` names.
pub const VURING_CLONE_SRC_TABLE: u32 = 1;
/// `VURING_CLONE_DST_REPLACE` (= `IORING_REGISTER_DST_REPLACE`).
pub const VURING_CLONE_DST_REPLACE: u32 = 2;

/// `struct vuring_publish` (`VURING_IOC_PUBLISH` out, `VURING_IOC_UNPUBLISH`
/// in): an unguessable capability for a published table.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringPublish {
    /// The token.
    pub token: u64,
}

/// `struct vuring_arena_info` (`VURING_IOC_ARENA_INFO`): the buffer arena
/// (all zero without one).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringArenaInfo {
    /// Bytes of a chunk (the unit of allocation; one buffer).
    pub chunk_size: u64,
    /// Bytes of the arena.
    pub len: u64,
    /// Chunks of the arena.
    pub nr_chunks: u32,
    /// Chunks no open file or ring holds now.
    pub free_chunks: u32,
}

/// `struct vuring_arena_alloc` (`VURING_IOC_ARENA_ALLOC`): a run of chunks
/// for the calling file.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringArenaAlloc {
    /// In: bytes (rounded up to whole chunks).
    pub len: u64,
    /// Out: the first chunk.
    pub chunk: u32,
    /// Out: chunks.
    pub nr: u32,
    /// Out: the mmap offset of the first chunk
    /// (`VURING_MMAP_ARENA + chunk * chunk_size`).
    pub offset: u64,
}

/// `struct vuring_arena_free` (`VURING_IOC_ARENA_FREE`): gives back the
/// allocation whose first chunk is `chunk`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringArenaFree {
    /// The first chunk of an allocation of this file.
    pub chunk: u32,
    /// Reserved, 0.
    pub resv: u32,
}

/// `struct vuring_arena_run`: `nr` chunks from `chunk` on become the
/// ring's buffers `dst_off..dst_off + nr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringArenaRun {
    /// First chunk (inside one allocation of this file).
    pub chunk: u32,
    /// Chunks (at least 1).
    pub nr: u32,
    /// First buffer index (runs in increasing order, not overlapping).
    pub dst_off: u32,
    /// Reserved, 0.
    pub resv: u32,
}

/// `struct vuring_arena_register` (`VURING_IOC_ARENA_REGISTER`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringArenaRegister {
    /// In: `struct vuring_arena_run[nr_runs]`.
    pub runs: u64,
    /// In: 1 ..= 64.
    pub nr_runs: u32,
    /// Out: the ring's buffer count.
    pub nr_buffers: u32,
    /// In: the `/dev/vuring` fd whose allocations the runs name (holding
    /// it is the capability, as for CLONE); -1: the calling file.
    pub owner_fd: i32,
    /// Reserved, 0.
    pub resv: u32,
}

/// `struct vuring_arena_register_rings` (`VURING_IOC_ARENA_REGISTER_RINGS`):
/// the same runs on every ring `ring_fds` names, with one control command
/// (all of them or none); the rings share one table.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VuringArenaRegisterRings {
    /// In: `struct vuring_arena_run[nr_runs]`.
    pub runs: u64,
    /// In: 1 ..= 64.
    pub nr_runs: u32,
    /// Out: each ring's buffer count.
    pub nr_buffers: u32,
    /// In: `i32[nr_rings]`, `/dev/vuring` fds of rings without buffers,
    /// each file at most once.
    pub ring_fds: u64,
    /// In: 1 ..= `max_rings` (at most [`VURING_MAX_ARENA_RINGS`]).
    pub nr_rings: u32,
    /// In: as [`VuringArenaRegister::owner_fd`].
    pub owner_fd: i32,
}

/// Most rings one `VURING_IOC_ARENA_REGISTER_RINGS` names.
pub const VURING_MAX_ARENA_RINGS: u32 = crate::wire::MAX_ARENA_RINGS;

/// `VURING_IOC_INFO`.
pub const VURING_IOC_INFO: u32 = ior::<VuringInfo>(VURING_IOC_MAGIC, 0);
/// `VURING_IOC_CREATE`.
pub const VURING_IOC_CREATE: u32 = iowr::<VuringCreate>(VURING_IOC_MAGIC, 1);
/// `VURING_IOC_REGISTER`.
pub const VURING_IOC_REGISTER: u32 = iowr::<VuringRegister>(VURING_IOC_MAGIC, 2);
/// `VURING_IOC_UNREGISTER`.
pub const VURING_IOC_UNREGISTER: u32 = io(VURING_IOC_MAGIC, 3);
/// `VURING_IOC_CLONE`.
pub const VURING_IOC_CLONE: u32 = iowr::<VuringClone>(VURING_IOC_MAGIC, 4);
/// `VURING_IOC_PUBLISH`.
pub const VURING_IOC_PUBLISH: u32 = ior::<VuringPublish>(VURING_IOC_MAGIC, 5);
/// `VURING_IOC_UNPUBLISH`.
pub const VURING_IOC_UNPUBLISH: u32 = iow::<VuringPublish>(VURING_IOC_MAGIC, 6);

/// `VURING_IOC_ARENA_INFO`.
pub const VURING_IOC_ARENA_INFO: u32 = ior::<VuringArenaInfo>(VURING_IOC_MAGIC, 7);
/// `VURING_IOC_ARENA_ALLOC`.
pub const VURING_IOC_ARENA_ALLOC: u32 = iowr::<VuringArenaAlloc>(VURING_IOC_MAGIC, 8);
/// `VURING_IOC_ARENA_FREE`.
pub const VURING_IOC_ARENA_FREE: u32 = iow::<VuringArenaFree>(VURING_IOC_MAGIC, 9);
/// `VURING_IOC_ARENA_REGISTER`.
pub const VURING_IOC_ARENA_REGISTER: u32 = iowr::<VuringArenaRegister>(VURING_IOC_MAGIC, 10);
/// `VURING_IOC_ARENA_REGISTER_RINGS`.
pub const VURING_IOC_ARENA_REGISTER_RINGS: u32 =
    iowr::<VuringArenaRegisterRings>(VURING_IOC_MAGIC, 11);

/// mmap offset of the ring's submission slot (`sq_slot_size` bytes,
/// read-write).
pub const VURING_MMAP_SQ: u64 = 0;
/// mmap offset of the doorbell page (4 KiB, write-only use).
pub const VURING_MMAP_DOORBELL: u64 = 1 << 32;
/// mmap offset of the ring's completion slot (`cq_slot_size` bytes,
/// read-only: a writable mapping is refused with `EACCES`).
pub const VURING_MMAP_CQ: u64 = 2 << 32;
/// mmap offset of the arena: chunk `c` is at `VURING_MMAP_ARENA + c *
/// chunk_size`; a mapping must lie inside one allocation of this file.
pub const VURING_MMAP_ARENA: u64 = 1 << 48;

/// Every size, offset and constant of the header as `NAME VALUE` lines, in
/// the order `guest-kernel-patches/abi-dump.c` prints them; `check.sh`
/// compares the two outputs.
pub fn dump(mut line: impl FnMut(&str, u64)) {
    use core::mem::offset_of;
    line("VURING_IOC_MAGIC", VURING_IOC_MAGIC.into());
    line("sizeof(struct vuring_info)", size_of::<VuringInfo>() as u64);
    line(
        "offsetof(vuring_info, features)",
        offset_of!(VuringInfo, features) as u64,
    );
    line(
        "offsetof(vuring_info, abi_version)",
        offset_of!(VuringInfo, abi_version) as u64,
    );
    line(
        "offsetof(vuring_info, max_polled)",
        offset_of!(VuringInfo, max_polled) as u64,
    );
    line(
        "offsetof(vuring_info, max_registered)",
        offset_of!(VuringInfo, max_registered) as u64,
    );
    line(
        "sizeof(struct vuring_create)",
        size_of::<VuringCreate>() as u64,
    );
    line(
        "offsetof(vuring_create, ring_id)",
        offset_of!(VuringCreate, ring_id) as u64,
    );
    line(
        "offsetof(vuring_create, cq_tail)",
        offset_of!(VuringCreate, cq_tail) as u64,
    );
    line(
        "offsetof(vuring_create, ring_flags)",
        offset_of!(VuringCreate, ring_flags) as u64,
    );
    line(
        "sizeof(struct vuring_extent)",
        size_of::<VuringExtent>() as u64,
    );
    line(
        "sizeof(struct vuring_register)",
        size_of::<VuringRegister>() as u64,
    );
    line(
        "offsetof(vuring_register, extents)",
        offset_of!(VuringRegister, extents) as u64,
    );
    line(
        "offsetof(vuring_register, nr_extents)",
        offset_of!(VuringRegister, nr_extents) as u64,
    );
    line(
        "sizeof(struct vuring_clone)",
        size_of::<VuringClone>() as u64,
    );
    line(
        "offsetof(vuring_clone, extents)",
        offset_of!(VuringClone, extents) as u64,
    );
    line(
        "offsetof(vuring_clone, nr_extents)",
        offset_of!(VuringClone, nr_extents) as u64,
    );
    line(
        "offsetof(vuring_clone, token)",
        offset_of!(VuringClone, token) as u64,
    );
    line(
        "sizeof(struct vuring_publish)",
        size_of::<VuringPublish>() as u64,
    );
    line("VURING_RING_POLLED", VURING_RING_POLLED.into());
    line("VURING_CLONE_SRC_TABLE", VURING_CLONE_SRC_TABLE.into());
    line("VURING_CLONE_DST_REPLACE", VURING_CLONE_DST_REPLACE.into());
    line("VURING_IOC_INFO", VURING_IOC_INFO.into());
    line("VURING_IOC_CREATE", VURING_IOC_CREATE.into());
    line("VURING_IOC_REGISTER", VURING_IOC_REGISTER.into());
    line("VURING_IOC_UNREGISTER", VURING_IOC_UNREGISTER.into());
    line("VURING_IOC_CLONE", VURING_IOC_CLONE.into());
    line("VURING_IOC_PUBLISH", VURING_IOC_PUBLISH.into());
    line("VURING_IOC_UNPUBLISH", VURING_IOC_UNPUBLISH.into());
    line("VURING_MMAP_SQ", VURING_MMAP_SQ);
    line("VURING_MMAP_DOORBELL", VURING_MMAP_DOORBELL);
    line("VURING_MMAP_CQ", VURING_MMAP_CQ);
    // The device ABI the driver speaks (include/uapi/linux/vuring.h
    // repeats the parts user space needs).
    use crate::wire;
    line("PVU_ABI_VERSION", wire::ABI_VERSION.into());
    line("PVU_SLOT_SQ_TAIL", wire::slot::SQ_TAIL as u64);
    line("PVU_SLOT_CQ_HEAD", wire::slot::CQ_HEAD as u64);
    line("PVU_SLOT_CQ_FLAGS", wire::slot::CQ_FLAGS as u64);
    line("PVU_SLOT_SQ_HEAD", wire::slot::SQ_HEAD as u64);
    line("PVU_SLOT_SQ_FLAGS", wire::slot::SQ_FLAGS as u64);
    line("PVU_SLOT_SQES", wire::slot::SQES as u64);
    line("PVU_SQ_NEED_WAKEUP", wire::PVU_SQ_NEED_WAKEUP.into());
    line(
        "PVU_CQ_EVENTFD_DISABLED",
        wire::PVU_CQ_EVENTFD_DISABLED.into(),
    );
    // The arena (issue 15).
    line(
        "sizeof(struct vuring_arena_info)",
        size_of::<VuringArenaInfo>() as u64,
    );
    line(
        "offsetof(vuring_arena_info, nr_chunks)",
        offset_of!(VuringArenaInfo, nr_chunks) as u64,
    );
    line(
        "sizeof(struct vuring_arena_alloc)",
        size_of::<VuringArenaAlloc>() as u64,
    );
    line(
        "offsetof(vuring_arena_alloc, offset)",
        offset_of!(VuringArenaAlloc, offset) as u64,
    );
    line(
        "sizeof(struct vuring_arena_free)",
        size_of::<VuringArenaFree>() as u64,
    );
    line(
        "sizeof(struct vuring_arena_run)",
        size_of::<VuringArenaRun>() as u64,
    );
    line(
        "sizeof(struct vuring_arena_register)",
        size_of::<VuringArenaRegister>() as u64,
    );
    line(
        "offsetof(vuring_arena_register, nr_buffers)",
        offset_of!(VuringArenaRegister, nr_buffers) as u64,
    );
    line(
        "offsetof(vuring_arena_register, owner_fd)",
        offset_of!(VuringArenaRegister, owner_fd) as u64,
    );
    line("VURING_IOC_ARENA_INFO", VURING_IOC_ARENA_INFO.into());
    line("VURING_IOC_ARENA_ALLOC", VURING_IOC_ARENA_ALLOC.into());
    line("VURING_IOC_ARENA_FREE", VURING_IOC_ARENA_FREE.into());
    line(
        "VURING_IOC_ARENA_REGISTER",
        VURING_IOC_ARENA_REGISTER.into(),
    );
    line("VURING_MMAP_ARENA", VURING_MMAP_ARENA);
    line("VURING_MAX_ARENA_RUNS", wire::MAX_ARENA_RUNS.into());
    line(
        "sizeof(struct vuring_arena_register_rings)",
        size_of::<VuringArenaRegisterRings>() as u64,
    );
    line(
        "offsetof(vuring_arena_register_rings, ring_fds)",
        offset_of!(VuringArenaRegisterRings, ring_fds) as u64,
    );
    line(
        "offsetof(vuring_arena_register_rings, nr_rings)",
        offset_of!(VuringArenaRegisterRings, nr_rings) as u64,
    );
    line(
        "offsetof(vuring_arena_register_rings, owner_fd)",
        offset_of!(VuringArenaRegisterRings, owner_fd) as u64,
    );
    line(
        "VURING_IOC_ARENA_REGISTER_RINGS",
        VURING_IOC_ARENA_REGISTER_RINGS.into(),
    );
    line("VURING_MAX_ARENA_RINGS", VURING_MAX_ARENA_RINGS.into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of};

    #[test]
    fn ioc_encoding_matches_known_kernel_ioctls() {
        // BLKGETSIZE64 = _IOR(0x12, 114, size_t), KVM_CREATE_VM = _IO(0xAE, 1),
        // KVM_SET_USER_MEMORY_REGION = _IOW(0xAE, 0x46, 32 bytes).
        assert_eq!(ior::<u64>(0x12, 114), 0x8008_1272);
        assert_eq!(io(0xae, 1), 0xae01);
        assert_eq!(ioc(IOC_WRITE, 0xae, 0x46, 32), 0x4020_ae46);
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<VuringInfo>(), 56);
        assert_eq!(offset_of!(VuringInfo, features), 24);
        assert_eq!(offset_of!(VuringInfo, max_registered), 48);
        assert_eq!(size_of::<VuringCreate>(), 32);
        assert_eq!(size_of::<VuringExtent>(), 16);
        assert_eq!(size_of::<VuringRegister>(), 32);
        assert_eq!(size_of::<VuringClone>(), 48);
        assert_eq!(offset_of!(VuringClone, token), 40);
        assert_eq!(align_of::<VuringClone>(), 8);
        assert_eq!(size_of::<VuringPublish>(), 8);
        assert_eq!(VURING_IOC_UNREGISTER, 0xb903);
        assert_eq!(VURING_IOC_PUBLISH, 0x8008_b905);
        assert_eq!(size_of::<VuringArenaInfo>(), 24);
        assert_eq!(size_of::<VuringArenaAlloc>(), 24);
        assert_eq!(size_of::<VuringArenaFree>(), 8);
        assert_eq!(size_of::<VuringArenaRun>(), 16);
        assert_eq!(size_of::<VuringArenaRegister>(), 24);
        assert_eq!(size_of::<VuringArenaRegisterRings>(), 32);
        assert_eq!(offset_of!(VuringArenaRegisterRings, owner_fd), 28);
    }
}
