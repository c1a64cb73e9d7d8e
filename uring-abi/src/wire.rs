//! The pv-uring device as the guest driver sees it (docs/pv-uring.md):
//! identification, configuration space, the ring area's layout, the
//! submission slot the guest writes, and the control protocol's wire
//! format. All multi-byte fields are little endian.

/// virtio device ID ("rv"; private to ringvisor).
pub const VIRTIO_ID_PV_URING: u32 = 0x7276;
/// The ABI version in the configuration space ([`config::ABI_VERSION`]).
/// Version 1 let guest SQEs reach the host kernel; version 2 has the VMM
/// write every host SQE.
pub const ABI_VERSION: u32 = 2;
/// Size of the control queue (queue 0, the only one).
pub const QUEUE_SIZE: u16 = 64;

/// Feature bit: rings may ask for a polled submitter (a VMM thread that
/// watches the ring's submission slot, so submitting needs no doorbell).
/// Offered only when the VM allows polled rings (`--uring polled=N`, N > 0).
pub const PVU_F_POLLED: u32 = 0;
/// Feature bit: the host buffer table (PUBLISH, UNPUBLISH, CLONE from it).
pub const PVU_F_TABLE: u32 = 1;
/// Feature bit: the buffer arena (shared-memory region [`SHM_ARENA`],
/// registered once on a host ring; ARENA_REGISTER clones runs of it).
/// Offered only when the VM has an arena (`--uring arena=SIZE`).
pub const PVU_F_ARENA: u32 = 2;

/// Shared-memory region id of the ring area.
pub const SHM_RING_AREA: u8 = 0;
/// Shared-memory region id of the buffer arena (with [`PVU_F_ARENA`]).
pub const SHM_ARENA: u8 = 1;
/// A ring's table can hold the whole arena: the chunk is the smallest
/// power-of-two multiple of the host page that makes the arena at most
/// this many chunks ([`arena_chunk_size`]).
pub const MAX_ARENA_CHUNKS: u32 = MAX_BUFFERS;
/// Most runs in one ARENA_REGISTER.
pub const MAX_ARENA_RUNS: u32 = 64;
/// Most rings in one ARENA_REGISTER_RINGS (the largest `max_rings`).
pub const MAX_ARENA_RINGS: u32 = 256;

/// The arena's chunk size for an arena of `len` bytes on host pages of
/// `page` bytes (a power of two): the page, doubled until the arena is at
/// most [`MAX_ARENA_CHUNKS`] chunks, so that one ring's buffer table
/// (`max_buffers` entries) holds the whole arena. `None` if `len` is 0,
/// not a multiple of the chunk, or the chunk would pass [`MAX_EXTENT_LEN`].
pub fn arena_chunk_size(len: u64, page: u64) -> Option<u64> {
    if len == 0 || !page.is_power_of_two() {
        return None;
    }
    let mut chunk = page;
    while len.div_ceil(chunk) > u64::from(MAX_ARENA_CHUNKS) {
        chunk = chunk.checked_mul(2)?;
    }
    (chunk <= MAX_EXTENT_LEN && len.is_multiple_of(chunk)).then_some(chunk)
}

/// Byte offsets in the configuration space (read-only).
pub mod config {
    /// le32: ring slots.
    pub const MAX_RINGS: usize = 0x00;
    /// le32: largest SQ a ring may ask for.
    pub const MAX_ENTRIES: usize = 0x04;
    /// le32: largest buffer table of a ring.
    pub const MAX_BUFFERS: usize = 0x08;
    /// le32: backends (fixed-file indices 0..n).
    pub const NR_BACKENDS: usize = 0x0c;
    /// le32: the ISA IRQ raised on completions.
    pub const COMPLETION_IRQ: usize = 0x10;
    /// le32: bytes of a submission slot.
    pub const SQ_SLOT_SIZE: usize = 0x14;
    /// le32: entries of the host buffer table.
    pub const MAX_TABLE: usize = 0x18;
    /// le32: [`super::ABI_VERSION`].
    pub const ABI_VERSION: usize = 0x1c;
    /// le64: guest-physical address of the doorbell page.
    pub const DOORBELL_GPA: usize = 0x20;
    /// le32: offset of the completion area in shared-memory region 0.
    pub const CQ_AREA_OFFSET: usize = 0x28;
    /// le32: bytes of a completion slot.
    pub const CQ_SLOT_SIZE: usize = 0x2c;
    /// le32: most rings with a polled submitter at once.
    pub const MAX_POLLED: usize = 0x30;
    /// le32: most descriptors in a control chain.
    pub const MAX_CHAIN: usize = 0x34;
    /// le64: most bytes the VM's rings may have registered at once
    /// (REGISTER_BUFFERS; clones cost nothing).
    pub const MAX_REGISTERED: usize = 0x38;
    /// le64: bytes of an arena chunk (one host buffer; 0: no arena).
    pub const ARENA_CHUNK_SIZE: usize = 0x40;
    /// le32: chunks of the arena (shared-memory region 1).
    pub const ARENA_CHUNKS: usize = 0x48;
    /// Bytes of the configuration space.
    pub const LEN: usize = 0x50;
}

