//! The test suites' case harness: named cases, filters, the `PASS`/`FAIL`/
//! `SKIP` lines and the closing tally.
//!
//! A suite prints `PROG: N cases: name name ...` (see [`plan_line`]), one
//! line per case (see [`report_line`]), then `N passed, N failed[, N
//! skipped]` ([`Tally::summary`]); its exit status is 0 iff nothing failed.

use std::fmt;
use std::io::Write;

/// Why a case did not pass.
///
/// Any error converts into a failure (`?` in a case), so this type is not
/// itself a [`std::error::Error`].
#[derive(Debug)]
pub enum CaseError {
    /// The case failed: what was wrong.
    Fail(String),
    /// The case could not run here: why.
    Skip(String),
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Fail(m) | CaseError::Skip(m) => f.write_str(m),
        }
    }
}

impl<E: std::error::Error> From<E> for CaseError {
    fn from(e: E) -> Self {
        CaseError::Fail(format!("unexpected error: {e}"))
    }
}

/// What a case returns.
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

/// Adds context to an error: `step("register src", r)?`.
pub fn step<T, E: fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, CaseError> {
    r.map_err(|e| CaseError::Fail(format!("{what}: {e}")))
}

/// One named case; `F` is how the suite runs it (`fn() -> CaseResult`,
/// `fn(&Ctx) -> CaseResult`).
pub struct Case<F> {
    /// The name filters match and reports print.
    pub name: &'static str,
    /// The case.
    pub run: F,
}

/// Final tallies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases that could not run here.
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

    /// Counts a finished case and prints its report line.
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

/// Whether `name` is selected by `filters` (empty: all; else any filter is
/// a substring of the name).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// The line printed before any case runs: how many cases `prog` selected
/// and their names, in run order.
pub fn plan_line<F>(prog: &str, cases: &[Case<F>], filters: &[String]) -> String {
    let names: Vec<&str> = cases
        .iter()
        .map(|c| c.name)
        .filter(|n| selected(n, filters))
        .collect();
    format!("{prog}: {} cases: {}", names.len(), names.join(" "))
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

/// Runs one case, turning a panic into a failure; with `verbose`, says on
/// stderr how long it took (`PROG: NAME took N ms`).
pub fn run_case(
    prog: &str,
    name: &str,
    verbose: bool,
    case: impl FnOnce() -> CaseResult,
) -> CaseResult {
    let start = std::time::Instant::now();
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
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
    if verbose {
        eprintln!(
            "{prog}: {name} took {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    r
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
        let cases = [
            Case {
                name: "a-x",
                run: (),
            },
            Case { name: "b", run: () },
            Case {
                name: "c-x",
                run: (),
            },
        ];
        assert_eq!(plan_line("s", &cases, &[]), "s: 3 cases: a-x b c-x");
        assert_eq!(plan_line("s", &cases, &["x".into()]), "s: 2 cases: a-x c-x");
    }

    #[test]
    fn report_lines_and_tally() {
        assert_eq!(report_line("a", &Ok(())), "PASS a");
        assert_eq!(
            report_line("a", &Err(CaseError::Fail("x\ny".into()))),
            "FAIL a: x | y"
        );
        assert_eq!(
            report_line("a", &Err(CaseError::Skip("no".into()))),
            "SKIP a: no"
        );
        let mut t = Tally::default();
        t.add("a", &Ok(()));
        t.add("b", &Err(CaseError::Fail("x".into())));
        t.add("c", &Err(CaseError::Skip("y".into())));
        assert_eq!(
            t,
            Tally {
                passed: 1,
                failed: 1,
                skipped: 1
            }
        );
    }

    fn failing() -> CaseResult {
        let r: Result<(), crate::Errno> = Err(crate::Errno(libc::EBUSY));
        r?;
        Ok(())
    }

    fn ensuring(x: u32) -> CaseResult {
        crate::ensure!(x < 2, "x is {x}");
        if x == 1 {
            crate::skip!("one");
        }
        Ok(())
    }

    #[test]
    fn errors_macros_and_panics_become_results() {
        assert_eq!(
            failing().unwrap_err().to_string(),
            "unexpected error: -EBUSY(16)"
        );
        assert!(ensuring(0).is_ok());
        assert!(matches!(ensuring(1), Err(CaseError::Skip(m)) if m == "one"));
        assert!(matches!(ensuring(2), Err(CaseError::Fail(m)) if m == "x is 2"));
        let r = run_case("s", "p", false, || panic!("boom"));
        assert!(matches!(r, Err(CaseError::Fail(m)) if m == "panicked: boom"));
    }
}
