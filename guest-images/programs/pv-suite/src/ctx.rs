//! Shared fixtures: the device, two buffer pools, and the I/O helpers the
//! cases use (one request at a time unless stated, CQEs matched by
//! user_data).

use crate::harness::{step, CaseError, CaseResult};
use crate::params::Params;
use crate::{ensure, fail};
use io_uring::squeue;
use pv_uring::pattern::{self, BLOCK};
use pv_uring::{Device, Errno, Extent, FixedBuf, PvRing, WaitOpts};
use std::cell::Cell;
use std::time::Duration;

/// Buffers (iovecs) per pool.
pub const NBUF: usize = 4;
/// Bytes per pool iovec.
pub const BUF: usize = 64 << 10;
/// Bytes per pool.
pub const POOL: usize = NBUF * BUF;
/// SQ entries of the suite's rings.
pub const ENTRIES: u32 = 32;

/// Buffer memory (guest-common's): a populated mapping of 2 MiB hugetlb
/// pages when the guest has free hugepages, else 4 KiB pages, and volatile
/// fills and copies.
pub use guest_common::mem::{memset, snapshot, Mapping};

/// The suite's shared state.
pub struct Ctx {
    pub p: Params,
    pub dev: Device,
    pub pool_a: Mapping,
    pub pool_b: Mapping,
    ud: Cell<u64>,
}

impl Ctx {
    pub fn new(p: Params) -> Result<Self, String> {
        let dev = Device::open_path(&p.dev).map_err(|e| format!("{}: {e}", p.dev))?;
        let pool_a = Mapping::new(POOL).map_err(|e| format!("mmap pool A: {e}"))?;
        let pool_b = Mapping::new(POOL).map_err(|e| format!("mmap pool B: {e}"))?;
        if p.verbose {
            let i = dev.info();
            eprintln!(
                "pv-suite: abi {} max_rings {} max_entries {} max_buffers {} nr_backends {} slots {:#x}/{:#x} max_table {} max_polled {} max_registered {} features {:#x}; pools {}",
                i.abi_version,
                i.max_rings,
                i.max_entries,
                i.max_buffers,
                i.nr_backends,
                i.sq_slot_size,
                i.cq_slot_size,
                i.max_table,
                i.max_polled,
                i.max_registered,
                i.features,
                if pool_a.huge { "2M" } else { "4K" }
            );
        }
        Ok(Ctx {
            p,
            dev,
            pool_a,
            pool_b,
            ud: Cell::new(1),
        })
    }

    /// A fresh user_data value.
    pub fn next_ud(&self) -> u64 {
        let v = self.ud.get();
        self.ud.set(v + 1);
        v
    }

    /// A new ring of the suite's size.
    pub fn ring(&self) -> Result<PvRing, CaseError> {
        step("create ring", PvRing::new(&self.dev, ENTRIES, 0))
    }

    /// Registers pool A (4 iovecs) on `r`; returns its extents.
    pub fn reg_a(&self, r: &mut PvRing) -> Result<Vec<Extent>, CaseError> {
        self.reg(r, &self.pool_a)
    }

    /// Registers pool B on `r`.
    pub fn reg_b(&self, r: &mut PvRing) -> Result<Vec<Extent>, CaseError> {
        self.reg(r, &self.pool_b)
    }

    /// Registers single 4 KiB pages of pool B at the byte offsets `offs`
    /// (each exactly one extent, so the buffer count is known).
    pub fn reg_pages_b(&self, r: &mut PvRing, offs: &[usize]) -> Result<Vec<Extent>, CaseError> {
        let iovs: Vec<libc::iovec> = offs
            .iter()
            .map(|&o| libc::iovec {
                iov_base: self.pool_b.at(o).cast(),
                iov_len: BLOCK,
            })
            .collect();
        let t = step("register pages", r.register_buffers(&iovs))?;
        ensure!(
            t.len() == offs.len(),
            "register {} pages: {} extents",
            offs.len(),
            t.len()
        );
        for (i, (e, v)) in t.iter().zip(&iovs).enumerate() {
            ensure!(
                e.user_addr == v.iov_base as u64 && e.len == BLOCK as u64,
                "page {i}: extent {e:x?}"
            );
        }
        Ok(t)
    }

