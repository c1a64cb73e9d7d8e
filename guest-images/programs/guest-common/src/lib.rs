//! What the ringvisor guest programs share: the case harness of the test
//! suites ([`harness`]), the parameters-then-main sequence ([`cli`]),
//! buffer memory ([`mem`]), errno values ([`errno`]) and raw
//! `io_uring_register(2)` calls for what the io-uring crate cannot send
//! ([`uring`]).

#![deny(missing_docs)]

pub mod cli;
pub mod errno;
pub mod harness;
pub mod mem;
pub mod uring;

pub use errno::Errno;
