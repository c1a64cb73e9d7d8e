//! The submission path: the VMM is the only writer of host SQEs
//! (docs/pv-uring.md, "Submitting").
//!
//! A [`Submitter`] serves one ring. Each pass reads the guest's words of
//! its submission slot once, carries a valid `cq_head` and the
//! interrupt-off bit to the host ring, then copies each pending guest SQE
//! out of shared memory, checks the copy with [`uring_abi::policy::check`]
//! and writes the host SQE it returns (or an error NOP in its place) into
//! the host ring's private SQE array, never more than the CQ has room for.
//! The host kernel reads only what this module wrote: the host SQEs are in
//! the private slot, the host SQ tail, SQ array and CQ head in the
//! completion slot, which the guest sees read-only.

use std::sync::atomic::{AtomicU32, Ordering};

use uring_abi::policy::{self, Buffer, Refused, Resources};
use uring_abi::uring::{IORING_CQ_EVENTFD_DISABLED, SQE_LEN};
use uring_abi::wire::{
    slot, CQ_SLOT_SIZE, PVU_CQ_EVENTFD_DISABLED, PVU_SQ_NEED_WAKEUP, SQ_SLOT_SIZE,
};

use super::ring::sys::IoUringParams;
use std::sync::Arc;

use super::ring::{Buf, RingArea, SlotPtrs, PRIVATE_SLOT_SIZE};

/// Why a host ring's layout cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Entries that are zero, not a power of two, or above what a slot holds.
    #[error("ring of {sq} SQ / {cq} CQ entries does not fit its slots")]
    Entries {
        /// SQ entries.
        sq: u32,
        /// CQ entries.
        cq: u32,
    },
    /// A kernel offset outside the completion slot or misaligned.
    #[error("host ring offset {what} = {off:#x} is outside the completion slot")]
    Offset {
        /// The field.
        what: &'static str,
        /// Its value.
        off: u32,
    },
}

/// Offsets of the host ring's words in the completion slot.
#[derive(Debug, Clone, Copy)]
struct HostWords {
    sq_head: usize,
    sq_tail: usize,
    sq_array: usize,
    cq_head: usize,
    cq_tail: usize,
    cq_flags: usize,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Guest SQEs consumed (each became a host SQE).
    pub consumed: u32,
    /// Of those, refused ones (answered with an error CQE).
    pub refused: u32,
    /// Host SQEs written and not yet taken by the kernel: what
    /// `io_uring_enter` should submit.
    pub to_submit: u32,
    /// Guest SQEs left because the CQ had no room for them.
    pub held_back: u32,
    /// Of `to_submit`, how many the kernel took (set by the caller that
    /// ran `io_uring_enter`).
    pub entered: u32,
}

/// The guest's `sq_tail` and `cq_head` of one ring, read without the
/// ring's lock: what a polled submitter watches between passes. It holds
/// the ring area, so the words stay mapped while a poller that outlives
/// its ring still looks.
pub struct SlotWatch {
    /// Keeps the mapping `sq` and `cq_tail` point into alive.
    _area: Arc<RingArea>,
    sq: *mut u8,
    cq_tail: *mut u8,
    submitted: Arc<AtomicU32>,
}

// SAFETY: `sq` points into `area`'s mapping, which the Arc keeps alive;
// only atomic loads read it.
unsafe impl Send for SlotWatch {}

impl SlotWatch {
    /// Watches ring `id` in `area`, served by `sub`.
    pub fn new(area: Arc<RingArea>, id: u32, sub: &Submitter) -> Option<Self> {
        let slots = area.slots(id)?;
        // SAFETY: `new` checked the CQ tail's offset against the slot.
        let cq_tail = unsafe { slots.cq.add(sub.words.cq_tail) };
        Some(Self {
            _area: area,
            sq: slots.sq,
            cq_tail,
            submitted: sub.published.clone(),
        })
    }

    /// Requests submitted whose CQE the kernel has not posted yet.
    pub fn in_flight(&self) -> u32 {
        // SAFETY: the host CQ tail word, 4-aligned inside the completion
        // slot, mapped while self._area lives; atomics only.
        let tail = unsafe { &*self.cq_tail.cast::<AtomicU32>() }.load(Ordering::Acquire);
        self.submitted.load(Ordering::Acquire).wrapping_sub(tail)
    }