    fn reg(&self, r: &mut PvRing, m: &Mapping) -> Result<Vec<Extent>, CaseError> {
        let t = step("register", r.register_buffers(&m.iovecs(NBUF, BUF)))?;
        ensure!(
            t.len() >= NBUF,
            "register: {} extents for {NBUF} iovecs",
            t.len()
        );
        let total: u64 = t.iter().map(|e| e.len).sum();
        ensure!(
            total == POOL as u64,
            "register: extents cover {total} bytes, want {POOL}"
        );
        for (i, e) in t.iter().enumerate() {
            ensure!(
                m.contains(e.user_addr, e.len) && e.len >= BLOCK as u64,
                "register: extent {i} {e:x?} not a block-sized piece of the pool"
            );
        }
        Ok(t)
    }

    /// Pushes one SQE (checked), submits, waits for and returns its result.
    pub fn run1(&self, r: &mut PvRing, sqe: squeue::Entry) -> Result<i32, CaseError> {
        let ud = self.next_ud();
        // SAFETY: every buffer the suite's SQEs target is a suite Mapping
        // that outlives the request, and nothing reads it until the CQE.
        step("push", unsafe { r.push(&sqe.user_data(ud)) })?;
        self.finish1(r, ud)
    }

    /// As [`Ctx::run1`] for raw SQE bytes (hostile requests).
    pub fn run1_raw(&self, r: &mut PvRing, mut sqe: [u8; 64]) -> Result<i32, CaseError> {
        let ud = self.next_ud();
        sqe[32..40].copy_from_slice(&ud.to_le_bytes());
        // SAFETY: as in run1; hostile SQEs point at suite memory or at
        // addresses the host must refuse.
        step("push", unsafe { r.push_raw(&sqe) })?;
        self.finish1(r, ud)
    }

    fn finish1(&self, r: &mut PvRing, ud: u64) -> Result<i32, CaseError> {
        r.submit();
        step("wait", r.wait(1))?;
        let c = match r.completion().next() {
            Some(c) => c,
            None => fail!("no CQE after wait(1)"),
        };
        if c.user_data != ud {
            let state = r.debug_state();
            // Is it a CQE whose contents were not visible yet? Look again.
            let t0 = std::time::Instant::now();
            let mut later = r.peek_cqe(0);
            while later.user_data != ud && t0.elapsed() < std::time::Duration::from_millis(500) {
                later = r.peek_cqe(0);
            }
            let waited = t0.elapsed();
            fail!(
                "CQE {c:?}, want user_data {ud}; {state}; CQE slot 0 after {waited:?}: {later:?}; now {}",
                r.debug_state()
            );
        }
        Ok(c.res)
    }

    /// READ_FIXED of `len` bytes at file offset `off` of the backend into
    /// buffer `idx` at byte `offset` of it.
    pub fn read_fixed(&self, idx: u16, offset: u64, len: u32, off: u64) -> squeue::Entry {
        let at = FixedBuf {
            buf_index: idx,
            offset,
        };
        pv_uring::read_fixed(self.p.backend, at, len, off)
    }

    /// WRITE_FIXED, as [`Ctx::read_fixed`].
    pub fn write_fixed(&self, idx: u16, offset: u64, len: u32, off: u64) -> squeue::Entry {
        let at = FixedBuf {
            buf_index: idx,
            offset,
        };
        pv_uring::write_fixed(self.p.backend, at, len, off)
    }

    /// Block of the host pattern used for check number `salt`.
    pub fn block(&self, salt: u64) -> u64 {
        salt.wrapping_mul(7).wrapping_add(3) % self.p.read_blocks
    }

