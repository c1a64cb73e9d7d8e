//! How a VM run ends, and the process exit status for each ending (the table
//! in `docs/guest-interface.md`).

use std::fmt;

/// The end of a VM run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote its workload's status to the guest-signal device.
    GuestExit(u8),
    /// The guest reset itself without a panic (e.g. `reboot`).
    Reset,
    /// The guest kernel panicked.
    Panic,
    /// The guest triple-faulted (or KVM reported a shutdown) with no panic.
    TripleFault,
    /// An exit the VMM cannot handle.
    Unhandled(String),
    /// An emulation failure the VMM cannot handle (nested PVM), with what to
    /// do about it when the instruction is one a stock kernel is known to
    /// stop on.
    EmulationFailure {
        what: String,
        hint: Option<&'static str>,
    },
    /// `--timeout` expired.
    Timeout(std::time::Duration),
    /// `ringvisor snapshot` wrote its snapshot (what it wrote).
    Snapshot(String),
}

/// Exit status for a guest kernel panic.
pub const EXIT_PANIC: u8 = 120;
/// Exit status for a triple fault.
pub const EXIT_TRIPLE_FAULT: u8 = 121;
/// Exit status for an exit the VMM cannot handle.
pub const EXIT_UNHANDLED: u8 = 122;
/// Exit status when `--timeout` expired (as timeout(1)).
pub const EXIT_TIMEOUT: u8 = 124;

impl Outcome {
    /// Classifies a guest reset or shutdown: it is a panic when the console
    /// showed one before.
    pub fn from_reset(triple_fault: bool, panic_seen: bool) -> Self {
        match (panic_seen, triple_fault) {
            (true, _) => Outcome::Panic,
            (false, true) => Outcome::TripleFault,
            (false, false) => Outcome::Reset,
        }
    }

    /// The process exit status for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::GuestExit(status) => *status,
            Outcome::Reset | Outcome::Snapshot(_) => 0,
            Outcome::Panic => EXIT_PANIC,
            Outcome::TripleFault => EXIT_TRIPLE_FAULT,
            Outcome::Unhandled(_) | Outcome::EmulationFailure { .. } => EXIT_UNHANDLED,
            Outcome::Timeout(_) => EXIT_TIMEOUT,
        }
    }
}

impl Outcome {
    /// What the user can do about this ending, when the VMM knows.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Outcome::EmulationFailure { hint, .. } => *hint,
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::GuestExit(s) => write!(f, "the guest workload exited with status {s}"),
            Outcome::Reset => write!(f, "the guest reset itself"),
            Outcome::Panic => write!(f, "the guest kernel panicked"),
            Outcome::TripleFault => write!(f, "the guest triple-faulted"),
            Outcome::Unhandled(what) | Outcome::EmulationFailure { what, .. } => {
                write!(f, "unhandled exit: {what}")
            }
            Outcome::Snapshot(what) => write!(f, "{what}"),
            Outcome::Timeout(d) => write!(
                f,
                "--timeout of {:.1} s expired; the guest was killed",
                d.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_for_each_failure() {
        let codes = [
            Outcome::Panic.exit_code(),
            Outcome::TripleFault.exit_code(),
            Outcome::Unhandled(String::new()).exit_code(),
            Outcome::Timeout(Default::default()).exit_code(),
        ];
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(Outcome::GuestExit(3).exit_code(), 3);
        assert_eq!(Outcome::Timeout(Default::default()).exit_code(), 124);
    }

    #[test]
    fn an_emulation_failure_is_an_unhandled_exit_with_its_hint() {
        let stop = Outcome::EmulationFailure {
            what: "vCPU 0: no emulation for `int3`".into(),
            hint: Some("apply patch 0001"),
        };
        assert_eq!(stop.exit_code(), EXIT_UNHANDLED);
        assert_eq!(
            stop.to_string(),
            "unhandled exit: vCPU 0: no emulation for `int3`"
        );
        assert_eq!(stop.hint(), Some("apply patch 0001"));
        assert_eq!(Outcome::Unhandled("HLT exit".into()).hint(), None);
    }

    #[test]
    fn a_reset_after_a_panic_message_is_a_panic() {
        assert_eq!(Outcome::from_reset(false, true), Outcome::Panic);
        assert_eq!(Outcome::from_reset(true, true), Outcome::Panic);
        assert_eq!(Outcome::from_reset(true, false), Outcome::TripleFault);
        assert_eq!(Outcome::from_reset(false, false), Outcome::Reset);
    }
}
