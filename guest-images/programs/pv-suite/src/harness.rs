//! Case registry, filtering, and the `PASS`/`FAIL`/`SKIP` report (the
//! format of clone-suite).

use crate::ctx::Ctx;
use pv_uring::Errno;
use std::io::Write;

/// Why a case did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{0}")]
    Fail(String),
    #[error("{0}")]
    Skip(String),
}

impl From<pv_uring::Error> for CaseError {
    fn from(e: pv_uring::Error) -> Self {
        CaseError::Fail(format!("unexpected error: {e}"))
    }
}

pub type CaseResult = Result<(), CaseError>;

/// Fails the case with a formatted message.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::harness::CaseError::Fail(format!($($arg)*)))
    };
}

/// Skips the case with a formatted reason.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        return Err($crate::harness::CaseError::Skip(format!($($arg)*)))
    };
}

/// Fails the case unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail!($($arg)*);
        }
    };
}

/// Adds context to an error: `step("register", r)?`.
pub fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, CaseError> {
    r.map_err(|e| CaseError::Fail(format!("{what}: {e}")))
}

/// Expects `r` to fail with one of the errnos `want`.
pub fn expect_errno<T>(what: &str, r: pv_uring::Result<T>, want: &[i32]) -> CaseResult {
    let names = want
        .iter()
        .map(|&w| Errno(w).to_string())
        .collect::<Vec<_>>()
        .join(" or ");
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
    let names = want
        .iter()
        .map(|&w| Errno(w).to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    fail!("{what}: expected CQE res {names}, got {}", Errno::res(res))
}

/// One named case.
pub struct Case {
    pub name: &'static str,
    pub run: fn(&Ctx) -> CaseResult,
}

/// Final tallies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    /// The closing line: `N passed, N failed[, N skipped]`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        s
    }

    pub fn add(&mut self, name: &str, r: &CaseResult) {
        match r {
            Ok(()) => self.passed += 1,
            Err(CaseError::Fail(_)) => self.failed += 1,
            Err(CaseError::Skip(_)) => self.skipped += 1,
        }
        println!("{}", report_line(name, r));
        let _ = std::io::stdout().flush();
    }
}

/// Whether `name` is selected by `filters` (empty: all).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// One report line for a finished case.
pub fn report_line(name: &str, r: &CaseResult) -> String {
    let one = |m: &str| m.replace('\n', " | ");
    match r {
        Ok(()) => format!("PASS {name}"),
        Err(CaseError::Fail(m)) => format!("FAIL {name}: {}", one(m)),
        Err(CaseError::Skip(m)) => format!("SKIP {name}: {}", one(m)),
    }
}

/// Runs one case, turning a panic into a failure.
pub fn run_one(ctx: &Ctx, c: &Case) -> CaseResult {
    let start = std::time::Instant::now();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (c.run)(ctx)));
    let r = match r {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(CaseError::Fail(format!("panicked: {msg}")))
        }
    };
    if ctx.p.verbose {
        eprintln!(
            "pv-suite: {} took {:.1} ms",
            c.name,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let t = Tally {
            passed: 3,
            failed: 1,
            skipped: 0,
        };
        assert_eq!(t.summary(), "3 passed, 1 failed");
        assert_eq!(report_line("a", &Ok(())), "PASS a");
        assert_eq!(
            report_line("a", &Err(CaseError::Fail("x\ny".into()))),
            "FAIL a: x | y"
        );
        assert!(selected("clone-into-self", &["self".into()]));
        assert!(!selected("clone-into-self", &["table".into()]));
    }

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
