//! Suite parameters: defaults, then the kernel command line (`rv.pv.*`),
//! then flags, each overriding the one before.

use guest_common::cli::{self, Flag};

/// What the suite runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Device node.
    pub dev: String,
    /// Pattern seed shared with the host test (see pv_uring::pattern).
    pub seed: u32,
    /// Backend index holding the host pattern and taking the guest writes.
    pub backend: u32,
    /// Blocks (4 KiB) of the backend the host filled with the pattern.
    pub read_blocks: u64,
    /// First block the guest writes.
    pub write_block: u64,
    /// Blocks the guest writes.
    pub write_blocks: u64,
    /// Whether to run the write case (off for a read-only backend).
    pub write: bool,
    /// Rings of the pool case.
    pub pool_rings: usize,
    /// `Some(n)`: run only n create/destroy cycles.
    pub cycles: Option<u64>,
    /// Case-name substrings (empty: all).
    pub filters: Vec<String>,
    pub verbose: bool,
    pub list: bool,
    /// Before the first and after the last `hostile-` case, print
    /// `PV-SUITE-PAUSE <at>` and wait for a line on stdin (the host
    /// measures its memory meanwhile; tests/pv.rs).
    pub pause: bool,
    /// Run the arena cases (a VM with `--uring arena=`) instead of the
    /// suite; with `pause`, pause around the lifecycle cycles.
    pub arena: bool,
    /// With `arena`: allocate/register/destroy/free cycles of the
    /// `arena-lifecycle` case.
    pub arena_cycles: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dev: pv_uring::DEFAULT_PATH.into(),
            seed: 1,
            backend: 0,
            read_blocks: 256,
            write_block: 256,
            write_blocks: 16,
            write: true,
            pool_rings: 64,
            cycles: None,
            filters: Vec::new(),
            verbose: false,
            list: false,
            pause: false,
            arena: false,
            arena_cycles: 10_000,
        }
    }
}

pub const USAGE: &str = "usage: pv-suite [--list] [-v] [--dev PATH] [--seed N] [--backend N] \
[--read-blocks N] [--write-block N] [--write-blocks N] [--no-write] [--pool-rings N] \
[--cycles N] [--pause] [--arena [--arena-cycles N]] [CASE-SUBSTRING...]
kernel command line: rv.pv.dev= rv.pv.seed= rv.pv.backend= rv.pv.read_blocks= \
rv.pv.write_block= rv.pv.write_blocks= rv.pv.write=0|1 rv.pv.pool_rings= rv.pv.cycles= \
rv.pv.cases=a,b rv.pv.verbose=1 rv.pv.pause=1";

/// Flags taking a value (`--key V` or `--key=V`).
const FLAGS_WITH_VALUE: &[&str] = &[
    "dev",
    "seed",
    "backend",
    "read-blocks",
    "write-block",
    "write-blocks",
    "pool-rings",
    "cycles",
    "arena-cycles",
];

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    let t = v.trim();
    let r = if let Some(h) = t.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
            .ok()
            .and_then(|n| n.to_string().parse().ok())
    } else {
        t.parse().ok()
    };
    r.ok_or_else(|| format!("bad value {v:?} for {key}"))
}

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "y" | "yes" | "on" | "true" => Ok(true),
        "0" | "n" | "no" | "off" | "false" => Ok(false),
        _ => Err(format!("bad value {v:?} for {key} (0 or 1)")),
    }
}

