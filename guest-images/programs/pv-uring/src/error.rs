//! Typed errors of the library, carrying the errno where there is one.

/// A positive errno value, shared with the other guest programs.
pub use guest_common::Errno;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call (open, ioctl, mmap, poll) failed.
    #[error("{op}: {errno}")]
    Sys { op: &'static str, errno: Errno },
    /// The device's ring description does not fit its slots.
    #[error("bad ring layout: {0}")]
    Layout(String),
    /// The device speaks another ABI version than this library (2).
    #[error("device ABI version {0}, this library speaks 2")]
    AbiVersion(u32),
    /// A (pointer, length) range not inside one registered buffer.
    #[error("range {addr:#x}+{len:#x} is not inside one registered buffer of the ring")]
    NotRegistered { addr: u64, len: u64 },
    /// The submission queue has no free entry (reap completions: the
    /// device consumes SQEs only while the CQ has room for their CQEs).
    #[error("submission queue full")]
    SqFull,
    /// An SQE without IOSQE_FIXED_FILE (the host would refuse it).
    #[error("SQE without IOSQE_FIXED_FILE (use types::Fixed)")]
    NotFixedFile,
    /// `wait` gave up.
    #[error("timed out waiting for {want} completions ({have} ready)")]
    Timeout { want: usize, have: usize },
    /// An argument the library refuses before asking the driver.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn last(op: &'static str) -> Self {
        Error::Sys {
            op,
            errno: Errno::last(),
        }
    }

    /// The errno of a failed system call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Sys { errno, .. } => Some(errno.0),
            _ => None,
        }
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let e = Error::Sys {
            op: "VURING_IOC_CLONE",
            errno: Errno(libc::EOVERFLOW),
        };
        assert_eq!(e.errno(), Some(libc::EOVERFLOW));
        assert_eq!(e.to_string(), "VURING_IOC_CLONE: -EOVERFLOW(75)");
        assert_eq!(Error::SqFull.errno(), None);
    }
}
