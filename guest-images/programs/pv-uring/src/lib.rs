//! pv-uring: user-space access to the ringvisor paravirtual io_uring device
//! through the guest driver's `/dev/vuring` (docs/pv-uring.md).
//!
//! The shape follows the `io-uring` crate: [`Device::open`] (INFO, the
//! doorbell page), [`PvRing::new`] (CREATE on a fresh fd, the slot mapped,
//! SQ/CQ pointers from the host ring's `io_uring_params`), SQEs built with
//! the crate's opcode builders (`types::Fixed` backend indices, host
//! addresses from [`PvRing::translate`]) and pushed with [`PvRing::push`],
//! [`PvRing::submit`] (tail release-store + doorbell MMIO write),
//! [`PvRing::completion`] and [`PvRing::wait`] (busy-poll of the mapped CQ).
//! The hot path (push, submit, reap, wait's spin phase) makes no system
//! call: on nested PVM every guest kernel entry costs milliseconds.
//!
//! ```no_run
//! use pv_uring::{Device, PvRing};
//! use io_uring::{opcode, types};
//! let dev = Device::open()?;
//! let mut ring = PvRing::new(&dev, 32, 0)?;
//! let mut buf = vec![0u8; 4096];
//! let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
//! ring.register_buffers(&[iov])?;
//! let fb = ring.translate(buf.as_ptr(), 4096)?;
//! let sqe = opcode::ReadFixed::new(types::Fixed(0), fb.host_addr as *mut u8, 4096, fb.buf_index)
//!     .offset(0).build().user_data(1);
//! // SAFETY: `buf` stays alive and untouched until the completion.
//! unsafe { ring.push(&sqe)? };
//! ring.submit();
//! ring.wait(1)?;
//! let cqe = ring.completion().next().unwrap();
//! assert_eq!(cqe.result(), 4096);
//! # Ok::<(), pv_uring::Error>(())
//! ```

pub mod abi;
mod device;
mod error;
pub mod extent;
#[cfg(test)]
mod hostsim;
pub mod pattern;
mod queue;

pub use abi::{
    Extent, IoUringParams, VuringInfo, VURING_CLONE_DST_REPLACE, VURING_CLONE_SRC_TABLE,
    VURING_RING_SQPOLL,
};
pub use device::{sqe_bytes, CloneSrc, Completion, Device, PvRing, WaitOpts, DEFAULT_PATH};
pub use error::{Errno, Error, Result};
pub use extent::{FixedBuf, FixedPiece};
pub use queue::{validate as validate_params, Cqe};