    /// The guest's (`sq_tail`, `cq_head`).
    pub fn words(&self) -> (u32, u32) {
        let word = |off: usize| {
            // SAFETY: a word of the submission slot (4-aligned, inside the
            // slot), mapped while self._area lives; atomics only.
            unsafe { &*self.sq.add(off).cast::<AtomicU32>() }.load(Ordering::Acquire)
        };
        (word(slot::SQ_TAIL), word(slot::CQ_HEAD))
    }
}

/// The submission state of one ring.
pub struct Submitter {
    slots: SlotPtrs,
    words: HostWords,
    sq_entries: u32,
    cq_entries: u32,
    nr_backends: u32,
    /// Next guest SQ position to consume (published as `sq_head`).
    guest_head: u32,
    /// The host SQ tail we last stored.
    host_tail: u32,
    /// Host SQEs written, ever (wrapping): each gets exactly one CQE.
    submitted: u32,
    /// The host CQ head we last stored (the guest's, once checked).
    cq_head: u32,
    /// The host CQ flags we last stored.
    cq_flags: u32,
    /// `submitted`, for a poller that watches without the lock.
    published: Arc<AtomicU32>,
}

// SAFETY: the slot pointers point into the ring area, which outlives every
// submitter (the executor holds it); the memory is accessed only through
// atomics and byte copies, so moving the submitter between threads is fine.
unsafe impl Send for Submitter {}

/// The ring's resources as the SQE policy sees them.
struct Table<'a> {
    nr_backends: u32,
    bufs: &'a [Option<Buf>],
}

impl Resources for Table<'_> {
    fn nr_backends(&self) -> u32 {
        self.nr_backends
    }
    fn buffer(&self, index: u16) -> Option<Buffer> {
        self.bufs.get(usize::from(index))?.as_ref().map(Buf::policy)
    }
}

