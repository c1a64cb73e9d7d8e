//! The SQ and CQ of one ring slot, as user-space io_uring libraries see
//! them: pointers computed from the `io_uring_params` offsets (all relative
//! to slot offset 0, one region as with `IORING_FEAT_SINGLE_MMAP`), SQEs at
//! slot + 1 MiB. Nothing here makes a system call.

use crate::abi::{
    IoUringParams, CQE_BYTES, IORING_CQ_EVENTFD_DISABLED, IORING_SETUP_CQE32,
    IORING_SETUP_NO_SQARRAY, IORING_SETUP_SQE128, IORING_SQ_NEED_WAKEUP, SQES_OFFSET, SQE_BYTES,
};
use crate::error::{Error, Result};
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// A completion queue entry, copied out of the shared CQ.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

impl Cqe {
    pub fn user_data(&self) -> u64 {
        self.user_data
    }
    pub fn result(&self) -> i32 {
        self.res
    }
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// Checks that every field the params name lies inside a slot of
/// `slot_len` bytes: ring words and arrays below the SQE array at 1 MiB,
/// SQEs below the slot's end, entries powers of two.
pub fn validate(p: &IoUringParams, slot_len: usize) -> Result<()> {
    let bad = |m: String| Err(Error::Layout(m));
    if p.flags & (IORING_SETUP_SQE128 | IORING_SETUP_CQE32 | IORING_SETUP_NO_SQARRAY) != 0 {
        return bad(format!("unsupported setup flags {:#x}", p.flags));
    }
    for (what, n) in [("sq_entries", p.sq_entries), ("cq_entries", p.cq_entries)] {
        if n == 0 || !n.is_power_of_two() {
            return bad(format!("{what} {n} is not a power of two"));
        }
    }
    let rings_end = SQES_OFFSET as u64;
    let word = |what: &str, off: u32| -> Result<()> {
        if !off.is_multiple_of(4) || off as u64 + 4 > rings_end {
            return Err(Error::Layout(format!(
                "{what} offset {off:#x} outside the ring area"
            )));
        }
        Ok(())
    };
    let s = &p.sq_off;
    let c = &p.cq_off;
    word("sq head", s.head)?;
    word("sq tail", s.tail)?;
    word("sq ring_mask", s.ring_mask)?;
    word("sq ring_entries", s.ring_entries)?;
    word("sq flags", s.flags)?;
    word("sq dropped", s.dropped)?;
    word("cq head", c.head)?;
    word("cq tail", c.tail)?;
    word("cq ring_mask", c.ring_mask)?;
    word("cq ring_entries", c.ring_entries)?;
    word("cq overflow", c.overflow)?;
    word("cq flags", c.flags)?;
    word("sq array", s.array)?;
    if s.array as u64 + p.sq_entries as u64 * 4 > rings_end {
        return bad(format!(
            "sq array {:#x} x {} overflows",
            s.array, p.sq_entries
        ));
    }
    if !c.cqes.is_multiple_of(16)
        || c.cqes as u64 + p.cq_entries as u64 * CQE_BYTES as u64 > rings_end
    {
        return bad(format!("cqes {:#x} x {} overflows", c.cqes, p.cq_entries));
    }
    // The device puts slot offsets in the user_addr fields: the rings at 0,
    // the SQEs at 1 MiB (0 from a device that leaves them out).
    if p.sq_off.user_addr != 0 && p.sq_off.user_addr != SQES_OFFSET as u64 {
        return bad(format!(
            "sq_off.user_addr {:#x}: SQEs not at 1 MiB",
            p.sq_off.user_addr
        ));
    }
    if p.cq_off.user_addr != 0 {
        return bad(format!(
            "cq_off.user_addr {:#x}: rings not at 0",
            p.cq_off.user_addr
        ));
    }
    if SQES_OFFSET as u64 + p.sq_entries as u64 * SQE_BYTES as u64 > slot_len as u64 {
        return bad(format!(
            "{} SQEs do not fit a slot of {slot_len:#x}",
            p.sq_entries
        ));
    }
    Ok(())
}

/// Raw SQ/CQ access for one mapped slot.
pub(crate) struct Queues {
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_flags: *const AtomicU32,
    sq_dropped: *const AtomicU32,
    sq_array: *mut u32,
    sq_mask: u32,
    sq_entries: u32,
    sqes: *mut u8,
    /// Our copy of the SQ tail (we are its only writer).
    local_tail: u32,
    /// The tail at the last doorbell.
    rung_tail: u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_overflow: *const AtomicU32,
    cq_flags: *const AtomicU32,
    cqes: *const Cqe,
    cq_mask: u32,
    cq_entries: u32,
    sqpoll: bool,
}

// SAFETY: the pointers are into a mapping owned by whoever owns the Queues
// (PvRing, or a test's buffer); moving it to another thread moves that
// ownership along. It is not Sync (all mutation goes through &mut self).
unsafe impl Send for Queues {}

impl Queues {
    /// # Safety
    /// `base` must point to `slot_len` bytes, readable and writable, 4-byte
    /// aligned, that stay mapped as long as the returned value lives; the
    /// ring words at the params' offsets must hold the ring's mask and
    /// entries (the host kernel writes them).
    pub(crate) unsafe fn new(base: *mut u8, slot_len: usize, p: &IoUringParams) -> Result<Self> {
        validate(p, slot_len)?;
        // SAFETY: every offset was checked by `validate` to lie inside the
        // `slot_len` bytes at `base`, and to be 4-aligned (16 for cqes).
        let at = |off: u32| unsafe { base.add(off as usize) };
        let read = |off: u32| {
            // SAFETY: as above; a plain u32 the host wrote before CREATE returned.
            unsafe { (*(at(off) as *const AtomicU32)).load(Ordering::Acquire) }
        };
        let s = &p.sq_off;
        let c = &p.cq_off;
        let sq_mask = read(s.ring_mask);
        let sq_entries = read(s.ring_entries);
        let cq_mask = read(c.ring_mask);
        let cq_entries = read(c.ring_entries);
        if sq_entries != p.sq_entries || sq_mask != sq_entries.wrapping_sub(1) {
            return Err(Error::Layout(format!(
                "SQ ring says entries {sq_entries} mask {sq_mask:#x}, params {}",
                p.sq_entries
            )));
        }
        if cq_entries != p.cq_entries || cq_mask != cq_entries.wrapping_sub(1) {
            return Err(Error::Layout(format!(
                "CQ ring says entries {cq_entries} mask {cq_mask:#x}, params {}",
                p.cq_entries
            )));
        }
        let tail = read(s.tail);
        Ok(Queues {
            sq_head: at(s.head).cast(),
            sq_tail: at(s.tail).cast(),
            sq_flags: at(s.flags).cast(),
            sq_dropped: at(s.dropped).cast(),
            sq_array: at(s.array).cast(),
            sq_mask,
            sq_entries,
            // SAFETY: validate() checked SQES_OFFSET + entries * 64 <= slot_len.
            sqes: unsafe { base.add(SQES_OFFSET) },
            local_tail: tail,
            rung_tail: tail,
            cq_head: at(c.head).cast(),
            cq_tail: at(c.tail).cast(),
            cq_overflow: at(c.overflow).cast(),
            cq_flags: at(c.flags).cast(),
            cqes: at(c.cqes).cast(),
            cq_mask,
            cq_entries,
            sqpoll: p.flags & crate::abi::IORING_SETUP_SQPOLL != 0,
        })
    }

