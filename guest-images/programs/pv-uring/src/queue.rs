//! The two halves of one v2 ring (docs/pv-uring.md): the **submission
//! slot** the guest writes (its SQ tail, CQ head and CQ flags, the device's
//! SQ head and SQ flags, the SQEs at 0x1000 indexed by position & mask, no
//! indirection array) and the **completion slot** it only reads (the host
//! kernel's CQ tail and CQEs at the offsets CREATE returned). Nothing here
//! makes a system call.

use crate::error::{Error, Result};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use uring_abi::uring::{CQE_LEN, SQE_LEN};
use uring_abi::wire::{slot, PVU_CQ_EVENTFD_DISABLED, PVU_SQ_NEED_WAKEUP};

/// A completion queue entry, copied out of the shared CQ
/// (`struct io_uring_cqe`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    /// The SQE's `user_data`.
    pub user_data: u64,
    /// Result: bytes moved, 0, or a negative errno.
    pub res: i32,
    /// `IORING_CQE_F_*`.
    pub flags: u32,
}

impl Cqe {
    /// The SQE's `user_data`.
    pub fn user_data(&self) -> u64 {
        self.user_data
    }
    /// The result (negative: `-errno`).
    pub fn result(&self) -> i32 {
        self.res
    }
    /// `IORING_CQE_F_*`.
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// What CREATE said about a ring, and the sizes of its two mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// SQ entries (a power of two).
    pub sq_entries: u32,
    /// CQ entries (a power of two, >= `sq_entries`).
    pub cq_entries: u32,
    /// Offset of the le32 CQ tail in the completion slot.
    pub cq_tail: u32,
    /// Offset of the CQE array in the completion slot.
    pub cqes: u32,
    /// Bytes of the submission mapping.
    pub sq_slot_len: usize,
    /// Bytes of the completion mapping.
    pub cq_slot_len: usize,
    /// The ring has a polled submitter (`VURING_RING_POLLED`).
    pub polled: bool,
}

/// Checks that everything the layout names lies inside its mappings, so
/// that no index computed from it leaves them (the device is not trusted
/// to be right).
pub fn validate(l: &Layout) -> Result<()> {
    let bad = |m: String| Err(Error::Layout(m));
    for (what, n) in [("sq_entries", l.sq_entries), ("cq_entries", l.cq_entries)] {
        if n == 0 || !n.is_power_of_two() {
            return bad(format!("{what} {n} is not a power of two"));
        }
    }
    if l.cq_entries < l.sq_entries {
        return bad(format!(
            "cq_entries {} below sq_entries {}",
            l.cq_entries, l.sq_entries
        ));
    }
    let sqes_end = slot::SQES as u64 + u64::from(l.sq_entries) * SQE_LEN as u64;
    if sqes_end > l.sq_slot_len as u64 {
        return bad(format!(
            "{} SQEs do not fit a submission slot of {:#x}",
            l.sq_entries, l.sq_slot_len
        ));
    }
    if !l.cq_tail.is_multiple_of(4) || u64::from(l.cq_tail) + 4 > l.cq_slot_len as u64 {
        return bad(format!("cq_tail offset {:#x} outside the slot", l.cq_tail));
    }
    let cqes_end = u64::from(l.cqes) + u64::from(l.cq_entries) * CQE_LEN as u64;
    if !l.cqes.is_multiple_of(16) || cqes_end > l.cq_slot_len as u64 {
        return bad(format!("cqes {:#x} x {} overflow", l.cqes, l.cq_entries));
    }
    if u64::from(l.cq_tail) + 4 > u64::from(l.cqes) && u64::from(l.cq_tail) < cqes_end {
        return bad(format!("cq_tail {:#x} inside the CQE array", l.cq_tail));
    }
    Ok(())
}

/// Raw SQ/CQ access for one ring's two mappings.
pub(crate) struct Queues {
    sq: *mut u8,
    cq: *const u8,
    cq_tail: u32,
    cqes: u32,
    sq_mask: u32,
    sq_entries: u32,
    cq_mask: u32,
    cq_entries: u32,
    /// Our copy of the SQ tail (we are its only writer).
    local_tail: u32,
    /// The tail last stored to the slot.
    published: u32,
    /// Our copy of the CQ head (we are its only writer).
    cq_head: u32,
    polled: bool,
}