/// Largest SQ of a ring.
pub const MAX_ENTRIES: u32 = 4096;
/// Largest buffer table of a ring.
pub const MAX_BUFFERS: u32 = 1024;
/// Entries of the host buffer table.
pub const MAX_TABLE: u32 = 64;
/// Most descriptors in a control chain: a longer chain is malformed.
pub const MAX_CHAIN: u32 = 16;
/// Largest extent (one registered buffer).
pub const MAX_EXTENT_LEN: u64 = 1 << 30;
/// Fixed-file index of a ring's teardown sentinel: a READ_FIXED of it
/// waits until the ring is destroyed (docs/pv-uring.md). Backends are
/// below it.
pub const SENTINEL_FILE: u32 = 16;
/// Most backends.
pub const MAX_BACKENDS: u32 = SENTINEL_FILE;
/// Size of the doorbell page.
pub const DOORBELL_LEN: u64 = 0x1000;

/// Bytes of a submission slot: the guest's SQ header and its SQEs.
pub const SQ_SLOT_SIZE: u32 = 512 << 10;
/// Bytes of a completion slot: the host ring's SQ/CQ rings (read-only to
/// the guest).
pub const CQ_SLOT_SIZE: u32 = 256 << 10;
/// The completion area starts at a 2 MiB boundary of the ring area.
pub const AREA_ALIGN: u64 = 2 << 20;

/// Where a VM's ring area puts things (shared-memory region 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaLayout {
    /// Ring slots.
    pub max_rings: u32,
}

impl AreaLayout {
    /// Bytes of the submission area (guest read-write), rounded up to
    /// [`AREA_ALIGN`].
    pub fn sq_area_len(&self) -> u64 {
        (u64::from(self.max_rings) * u64::from(SQ_SLOT_SIZE)).next_multiple_of(AREA_ALIGN)
    }

    /// Offset of the completion area (guest read-only).
    pub fn cq_area_offset(&self) -> u64 {
        self.sq_area_len()
    }

    /// Bytes of the completion area, rounded up to [`AREA_ALIGN`].
    pub fn cq_area_len(&self) -> u64 {
        (u64::from(self.max_rings) * u64::from(CQ_SLOT_SIZE)).next_multiple_of(AREA_ALIGN)
    }

    /// Bytes of the whole region the guest sees.
    pub fn len(&self) -> u64 {
        self.sq_area_len() + self.cq_area_len()
    }

    /// Whether the layout has no rings.
    pub fn is_empty(&self) -> bool {
        self.max_rings == 0
    }

    /// Offset of ring `id`'s submission slot.
    pub fn sq_slot(&self, id: u32) -> Option<u64> {
        (id < self.max_rings).then(|| u64::from(id) * u64::from(SQ_SLOT_SIZE))
    }

    /// Offset of ring `id`'s completion slot.
    pub fn cq_slot(&self, id: u32) -> Option<u64> {
        (id < self.max_rings)
            .then(|| self.cq_area_offset() + u64::from(id) * u64::from(CQ_SLOT_SIZE))
    }
}