    fn word(&self, p: *const AtomicU32) -> &AtomicU32 {
        // SAFETY: `p` is one of the ring words computed in `new`, inside the
        // mapping that lives as long as `self`.
        unsafe { &*p }
    }

    pub(crate) fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// Sets or clears `IORING_CQ_EVENTFD_DISABLED` in the CQ flags word:
    /// the application's switch (liburing's `io_uring_cq_eventfd_toggle`)
    /// that the host kernel reads before it signals the ring's eventfd,
    /// which on a pv ring is the completion interrupt.
    pub(crate) fn set_cq_eventfd(&self, enabled: bool) {
        let w = self.word(self.cq_flags);
        if enabled {
            w.fetch_and(!IORING_CQ_EVENTFD_DISABLED, Ordering::Release);
        } else {
            w.fetch_or(IORING_CQ_EVENTFD_DISABLED, Ordering::Release);
        }
    }

    pub(crate) fn cq_eventfd_enabled(&self) -> bool {
        self.word(self.cq_flags).load(Ordering::Acquire) & IORING_CQ_EVENTFD_DISABLED == 0
    }
    pub(crate) fn cq_entries(&self) -> u32 {
        self.cq_entries
    }
    pub(crate) fn is_sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// SQEs queued and not yet consumed by the host.
    pub(crate) fn sq_len(&self) -> u32 {
        let head = self.word(self.sq_head).load(Ordering::Acquire);
        self.local_tail.wrapping_sub(head)
    }