// SAFETY: the pointers are into mappings owned by whoever owns the Queues
// (PvRing, or a test's buffers); moving it to another thread moves that
// ownership along. It is not Sync (all mutation goes through &mut self).
unsafe impl Send for Queues {}

impl Queues {
    /// # Safety
    /// `sq` must point to `l.sq_slot_len` readable and writable bytes and
    /// `cq` to `l.cq_slot_len` readable bytes, both 64-byte aligned, that
    /// stay mapped as long as the returned value lives.
    pub(crate) unsafe fn new(sq: *mut u8, cq: *const u8, l: &Layout) -> Result<Self> {
        validate(l)?;
        let mut q = Queues {
            sq,
            cq,
            cq_tail: l.cq_tail,
            cqes: l.cqes,
            sq_mask: l.sq_entries - 1,
            sq_entries: l.sq_entries,
            cq_mask: l.cq_entries - 1,
            cq_entries: l.cq_entries,
            local_tail: 0,
            published: 0,
            cq_head: 0,
            polled: l.polled,
        };
        // A fresh slot starts at 0; take what is there in case it does not.
        q.local_tail = q.sq_word(slot::SQ_TAIL).load(Ordering::Acquire);
        q.published = q.local_tail;
        q.cq_head = q.sq_word(slot::CQ_HEAD).load(Ordering::Acquire);
        Ok(q)
    }

