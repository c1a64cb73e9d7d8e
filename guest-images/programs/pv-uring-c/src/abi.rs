//! What `include/pv_uring.h` must say, from the one definition of the ABI
//! (`uring-abi`) and this crate's own `#[repr(C)]` types: every constant,
//! size and offset of the header as `NAME VALUE` lines, in the order
//! `c/abi-dump.c` prints them from the header. `guest-kernel-patches/check.sh`
//! (next to the kernel uAPI check) and this crate's tests compare the two.

use crate::RingParams;
use core::mem::{offset_of, size_of};
use pv_uring::uring_abi::uring::{self, cqe, sqe};
use pv_uring::uring_abi::vuring::{
    VuringArenaInfo, VuringExtent, VuringInfo, VURING_CLONE_DST_REPLACE, VURING_RING_POLLED,
};
use pv_uring::uring_abi::wire;

/// Calls `line(name, value)` for every constant, size and offset the header
/// defines.
pub fn dump(mut line: impl FnMut(&str, u64)) {
    let mut c = |n: &str, v: u64| line(n, v);
    c("PVU_RING_POLLED", VURING_RING_POLLED.into());
    c("PVU_CLONE_DST_REPLACE", VURING_CLONE_DST_REPLACE.into());
    c("PVU_FEAT_POLLED", 1 << wire::PVU_F_POLLED);
    c("PVU_FEAT_TABLE", 1 << wire::PVU_F_TABLE);
    c("PVU_FEAT_ARENA", 1 << wire::PVU_F_ARENA);
    c("PVU_OP_NOP", uring::IORING_OP_NOP.into());
    c("PVU_OP_FSYNC", uring::IORING_OP_FSYNC.into());
    c("PVU_OP_READ_FIXED", uring::IORING_OP_READ_FIXED.into());
    c("PVU_OP_WRITE_FIXED", uring::IORING_OP_WRITE_FIXED.into());
    c("PVU_SQE_FIXED_FILE", uring::IOSQE_FIXED_FILE.into());
    c("PVU_SQE_IO_DRAIN", uring::IOSQE_IO_DRAIN.into());
    c("PVU_SQE_IO_LINK", uring::IOSQE_IO_LINK.into());
    c("PVU_SQE_IO_HARDLINK", uring::IOSQE_IO_HARDLINK.into());
    c("PVU_FSYNC_DATASYNC", uring::IORING_FSYNC_DATASYNC.into());

    let z = |v: usize| v as u64;
    c("sizeof(struct pvu_info)", z(size_of::<VuringInfo>()));
    for (f, o) in [
        ("max_rings", offset_of!(VuringInfo, max_rings)),
        ("max_entries", offset_of!(VuringInfo, max_entries)),
        ("max_buffers", offset_of!(VuringInfo, max_buffers)),
        ("nr_backends", offset_of!(VuringInfo, nr_backends)),
        ("sq_slot_size", offset_of!(VuringInfo, sq_slot_size)),
        ("max_table", offset_of!(VuringInfo, max_table)),
        ("features", offset_of!(VuringInfo, features)),
        ("abi_version", offset_of!(VuringInfo, abi_version)),
        ("cq_slot_size", offset_of!(VuringInfo, cq_slot_size)),
        ("max_polled", offset_of!(VuringInfo, max_polled)),
        ("resv", offset_of!(VuringInfo, resv)),
        ("max_registered", offset_of!(VuringInfo, max_registered)),
    ] {
        c(&format!("offsetof(pvu_info, {f})"), z(o));
    }

    c("sizeof(struct pvu_ring_params)", z(size_of::<RingParams>()));
    for (f, o) in [
        ("id", offset_of!(RingParams, id)),
        ("sq_entries", offset_of!(RingParams, sq_entries)),
        ("cq_entries", offset_of!(RingParams, cq_entries)),
        ("flags", offset_of!(RingParams, flags)),
        ("fd", offset_of!(RingParams, fd)),
        ("resv", offset_of!(RingParams, resv)),
    ] {
        c(&format!("offsetof(pvu_ring_params, {f})"), z(o));
    }

    c("sizeof(struct pvu_buf)", z(size_of::<VuringExtent>()));
    c(
        "offsetof(pvu_buf, addr)",
        z(offset_of!(VuringExtent, user_addr)),
    );
    c("offsetof(pvu_buf, len)", z(offset_of!(VuringExtent, len)));

    c("sizeof(struct pvu_sqe)", z(uring::SQE_LEN));
    for (f, o) in [
        ("opcode", sqe::OPCODE),
        ("flags", sqe::FLAGS),
        ("ioprio", sqe::IOPRIO),
        ("fd", sqe::FD),
        ("off", sqe::OFF),
        ("addr", sqe::ADDR),
        ("len", sqe::LEN),
        ("rw_flags", sqe::OP_FLAGS),
        ("user_data", sqe::USER_DATA),
        ("buf_index", sqe::BUF_INDEX),
        ("personality", sqe::PERSONALITY),
        ("file_index", sqe::FILE_INDEX),
        ("resv", sqe::ATTR_PTR),
    ] {
        c(&format!("offsetof(pvu_sqe, {f})"), z(o));
    }

    c("sizeof(struct pvu_cqe)", z(uring::CQE_LEN));
    for (f, o) in [
        ("user_data", cqe::USER_DATA),
        ("res", cqe::RES),
        ("flags", cqe::FLAGS),
    ] {
        c(&format!("offsetof(pvu_cqe, {f})"), z(o));
    }

    c(
        "sizeof(struct pvu_arena_info)",
        z(size_of::<VuringArenaInfo>()),
    );
    for (f, o) in [
        ("chunk_size", offset_of!(VuringArenaInfo, chunk_size)),
        ("len", offset_of!(VuringArenaInfo, len)),
        ("nr_chunks", offset_of!(VuringArenaInfo, nr_chunks)),
        ("free_chunks", offset_of!(VuringArenaInfo, free_chunks)),
    ] {
        c(&format!("offsetof(pvu_arena_info, {f})"), z(o));
    }
}

/// [`dump`] as the text both programs print.
pub fn dump_text() -> String {
    let mut s = String::new();
    dump(|n, v| s.push_str(&format!("{n} {v}\n")));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pv_uring::Cqe;

    /// The Rust types the C structs are handed to are the ones dumped.
    #[test]
    fn ffi_types_have_the_dumped_layouts() {
        assert_eq!(size_of::<crate::SqeSlot>(), uring::SQE_LEN);
        assert_eq!(core::mem::align_of::<crate::SqeSlot>(), 8);
        assert_eq!(size_of::<Cqe>(), uring::CQE_LEN);
        assert_eq!(offset_of!(Cqe, user_data), cqe::USER_DATA);
        assert_eq!(offset_of!(Cqe, res), cqe::RES);
        assert_eq!(offset_of!(Cqe, flags), cqe::FLAGS);
        assert_eq!(size_of::<RingParams>(), 24);
    }

    #[test]
    fn dump_names_are_unique() {
        let t = dump_text();
        let mut names: Vec<&str> = t.lines().map(|l| l.rsplit_once(' ').unwrap().0).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(t.contains("sizeof(struct pvu_sqe) 64\n"));
    }
}