    /// Free SQ entries.
    pub(crate) fn sq_space(&self) -> u32 {
        self.sq_entries.saturating_sub(self.sq_len())
    }

    /// SQEs the host dropped (invalid array index), from the ring.
    pub(crate) fn sq_dropped(&self) -> u32 {
        self.word(self.sq_dropped).load(Ordering::Acquire)
    }

    /// The SQ flags word (NEED_WAKEUP, CQ_OVERFLOW, ...).
    pub(crate) fn sq_flags(&self) -> u32 {
        self.word(self.sq_flags).load(Ordering::Acquire)
    }

    /// The four ring indices as they are in shared memory, and our local
    /// SQ tail: (sq head, sq tail, local tail, cq head, cq tail).
    pub(crate) fn indices(&self) -> (u32, u32, u32, u32, u32) {
        (
            self.word(self.sq_head).load(Ordering::Acquire),
            self.word(self.sq_tail).load(Ordering::Acquire),
            self.local_tail,
            self.word(self.cq_head).load(Ordering::Acquire),
            self.word(self.cq_tail).load(Ordering::Acquire),
        )
    }

    /// CQE slot `i` (masked), read without consuming it.
    pub(crate) fn peek_cqe(&self, i: u32) -> Cqe {
        // SAFETY: masked index inside the CQE array (validate).
        unsafe { self.cqes.add((i & self.cq_mask) as usize).read_volatile() }
    }

    /// CQEs the host could not post (overflow counter).
    pub(crate) fn cq_overflow(&self) -> u32 {
        self.word(self.cq_overflow).load(Ordering::Acquire)
    }

