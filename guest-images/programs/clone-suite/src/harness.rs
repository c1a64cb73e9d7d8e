//! Case registry, filtering, and the `PASS`/`FAIL`/`SKIP` report.

use crate::sys::Errno;
use std::io::Write;

/// Why a case did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{0}")]
    Fail(String),
    #[error("{0}")]
    Skip(String),
}

impl From<std::io::Error> for CaseError {
    fn from(e: std::io::Error) -> Self {
        CaseError::Fail(format!("I/O error: {e}"))
    }
}

impl From<Errno> for CaseError {
    fn from(e: Errno) -> Self {
        CaseError::Fail(format!("unexpected {e}"))
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

/// Fails the case unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail!($($arg)*);
        }
    };
}

/// Adds context to an error: `step("register src", r)?`.
pub fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, CaseError> {
    r.map_err(|e| CaseError::Fail(format!("{what}: {e}")))
}

/// Expects `r` to be exactly `Err(want)`.
pub fn expect_errno(what: &str, r: Result<(), Errno>, want: i32) -> CaseResult {
    match r {
        Err(e) if e.0 == want => Ok(()),
        Err(e) => fail!("{what}: expected {}, got {e}", Errno(want)),
        Ok(()) => fail!("{what}: expected {}, got success", Errno(want)),
    }
}

/// One named case.
pub struct Case {
    pub name: &'static str,
    pub run: fn() -> CaseResult,
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
}

/// Whether `name` is selected by `filters` (empty: all; else any filter is
/// a substring of the name).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// The line printed before any case runs: how many cases are selected and
/// their names, in run order.
pub fn plan_line(cases: &[Case], filters: &[String]) -> String {
    let names: Vec<&str> = cases
        .iter()
        .map(|c| c.name)
        .filter(|n| selected(n, filters))
        .collect();
    format!("clone-suite: {} cases: {}", names.len(), names.join(" "))
}

/// One report line for a finished case.
pub fn report_line(name: &str, r: &CaseResult) -> String {
    match r {
        Ok(()) => format!("PASS {name}"),
        Err(CaseError::Fail(m)) => format!("FAIL {name}: {}", one_line(m)),
        Err(CaseError::Skip(m)) => format!("SKIP {name}: {}", one_line(m)),
    }
}

fn one_line(m: &str) -> String {
    m.replace('\n', " | ")
}

/// Runs the selected cases in order, printing one line each.
pub fn run(cases: &[Case], filters: &[String], verbose: bool) -> Tally {
    let mut t = Tally::default();
    for c in cases.iter().filter(|c| selected(c.name, filters)) {
        let start = std::time::Instant::now();
        let r = match std::panic::catch_unwind(c.run) {
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
        match &r {
            Ok(()) => t.passed += 1,
            Err(CaseError::Fail(_)) => t.failed += 1,
            Err(CaseError::Skip(_)) => t.skipped += 1,
        }
        println!("{}", report_line(c.name, &r));
        if verbose {
            eprintln!(
                "clone-suite: {} took {:.1} ms",
                c.name,
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        let _ = std::io::stdout().flush();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_formats() {
        let t = Tally {
            passed: 3,
            failed: 0,
            skipped: 0,
        };
        assert_eq!(t.summary(), "3 passed, 0 failed");
        let t = Tally {
            passed: 3,
            failed: 1,
            skipped: 2,
        };
        assert_eq!(t.summary(), "3 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn filters() {
        assert!(selected("ebusy-dst", &[]));
        assert!(selected("ebusy-dst", &["ebusy".into()]));
        assert!(!selected("ebusy-dst", &["enxio".into()]));
    }

    #[test]
    fn plan_line_lists_the_selected_cases() {
        fn ok() -> CaseResult {
            Ok(())
        }
        let cases = [
            Case {
                name: "a-x",
                run: ok,
            },
            Case { name: "b", run: ok },
            Case {
                name: "c-x",
                run: ok,
            },
        ];
        assert_eq!(plan_line(&cases, &[]), "clone-suite: 3 cases: a-x b c-x");
        assert_eq!(
            plan_line(&cases, &["x".into()]),
            "clone-suite: 2 cases: a-x c-x"
        );
    }

    #[test]
    fn report_lines() {
        assert_eq!(report_line("a", &Ok(())), "PASS a");
        assert_eq!(
            report_line("a", &Err(CaseError::Fail("x\ny".into()))),
            "FAIL a: x | y"
        );
        assert_eq!(
            report_line("a", &Err(CaseError::Skip("no".into()))),
            "SKIP a: no"
        );
    }

    #[test]
    fn expect_errno_checks() {
        assert!(expect_errno("x", Err(Errno(libc::EBUSY)), libc::EBUSY).is_ok());
        assert!(expect_errno("x", Err(Errno(libc::EINVAL)), libc::EBUSY).is_err());
        assert!(expect_errno("x", Ok(()), libc::EBUSY).is_err());
    }
}