    /// A le32 word of the submission slot.
    fn sq_word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the `slot::` word offsets, all below the
        // SQEs at 0x1000 and so inside the mapping (validate), 4-aligned;
        // the mapping lives as long as `self`.
        unsafe { &*(self.sq.add(off) as *const AtomicU32) }
    }

    /// The CQ tail word of the completion slot (the host kernel writes it;
    /// only loaded here, the mapping is read-only).
    fn cq_tail_word(&self) -> &AtomicU32 {
        // SAFETY: validate() checked cq_tail + 4 <= cq_slot_len and its
        // alignment; the mapping lives as long as `self`.
        unsafe { &*(self.cq.add(self.cq_tail as usize) as *const AtomicU32) }
    }

    pub(crate) fn sq_entries(&self) -> u32 {
        self.sq_entries
    }
    pub(crate) fn cq_entries(&self) -> u32 {
        self.cq_entries
    }
    pub(crate) fn is_polled(&self) -> bool {
        self.polled
    }

    /// Sets or clears `PVU_CQ_EVENTFD_DISABLED` (the device carries it to
    /// the host ring at its next pass).
    pub(crate) fn set_cq_eventfd(&self, enabled: bool) {
        let w = self.sq_word(slot::CQ_FLAGS);
        if enabled {
            w.fetch_and(!PVU_CQ_EVENTFD_DISABLED, Ordering::Release);
        } else {
            w.fetch_or(PVU_CQ_EVENTFD_DISABLED, Ordering::Release);
        }
    }

    pub(crate) fn cq_eventfd_enabled(&self) -> bool {
        self.sq_word(slot::CQ_FLAGS).load(Ordering::Acquire) & PVU_CQ_EVENTFD_DISABLED == 0
    }

    /// The device's SQ head: SQEs before it are consumed.
    pub(crate) fn sq_head(&self) -> u32 {
        self.sq_word(slot::SQ_HEAD).load(Ordering::Acquire)
    }

    /// The device's SQ flags word (`PVU_SQ_NEED_WAKEUP`).
    pub(crate) fn sq_flags(&self) -> u32 {
        self.sq_word(slot::SQ_FLAGS).load(Ordering::Acquire)
    }

    /// SQEs queued (published or not) and not yet consumed by the device.
    pub(crate) fn sq_len(&self) -> u32 {
        self.local_tail.wrapping_sub(self.sq_head())
    }

    /// Published SQEs the device has not consumed yet.
    pub(crate) fn sq_pending(&self) -> u32 {
        self.published.wrapping_sub(self.sq_head())
    }

    /// Free SQ entries. A device that reports a head past our tail is
    /// treated as having consumed nothing (no room is invented).
    pub(crate) fn sq_space(&self) -> u32 {
        self.sq_entries.saturating_sub(self.sq_len())
    }

    /// (sq head, sq tail in the slot, local tail, cq head, cq tail).
    pub(crate) fn indices(&self) -> (u32, u32, u32, u32, u32) {
        (
            self.sq_head(),
            self.sq_word(slot::SQ_TAIL).load(Ordering::Acquire),
            self.local_tail,
            self.cq_head,
            self.cq_tail_word().load(Ordering::Acquire),
        )
    }

    /// CQE slot `i` (masked), read without consuming it.
    pub(crate) fn peek_cqe(&self, i: u32) -> Cqe {
        let at = self.cqes as usize + (i & self.cq_mask) as usize * CQE_LEN;
        // SAFETY: a masked index inside the CQE array (validate); volatile
        // because the host kernel writes it.
        unsafe { (self.cq.add(at) as *const Cqe).read_volatile() }
    }

    /// Copies one 64-byte SQE into the entry of the next position; the
    /// tail is published by [`Queues::flush`].
    pub(crate) fn push_bytes(&mut self, sqe: &[u8; SQE_LEN]) -> Result<()> {
        if self.sq_space() == 0 {
            return Err(Error::SqFull);
        }
        let idx = (self.local_tail & self.sq_mask) as usize;
        // SAFETY: idx < sq_entries and the SQE array of sq_entries x 64
        // bytes at slot::SQES is inside the mapping (validate). The entry is
        // ours: the device consumed it (its head moved past) or never saw
        // it; the device copies an SQE once, so a later write is harmless.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sqe.as_ptr(),
                self.sq.add(slot::SQES + idx * SQE_LEN),
                SQE_LEN,
            )
        };
        self.local_tail = self.local_tail.wrapping_add(1);
        Ok(())
    }

    /// Stores `tail` as the slot's SQ tail, unchecked (hostile tests: the
    /// device must ignore a tail more than `sq_entries` ahead of its head).
    pub(crate) fn store_raw_tail(&self, tail: u32) {
        self.sq_word(slot::SQ_TAIL).store(tail, Ordering::Release);
    }

    /// Stores `head` as the slot's CQ head, unchecked (hostile tests: the
    /// device must ignore a head outside `[host CQ head, CQ tail]`).
    /// [`Queues::restore`] puts the library's own values back.
    pub(crate) fn store_raw_cq_head(&self, head: u32) {
        self.sq_word(slot::CQ_HEAD).store(head, Ordering::Release);
    }

    /// Stores the library's own SQ tail and CQ head again.
    pub(crate) fn restore(&self) {
        self.sq_word(slot::CQ_HEAD)
            .store(self.cq_head, Ordering::Release);
        self.sq_word(slot::SQ_TAIL)
            .store(self.published, Ordering::Release);
    }

    /// Release-stores the tail (the device sees the SQEs written before
    /// it); returns how many were added since the last flush and whether
    /// the doorbell is needed: for a doorbell ring whenever there are new
    /// entries, for a polled ring only when its submitter sleeps.
    pub(crate) fn flush(&mut self) -> (u32, bool) {
        let n = self.local_tail.wrapping_sub(self.published);
        self.sq_word(slot::SQ_TAIL)
            .store(self.local_tail, Ordering::Release);
        self.published = self.local_tail;
        // Order the tail store before the doorbell write and before the
        // NEED_WAKEUP load (the smp_mb of liburing's sq_ring_needs_enter):
        // a submitter that goes to sleep sets the flag, then looks at the
        // tail once more.
        fence(Ordering::SeqCst);
        (n, n > 0 && self.doorbell_needed())
    }

    /// Whether a doorbell is needed to have the device look at the ring:
    /// always for a doorbell ring, for a polled one when it sleeps.
    pub(crate) fn doorbell_needed(&self) -> bool {
        !self.polled || self.sq_flags() & PVU_SQ_NEED_WAKEUP != 0
    }

    /// Our CQ head (CQEs before it are reaped).
    pub(crate) fn cq_head(&self) -> u32 {
        self.cq_head
    }

    /// Whether, after reaping from CQ head `before` to now, the device may
    /// sit on published SQEs because its CQ was full, so that a pass (a
    /// doorbell) is needed: it stops only when it has cq_entries consumed
    /// and not reaped for the CQ head it read, which was at least `before`
    /// (reaps that end before its read start later), so more than
    /// cq_entries SQEs were published past `before`. Within the CQ's size,
    /// as in any program that keeps fewer requests in flight than CQ
    /// entries, no extra doorbell is rung.
    pub(crate) fn stalled_after_reap(&self, before: u32) -> bool {
        self.cq_head != before
            && self.sq_pending() > 0
            && self.published.wrapping_sub(before) > self.cq_entries
            && self.doorbell_needed()
    }

    /// CQEs ready to reap.
    pub(crate) fn cq_ready(&self) -> u32 {
        let tail = self.cq_tail_word().load(Ordering::Acquire);
        // At most cq_entries: a larger difference is not the host kernel's
        // doing and must not make us read past the entries it wrote.
        tail.wrapping_sub(self.cq_head).min(self.cq_entries)
    }

    /// Reaps one CQE (acquire-loads the tail, release-stores the head).
    pub(crate) fn pop(&mut self) -> Option<Cqe> {
        if self.cq_ready() == 0 {
            return None;
        }
        // The acquire load in cq_ready makes the CQE's contents visible.
        let cqe = self.peek_cqe(self.cq_head);
        self.cq_head = self.cq_head.wrapping_add(1);
        self.sq_word(slot::CQ_HEAD)
            .store(self.cq_head, Ordering::Release);
        Some(cqe)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! In-memory slots with the device's side played by the test: it
    //! consumes SQEs under the same flow control as the real device and
    //! posts one CQE per SQE.

    use super::*;

    pub const SQ_SLOT: usize = 512 << 10;
    pub const CQ_SLOT: usize = 256 << 10;
    pub const CQ_TAIL: u32 = 0x40;
    pub const CQES: u32 = 0x100;

    pub struct FakeRing {
        pub sq: Vec<u64>,
        pub cq: Vec<u64>,
        pub layout: Layout,
        /// SQEs the fake device consumed.
        pub consumed: u32,
    }

    impl FakeRing {
        pub fn new(sq_entries: u32, polled: bool) -> Self {
            FakeRing {
                sq: vec![0u64; SQ_SLOT / 8],
                cq: vec![0u64; CQ_SLOT / 8],
                layout: Layout {
                    sq_entries,
                    cq_entries: sq_entries * 2,
                    cq_tail: CQ_TAIL,
                    cqes: CQES,
                    sq_slot_len: SQ_SLOT,
                    cq_slot_len: CQ_SLOT,
                    polled,
                },
                consumed: 0,
            }
        }
        pub fn queues(&mut self) -> Queues {
            let l = self.layout;
            // SAFETY: both buffers have the layout's sizes, are 8-aligned
            // (enough for the u32 words and CQEs used here) and outlive the
            // test's Queues (the test keeps `self` alive).
            unsafe { Queues::new(self.sq.as_mut_ptr().cast(), self.cq.as_ptr().cast(), &l) }
                .unwrap()
        }
        fn word(buf: &[u64], off: usize) -> &AtomicU32 {
            // SAFETY: test offsets are inside the buffer and 4-aligned.
            unsafe { &*(buf.as_ptr().cast::<u8>().add(off) as *const AtomicU32) }
        }
        pub fn sq_word(&self, off: usize) -> &AtomicU32 {
            Self::word(&self.sq, off)
        }
        pub fn set_cq_tail(&self, v: u32) {
            Self::word(&self.cq, CQ_TAIL as usize).store(v, Ordering::Release);
        }
        pub fn cq_tail(&self) -> u32 {
            Self::word(&self.cq, CQ_TAIL as usize).load(Ordering::Acquire)
        }
        /// One device pass: consume SQEs from the head to the tail while
        /// fewer than cq_entries are consumed and not reaped; post a CQE
        /// with res = the opcode byte for each. Returns the SQEs seen.
        pub fn pass(&mut self) -> Vec<[u8; 64]> {
            let l = self.layout;
            let tail = self.sq_word(slot::SQ_TAIL).load(Ordering::Acquire);
            let cq_head = self.sq_word(slot::CQ_HEAD).load(Ordering::Acquire);
            let mut head = self.sq_word(slot::SQ_HEAD).load(Ordering::Relaxed);
            let mut got = Vec::new();
            if tail.wrapping_sub(head) > l.sq_entries {
                return got;
            }
            while head != tail && self.consumed.wrapping_sub(cq_head) < l.cq_entries {
                let at = slot::SQES + (head & (l.sq_entries - 1)) as usize * 64;
                let mut sqe = [0u8; 64];
                sqe.copy_from_slice(&bytemuck(&self.sq)[at..at + 64]);
                head = head.wrapping_add(1);
                self.consumed = self.consumed.wrapping_add(1);
                let ud = u64::from_le_bytes(sqe[32..40].try_into().unwrap());
                self.post(ud, sqe[0] as i32);
                got.push(sqe);
            }
            self.sq_word(slot::SQ_HEAD).store(head, Ordering::Release);
            got
        }
        pub fn post(&mut self, user_data: u64, res: i32) {
            let l = self.layout;
            let tail = self.cq_tail();
            let at = l.cqes as usize + (tail & (l.cq_entries - 1)) as usize * 16;
            let b: &mut [u8] = bytemuck_mut(&mut self.cq);
            b[at..at + 8].copy_from_slice(&user_data.to_le_bytes());
            b[at + 8..at + 12].copy_from_slice(&res.to_le_bytes());
            Self::word(&self.cq, CQ_TAIL as usize).store(tail.wrapping_add(1), Ordering::Release);
        }
    }

    fn bytemuck(v: &[u64]) -> &[u8] {
        // SAFETY: u64s are plain bytes; the length covers the same memory.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 8) }
    }
    fn bytemuck_mut(v: &mut [u64]) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    fn nop(ud: u64) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[1] = 1;
        b[32..40].copy_from_slice(&ud.to_le_bytes());
        b
    }

    fn layout() -> Layout {
        FakeRing::new(8, false).layout
    }

    #[test]
    fn validate_rejects_bad_layouts() {
        assert!(validate(&layout()).is_ok());
        let bad = [
            Layout {
                sq_entries: 6,
                ..layout()
            },
            Layout {
                cq_entries: 4,
                ..layout()
            },
            Layout {
                sq_entries: 8192,
                cq_entries: 8192,
                ..layout()
            },
            Layout {
                cq_tail: CQ_SLOT as u32 - 2,
                ..layout()
            },
            Layout {
                cq_tail: 2,
                ..layout()
            },
            Layout {
                cqes: CQ_SLOT as u32 - 16,
                ..layout()
            },
            Layout {
                cqes: 8,
                ..layout()
            },
            Layout {
                cq_tail: CQES + 16,
                ..layout()
            },
        ];
        for l in bad {
            assert!(validate(&l).is_err(), "{l:?}");
        }
        // The largest SQ fits a 512 KiB slot.
        let l = Layout {
            sq_entries: 4096,
            cq_entries: 8192,
            cqes: 0x1000,
            ..layout()
        };
        assert!(validate(&l).is_ok());
    }

    #[test]
    fn sqes_at_position_and_mask_no_array() {
        let mut f = FakeRing::new(4, false);
        let mut q = f.queues();
        for i in 0..4 {
            q.push_bytes(&nop(100 + i)).unwrap();
        }
        assert!(matches!(q.push_bytes(&nop(0)), Err(Error::SqFull)));
        assert_eq!(
            f.sq_word(slot::SQ_TAIL).load(Ordering::Acquire),
            0,
            "tail not published before flush"
        );
        assert_eq!(q.flush(), (4, true));
        assert_eq!(f.sq_word(slot::SQ_TAIL).load(Ordering::Acquire), 4);
        assert_eq!(q.flush(), (0, false), "nothing new: no doorbell");
        let seen = f.pass();
        let uds: Vec<u64> = seen
            .iter()
            .map(|s| u64::from_le_bytes(s[32..40].try_into().unwrap()))
            .collect();
        assert_eq!(uds, [100, 101, 102, 103]);
        assert_eq!(q.sq_space(), 4);
        let got: Vec<u64> = std::iter::from_fn(|| q.pop())
            .map(|c| c.user_data)
            .collect();
        assert_eq!(got, [100, 101, 102, 103]);
        assert_eq!(f.sq_word(slot::CQ_HEAD).load(Ordering::Acquire), 4);
        assert!(q.pop().is_none());
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mut f = FakeRing::new(8, false);
        let start = u32::MAX - 5;
        for off in [slot::SQ_TAIL, slot::SQ_HEAD, slot::CQ_HEAD] {
            f.sq_word(off).store(start, Ordering::Relaxed);
        }
        f.consumed = start;
        f.set_cq_tail(start);
        let mut q = f.queues();
        for round in 0..5u64 {
            for i in 0..7u64 {
                q.push_bytes(&nop(round * 10 + i)).unwrap();
            }
            assert_eq!(q.sq_space(), 1);
            q.flush();
            assert_eq!(f.pass().len(), 7);
            let got: Vec<u64> = std::iter::from_fn(|| q.pop())
                .map(|c| c.user_data)
                .collect();
            assert_eq!(got, (0..7).map(|i| round * 10 + i).collect::<Vec<_>>());
        }
        assert!(
            f.sq_word(slot::SQ_TAIL).load(Ordering::Acquire) < 100,
            "wrapped"
        );
    }

    #[test]
    fn unreaped_cq_stops_the_device_until_reaped() {
        // sq 4, cq 8: after 8 unreaped completions the device consumes
        // nothing more; the SQ then fills; reaping makes room again.
        let mut f = FakeRing::new(4, false);
        let mut q = f.queues();
        let mut ud = 0;
        for _ in 0..2 {
            for _ in 0..4 {
                q.push_bytes(&nop(ud)).unwrap();
                ud += 1;
            }
            q.flush();
            assert_eq!(f.pass().len(), 4);
        }
        for _ in 0..4 {
            q.push_bytes(&nop(ud)).unwrap();
            ud += 1;
        }
        q.flush();
        assert!(f.pass().is_empty(), "the CQ is full: nothing consumed");
        assert_eq!(q.sq_pending(), 4);
        assert!(matches!(q.push_bytes(&nop(99)), Err(Error::SqFull)));
        assert_eq!(q.cq_ready(), 8);
        for k in 0..3 {
            assert_eq!(q.pop().unwrap().user_data, k);
        }
        assert_eq!(f.pass().len(), 3, "room for three");
        assert_eq!(q.sq_pending(), 1);
    }

    #[test]
    fn a_reap_asks_for_a_doorbell_only_past_a_full_cq() {
        // sq 4, cq 8. Within the CQ's size: never.
        let mut f = FakeRing::new(4, false);
        let mut q = f.queues();
        for k in 0..4 {
            q.push_bytes(&nop(k)).unwrap();
        }
        q.flush();
        f.pass();
        q.push_bytes(&nop(9)).unwrap();
        q.flush();
        let before = q.cq_head();
        q.pop().unwrap();
        assert!(!q.stalled_after_reap(before), "5 published, 8 CQ entries");
        // Past it: 8 consumed and not reaped, 4 more waiting.
        let mut f = FakeRing::new(4, false);
        let mut q = f.queues();
        for _ in 0..3 {
            for k in 0..4 {
                q.push_bytes(&nop(k)).unwrap();
            }
            q.flush();
            f.pass();
        }
        assert_eq!(q.sq_pending(), 4);
        let before = q.cq_head();
        assert!(!q.stalled_after_reap(before), "nothing reaped");
        q.pop().unwrap();
        assert!(q.stalled_after_reap(before));
        assert_eq!(f.pass().len(), 1, "the pass the doorbell runs takes one");
    }

    #[test]
    fn polled_rings_ring_only_when_the_submitter_sleeps() {
        let mut f = FakeRing::new(4, true);
        let mut q = f.queues();
        assert!(q.is_polled());
        q.push_bytes(&nop(1)).unwrap();
        assert_eq!(q.flush(), (1, false));
        f.sq_word(slot::SQ_FLAGS)
            .store(PVU_SQ_NEED_WAKEUP, Ordering::Release);
        q.push_bytes(&nop(2)).unwrap();
        assert_eq!(q.flush(), (1, true));
        let mut d = FakeRing::new(4, false);
        let mut q = d.queues();
        q.push_bytes(&nop(1)).unwrap();
        assert_eq!(q.flush(), (1, true), "doorbell rings always ring");
    }

    #[test]
    fn cq_eventfd_switch_flips_only_its_bit() {
        let mut f = FakeRing::new(4, false);
        f.sq_word(slot::CQ_FLAGS)
            .store(0x8000_0000, Ordering::Relaxed);
        let q = f.queues();
        assert!(q.cq_eventfd_enabled());
        q.set_cq_eventfd(false);
        assert_eq!(
            f.sq_word(slot::CQ_FLAGS).load(Ordering::Acquire),
            0x8000_0000 | PVU_CQ_EVENTFD_DISABLED
        );
        assert!(!q.cq_eventfd_enabled());
        q.set_cq_eventfd(true);
        assert_eq!(
            f.sq_word(slot::CQ_FLAGS).load(Ordering::Acquire),
            0x8000_0000
        );
    }

    #[test]
    fn a_cq_tail_far_ahead_reads_at_most_cq_entries() {
        let mut f = FakeRing::new(4, false);
        f.set_cq_tail(1000);
        let q = f.queues();
        assert_eq!(q.cq_ready(), 8);
    }
}
