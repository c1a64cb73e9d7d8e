//! pv-uring: user-space access to the ringvisor paravirtual io_uring device
//! through the guest driver's `/dev/vuring` (docs/pv-uring.md, ABI v2).
//!
//! - [`Device::open`]: INFO and the doorbell page.
//! - [`PvRing::new`]: CREATE on a fresh fd; the ring's **submission slot**
//!   (read-write: the guest's SQ tail, CQ head, CQ flags and SQEs) and
//!   **completion slot** (read-only: the host kernel's CQ tail and CQEs)
//!   are mapped.
//! - SQEs are built with the `io-uring` crate's opcode builders: backends
//!   are `types::Fixed(i)`, and READ_FIXED/WRITE_FIXED name their data by
//!   (buffer index, byte offset in that buffer), never by address:
//!   [`PvRing::translate`] turns a pointer into a [`FixedBuf`], and
//!   [`read_fixed`]/[`write_fixed`] build the SQE from it.
//! - [`PvRing::push`], [`PvRing::submit`] (tail release-store, then the
//!   doorbell MMIO write, or for a polled ring only when its submitter
//!   sleeps), [`PvRing::completion`] and [`PvRing::wait`] (busy-poll of the
//!   mapped CQ). The hot path makes no system call: on nested PVM every
//!   guest kernel entry costs milliseconds.
//!
//! Flow control (docs/pv-uring.md, "Submitting"): the device consumes SQEs
//! only while fewer than `cq_entries` are consumed and not yet reaped. A
//! program that submits without reaping sees its SQ fill up
//! ([`Error::SqFull`]); reaping makes room, and the library rings the
//! doorbell again when SQEs are still waiting ([`Completion`]'s drop, and
//! [`PvRing::wait`] when the SQ head stops moving).
//!
//! - The buffer arena ([`arena`]): host memory the host registered once;
//!   [`PvRing::arena_alloc`], [`PvRing::arena_map`] and
//!   [`PvRing::register_arena`] give a ring a pool of any size with one
//!   command and no page pinned; [`PvRing::register_arena_rings`] gives
//!   many rings the same pool with one command.
//!
//! ```no_run
//! use pv_uring::{read_fixed, Device, PvRing};
//! let dev = Device::open()?;
//! let mut ring = PvRing::new(&dev, 32, 0)?;
//! let mut buf = vec![0u8; 4096];
//! let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
//! ring.register_buffers(&[iov])?;
//! let at = ring.translate(buf.as_ptr(), 4096)?;
//! let sqe = read_fixed(0, at, 4096, 0).user_data(1);
//! // SAFETY: `buf` stays alive and untouched until the completion.
//! unsafe { ring.push(&sqe)? };
//! ring.submit();
//! ring.wait(1)?;
//! let cqe = ring.completion().next().unwrap();
//! assert_eq!(cqe.result(), 4096);
//! # Ok::<(), pv_uring::Error>(())
//! ```

pub mod arena;
mod device;
mod error;
pub mod extent;
#[cfg(test)]
mod hostsim;
pub mod pattern;
mod queue;

/// The ABI crate itself (wire layout, SQE policy, `/dev/vuring` structs).
pub use uring_abi;
pub use uring_abi::uring::Sqe;
pub use uring_abi::vuring::{
    VuringClone, VuringCreate, VuringExtent as Extent, VuringInfo, VURING_CLONE_DST_REPLACE,
    VURING_CLONE_SRC_TABLE, VURING_RING_POLLED,
};

pub use device::{
    nop, read_fixed, sqe_bytes, sqe_from_bytes, write_fixed, CloneSrc, Completion, Device, PvRing,
    WaitOpts, DEFAULT_PATH,
};
pub use error::{Errno, Error, Result};
pub use extent::{FixedBuf, FixedPiece};
pub use queue::{validate as validate_layout, Cqe, Layout};

/// Device features of [`VuringInfo::features`] as this library reads them.
pub trait InfoExt {
    /// `PVU_F_POLLED`: rings may ask for a polled submitter.
    fn has_polled(&self) -> bool;
    /// `PVU_F_TABLE`: the host buffer table (PUBLISH, clone from a token).
    fn has_table(&self) -> bool;
    /// `PVU_F_ARENA`: the buffer arena.
    fn has_arena(&self) -> bool;
}

impl InfoExt for VuringInfo {
    fn has_polled(&self) -> bool {
        self.features & (1 << uring_abi::wire::PVU_F_POLLED) != 0
    }
    fn has_table(&self) -> bool {
        self.features & (1 << uring_abi::wire::PVU_F_TABLE) != 0
    }
    fn has_arena(&self) -> bool {
        self.features & (1 << uring_abi::wire::PVU_F_ARENA) != 0
    }
}