impl Params {
    /// One `key=value` (without a prefix). `Ok(false)`: unknown key.
    fn set_known(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "dev" => self.dev = v.to_string(),
            "seed" => self.seed = num(key, v)?,
            "backend" => self.backend = num(key, v)?,
            "read_blocks" | "read-blocks" => self.read_blocks = num(key, v)?,
            "write_block" | "write-block" => self.write_block = num(key, v)?,
            "write_blocks" | "write-blocks" => self.write_blocks = num(key, v)?,
            "write" => self.write = flag(key, v)?,
            "pool_rings" | "pool-rings" => self.pool_rings = num(key, v)?,
            "cycles" => self.cycles = Some(num(key, v)?),
            "arena_cycles" | "arena-cycles" => self.arena_cycles = num(key, v)?,
            "arena" => self.arena = flag(key, v)?,
            "verbose" => self.verbose = flag(key, v)?,
            "pause" => self.pause = flag(key, v)?,
            "cases" => self
                .filters
                .extend(v.split(',').filter(|s| !s.is_empty()).map(String::from)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A flag without a value (`--list`, `-v`, ...); `false`: not one.
    fn switch(&mut self, a: &str) -> bool {
        match a {
            "--list" => self.list = true,
            "-v" | "--verbose" => self.verbose = true,
            "--no-write" => self.write = false,
            "--pause" => self.pause = true,
            "--arena" => self.arena = true,
            _ => return false,
        }
        true
    }
}

impl guest_common::cli::Params for Params {
    type Error = String;
    const PREFIX: &'static str = "rv.pv.";

    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        if self.set_known(key, v)? {
            Ok(())
        } else {
            Err(format!("unknown option --{key}"))
        }
    }

    /// Applies `rv.pv.KEY=VALUE` words of a kernel command line (stops at
    /// ` -- `; `rv.pv.KEY` alone is `=1`). Unknown `rv.pv.` keys are
    /// reported on stderr and ignored (other programs may share the
    /// prefix).
    fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), String> {
        for (k, v) in cli::settings(cmdline, Self::PREFIX) {
            if !self.set_known(k, v.unwrap_or("1"))? {
                eprintln!("pv-suite: ignoring unknown kernel parameter rv.pv.{k}");
            }
        }
        Ok(())
    }

    /// Applies flags: settings, switches and case-name substrings.
    /// `Ok(false)`: help was asked for.
    fn apply_args(&mut self, args: impl IntoIterator<Item = String>) -> Result<bool, String> {
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            if self.switch(&a) {
                continue;
            }
            match cli::flag(a, &mut args, |k| FLAGS_WITH_VALUE.contains(&k))? {
                Flag::Help => return Ok(false),
                Flag::Set(k, v) if FLAGS_WITH_VALUE.contains(&k.as_str()) => self.set(&k, &v)?,
                Flag::Set(k, _) | Flag::Switch(k) => return Err(format!("unknown option --{k}")),
                Flag::Word(w) if w.starts_with('-') => return Err(format!("unknown option {w}")),
                Flag::Word(w) => self.filters.push(w),
            }
        }
        Ok(true)
    }

    fn validate(&self) -> Result<(), String> {
        if self.read_blocks == 0 {
            return Err("read_blocks must be at least 1".into());
        }
        if self.pool_rings == 0 {
            return Err("pool_rings must be at least 1".into());
        }
        if self.write_blocks == 0 {
            return Err("write_blocks must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_common::cli::Params as _;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cmdline_then_flags() {
        let mut p = Params::default();
        p.apply_cmdline("console=ttyS0 rv.pv.seed=0x1234 rv.pv.read_blocks=64 rv.pv.write=0 rv.pv.cases=clone,table rv.pv.other=1 -- rv.pv.seed=9")
            .unwrap();
        assert_eq!(p.seed, 0x1234);
        assert_eq!(p.read_blocks, 64);
        assert!(!p.write);
        assert_eq!(p.filters, vec!["clone", "table"]);
        assert!(p
            .apply_args(args(&["--seed", "7", "--cycles=100", "-v", "hostile"]))
            .unwrap());
        assert_eq!(p.seed, 7);
        assert_eq!(p.cycles, Some(100));
        assert!(p.verbose);
        assert_eq!(p.filters, vec!["clone", "table", "hostile"]);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn bad_input() {
        let mut p = Params::default();
        assert!(p.apply_cmdline("rv.pv.seed=x").is_err());
        assert_eq!(
            p.apply_args(args(&["--nope"])),
            Err("unknown option --nope".to_string())
        );
        assert!(p.apply_args(args(&["--write", "1"])).is_err());
        assert!(p.apply_args(args(&["--seed"])).is_err());
        assert!(p.apply_args(args(&["-x"])).is_err());
        assert!(!p.apply_args(args(&["--help"])).unwrap());
        p.read_blocks = 0;
        assert!(p.validate().is_err());
    }
}
