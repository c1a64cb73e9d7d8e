//! A guest program's parameters: its defaults, then the kernel command line
//! (`rv.PREFIX.key=value`), then its flags, each overriding the one before;
//! then a check. [`params`] runs the sequence the same way for every program.

use std::fmt::Display;
use std::process::ExitCode;

/// What a program's parameters must offer [`params`].
pub trait Params: Default {
    /// Why a setting is refused (one line).
    type Error: Display;
    /// Applies the program's settings found in a kernel command line.
    fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), Self::Error>;
    /// Applies the program's flags; `Ok(false)` when help was asked for.
    fn apply_args(&mut self, args: impl Iterator<Item = String>) -> Result<bool, Self::Error>;
    /// Checks the settings together.
    fn validate(&self) -> Result<(), Self::Error>;
}

/// What [`params`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<P> {
    /// Run with these.
    Run(P),
    /// Exit now with this status: help was printed (0), or a bad setting
    /// (2, said on stderr with `usage`).
    Exit(u8),
}

impl<P> Parsed<P> {
    /// The parameters, or the exit status to return from main.
    pub fn or_exit(self) -> Result<P, ExitCode> {
        match self {
            Parsed::Run(p) => Ok(p),
            Parsed::Exit(code) => Err(ExitCode::from(code)),
        }
    }
}

/// `prog`'s parameters from /proc/cmdline and its arguments.
pub fn params<P: Params>(prog: &str, usage: &str) -> Parsed<P> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    params_from(prog, usage, &cmdline, std::env::args().skip(1))
}

/// [`params`] with the command line and arguments given.
pub fn params_from<P: Params>(
    prog: &str,
    usage: &str,
    cmdline: &str,
    args: impl Iterator<Item = String>,
) -> Parsed<P> {
    let mut p = P::default();
    if let Err(e) = p.apply_cmdline(cmdline) {
        eprintln!("{prog}: kernel command line: {e}");
        return Parsed::Exit(2);
    }
    match p.apply_args(args) {
        Ok(true) => {}
        Ok(false) => {
            println!("{usage}");
            return Parsed::Exit(0);
        }
        Err(e) => {
            eprintln!("{prog}: {e}\n{usage}");
            return Parsed::Exit(2);
        }
    }
    if let Err(e) = p.validate() {
        eprintln!("{prog}: {e}");
        return Parsed::Exit(2);
    }
    Parsed::Run(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Eq)]
    struct P {
        n: u32,
    }

    impl Params for P {
        type Error = String;
        fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), String> {
            for w in cmdline.split_whitespace() {
                if let Some(v) = w.strip_prefix("rv.t.n=") {
                    self.n = v.parse().map_err(|_| format!("bad n {v:?}"))?;
                }
            }
            Ok(())
        }
        fn apply_args(&mut self, mut args: impl Iterator<Item = String>) -> Result<bool, String> {
            match args.next().as_deref() {
                None => Ok(true),
                Some("--help") => Ok(false),
                Some(a) => {
                    self.n = a.parse().map_err(|_| format!("bad n {a:?}"))?;
                    Ok(true)
                }
            }
        }
        fn validate(&self) -> Result<(), String> {
            if self.n > 9 {
                return Err(format!("n {} > 9", self.n));
            }
            Ok(())
        }
    }

    fn run(cmdline: &str, args: &[&str]) -> Parsed<P> {
        params_from(
            "t",
            "usage: t [N]",
            cmdline,
            args.iter().map(|s| s.to_string()),
        )
    }

    #[test]
    fn defaults_then_cmdline_then_flags_then_check() {
        assert_eq!(run("", &[]), Parsed::Run(P { n: 0 }));
        assert_eq!(run("rv.t.n=3", &[]), Parsed::Run(P { n: 3 }));
        assert_eq!(run("rv.t.n=3", &["4"]), Parsed::Run(P { n: 4 }));
        assert_eq!(run("rv.t.n=x", &["4"]), Parsed::Exit(2));
        assert_eq!(run("", &["x"]), Parsed::Exit(2));
        assert_eq!(run("", &["--help"]), Parsed::Exit(0));
        assert_eq!(run("", &["12"]), Parsed::Exit(2));
    }
}