    /// Copies one 64-byte SQE into the next free slot and fills the SQ
    /// array entry with `array_index` (normally the slot index itself);
    /// the tail is published by [`Queues::flush`].
    pub(crate) fn push_bytes(
        &mut self,
        sqe: &[u8; SQE_BYTES],
        array_index: Option<u32>,
    ) -> Result<()> {
        if self.sq_space() == 0 {
            return Err(Error::SqFull);
        }
        let idx = self.local_tail & self.sq_mask;
        // SAFETY: idx < sq_entries; the SQE array has sq_entries x 64 bytes
        // at `sqes` and the SQ array sq_entries u32 (checked in validate).
        // The slot is ours: the host consumed it (head moved past it) or
        // never saw it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sqe.as_ptr(),
                self.sqes.add(idx as usize * SQE_BYTES),
                SQE_BYTES,
            );
            self.sq_array
                .add(idx as usize)
                .write_volatile(array_index.unwrap_or(idx));
        }
        self.local_tail = self.local_tail.wrapping_add(1);
        Ok(())
    }

    /// Release-stores the tail (the host sees the SQEs and array entries
    /// written before it); returns how many were added since the last
    /// flush and whether the doorbell is needed (always for a non-SQPOLL
    /// ring with new entries; for SQPOLL only when the poller sleeps).
    pub(crate) fn flush(&mut self) -> (u32, bool) {
        let n = self.local_tail.wrapping_sub(self.rung_tail);
        self.word(self.sq_tail)
            .store(self.local_tail, Ordering::Release);
        self.rung_tail = self.local_tail;
        // Order the tail store before the doorbell write and before the
        // NEED_WAKEUP load (the smp_mb of liburing's sq_ring_needs_enter).
        fence(Ordering::SeqCst);
        let ring = if self.sqpoll {
            self.word(self.sq_flags).load(Ordering::Relaxed) & IORING_SQ_NEED_WAKEUP != 0
        } else {
            n > 0
        };
        (n, ring)
    }

    /// CQEs ready to reap.
    pub(crate) fn cq_ready(&self) -> u32 {
        let tail = self.word(self.cq_tail).load(Ordering::Acquire);
        let head = self.word(self.cq_head).load(Ordering::Relaxed);
        tail.wrapping_sub(head)
    }

    /// Reaps one CQE (acquire-loads the tail, release-stores the head).
    pub(crate) fn pop(&mut self) -> Option<Cqe> {
        let head = self.word(self.cq_head).load(Ordering::Relaxed);
        let tail = self.word(self.cq_tail).load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: (head & mask) < cq_entries; the CQE array holds cq_entries
        // entries (validate). The acquire load of the tail makes the host's
        // CQE write visible; volatile because the host writes it.
        let cqe = unsafe {
            self.cqes
                .add((head & self.cq_mask) as usize)
                .read_volatile()
        };
        self.word(self.cq_head)
            .store(head.wrapping_add(1), Ordering::Release);
        Some(cqe)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory ring slot with the host's side played by the test.

    use super::*;
    use crate::abi::{CqringOffsets, SqringOffsets};

    pub const SLOT: usize = 2 << 20;

    /// A 2 MiB, 64-byte aligned buffer laid out like a host kernel's ring.
    pub struct FakeSlot {
        pub mem: Vec<u64>,
        pub params: IoUringParams,
    }

    impl FakeSlot {
        pub fn new(sq_entries: u32, flags: u32) -> Self {
            let cq_entries = sq_entries * 2;
            // Layout similar to the kernel's struct io_rings: the words, then
            // the CQEs, then the SQ array.
            let params = IoUringParams {
                sq_entries,
                cq_entries,
                flags,
                sq_off: SqringOffsets {
                    head: 0,
                    tail: 64,
                    ring_mask: 256,
                    ring_entries: 264,
                    flags: 276,
                    dropped: 272,
                    array: 64 + 0x40 * 4 + cq_entries * 16 + 0x100,
                    resv1: 0,
                    user_addr: 0,
                },
                cq_off: CqringOffsets {
                    head: 128,
                    tail: 192,
                    ring_mask: 260,
                    ring_entries: 268,
                    overflow: 284,
                    cqes: 320,
                    flags: 280,
                    resv1: 0,
                    user_addr: 0,
                },
                ..Default::default()
            };
            let mut s = FakeSlot {
                mem: vec![0u64; SLOT / 8],
                params,
            };
            s.set(256, sq_entries - 1);
            s.set(264, sq_entries);
            s.set(260, cq_entries - 1);
            s.set(268, cq_entries);
            s
        }
        pub fn base(&mut self) -> *mut u8 {
            self.mem.as_mut_ptr().cast()
        }
        pub fn word(&self, off: u32) -> &AtomicU32 {
            // SAFETY: test offsets are inside the buffer and 4-aligned.
            unsafe { &*(self.mem.as_ptr().cast::<u8>().add(off as usize) as *const AtomicU32) }
        }
        pub fn get(&self, off: u32) -> u32 {
            self.word(off).load(Ordering::Acquire)
        }
        pub fn set(&mut self, off: u32, v: u32) {
            self.word(off).store(v, Ordering::Release)
        }
        /// The host consumes every pending SQE (by head/tail and the SQ
        /// array) and posts a CQE (user_data, res = opcode byte) for each.
        pub fn host_run(&self) -> Vec<[u8; 64]> {
            let p = &self.params;
            let mut head = self.get(p.sq_off.head);
            let tail = self.get(p.sq_off.tail);
            let mut got = Vec::new();
            while head != tail {
                let slot = self.get(p.sq_off.array + 4 * (head & (p.sq_entries - 1)));
                let mut sqe = [0u8; 64];
                let b = self.mem.as_ptr().cast::<u8>();
                // SAFETY: inside the buffer: slot < sq_entries.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        b.add(SQES_OFFSET + slot as usize * 64),
                        sqe.as_mut_ptr(),
                        64,
                    )
                };
                got.push(sqe);
                head = head.wrapping_add(1);
                self.word(p.sq_off.head).store(head, Ordering::Release);
                let ud = u64::from_le_bytes(sqe[32..40].try_into().unwrap());
                self.post(ud, sqe[0] as i32);
            }
            got
        }
        pub fn post(&self, user_data: u64, res: i32) {
            let p = &self.params;
            let tail = self.get(p.cq_off.tail);
            let idx = tail & (p.cq_entries - 1);
            // SAFETY: idx < cq_entries; the CQE array is inside the buffer.
            unsafe {
                let c = self
                    .mem
                    .as_ptr()
                    .cast::<u8>()
                    .add(p.cq_off.cqes as usize + idx as usize * 16)
                    as *mut Cqe;
                c.write_volatile(Cqe {
                    user_data,
                    res,
                    flags: 0,
                });
            }
            self.word(p.cq_off.tail)
                .store(tail.wrapping_add(1), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use io_uring::{opcode, types};

    fn sqe_bytes(e: &io_uring::squeue::Entry) -> [u8; 64] {
        let mut b = [0u8; 64];
        // SAFETY: Entry is a repr(C) 64-byte io_uring_sqe.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (e as *const io_uring::squeue::Entry).cast::<u8>(),
                b.as_mut_ptr(),
                64,
            )
        };
        b
    }

    #[test]
    fn validate_rejects_bad_layouts() {
        let f = FakeSlot::new(8, 0);
        assert!(validate(&f.params, SLOT).is_ok());
        let mut p = f.params;
        p.sq_entries = 6;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.sq_off.tail = SQES_OFFSET as u32;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.cq_off.cqes = SQES_OFFSET as u32 - 16;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.sq_off.head = 2;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.flags = IORING_SETUP_CQE32;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.sq_off.user_addr = SQES_OFFSET as u64;
        assert!(validate(&p, SLOT).is_ok());
        p.sq_off.user_addr = 0x20_0000;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.cq_off.user_addr = 0x1000;
        assert!(validate(&p, SLOT).is_err());
        let mut p = f.params;
        p.sq_entries = 32768;
        assert!(validate(&p, SLOT).is_err(), "SQEs past the slot");
        let p = FakeSlot::new(4096, 0).params;
        assert!(validate(&p, SLOT).is_ok());
    }

    #[test]
    fn ring_words_must_match_params() {
        let mut f = FakeSlot::new(8, 0);
        f.set(264, 16);
        let p = f.params;
        // SAFETY: the fake slot is SLOT bytes and outlives the result.
        assert!(unsafe { Queues::new(f.base(), SLOT, &p) }.is_err());
    }

    #[test]
    fn push_flush_reap_roundtrip() {
        let mut f = FakeSlot::new(4, 0);
        let p = f.params;
        // SAFETY: the fake slot is SLOT bytes and outlives `q`.
        let mut q = unsafe { Queues::new(f.base(), SLOT, &p) }.unwrap();
        assert_eq!(q.sq_space(), 4);
        for i in 0..4u64 {
            let e = opcode::Nop::new().build().user_data(100 + i);
            q.push_bytes(&sqe_bytes(&e), None).unwrap();
        }
        assert!(matches!(q.push_bytes(&[0; 64], None), Err(Error::SqFull)));
        assert_eq!(f.get(p.sq_off.tail), 0, "tail not published before flush");
        assert_eq!(q.flush(), (4, true));
        assert_eq!(f.get(p.sq_off.tail), 4);
        assert_eq!(q.flush(), (0, false), "nothing new: no doorbell");
        let seen = f.host_run();
        assert_eq!(seen.len(), 4);
        assert_eq!(q.sq_space(), 4);
        assert_eq!(q.cq_ready(), 4);
        let got: Vec<u64> = std::iter::from_fn(|| q.pop())
            .map(|c| c.user_data)
            .collect();
        assert_eq!(got, vec![100, 101, 102, 103]);
        assert_eq!(f.get(p.cq_off.head), 4);
        assert!(q.pop().is_none());
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mut f = FakeSlot::new(8, 0);
        let p = f.params;
        let start = u32::MAX - 5;
        for off in [p.sq_off.head, p.sq_off.tail, p.cq_off.head, p.cq_off.tail] {
            f.set(off, start);
        }
        // SAFETY: as above.
        let mut q = unsafe { Queues::new(f.base(), SLOT, &p) }.unwrap();
        for round in 0..5u64 {
            for i in 0..7u64 {
                let e = opcode::ReadFixed::new(types::Fixed(0), 0x1000 as *mut u8, 512, 3)
                    .offset(4096 * i)
                    .build()
                    .user_data(round * 10 + i);
                q.push_bytes(&sqe_bytes(&e), None).unwrap();
            }
            assert_eq!(q.sq_space(), 1);
            q.flush();
            let seen = f.host_run();
            assert_eq!(seen.len(), 7);
            for (i, s) in seen.iter().enumerate() {
                assert_eq!(s[0], io_uring::opcode::ReadFixed::CODE);
                assert_eq!(s[1] & crate::abi::IOSQE_FIXED_FILE, 1);
                assert_eq!(
                    u64::from_le_bytes(s[32..40].try_into().unwrap()),
                    round * 10 + i as u64
                );
            }
            let got: Vec<u64> = std::iter::from_fn(|| q.pop())
                .map(|c| c.user_data)
                .collect();
            assert_eq!(got, (0..7).map(|i| round * 10 + i).collect::<Vec<_>>());
        }
        assert!(f.get(p.sq_off.tail) < 100, "tail wrapped");
    }

    #[test]
    fn sq_array_is_identity_unless_overridden() {
        let mut f = FakeSlot::new(4, 0);
        let p = f.params;
        // SAFETY: as above.
        let mut q = unsafe { Queues::new(f.base(), SLOT, &p) }.unwrap();
        q.push_bytes(&[1; 64], None).unwrap();
        q.push_bytes(&[2; 64], Some(0x7777)).unwrap();
        assert_eq!(f.get(p.sq_off.array), 0);
        assert_eq!(f.get(p.sq_off.array + 4), 0x7777);
    }

    #[test]
    fn sqpoll_rings_doorbell_only_on_need_wakeup() {
        let mut f = FakeSlot::new(4, crate::abi::IORING_SETUP_SQPOLL);
        let p = f.params;
        // SAFETY: as above.
        let mut q = unsafe { Queues::new(f.base(), SLOT, &p) }.unwrap();
        assert!(q.is_sqpoll());
        q.push_bytes(&[0; 64], None).unwrap();
        assert_eq!(q.flush(), (1, false));
        f.set(p.sq_off.flags, IORING_SQ_NEED_WAKEUP);
        q.push_bytes(&[0; 64], None).unwrap();
        assert_eq!(q.flush(), (1, true));
        assert_eq!(q.sq_flags(), IORING_SQ_NEED_WAKEUP);
    }

    #[test]
    fn cq_eventfd_switch_flips_only_its_bit() {
        let mut f = FakeSlot::new(4, 0);
        let p = f.params;
        // Another flag bit the host kernel might own stays as it is.
        f.set(p.cq_off.flags, 0x8000_0000);
        // SAFETY: as above.
        let q = unsafe { Queues::new(f.base(), SLOT, &p) }.unwrap();
        assert!(q.cq_eventfd_enabled());
        q.set_cq_eventfd(false);
        assert_eq!(
            f.get(p.cq_off.flags),
            0x8000_0000 | IORING_CQ_EVENTFD_DISABLED
        );
        assert!(!q.cq_eventfd_enabled());
        q.set_cq_eventfd(false);
        assert_eq!(
            f.get(p.cq_off.flags),
            0x8000_0000 | IORING_CQ_EVENTFD_DISABLED
        );
        q.set_cq_eventfd(true);
        assert_eq!(f.get(p.cq_off.flags), 0x8000_0000);
        assert!(q.cq_eventfd_enabled());
    }

    #[test]
    fn cq_flags_outside_the_ring_area_is_refused() {
        let f = FakeSlot::new(4, 0);
        let mut p = f.params;
        p.cq_off.flags = SQES_OFFSET as u32;
        let e = validate(&p, SLOT).unwrap_err();
        assert!(e.to_string().contains("cq flags"), "{e}");
        p.cq_off.flags = 282;
        assert!(validate(&p, SLOT).is_err());
    }
}
