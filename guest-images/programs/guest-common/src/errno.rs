//! A positive errno value, printed with its symbolic name.

use std::fmt;

/// A positive errno value returned by a failed system call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The errno of the last failed libc call on this thread.
    pub fn last() -> Self {
        Self::from_io(&std::io::Error::last_os_error())
    }

    /// `r` with its error as an errno (the io-uring crate's calls give
    /// `std::io::Error`s).
    pub fn of<T>(r: std::io::Result<T>) -> Result<T, Errno> {
        r.map_err(|e| Self::from_io(&e))
    }

    /// The errno of an I/O error (0 if it carries none).
    pub fn from_io(e: &std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(0))
    }

    /// The symbolic name, for the errors the guest programs and the
    /// pv-uring device use.
    pub fn name(self) -> &'static str {
        match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENFILE => "ENFILE",
            libc::EMFILE => "EMFILE",
            libc::ENOTTY => "ENOTTY",
            libc::ENOSPC => "ENOSPC",
            libc::ERANGE => "ERANGE",
            libc::ENOSYS => "ENOSYS",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECANCELED => "ECANCELED",
            _ => "E?",
        }
    }

    /// Formats a CQE result: `4096` or `-EFAULT(14)`.
    pub fn res(res: i32) -> String {
        if res < 0 {
            Errno(-res).to_string()
        } else {
            res.to_string()
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_format() {
        assert_eq!(format!("{}", Errno(libc::EBUSY)), "-EBUSY(16)");
        assert_eq!(Errno(libc::EOVERFLOW).name(), "EOVERFLOW");
        assert_eq!(Errno(4095).name(), "E?");
        let e = std::io::Error::from_raw_os_error(libc::ENXIO);
        assert_eq!(Errno::from_io(&e), Errno(libc::ENXIO));
        assert_eq!(Errno::of::<()>(Err(e)), Err(Errno(libc::ENXIO)));
        assert_eq!(Errno::res(-libc::EACCES), "-EACCES(13)");
        assert_eq!(Errno::res(4096), "4096");
        assert_eq!(Errno(libc::ECANCELED).name(), "ECANCELED");
    }
}
