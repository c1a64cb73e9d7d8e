//! The case harness (guest-common's, as clone-suite's) with this suite's
//! errno expectations. The case type, which needs the suite's context, is
//! `ctx::Case` (so that this module, which the context uses, does not use
//! the context).

use crate::fail;
use pv_uring::Errno;

pub use guest_common::harness::{selected, step, CaseError, CaseResult, Tally};

/// `-EBUSY(16) or -ENXIO(6)`.
fn names(want: &[i32]) -> String {
    want.iter()
        .map(|&w| Errno(w).to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Expects `r` to fail with one of the errnos `want`.
pub fn expect_errno<T>(what: &str, r: pv_uring::Result<T>, want: &[i32]) -> CaseResult {
    let names = names(want);
    match r {
        Err(e) => match e.errno() {
            Some(n) if want.contains(&n) => Ok(()),
            _ => fail!("{what}: expected {names}, got {e}"),
        },
        Ok(_) => fail!("{what}: expected {names}, got success"),
    }
}

/// Expects a CQE result to be one of `-want`.
pub fn expect_res(what: &str, res: i32, want: &[i32]) -> CaseResult {
    if want.iter().any(|&w| res == -w) {
        return Ok(());
    }
    fail!(
        "{what}: expected CQE res {}, got {}",
        names(want),
        Errno::res(res)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_expectations() {
        let e = |n| {
            Err::<(), _>(pv_uring::Error::Sys {
                op: "x",
                errno: Errno(n),
            })
        };
        assert!(expect_errno("x", e(libc::EBUSY), &[libc::EBUSY]).is_ok());
        assert!(expect_errno("x", e(libc::EINVAL), &[libc::EBUSY]).is_err());
        assert!(expect_errno("x", Ok(()), &[libc::EBUSY]).is_err());
        assert!(expect_res("x", -libc::EACCES, &[libc::EACCES]).is_ok());
        assert!(expect_res("x", 0, &[libc::EACCES]).is_err());
    }
}
