//! The case harness (guest-common's) with this suite's case type, its
//! errno expectation and its run loop.

pub use guest_common::harness::{selected, step, CaseError, CaseResult, Tally};
use guest_common::Errno;

/// One named case.
pub type Case = guest_common::harness::Case<fn() -> CaseResult>;

/// Expects `r` to be exactly `Err(want)`.
pub fn expect_errno(what: &str, r: Result<(), Errno>, want: i32) -> CaseResult {
    match r {
        Err(e) if e.0 == want => Ok(()),
        Err(e) => crate::fail!("{what}: expected {}, got {e}", Errno(want)),
        Ok(()) => crate::fail!("{what}: expected {}, got success", Errno(want)),
    }
}

/// The line printed before any case runs (see
/// [`guest_common::harness::plan_line`]).
pub fn plan_line(cases: &[Case], filters: &[String]) -> String {
    guest_common::harness::plan_line("clone-suite", cases, filters)
}

/// Runs the selected cases in order, printing one line each.
pub fn run(cases: &[Case], filters: &[String], verbose: bool) -> Tally {
    let mut t = Tally::default();
    for c in cases.iter().filter(|c| selected(c.name, filters)) {
        let r = guest_common::harness::run_case("clone-suite", c.name, verbose, c.run);
        t.add(c.name, &r);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_line_names_the_suite() {
        fn ok() -> CaseResult {
            Ok(())
        }
        let cases = [Case { name: "a", run: ok }];
        assert_eq!(plan_line(&cases, &[]), "clone-suite: 1 cases: a");
    }

    #[test]
    fn expect_errno_checks() {
        assert!(expect_errno("x", Err(Errno(libc::EBUSY)), libc::EBUSY).is_ok());
        assert!(expect_errno("x", Err(Errno(libc::EINVAL)), libc::EBUSY).is_err());
        assert!(expect_errno("x", Ok(()), libc::EBUSY).is_err());
    }
}
