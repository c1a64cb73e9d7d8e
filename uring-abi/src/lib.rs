//! One definition of the pv-uring ABI (docs/pv-uring.md, version 2).
//!
//! - [`uring`]: the parts of Linux's io_uring uAPI that ringvisor uses
//!   (opcodes, flags, the 64-byte SQE and 16-byte CQE layouts), defined
//!   here because hosts and guests ship different headers.
//! - [`wire`]: the device: configuration space, ring-area layout, the
//!   submission slot the guest writes, control requests and responses.
//! - [`policy`]: the allow-list every guest SQE passes before the VMM
//!   writes a host SQE from it. Pure: a function of one copied SQE.
//! - [`vuring`]: the guest driver's user ABI (`/dev/vuring`, uAPI header
//!   `linux/vuring.h` of guest kernel patch 0004).
//!
//! The host device (`devices`) and the guest library (`pv-uring`) both
//! use this crate, and `guest-kernel-patches/check.sh` compares it with
//! the C header, so the four copies the project once had cannot drift.

#![no_std]

pub mod policy;
pub mod uring;
pub mod vuring;
pub mod wire;
