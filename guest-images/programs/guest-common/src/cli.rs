//! A guest program's parameters: its defaults, then the kernel command line
//! (`rv.PREFIX.key=value`), then its flags, each overriding the one before;
//! then a check. [`params`] runs the sequence the same way for every program,
//! [`main`] then runs the program; [`Params`] reads the command line and the
//! flags the same way for every program that does not say otherwise
//! ([`settings`] and [`flag`] for those that do).

use std::fmt::{self, Display};
use std::process::ExitCode;

/// A command line that cannot be read (before a setting's own check).
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// A setting without its value (`rv.pool.size`, `--size` at the end).
    Missing(String),
    /// An argument that is no setting of the program.
    Unknown(String),
}

impl Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Missing(s) => write!(f, "option {s} needs a value"),
            CliError::Unknown(s) => write!(f, "unknown option {s}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<CliError> for String {
    fn from(e: CliError) -> String {
        e.to_string()
    }
}

/// What a program's parameters must offer [`params`].
pub trait Params: Default {
    /// Why a setting is refused (one line).
    type Error: Display + From<CliError>;
    /// The prefix of the program's settings on the kernel command line
    /// (`rv.pool.`).
    const PREFIX: &'static str;
    /// Applies one setting: `key` as written after the prefix or `--`.
    fn set(&mut self, key: &str, value: &str) -> Result<(), Self::Error>;
    /// Applies the program's settings found in a kernel command line
    /// (see [`settings`]); one without its value is an error.
    fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), Self::Error> {
        for (k, v) in settings(cmdline, Self::PREFIX) {
            let v = v.ok_or_else(|| CliError::Missing(format!("{}{k}", Self::PREFIX)))?;
            self.set(k, v)?;
        }
        Ok(())
    }
    /// Applies the program's flags, each `--key value` or `--key=value`
    /// (see [`flag`]); `Ok(false)` when help was asked for.
    fn apply_args(&mut self, args: impl IntoIterator<Item = String>) -> Result<bool, Self::Error> {
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            match flag(a, &mut args, |_| true)? {
                Flag::Help => return Ok(false),
                Flag::Set(k, v) => self.set(&k, &v)?,
                Flag::Switch(k) => return Err(CliError::Unknown(format!("--{k}")).into()),
                Flag::Word(w) => return Err(CliError::Unknown(w).into()),
            }
        }
        Ok(true)
    }
    /// Checks the settings together.
    fn validate(&self) -> Result<(), Self::Error>;
}

/// The `PREFIXkey=value` words of a kernel command line before ` -- `
/// (the words after it are /init's): `(key, Some(value))`, or
/// `(key, None)` for a word without `=`.
pub fn settings<'a>(
    cmdline: &'a str,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .filter_map(move |w| w.strip_prefix(prefix))
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv, None),
        })
}

/// One argument, as [`flag`] reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Flag {
    /// `-h` or `--help`.
    Help,
    /// `--key=value`, or `--key value` for a key that takes a value.
    Set(String, String),
    /// `--key` for a key that takes none.
    Switch(String),
    /// Anything else (a word, a short option).
    Word(String),
}

/// Reads argument `a`; a `--key` that `takes_value` takes the next
/// argument of `rest` as its value.
pub fn flag(
    a: String,
    rest: &mut impl Iterator<Item = String>,
    takes_value: impl Fn(&str) -> bool,
) -> Result<Flag, CliError> {
    if a == "-h" || a == "--help" {
        return Ok(Flag::Help);
    }
    let Some(f) = a.strip_prefix("--") else {
        return Ok(Flag::Word(a));
    };
    Ok(match f.split_once('=') {
        Some((k, v)) => Flag::Set(k.to_string(), v.to_string()),
        None if takes_value(f) => {
            let v = rest.next().ok_or_else(|| CliError::Missing(a.clone()))?;
            Flag::Set(f.to_string(), v)
        }
        None => Flag::Switch(f.to_string()),
    })
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

/// A program's entry point: its parameters ([`params`]), then `body` with
/// them; the exit status of whichever ends the program.
pub fn main<P: Params>(prog: &str, usage: &str, body: impl FnOnce(P) -> ExitCode) -> ExitCode {
    match params(prog, usage) {
        Parsed::Run(p) => body(p),
        Parsed::Exit(code) => ExitCode::from(code),
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
    args: impl IntoIterator<Item = String>,
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
        m: u32,
    }

    impl Params for P {
        type Error = String;
        const PREFIX: &'static str = "rv.t.";
        fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
            let n = v.parse().map_err(|_| format!("bad {key} {v:?}"))?;
            match key {
                "n" => self.n = n,
                "m" => self.m = n,
                _ => return Err(CliError::Unknown(key.into()).into()),
            }
            Ok(())
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
            "usage: t [--n N] [--m M]",
            cmdline,
            args.iter().map(|s| s.to_string()),
        )
    }

    #[test]
    fn defaults_then_cmdline_then_flags_then_check() {
        assert_eq!(run("", &[]), Parsed::Run(P { n: 0, m: 0 }));
        assert_eq!(run("rv.t.n=3 rv.x.m=1", &[]), Parsed::Run(P { n: 3, m: 0 }));
        assert_eq!(
            run("rv.t.n=3 -- rv.t.m=5", &["--n", "4"]),
            Parsed::Run(P { n: 4, m: 0 })
        );
        assert_eq!(run("", &["--m=7"]), Parsed::Run(P { n: 0, m: 7 }));
        assert_eq!(run("rv.t.n=x", &["--n", "4"]), Parsed::Exit(2));
        assert_eq!(run("rv.t.n", &[]), Parsed::Exit(2));
        assert_eq!(run("rv.t.k=1", &[]), Parsed::Exit(2));
        assert_eq!(run("", &["4"]), Parsed::Exit(2));
        assert_eq!(run("", &["--n"]), Parsed::Exit(2));
        assert_eq!(run("", &["--help"]), Parsed::Exit(0));
        assert_eq!(run("", &["-h", "--bogus"]), Parsed::Exit(0));
        assert_eq!(run("", &["--n", "12"]), Parsed::Exit(2));
    }

    #[test]
    fn flags_and_settings() {
        let takes = |k: &str| k == "seed";
        let mut rest = ["7".to_string()].into_iter();
        assert_eq!(
            flag("--seed".into(), &mut rest, takes),
            Ok(Flag::Set("seed".into(), "7".into()))
        );
        let mut none = std::iter::empty();
        assert_eq!(
            flag("--seed".into(), &mut none, takes),
            Err(CliError::Missing("--seed".into()))
        );
        assert_eq!(
            flag("--list".into(), &mut none, takes),
            Ok(Flag::Switch("list".into()))
        );
        assert_eq!(
            flag("--list=1".into(), &mut none, takes),
            Ok(Flag::Set("list".into(), "1".into()))
        );
        assert_eq!(
            flag("-v".into(), &mut none, takes),
            Ok(Flag::Word("-v".into()))
        );
        assert_eq!(flag("-h".into(), &mut none, takes), Ok(Flag::Help));
        let got: Vec<_> = settings("a rv.p.x=1 rv.p.y rv.q.z=2 -- rv.p.w=3", "rv.p.").collect();
        assert_eq!(got, [("x", Some("1")), ("y", None)]);
        assert_eq!(
            String::from(CliError::Missing("rv.p.y".into())),
            "option rv.p.y needs a value"
        );
    }
}