    /// Proves that byte `offset` of buffer `idx` of `r` is the guest
    /// memory at `user`: poisons `user`, READ_FIXED one host-pattern block
    /// into (idx, offset), and finds the pattern at `user`.
    pub fn check_maps(
        &self,
        r: &mut PvRing,
        idx: usize,
        offset: u64,
        user: *mut u8,
        salt: u64,
    ) -> CaseResult {
        let b = self.block(salt);
        // SAFETY: `user` is a block inside a suite pool; nothing is in flight.
        unsafe { memset(user, 0xa5, BLOCK) };
        let res = self.run1(
            r,
            self.read_fixed(idx as u16, offset, BLOCK as u32, b * BLOCK as u64),
        )?;
        ensure!(
            res == BLOCK as i32,
            "READ_FIXED buffer {idx} offset {offset:#x}: res {}, want {BLOCK}",
            Errno::res(res)
        );
        // SAFETY: the host's write completed before its CQE.
        let got = unsafe { snapshot(user, BLOCK) };
        let seed = self.p.seed;
        if let Some(at) = pattern::check(&got, b, |b, j| pattern::host_word(seed, b, j)) {
            fail!(
                "READ_FIXED buffer {idx} offset {offset:#x}: guest memory {user:p} differs from block {b} at byte {at}"
            );
        }
        Ok(())
    }

    /// [`Ctx::check_maps`] at the start of extent `src[src_idx]` through
    /// buffer `dst_idx` of `r`, whose table says `dst`.
    pub fn check_clone(
        &self,
        r: &mut PvRing,
        dst: &[Extent],
        dst_idx: usize,
        src: &Extent,
        salt: u64,
    ) -> CaseResult {
        let Some(d) = dst.get(dst_idx) else {
            fail!(
                "destination table has {} entries, want index {dst_idx}",
                dst.len()
            );
        };
        // The user address is what the driver or the library knows (0:
        // unknown); the data check below is the proof.
        ensure!(
            d.len == src.len && (d.user_addr == 0 || d.user_addr == src.user_addr),
            "destination buffer {dst_idx} is {d:x?}, want the source's {src:x?}"
        );
        self.check_maps(r, dst_idx, 0, src.user_addr as *mut u8, salt)
    }

    /// Expects READ_FIXED of a block at byte `offset` of buffer `idx` to
    /// fail with -EFAULT (an empty entry, or a range outside it).
    pub fn check_not_maps(&self, r: &mut PvRing, idx: usize, offset: u64) -> CaseResult {
        let res = self.run1(r, self.read_fixed(idx as u16, offset, BLOCK as u32, 0))?;
        crate::harness::expect_res(
            &format!("READ_FIXED buffer {idx} (empty)"),
            res,
            &[libc::EFAULT],
        )
    }

    /// A good request: READ_FIXED of a pattern block through buffer 0 of
    /// `r` (registering pool B if `r` has no buffers), checked.
    pub fn good_io(&self, r: &mut PvRing, salt: u64) -> CaseResult {
        if r.extents().is_empty() {
            self.reg_b(r)?;
        }
        let e = r.extents()[0];
        ensure!(e.user_addr != 0, "buffer 0 has no known user address");
        self.check_maps(r, 0, 0, e.user_addr as *mut u8, salt)
    }

    /// Waits briefly for a CQE that should not come; returns it if it does.
    pub fn no_cqe(&self, r: &mut PvRing, ms: u64) -> Option<pv_uring::Cqe> {
        let o = WaitOpts {
            spin: Duration::from_millis(ms),
            poll: false,
            timeout: Some(Duration::from_millis(ms)),
        };
        match r.wait_with(1, &o) {
            Ok(_) => r.completion().next(),
            Err(_) => None,
        }
    }
}

/// One named case.
pub type Case = guest_common::harness::Case<fn(&Ctx) -> CaseResult>;

/// Runs one case, turning a panic into a failure.
pub fn run_one(ctx: &Ctx, c: &Case) -> CaseResult {
    guest_common::harness::run_case("pv-suite", c.name, ctx.p.verbose, || (c.run)(ctx))
}