impl Submitter {
    /// A submitter for a host ring created with params `p` in `slots`.
    /// Checks the kernel's layout against the slots first.
    pub fn new(p: &IoUringParams, slots: SlotPtrs, nr_backends: u32) -> Result<Self, LayoutError> {
        let (sq, cq) = (p.sq_entries, p.cq_entries);
        let sqes_fit = SQE_LEN
            .checked_mul(sq as usize)
            .is_some_and(|n| n <= PRIVATE_SLOT_SIZE);
        let guest_fit = slot::SQES + SQE_LEN * sq as usize <= SQ_SLOT_SIZE as usize;
        if !sq.is_power_of_two() || !cq.is_power_of_two() || cq < sq || !sqes_fit || !guest_fit {
            return Err(LayoutError::Entries { sq, cq });
        }
        let word = |what: &'static str, off: u32| -> Result<usize, LayoutError> {
            if !off.is_multiple_of(4) || off as usize + 4 > CQ_SLOT_SIZE as usize {
                return Err(LayoutError::Offset { what, off });
            }
            Ok(off as usize)
        };
        let array_end = u64::from(p.sq_off.array) + 4 * u64::from(sq);
        if array_end > u64::from(CQ_SLOT_SIZE) {
            return Err(LayoutError::Offset {
                what: "sq array",
                off: p.sq_off.array,
            });
        }
        let words = HostWords {
            sq_head: word("sq head", p.sq_off.head)?,
            sq_tail: word("sq tail", p.sq_off.tail)?,
            sq_array: word("sq array", p.sq_off.array)?,
            cq_head: word("cq head", p.cq_off.head)?,
            cq_tail: word("cq tail", p.cq_off.tail)?,
            cq_flags: word("cq flags", p.cq_off.flags)?,
        };
        let mut s = Self {
            slots,
            words,
            sq_entries: sq,
            cq_entries: cq,
            nr_backends,
            guest_head: 0,
            host_tail: 0,
            submitted: 0,
            cq_head: 0,
            cq_flags: 0,
            published: Arc::new(AtomicU32::new(0)),
        };
        // A fresh ring: the kernel starts at 0 everywhere; read them anyway.
        s.host_tail = s.host(s.words.sq_tail).load(Ordering::Acquire);
        s.cq_head = s.host(s.words.cq_head).load(Ordering::Acquire);
        s.submitted = s.host(s.words.cq_tail).load(Ordering::Acquire);
        s.cq_flags = s.host(s.words.cq_flags).load(Ordering::Acquire);
        s.published.store(s.submitted, Ordering::Release);
        Ok(s)
    }

    /// A le32 word of the guest's submission slot.
    fn guest(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= slot::SQES);
        // SAFETY: `off` is one of the slot's word offsets (module
        // constants), inside the submission slot and 4-aligned; the slot
        // stays mapped while the area lives. Only atomics touch it.
        unsafe { &*self.slots.sq.add(off).cast::<AtomicU32>() }
    }

    /// A le32 word of the host ring's rings region.
    fn host(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `new` checked every offset used here against the
        // completion slot and its alignment (the SQ array entries too).
        unsafe { &*self.slots.cq.add(off).cast::<AtomicU32>() }
    }

    /// Copies guest SQE entry `idx` out of shared memory: everything after
    /// looks only at this copy, so the guest cannot change it between the
    /// check and the host kernel's read.
    fn read_guest_sqe(&self, idx: u32) -> [u8; SQE_LEN] {
        debug_assert!(idx < self.sq_entries);
        // SAFETY: idx < sq_entries, and `new` checked that sq_entries SQEs
        // fit the submission slot after `slot::SQES`. A volatile read: the
        // guest may write it concurrently, and we take whatever bytes we
        // get exactly once.
        unsafe {
            std::ptr::read_volatile(
                self.slots
                    .sq
                    .add(slot::SQES + idx as usize * SQE_LEN)
                    .cast::<[u8; SQE_LEN]>(),
            )
        }
    }

    /// Writes host SQE entry `idx` in the private slot.
    fn write_host_sqe(&self, idx: u32, bytes: &[u8; SQE_LEN]) {
        debug_assert!(idx < self.sq_entries);
        // SAFETY: idx < sq_entries and `new` checked that sq_entries SQEs
        // fit the private slot, which nothing but this submitter writes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.slots.private.add(idx as usize * SQE_LEN),
                SQE_LEN,
            );
        }
        self.host(self.words.sq_array + 4 * idx as usize)
            .store(idx, Ordering::Relaxed);
    }

    /// Takes the guest's `cq_head` if it lies between the host's head and
    /// the CQ tail, and its interrupt-off bit.
    fn carry_completion_words(&mut self) {
        let wanted = self.guest(slot::CQ_HEAD).load(Ordering::Acquire);
        let tail = self.host(self.words.cq_tail).load(Ordering::Acquire);
        // Stores only on change: a polled submitter passes millions of
        // times a second, and the guest polls the CQ tail nearby.
        if wanted != self.cq_head
            && wanted.wrapping_sub(self.cq_head) <= tail.wrapping_sub(self.cq_head)
        {
            self.cq_head = wanted;
            self.host(self.words.cq_head)
                .store(wanted, Ordering::Release);
        }
        let off = self.guest(slot::CQ_FLAGS).load(Ordering::Relaxed) & PVU_CQ_EVENTFD_DISABLED != 0;
        let flags = if off { IORING_CQ_EVENTFD_DISABLED } else { 0 };
        if flags != self.cq_flags {
            self.cq_flags = flags;
            self.host(self.words.cq_flags)
                .store(flags, Ordering::Relaxed);
        }
    }

    /// One pass over the guest's submission slot against the ring's
    /// buffer table `bufs`. Writes host SQEs; the caller submits
    /// [`Pass::to_submit`] of them with `io_uring_enter`.
    pub fn fill(&mut self, bufs: &[Option<Buf>]) -> Pass {
        self.carry_completion_words();
        let tail = self.guest(slot::SQ_TAIL).load(Ordering::Acquire);
        let pending = tail.wrapping_sub(self.guest_head);
        let host_head = self.host(self.words.sq_head).load(Ordering::Acquire);
        let unsubmitted = self.host_tail.wrapping_sub(host_head);
        let mut pass = Pass {
            to_submit: unsubmitted,
            ..Pass::default()
        };
        if pending > self.sq_entries {
            // A tail the guest cannot mean; wait for a sane one.
            log::debug!("pv-uring: sq_tail {tail} is {pending} ahead of sq_head; ignored");
            return pass;
        }
        // Flow control: every host SQE gets one CQE, and the CQ holds
        // cq_entries of them until the guest consumes them.
        let in_flight = self.submitted.wrapping_sub(self.cq_head);
        let room = self.cq_entries.saturating_sub(in_flight);
        let host_free = self.sq_entries.saturating_sub(unsubmitted);
        let n = pending.min(room).min(host_free);
        pass.held_back = pending - n;
        let mask = self.sq_entries - 1;
        let table = Table {
            nr_backends: self.nr_backends,
            bufs,
        };
        for _ in 0..n {
            let raw = self.read_guest_sqe(self.guest_head & mask);
            let host = policy::check(&raw, &table).unwrap_or_else(|Refused(errno)| {
                pass.refused += 1;
                policy::refusal(&raw, errno)
            });
            self.write_host_sqe(self.host_tail & mask, &host.to_bytes());
            self.host_tail = self.host_tail.wrapping_add(1);
            self.guest_head = self.guest_head.wrapping_add(1);
            self.submitted = self.submitted.wrapping_add(1);
        }
        if n > 0 {
            self.host(self.words.sq_tail)
                .store(self.host_tail, Ordering::Release);
            self.guest(slot::SQ_HEAD)
                .store(self.guest_head, Ordering::Release);
        }
        pass.consumed = n;
        pass.to_submit = unsubmitted + n;
        self.published.store(self.submitted, Ordering::Release);
        pass
    }

    /// Whether every SQE the host submitted for the ring has its CQE: no
    /// request of the ring is in flight, so none can touch a buffer the
    /// ring's table drops now (SQEs written later see the new table).
    pub fn is_idle(&self) -> bool {
        self.host(self.words.cq_tail).load(Ordering::Acquire) == self.submitted
    }

    /// Whether the guest has SQEs the CQ has room for (a polled submitter
    /// must not sleep then).
    pub fn has_work(&self) -> bool {
        let pending = self
            .guest(slot::SQ_TAIL)
            .load(Ordering::Acquire)
            .wrapping_sub(self.guest_head);
        let wanted = self.guest(slot::CQ_HEAD).load(Ordering::Acquire);
        let in_flight = self.submitted.wrapping_sub(wanted);
        pending != 0 && pending <= self.sq_entries && in_flight < self.cq_entries
    }

    /// Sets or clears `PVU_SQ_NEED_WAKEUP` in the guest's `sq_flags`.
    pub fn set_need_wakeup(&self, on: bool) {
        let flags = self.guest(slot::SQ_FLAGS);
        if on {
            flags.fetch_or(PVU_SQ_NEED_WAKEUP, Ordering::SeqCst);
        } else {
            flags.fetch_and(!PVU_SQ_NEED_WAKEUP, Ordering::SeqCst);
        }
    }

    /// SQ and CQ sizes.
    pub fn entries(&self) -> (u32, u32) {
        (self.sq_entries, self.cq_entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uring_abi::uring::{
        Sqe, IORING_NOP_INJECT_RESULT, IORING_OP_NOP, IORING_OP_READ_FIXED, IOSQE_FIXED_FILE,
        IOSQE_IO_LINK,
    };

    /// Three slots in ordinary memory, and a kernel layout like Linux's.
    struct Fake {
        sq: Vec<u64>,
        cq: Vec<u64>,
        private: Vec<u64>,
        p: IoUringParams,
    }

    const SQ_HEAD: u32 = 0;
    const SQ_TAIL: u32 = 4;
    const CQ_HEAD: u32 = 64;
    const CQ_TAIL: u32 = 68;
    const CQ_FLAGS: u32 = 72;
    const ARRAY: u32 = 0x2000;

    impl Fake {
        fn new(sq: u32, cq: u32) -> Self {
            let mut p = IoUringParams {
                sq_entries: sq,
                cq_entries: cq,
                ..IoUringParams::default()
            };
            p.sq_off.head = SQ_HEAD;
            p.sq_off.tail = SQ_TAIL;
            p.sq_off.array = ARRAY;
            p.cq_off.head = CQ_HEAD;
            p.cq_off.tail = CQ_TAIL;
            p.cq_off.flags = CQ_FLAGS;
            p.cq_off.cqes = 128;
            Self {
                sq: vec![0; SQ_SLOT_SIZE as usize / 8],
                cq: vec![0; CQ_SLOT_SIZE as usize / 8],
                private: vec![0; PRIVATE_SLOT_SIZE / 8],
                p,
            }
        }

        fn submitter(&mut self, nr_backends: u32) -> Submitter {
            let slots = SlotPtrs {
                sq: self.sq.as_mut_ptr().cast(),
                cq: self.cq.as_mut_ptr().cast(),
                private: self.private.as_mut_ptr().cast(),
            };
            Submitter::new(&self.p, slots, nr_backends).unwrap()
        }

        fn w(v: &mut [u64], off: u32) -> &AtomicU32 {
            // SAFETY: test memory, 4-aligned offsets inside it.
            unsafe {
                &*v.as_mut_ptr()
                    .cast::<u8>()
                    .add(off as usize)
                    .cast::<AtomicU32>()
            }
        }

        fn guest_push(&mut self, s: &Sqe) {
            let tail = Self::w(&mut self.sq, slot::SQ_TAIL as u32).load(Ordering::Relaxed);
            let idx = (tail & (self.p.sq_entries - 1)) as usize;
            let bytes: &mut [u8] = bytemuck(&mut self.sq);
            bytes[slot::SQES + idx * 64..][..64].copy_from_slice(&s.to_bytes());
            Self::w(&mut self.sq, slot::SQ_TAIL as u32).store(tail + 1, Ordering::Release);
        }

        fn host_sqe(&mut self, idx: u32) -> Sqe {
            let bytes: &mut [u8] = bytemuck(&mut self.private);
            Sqe::from_bytes(bytes[idx as usize * 64..][..64].try_into().unwrap())
        }

        /// The kernel took `n` SQEs and posted their CQEs.
        fn kernel_complete(&mut self, n: u32) {
            let h = Self::w(&mut self.cq, SQ_HEAD);
            h.fetch_add(n, Ordering::Release);
            Self::w(&mut self.cq, CQ_TAIL).fetch_add(n, Ordering::Release);
        }

        fn guest_reap_to(&mut self, head: u32) {
            Self::w(&mut self.sq, slot::CQ_HEAD as u32).store(head, Ordering::Release);
        }
    }

    fn bytemuck(v: &mut [u64]) -> &mut [u8] {
        // SAFETY: u64 memory viewed as bytes, same length in bytes.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
    }

    fn nop(user_data: u64) -> Sqe {
        Sqe {
            opcode: IORING_OP_NOP,
            flags: IOSQE_FIXED_FILE,
            user_data,
            ..Sqe::default()
        }
    }

    fn buf() -> Vec<Option<Buf>> {
        vec![Some(Buf {
            addr: 0x7000_0000,
            len: 4096,
            charge: None,
        })]
    }

    #[test]
    fn guest_sqes_become_checked_host_sqes() {
        let mut f = Fake::new(8, 16);
        let mut s = f.submitter(1);
        let mut read = Sqe {
            opcode: IORING_OP_READ_FIXED,
            flags: IOSQE_FIXED_FILE,
            addr: 512,
            len: 512,
            user_data: 9,
            ..Sqe::default()
        };
        read.attr_ptr = 0; // allowed as written
        f.guest_push(&read);
        // The PI attribute pointer a 6.14+ host kernel would follow.
        f.guest_push(&Sqe {
            attr_ptr: 0x5555_0000,
            ..read
        });
        let pass = s.fill(&buf());
        assert_eq!((pass.consumed, pass.refused, pass.to_submit), (2, 1, 2));
        let h = f.host_sqe(0);
        assert_eq!(h.addr, 0x7000_0000 + 512);
        assert_eq!(h.user_data, 9);
        let e = f.host_sqe(1);
        assert_eq!(e.opcode, IORING_OP_NOP);
        assert_eq!(e.op_flags, IORING_NOP_INJECT_RESULT);
        assert_eq!(e.len as i32, -libc::EINVAL);
        assert_eq!(e.attr_ptr, 0);
        // Published: the host SQ tail, the array, the guest's sq_head.
        assert_eq!(Fake::w(&mut f.cq, SQ_TAIL).load(Ordering::Relaxed), 2);
        assert_eq!(Fake::w(&mut f.cq, ARRAY + 4).load(Ordering::Relaxed), 1);
        assert_eq!(
            Fake::w(&mut f.sq, slot::SQ_HEAD as u32).load(Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn never_more_in_flight_than_the_cq_holds() {
        let mut f = Fake::new(4, 8);
        let mut s = f.submitter(0);
        let mut pushed = 0;
        let mut consumed = 0;
        // A guest that never reaps: the host stops at 8 in flight.
        for round in 0..10 {
            while pushed - consumed < 4 {
                f.guest_push(&nop(pushed));
                pushed += 1;
            }
            let pass = s.fill(&[]);
            consumed += u64::from(pass.consumed);
            f.kernel_complete(pass.consumed);
            assert!(consumed <= 8, "round {round}: {consumed} in flight");
        }
        assert_eq!(consumed, 8);
        assert_eq!(s.fill(&[]).held_back, 4);
        assert!(!s.has_work());
        // A cq_head past the tail is ignored; a sane one opens room.
        f.guest_reap_to(9);
        assert_eq!(s.fill(&[]).consumed, 0);
        f.guest_reap_to(3);
        assert!(s.has_work());
        assert_eq!(s.fill(&[]).consumed, 3);
        assert_eq!(Fake::w(&mut f.cq, CQ_HEAD).load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_tail_too_far_ahead_is_ignored() {
        let mut f = Fake::new(4, 8);
        let mut s = f.submitter(0);
        Fake::w(&mut f.sq, slot::SQ_TAIL as u32).store(5, Ordering::Release);
        assert_eq!(s.fill(&[]).consumed, 0);
        assert!(!s.has_work());
        Fake::w(&mut f.sq, slot::SQ_TAIL as u32).store(4, Ordering::Release);
        assert_eq!(s.fill(&[]).consumed, 4);
    }

    #[test]
    fn idle_means_every_submitted_sqe_completed() {
        let mut f = Fake::new(4, 8);
        let mut s = f.submitter(0);
        assert!(s.is_idle());
        f.guest_push(&nop(1));
        f.guest_push(&Sqe {
            flags: IOSQE_FIXED_FILE | IOSQE_IO_LINK,
            ..nop(2)
        });
        s.fill(&[]);
        assert!(!s.is_idle());
        f.kernel_complete(1);
        assert!(!s.is_idle());
        f.kernel_complete(1);
        assert!(s.is_idle());
    }

    #[test]
    fn the_interrupt_off_bit_is_carried_alone() {
        let mut f = Fake::new(4, 8);
        let mut s = f.submitter(0);
        Fake::w(&mut f.sq, slot::CQ_FLAGS as u32).store(u32::MAX, Ordering::Relaxed);
        s.fill(&[]);
        assert_eq!(
            Fake::w(&mut f.cq, CQ_FLAGS).load(Ordering::Relaxed),
            IORING_CQ_EVENTFD_DISABLED
        );
        Fake::w(&mut f.sq, slot::CQ_FLAGS as u32).store(0, Ordering::Relaxed);
        s.fill(&[]);
        assert_eq!(Fake::w(&mut f.cq, CQ_FLAGS).load(Ordering::Relaxed), 0);
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let mut f = Fake::new(8192, 16384);
        let slots = SlotPtrs {
            sq: f.sq.as_mut_ptr().cast(),
            cq: f.cq.as_mut_ptr().cast(),
            private: f.private.as_mut_ptr().cast(),
        };
        assert!(Submitter::new(&f.p, slots, 0).is_err());
        let mut p = Fake::new(8, 16).p;
        p.cq_off.tail = CQ_SLOT_SIZE;
        assert!(matches!(
            Submitter::new(&p, slots, 0),
            Err(LayoutError::Offset { .. })
        ));
        p.cq_off.tail = 6;
        assert!(Submitter::new(&p, slots, 0).is_err());
    }
}