/// The submission slot: byte offsets of its le32 words and of the SQEs.
/// The guest writes the words in the first cache line and the SQEs; the
/// device writes the words in the second. The device reads the guest's
/// words once per pass and trusts none of them.
pub mod slot {
    /// le32, guest: SQEs `[sq_head, sq_tail)` are submitted (release).
    pub const SQ_TAIL: usize = 0x00;
    /// le32, guest: CQEs before it are consumed (release).
    pub const CQ_HEAD: usize = 0x04;
    /// le32, guest: [`super::PVU_CQ_EVENTFD_DISABLED`].
    pub const CQ_FLAGS: usize = 0x08;
    /// le32, device: SQEs before it are consumed: their slots may be
    /// reused.
    pub const SQ_HEAD: usize = 0x40;
    /// le32, device: [`super::PVU_SQ_NEED_WAKEUP`].
    pub const SQ_FLAGS: usize = 0x44;
    /// The SQE array: `sq_entries` x 64 bytes; the SQE of position `p` is
    /// entry `p & (sq_entries - 1)` (no indirection array).
    pub const SQES: usize = 0x1000;
}

/// Submission-slot `sq_flags`: a polled ring's submitter sleeps; ring the
/// doorbell after advancing `sq_tail`.
pub const PVU_SQ_NEED_WAKEUP: u32 = 1 << 0;
/// Submission-slot `cq_flags`: raise no completion interrupt for this
/// ring (the device carries it to the host ring at its next pass).
pub const PVU_CQ_EVENTFD_DISABLED: u32 = 1 << 0;

/// Control command codes (`pvu_ctrl_req.cmd`).
pub mod cmd {
    /// Create a ring in a free slot.
    pub const CREATE_RING: u32 = 1;
    /// Destroy a ring.
    pub const DESTROY_RING: u32 = 2;
    /// Register extents of guest RAM as the ring's buffers.
    pub const REGISTER_BUFFERS: u32 = 3;
    /// Drop the ring's buffers.
    pub const UNREGISTER_BUFFERS: u32 = 4;
    /// Clone buffers from a ring or a table entry.
    pub const CLONE_BUFFERS: u32 = 5;
    /// Publish a ring's buffers in the host buffer table.
    pub const PUBLISH_BUFFERS: u32 = 6;
    /// Remove a table entry.
    pub const UNPUBLISH_BUFFERS: u32 = 7;
    /// Clone runs of arena chunks into a ring's table.
    pub const ARENA_REGISTER: u32 = 8;
    /// ARENA_REGISTER's runs on many rings at once (`src_id` ring ids
    /// after the runs), all of them or none.
    pub const ARENA_REGISTER_RINGS: u32 = 9;
}

/// CREATE_RING flag: the ring gets a polled submitter.
pub const PVU_RING_POLLED: u32 = 1 << 0;
/// CLONE_BUFFERS flag: `src_id` is a table id (else a ring id).
pub const PVU_CLONE_SRC_TABLE: u32 = 1 << 0;
/// CLONE_BUFFERS flag: `IORING_REGISTER_DST_REPLACE`.
pub const PVU_CLONE_DST_REPLACE: u32 = 1 << 1;

/// Bytes of `struct pvu_ctrl_req`.
pub const REQ_LEN: usize = 32;
/// Bytes of `struct pvu_extent`.
pub const EXTENT_LEN: usize = 16;
/// Bytes of `struct pvu_arena_run` (ARENA_REGISTER's `nr` runs after the
/// header: le32 `chunk`, le32 `nr`, le32 `dst_off`, le32 `reserved`).
pub const ARENA_RUN_LEN: usize = 16;
/// Bytes of `struct pvu_ctrl_resp` (without a command's output).
pub const RESP_LEN: usize = 16;
/// Bytes of `struct pvu_ring_layout` (CREATE_RING's output).
pub const RING_LAYOUT_LEN: usize = 32;

/// Byte offsets of `struct pvu_ctrl_req`.
pub mod req {
    /// le32 `cmd`.
    pub const CMD: usize = 0;
    /// le32 `ring_id`.
    pub const RING_ID: usize = 4;
    /// le32 `flags`.
    pub const FLAGS: usize = 8;
    /// le32 `nr`.
    pub const NR: usize = 12;
    /// le32 `src_id`.
    pub const SRC_ID: usize = 16;
    /// le32 `src_off`.
    pub const SRC_OFF: usize = 20;
    /// le32 `dst_off`.
    pub const DST_OFF: usize = 24;
    /// le32 `reserved` (must be 0).
    pub const RESERVED: usize = 28;
}

/// Byte offsets of `struct pvu_ctrl_resp`.
pub mod resp {
    /// le32 `status`: 0 or a negative errno.
    pub const STATUS: usize = 0;
    /// le32 `id`.
    pub const ID: usize = 4;
    /// le64 `value`.
    pub const VALUE: usize = 8;
}

/// `struct pvu_ring_layout`: CREATE_RING's output, what the guest needs to
/// use the ring. Offsets `cq_*` are in the ring's completion slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// SQ entries (a power of two).
    pub sq_entries: u32,
    /// CQ entries (a power of two, at least `sq_entries`).
    pub cq_entries: u32,
    /// [`PVU_RING_POLLED`] when the ring has a polled submitter.
    pub flags: u32,
    /// Offset of the le32 CQ tail (the host kernel's; acquire-load it).
    pub cq_tail: u32,
    /// Offset of the CQE array (`cq_entries` x 16 bytes).
    pub cqes: u32,
    /// Offset of the host CQ head (the device's copy of the guest's
    /// `cq_head`; informational).
    pub cq_head: u32,
    /// Offset of the ring's submission slot in the ring area.
    pub sq_slot: u32,
    /// Offset of the ring's completion slot in the ring area.
    pub cq_slot: u32,
}

impl RingLayout {
    /// The 32 wire bytes.
    pub fn to_bytes(&self) -> [u8; RING_LAYOUT_LEN] {
        let mut b = [0u8; RING_LAYOUT_LEN];
        let words = [
            self.sq_entries,
            self.cq_entries,
            self.flags,
            self.cq_tail,
            self.cqes,
            self.cq_head,
            self.sq_slot,
            self.cq_slot,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Decodes the 32 wire bytes.
    pub fn from_bytes(b: &[u8; RING_LAYOUT_LEN]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        Self {
            sq_entries: w(0),
            cq_entries: w(1),
            flags: w(2),
            cq_tail: w(3),
            cqes: w(4),
            cq_head: w(5),
            sq_slot: w(6),
            cq_slot: w(7),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_layout() {
        let a = AreaLayout { max_rings: 32 };
        assert_eq!(a.sq_area_len(), 16 << 20);
        assert_eq!(a.cq_area_offset(), 16 << 20);
        assert_eq!(a.cq_area_len(), 8 << 20);
        assert_eq!(a.cq_slot(1), Some((16 << 20) + (256 << 10)));
        assert_eq!(a.sq_slot(32), None);
        let one = AreaLayout { max_rings: 1 };
        assert_eq!(one.len(), 4 << 20);
    }

    // The largest SQ fits its slot; the device's words are on another
    // cache line than the guest's.
    const _: () =
        assert!(slot::SQES + MAX_ENTRIES as usize * crate::uring::SQE_LEN <= SQ_SLOT_SIZE as usize);
    const _: () = assert!(slot::SQ_HEAD >= 64 && slot::SQ_TAIL < 64);

    #[test]
    fn arena_chunks_fit_one_table() {
        assert_eq!(arena_chunk_size(64 << 20, 2 << 20), Some(2 << 20));
        assert_eq!(arena_chunk_size(2 << 30, 2 << 20), Some(2 << 20));
        assert_eq!(arena_chunk_size(4 << 30, 2 << 20), Some(4 << 20));
        assert_eq!(arena_chunk_size(8 << 30, 1 << 30), Some(1 << 30));
        assert_eq!(arena_chunk_size(3 << 20, 2 << 20), None);
        assert_eq!(arena_chunk_size(0, 2 << 20), None);
        assert_eq!(arena_chunk_size(2048 << 30, 1 << 30), None);
    }

    #[test]
    fn ring_layout_round_trips() {
        let l = RingLayout {
            sq_entries: 1,
            cq_entries: 2,
            flags: 3,
            cq_tail: 4,
            cqes: 5,
            cq_head: 6,
            sq_slot: 7,
            cq_slot: 8,
        };
        let b = l.to_bytes();
        assert_eq!(b[12], 4);
        assert_eq!(RingLayout::from_bytes(&b), l);
    }
}
